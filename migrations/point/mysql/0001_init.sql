-- Point service schema (MySQL 8 / MariaDB). Times are epoch milliseconds.
-- The append-only ledger is the truth; accounts hold the balance and the
-- version every mutation checks (optimistic locking). Lots are the earned
-- points still spendable, consumed oldest-expiring first.

CREATE TABLE IF NOT EXISTS accounts (
  user_id          VARCHAR(128) NOT NULL PRIMARY KEY,
  balance          BIGINT NOT NULL DEFAULT 0,
  version          BIGINT NOT NULL DEFAULT 0,
  updated_at       BIGINT NOT NULL,
  CONSTRAINT ck_account_balance CHECK (balance >= 0)
) ENGINE=InnoDB;

-- seq orders a user's entries: per user, commits are serial (the version
-- check), so a later entry always has a greater seq — stable cursors.
CREATE TABLE IF NOT EXISTS ledger (
  seq              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  entry_id         VARCHAR(36) NOT NULL,
  user_id          VARCHAR(128) NOT NULL,
  kind             VARCHAR(8) NOT NULL,
  amount           BIGINT NOT NULL,
  balance_after    BIGINT NOT NULL,
  reason           VARCHAR(255) NOT NULL,
  order_id         VARCHAR(128) NULL,
  expires_at       BIGINT NULL,
  refund_of        VARCHAR(36) NULL,
  lot_id           VARCHAR(36) NULL,
  created_at       BIGINT NOT NULL,
  UNIQUE KEY uq_ledger_entry (entry_id),
  UNIQUE KEY uq_ledger_refund_of (refund_of),
  KEY ix_ledger_user (user_id, seq),
  CONSTRAINT ck_ledger_balance CHECK (balance_after >= 0)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS lots (
  lot_id           VARCHAR(36) NOT NULL PRIMARY KEY,
  user_id          VARCHAR(128) NOT NULL,
  amount           BIGINT NOT NULL,
  remaining        BIGINT NOT NULL,
  expires_at       BIGINT NULL,
  KEY ix_lots_user (user_id, expires_at),
  KEY ix_lots_expiry (expires_at, remaining),
  CONSTRAINT ck_lot_remaining CHECK (remaining >= 0 AND remaining <= amount)
) ENGINE=InnoDB;

-- Which lots a USE consumed, so a refund restores exactly those.
CREATE TABLE IF NOT EXISTS lot_uses (
  use_entry_id     VARCHAR(36) NOT NULL,
  lot_id           VARCHAR(36) NOT NULL,
  amount           BIGINT NOT NULL,
  PRIMARY KEY (use_entry_id, lot_id)
) ENGINE=InnoDB;

-- The first answer to each Idempotency-Key, stored with the mutation.
CREATE TABLE IF NOT EXISTS idempotency_keys (
  user_id          VARCHAR(128) NOT NULL,
  idem_key         VARCHAR(128) NOT NULL,
  request_hash     VARCHAR(64) NOT NULL,
  status           BIGINT NOT NULL,
  body             VARCHAR(2048) NOT NULL,
  created_at       BIGINT NOT NULL,
  PRIMARY KEY (user_id, idem_key)
) ENGINE=InnoDB;
