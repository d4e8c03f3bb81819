//! `update-operator`: see the `operator` library.

use std::process::ExitCode;

use operator::cli::{self, CliError, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

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
    let client = match telemetry::kube_client(settings.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            error!("{e:#}");
            eprintln!("update-operator: error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        s.cancel();
    });
    match operator::run(client, settings.config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
    }
}
