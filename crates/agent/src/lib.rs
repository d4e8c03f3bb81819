//! update-agent: one per node (a DaemonSet). It follows update_engine on the host, marks its
//! Node when an update needs a reboot, and when the operator allows it (`reboot-ok`) cordons,
//! drains (Eviction API) and reboots through logind.
//!
//! All decisions are [`protocol::agent::next_step`]'s; this crate is the shell around it:
//! - a kube-runtime watcher on its own Node (field selector `metadata.name=NODE`) and the
//!   host's update_engine status stream are the only triggers (no polling);
//! - on every change it builds a [`NodeView`](protocol::node::NodeView) and asks `next_step` what to do;
//! - `Patch` is written as a JSON merge patch carrying the `metadata.resourceVersion` of the
//!   node it was decided on (409 -> read again, decide again);
//! - `Drain` runs [`drain::drain`] concurrently with the watches (stopped if the decision
//!   changes, e.g. the grant is withdrawn); a failed drain goes through
//!   [`protocol::agent::drain_failed`];
//! - `Reboot` re-reads the Node and checks [`protocol::agent::may_reboot`] before calling
//!   logind (so a stale view or an API outage never reboots); a failed call is written on the
//!   node ([`protocol::agent::reboot_failed`]) and retried with backoff, never dropped;
//! - after a reboot, while the node carries the record of the pods its drain evicted, the
//!   pods of those workloads are listed every [`AgentConfig::pod_recovery_poll`] and passed
//!   to `next_step`, which removes the record once they are Ready again or
//!   `--pod-recovery-timeout` passed (a Warning Event names what did not recover);
//! - API errors back off exponentially (at most [`AgentConfig::api_backoff_max`]); a lost
//!   host stream is reopened with backoff.
//!
//! By role: this file is the wiring ([`run`]); `node_loop` decides on the watched Node and
//! acts (writes, drain, reboot, the health gate); `host_follower` follows update_engine;
//! `events` words the agent's Events; [`drain`] drains.
//!
//! [`run`] keeps no global or process-wide state and spawns no task that could outlive it:
//! dropping (aborting) its future stops everything, so it can run in-process once per
//! simulated node, and be restarted like a DaemonSet pod.

pub mod cli;
pub mod drain;
mod events;
mod host_follower;
pub mod metrics;
mod node_loop;
pub mod recovery;
mod sentinel;

use std::future::Future;
use std::time::Duration;

use host::Host;
use kube::Client;
use telemetry::events::EventSink;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span};

pub use protocol::agent::{DrainTimeoutAction, NodeOptions};
pub use protocol::hostinfo::HostInfo;

use crate::drain::DrainOptions;
use crate::host_follower::follow_host;
use crate::node_loop::Agent;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "update-agent";

/// What one agent needs to know.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This agent's Node (`--node`).
    pub node: String,
    /// The whole drain must finish within this (`--grace-period`, default 600 s).
    pub grace_period: Duration,
    /// Evict pods without a controller too (`--force-drain`).
    pub force_drain: bool,
    /// What a failed or timed-out drain leads to (`--drain-timeout-action`).
    pub drain_timeout_action: DrainTimeoutAction,
    /// The `id`, `group` and `version` labels' values.
    pub host_info: HostInfo,
    /// Longest wait between retries of failed API calls (default 30 s).
    pub api_backoff_max: Duration,
    /// Longest wait between attempts of a failing logind Reboot (default 60 s).
    pub reboot_backoff_max: Duration,
    /// After logind accepted the reboot, how long the agent waits for the machine to go
    /// down before it records that on the node and asks again (default 10 min).
    pub reboot_timeout: Duration,
    /// How long past its grace period an evicted pod may take to disappear (default 10 s).
    pub pod_delete_margin: Duration,
    /// After the reboot, how long to wait for the evicted workloads to run Ready again
    /// before the slot is released anyway (`--pod-recovery-timeout`, default 10 min).
    pub pod_recovery_timeout: Duration,
    /// While waiting for them, how often their pods are listed again (default 5 s).
    pub pod_recovery_poll: Duration,
    /// `--reboot-sentinel`: a file whose existence asks for a reboot.
    pub reboot_sentinel: Option<std::path::PathBuf>,
    /// How often the sentinel is looked at (default 5 s).
    pub sentinel_poll: Duration,
    /// `--prefer-no-schedule-taint` and `--exclude-from-load-balancers`.
    pub node_options: NodeOptions,
    /// `--exclude-from-load-balancers-wait`: after labelling, wait this long before evicting.
    pub exclude_from_lb_wait: Duration,
    /// `--volume-detach-timeout`: after the drain, wait up to this long for the node's
    /// volumes to detach (zero: do not wait).
    pub volume_detach_timeout: Duration,
    /// `--skip-wait-for-delete-timeout`: a pod deleted longer ago than this counts as gone
    /// (zero: always wait).
    pub skip_wait_for_delete_timeout: Duration,
    /// `--drain-pod-selector`: drain only the pods it matches.
    pub drain_pod_selector: Option<String>,
    /// `--drain-kube-system`: drain kube-system's pods too.
    pub drain_kube_system: bool,
    /// The API server's time: the operator's stamps (`granted-at`, `grant-expires`), the
    /// drain's deadlines and the agent's own stamps are read on it, not on this machine's
    /// clock, which may be minutes off. Build [`run`]'s client on it
    /// ([`shell::kube_client_with_clock`], [`shell::clock::client`]); otherwise it is the
    /// local clock.
    pub clock: shell::ServerClock,
    /// This agent's metrics (its own registry): clone it before [`run`] to read them.
    pub metrics: metrics::Metrics,
    /// Serve `/metrics`, `/healthz` and `/readyz` here while [`run`] runs
    /// (`--metrics-address`; port 0 picks one, see [`telemetry::Exposition::listening`]).
    pub metrics_address: Option<std::net::SocketAddr>,
}

impl AgentConfig {
    /// FLUO's defaults for `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            grace_period: Duration::from_secs(600),
            force_drain: false,
            drain_timeout_action: DrainTimeoutAction::default(),
            host_info: HostInfo::default(),
            api_backoff_max: Duration::from_secs(30),
            reboot_backoff_max: Duration::from_secs(60),
            reboot_timeout: Duration::from_secs(600),
            pod_delete_margin: Duration::from_secs(10),
            pod_recovery_timeout: protocol::evicted::DEFAULT_POD_RECOVERY_TIMEOUT
                .to_std()
                .expect("positive"),
            pod_recovery_poll: Duration::from_secs(5),
            reboot_sentinel: None,
            sentinel_poll: Duration::from_secs(5),
            node_options: NodeOptions::default(),
            exclude_from_lb_wait: Duration::ZERO,
            volume_detach_timeout: Duration::from_secs(300),
            skip_wait_for_delete_timeout: Duration::ZERO,
            drain_pod_selector: None,
            drain_kube_system: false,
            clock: shell::ServerClock::default(),
            metrics: metrics::Metrics::new(),
            metrics_address: None,
        }
    }

    fn drain_options(&self) -> DrainOptions {
        let mut o = DrainOptions::new(&self.node, self.grace_period);
        o.force = self.force_drain;
        o.pod_delete_margin = self.pod_delete_margin;
        o.metrics = Some(self.metrics.clone());
        o.pod_selector = self.drain_pod_selector.clone();
        o.kube_system = self.drain_kube_system;
        o.skip_wait_for_delete = Some(self.skip_wait_for_delete_timeout).filter(|d| !d.is_zero());
        if self.node_options.exclude_from_load_balancers {
            o.wait_before_evicting = self.exclude_from_lb_wait;
        }
        o.volume_detach_timeout = self.volume_detach_timeout;
        o.clock = self.clock.clone();
        o
    }
}

pub use protocol::k8s::node_view;

/// Runs the agent until `shutdown` is cancelled (then returns `Ok`). Errors only for a
/// configuration that cannot work (an empty node name). Everything else (API errors, a lost
/// host) is retried with backoff.
pub async fn run<H: Host>(
    client: Client,
    host: H,
    cfg: AgentConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(!cfg.node.is_empty(), "--node: the node name is empty");
    // Outside the span: JSON logs keep `node` at the top level of this line.
    info!(
        node = %cfg.node,
        grace_period_s = cfg.grace_period.as_secs_f64(),
        force_drain = cfg.force_drain,
        drain_timeout_action = %cfg.drain_timeout_action,
        "update-agent starting"
    );
    let metrics = cfg.metrics.clone();
    metrics.set_synced(false);
    let client = metrics.api.instrument(client);
    let (events, background) = observability(&cfg, client.clone()).await?;
    // Every line below is about this node: one span names it (agents share a process in
    // the fleet simulation).
    let span = info_span!("agent", node = %cfg.node);
    let (tx, rx) = watch::channel(None);
    let (sentinel_tx, sentinel_rx) = watch::channel(None);
    let sentinel = cfg.reboot_sentinel.clone().map(|p| (p, cfg.sentinel_poll));
    let mut agent = Agent::new(client, cfg, events);
    let work = async {
        tokio::select! {
            _ = shutdown.cancelled() => {
                info!("update-agent stopping");
                Ok(())
            }
            never = follow_host(&host, tx) => match never {},
            never = async {
                match &sentinel {
                    Some((path, poll)) => sentinel::follow_sentinel(path, *poll, sentinel_tx).await,
                    None => std::future::pending().await,
                }
            } => match never {},
            r = agent.run(&host, rx, sentinel_rx) => r,
            () = background => Err(anyhow::anyhow!("the observability tasks ended unexpectedly")),
        }
    };
    // Not `.instrument()`: `ApiMetrics::instrument` above shares the name.
    let r = tracing::Instrument::instrument(work, span).await;
    metrics.set_synced(false);
    r
}

/// The HTTP endpoint (if `--metrics-address`) and the Event queue: the sink to publish to,
/// and the future that serves and writes them. The caller polls that future alongside its
/// work, so nothing outlives [`run`].
async fn observability(
    cfg: &AgentConfig,
    client: Client,
) -> anyhow::Result<(EventSink, impl Future<Output = ()> + Send + use<>)> {
    let metrics = &cfg.metrics;
    let server = match cfg.metrics_address {
        Some(addr) => {
            let m = metrics.clone();
            let ready: telemetry::server::ReadyCheck = std::sync::Arc::new(move || {
                if m.synced() {
                    Ok(())
                } else {
                    Err("the watch of this agent's node has not synced yet".into())
                }
            });
            let (local, serve) = telemetry::server::bind(addr, metrics.registry(), ready).await?;
            metrics.set_listening(local);
            Some(serve)
        }
        None => None,
    };
    let (events, event_driver) = telemetry::events::channel(
        client,
        kube::runtime::events::Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(cfg.node.clone()),
        },
        256,
    );
    let background = async move {
        let serve = async {
            match server {
                Some(s) => s.await,
                None => std::future::pending().await,
            }
        };
        tokio::join!(serve, event_driver.run());
    };
    Ok((events, background))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use futures::stream::BoxStream;
    use host::UpdateStatus;
    use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn view_of_a_node() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                annotations: Some([("a".to_string(), "1".to_string())].into()),
                labels: Some([("l".to_string(), "x".to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(true),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                node_info: Some(NodeSystemInfo {
                    boot_id: "b1".into(),
                    ..Default::default()
                }),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        let v = node_view(&node);
        assert_eq!(v.name, "n1");
        assert_eq!(v.annotation("a"), Some("1"));
        assert_eq!(v.label("l"), Some("x"));
        assert!(v.unschedulable && v.ready);
        assert_eq!(v.boot_id, "b1");
        let empty = node_view(&Node::default());
        assert!(!empty.unschedulable && !empty.ready && empty.boot_id.is_empty());
    }

    struct NoHost;

    impl Host for NoHost {
        async fn status_updates(
            &self,
        ) -> Result<BoxStream<'static, UpdateStatus>, host::HostError> {
            Ok(futures::stream::pending().boxed())
        }
        async fn reboot(&self) -> Result<(), host::HostError> {
            Ok(())
        }
    }

    /// `run` must be spawnable (one task per simulated node).
    #[allow(dead_code)]
    fn run_is_send(client: Client) {
        fn send<T: Send + 'static>(_: T) {}
        send(run(
            client,
            NoHost,
            AgentConfig::new("n"),
            CancellationToken::new(),
        ));
    }
}
