-- Time-sale service schema (MySQL 8 / MariaDB). Times are epoch milliseconds.
-- Correctness rests here, not on Redis: the CHECK keeps sold within stock and
-- the conditional updates (`sold + ? <= stock`, `units + ? <= per-user limit`)
-- refuse what would break either; order ids are unique, so a redelivered
-- event stores nothing twice.

CREATE TABLE IF NOT EXISTS sales (
  id               VARCHAR(128) NOT NULL PRIMARY KEY,
  sku              VARCHAR(128) NOT NULL,
  product_name     VARCHAR(255) NOT NULL,
  price            BIGINT NOT NULL,
  sale_price       BIGINT NOT NULL,
  stock            BIGINT NOT NULL,
  sold             BIGINT NOT NULL DEFAULT 0,
  per_user_limit   BIGINT NOT NULL,
  starts_at        BIGINT NOT NULL,
  ends_at          BIGINT NOT NULL,
  strategy         VARCHAR(16) NOT NULL,
  paused           BIGINT NOT NULL DEFAULT 0,
  version          BIGINT NOT NULL DEFAULT 0,
  created_at       BIGINT NOT NULL,
  updated_at       BIGINT NOT NULL,
  CONSTRAINT ck_sale_sold CHECK (sold >= 0 AND sold <= stock)
) ENGINE=InnoDB;

-- Units each user holds of a sale (confirmed, not cancelled).
CREATE TABLE IF NOT EXISTS sale_users (
  sale_id          VARCHAR(128) NOT NULL,
  user_id          VARCHAR(128) NOT NULL,
  units            BIGINT NOT NULL,
  PRIMARY KEY (sale_id, user_id),
  CONSTRAINT ck_sale_user_units CHECK (units >= 0)
) ENGINE=InnoDB;

-- Every decided order: CONFIRMED, REJECTED (V3, with a reason) or CANCELLED.
CREATE TABLE IF NOT EXISTS orders (
  order_id         VARCHAR(36) NOT NULL PRIMARY KEY,
  sale_id          VARCHAR(128) NOT NULL,
  user_id          VARCHAR(128) NOT NULL,
  quantity         BIGINT NOT NULL,
  amount           BIGINT NOT NULL,
  status           VARCHAR(16) NOT NULL,
  reason           VARCHAR(32) NULL,
  strategy         VARCHAR(16) NOT NULL,
  created_at       BIGINT NOT NULL,
  updated_at       BIGINT NOT NULL,
  KEY ix_orders_sale (sale_id, status),
  KEY ix_orders_user (user_id, order_id)
) ENGINE=InnoDB;
