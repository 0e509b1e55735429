//! The invariants checked through the API after a run: nothing oversold,
//! every 2xx accounted for, V3 drained.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use serde_json::Value;

use crate::{load::*, scenario::*};

#[derive(Debug, Serialize)]
pub(crate) struct Invariant {
    pub(crate) name: String,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

pub(crate) fn inv(name: &str, ok: bool, detail: String) -> Invariant {
    Invariant {
        name: name.into(),
        ok,
        detail,
    }
}

/// Waits until nothing is pending; returns the final figures.
pub(crate) async fn drained(c: &Client, path: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, v) = c.send(reqwest::Method::GET, path, None, None).await?;
        if s != 200 {
            bail!("{path} answered {s}: {v}");
        }
        if v["pending"].as_i64() == Some(0) || Instant::now() > deadline {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn check(
    c: &Client,
    plan: &Plan,
    tally: &Tally,
    quota: i64,
) -> anyhow::Result<Vec<Invariant>> {
    let ok2xx: u64 = tally
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let sold_out = tally.statuses.get(&410).copied().unwrap_or(0);
    let server_errors: u64 = tally
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    let mut out = vec![inv(
        "no 5xx, no transport errors",
        server_errors == 0 && tally.transport_errors == 0,
        format!(
            "{server_errors} 5xx, {} transport errors",
            tally.transport_errors
        ),
    )];
    match plan.scenario {
        Scenario::CouponV1
        | Scenario::CouponV2
        | Scenario::CouponV3
        | Scenario::TimesaleV1
        | Scenario::TimesaleV2
        | Scenario::TimesaleV3 => {
            // Coupons say issued of a quota, sales sold of a stock.
            let (path, taken_field) = plan.figures();
            let limit_name = if plan.key_is_campaign() {
                "quota"
            } else {
                "stock"
            };
            let v = drained(c, &path).await?;
            let taken = v[taken_field].as_i64().unwrap_or(-1);
            let remaining = v["remaining"].as_i64().unwrap_or(-1);
            out.push(inv(
                "drained",
                v["pending"] == 0,
                format!("pending {}", v["pending"]),
            ));
            out.push(inv(
                "every 2xx was taken once",
                taken == ok2xx as i64,
                format!("{taken_field} {taken}, 2xx {ok2xx}"),
            ));
            out.push(inv(
                &format!("{taken_field} + remaining = {limit_name}"),
                taken <= quota && taken + remaining == quota,
                format!("{taken_field} {taken} remaining {remaining} {limit_name} {quota}"),
            ));
            if sold_out > 0 {
                out.push(inv(
                    &format!("demand exceeded {limit_name} → all of it taken"),
                    taken == quota,
                    format!("{taken_field} {taken}"),
                ));
            }
        }
        Scenario::PointsEarn | Scenario::PointsUse => {
            let mut moved = 0i64;
            for n in 0..POINT_USERS {
                let u = plan.point_user(n);
                let (s, v) = c
                    .send(
                        reqwest::Method::GET,
                        &format!("/users/{u}/points"),
                        None,
                        None,
                    )
                    .await?;
                if s != 200 {
                    bail!("balance of {u} answered {s}");
                }
                let b = v["balance"].as_i64().unwrap_or(0);
                moved += if plan.scenario == Scenario::PointsEarn {
                    b
                } else {
                    POINT_SEED - b
                };
            }
            out.push(inv(
                "Σ balance change = successful operations",
                moved == ok2xx as i64,
                format!("moved {moved}, 2xx {ok2xx}"),
            ));
        }
        Scenario::Ceiling | Scenario::PointsBalance => {
            let total: u64 = tally.statuses.values().sum();
            out.push(inv(
                "every answer 200",
                tally.statuses.get(&200) == Some(&total),
                format!("{:?}", tally.statuses),
            ));
        }
    }
    Ok(out)
}
