-- Fences the V3 consumer has passed, shared by the queued services (coupon,
-- time sale); see the MySQL copy of this file.
CREATE TABLE IF NOT EXISTS counter_fences (
  fence_id         TEXT NOT NULL PRIMARY KEY,
  campaign_id      TEXT NOT NULL,
  seen_at          INTEGER NOT NULL
);
