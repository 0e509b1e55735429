//! The shipped example Promotions load and register on the embedded default.

use std::path::Path;

use coupon_service::{CouponService, Settings};
use promo_platform::{
    config::{BackendArgs, Backends},
    metrics::Metrics,
    testing::TempDir,
};
use promo_standalone::load_promotions;

#[tokio::test]
async fn examples_register_and_reloading_changes_nothing() {
    let dir = TempDir::new();
    let backends = Backends::connect(&BackendArgs::embedded(&dir.0))
        .await
        .unwrap();
    let svc = CouponService::start(&backends, Metrics::new(), Settings::default())
        .await
        .unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promotions");
    let loaded = load_promotions(&examples, &svc).await.unwrap();
    assert!(loaded.failed.is_empty(), "{:?}", loaded.failed);
    let mut names = loaded.registered.clone();
    names.sort();
    assert_eq!(
        names,
        [
            "black-friday-10pct",
            "cyber-week-queued",
            "flash-vip",
            "welcome-coupon"
        ]
    );

    // A restart re-registers the same specs: figures are not reset.
    let c = svc.campaign("cyber-week-queued").await.unwrap();
    assert_eq!(c.spec.quota, 100_000);
    svc.counters
        .admit("coupon:cyber-week-queued", "u", 1, 1, None)
        .await
        .unwrap();
    let again = load_promotions(&examples, &svc).await.unwrap();
    assert_eq!(again.registered.len(), 4);
    assert_eq!(
        svc.counters
            .remaining("coupon:cyber-week-queued")
            .await
            .unwrap(),
        Some(99_999)
    );
}

#[tokio::test]
async fn a_bad_manifest_is_reported_not_fatal() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("bad.yaml"), "apiVersion: promo.dev/v1alpha1\nkind: Promotion\nmetadata: {name: x}\nspec: {type: Coupon}\n").unwrap();
    let data = TempDir::new();
    let backends = Backends::connect(&BackendArgs::embedded(&data.0))
        .await
        .unwrap();
    let svc = CouponService::start(&backends, Metrics::new(), Settings::default())
        .await
        .unwrap();
    let loaded = load_promotions(&dir.0, &svc).await.unwrap();
    assert_eq!(loaded.failed.len(), 1);
    assert!(loaded.registered.is_empty());
}
