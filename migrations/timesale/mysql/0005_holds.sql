-- Holds (docs/holds.md): a sale with hold_seconds sells HELD orders that
-- the buyer confirms with a payment reference before hold_expires_at, or
-- that expire and give their units back. `sold` counts held units too;
-- `held` is the part of them still awaiting payment.
ALTER TABLE sales ADD COLUMN hold_seconds BIGINT NULL;
ALTER TABLE sales ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sales ADD CONSTRAINT ck_sale_held CHECK (held >= 0 AND held <= sold);
ALTER TABLE orders ADD COLUMN hold_expires_at BIGINT NULL;
ALTER TABLE orders ADD COLUMN payment_ref VARCHAR(128) NULL;
-- The expiry sweep reads due holds by this index.
CREATE INDEX ix_orders_hold ON orders (status, hold_expires_at);
-- Units a committed cancel or expiry still has to give back to the
-- counters: written in the same transaction as the change, deleted once
-- the counters have them (a crash in between leaves the row for the next
-- sweep; the counters take each order's units at most once). A counter
-- rebuild counts these units as still taken, since they are not yet given.
CREATE TABLE IF NOT EXISTS restocks (
  order_id         VARCHAR(36) NOT NULL PRIMARY KEY,
  sale_id          VARCHAR(128) NOT NULL,
  user_id          VARCHAR(128) NOT NULL,
  quantity         BIGINT NOT NULL,
  created_at       BIGINT NOT NULL,
  KEY ix_restocks_created (created_at),
  KEY ix_restocks_sale (sale_id)
) ENGINE=InnoDB;
