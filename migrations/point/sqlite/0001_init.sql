-- Point service schema (SQLite, the embedded default). Same tables and
-- constraints as migrations/point/mysql; times are epoch milliseconds.

CREATE TABLE IF NOT EXISTS accounts (
  user_id          TEXT NOT NULL PRIMARY KEY,
  balance          INTEGER NOT NULL DEFAULT 0,
  version          INTEGER NOT NULL DEFAULT 0,
  updated_at       INTEGER NOT NULL,
  CONSTRAINT ck_account_balance CHECK (balance >= 0)
);

CREATE TABLE IF NOT EXISTS ledger (
  seq              INTEGER PRIMARY KEY AUTOINCREMENT,
  entry_id         TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  kind             TEXT NOT NULL,
  amount           INTEGER NOT NULL,
  balance_after    INTEGER NOT NULL,
  reason           TEXT NOT NULL,
  order_id         TEXT NULL,
  expires_at       INTEGER NULL,
  refund_of        TEXT NULL,
  lot_id           TEXT NULL,
  created_at       INTEGER NOT NULL,
  CONSTRAINT uq_ledger_entry UNIQUE (entry_id),
  CONSTRAINT uq_ledger_refund_of UNIQUE (refund_of),
  CONSTRAINT ck_ledger_balance CHECK (balance_after >= 0)
);
CREATE INDEX IF NOT EXISTS ix_ledger_user ON ledger (user_id, seq);

CREATE TABLE IF NOT EXISTS lots (
  lot_id           TEXT NOT NULL PRIMARY KEY,
  user_id          TEXT NOT NULL,
  amount           INTEGER NOT NULL,
  remaining        INTEGER NOT NULL,
  expires_at       INTEGER NULL,
  CONSTRAINT ck_lot_remaining CHECK (remaining >= 0 AND remaining <= amount)
);
CREATE INDEX IF NOT EXISTS ix_lots_user ON lots (user_id, expires_at);
CREATE INDEX IF NOT EXISTS ix_lots_expiry ON lots (expires_at, remaining);

CREATE TABLE IF NOT EXISTS lot_uses (
  use_entry_id     TEXT NOT NULL,
  lot_id           TEXT NOT NULL,
  amount           INTEGER NOT NULL,
  PRIMARY KEY (use_entry_id, lot_id)
);

CREATE TABLE IF NOT EXISTS idempotency_keys (
  user_id          TEXT NOT NULL,
  idem_key         TEXT NOT NULL,
  request_hash     TEXT NOT NULL,
  status           INTEGER NOT NULL,
  body             TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  PRIMARY KEY (user_id, idem_key)
);
