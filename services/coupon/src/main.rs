/// Allocates with mimalloc: in a V3 admission's profile glibc's malloc/free
/// were the largest items (≈ 10 %); see bench/bounds.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    promo_platform::service::main::<coupon_service::config::CouponArgs>(
        "coupon-service",
        "Coupon issuance service",
    )
    .await
}
