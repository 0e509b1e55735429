-- Fences the V3 consumer has passed, shared by the queued services (coupon,
-- time sale). A counter rebuild or audit sends a fence behind everything
-- admitted and waits until the consumer stored it here: everything before
-- it is then persisted (promo_platform::admission). campaign_id holds the
-- campaign or sale.
CREATE TABLE IF NOT EXISTS counter_fences (
  fence_id         VARCHAR(36) NOT NULL PRIMARY KEY,
  campaign_id      VARCHAR(128) NOT NULL,
  seen_at          BIGINT NOT NULL
) ENGINE=InnoDB;
