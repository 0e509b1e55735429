#[tokio::main]
async fn main() -> std::process::ExitCode {
    promo_platform::service::main::<coupon_service::config::CouponArgs>(
        "coupon-service",
        "Coupon issuance service",
    )
    .await
}
