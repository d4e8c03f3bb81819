//! `update-agent`: see the `agent` library and `update-agent --help`.

use std::path::Path;
use std::process::ExitCode;

use agent::cli::{Args, LogFormat};
use agent::{AgentConfig, HostInfo};
use anyhow::Context;
use tracing::{error, info};

fn main() -> ExitCode {
    let args = match Args::try_parse_go_style(std::env::args_os()) {
        Ok(a) => a,
        // Usage errors (naming the flag), --help and --version.
        Err(e) => e.exit(),
    };
    telemetry::init_logging(args.log_format == LogFormat::Json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(args: Args) -> anyhow::Result<()> {
    let host_info = read_host_info(&args)?;
    info!(
        id = host_info.id.as_deref(),
        version = host_info.version.as_deref(),
        group = host_info.group.as_deref(),
        "host"
    );
    let clock = shell::ServerClock::default();
    let client = shell::kube_client_with_clock(args.kubeconfig.as_deref(), &clock).await?;
    let host = host::DbusHost::connect(args.dbus_address.as_deref())
        .await
        .context("--dbus-address")?;

    let mut cfg = AgentConfig::new(&args.node);
    cfg.clock = clock;
    cfg.grace_period = args.grace_period;
    cfg.pod_recovery_timeout = args.pod_recovery_timeout;
    cfg.force_drain = args.force_drain;
    cfg.drain_timeout_action = args.drain_timeout_action;
    cfg.host_info = host_info;
    cfg.metrics_address = args.metrics_address.0;
    cfg.reboot_sentinel = args.reboot_sentinel;
    cfg.node_options = agent::NodeOptions {
        prefer_no_schedule_taint: args.prefer_no_schedule_taint,
        exclude_from_load_balancers: args.exclude_from_load_balancers,
    };
    cfg.exclude_from_lb_wait = args.exclude_from_load_balancers_wait;
    cfg.volume_detach_timeout = args.volume_detach_timeout;
    cfg.skip_wait_for_delete_timeout = args.skip_wait_for_delete_timeout;
    cfg.drain_pod_selector = args.drain_pod_selector;
    cfg.drain_kube_system = args.drain_kube_system;

    agent::run(client, host, cfg, shell::signal::shutdown_token()).await
}

/// Reads a host file; a missing file is `None` (not fatal), any other error names the flag.
fn read_optional(path: &Path, flag: &str) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!(path = %path.display(), "{flag}: file not found; its labels are left out");
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!(
            "{flag}: cannot read {}: {e}",
            path.display()
        )),
    }
}

fn read_host_info(args: &Args) -> anyhow::Result<HostInfo> {
    let os = read_optional(&args.os_release_path, "--os-release-path")?;
    let mut info = HostInfo::from_files(os.as_deref(), None, None);
    // A later file's GROUP overrides an earlier one's.
    for path in &args.update_conf_paths {
        if let Some(text) = read_optional(path, "--update-conf-paths")?
            && let Some(group) = HostInfo::from_files(None, None, Some(&text)).group
        {
            info.group = Some(group);
        }
    }
    Ok(info)
}
