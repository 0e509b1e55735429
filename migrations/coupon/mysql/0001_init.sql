-- Coupon service schema (MySQL 8 / MariaDB). Times are epoch milliseconds.
-- Correctness rests here, not on Redis or locks: the CHECK keeps issued within
-- quota, UNIQUE (campaign_id, user_id, seq) keeps a user within the per-user
-- limit (seq is the user's n-th coupon, checked against the limit in the same
-- transaction), and request ids are unique so redelivered events store nothing twice.

CREATE TABLE IF NOT EXISTS campaigns (
  id               VARCHAR(128) NOT NULL PRIMARY KEY,
  quota            BIGINT NOT NULL,
  per_user_limit   BIGINT NOT NULL,
  starts_at        BIGINT NOT NULL,
  ends_at          BIGINT NOT NULL,
  strategy         VARCHAR(16) NOT NULL,
  discount_kind    VARCHAR(16) NOT NULL,
  discount_value   BIGINT NOT NULL,
  discount_max     BIGINT NULL,
  min_order        BIGINT NULL,
  valid_for_days   BIGINT NULL,
  paused           BIGINT NOT NULL DEFAULT 0,
  issued           BIGINT NOT NULL DEFAULT 0,
  created_at       BIGINT NOT NULL,
  updated_at       BIGINT NOT NULL,
  CONSTRAINT ck_campaign_issued CHECK (issued >= 0 AND issued <= quota)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS coupons (
  coupon_id        VARCHAR(36) NOT NULL PRIMARY KEY,
  code             VARCHAR(32) NOT NULL,
  campaign_id      VARCHAR(128) NOT NULL,
  user_id          VARCHAR(128) NOT NULL,
  seq              BIGINT NOT NULL,
  request_id       VARCHAR(36) NULL,
  status           VARCHAR(16) NOT NULL,
  issued_at        BIGINT NOT NULL,
  expires_at       BIGINT NOT NULL,
  order_id         VARCHAR(128) NULL,
  order_amount     BIGINT NULL,
  discount_amount  BIGINT NULL,
  redeemed_at      BIGINT NULL,
  UNIQUE KEY uq_coupon_code (code),
  UNIQUE KEY uq_coupon_user_seq (campaign_id, user_id, seq),
  UNIQUE KEY uq_coupon_request (request_id),
  KEY ix_coupon_user (user_id, coupon_id)
) ENGINE=InnoDB;

-- Refused queued (V3) requests, written by the consumer; an issued one is its
-- coupon row (coupons.request_id). ISSUED rows here come from earlier versions.
CREATE TABLE IF NOT EXISTS issue_requests (
  request_id       VARCHAR(36) NOT NULL PRIMARY KEY,
  campaign_id      VARCHAR(128) NOT NULL,
  user_id          VARCHAR(128) NOT NULL,
  status           VARCHAR(16) NOT NULL,
  coupon_id        VARCHAR(36) NULL,
  reason           VARCHAR(32) NULL,
  admitted_at      BIGINT NOT NULL,
  decided_at       BIGINT NOT NULL
) ENGINE=InnoDB;
