use clap::{Parser, Subcommand};
use promo_standalone::{standalone, StandaloneArgs};

/// Allocates with mimalloc: in a V3 admission's profile glibc's malloc/free
/// were the largest items (≈ 10 %); see bench/bounds.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "promo",
    version,
    about = "Promotion platform: coupons, time sales, points"
)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, env = "PROMO_LOG_JSON", global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every service in one process, on one address (embedded backends by default).
    Standalone(Box<StandaloneArgs>),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    promo_platform::telemetry::init(cli.log_json);
    let result = match cli.command {
        Command::Standalone(a) => standalone(*a).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("promo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
