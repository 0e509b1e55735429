-- Holds (docs/holds.md): a sale with hold_seconds sells HELD orders that
-- the buyer confirms with a payment reference before hold_expires_at, or
-- that expire and give their units back. `sold` counts held units too;
-- `held` is the part of them still awaiting payment.
ALTER TABLE sales ADD COLUMN hold_seconds INTEGER NULL;
ALTER TABLE sales ADD COLUMN held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0);
ALTER TABLE orders ADD COLUMN hold_expires_at INTEGER NULL;
ALTER TABLE orders ADD COLUMN payment_ref TEXT NULL;
-- The expiry sweep reads due holds by this index.
CREATE INDEX IF NOT EXISTS ix_orders_hold ON orders (status, hold_expires_at);
-- Units a committed cancel or expiry still has to give back to the
-- counters: written in the same transaction as the change, deleted once
-- the counters have them (a crash in between leaves the row for the next
-- sweep; the counters take each order's units at most once). A counter
-- rebuild counts these units as still taken, since they are not yet given.
CREATE TABLE IF NOT EXISTS restocks (
  order_id         TEXT NOT NULL PRIMARY KEY,
  sale_id          TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  quantity         INTEGER NOT NULL,
  created_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_restocks_created ON restocks (created_at);
CREATE INDEX IF NOT EXISTS ix_restocks_sale ON restocks (sale_id);
