//! `update-operator`: see the `operator` library.

use std::process::ExitCode;

use operator::cli::{self, CliError, LogFormat};
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match cli::parse(std::env::args_os()) {
        Ok(s) => s,
        Err(CliError::Clap(e)) => e.exit(),
        Err(CliError::Flag(e)) => {
            eprintln!("update-operator: error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(settings.log_format == LogFormat::Json);
    let client = match shell::kube_client(settings.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            error!("{e:#}");
            eprintln!("update-operator: error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let shutdown = shell::signal::shutdown_token();
    match operator::run(client, settings.config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
    }
}
