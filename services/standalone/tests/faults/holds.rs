//! Holds killed mid-expiry: a sale of held units (V2, `holdSeconds: 30`)
//! sells out; around the moment the holds run out, buyers confirm a third
//! of them, and the serving process is killed (kill -9) as soon as its
//! sweep has expired the first ones — between its commit and the counters,
//! or in its next batch. After a restart: every hold ended once, as its
//! confirm answer said; `sold` counts the confirmed units only; the
//! counters hold exactly the rest; and the freed units sell again, exactly.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use futures::{stream, StreamExt};
use serde_json::{json, Value};

use crate::harness::{assert_exact, Proc, Row};

const STOCK: usize = 600;
const HOLD_SECONDS: u64 = 30;

/// What a confirm was answered: 200 CONFIRMED, 409 hold_expired, or
/// nothing (the process died first: the buyer retries after the restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Confirmed,
    Expired,
    None,
}

async fn confirm(client: &reqwest::Client, base: &str, order: &str) -> Answer {
    let r = client
        .post(format!("{base}/orders/{order}/confirm"))
        .json(&json!({"paymentRef": format!("pay-{order}")}))
        .send()
        .await;
    match r {
        Ok(r) if r.status() == 200 => Answer::Confirmed,
        Ok(r) if r.status() == 409 => {
            let body: Value = r.json().await.unwrap_or_default();
            assert_eq!(body["code"], "hold_expired", "{body}");
            Answer::Expired
        }
        Ok(r) if r.status().is_server_error() => Answer::None,
        Ok(r) => panic!("confirm {order}: {}", r.status()),
        Err(_) => Answer::None,
    }
}

async fn order(client: &reqwest::Client, base: &str, sale: &str, user: &str) -> (u16, Value) {
    let r = client
        .post(format!("{base}/v2/time-sales/{sale}/orders"))
        .json(&json!({"userId": user, "quantity": 1}))
        .send()
        .await
        .expect("order");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn sale_view(client: &reqwest::Client, base: &str, sale: &str) -> Value {
    client
        .get(format!("{base}/time-sales/{sale}"))
        .send()
        .await
        .expect("sale")
        .json()
        .await
        .expect("json")
}

/// Sum of `promo_holds_total{outcome="expired"}` in one process's /metrics.
async fn expired_so_far(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(r) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("promo_holds_total") && l.contains("outcome=\"expired\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The experiment on the serving process `start` starts (twice: before and
/// after the kill, on the same backends).
pub async fn holds_kill9(scenario: &str, client: &reqwest::Client, start: impl Fn() -> Proc) {
    // Unique: the real deployments share one database server.
    let sale = &promo_platform::testing::unique("held");
    let mut first = start();
    first.ready(client, Duration::from_secs(60)).await;
    let now = chrono::Utc::now();
    let spec = json!({"product": {"sku": "SKU-H", "name": "Held", "price": 1000}, "salePrice": 500,
        "stock": STOCK, "perUserLimit": 1, "strategy": "REDIS_LOCK", "holdSeconds": HOLD_SECONDS,
        "startsAt": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "endsAt": (now + chrono::Duration::days(1)).to_rfc3339()});
    let r = client
        .put(format!("{}/admin/time-sales/{sale}", first.base))
        .json(&spec)
        .send()
        .await
        .expect("create");
    assert!(r.status().is_success(), "create: {}", r.status());

    // Sell out: every unit held, in order of the users.
    let ordered_at = Instant::now();
    let base = first.base.clone();
    let held: Vec<(String, String)> = stream::iter(0..STOCK)
        .map(|i| {
            let base = base.clone();
            async move {
                let user = format!("h{i}");
                let (status, body) = order(client, &base, sale, &user).await;
                assert_eq!(
                    (status, body["status"].as_str()),
                    (201, Some("HELD")),
                    "{body}"
                );
                (user, body["orderId"].as_str().unwrap().to_string())
            }
        })
        .buffered(32)
        .collect()
        .await;
    assert_eq!(order(client, &base, sale, "late").await.0, 410);

    // Every third hold is confirmed, spread from 2 s before the holds start
    // running out to 3 s after; the kill comes once the sweep has expired some.
    let to_confirm: Vec<&String> = held.iter().step_by(3).map(|(_, o)| o).collect();
    let window_start = ordered_at + Duration::from_secs(HOLD_SECONDS - 2);
    tokio::time::sleep_until(window_start.into()).await;
    let killed = AtomicBool::new(false);
    let pid = first.pid();
    let spread = Duration::from_millis(5000) / to_confirm.len() as u32;
    let confirms = stream::iter(to_confirm.iter().enumerate())
        .map(|(i, o)| {
            let base = base.clone();
            async move {
                tokio::time::sleep_until((window_start + spread * i as u32).into()).await;
                ((*o).clone(), confirm(client, &base, o).await)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>();
    let killer = async {
        while expired_so_far(client, &base).await == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        killed.store(true, Ordering::Relaxed);
    };
    let (mut answers, ()) = tokio::join!(confirms, killer);
    assert!(killed.load(Ordering::Relaxed));
    first.kill9();

    // Restart; the buyers whose confirms went unanswered try again.
    let restarted = Instant::now();
    let mut second = start();
    second.ready(client, Duration::from_secs(60)).await;
    let base = second.base.clone();
    let mut first_answer = None;
    for (o, a) in answers.iter_mut() {
        if *a == Answer::None {
            *a = confirm(client, &base, o).await;
            assert_ne!(*a, Answer::None, "{o}: no answer after the restart");
            first_answer.get_or_insert_with(|| restarted.elapsed());
        }
    }

    // Every hold ends; the counters come back to exactly the rest.
    let confirmed = answers
        .iter()
        .filter(|(_, a)| *a == Answer::Confirmed)
        .count() as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let v = sale_view(client, &base, sale).await;
        let (sold, held_now, remaining) = (
            v["sold"].as_i64(),
            v["held"].as_i64(),
            v["remaining"].as_i64(),
        );
        if (sold, held_now, remaining) == (Some(confirmed), Some(0), Some(STOCK as i64 - confirmed))
        {
            break restarted.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{scenario}: not settled: {v} with {confirmed} confirmed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Each answer is the order's final status.
    let status: HashMap<String, String> = stream::iter(held.iter())
        .map(|(_, o)| {
            let base = base.clone();
            async move {
                let v: Value = client
                    .get(format!("{base}/orders/{o}"))
                    .send()
                    .await
                    .expect("order")
                    .json()
                    .await
                    .expect("json");
                (
                    o.clone(),
                    v["status"].as_str().unwrap_or_default().to_string(),
                )
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut wrong = 0;
    for (o, a) in &answers {
        let want = if *a == Answer::Confirmed {
            "CONFIRMED"
        } else {
            "EXPIRED"
        };
        if status[o] != want {
            eprintln!("{o}: answered {a:?}, ended {}", status[o]);
            wrong += 1;
        }
    }
    let ended = status
        .values()
        .filter(|s| *s == "CONFIRMED" || *s == "EXPIRED")
        .count();
    assert_eq!(
        ended, STOCK,
        "{scenario}: every hold ended CONFIRMED or EXPIRED"
    );

    // The freed units and limits sell again, exactly: every user whose hold
    // expired orders once more; the stock runs out with the last of them.
    let freed: Vec<&String> = held
        .iter()
        .filter(|(_, o)| status[o] == "EXPIRED")
        .map(|(u, _)| u)
        .collect();
    let again: Vec<u16> = stream::iter(freed.iter())
        .map(|u| {
            let base = base.clone();
            async move { order(client, &base, sale, u).await.0 }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let resold = again.iter().filter(|s| **s == 201).count() as i64;
    assert_eq!(order(client, &base, sale, "late-2").await.0, 410);
    let v = sale_view(client, &base, sale).await;
    let row = Row {
        scenario: scenario.to_string(),
        acknowledged: answers.len(),
        lost: wrong,
        persisted: v["sold"].as_i64().unwrap_or(-1),
        limit: STOCK as i64,
        over_limit: 0,
        admits_again_after: first_answer.unwrap_or_default(),
        all_decided_after: settled,
    };
    Row::header();
    assert_eq!(
        resold,
        freed.len() as i64,
        "{scenario}: every freed unit sold again"
    );
    assert_exact(
        &row,
        v["remaining"].as_i64().unwrap_or(-1),
        v["pending"].as_i64().unwrap_or(-1),
        &[],
    );
    assert_eq!(
        wrong, 0,
        "{scenario}: holds that ended otherwise than answered"
    );
}
