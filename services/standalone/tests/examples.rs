//! The shipped example Promotions load and register on the embedded default.

use std::path::Path;

use coupon_service::CouponService;
use promo_platform::{
    config::{BackendArgs, Backends},
    metrics::Metrics,
    service::Service,
    testing::TempDir,
};
use promo_standalone::{load_promotions, Hosted};
use timesale_service::TimesaleService;

async fn hosted(data: &TempDir) -> Hosted {
    let backends = Backends::connect(&BackendArgs::embedded(&data.0))
        .await
        .unwrap();
    let metrics = Metrics::new();
    Hosted {
        coupons: CouponService::start(&backends, metrics.clone(), Default::default())
            .await
            .unwrap(),
        timesales: TimesaleService::start(&backends, metrics, Default::default())
            .await
            .unwrap(),
    }
}

#[tokio::test]
async fn examples_register_and_reloading_changes_nothing() {
    let dir = TempDir::new();
    let hosted = hosted(&dir).await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promotions");
    let loaded = load_promotions(&examples, &hosted).await.unwrap();
    assert!(loaded.failed.is_empty(), "{:?}", loaded.failed);
    let mut names = loaded.registered.clone();
    names.sort();
    assert_eq!(
        names,
        [
            "black-friday-10pct",
            "cyber-week-queued",
            "flash-airpods",
            "flash-vip",
            "midnight-sneakers",
            "weekend-coffee",
            "welcome-coupon"
        ]
    );
    let sale = hosted
        .timesales
        .core
        .promotion("flash-airpods")
        .await
        .unwrap();
    assert_eq!(
        (
            sale.spec.stock,
            sale.spec.per_user_limit,
            sale.spec.sale_price
        ),
        (1000, 2, 249_000)
    );

    // A restart re-registers the same specs: figures are not reset.
    let c = hosted
        .coupons
        .core
        .promotion("cyber-week-queued")
        .await
        .unwrap();
    assert_eq!(c.spec.quota, 100_000);
    hosted
        .coupons
        .core
        .counters
        .admit("coupon:cyber-week-queued", "u", 1, 1, None)
        .await
        .unwrap();
    hosted
        .timesales
        .core
        .counters
        .admit("timesale:flash-airpods", "u", 2, 2, None)
        .await
        .unwrap();
    let again = load_promotions(&examples, &hosted).await.unwrap();
    assert_eq!(again.registered.len(), 7);
    let counters = &hosted.coupons.core.counters;
    assert_eq!(
        counters
            .remaining("coupon:cyber-week-queued")
            .await
            .unwrap(),
        Some(99_999)
    );
    assert_eq!(
        counters.remaining("timesale:flash-airpods").await.unwrap(),
        Some(998)
    );
}

#[tokio::test]
async fn a_bad_manifest_is_reported_not_fatal() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("bad.yaml"), "apiVersion: promo.dev/v1alpha1\nkind: Promotion\nmetadata: {name: x}\nspec: {type: Coupon}\n").unwrap();
    let data = TempDir::new();
    let loaded = load_promotions(&dir.0, &hosted(&data).await).await.unwrap();
    assert_eq!(loaded.failed.len(), 1);
    assert!(loaded.registered.is_empty());
}
