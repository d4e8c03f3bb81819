//! update-operator's command line: FLUO's flags (also from `UPDATE_OPERATOR_*`
//! environment variables, command line first, empty variables ignored, as
//! FLUO's `flagutil.SetFlagsFromEnv`), `POD_NAMESPACE`, and our additions.
//! Every bad value is an error naming the flag.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use protocol::operator::{
    DEFAULT_ZONE_LABEL, MAX_PER_ZONE_FLAG, MaxRebooting, OperatorConfig, parse_annotation_list,
};
use protocol::schedule::{Schedule, split_windows};
use protocol::selector::LabelSelector;
use protocol::window::{RebootWindow, parse_go_duration};

use crate::{Config, DEFAULT_LEASE_NAME};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags, as parsed (before validation).
#[derive(Debug, Parser)]
#[command(
    name = "update-operator",
    version,
    about = "Decides which Flatcar nodes may reboot (FLUO-compatible update-operator).",
    long_about = "Decides which Flatcar nodes may reboot: at most --max-rebooting-nodes at once, \
                  only inside the reboot window, gated by before/after-reboot hook annotations. \
                  Leader-elected through a coordination.k8s.io Lease in POD_NAMESPACE. \
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
    #[arg(long, env = "UPDATE_OPERATOR_BEFORE_REBOOT_ANNOTATIONS", value_name = "LIST", allow_hyphen_values = true, action = clap::ArgAction::Append)]
    pub before_reboot_annotations: Vec<String>,

    /// Comma-separated node annotations that must be 'true' after a reboot before the node's slot is released (repeatable).
    #[arg(long, env = "UPDATE_OPERATOR_AFTER_REBOOT_ANNOTATIONS", value_name = "LIST", allow_hyphen_values = true, action = clap::ArgAction::Append)]
    pub after_reboot_annotations: Vec<String>,

    /// How many nodes may reboot at once: a count ('2') or a percentage of the nodes ('25%', at least 1).
    #[arg(
        long,
        env = "UPDATE_OPERATOR_MAX_REBOOTING_NODES",
        value_name = "N|P%",
        default_value = "1",
        allow_hyphen_values = true
    )]
    pub max_rebooting_nodes: String,

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
        allow_hyphen_values = true
    )]
    pub max_rebooting_nodes_per_zone: Option<String>,

    /// The node label naming a node's zone; nodes without it form one zone of their own.
    #[arg(long, env = "UPDATE_OPERATOR_ZONE_LABEL", value_name = "LABEL", default_value = DEFAULT_ZONE_LABEL, allow_hyphen_values = true)]
    pub zone_label: String,

    /// Manage only the nodes matching this label selector (kubectl -l syntax, e.g. 'role=worker,zone in (a,b)'); others are ignored.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_NODE_SELECTOR",
        value_name = "SELECTOR",
        allow_hyphen_values = true
    )]
    pub node_selector: Option<String>,

    /// Wait at least this long between two picks and after each release, e.g. '15m' (0 = no wait).
    #[arg(
        long,
        env = "UPDATE_OPERATOR_MIN_REBOOT_INTERVAL",
        value_name = "DURATION",
        default_value = "0s",
        allow_hyphen_values = true
    )]
    pub min_reboot_interval: String,

    /// A granted node not back (rebooted, Ready, after-reboot hooks done) this long after its grant is marked stuck and reported; it keeps its slot.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_REBOOT_TIMEOUT",
        value_name = "DURATION",
        default_value = "30m",
        allow_hyphen_values = true
    )]
    pub reboot_timeout: String,

    /// Pods matching this label selector block the reboot of the node they run on (e.g. 'app=backup').
    #[arg(
        long,
        env = "UPDATE_OPERATOR_BLOCKING_POD_SELECTOR",
        value_name = "SELECTOR",
        allow_hyphen_values = true
    )]
    pub blocking_pod_selector: Option<String>,

    /// Prometheus to ask for active alerts, e.g. 'http://prometheus.monitoring:9090': every pending or firing alert (but those --alert-filter-regexp ignores) blocks new reboots; so does a Prometheus that does not answer.
    #[arg(long, env = "UPDATE_OPERATOR_PROMETHEUS_URL", value_name = "URL")]
    pub prometheus_url: Option<String>,

    /// Alert names to ignore (a regular expression, unanchored, as kured's), e.g. '^(RebootRequired|Watchdog)$'.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_ALERT_FILTER_REGEXP",
        value_name = "REGEXP",
        allow_hyphen_values = true
    )]
    pub alert_filter_regexp: Option<String>,

    /// Invert --alert-filter-regexp: only alerts whose name matches it block.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_ALERT_FILTER_MATCH_ONLY",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
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
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub alert_firing_only: bool,

    /// Alertmanager to ask for silences, e.g. 'http://alertmanager.monitoring:9093': alerts it holds silenced do not block.
    #[arg(long, env = "UPDATE_OPERATOR_ALERTMANAGER_URL", value_name = "URL")]
    pub alertmanager_url: Option<String>,

    /// How often to ask Prometheus (and Alertmanager) while leading.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_ALERT_CHECK_INTERVAL",
        value_name = "DURATION",
        default_value = "30s",
        allow_hyphen_values = true
    )]
    pub alert_check_interval: String,

    /// Give up the leader election Lease once no node has needed an operator (none asks for a reboot, holds a slot or carries a record to clear) for this long; replicas then make no API requests until a node needs one. 0s keeps leading while idle, as FLUO does.
    #[arg(
        long,
        env = "UPDATE_OPERATOR_RELEASE_LEASE_AFTER_IDLE",
        value_name = "DURATION",
        default_value = "30s",
        allow_hyphen_values = true
    )]
    pub release_lease_after_idle: String,

    /// Name of the leader election Lease (FLUO's lock name by default).
    #[arg(long, env = "UPDATE_OPERATOR_LEASE_NAME", value_name = "NAME", default_value = DEFAULT_LEASE_NAME, allow_hyphen_values = true)]
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

    /// POST a JSON notification ({event, node, reason, time}) to this http(s) URL when a node is granted a reboot, starts rebooting, is back, or is stuck.
    #[arg(long, env = "UPDATE_OPERATOR_NOTIFY_URL", value_name = "URL")]
    pub notify_url: Option<String>,

    /// Namespace of the Lease; required (set POD_NAMESPACE from the pod's metadata.namespace).
    #[arg(long = "namespace", env = "POD_NAMESPACE", value_name = "NAMESPACE")]
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

/// A bad flag value; the message starts with the flag's name.
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

fn source_note(m: &ArgMatches, id: &str, env: &str) -> String {
    if m.value_source(id) == Some(ValueSource::EnvVariable) {
        format!(" (from {env})")
    } else {
        String::new()
    }
}

/// A Kubernetes qualified name, as annotation keys must be: an optional DNS
/// subdomain prefix and `/`, then 1-63 alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if name.is_empty() || name.len() > 63 {
        return Err("the name part must be 1-63 characters".into());
    }
    if !name.starts_with(alnum)
        || !name.ends_with(alnum)
        || !name
            .chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
    {
        return Err(
            "the name part must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric"
                .into(),
        );
    }
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|e| format!("the prefix {e}"))?;
    }
    Ok(())
}

fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    for label in s.split('.') {
        check_dns_label(label)?;
    }
    Ok(())
}

fn check_dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err("must be lowercase alphanumerics or '-', starting and ending with an alphanumeric, at most 63 characters per label".into())
    }
}

fn annotations(
    m: &ArgMatches,
    id: &str,
    flag: &str,
    env: &str,
    values: &[String],
) -> Result<Vec<String>, FlagError> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        for a in parse_annotation_list(v) {
            check_qualified_name(&a).map_err(|e| {
                FlagError(format!(
                    "{flag}: invalid annotation name {a:?}{}: {e}",
                    source_note(m, id, env)
                ))
            })?;
            if a.starts_with(protocol::keys::PREFIX) {
                return Err(FlagError(format!(
                    "{flag}: {a:?}{} is a key of the reboot protocol itself, not a hook annotation",
                    source_note(m, id, env)
                )));
            }
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
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
    fn alerts(
        &self,
        m: &ArgMatches,
        interval: chrono::TimeDelta,
    ) -> Result<Option<crate::alerts::AlertsConfig>, FlagError> {
        let nonempty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let Some(url) = nonempty(&self.prometheus_url) else {
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
        let mut cfg = crate::alerts::AlertsConfig::new(&url).map_err(|e| {
            FlagError(format!(
                "--prometheus-url: {e}{}",
                source_note(m, "prometheus_url", "UPDATE_OPERATOR_PROMETHEUS_URL")
            ))
        })?;
        cfg.alertmanager_url = nonempty(&self.alertmanager_url)
            .map(|u| {
                crate::alerts::parse_base_url(&u).map_err(|e| {
                    FlagError(format!(
                        "--alertmanager-url: {e}{}",
                        source_note(m, "alertmanager_url", "UPDATE_OPERATOR_ALERTMANAGER_URL")
                    ))
                })
            })
            .transpose()?;
        cfg.filter = nonempty(&self.alert_filter_regexp)
            .map(|re| {
                regex::Regex::new(&re)
                    .map(crate::alerts::AlertFilter)
                    .map_err(|e| {
                        FlagError(format!(
                            "--alert-filter-regexp: invalid regular expression {re:?}{}: {e}",
                            source_note(
                                m,
                                "alert_filter_regexp",
                                "UPDATE_OPERATOR_ALERT_FILTER_REGEXP"
                            )
                        ))
                    })
            })
            .transpose()?;
        if self.alert_filter_match_only && cfg.filter.is_none() {
            return Err(FlagError(
                "--alert-filter-match-only: needs --alert-filter-regexp (the names of the alerts that block)"
                    .into(),
            ));
        }
        cfg.filter_match_only = self.alert_filter_match_only;
        cfg.firing_only = self.alert_firing_only;
        cfg.interval = interval
            .to_std()
            .map_err(|_| FlagError("--alert-check-interval: must be positive".into()))?;
        Ok(Some(cfg))
    }

    /// Validates every value and builds the [`Settings`]; `m` tells which
    /// values came from the environment.
    pub fn into_settings(self, m: &ArgMatches) -> Result<Settings, FlagError> {
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
        let tz_given = given(m, "reboot_window_timezone");
        if tz_given && windows.is_none() && fluo_window_given {
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
        let max_rebooting_per_zone = self
            .max_rebooting_nodes_per_zone
            .as_deref()
            .map(|v| {
                MaxRebooting::parse_flag(v, MAX_PER_ZONE_FLAG).map_err(|e| {
                    FlagError(format!(
                        "{e}{}",
                        source_note(
                            m,
                            "max_rebooting_nodes_per_zone",
                            "UPDATE_OPERATOR_MAX_REBOOTING_NODES_PER_ZONE"
                        )
                    ))
                })
            })
            .transpose()?;
        let zone_label = self.zone_label.trim().to_string();
        check_qualified_name(&zone_label).map_err(|e| {
            FlagError(format!(
                "--zone-label: invalid label {zone_label:?}{}: {e}",
                source_note(m, "zone_label", "UPDATE_OPERATOR_ZONE_LABEL")
            ))
        })?;
        let selector = |flag: &str, id: &str, env: &str, v: &Option<String>| match v
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            None => Ok(None),
            Some(v) => LabelSelector::parse(v)
                .map(Some)
                .map_err(|e| FlagError(format!("{flag}: {e}{}", source_note(m, id, env)))),
        };
        let node_selector = selector(
            "--node-selector",
            "node_selector",
            "UPDATE_OPERATOR_NODE_SELECTOR",
            &self.node_selector,
        )?;
        let blocking_pod_selector = selector(
            "--blocking-pod-selector",
            "blocking_pod_selector",
            "UPDATE_OPERATOR_BLOCKING_POD_SELECTOR",
            &self.blocking_pod_selector,
        )?;
        let duration = |flag: &str, id: &str, env: &str, v: &str, positive: bool| {
            let d = parse_go_duration(v.trim()).map_err(|e| {
                FlagError(format!(
                    "{flag}: invalid value {v:?}{}: {e}",
                    source_note(m, id, env)
                ))
            })?;
            if d < chrono::TimeDelta::zero() || (positive && d.is_zero()) {
                return Err(FlagError(format!(
                    "{flag}: invalid value {v:?}{}: must be {}",
                    source_note(m, id, env),
                    if positive {
                        "positive"
                    } else {
                        "zero or positive"
                    }
                )));
            }
            Ok(d)
        };
        let min_reboot_interval = duration(
            "--min-reboot-interval",
            "min_reboot_interval",
            "UPDATE_OPERATOR_MIN_REBOOT_INTERVAL",
            &self.min_reboot_interval,
            false,
        )?;
        let reboot_timeout = duration(
            "--reboot-timeout",
            "reboot_timeout",
            "UPDATE_OPERATOR_REBOOT_TIMEOUT",
            &self.reboot_timeout,
            true,
        )?;
        let alert_check_interval = duration(
            "--alert-check-interval",
            "alert_check_interval",
            "UPDATE_OPERATOR_ALERT_CHECK_INTERVAL",
            &self.alert_check_interval,
            true,
        )?;
        let alerts = self.alerts(m, alert_check_interval)?;
        let release_lease_after_idle = duration(
            "--release-lease-after-idle",
            "release_lease_after_idle",
            "UPDATE_OPERATOR_RELEASE_LEASE_AFTER_IDLE",
            &self.release_lease_after_idle,
            false,
        )?;
        let max_rebooting: MaxRebooting = self.max_rebooting_nodes.parse().map_err(|e| {
            FlagError(format!(
                "{e}{}",
                source_note(
                    m,
                    "max_rebooting_nodes",
                    "UPDATE_OPERATOR_MAX_REBOOTING_NODES"
                )
            ))
        })?;
        let before_reboot_annotations = annotations(
            m,
            "before_reboot_annotations",
            "--before-reboot-annotations",
            "UPDATE_OPERATOR_BEFORE_REBOOT_ANNOTATIONS",
            &self.before_reboot_annotations,
        )?;
        let after_reboot_annotations = annotations(
            m,
            "after_reboot_annotations",
            "--after-reboot-annotations",
            "UPDATE_OPERATOR_AFTER_REBOOT_ANNOTATIONS",
            &self.after_reboot_annotations,
        )?;
        let lease_name = self.lease_name.trim().to_string();
        check_dns_subdomain(&lease_name).map_err(|e| {
            FlagError(format!(
                "--lease-name: invalid value {lease_name:?}{}: {e}",
                source_note(m, "lease_name", "UPDATE_OPERATOR_LEASE_NAME")
            ))
        })?;
        let namespace = self
            .namespace
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                FlagError(
                    "POD_NAMESPACE: required: the namespace of the leader election Lease \
                     (set it from the pod's metadata.namespace, or pass --namespace)"
                        .into(),
                )
            })?;
        check_dns_label(&namespace).map_err(|e| {
            FlagError(format!(
                "--namespace: invalid value {namespace:?}{}: {e}",
                source_note(m, "namespace", "POD_NAMESPACE")
            ))
        })?;
        let kubeconfig = match self.kubeconfig {
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
        let mut config = Config::new(
            namespace,
            OperatorConfig {
                max_rebooting,
                window,
                before_reboot_annotations,
                after_reboot_annotations,
                windows,
                max_rebooting_per_zone,
                zone_label,
                node_selector,
                min_reboot_interval,
                reboot_timeout,
            },
        );
        config.lease_name = lease_name;
        config.metrics_address = self.metrics_address.0;
        config.notify = match self.notify_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(crate::notify::NotifyConfig::new(url).map_err(|e| {
                FlagError(format!(
                    "--notify-url: {e}{}",
                    source_note(m, "notify_url", "UPDATE_OPERATOR_NOTIFY_URL")
                ))
            })?),
        };
        config.blocking_pod_selector = blocking_pod_selector;
        config.alerts = alerts;
        config.release_lease_after_idle = release_lease_after_idle
            .to_std()
            .ok()
            .filter(|d| !d.is_zero());
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
    /// clap's own: help, version, unknown flags, missing values, bad choices.
    Clap(clap::Error),
    /// A value that clap accepted but is invalid.
    Flag(FlagError),
}

/// Parses and validates the command line (the program name first) and the
/// environment.
pub fn parse<I, T>(args: I) -> Result<Settings, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let m = Args::command()
        .try_get_matches_from(normalize_args(args))
        .map_err(CliError::Clap)?;
    let a = Args::from_arg_matches(&m).map_err(CliError::Clap)?;
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
    fn qualified_names() {
        for ok in [
            "a",
            "example.com/hook-1",
            "x_y.z",
            "A1",
            "my.domain.io/Ready",
        ] {
            assert!(check_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Example.com/a", "a/b/c", "a b", "/a", "x/"] {
            assert!(check_qualified_name(bad).is_err(), "{bad}");
        }
        assert!(check_qualified_name(&"a".repeat(64)).is_err());
    }
}
