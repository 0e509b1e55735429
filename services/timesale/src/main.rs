use clap::Parser;
use timesale_service::{
    config::{Cli, Command},
    run,
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    promo_platform::telemetry::init(cli.log_json);
    let result = match cli.command {
        Command::Serve(a) => run::serve(a).await,
        Command::Consume(a) => run::consume(a).await,
        Command::Migrate(a) => run::migrate(a).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("timesale-service: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
