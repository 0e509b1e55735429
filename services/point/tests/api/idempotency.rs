//! Idempotency-Key: a replay returns the first answer and writes nothing,
//! also when the replays arrive at once; the same key with another body is
//! 422; refusals are replayed too.

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{spawn_app, Backend};

async fn replays_return_the_first_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let earn = json!({"amount": 100, "reason": "welcome"});
    let first = app.mutate("u", "earn", "k-earn", earn.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = app.mutate("u", "earn", "k-earn", earn).await;
    assert_eq!(
        (again.status, &again.body),
        (200, &first.body),
        "same answer"
    );
    assert_eq!(app.books("u").await, (100, 100, 1), "one entry");

    let other = app
        .mutate(
            "u",
            "earn",
            "k-earn",
            json!({"amount": 101, "reason": "welcome"}),
        )
        .await;
    assert_eq!(
        (other.status, other.body["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let other_op = app
        .mutate(
            "u",
            "use",
            "k-earn",
            json!({"amount": 100, "reason": "welcome"}),
        )
        .await;
    assert_eq!(
        other_op.status, 422,
        "another operation under the key is another request"
    );

    // A refusal is the first answer too: replaying it refuses again even
    // after the balance would allow it.
    let too_much = json!({"amount": 500, "reason": "order"});
    let refused = app.mutate("u", "use", "k-use", too_much.clone()).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (409, Some("insufficient_balance"))
    );
    assert_eq!(app.earn("u", 1000).await.status, 200);
    let replay = app.mutate("u", "use", "k-use", too_much).await;
    assert_eq!(
        (replay.status, replay.body["code"].as_str()),
        (409, Some("insufficient_balance"))
    );
    assert_eq!(app.books("u").await, (1100, 1100, 2));

    // Keys belong to a user: another user's same key is a new request.
    assert_eq!(
        app.mutate("v", "earn", "k-earn", json!({"amount": 5, "reason": "x"}))
            .await
            .status,
        200
    );
    assert_eq!(app.books("v").await, (5, 5, 1));
}

async fn concurrent_replays_apply_once(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.earn("c", 1000).await.status, 200);
    let body = json!({"amount": 7, "reason": "order", "orderId": "o-1"});
    let answers = join_all((0..50).map(|_| app.mutate("c", "use", "same-key", body.clone()))).await;
    let first = &answers[0];
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body, first.body, "every replay answers the same");
    }
    assert_eq!(app.books("c").await, (993, 993, 2), "applied once");
}

promo_platform::on_both_backends!(
    replays_return_the_first_answer,
    concurrent_replays_apply_once
);
