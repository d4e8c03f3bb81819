//! `update-operator`: see the `operator` library.

use std::process::ExitCode;

use operator::cli::{self, CliError, LogFormat};
use tracing::error;

fn main() -> ExitCode {
    tune_malloc();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("update-operator: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run())
}

/// glibc's malloc, set before any thread starts (an environment variable a user would have
/// to set is no answer). By default every thread that allocates gets an arena of its own
/// (up to 8 per core) and keeps what is freed in it, and large blocks freed once raise the
/// threshold below which they are taken from (and kept in) the heap. Two arenas, and
/// blocks of 128 KiB and more mapped on their own and returned when freed, as are free
/// 128 KiB at the top of the heap: at 5,000 nodes, idle RSS 44.8 -> 34.2 MiB and peak
/// 68.6 -> 58.4 MiB in one run each (docs/bench.md, "Known limits").
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc's parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

async fn run() -> ExitCode {
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
