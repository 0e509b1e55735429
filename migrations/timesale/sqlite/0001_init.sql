-- Time-sale service schema (SQLite, the embedded default). Same tables and
-- constraints as migrations/timesale/mysql; times are epoch milliseconds.

CREATE TABLE IF NOT EXISTS sales (
  id               TEXT NOT NULL PRIMARY KEY,
  sku              TEXT NOT NULL,
  product_name     TEXT NOT NULL,
  price            INTEGER NOT NULL,
  sale_price       INTEGER NOT NULL,
  stock            INTEGER NOT NULL,
  sold             INTEGER NOT NULL DEFAULT 0,
  per_user_limit   INTEGER NOT NULL,
  starts_at        INTEGER NOT NULL,
  ends_at          INTEGER NOT NULL,
  strategy         TEXT NOT NULL,
  paused           INTEGER NOT NULL DEFAULT 0,
  version          INTEGER NOT NULL DEFAULT 0,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  CONSTRAINT ck_sale_sold CHECK (sold >= 0 AND sold <= stock)
);

CREATE TABLE IF NOT EXISTS sale_users (
  sale_id          TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  units            INTEGER NOT NULL,
  PRIMARY KEY (sale_id, user_id),
  CONSTRAINT ck_sale_user_units CHECK (units >= 0)
);

CREATE TABLE IF NOT EXISTS orders (
  order_id         TEXT NOT NULL PRIMARY KEY,
  sale_id          TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  quantity         INTEGER NOT NULL,
  amount           INTEGER NOT NULL,
  status           TEXT NOT NULL,
  reason           TEXT NULL,
  strategy         TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_orders_sale ON orders (sale_id, status);
CREATE INDEX IF NOT EXISTS ix_orders_user ON orders (user_id, order_id);
