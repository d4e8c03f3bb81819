//! update-operator's command line: FLUO's flags (also from `UPDATE_OPERATOR_*`
//! environment variables, command line first, empty variables ignored, as
//! FLUO's `flagutil.SetFlagsFromEnv`), `POD_NAMESPACE`, and our additions.
//! Each value is parsed into its type as the agent's are (shell::flags: Go-style
//! spellings, Go durations and booleans); every bad value is an error naming the
//! flag, and the environment variable when it came from one.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, Parser, ValueEnum};
use protocol::names::{check_dns_label, check_dns_subdomain, check_qualified_name};
use protocol::operator::{DEFAULT_ZONE_LABEL, MaxRebooting, OperatorConfig, parse_annotation_list};
use protocol::schedule::{Schedule, split_windows};
use protocol::selector::LabelSelector;
use protocol::window::RebootWindow;

use crate::{Config, DEFAULT_LEASE_NAME};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--stuck-node-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StuckNodeAction {
    /// The stuck node keeps its slot until it is back and released (a deleted Node's slot: until a Node of that name is Ready again, or --reboot-timeout after the deletion).
    Hold,
    /// Once the stuck node is down or rebooted, its slot no longer counts: the next node may go while it stays down.
    Release,
}

impl From<StuckNodeAction> for protocol::operator::StuckNodeAction {
    fn from(a: StuckNodeAction) -> Self {
        match a {
            StuckNodeAction::Hold => Self::Hold,
            StuckNodeAction::Release => Self::Release,
        }
    }
}

/// The flags, each parsed into its type; [`Args::into_settings`] checks how they combine.
#[derive(Debug, Parser)]
#[command(
    name = "update-operator",
    version,
    about = "Decides which Flatcar nodes may reboot (FLUO-compatible update-operator).",
    long_about = "Decides which Flatcar nodes may reboot: at most --max-rebooting-nodes at once, \
                  only inside the reboot window, gated by before/after-reboot hook annotations. \
                  Leader-elected through FLUO's lock (a Lease and a ConfigMap) in POD_NAMESPACE. \
                  Every flag can also be set from the environment variable shown."
)]
pub struct Args {
    /// Path to a kubeconfig file (else KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long, env = "UPDATE_OPERATOR_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Day of week (optional) and time of day, UTC, at which the reboot window starts, e.g. 'Mon 14:00' or '11:00'.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_REBOOT_WINDOW_START",
        value_name = "START",
        allow_hyphen_values = true
    )]
    pub reboot_window_start: Option<String>,

    /// Length of the reboot window, e.g. '1h30m' (< 24h daily, < 168h weekly).
    #[arg(
        long,
        env = "UPDATE_OPERATOR_REBOOT_WINDOW_LENGTH",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub reboot_window_length: Option<String>,

    /// Comma-separated node annotations that must be 'true' before a reboot is allowed (repeatable).
    #[arg(long, env = "UPDATE_OPERATOR_BEFORE_REBOOT_ANNOTATIONS", value_name = "LIST", allow_hyphen_values = true, action = clap::ArgAction::Append, value_parser = hook_annotations)]
    pub before_reboot_annotations: Vec<HookAnnotations>,

    /// Comma-separated node annotations that must be 'true' after a reboot before the node's slot is released (repeatable).
    #[arg(long, env = "UPDATE_OPERATOR_AFTER_REBOOT_ANNOTATIONS", value_name = "LIST", allow_hyphen_values = true, action = clap::ArgAction::Append, value_parser = hook_annotations)]
    pub after_reboot_annotations: Vec<HookAnnotations>,

    /// How many nodes may reboot at once: a count ('2') or a percentage of the nodes ('25%', at least 1).
    #[arg(
        long,
        env = "UPDATE_OPERATOR_MAX_REBOOTING_NODES",
        value_name = "N|P%",
        default_value = "1",
        allow_hyphen_values = true,
        value_parser = max_rebooting
    )]
    pub max_rebooting_nodes: MaxRebooting,

    /// A reboot window in --reboot-window-timezone, repeatable: '[DAYS ]HH:MM-HH:MM', e.g. 'Mon-Fri 02:00-05:00', 'Sat,Sun 00:00-08:00', '22:00-02:00' (crosses midnight); several may be separated by ';'. Not together with --reboot-window-start/--reboot-window-length.
    #[arg(long, env = "UPDATE_OPERATOR_REBOOT_WINDOW", value_name = "WINDOW", allow_hyphen_values = true, action = clap::ArgAction::Append)]
    pub reboot_window: Vec<String>,

    /// IANA time zone of --reboot-window (wall-clock time, DST-aware), e.g. 'Europe/Berlin'.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_REBOOT_WINDOW_TIMEZONE",
        value_name = "TZ",
        default_value = "UTC",
        allow_hyphen_values = true
    )]
    pub reboot_window_timezone: String,

    /// How many nodes of one zone may reboot at once, on top of --max-rebooting-nodes: a count ('1') or a percentage of the zone's nodes ('25%', at least 1). Unlimited if not given.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_MAX_REBOOTING_NODES_PER_ZONE",
        value_name = "N|P%",
        allow_hyphen_values = true,
        value_parser = max_rebooting
    )]
    pub max_rebooting_nodes_per_zone: Option<MaxRebooting>,

    /// The node label naming a node's zone; nodes without it form one zone of their own.
    #[arg(long, env = "UPDATE_OPERATOR_ZONE_LABEL", value_name = "LABEL", default_value = DEFAULT_ZONE_LABEL, allow_hyphen_values = true, value_parser = qualified_name)]
    pub zone_label: String,

    /// Manage only the nodes matching this label selector (kubectl -l syntax, e.g. 'role=worker,zone in (a,b)'); others are ignored.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_NODE_SELECTOR",
        value_name = "SELECTOR",
        allow_hyphen_values = true,
        value_parser = selector
    )]
    pub node_selector: Option<LabelSelector>,

    /// Wait at least this long between two picks and after each release, e.g. '15m' (0 = no wait).
    #[arg(
        long,
        env = "UPDATE_OPERATOR_MIN_REBOOT_INTERVAL",
        value_name = "DURATION",
        default_value = "0s",
        allow_hyphen_values = true,
        value_parser = shell::flags::duration
    )]
    pub min_reboot_interval: Duration,

    /// A granted node not back (rebooted, Ready, after-reboot hooks done) this long after its grant is marked stuck and reported; it keeps its slot unless --stuck-node-action=release.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_REBOOT_TIMEOUT",
        value_name = "DURATION",
        default_value = "30m",
        allow_hyphen_values = true,
        value_parser = shell::flags::positive_duration
    )]
    pub reboot_timeout: Duration,

    /// What becomes of the slot of a node stuck past --reboot-timeout. 'hold' (FLUO's behaviour): it keeps the slot until it is back and released, so with --max-rebooting-nodes=1 the rollout waits for a person. 'release': once the stuck node is down (in progress and NotReady) or rebooted, its slot no longer counts against the maximums and the next node may go; trade-off: one more node may be down while the stuck one stays down. A stuck node granted but not started, or draining, keeps its slot either way; the stuck node keeps every mark and, if it comes back, finishes without a slot.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_STUCK_NODE_ACTION",
        value_enum,
        value_name = "ACTION",
        default_value = "hold"
    )]
    pub stuck_node_action: StuckNodeAction,

    /// Pods matching this label selector block the reboot of the node they run on (e.g. 'app=backup').
    #[arg(
        long,
        env = "UPDATE_OPERATOR_BLOCKING_POD_SELECTOR",
        value_name = "SELECTOR",
        allow_hyphen_values = true,
        value_parser = selector
    )]
    pub blocking_pod_selector: Option<LabelSelector>,

    /// Prometheus to ask for active alerts, e.g. 'http://prometheus.monitoring:9090': every pending or firing alert (but those --alert-filter-regexp ignores) blocks new reboots; so does a Prometheus that does not answer.
    #[arg(long, env = "UPDATE_OPERATOR_PROMETHEUS_URL", value_name = "URL", value_parser = or_unset(crate::alerts::AlertsConfig::new))]
    pub prometheus_url: Option<OrUnset<crate::alerts::AlertsConfig>>,

    /// Alert names to ignore (a regular expression, unanchored, as kured's), e.g. '^(RebootRequired|Watchdog)$'.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_ALERT_FILTER_REGEXP",
        value_name = "REGEXP",
        allow_hyphen_values = true,
        value_parser = or_unset(alert_filter)
    )]
    pub alert_filter_regexp: Option<OrUnset<crate::alerts::AlertFilter>>,

    /// Invert --alert-filter-regexp: only alerts whose name matches it block.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_ALERT_FILTER_MATCH_ONLY",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = shell::flags::parse_bool
    )]
    pub alert_filter_match_only: bool,

    /// Only firing alerts block; pending ones (not yet past their 'for:') do not.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_ALERT_FIRING_ONLY",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = shell::flags::parse_bool
    )]
    pub alert_firing_only: bool,

    /// Alertmanager to ask for silences, e.g. 'http://alertmanager.monitoring:9093': alerts it holds silenced do not block.
    #[arg(long, env = "UPDATE_OPERATOR_ALERTMANAGER_URL", value_name = "URL", value_parser = or_unset(crate::alerts::parse_base_url))]
    pub alertmanager_url: Option<OrUnset<http::Uri>>,

    /// How often to ask Prometheus (and Alertmanager) while leading.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_ALERT_CHECK_INTERVAL",
        value_name = "DURATION",
        default_value = "30s",
        allow_hyphen_values = true,
        value_parser = shell::flags::positive_duration
    )]
    pub alert_check_interval: Duration,

    /// Give up the leader election Lease once no node has needed an operator (none asks for a reboot, holds a slot or carries a record to clear) for this long; replicas then make no API requests until a node needs one. 0s keeps leading while idle, as FLUO does.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_RELEASE_LEASE_AFTER_IDLE",
        value_name = "DURATION",
        default_value = "30s",
        allow_hyphen_values = true,
        value_parser = shell::flags::duration
    )]
    pub release_lease_after_idle: Duration,

    /// Name of the leader election lock, a Lease and a ConfigMap (FLUO's lock name by default).
    #[arg(long, env = "UPDATE_OPERATOR_LEASE_NAME", value_name = "NAME", default_value = DEFAULT_LEASE_NAME, allow_hyphen_values = true, value_parser = dns_subdomain)]
    pub lease_name: String,

    /// Log format.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Where to serve /metrics (Prometheus), /healthz and /readyz: IP:PORT or :PORT; '' or 'off' disables.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_METRICS_ADDRESS",
        value_name = "ADDR",
        default_value = telemetry::DEFAULT_METRICS_ADDRESS,
        value_parser = |s: &str| s.parse::<telemetry::MetricsAddress>()
    )]
    pub metrics_address: telemetry::MetricsAddress,

    /// POST a notification to this http(s) URL when a node is granted a reboot, starts rebooting, is back, is stuck, has its stuck slot released, or loses its grant (a failed drain, a pause, a block, the window closing); see --notify-format.
    #[arg(long, env = "UPDATE_OPERATOR_NOTIFY_URL", value_name = "URL", value_parser = or_unset(crate::notify::NotifyConfig::new))]
    pub notify_url: Option<OrUnset<crate::notify::NotifyConfig>>,

    /// The body of --notify-url's notifications.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_NOTIFY_FORMAT",
        value_enum,
        value_name = "FORMAT",
        default_value = "json"
    )]
    pub notify_format: crate::notify::NotifyFormat,

    /// The text of --notify-format=slack or teams notifications, with {{event}}, {{node}}, {{reason}} and {{time}} replaced, e.g. 'Node {{node}}: {{reason}}' (as kured's --message-template-*).
    #[arg(
        long,
        env = "UPDATE_OPERATOR_NOTIFY_MESSAGE_TEMPLATE",
        value_name = "TEMPLATE",
        default_value = crate::notify::DEFAULT_MESSAGE_TEMPLATE,
        allow_hyphen_values = true,
        value_parser = crate::notify::MessageTemplate::parse
    )]
    pub notify_message_template: crate::notify::MessageTemplate,

    /// Namespace of the Lease; required (set POD_NAMESPACE from the pod's metadata.namespace).
    #[arg(long = "namespace", env = "POD_NAMESPACE", value_name = "NAMESPACE", value_parser = dns_label)]
    pub namespace: Option<String>,
}

/// What `main` needs: the operator config plus process-level settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--kubeconfig` (or `KUBECONFIG`, as FLUO).
    pub kubeconfig: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// The operator's config.
    pub config: Config,
}

/// A bad combination of flags; the message starts with a flag's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FlagError(pub String);

/// Go's flag package (FLUO) takes `-flag`; clap wants `--flag`. Rewrites
/// single-dash spellings of our long flags, leaving everything else alone.
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    shell::flags::go_style(&Args::command(), args)
}

/// A value whose empty string means "not set", as an empty Go string flag does (a Helm
/// value rendered as `--notify-url=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrUnset<T>(pub Option<T>);

fn or_unset<T, E: std::fmt::Display>(
    parse: impl Fn(&str) -> Result<T, E> + Clone + Send + Sync + 'static,
) -> impl Fn(&str) -> Result<OrUnset<T>, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim() {
        "" => Ok(OrUnset(None)),
        t => parse(t)
            .map(|v| OrUnset(Some(v)))
            .map_err(|e| e.to_string()),
    }
}

fn set<T>(v: Option<OrUnset<T>>) -> Option<T> {
    v.and_then(|v| v.0)
}

/// One `--before/after-reboot-annotations` value: a comma-separated list of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookAnnotations(pub Vec<String>);

fn hook_annotations(s: &str) -> Result<HookAnnotations, String> {
    let keys = parse_annotation_list(s);
    for a in &keys {
        check_qualified_name(a).map_err(|e| format!("invalid annotation name {a:?}: {e}"))?;
        if a.starts_with(protocol::keys::PREFIX) {
            return Err(format!(
                "{a:?} is a key of the reboot protocol itself, not a hook annotation"
            ));
        }
    }
    Ok(HookAnnotations(keys))
}

/// Every key once, in the order first given.
fn merged(lists: Vec<HookAnnotations>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in lists.into_iter().flat_map(|l| l.0) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn max_rebooting(s: &str) -> Result<MaxRebooting, String> {
    // The reason alone: clap names the flag and the value.
    MaxRebooting::parse_flag(s, "").map_err(|e| e.reason.to_string())
}

fn qualified_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    check_qualified_name(s)?;
    Ok(s.to_string())
}

fn dns_subdomain(s: &str) -> Result<String, String> {
    let s = s.trim();
    check_dns_subdomain(s)?;
    Ok(s.to_string())
}

fn dns_label(s: &str) -> Result<String, String> {
    let s = s.trim();
    check_dns_label(s)?;
    Ok(s.to_string())
}

/// A label selector; empty selects everything, as no selector does.
fn selector(s: &str) -> Result<LabelSelector, String> {
    LabelSelector::parse(s.trim()).map_err(|e| e.to_string())
}

fn alert_filter(s: &str) -> Result<crate::alerts::AlertFilter, String> {
    regex::Regex::new(s)
        .map(crate::alerts::AlertFilter)
        .map_err(|e| format!("invalid regular expression: {e}"))
}

fn source_note(m: &ArgMatches, id: &str, env: &str) -> String {
    if m.value_source(id) == Some(ValueSource::EnvVariable) {
        format!(" (from {env})")
    } else {
        String::new()
    }
}

/// Whether the flag `id` was given (command line or environment), not defaulted.
fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

impl Args {
    /// `--prometheus-url` and its companions, which mean nothing without it.
    fn alerts(&mut self, m: &ArgMatches) -> Result<Option<crate::alerts::AlertsConfig>, FlagError> {
        let Some(mut cfg) = set(self.prometheus_url.take()) else {
            let companions = [
                ("alert_filter_regexp", "--alert-filter-regexp"),
                ("alert_filter_match_only", "--alert-filter-match-only"),
                ("alert_firing_only", "--alert-firing-only"),
                ("alertmanager_url", "--alertmanager-url"),
                ("alert_check_interval", "--alert-check-interval"),
            ];
            if let Some((_, flag)) = companions.iter().find(|(id, _)| given(m, id)) {
                return Err(FlagError(format!(
                    "{flag}: applies only with --prometheus-url; give the Prometheus to ask for alerts, or drop {flag}"
                )));
            }
            return Ok(None);
        };
        cfg.alertmanager_url = set(self.alertmanager_url.take());
        cfg.filter = set(self.alert_filter_regexp.take());
        if self.alert_filter_match_only && cfg.filter.is_none() {
            return Err(FlagError(
                "--alert-filter-match-only: needs --alert-filter-regexp (the names of the alerts that block)"
                    .into(),
            ));
        }
        cfg.filter_match_only = self.alert_filter_match_only;
        cfg.firing_only = self.alert_firing_only;
        cfg.interval = self.alert_check_interval;
        Ok(Some(cfg))
    }

    /// `--notify-url` with its format and message template, which mean nothing without it.
    fn notify(&mut self, m: &ArgMatches) -> Result<Option<crate::notify::NotifyConfig>, FlagError> {
        let companions = [
            ("notify_format", "--notify-format"),
            ("notify_message_template", "--notify-message-template"),
        ];
        let Some(mut cfg) = set(self.notify_url.take()) else {
            if let Some((_, flag)) = companions.iter().find(|(id, _)| given(m, id)) {
                return Err(FlagError(format!(
                    "{flag}: applies only with --notify-url; give the webhook to notify, or drop {flag}"
                )));
            }
            return Ok(None);
        };
        if self.notify_format == crate::notify::NotifyFormat::Json
            && given(m, "notify_message_template")
        {
            return Err(FlagError(format!(
                "--notify-message-template: applies to --notify-format=slack or teams; the json body \
                 carries event, node, reason and time as they are{}",
                source_note(
                    m,
                    "notify_message_template",
                    "UPDATE_OPERATOR_NOTIFY_MESSAGE_TEMPLATE"
                )
            )));
        }
        cfg.format = self.notify_format;
        cfg.template = self.notify_message_template.clone();
        Ok(Some(cfg))
    }

    /// Checks how the values combine and builds the [`Settings`]; `m` tells which values
    /// came from the environment.
    pub fn into_settings(mut self, m: &ArgMatches) -> Result<Settings, FlagError> {
        let window = RebootWindow::from_flags(
            self.reboot_window_start.as_deref(),
            self.reboot_window_length.as_deref(),
        )
        .map_err(|e| {
            let (id, env) = match e.flag() {
                protocol::window::START_FLAG => {
                    ("reboot_window_start", "UPDATE_OPERATOR_REBOOT_WINDOW_START")
                }
                _ => (
                    "reboot_window_length",
                    "UPDATE_OPERATOR_REBOOT_WINDOW_LENGTH",
                ),
            };
            FlagError(format!("{e}{}", source_note(m, id, env)))
        })?;
        let windows = Schedule::from_flags(&self.reboot_window, &self.reboot_window_timezone)
            .map_err(|e| {
                let (id, env) = if e.flag() == protocol::schedule::WINDOW_FLAG {
                    ("reboot_window", "UPDATE_OPERATOR_REBOOT_WINDOW")
                } else {
                    (
                        "reboot_window_timezone",
                        "UPDATE_OPERATOR_REBOOT_WINDOW_TIMEZONE",
                    )
                };
                FlagError(format!("{e}{}", source_note(m, id, env)))
            })?;
        let fluo_window_given = [&self.reboot_window_start, &self.reboot_window_length]
            .iter()
            .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()));
        if windows.is_some() && fluo_window_given {
            return Err(FlagError(
                "--reboot-window: cannot be combined with --reboot-window-start/--reboot-window-length \
                 (FLUO's single UTC window); give one kind or the other"
                    .into(),
            ));
        }
        if given(m, "reboot_window_timezone") && windows.is_none() && fluo_window_given {
            return Err(FlagError(format!(
                "--reboot-window-timezone: applies to --reboot-window only; \
                 --reboot-window-start/--reboot-window-length are in UTC as in FLUO{}",
                source_note(
                    m,
                    "reboot_window_timezone",
                    "UPDATE_OPERATOR_REBOOT_WINDOW_TIMEZONE"
                )
            )));
        }
        if !self.reboot_window.is_empty() && split_windows(&self.reboot_window).is_empty() {
            return Err(FlagError(format!(
                "--reboot-window: empty value{}",
                source_note(m, "reboot_window", "UPDATE_OPERATOR_REBOOT_WINDOW")
            )));
        }
        let alerts = self.alerts(m)?;
        let notify = self.notify(m)?;
        let namespace = self.namespace.take().ok_or_else(|| {
            FlagError(
                "POD_NAMESPACE: required: the namespace of the leader election Lease \
                 (set it from the pod's metadata.namespace, or pass --namespace)"
                    .into(),
            )
        })?;
        let kubeconfig = match self.kubeconfig.take() {
            Some(p) if !p.as_os_str().is_empty() => Some(p),
            // FLUO respects KUBECONFIG without the prefix as well.
            _ => std::env::var_os("KUBECONFIG")
                .filter(|k| !k.is_empty())
                .map(PathBuf::from),
        };
        if let Some(p) = &kubeconfig
            && !p.is_file()
        {
            return Err(FlagError(format!(
                "--kubeconfig: {} is not a readable file{}",
                p.display(),
                source_note(m, "kubeconfig", "UPDATE_OPERATOR_KUBECONFIG")
            )));
        }
        // Go durations fit a TimeDelta (both are about 292 years at most).
        let delta = |d: Duration| chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
        let mut config = Config::new(
            namespace,
            OperatorConfig {
                max_rebooting: self.max_rebooting_nodes,
                window,
                before_reboot_annotations: merged(self.before_reboot_annotations),
                after_reboot_annotations: merged(self.after_reboot_annotations),
                windows,
                max_rebooting_per_zone: self.max_rebooting_nodes_per_zone,
                zone_label: self.zone_label,
                node_selector: self.node_selector.filter(|s| !s.requirements().is_empty()),
                min_reboot_interval: delta(self.min_reboot_interval),
                reboot_timeout: delta(self.reboot_timeout),
                stuck_node_action: self.stuck_node_action.into(),
            },
        );
        config.lease_name = self.lease_name;
        config.metrics_address = self.metrics_address.0;
        config.notify = notify;
        config.blocking_pod_selector = self
            .blocking_pod_selector
            .filter(|s| !s.requirements().is_empty());
        config.alerts = alerts;
        config.release_lease_after_idle =
            Some(self.release_lease_after_idle).filter(|d| !d.is_zero());
        Ok(Settings {
            kubeconfig,
            log_format: self.log_format,
            config,
        })
    }
}

/// Why the command line was not accepted.
#[derive(Debug)]
pub enum CliError {
    /// clap's own: help, version, unknown flags, missing or bad values.
    Clap(clap::Error),
    /// Values that are each valid but do not go together.
    Flag(FlagError),
}

/// Parses and validates the command line (the program name first) and the
/// environment.
pub fn parse<I, T>(args: I) -> Result<Settings, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let (a, m) = shell::flags::parse_matches::<Args, _, _>(args).map_err(CliError::Clap)?;
    a.into_settings(&m).map_err(CliError::Flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn single_dash_flags_are_accepted() {
        let n = normalize_args([
            "x",
            "-reboot-window-start=Mon 14:00",
            "-kubeconfig",
            "/k",
            "-v",
            "--",
            "-namespace",
        ]);
        assert_eq!(
            n,
            [
                "x",
                "--reboot-window-start=Mon 14:00",
                "--kubeconfig",
                "/k",
                "-v",
                "--",
                "-namespace"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn stuck_node_action_is_hold_unless_release_is_asked_for() {
        use protocol::operator::StuckNodeAction as A;
        let action = |extra: &[&str]| {
            let args = [&["update-operator", "--namespace", "ns"], extra].concat();
            parse(args).map(|s| s.config.operator.stuck_node_action)
        };
        assert!(matches!(action(&[]), Ok(A::Hold)));
        assert!(matches!(
            action(&["--stuck-node-action", "release"]),
            Ok(A::Release)
        ));
        assert!(matches!(action(&["-stuck-node-action=hold"]), Ok(A::Hold)));
        let Err(CliError::Clap(e)) = action(&["--stuck-node-action", "drop"]) else {
            panic!("a bad value is an error");
        };
        assert!(e.to_string().contains("--stuck-node-action"), "{e}");
    }

    #[test]
    fn notify_format_and_template() {
        use crate::notify::NotifyFormat;
        let notify = |extra: &[&str]| {
            let args = [&["update-operator", "--namespace", "ns"], extra].concat();
            parse(args).map(|s| s.config.notify)
        };
        let url = ["--notify-url", "http://127.0.0.1:9/hook"];
        let Ok(Some(n)) = notify(&url) else {
            panic!("json by default")
        };
        assert_eq!(n.format, NotifyFormat::Json);
        let Ok(Some(n)) = notify(
            &[
                &url[..],
                &["--notify-format", "slack"],
                &["--notify-message-template", "{{node}} {{event}}"],
            ]
            .concat(),
        ) else {
            panic!("slack with a template")
        };
        assert_eq!(n.format, NotifyFormat::Slack);
        assert_eq!(
            n.template,
            crate::notify::MessageTemplate::parse("{{node}} {{event}}").unwrap()
        );
        let flag_error = |args: &[&str], flag: &str| match notify(args) {
            Err(CliError::Flag(e)) => assert!(e.0.starts_with(flag), "{}", e.0),
            Err(CliError::Clap(e)) => assert!(e.to_string().contains(flag), "{e}"),
            Ok(_) => panic!("{args:?} accepted"),
        };
        flag_error(&["--notify-format", "teams"], "--notify-format");
        flag_error(
            &["--notify-message-template", "{{node}}"],
            "--notify-message-template",
        );
        flag_error(
            &[&url[..], &["--notify-message-template", "{{node}}"]].concat(),
            "--notify-message-template",
        );
        flag_error(
            &[&url[..], &["--notify-format", "discord"]].concat(),
            "--notify-format",
        );
        flag_error(
            &[
                &url[..],
                &[
                    "--notify-format=slack",
                    "--notify-message-template={{host}}",
                ],
            ]
            .concat(),
            "--notify-message-template",
        );
    }

    #[test]
    fn hook_annotation_lists() {
        let l = |s| hook_annotations(s).map(|h| h.0);
        assert_eq!(
            l("a.io/one, two,,"),
            Ok(vec!["a.io/one".into(), "two".into()])
        );
        assert!(l("ok,bad key").unwrap_err().contains("\"bad key\""));
        assert!(
            l("flatcar-linux-update.v1.flatcar-linux.net/reboot-ok")
                .unwrap_err()
                .contains("protocol")
        );
        let merged = merged(vec![
            HookAnnotations(vec!["a".into(), "b".into()]),
            HookAnnotations(vec!["b".into(), "c".into()]),
        ]);
        assert_eq!(merged, ["a", "b", "c"]);
    }
}
