//! All SQL of the time-sale service. Queries are written once for both
//! dialects (sqlx `Any`, `?` placeholders, epoch-millisecond BIGINTs); the
//! few dialect-specific clauses come from [`Dialect`].

use std::collections::{HashMap, HashSet};

use promo_platform::{
    http::idempotency,
    ports::{
        sql::{self, is_unique_violation, Migrations},
        Dialect, Migration,
    },
    time::{from_ms, now_ms, to_ms},
};
use sqlx::{any::AnyRow, AnyConnection, AnyPool, Row};

use crate::domain::{Order, OrderStatus, Product, Sale, SaleSpec, Strategy, TimesaleError};

pub use promo_platform::admission::{fence_seen, record_fence};

pub const MIGRATIONS: Migrations = Migrations {
    mysql: &[
        Migration {
            version: 1,
            name: "init",
            sql: include_str!("../../../migrations/timesale/mysql/0001_init.sql"),
        },
        Migration {
            version: 2,
            name: "idempotency",
            sql: idempotency::MYSQL_TABLE,
        },
        Migration {
            version: 3,
            name: "counter_fences",
            sql: promo_platform::admission::FENCES_MYSQL,
        },
        Migration {
            version: 4,
            name: "buckets",
            sql: include_str!("../../../migrations/timesale/mysql/0004_buckets.sql"),
        },
        Migration {
            version: 5,
            name: "holds",
            sql: include_str!("../../../migrations/timesale/mysql/0005_holds.sql"),
        },
        Migration {
            version: 6,
            name: "outbox",
            sql: promo_platform::outbox::MYSQL_TABLES,
        },
        Migration {
            version: 7,
            name: "outbox_packed",
            sql: promo_platform::outbox::MYSQL_PACKED,
        },
        Migration {
            version: 8,
            name: "outbox_mark_in_place",
            sql: promo_platform::outbox::MYSQL_MARK_IN_PLACE,
        },
    ],
    sqlite: &[
        Migration {
            version: 1,
            name: "init",
            sql: include_str!("../../../migrations/timesale/sqlite/0001_init.sql"),
        },
        Migration {
            version: 2,
            name: "idempotency",
            sql: idempotency::SQLITE_TABLE,
        },
        Migration {
            version: 3,
            name: "counter_fences",
            sql: promo_platform::admission::FENCES_SQLITE,
        },
        Migration {
            version: 4,
            name: "buckets",
            sql: include_str!("../../../migrations/timesale/sqlite/0004_buckets.sql"),
        },
        Migration {
            version: 5,
            name: "holds",
            sql: include_str!("../../../migrations/timesale/sqlite/0005_holds.sql"),
        },
        Migration {
            version: 6,
            name: "outbox",
            sql: promo_platform::outbox::SQLITE_TABLES,
        },
        Migration {
            version: 7,
            name: "outbox_packed",
            sql: promo_platform::outbox::SQLITE_PACKED,
        },
        Migration {
            version: 8,
            name: "outbox_rowid",
            sql: promo_platform::outbox::SQLITE_ROWID,
        },
        Migration {
            version: 9,
            name: "outbox_published_index",
            sql: promo_platform::outbox::SQLITE_PUBLISHED_INDEX,
        },
    ],
};

/// With `restocking`: units the sale's cancelled and expired orders gave
/// back in the database that the counters have not got yet (`restocks`);
/// `CAST AS SIGNED` makes it an integer on both MySQL and SQLite.
const SALE_COLUMNS: &str = "id, sku, product_name, price, sale_price, stock, sold, \
    per_user_limit, starts_at, ends_at, strategy, paused, buckets, hold_seconds, held, \
    (SELECT CAST(COALESCE(SUM(r.quantity), 0) AS SIGNED) FROM restocks r \
     WHERE r.sale_id = sales.id) AS restocking";

fn sale_from_row(row: &AnyRow) -> Result<Sale, sqlx::Error> {
    let strategy: String = row.try_get("strategy")?;
    Ok(Sale {
        id: row.try_get("id")?,
        sold: row.try_get("sold")?,
        held: row.try_get("held")?,
        restocking: row.try_get("restocking")?,
        spec: SaleSpec {
            product: Product {
                sku: row.try_get("sku")?,
                name: row.try_get("product_name")?,
                price: row.try_get("price")?,
            },
            sale_price: row.try_get("sale_price")?,
            stock: row.try_get("stock")?,
            per_user_limit: row.try_get("per_user_limit")?,
            starts_at: from_ms(row.try_get("starts_at")?),
            ends_at: from_ms(row.try_get("ends_at")?),
            strategy: Strategy::parse(&strategy).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown strategy {strategy:?}").into())
            })?,
            paused: row.try_get::<i64, _>("paused")? != 0,
            buckets: promo_platform::buckets::stored_count(row.try_get("buckets")?)?,
            hold_seconds: row.try_get("hold_seconds")?,
        },
    })
}

pub async fn get_sale(pool: &AnyPool, id: &str) -> Result<Option<Sale>, sqlx::Error> {
    sqlx::query(&format!("SELECT {SALE_COLUMNS} FROM sales WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(|r| sale_from_row(&r))
        .transpose()
}

/// Every sale, or only those ending after `ending_after` (epoch ms), by start.
pub async fn list_sales(
    pool: &AnyPool,
    ending_after: Option<i64>,
) -> Result<Vec<Sale>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {SALE_COLUMNS} FROM sales WHERE ends_at > ? ORDER BY starts_at, id"
    ))
    .bind(ending_after.unwrap_or(i64::MIN))
    .fetch_all(pool)
    .await?
    .iter()
    .map(sale_from_row)
    .collect()
}

/// Reads the sale inside `tx`, with its row lock when `lock` (MySQL; on
/// SQLite the single writer connection gives the same exclusion).
pub async fn read_sale(
    tx: &mut AnyConnection,
    dialect: Dialect,
    id: &str,
    lock: bool,
) -> Result<Option<Sale>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {SALE_COLUMNS} FROM sales WHERE id = ?{}",
        if lock { dialect.for_update() } else { "" }
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| sale_from_row(&r))
    .transpose()
}

/// Creates or updates a sale; returns the stored sale and the previous one
/// (None when created). Lowering the stock below what is sold is refused.
pub async fn upsert_sale(
    pool: &AnyPool,
    dialect: Dialect,
    id: &str,
    spec: &SaleSpec,
) -> Result<(Sale, Option<Sale>), TimesaleError> {
    let mut tx = pool.begin().await?;
    let previous = read_sale(&mut tx, dialect, id, true).await?;
    let now = now_ms();
    match &previous {
        Some(prev) => {
            if spec.stock < prev.sold {
                return Err(TimesaleError::StockBelowSold {
                    stock: spec.stock,
                    sold: prev.sold,
                });
            }
            bind_spec(
                sqlx::query(
                    "UPDATE sales SET sku = ?, product_name = ?, price = ?, sale_price = ?, stock = ?, \
                     per_user_limit = ?, starts_at = ?, ends_at = ?, strategy = ?, paused = ?, \
                     buckets = ?, hold_seconds = ?, version = version + 1, updated_at = ? WHERE id = ?",
                ),
                spec,
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            let inserted = bind_spec(
                sqlx::query(
                    "INSERT INTO sales (sku, product_name, price, sale_price, stock, per_user_limit, \
                     starts_at, ends_at, strategy, paused, buckets, hold_seconds, created_at, updated_at, \
                     id, sold, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)",
                ),
                spec,
            )
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await;
            if let Err(e) = inserted {
                if is_unique_violation(&e) {
                    return Err(TimesaleError::InvalidSale(format!(
                        "sale {id:?} was created concurrently; retry to update it"
                    )));
                }
                return Err(e.into());
            }
        }
    }
    let stored = read_sale(&mut tx, dialect, id, true)
        .await?
        .ok_or_else(|| TimesaleError::UnknownSale(id.to_string()))?;
    tx.commit().await?;
    Ok((stored, previous))
}

fn bind_spec<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    spec: &SaleSpec,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(spec.product.sku.clone())
        .bind(spec.product.name.clone())
        .bind(spec.product.price)
        .bind(spec.sale_price)
        .bind(spec.stock)
        .bind(spec.per_user_limit)
        .bind(to_ms(spec.starts_at))
        .bind(to_ms(spec.ends_at))
        .bind(spec.strategy.as_str())
        .bind(spec.paused as i64)
        .bind(i64::from(spec.buckets))
        .bind(spec.hold_seconds)
}

/// Adds `quantity` to the user's units unless that passes `limit`; the
/// condition is evaluated on the row under its write lock, so two orders of
/// the same user cannot both pass. Returns whether it was added.
pub async fn add_user_units(
    tx: &mut AnyConnection,
    dialect: Dialect,
    sale: &str,
    user: &str,
    quantity: i64,
    limit: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(&format!(
        "{} INTO sale_users (sale_id, user_id, units) VALUES (?, ?, 0)",
        dialect.insert_ignore()
    ))
    .bind(sale)
    .bind(user)
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query(
        "UPDATE sale_users SET units = units + ? WHERE sale_id = ? AND user_id = ? AND units + ? <= ?",
    )
    .bind(quantity)
    .bind(sale)
    .bind(user)
    .bind(quantity)
    .bind(limit)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Units `user` holds of `sale` (a plain, non-locking read).
pub async fn units_of(tx: &mut AnyConnection, sale: &str, user: &str) -> Result<i64, sqlx::Error> {
    let units: Option<i64> =
        sqlx::query_scalar("SELECT units FROM sale_users WHERE sale_id = ? AND user_id = ?")
            .bind(sale)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(units.unwrap_or(0))
}

/// Takes `quantity` units of stock unless fewer remain (no partial fills);
/// `held` of them are held for payment.
pub async fn take_stock(
    tx: &mut AnyConnection,
    sale: &str,
    quantity: i64,
    held: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sales SET sold = sold + ?, held = held + ?, version = version + 1, updated_at = ? \
         WHERE id = ? AND sold + ? <= stock",
    )
    .bind(quantity)
    .bind(held)
    .bind(now_ms())
    .bind(sale)
    .bind(quantity)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a cancelled or expired order's units back to the sale (`held`:
/// it was a hold) and frees the user's limit.
pub async fn return_units(
    tx: &mut AnyConnection,
    sale: &str,
    user: &str,
    quantity: i64,
    held: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sales SET sold = sold - ?, held = held - ?, version = version + 1, updated_at = ? \
         WHERE id = ?",
    )
    .bind(quantity)
    .bind(if held { quantity } else { 0 })
    .bind(now_ms())
    .bind(sale)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE sale_users SET units = units - ? WHERE sale_id = ? AND user_id = ?")
        .bind(quantity)
        .bind(sale)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A confirmed hold's units stay sold and are no longer held.
pub async fn release_held(
    tx: &mut AnyConnection,
    sale: &str,
    quantity: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sales SET held = held - ?, updated_at = ? WHERE id = ?")
        .bind(quantity)
        .bind(now_ms())
        .bind(sale)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Units held per user, for the users given (batch consumer), read with
/// their row locks so the values are the newest committed ones.
pub async fn user_units(
    tx: &mut AnyConnection,
    dialect: Dialect,
    sale: &str,
    users: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut held = HashMap::new();
    for chunk in sql::lookup_chunks(users, 256) {
        let sql = format!(
            "SELECT user_id, units FROM sale_users WHERE {}{}",
            dialect.pairs_in("sale_id", "user_id", chunk.len()),
            dialect.for_update()
        );
        let mut q = sqlx::query(&sql);
        for u in chunk {
            q = q.bind(sale).bind(u);
        }
        for row in q.fetch_all(&mut *tx).await? {
            held.insert(row.try_get("user_id")?, row.try_get("units")?);
        }
    }
    Ok(held)
}

/// Sets the units of the users given (batch consumer; rows created as needed),
/// one upsert per chunk.
pub async fn set_user_units(
    tx: &mut AnyConnection,
    dialect: Dialect,
    sale: &str,
    units: &HashMap<&str, i64>,
) -> Result<(), sqlx::Error> {
    let users: Vec<(&&str, &i64)> = units.iter().collect();
    for chunk in users.chunks(400) {
        let values = vec!["(?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO sale_users (sale_id, user_id, units) VALUES {values}{}",
            dialect.on_conflict_set("sale_id, user_id", "units")
        );
        let mut q = sqlx::query(&sql);
        for (user, n) in chunk {
            q = q.bind(sale).bind(**user).bind(**n);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Every holder of a sale with their units as the counters count them
/// (counter rebuild): the units in `sale_users` plus those of their
/// restocks the counters have not got yet.
pub async fn holder_units(pool: &AnyPool, sale: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT user_id, units FROM sale_users WHERE sale_id = ? AND units > 0 \
         UNION ALL SELECT user_id, quantity AS units FROM restocks WHERE sale_id = ?",
    )
    .bind(sale)
    .bind(sale)
    .fetch_all(pool)
    .await?;
    let mut units: HashMap<String, i64> = HashMap::new();
    for r in &rows {
        *units.entry(r.try_get("user_id")?).or_default() += r.try_get::<i64, _>("units")?;
    }
    Ok(units.into_iter().collect())
}

const ORDER_COLUMNS: &str = "order_id, sale_id, user_id, quantity, amount, status, reason, \
    strategy, created_at, hold_expires_at, payment_ref";

fn order_from_row(row: &AnyRow) -> Result<Order, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let strategy: String = row.try_get("strategy")?;
    Ok(Order {
        order_id: row.try_get("order_id")?,
        sale: Some(row.try_get("sale_id")?),
        user_id: Some(row.try_get("user_id")?),
        quantity: Some(row.try_get("quantity")?),
        amount: Some(row.try_get("amount")?),
        status: OrderStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status:?}").into()))?,
        reason: row.try_get("reason")?,
        strategy: Strategy::parse(&strategy),
        created_at: Some(from_ms(row.try_get("created_at")?)),
        hold_expires_at: row
            .try_get::<Option<i64>, _>("hold_expires_at")?
            .map(from_ms),
        payment_ref: row.try_get("payment_ref")?,
    })
}

/// Inserts decided orders, many rows per statement, with their events
/// (`dev.promo.order.held|confirmed|rejected`) in the outbox (written with
/// the first statement: [`promo_platform::outbox::record_then`]).
pub async fn insert_orders(tx: &mut AnyConnection, orders: &[Order]) -> Result<(), sqlx::Error> {
    let mut events: Vec<_> = orders.iter().filter_map(Order::event).collect();
    let now = now_ms();
    for chunk in orders.chunks(400) {
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!("INSERT INTO orders ({ORDER_COLUMNS}, updated_at) VALUES {values}");
        // The first statement carries all the events; the rest none.
        let changes = std::mem::take(&mut events);
        promo_platform::outbox::record_then(tx, &changes, &sql, |mut q| {
            for o in chunk {
                q = q
                    .bind(o.order_id.clone())
                    .bind(o.sale.clone().unwrap_or_default())
                    .bind(o.user_id.clone().unwrap_or_default())
                    .bind(o.quantity.unwrap_or(0))
                    .bind(o.amount.unwrap_or(0))
                    .bind(o.status.as_str())
                    .bind(o.reason.clone())
                    .bind(o.strategy.map(Strategy::as_str).unwrap_or("QUEUED"))
                    .bind(o.created_at.map(to_ms).unwrap_or(now))
                    .bind(o.hold_expires_at.map(to_ms))
                    .bind(o.payment_ref.clone())
                    .bind(now);
            }
            q
        })
        .await?;
    }
    Ok(())
}

pub async fn get_order(pool: &AnyPool, id: &str) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .map(|r| order_from_row(&r))
    .transpose()
}

/// Reads an order inside `tx` holding its row lock.
pub async fn lock_order(
    tx: &mut AnyConnection,
    dialect: Dialect,
    id: &str,
) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?{}",
        dialect.for_update()
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| order_from_row(&r))
    .transpose()
}

/// Moves order `id` from status `from` to `to` (with the payment reference
/// when given); false when it was not `from` (any more).
pub async fn move_order(
    tx: &mut AnyConnection,
    id: &str,
    from: OrderStatus,
    to: OrderStatus,
    payment_ref: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE orders SET status = ?, payment_ref = COALESCE(?, payment_ref), updated_at = ? \
         WHERE order_id = ? AND status = ?",
    )
    .bind(to.as_str())
    .bind(payment_ref)
    .bind(now_ms())
    .bind(id)
    .bind(from.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Up to `limit` HELD orders whose hold ended by `now` (epoch ms), oldest
/// first, locked in `tx`. On MySQL rows another transaction has locked
/// (another replica's sweep, a confirm, a cancel) are skipped rather than
/// waited for, so concurrent sweeps claim disjoint batches.
pub async fn claim_due_holds(
    tx: &mut AnyConnection,
    dialect: Dialect,
    now: i64,
    limit: usize,
) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'HELD' AND hold_expires_at <= ? \
         ORDER BY hold_expires_at LIMIT {limit}{}",
        dialect.for_update_skip_locked()
    ))
    .bind(now)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(order_from_row)
    .collect()
}

/// Units an order gave back in the database that the counters still have
/// to get ([`crate::domain::holds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restock {
    pub order_id: String,
    pub sale: String,
    pub user_id: String,
    pub quantity: i64,
}

/// Records restocks in `tx`, beside the change that returned their units.
pub async fn insert_restocks(
    tx: &mut AnyConnection,
    restocks: &[Restock],
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    for chunk in restocks.chunks(400) {
        let values = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO restocks (order_id, sale_id, user_id, quantity, created_at) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(r.order_id.clone())
                .bind(r.sale.clone())
                .bind(r.user_id.clone())
                .bind(r.quantity)
                .bind(now);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Restocks recorded before `before` (epoch ms), oldest first, at most `limit`.
pub async fn restocks_before(
    pool: &AnyPool,
    before: i64,
    limit: usize,
) -> Result<Vec<Restock>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT order_id, sale_id, user_id, quantity FROM restocks WHERE created_at < ? \
         ORDER BY created_at LIMIT {limit}"
    ))
    .bind(before)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(Restock {
            order_id: r.try_get("order_id")?,
            sale: r.try_get("sale_id")?,
            user_id: r.try_get("user_id")?,
            quantity: r.try_get("quantity")?,
        })
    })
    .collect()
}

/// Forgets a restock the counters have taken.
pub async fn delete_restock(pool: &AnyPool, order_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM restocks WHERE order_id = ?")
        .bind(order_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The order ids among `ids` already decided (a redelivered batch).
pub async fn decided_orders(
    tx: &mut AnyConnection,
    ids: &[&str],
) -> Result<HashSet<String>, sqlx::Error> {
    promo_platform::admission::existing_ids(tx, "orders", "order_id", ids).await
}
