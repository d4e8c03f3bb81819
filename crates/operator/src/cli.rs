//! update-operator's command line: FLUO's flags (also from `UPDATE_OPERATOR_*`
//! environment variables, command line first, empty variables ignored, as
//! FLUO's `flagutil.SetFlagsFromEnv`), `POD_NAMESPACE`, and our additions.
//! Every bad value is an error naming the flag.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use protocol::operator::{MaxRebooting, OperatorConfig, parse_annotation_list};
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

const LONG_FLAGS: &[&str] = &[
    "kubeconfig",
    "reboot-window-start",
    "reboot-window-length",
    "before-reboot-annotations",
    "after-reboot-annotations",
    "max-rebooting-nodes",
    "lease-name",
    "log-format",
    "namespace",
    "version",
    "help",
];

/// Go's flag package (FLUO) takes `-flag`; clap wants `--flag`. Rewrites
/// single-dash spellings of our long flags, leaving everything else alone.
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut after_double_dash = false;
    for (i, a) in args.into_iter().enumerate() {
        let a: OsString = a.into();
        if i > 0 && !after_double_dash {
            if a == "--" {
                after_double_dash = true;
            } else if let Some(s) = a.to_str()
                && let Some(rest) = s.strip_prefix('-')
                && !rest.starts_with('-')
                && LONG_FLAGS.contains(&rest.split('=').next().unwrap_or(""))
            {
                out.push(OsString::from(format!("-{s}")));
                continue;
            }
        }
        out.push(a);
    }
    out
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

impl Args {
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
            },
        );
        config.lease_name = lease_name;
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
