//! All SQL of the coupon service. Queries are written once for both dialects
//! (sqlx `Any`, `?` placeholders, epoch-millisecond BIGINTs); the few
//! dialect-specific clauses come from [`Dialect`].

use std::collections::HashMap;

use promo_platform::{
    http::idempotency,
    ports::{
        sql::{self, is_unique_violation, Migrations},
        Dialect, Migration,
    },
    time::{from_ms, now_ms, to_ms},
};
use sqlx::{any::AnyRow, AnyConnection, AnyPool, Row};

use crate::domain::{
    Campaign, CampaignSpec, Coupon, CouponError, CouponStatus, Discount, DiscountKind, Strategy,
};

pub const MIGRATIONS: Migrations = Migrations {
    mysql: &[
        Migration {
            version: 1,
            name: "init",
            sql: include_str!("../../../migrations/coupon/mysql/0001_init.sql"),
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
            sql: include_str!("../../../migrations/coupon/mysql/0004_buckets.sql"),
        },
        Migration {
            version: 5,
            name: "outbox",
            sql: promo_platform::outbox::MYSQL_TABLES,
        },
        Migration {
            version: 6,
            name: "outbox_packed",
            sql: promo_platform::outbox::MYSQL_PACKED,
        },
        Migration {
            version: 7,
            name: "outbox_mark_in_place",
            sql: promo_platform::outbox::MYSQL_MARK_IN_PLACE,
        },
    ],
    sqlite: &[
        Migration {
            version: 1,
            name: "init",
            sql: include_str!("../../../migrations/coupon/sqlite/0001_init.sql"),
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
            sql: include_str!("../../../migrations/coupon/sqlite/0004_buckets.sql"),
        },
        Migration {
            version: 5,
            name: "outbox",
            sql: promo_platform::outbox::SQLITE_TABLES,
        },
        Migration {
            version: 6,
            name: "outbox_packed",
            sql: promo_platform::outbox::SQLITE_PACKED,
        },
        Migration {
            version: 7,
            name: "outbox_rowid",
            sql: promo_platform::outbox::SQLITE_ROWID,
        },
        Migration {
            version: 8,
            name: "outbox_published_index",
            sql: promo_platform::outbox::SQLITE_PUBLISHED_INDEX,
        },
    ],
};

const CAMPAIGN_COLUMNS: &str = "id, quota, per_user_limit, starts_at, ends_at, strategy, \
    discount_kind, discount_value, discount_max, min_order, valid_for_days, paused, buckets, issued";

fn campaign_from_row(row: &AnyRow) -> Result<Campaign, sqlx::Error> {
    let strategy: String = row.try_get("strategy")?;
    let kind: String = row.try_get("discount_kind")?;
    let corrupt = |what: &str, v: &str| sqlx::Error::Decode(format!("unknown {what} {v:?}").into());
    Ok(Campaign {
        id: row.try_get("id")?,
        issued: row.try_get("issued")?,
        spec: CampaignSpec {
            quota: row.try_get("quota")?,
            per_user_limit: row.try_get("per_user_limit")?,
            starts_at: from_ms(row.try_get("starts_at")?),
            ends_at: from_ms(row.try_get("ends_at")?),
            strategy: Strategy::parse(&strategy).ok_or_else(|| corrupt("strategy", &strategy))?,
            discount: Discount {
                kind: DiscountKind::parse(&kind).ok_or_else(|| corrupt("discount kind", &kind))?,
                value: row.try_get("discount_value")?,
                max_amount: row.try_get("discount_max")?,
                min_order_amount: row.try_get("min_order")?,
            },
            valid_for_days: row.try_get("valid_for_days")?,
            paused: row.try_get::<i64, _>("paused")? != 0,
            buckets: promo_platform::buckets::stored_count(row.try_get("buckets")?)?,
        },
    })
}

pub async fn get_campaign(pool: &AnyPool, id: &str) -> Result<Option<Campaign>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .map(|r| campaign_from_row(&r))
    .transpose()
}

pub async fn list_campaigns(pool: &AnyPool) -> Result<Vec<Campaign>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id"
    ))
    .fetch_all(pool)
    .await?
    .iter()
    .map(campaign_from_row)
    .collect()
}

/// Reads the campaign inside `tx`, holding its row lock until commit (MySQL);
/// on SQLite the single writer connection gives the same exclusion.
pub async fn lock_campaign(
    tx: &mut AnyConnection,
    dialect: Dialect,
    id: &str,
) -> Result<Option<Campaign>, sqlx::Error> {
    read_campaign(tx, dialect, id, true).await
}

/// Reads the campaign inside `tx`, with its row lock when `lock`.
pub async fn read_campaign(
    tx: &mut AnyConnection,
    dialect: Dialect,
    id: &str,
    lock: bool,
) -> Result<Option<Campaign>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?{}",
        if lock { dialect.for_update() } else { "" }
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| campaign_from_row(&r))
    .transpose()
}

/// Creates or updates a campaign. Returns the stored campaign, the previous
/// one (None when created). Lowering the quota below what is issued is refused.
pub async fn upsert_campaign(
    pool: &AnyPool,
    dialect: Dialect,
    id: &str,
    spec: &CampaignSpec,
) -> Result<(Campaign, Option<Campaign>), CouponError> {
    let mut tx = pool.begin().await?;
    let previous = lock_campaign(&mut tx, dialect, id).await?;
    let now = now_ms();
    match &previous {
        Some(prev) => {
            if spec.quota < prev.issued {
                return Err(CouponError::QuotaBelowIssued {
                    quota: spec.quota,
                    issued: prev.issued,
                });
            }
            bind_spec(sqlx::query(
                "UPDATE campaigns SET quota = ?, per_user_limit = ?, starts_at = ?, ends_at = ?, \
                 strategy = ?, discount_kind = ?, discount_value = ?, discount_max = ?, min_order = ?, \
                 valid_for_days = ?, paused = ?, buckets = ?, updated_at = ? WHERE id = ?",
            ), spec)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            let inserted = bind_spec(
                sqlx::query(
                    "INSERT INTO campaigns (quota, per_user_limit, starts_at, ends_at, strategy, \
                 discount_kind, discount_value, discount_max, min_order, valid_for_days, paused, \
                 buckets, created_at, updated_at, id, issued) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
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
                    // Created concurrently by another request: that one wins.
                    return Err(CouponError::InvalidCampaign(format!(
                        "campaign {id:?} was created concurrently; retry to update it"
                    )));
                }
                return Err(e.into());
            }
        }
    }
    let stored = lock_campaign(&mut tx, dialect, id)
        .await?
        .ok_or_else(|| CouponError::UnknownCampaign(id.to_string()))?;
    tx.commit().await?;
    Ok((stored, previous))
}

/// Binds the specification columns in the order both campaign writes list them.
fn bind_spec<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    spec: &CampaignSpec,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let d = &spec.discount;
    q.bind(spec.quota)
        .bind(spec.per_user_limit)
        .bind(to_ms(spec.starts_at))
        .bind(to_ms(spec.ends_at))
        .bind(spec.strategy.as_str())
        .bind(d.kind.as_str())
        .bind(d.value)
        .bind(d.max_amount)
        .bind(d.min_order_amount)
        .bind(spec.valid_for_days)
        .bind(spec.paused as i64)
        .bind(i64::from(spec.buckets))
}

/// How many coupons `user` holds of `campaign` (the next one is seq + 1).
pub async fn count_user_coupons(
    tx: &mut AnyConnection,
    campaign: &str,
    user: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM coupons WHERE campaign_id = ? AND user_id = ?")
        .bind(campaign)
        .bind(user)
        .fetch_one(&mut *tx)
        .await
}

/// Coupons held per user, for the users given (batch consumer).
pub async fn count_users_coupons(
    tx: &mut AnyConnection,
    dialect: Dialect,
    campaign: &str,
    users: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut held = HashMap::new();
    for chunk in sql::lookup_chunks(users, 256) {
        let sql = format!(
            "SELECT user_id, COUNT(*) AS n FROM coupons WHERE {} GROUP BY user_id",
            dialect.pairs_in("campaign_id", "user_id", chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for u in chunk {
            q = q.bind(campaign).bind(u);
        }
        for row in q.fetch_all(&mut *tx).await? {
            held.insert(row.try_get("user_id")?, row.try_get("n")?);
        }
    }
    Ok(held)
}

/// All holders of a campaign with their coupon counts (counter rebuild).
pub async fn holder_counts(
    pool: &AnyPool,
    campaign: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT user_id, COUNT(*) AS n FROM coupons WHERE campaign_id = ? GROUP BY user_id",
    )
    .bind(campaign)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("user_id")?, r.try_get("n")?)))
        .collect()
}

/// A coupon row about to be inserted.
pub struct NewCoupon<'a> {
    pub coupon: &'a Coupon,
    pub seq: i64,
    pub request_id: Option<&'a str>,
}

/// Inserts coupons, many rows per statement, with their
/// `dev.promo.coupon.issued` events in the outbox (written with the first
/// statement: [`promo_platform::outbox::record_then`]).
pub async fn insert_coupons(
    tx: &mut AnyConnection,
    rows: &[NewCoupon<'_>],
) -> Result<(), sqlx::Error> {
    let mut events: Vec<_> = rows.iter().map(|r| r.coupon.issued_event()).collect();
    for chunk in rows.chunks(400) {
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO coupons (coupon_id, code, campaign_id, user_id, seq, request_id, status, issued_at, expires_at) VALUES {values}"
        );
        // The first statement carries all the events; the rest none.
        let changes = std::mem::take(&mut events);
        promo_platform::outbox::record_then(tx, &changes, &sql, |mut q| {
            for r in chunk {
                let c = r.coupon;
                q = q
                    .bind(c.coupon_id.clone())
                    .bind(c.code.clone())
                    .bind(c.campaign.clone())
                    .bind(c.user_id.clone())
                    .bind(r.seq)
                    .bind(r.request_id.map(str::to_string))
                    .bind("ISSUED")
                    .bind(to_ms(c.issued_at))
                    .bind(to_ms(c.expires_at));
            }
            q
        })
        .await?;
    }
    Ok(())
}

/// Adds `n` to the campaign's issued count unless that would pass the quota.
/// Returns whether it did (false: the quota is exhausted). The step that
/// takes the last coupon of the quota records `dev.promo.campaign.sold_out`
/// in the same transaction.
///
/// The update reports what is left without another round trip while the
/// row is locked: on MySQL/MariaDB it hands `quota - issued + 1` (after the
/// update; assignments run left to right) to `LAST_INSERT_ID(expr)`, which
/// the server returns with the statement's result; SQLite has `RETURNING`.
/// Where neither answers, the row is read.
pub async fn add_issued(
    tx: &mut AnyConnection,
    dialect: Dialect,
    campaign: &str,
    n: i64,
) -> Result<bool, sqlx::Error> {
    const SET: &str = "UPDATE campaigns SET issued = issued + ?";
    const WHERE: &str = "WHERE id = ? AND issued + ? <= quota";
    let left_plus_one = match dialect {
        Dialect::MySql => {
            let r = sqlx::query(&format!(
                "{SET}, quota = quota + 0 * LAST_INSERT_ID(quota - issued + 1) {WHERE}"
            ))
            .bind(n)
            .bind(campaign)
            .bind(n)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() != 1 {
                return Ok(false);
            }
            r.last_insert_id().filter(|v| *v > 0)
        }
        Dialect::Sqlite => {
            let row = sqlx::query(&format!("{SET} {WHERE} RETURNING quota - issued + 1"))
                .bind(n)
                .bind(campaign)
                .bind(n)
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                None => return Ok(false),
                Some(r) => Some(r.try_get::<i64, _>(0)?),
            }
        }
    };
    if left_plus_one.is_some_and(|v| v != 1) {
        return Ok(true);
    }
    // Sold out, or unknown: read the row (at most once per sell-out).
    let row = sqlx::query("SELECT issued, quota FROM campaigns WHERE id = ?")
        .bind(campaign)
        .fetch_one(&mut *tx)
        .await?;
    let (issued, quota): (i64, i64) = (row.try_get("issued")?, row.try_get("quota")?);
    if issued >= quota {
        promo_platform::outbox::record(tx, &[Campaign::sold_out_event(campaign, issued)]).await?;
    }
    Ok(true)
}

const COUPON_COLUMNS: &str = "coupon_id, code, campaign_id, user_id, status, issued_at, expires_at";

fn coupon_from_row(row: &AnyRow) -> Result<Coupon, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Coupon {
        coupon_id: row.try_get("coupon_id")?,
        code: row.try_get("code")?,
        campaign: row.try_get("campaign_id")?,
        user_id: row.try_get("user_id")?,
        status: if status == "REDEEMED" {
            CouponStatus::Redeemed
        } else {
            CouponStatus::Issued
        },
        issued_at: from_ms(row.try_get("issued_at")?),
        expires_at: from_ms(row.try_get("expires_at")?),
    })
}

pub async fn get_coupon(pool: &AnyPool, coupon_id: &str) -> Result<Option<Coupon>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COUPON_COLUMNS} FROM coupons WHERE coupon_id = ?"
    ))
    .bind(coupon_id)
    .fetch_optional(pool)
    .await?
    .map(|r| coupon_from_row(&r))
    .transpose()
}

/// A user's coupons, newest first, after `cursor` (a coupon id; ids are
/// time-ordered UUIDv7, so the order is stable while coupons are added).
pub async fn user_coupons(
    pool: &AnyPool,
    user: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<Coupon>, sqlx::Error> {
    let rows = match cursor {
        Some(c) => sqlx::query(&format!(
            "SELECT {COUPON_COLUMNS} FROM coupons WHERE user_id = ? AND coupon_id < ? ORDER BY coupon_id DESC LIMIT ?"
        ))
        .bind(user)
        .bind(c)
        .bind(limit)
        .fetch_all(pool)
        .await?,
        None => sqlx::query(&format!(
            "SELECT {COUPON_COLUMNS} FROM coupons WHERE user_id = ? ORDER BY coupon_id DESC LIMIT ?"
        ))
        .bind(user)
        .bind(limit)
        .fetch_all(pool)
        .await?,
    };
    rows.iter().map(coupon_from_row).collect()
}

/// A coupon with its redemption, locked for update.
pub struct RedemptionRow {
    pub coupon: Coupon,
    pub order_id: Option<String>,
    pub order_amount: Option<i64>,
    pub discount_amount: Option<i64>,
}

pub async fn lock_coupon_by_code(
    tx: &mut AnyConnection,
    dialect: Dialect,
    code: &str,
) -> Result<Option<RedemptionRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COUPON_COLUMNS}, order_id, order_amount, discount_amount FROM coupons WHERE code = ?{}",
        dialect.for_update()
    ))
    .bind(code)
    .fetch_optional(&mut *tx)
    .await?;
    row.map(|r| {
        Ok(RedemptionRow {
            coupon: coupon_from_row(&r)?,
            order_id: r.try_get("order_id")?,
            order_amount: r.try_get("order_amount")?,
            discount_amount: r.try_get("discount_amount")?,
        })
    })
    .transpose()
}

pub async fn mark_redeemed(
    tx: &mut AnyConnection,
    coupon_id: &str,
    order_id: &str,
    order_amount: i64,
    discount_amount: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE coupons SET status = 'REDEEMED', order_id = ?, order_amount = ?, discount_amount = ?, redeemed_at = ? \
         WHERE coupon_id = ? AND status = 'ISSUED'",
    )
    .bind(order_id)
    .bind(order_amount)
    .bind(discount_amount)
    .bind(now_ms())
    .bind(coupon_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn clear_redemption(tx: &mut AnyConnection, coupon_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE coupons SET status = 'ISSUED', order_id = NULL, order_amount = NULL, discount_amount = NULL, \
         redeemed_at = NULL WHERE coupon_id = ?",
    )
    .bind(coupon_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The decided outcome of a queued request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutcome {
    pub request_id: String,
    pub campaign: String,
    pub user_id: String,
    pub coupon_id: Option<String>,
    pub reason: Option<String>,
    pub admitted_at: i64,
}

/// The decided outcome of a queued request: its refusal, or the coupon that
/// carries its id.
pub async fn get_request(
    pool: &AnyPool,
    request_id: &str,
) -> Result<Option<RequestOutcome>, sqlx::Error> {
    let refused = sqlx::query(
        "SELECT request_id, campaign_id, user_id, coupon_id, reason, admitted_at FROM issue_requests WHERE request_id = ?",
    )
    .bind(request_id)
    .fetch_optional(pool)
    .await?;
    if let Some(r) = refused {
        return Ok(Some(RequestOutcome {
            request_id: r.try_get("request_id")?,
            campaign: r.try_get("campaign_id")?,
            user_id: r.try_get("user_id")?,
            // Set on rows of versions that stored issued outcomes here too.
            coupon_id: r.try_get("coupon_id")?,
            reason: r.try_get("reason")?,
            admitted_at: r.try_get("admitted_at")?,
        }));
    }
    let issued = sqlx::query(
        "SELECT request_id, campaign_id, user_id, coupon_id, issued_at FROM coupons WHERE request_id = ?",
    )
    .bind(request_id)
    .fetch_optional(pool)
    .await?;
    issued
        .map(|r| {
            Ok(RequestOutcome {
                request_id: r.try_get("request_id")?,
                campaign: r.try_get("campaign_id")?,
                user_id: r.try_get("user_id")?,
                coupon_id: Some(r.try_get("coupon_id")?),
                reason: None,
                // A queued request's coupon is issued at its admission time.
                admitted_at: r.try_get("issued_at")?,
            })
        })
        .transpose()
}

/// Which of `ids` are already decided (redelivered events): refused ones
/// have an `issue_requests` row, issued ones a coupon with their id.
pub async fn decided_requests(
    tx: &mut AnyConnection,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut decided =
        promo_platform::admission::existing_ids(tx, "issue_requests", "request_id", ids).await?;
    decided
        .extend(promo_platform::admission::existing_ids(tx, "coupons", "request_id", ids).await?);
    Ok(decided)
}

/// Stores refused requests with their reasons.
pub async fn insert_refusals(
    tx: &mut AnyConnection,
    rows: &[RequestOutcome],
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    for chunk in rows.chunks(500) {
        let values = vec!["(?, ?, ?, 'REJECTED', ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO issue_requests (request_id, campaign_id, user_id, status, reason, admitted_at, decided_at) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(r.request_id.clone())
                .bind(r.campaign.clone())
                .bind(r.user_id.clone())
                .bind(r.reason.clone())
                .bind(r.admitted_at)
                .bind(now);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

pub use promo_platform::admission::{fence_seen, record_fence};
