#[tokio::main]
async fn main() -> std::process::ExitCode {
    promo_platform::service::main::<point_service::config::PointArgs>(
        "point-service",
        "Point ledger service",
    )
    .await
}
