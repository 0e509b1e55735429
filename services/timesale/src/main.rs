#[tokio::main]
async fn main() -> std::process::ExitCode {
    promo_platform::service::main::<timesale_service::config::TimesaleArgs>(
        "timesale-service",
        "Time-sale (flash sale) ordering service",
    )
    .await
}
