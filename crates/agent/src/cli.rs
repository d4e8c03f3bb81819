//! The command line of `update-agent`: FLUO's flags (`--node`, `--grace-period`,
//! `--force-drain`, each also read from `UPDATE_AGENT_*`) plus ours. Every flag can also be
//! set through `UPDATE_AGENT_<FLAG>` (FLUO sets all its flags that way); a flag on the
//! command line wins over the environment. As with Go's flag package, `-node=x` works as
//! well as `--node=x`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use protocol::agent::DrainTimeoutAction;

/// update-agent: marks its node when update_engine needs a reboot, and cordons, drains and
/// reboots it when the update-operator allows it. A drop-in for FLUO's update-agent.
#[derive(Debug, Clone, Parser)]
#[command(name = "update-agent", version)]
pub struct Args {
    /// Kubernetes node name (usually from the downward API: spec.nodeName).
    #[arg(long, env = "UPDATE_AGENT_NODE", value_parser = non_empty)]
    pub node: String,

    /// Time the whole drain may take before it counts as failed. Seconds (as FLUO: `600`)
    /// or a Go duration (`10m`, `1h30m`, `90s`).
    #[arg(
        long,
        env = "UPDATE_AGENT_GRACE_PERIOD",
        default_value = "600",
        value_name = "DURATION",
        value_parser = shell::flags::seconds_or_duration
    )]
    pub grace_period: Duration,

    /// Also evict pods that no controller would recreate (bare pods).
    #[arg(
        long,
        env = "UPDATE_AGENT_FORCE_DRAIN",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = shell::flags::parse_bool
    )]
    pub force_drain: bool,

    /// After the reboot, how long to wait for the workloads the drain evicted to run Ready
    /// again (anywhere) before the operator may release the node's slot anyway (with a
    /// Warning Event naming them). Seconds or a Go duration (`10m`).
    #[arg(
        long,
        env = "UPDATE_AGENT_POD_RECOVERY_TIMEOUT",
        default_value = "10m",
        value_name = "DURATION",
        value_parser = shell::flags::seconds_or_duration
    )]
    pub pod_recovery_timeout: Duration,

    /// D-Bus address of the host's system bus (default: the system bus,
    /// DBUS_SYSTEM_BUS_ADDRESS or unix:path=/var/run/dbus/system_bus_socket).
    #[arg(long, env = "UPDATE_AGENT_DBUS_ADDRESS", value_name = "ADDRESS", value_parser = dbus_address)]
    pub dbus_address: Option<String>,

    /// What a failed or timed-out drain leads to: `uncordon` (do not reboot; undo our
    /// cordon, release the grant, record why on the node) or `reboot` (FLUO's behaviour).
    #[arg(
        long,
        env = "UPDATE_AGENT_DRAIN_TIMEOUT_ACTION",
        default_value = "uncordon",
        value_name = "uncordon|reboot",
        value_parser = parse_drain_timeout_action
    )]
    pub drain_timeout_action: DrainTimeoutAction,

    /// A file whose existence asks for a reboot, as kured's sentinel: Flatcar's
    /// systemd-sysupdate touches /run/reboot-required. Mount the host's directory into the
    /// pod and give the path inside it. Obeyed once per appearance: a sentinel still there
    /// after the reboot it asked for is reported and not obeyed until it is gone (it should
    /// live on tmpfs). Off by default.
    #[arg(
        long,
        env = "UPDATE_AGENT_REBOOT_SENTINEL",
        value_name = "PATH",
        value_parser = non_empty_path
    )]
    pub reboot_sentinel: Option<PathBuf>,

    /// Taint the node flatcar-linux-update.v1.flatcar-linux.net/reboot-pending:PreferNoSchedule
    /// while it waits for or goes through a reboot, so evicted pods prefer nodes that will
    /// not be drained next. Removed after the reboot; other taints are never touched.
    #[arg(
        long,
        env = "UPDATE_AGENT_PREFER_NO_SCHEDULE_TAINT",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = shell::flags::parse_bool
    )]
    pub prefer_no_schedule_taint: bool,

    /// Label the node node.kubernetes.io/exclude-from-external-load-balancers=true when its
    /// drain starts, and remove the label after the reboot (only if the agent set it).
    #[arg(
        long,
        env = "UPDATE_AGENT_EXCLUDE_FROM_LOAD_BALANCERS",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = shell::flags::parse_bool
    )]
    pub exclude_from_load_balancers: bool,

    /// With --exclude-from-load-balancers: how long to wait after labelling before the
    /// first eviction, so load balancers stop sending new connections. Seconds or a Go
    /// duration; 0 does not wait.
    #[arg(
        long,
        env = "UPDATE_AGENT_EXCLUDE_FROM_LOAD_BALANCERS_WAIT",
        default_value = "0",
        value_name = "DURATION",
        value_parser = shell::flags::seconds_or_duration_or_zero
    )]
    pub exclude_from_load_balancers_wait: Duration,

    /// After the drain, how long to wait for the node's volumes to detach (no attached
    /// VolumeAttachment for the node, status.volumesInUse empty) before rebooting anyway,
    /// with a Warning Event naming them. Seconds or a Go duration; 0 does not wait.
    #[arg(
        long,
        env = "UPDATE_AGENT_VOLUME_DETACH_TIMEOUT",
        default_value = "5m",
        value_name = "DURATION",
        value_parser = shell::flags::seconds_or_duration_or_zero
    )]
    pub volume_detach_timeout: Duration,

    /// As kubectl drain's flag: a pod whose deletionTimestamp is older than this counts as
    /// gone (a pod stuck Terminating no longer fails the drain). Seconds or a Go duration;
    /// 0 (the default) always waits.
    #[arg(
        long,
        env = "UPDATE_AGENT_SKIP_WAIT_FOR_DELETE_TIMEOUT",
        default_value = "0",
        value_name = "DURATION",
        value_parser = shell::flags::seconds_or_duration_or_zero
    )]
    pub skip_wait_for_delete_timeout: Duration,

    /// Drain only the pods matching this label selector (kubectl drain --pod-selector);
    /// the others are left running through the reboot.
    #[arg(
        long,
        env = "UPDATE_AGENT_DRAIN_POD_SELECTOR",
        value_name = "SELECTOR",
        value_parser = pod_selector
    )]
    pub drain_pod_selector: Option<String>,

    /// Also drain pods in kube-system (never drained otherwise, as FLUO), so their
    /// PodDisruptionBudgets (e.g. CoreDNS's) hold through the reboot.
    #[arg(
        long,
        env = "UPDATE_AGENT_DRAIN_KUBE_SYSTEM",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = shell::flags::parse_bool
    )]
    pub drain_kube_system: bool,

    /// The host's os-release (ID and VERSION labels). A missing file is not fatal.
    #[arg(
        long,
        env = "UPDATE_AGENT_OS_RELEASE_PATH",
        default_value = "/etc/os-release",
        value_name = "PATH",
        value_parser = non_empty_path
    )]
    pub os_release_path: PathBuf,

    /// The host's update.conf files, comma-separated; a later file's GROUP overrides an
    /// earlier one's. Missing files are not fatal.
    #[arg(
        long,
        env = "UPDATE_AGENT_UPDATE_CONF_PATHS",
        value_delimiter = ',',
        default_value = "/usr/share/flatcar/update.conf,/etc/flatcar/update.conf",
        value_name = "PATHS",
        value_parser = non_empty_path
    )]
    pub update_conf_paths: Vec<PathBuf>,

    /// A kubeconfig file (default: in-cluster, then KUBECONFIG or ~/.kube/config).
    #[arg(long, env = "UPDATE_AGENT_KUBECONFIG", value_name = "PATH", value_parser = non_empty_path)]
    pub kubeconfig: Option<PathBuf>,

    /// Log format. The level comes from RUST_LOG (default: info).
    #[arg(
        long,
        env = "UPDATE_AGENT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Where to serve /metrics (Prometheus), /healthz and /readyz: IP:PORT or :PORT; '' or
    /// 'off' disables.
    #[arg(
        long,
        env = "UPDATE_AGENT_METRICS_ADDRESS",
        value_name = "ADDR",
        default_value = telemetry::DEFAULT_METRICS_ADDRESS,
        value_parser = |s: &str| s.parse::<telemetry::MetricsAddress>()
    )]
    pub metrics_address: telemetry::MetricsAddress,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Args {
    /// Parses the command line, accepting Go-style single-dash long flags (`-node=x`) and
    /// ignoring empty `UPDATE_AGENT_*` variables, as FLUO does.
    pub fn try_parse_go_style<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        shell::flags::parse_matches::<Self, _, _>(args).map(|(a, _)| a)
    }
}

fn non_empty(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    non_empty(s).map(PathBuf::from)
}

fn dbus_address(s: &str) -> Result<String, String> {
    let s = non_empty(s)?;
    // D-Bus addresses are `transport:key=value,...`, possibly several separated by `;`.
    let ok = s.split(';').filter(|a| !a.is_empty()).all(|a| {
        a.split_once(':').is_some_and(|(transport, params)| {
            !transport.is_empty()
                && (params.is_empty() || params.split(',').all(|kv| kv.contains('=')))
        })
    });
    if ok {
        Ok(s)
    } else {
        Err("expected a D-Bus address such as unix:path=/run/dbus/system_bus_socket".into())
    }
}

fn pod_selector(s: &str) -> Result<String, String> {
    let s = non_empty(s)?;
    protocol::selector::LabelSelector::parse(&s).map_err(|e| e.to_string())?;
    Ok(s)
}

fn parse_drain_timeout_action(s: &str) -> Result<DrainTimeoutAction, String> {
    DrainTimeoutAction::from_str(s).map_err(|_| "expected \"uncordon\" or \"reboot\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let mut v = vec!["update-agent"];
        v.extend_from_slice(args);
        Args::try_parse_go_style(v)
    }

    #[test]
    fn defaults_and_go_style() {
        let a = parse(&["-node=n1"]).unwrap();
        assert_eq!(a.node, "n1");
        assert_eq!(a.grace_period, Duration::from_secs(600));
        assert_eq!(a.pod_recovery_timeout, Duration::from_secs(600));
        assert!(!a.force_drain);
        assert_eq!(a.drain_timeout_action, DrainTimeoutAction::Uncordon);
        assert_eq!(a.os_release_path, PathBuf::from("/etc/os-release"));
        assert_eq!(
            a.update_conf_paths,
            vec![
                PathBuf::from("/usr/share/flatcar/update.conf"),
                PathBuf::from("/etc/flatcar/update.conf")
            ]
        );
        assert_eq!(a.log_format, LogFormat::Text);
        assert!(a.dbus_address.is_none() && a.kubeconfig.is_none());
        let a = parse(&[
            "--node",
            "n2",
            "-grace-period=90s",
            "--force-drain",
            "--drain-timeout-action=reboot",
            "--dbus-address=unix:path=/tmp/bus",
            "--log-format=json",
            "--pod-recovery-timeout=90s",
        ])
        .unwrap();
        assert_eq!(a.pod_recovery_timeout, Duration::from_secs(90));
        assert_eq!(a.grace_period, Duration::from_secs(90));
        assert!(a.force_drain);
        assert_eq!(a.drain_timeout_action, DrainTimeoutAction::Reboot);
        assert_eq!(a.dbus_address.as_deref(), Some("unix:path=/tmp/bus"));
        assert_eq!(a.log_format, LogFormat::Json);
        let a = parse(&["--node=n", "--force-drain=false"]).unwrap();
        assert!(!a.force_drain);
        assert!(a.reboot_sentinel.is_none() && a.drain_pod_selector.is_none());
        assert!(
            !a.prefer_no_schedule_taint && !a.exclude_from_load_balancers && !a.drain_kube_system
        );
        assert_eq!(a.volume_detach_timeout, Duration::from_secs(300));
        assert!(
            a.skip_wait_for_delete_timeout.is_zero()
                && a.exclude_from_load_balancers_wait.is_zero()
        );
        let a = parse(&[
            "--node=n",
            "--reboot-sentinel=/host/run/reboot-required",
            "--prefer-no-schedule-taint",
            "-exclude-from-load-balancers=true",
            "--exclude-from-load-balancers-wait=30",
            "--volume-detach-timeout=0",
            "--skip-wait-for-delete-timeout=1m",
            "--drain-pod-selector=app in (web,api),!critical",
            "--drain-kube-system",
        ])
        .unwrap();
        assert_eq!(
            a.reboot_sentinel,
            Some(PathBuf::from("/host/run/reboot-required"))
        );
        assert!(a.prefer_no_schedule_taint && a.exclude_from_load_balancers && a.drain_kube_system);
        assert_eq!(a.exclude_from_load_balancers_wait, Duration::from_secs(30));
        assert!(a.volume_detach_timeout.is_zero());
        assert_eq!(a.skip_wait_for_delete_timeout, Duration::from_secs(60));
        assert_eq!(
            a.drain_pod_selector.as_deref(),
            Some("app in (web,api),!critical")
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (&["--node="][..], "--node"),
            (&["--node=n", "--grace-period=soon"], "--grace-period"),
            (&["--node=n", "--grace-period=0"], "--grace-period"),
            (
                &["--node=n", "--pod-recovery-timeout=later"],
                "--pod-recovery-timeout",
            ),
            (
                &["--node=n", "--pod-recovery-timeout=-1m"],
                "--pod-recovery-timeout",
            ),
            (&["--node=n", "--force-drain=maybe"], "--force-drain"),
            (
                &["--node=n", "--drain-timeout-action=later"],
                "--drain-timeout-action",
            ),
            (&["--node=n", "--dbus-address=nonsense"], "--dbus-address"),
            (&["--node=n", "--log-format=xml"], "--log-format"),
            (&["--node=n", "--os-release-path="], "--os-release-path"),
            (&["--node=n", "--reboot-sentinel="], "--reboot-sentinel"),
            (
                &["--node=n", "--prefer-no-schedule-taint=yes"],
                "--prefer-no-schedule-taint",
            ),
            (
                &["--node=n", "--exclude-from-load-balancers-wait=-1s"],
                "--exclude-from-load-balancers-wait",
            ),
            (
                &["--node=n", "--volume-detach-timeout=soon"],
                "--volume-detach-timeout",
            ),
            (
                &["--node=n", "--skip-wait-for-delete-timeout=1x"],
                "--skip-wait-for-delete-timeout",
            ),
            (
                &["--node=n", "--drain-pod-selector=app in (web"],
                "--drain-pod-selector",
            ),
            (
                &["--node=n", "--drain-kube-system=2"],
                "--drain-kube-system",
            ),
            (&[][..], "--node"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }
}
