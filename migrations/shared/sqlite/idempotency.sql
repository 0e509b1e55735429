-- First answers to requests sent with an Idempotency-Key
-- (services/platform/src/http/idempotency.rs). status is NULL while the
-- first request runs; scope is "METHOD /path".
CREATE TABLE IF NOT EXISTS idempotency_keys (
  scope            TEXT NOT NULL,
  idem_key         TEXT NOT NULL,
  request_hash     TEXT NOT NULL,
  status           INTEGER NULL,
  body             TEXT NULL,
  created_at       INTEGER NOT NULL,
  PRIMARY KEY (scope, idem_key)
);
CREATE INDEX IF NOT EXISTS ix_idempotency_created ON idempotency_keys (created_at);
