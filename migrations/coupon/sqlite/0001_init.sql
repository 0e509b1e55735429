-- Coupon service schema (SQLite, the embedded default). Same tables and
-- constraints as migrations/coupon/mysql; times are epoch milliseconds.

CREATE TABLE IF NOT EXISTS campaigns (
  id               TEXT NOT NULL PRIMARY KEY,
  quota            INTEGER NOT NULL,
  per_user_limit   INTEGER NOT NULL,
  starts_at        INTEGER NOT NULL,
  ends_at          INTEGER NOT NULL,
  strategy         TEXT NOT NULL,
  discount_kind    TEXT NOT NULL,
  discount_value   INTEGER NOT NULL,
  discount_max     INTEGER NULL,
  min_order        INTEGER NULL,
  valid_for_days   INTEGER NULL,
  paused           INTEGER NOT NULL DEFAULT 0,
  issued           INTEGER NOT NULL DEFAULT 0,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  CONSTRAINT ck_campaign_issued CHECK (issued >= 0 AND issued <= quota)
);

CREATE TABLE IF NOT EXISTS coupons (
  coupon_id        TEXT NOT NULL PRIMARY KEY,
  code             TEXT NOT NULL,
  campaign_id      TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  seq              INTEGER NOT NULL,
  request_id       TEXT NULL,
  status           TEXT NOT NULL,
  issued_at        INTEGER NOT NULL,
  expires_at       INTEGER NOT NULL,
  order_id         TEXT NULL,
  order_amount     INTEGER NULL,
  discount_amount  INTEGER NULL,
  redeemed_at      INTEGER NULL,
  CONSTRAINT uq_coupon_code UNIQUE (code),
  CONSTRAINT uq_coupon_user_seq UNIQUE (campaign_id, user_id, seq),
  CONSTRAINT uq_coupon_request UNIQUE (request_id)
);
CREATE INDEX IF NOT EXISTS ix_coupon_user ON coupons (user_id, coupon_id);

CREATE TABLE IF NOT EXISTS issue_requests (
  request_id       TEXT NOT NULL PRIMARY KEY,
  campaign_id      TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  status           TEXT NOT NULL,
  coupon_id        TEXT NULL,
  reason           TEXT NULL,
  admitted_at      INTEGER NOT NULL,
  decided_at       INTEGER NOT NULL
);
