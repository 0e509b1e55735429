-- First answers to requests sent with an Idempotency-Key
-- (services/platform/src/http/idempotency.rs). status is NULL while the
-- first request runs; scope is "METHOD /path". VARCHAR, not TEXT: sqlx reads
-- MySQL TEXT columns as BLOB. Answers here are small JSON documents.
CREATE TABLE IF NOT EXISTS idempotency_keys (
  scope            VARCHAR(255) NOT NULL,
  idem_key         VARCHAR(128) NOT NULL,
  request_hash     VARCHAR(64) NOT NULL,
  status           BIGINT NULL,
  body             VARCHAR(12000) NULL,
  created_at       BIGINT NOT NULL,
  PRIMARY KEY (scope, idem_key),
  KEY ix_idempotency_created (created_at)
) ENGINE=InnoDB;
