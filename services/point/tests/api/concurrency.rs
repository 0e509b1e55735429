//! 1,000 concurrent uses of 1–20 points on one account: the balance never
//! goes negative, final balance = initial − Σ successful uses, and the
//! ledger sums to the balance.

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{spawn_app, Backend};

const INITIAL: i64 = 8_000;

async fn thousand_concurrent_uses(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.earn("hot", INITIAL).await.status, 200);
    let answers = join_all((0..1000).map(|i| {
        let app = &app;
        async move {
            let amount = (i % 20) as i64 + 1;
            let a = app
                .mutate(
                    "hot",
                    "use",
                    &format!("use-{i}"),
                    json!({"amount": amount, "reason": "order"}),
                )
                .await;
            (amount, a)
        }
    }))
    .await;
    let mut spent = 0;
    let mut successes = 0;
    let (mut insufficient, mut conflicts) = (0, 0);
    for (amount, a) in &answers {
        match (a.status, a.body["code"].as_str()) {
            (200, _) => {
                assert!(a.body["balance"].as_i64().unwrap() >= 0, "{}", a.body);
                spent += amount;
                successes += 1;
            }
            (409, Some("insufficient_balance")) => insufficient += 1,
            (409, Some("conflict")) => conflicts += 1,
            (s, _) => panic!("unexpected {s}: {}", a.body),
        }
    }
    // Demand (10,500) exceeds the balance, so some uses are refused.
    assert!(insufficient + conflicts > 0);
    assert!(successes > 0);
    let (balance, ledger_sum, entries) = app.books("hot").await;
    assert!(balance >= 0);
    assert_eq!(
        balance,
        INITIAL - spent,
        "final balance = initial − Σ successful uses"
    );
    assert_eq!(ledger_sum, balance, "the ledger sums to the balance");
    assert_eq!(
        entries,
        1 + successes,
        "one entry per success, none for refusals"
    );
    assert_eq!(app.balance("hot").await, balance);
    println!("{successes} uses, {insufficient} insufficient, {conflicts} conflicts after retries");
}

promo_platform::on_both_backends!(thousand_concurrent_uses);
