//! update-operator: decides which Flatcar nodes may reboot, leader-elected
//! through FLUO's lock (a Lease and a ConfigMap); a drop-in replacement for
//! FLUO's update-operator.
//!
//! [`run`] is the whole operator, usable in-process (several replicas in one
//! process, no globals): it campaigns for the Lease ([`lease`]) and, while it
//! leads, keeps a cache of Nodes (each parsed once per change), runs
//! [`protocol::operator::decide`] on every change and at the next window edge,
//! and writes the resulting patches ([`reconcile`]). [`cli`] turns FLUO's flags into a [`Config`].

pub mod alerts;
pub mod cli;
mod events;
pub mod inputs;
pub mod leader_needed;
pub mod lease;
pub mod metrics;
pub mod notify;
mod reconcile;

use std::sync::Arc;

use protocol::operator::OperatorConfig;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use lease::{Leadership, LeaseTiming};

/// FLUO's leader election lock name (`leaderElectionResourceName`).
pub const DEFAULT_LEASE_NAME: &str = "flatcar-linux-update-operator-lock";

/// `--release-lease-after-idle`'s default.
pub const DEFAULT_RELEASE_LEASE_AFTER_IDLE: std::time::Duration =
    std::time::Duration::from_secs(30);

/// The field manager our writes are recorded under.
pub const FIELD_MANAGER: &str = "update-operator";

/// Everything the operator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// What to decide: max rebooting nodes, window, hook annotations.
    pub operator: OperatorConfig,
    /// Namespace of the Lease (`POD_NAMESPACE`).
    pub namespace: String,
    /// Name of the Lease (`--lease-name`).
    pub lease_name: String,
    /// This replica's holder identity; must be unique per replica.
    pub identity: String,
    /// Leader election timings.
    pub lease: LeaseTiming,
    /// Field manager of our patches and Lease writes.
    pub field_manager: String,
    /// This replica's metrics (its own registry): clone it before [`run`] to read them.
    pub metrics: metrics::Metrics,
    /// Serve `/metrics`, `/healthz` and `/readyz` here while [`run`] runs
    /// (`--metrics-address`; port 0 picks one, see [`metrics::Metrics::listening`]).
    pub metrics_address: Option<std::net::SocketAddr>,
    /// `--notify-url`: webhook notifications of grants, reboots, returns and stuck nodes.
    pub notify: Option<notify::NotifyConfig>,
    /// `--blocking-pod-selector`: pods matching it block their node's grant.
    pub blocking_pod_selector: Option<protocol::selector::LabelSelector>,
    /// `--prometheus-url` and its companions: active alerts block every new grant.
    pub alerts: Option<alerts::AlertsConfig>,
    /// `--release-lease-after-idle`: give up the Lease once no node has needed an
    /// operator for this long, and campaign only while one does ([`work`]);
    /// `None` keeps campaigning and leading while idle (FLUO's behaviour).
    pub release_lease_after_idle: Option<std::time::Duration>,
}

impl Config {
    /// A config with FLUO's lease name, default timings and a fresh identity
    /// ([`default_identity`]).
    pub fn new(namespace: impl Into<String>, operator: OperatorConfig) -> Config {
        Config {
            operator,
            namespace: namespace.into(),
            lease_name: DEFAULT_LEASE_NAME.to_string(),
            identity: default_identity(),
            lease: LeaseTiming::default(),
            field_manager: FIELD_MANAGER.to_string(),
            metrics: metrics::Metrics::new(),
            metrics_address: None,
            notify: None,
            blocking_pod_selector: None,
            alerts: None,
            release_lease_after_idle: Some(DEFAULT_RELEASE_LEASE_AFTER_IDLE),
        }
    }

    /// Checks what [`run`] relies on.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.namespace.is_empty() {
            anyhow::bail!("the Lease namespace (POD_NAMESPACE) must not be empty");
        }
        if self.lease_name.is_empty() {
            anyhow::bail!("--lease-name must not be empty");
        }
        if self.identity.is_empty() {
            anyhow::bail!("the holder identity must not be empty");
        }
        self.lease
            .validate()
            .map_err(|e| anyhow::anyhow!("leader election timing: {e}"))?;
        Ok(())
    }
}

/// This machine's host name (the pod name in a cluster, as FLUO's lock ID)
/// plus a random suffix, so two replicas in one pod or process never share it.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "update-operator".to_string());
    let suffix: u32 = rand::rng().random();
    format!("{host}_{suffix:08x}")
}

/// Runs the operator until `shutdown` is cancelled: campaigns for the Lease,
/// acts only while it leads, and releases the Lease on shutdown so a standby
/// takes over within seconds. Returns an error for an invalid `cfg` or if the
/// leader's work fails.
pub async fn run(
    client: kube::Client,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    cfg.validate()?;
    info!(
        identity = %cfg.identity,
        lease = %format!("{}/{}", cfg.namespace, cfg.lease_name),
        max_rebooting_nodes = %cfg.operator.max_rebooting,
        reboot_window = %cfg.operator.window.map_or_else(|| "always open".to_string(), |w| w.to_string()),
        reboot_windows = %cfg.operator.windows.as_ref().map_or_else(|| "none".to_string(), |s| s.to_string()),
        max_rebooting_nodes_per_zone = %cfg.operator.max_rebooting_per_zone.map_or_else(|| "unlimited".to_string(), |m| m.to_string()),
        zone_label = %cfg.operator.zone_label,
        node_selector = %cfg.operator.node_selector.as_ref().map_or_else(|| "all nodes".to_string(), |s| s.to_string()),
        min_reboot_interval = %protocol::window::format_go_duration(cfg.operator.min_reboot_interval),
        reboot_timeout = %protocol::window::format_go_duration(cfg.operator.reboot_timeout),
        stuck_node_action = %cfg.operator.stuck_node_action,
        blocking_pod_selector = %cfg.blocking_pod_selector.as_ref().map_or_else(|| "none".to_string(), |s| s.to_string()),
        prometheus_alerts = %cfg.alerts.as_ref().map_or_else(|| "none".to_string(), |a| a.to_string()),
        before_reboot_annotations = ?cfg.operator.before_reboot_annotations,
        after_reboot_annotations = ?cfg.operator.after_reboot_annotations,
        "update-operator starting"
    );
    // Observability: API errors counted on every request, the HTTP endpoint, Events and
    // notifications from bounded queues, all polled below next to the election.
    let metrics = cfg.metrics.clone();
    let client = metrics.api.instrument(client);
    // Nothing runs until polled below; /readyz reads its watch's health.
    let (work_signal, detector) = match cfg.release_lease_after_idle {
        Some(_) => {
            let (signal, run) = leader_needed::watch_leader_needed(
                kube::Api::all(client.clone()),
                Arc::new(cfg.operator.clone()),
            );
            (Some(signal), Some(run))
        }
        None => (None, None),
    };
    let server = match cfg.metrics_address {
        Some(addr) => {
            let (local, serve) = telemetry::server::bind(
                addr,
                metrics.registry(),
                ready_check(&cfg, work_signal.clone()),
            )
            .await?;
            metrics.set_listening(local);
            Some(serve)
        }
        None => None,
    };
    let (events, event_driver) = telemetry::events::channel(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(cfg.identity.clone()),
        },
        1024,
    );
    let notifier = cfg
        .notify
        .clone()
        .map(|n| notify::Notifier::new(n, metrics.clone()));
    let reporter = Arc::new(events::Reporter {
        events,
        notifier: notifier.clone(),
        metrics: metrics.clone(),
        lease: k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("coordination.k8s.io/v1".into()),
            kind: Some("Lease".into()),
            namespace: Some(cfg.namespace.clone()),
            name: Some(cfg.lease_name.clone()),
            ..Default::default()
        },
        identity: cfg.identity.clone(),
    });
    let background = async move {
        let serve = async {
            match server {
                Some(s) => s.await,
                None => std::future::pending().await,
            }
        };
        let notify = async {
            match notifier {
                Some(n) => n.run().await,
                None => std::future::pending().await,
            }
        };
        tokio::join!(serve, event_driver.run(), notify);
    };

    let elector = lease::Elector::new(
        client.clone(),
        &cfg.namespace,
        &cfg.lease_name,
        &cfg.identity,
        cfg.lease,
        &cfg.field_manager,
    )
    // Published where fluoctl already reads (the Lease), so status and plan know our flags.
    .with_annotation(
        protocol::keys::OPERATOR_SETTINGS,
        &protocol::settings::PublishedSettings::of(&cfg.operator).to_annotation(),
    );
    let detector = async move {
        match detector {
            Some(d) => d.await,
            None => std::future::pending().await,
        }
    };
    let cfg = Arc::new(cfg);
    let wanted = work_signal.map(|s| s.wanted);
    let elected = lease::run_elected(elector, shutdown, wanted, move |leadership| {
        reconcile::lead(client.clone(), cfg.clone(), leadership, reporter.clone())
    });
    tokio::select! {
        r = elected => r,
        () = background => Err(anyhow::anyhow!("the observability tasks ended unexpectedly")),
        () = detector => Err(anyhow::anyhow!("the node watch for work ended unexpectedly")),
    }
}

/// `/readyz`: ready while the API server answers (a campaigning replica talks to it at least
/// every leader election retry period; an idle one keeps its watch of Nodes open), whether
/// or not this replica leads. So a rolling update of a single-replica Deployment can
/// complete while the old pod still leads.
fn ready_check(
    cfg: &Config,
    work: Option<leader_needed::LeaderNeeded>,
) -> telemetry::server::ReadyCheck {
    let api = cfg.metrics.api.clone();
    let within = (cfg.lease.lease_duration * 2).max(std::time::Duration::from_secs(30));
    Arc::new(move || {
        let watching = work
            .as_ref()
            .is_some_and(leader_needed::LeaderNeeded::healthy);
        if api.answered_within(within) || watching {
            Ok(())
        } else {
            Err(format!(
                "no good answer from the Kubernetes API server in the last {}s",
                within.as_secs()
            ))
        }
    })
}
