//! `fluoctl status`: the reboot state of a live cluster, and what `pause` and
//! `plan` share with it: the connection to the cluster and reading the
//! operator's settings, its Lease and the managed nodes.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::ArgMatches;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;
use protocol::keys;
use protocol::node::{NodeState, NodeView, format_time};
use protocol::operator::{OperatorConfig, parse_pause};
use protocol::phase::Phase;
use serde::Serialize;

/// The operator's namespace when neither `--namespace` nor `POD_NAMESPACE` is given.
pub const DEFAULT_NAMESPACE: &str = "reboot-coordinator";

/// How to reach the cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct Connect {
    /// The Kubernetes API server's URL (e.g. http://127.0.0.1:8080), instead of the kubeconfig.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

/// `fluoctl status`'s flags: its own, then the operator's (to know the limit and the window).
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Output format: a table, or the same as JSON.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(
        flatten,
        next_help_heading = "update-operator's flags (as the operator runs with them)"
    )]
    pub operator: operator::cli::Args,
}

/// `-o`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON.
    Json,
}

/// The operator's flags that do not apply to a command reading a cluster are hidden.
pub fn adjust_command(c: clap::Command) -> clap::Command {
    c.mut_arg("log_format", |a| a.hide(true))
        .mut_arg("metrics_address", |a| a.hide(true))
        .mut_arg("notify_url", |a| a.hide(true))
}

/// A client for `--server`, else `kubeconfig`, else KUBECONFIG / ~/.kube/config
/// / in-cluster; and the server's URL, for messages.
pub async fn client(
    connect: &Connect,
    kubeconfig: Option<&Path>,
) -> anyhow::Result<(kube::Client, String)> {
    let mut config = match (&connect.server, kubeconfig) {
        (Some(url), _) => kube::Config::new(
            url.parse()
                .with_context(|| format!("--server: invalid URL {url:?}"))?,
        ),
        (None, Some(path)) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig: cannot read {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        (None, None) => kube::Config::infer().await.context(
            "no cluster configured: give --server URL or --kubeconfig PATH, or set KUBECONFIG",
        )?,
    };
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    let url = config.cluster_url.to_string();
    let url = url.trim_end_matches('/').to_string();
    let client = kube::Client::try_from(config)
        .with_context(|| format!("cannot make a client for {url}"))?;
    Ok((client, url))
}

/// The operator's settings from its flags; the namespace defaults to [`DEFAULT_NAMESPACE`].
pub fn settings(
    mut args: operator::cli::Args,
    m: &ArgMatches,
) -> anyhow::Result<operator::cli::Settings> {
    if args
        .namespace
        .as_deref()
        .is_none_or(|n| n.trim().is_empty())
    {
        args.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
    args.into_settings(m).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `--max-rebooting-nodes` as the operator's Deployment in `ns` runs with it (its container's
/// args, or its `UPDATE_OPERATOR_MAX_REBOOTING_NODES`), if such a Deployment can be read:
/// `(value, "Deployment NS/NAME")`. Any failure (none there, no permission) is `None`.
pub async fn deployment_max(
    client: &kube::Client,
    ns: &str,
) -> Option<(protocol::operator::MaxRebooting, String)> {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.ok()?;
    for d in list.items {
        let containers = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers.clone())
            .unwrap_or_default();
        for c in containers {
            let args: Vec<String> = c
                .command
                .unwrap_or_default()
                .into_iter()
                .chain(c.args.unwrap_or_default())
                .collect();
            let from_env = c.env.unwrap_or_default().into_iter().find_map(|e| {
                (e.name == "UPDATE_OPERATOR_MAX_REBOOTING_NODES")
                    .then_some(e.value)
                    .flatten()
            });
            if let Some(v) = max_from_args(&args).or(from_env)
                && let Ok(m) = v.parse()
            {
                let name = d.metadata.name.clone().unwrap_or_default();
                return Some((m, format!("Deployment {ns}/{name}")));
            }
        }
    }
    None
}

/// The value of `--max-rebooting-nodes` (or Go's `-max-rebooting-nodes`) in `args`.
pub fn max_from_args(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    let mut found = None;
    while let Some(a) = it.next() {
        let Some(rest) = a
            .strip_prefix("--max-rebooting-nodes")
            .or_else(|| a.strip_prefix("-max-rebooting-nodes"))
        else {
            continue;
        };
        if let Some(v) = rest.strip_prefix('=') {
            found = Some(v.to_string());
        } else if rest.is_empty() {
            found = it.next().cloned();
        }
    }
    found
}

/// Whether the operator flag with clap id `id` was given (command line or its variable).
fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.try_get_raw(id).ok().flatten().and(m.value_source(id)),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    )
}

/// Takes each setting the operator published into `cfg` unless its flag was given; returns
/// the flags given that override a published value.
pub fn apply_published(
    cfg: &mut OperatorConfig,
    published: &OperatorConfig,
    m: &ArgMatches,
) -> Vec<String> {
    let mut overridden = Vec::new();
    let mut take = |ids: &[&str], set: &mut dyn FnMut(&mut OperatorConfig)| {
        // A group of flags (a window's start and length) is taken or overridden as a whole.
        match ids.iter().find(|id| given(m, id)) {
            Some(id) => overridden.push(format!("--{}", id.replace('_', "-"))),
            None => set(cfg),
        }
    };
    let p = published;
    take(&["max_rebooting_nodes"], &mut |c| {
        c.max_rebooting = p.max_rebooting
    });
    take(&["max_rebooting_nodes_per_zone"], &mut |c| {
        c.max_rebooting_per_zone = p.max_rebooting_per_zone
    });
    take(&["zone_label"], &mut |c| {
        c.zone_label = p.zone_label.clone()
    });
    // Any window flag replaces both kinds of published window: the operator forbids FLUO's
    // window together with --reboot-window, so mixing a given one with a published one of
    // the other kind would plan with a window no operator runs with.
    let windows = [
        "reboot_window_start",
        "reboot_window_length",
        "reboot_window",
        "reboot_window_timezone",
    ];
    take(&windows, &mut |c| {
        c.window = p.window;
        c.windows = p.windows.clone();
    });
    take(&["min_reboot_interval"], &mut |c| {
        c.min_reboot_interval = p.min_reboot_interval
    });
    take(&["reboot_timeout"], &mut |c| {
        c.reboot_timeout = p.reboot_timeout
    });
    take(&["stuck_node_action"], &mut |c| {
        c.stuck_node_action = p.stuck_node_action
    });
    take(&["node_selector"], &mut |c| {
        c.node_selector = p.node_selector.clone()
    });
    take(&["before_reboot_annotations"], &mut |c| {
        c.before_reboot_annotations = p.before_reboot_annotations.clone()
    });
    take(&["after_reboot_annotations"], &mut |c| {
        c.after_reboot_annotations = p.after_reboot_annotations.clone()
    });
    overridden
}

/// Where `status` and `plan` took the operator's settings from.
#[derive(Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsSource {
    /// `--max-rebooting-nodes`: "given", "lease", "default", or "Deployment NS/NAME".
    pub max_rebooting: String,
    /// Whether the Lease's operator-settings annotation was used.
    pub from_lease: bool,
    /// Flags given that override what the Lease publishes.
    pub overridden: Vec<String>,
    /// Why the Lease's settings were not used, if they were not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SettingsSource {
    /// One line for people.
    pub fn line(&self) -> String {
        if self.from_lease {
            let mut l = "from the operator's Lease".to_string();
            if !self.overridden.is_empty() {
                l.push_str(&format!(
                    "; given on the command line instead: {}",
                    self.overridden.join(", ")
                ));
            }
            l
        } else {
            format!(
                "the flags given and the defaults ({})",
                self.note.as_deref().unwrap_or("no settings on the Lease")
            )
        }
    }
}

/// Reads the nodes and the Lease; takes the settings the operator publishes on its Lease
/// into `cfg` where no flag was given (else, for the maximum only, its Deployment's).
pub async fn read_all(
    client: &kube::Client,
    url: &str,
    cfg: &mut operator::Config,
    m: &ArgMatches,
) -> anyhow::Result<(Cluster, SettingsSource)> {
    let mut cluster = read(client, url, cfg).await?;
    let max_given = given(m, "max_rebooting_nodes");
    let mut source = SettingsSource {
        max_rebooting: if max_given { "given" } else { "default" }.to_string(),
        ..Default::default()
    };
    let lease_name = format!("Lease {}/{}", cfg.namespace, cfg.lease_name);
    let published = match &cluster.lease {
        None => Err(format!("no {lease_name}")),
        Some(l) => protocol::settings::from_annotations(l.metadata.annotations.as_ref())
            .map_err(|e| {
                // Never fatal: status must still show the cluster.
                format!(
                    "ignored the annotation {} on {lease_name}: {e}",
                    keys::OPERATOR_SETTINGS
                )
            })
            .and_then(|p| {
                p.ok_or_else(|| {
                    format!("no {} annotation on {lease_name}", keys::OPERATOR_SETTINGS)
                })
            })
            .and_then(|p| p.to_config()),
    };
    match published {
        Ok(p) => {
            source.overridden = apply_published(&mut cfg.operator, &p, m);
            source.from_lease = true;
            if !max_given {
                source.max_rebooting = "lease".into();
            }
            // The nodes were read with the flags' selector (all nodes if none was given).
            cluster.nodes.retain(|(v, _)| cfg.operator.manages(v));
        }
        Err(note) => {
            source.note = Some(note);
            if !max_given && let Some((max, from)) = deployment_max(client, &cfg.namespace).await {
                cfg.operator.max_rebooting = max;
                source.max_rebooting = from;
            }
        }
    }
    Ok((cluster, source))
}

/// What the cluster looks like to the operator.
pub struct Cluster {
    /// The managed nodes (`--node-selector`), sorted by name, with their osImage.
    pub nodes: Vec<(NodeView, Option<String>)>,
    /// The operator's Lease, if it exists.
    pub lease: Option<Lease>,
}

/// Reads the nodes and the Lease.
pub async fn read(
    client: &kube::Client,
    url: &str,
    cfg: &operator::Config,
) -> anyhow::Result<Cluster> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .with_context(|| format!("cannot list the nodes of the Kubernetes API server at {url}"))?;
    let mut out: Vec<(NodeView, Option<String>)> = list
        .items
        .iter()
        .map(|n| {
            let os = n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.os_image.clone())
                .filter(|s| !s.is_empty());
            (protocol::k8s::node_view(n), os)
        })
        .filter(|(v, _)| cfg.operator.manages(v))
        .collect();
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let lease = leases.get_opt(&cfg.lease_name).await.with_context(|| {
        format!(
            "cannot read Lease {}/{} at {url}",
            cfg.namespace, cfg.lease_name
        )
    })?;
    Ok(Cluster { nodes: out, lease })
}

/// The cluster-wide pause: `(paused, a warning about a malformed value)`.
pub fn lease_paused(lease: Option<&Lease>) -> (bool, Option<String>) {
    let v = lease
        .and_then(|l| l.metadata.annotations.as_ref())
        .and_then(|a| a.get(keys::PAUSED))
        .map(String::as_str);
    match parse_pause(v) {
        Ok(p) => (p, None),
        Err(e) => (true, Some(e)),
    }
}

/// The Lease's current holder, if its lease has not run out.
pub fn leader(lease: Option<&Lease>, now: DateTime<Utc>) -> Option<String> {
    let spec = lease?.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref());
    if let (Some(r), Some(d)) = (renewed, spec.lease_duration_seconds) {
        let until = r.0.as_second().saturating_add(d.into());
        if until < now.timestamp() {
            return None;
        }
    }
    Some(holder)
}

/// One node's row.
#[derive(Serialize, Debug)]
pub struct NodeRow {
    pub name: String,
    /// The node's phase (`protocol::phase::Phase`'s word), or `malformed`.
    pub state: String,
    /// The parse error of a malformed node, or why a node is stuck.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub os_version: Option<String>,
    pub new_version: Option<String>,
    /// Since when the node is in this state (RFC3339), where our timestamps tell.
    pub since: Option<String>,
    pub zone: Option<String>,
    pub holds_slot: bool,
}

/// What `fluoctl status` shows for a node whose keys do not parse (no phase: the operator
/// leaves it alone).
pub const MALFORMED: &str = "malformed";

/// The state of one node (its phase's word, or [`MALFORMED`]), a detail (the parse error,
/// or why it is stuck) and since when, where our timestamps tell.
pub fn classify(view: &NodeView) -> (&'static str, Option<String>, Option<DateTime<Utc>>) {
    let s = match NodeState::parse(view) {
        Ok(s) => s,
        Err(e) => return (MALFORMED, Some(e.to_string()), None),
    };
    let phase = Phase::of(&s);
    let stuck = s.stuck_since.as_ref().filter(|_| phase == Phase::Stuck);
    let since = match phase {
        Phase::Stuck => stuck.map(|st| st.at),
        Phase::Idle => s.released_at,
        Phase::NeedsReboot => s.reboot_needed_since,
        Phase::Paused => None,
        Phase::WaitingForBeforeHooks => s.picked_at,
        // The slot's clock runs from the grant (`--reboot-timeout` counts from it).
        Phase::Granted
        | Phase::Draining
        | Phase::Rebooting
        | Phase::WaitingForPods
        | Phase::WaitingForAfterHooks => s.granted_at,
    };
    (phase.as_str(), stuck.map(|st| st.reason.clone()), since)
}

/// `fluoctl status` as data.
#[derive(Serialize, Debug)]
pub struct Status {
    pub server: String,
    pub namespace: String,
    pub lease: String,
    pub leader: Option<String>,
    pub lease_exists: bool,
    pub paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_warning: Option<String>,
    pub slots_held: usize,
    pub max_rebooting: usize,
    pub max_rebooting_flag: String,
    /// Where the maximum comes from: "given" (our flag), "lease" (the operator's Lease),
    /// "default", or "Deployment NS/NAME".
    pub max_rebooting_source: String,
    /// Where the settings come from.
    pub settings: SettingsSource,
    /// "always open" (no window configured), "open" or "closed".
    pub window: String,
    pub window_next_change: Option<String>,
    pub holders: Vec<String>,
    /// Slots of Nodes deleted while they held one, still counted by the operator (from
    /// its Lease, `departed-slots`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub departed: Vec<DepartedRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub departed_warning: Option<String>,
    pub nodes: Vec<NodeRow>,
}

/// A reboot slot of a deleted Node that still counts.
#[derive(Serialize, Debug)]
pub struct DepartedRow {
    pub node: String,
    /// When the operator saw the Node deleted.
    pub since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// Builds the status from what was read.
pub fn build(
    cluster: &Cluster,
    cfg: &operator::Config,
    server: &str,
    now: DateTime<Utc>,
) -> Status {
    let op: &OperatorConfig = &cfg.operator;
    let (paused, pause_warning) = lease_paused(cluster.lease.as_ref());
    let nodes: Vec<NodeRow> = cluster
        .nodes
        .iter()
        .map(|(v, os)| {
            let (state, detail, since) = classify(v);
            NodeRow {
                name: v.name.clone(),
                state: state.to_string(),
                detail,
                os_version: v
                    .label(keys::LABEL_VERSION)
                    .map(str::to_string)
                    .or_else(|| os.clone()),
                new_version: v.annotation(keys::NEW_VERSION).map(str::to_string),
                since: since.map(format_time),
                zone: op.zone_of(v).map(str::to_string),
                holds_slot: v.holds_slot(),
            }
        })
        .collect();
    let holders: Vec<String> = nodes
        .iter()
        .filter(|n| n.holds_slot)
        .map(|n| n.name.clone())
        .collect();
    let on_lease = cluster
        .lease
        .as_ref()
        .and_then(|l| l.metadata.annotations.as_ref())
        .and_then(|a| a.get(keys::DEPARTED_SLOTS));
    let (departed, departed_warning) =
        match protocol::operator::parse_departed(on_lease.map(String::as_str)) {
            Ok(m) => (
                m.into_iter()
                    .map(|(node, d)| DepartedRow {
                        node,
                        since: format_time(d.since),
                        zone: d.zone,
                    })
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(e)),
        };
    let window = if !op.has_window() {
        "always open"
    } else if op.window_open(now) {
        "open"
    } else {
        "closed"
    };
    Status {
        server: server.to_string(),
        namespace: cfg.namespace.clone(),
        lease: cfg.lease_name.clone(),
        leader: leader(cluster.lease.as_ref(), now),
        lease_exists: cluster.lease.is_some(),
        paused,
        pause_warning,
        slots_held: holders.len() + departed.len(),
        max_rebooting: op.max_rebooting.resolve(cluster.nodes.len()),
        max_rebooting_flag: op.max_rebooting.to_string(),
        max_rebooting_source: "given".into(),
        settings: SettingsSource::default(),
        window: window.to_string(),
        window_next_change: op.window_next_change(now).map(format_time),
        holders,
        departed,
        departed_warning,
        nodes,
    }
}

/// "3m", "2h5m", "4d3h": how long ago.
pub fn age(since: &str, now: DateTime<Utc>) -> String {
    let Some(t) = protocol::node::parse_time(since) else {
        return "-".into();
    };
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// Columns padded to their widest cell.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table for people.
pub fn render(st: &Status, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "cluster {}: {} managed node(s)\n",
        st.server,
        st.nodes.len()
    ));
    out.push_str(&format!(
        "slots:   {} held / {} max (--max-rebooting-nodes {}{}){}\n",
        st.slots_held,
        st.max_rebooting,
        st.max_rebooting_flag,
        match st.max_rebooting_source.as_str() {
            "given" => ", given".to_string(),
            "default" => ", the default".to_string(),
            "lease" => ", from the operator's Lease".to_string(),
            from => format!(", from {from}"),
        },
        {
            let all: Vec<String> = st
                .holders
                .iter()
                .cloned()
                .chain(st.departed.iter().map(|d| {
                    format!(
                        "{} (Node deleted {} ago; counts until it is back and Ready)",
                        d.node,
                        age(&d.since, now)
                    )
                }))
                .collect();
            if all.is_empty() {
                String::new()
            } else {
                format!(": {}", all.join(", "))
            }
        }
    ));
    if let Some(w) = &st.departed_warning {
        out.push_str(&format!("warning: {w}\n"));
    }
    if st.settings != SettingsSource::default() {
        out.push_str(&format!("settings: {}\n", st.settings.line()));
    }
    out.push_str(&format!(
        "window:  {}{}\n",
        st.window,
        st.window_next_change
            .as_ref()
            .map(|t| format!(" (changes at {t})"))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "paused:  {}{}\n",
        if st.paused {
            "yes, cluster-wide (fluoctl resume)"
        } else {
            "no"
        },
        st.pause_warning
            .as_ref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default()
    ));
    let leader = match (&st.leader, st.lease_exists) {
        (Some(l), _) => l.clone(),
        (None, true) => {
            "none (the Lease is not held; the operator leads only while a node needs it)".into()
        }
        (None, false) => format!(
            "none: no Lease {}/{} (is the update-operator running there?)",
            st.namespace, st.lease
        ),
    };
    out.push_str(&format!("leader:  {leader}\n\n"));
    let mut rows = vec![
        ["NAME", "STATE", "OS VERSION", "NEW VERSION", "SINCE"]
            .map(String::from)
            .to_vec(),
    ];
    let mut details = Vec::new();
    for n in &st.nodes {
        if let Some(d) = &n.detail {
            details.push(format!("{} ({}): {d}", n.name, n.state));
        }
        rows.push(vec![
            n.name.clone(),
            n.state.clone(),
            n.os_version.clone().unwrap_or_else(|| "-".into()),
            n.new_version.clone().unwrap_or_else(|| "-".into()),
            n.since
                .as_deref()
                .map(|s| age(s, now))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&table(&rows));
    if !details.is_empty() {
        out.push('\n');
        for d in details {
            out.push_str(&format!("{d}\n"));
        }
    }
    out
}

/// `fluoctl status`.
pub async fn run(args: StatusArgs, m: &ArgMatches, bin: &str) -> ExitCode {
    match status(args, m).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{bin} status: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn status(args: StatusArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let output = args.output;
    let connect = args.connect.clone();
    let mut s = settings(args.operator, m)?;
    let (client, url) = client(&connect, s.kubeconfig.as_deref()).await?;
    let (cluster, source) = read_all(&client, &url, &mut s.config, m).await?;
    let now = Utc::now();
    let mut st = build(&cluster, &s.config, &url, now);
    st.max_rebooting_source = source.max_rebooting.clone();
    st.settings = source;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&st)?),
        Output::Table => print!("{}", render(&st, now)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_from_deployment_args() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            max_from_args(&a(&["--max-rebooting-nodes=2"])),
            Some("2".into())
        );
        assert_eq!(
            max_from_args(&a(&[
                "x",
                "-max-rebooting-nodes",
                "25%",
                "--lease-name",
                "l"
            ])),
            Some("25%".into())
        );
        assert_eq!(
            max_from_args(&a(&["--max-rebooting-nodes-per-zone=1"])),
            None
        );
        assert_eq!(max_from_args(&a(&[])), None);
    }

    #[test]
    fn states_are_phases_or_malformed() {
        let view = |anns: &[(&str, &str)]| NodeView {
            name: "n".into(),
            annotations: anns
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready: true,
            ..Default::default()
        };
        let t = "2024-05-01T10:00:00Z";
        let at = protocol::node::parse_time(t);
        assert_eq!(classify(&view(&[])), ("idle", None, None));
        assert_eq!(
            classify(&view(&[
                (keys::REBOOT_NEEDED, "true"),
                (keys::REBOOT_NEEDED_SINCE, t)
            ])),
            ("needs_reboot", None, at)
        );
        assert_eq!(
            classify(&view(&[
                (keys::REBOOT_OK, "true"),
                (keys::STUCK_SINCE, &format!("{t} not back"))
            ])),
            ("stuck", Some("not back".into()), at)
        );
        let (state, detail, since) = classify(&view(&[(keys::REBOOT_OK, "yes")]));
        assert_eq!((state, since), (MALFORMED, None));
        assert!(detail.unwrap().contains("\"yes\""));
    }

    #[test]
    fn flags_given_win_over_published_settings_and_any_window_flag_replaces_both() {
        use clap::{Args, FromArgMatches};
        let published = OperatorConfig {
            max_rebooting: "2".parse().unwrap(),
            window: protocol::window::RebootWindow::from_flags(Some("14:00"), Some("1h")).unwrap(),
            zone_label: "rack".into(),
            ..Default::default()
        };
        let run = |argv: &[&str]| {
            let m = StatusArgs::augment_args(clap::Command::new("status"))
                .try_get_matches_from(std::iter::once("status").chain(argv.iter().copied()))
                .unwrap();
            let args = StatusArgs::from_arg_matches(&m).unwrap();
            let mut cfg = settings(args.operator, &m).unwrap().config.operator;
            let over = apply_published(&mut cfg, &published, &m);
            (cfg, over)
        };
        let (cfg, over) = run(&[]);
        assert_eq!((cfg, over), (published.clone(), vec![]));
        let (cfg, over) = run(&[
            "--max-rebooting-nodes",
            "3",
            "--reboot-window",
            "02:00-03:00",
        ]);
        assert_eq!(cfg.max_rebooting.to_string(), "3");
        assert_eq!(
            cfg.window, None,
            "FLUO's published window with --reboot-window"
        );
        assert!(cfg.windows.is_some());
        assert_eq!(cfg.zone_label, "rack");
        assert_eq!(over, ["--max-rebooting-nodes", "--reboot-window"]);
    }

    #[test]
    fn ages() {
        let now = protocol::node::parse_time("2025-01-02T03:04:05Z").unwrap();
        assert_eq!(age("2025-01-02T03:04:00Z", now), "5s");
        assert_eq!(age("2025-01-02T02:00:00Z", now), "1h4m");
        assert_eq!(age("2024-12-31T00:00:00Z", now), "2d3h");
        assert_eq!(age("garbage", now), "-");
    }
}
