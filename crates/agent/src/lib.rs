//! update-agent: one per node (a DaemonSet). It follows update_engine on the host, marks its
//! Node when an update needs a reboot, and when the operator allows it (`reboot-ok`) cordons,
//! drains (Eviction API) and reboots through logind.
//!
//! All decisions are [`protocol::agent::next_step`]'s; this crate is the shell around it:
//! - a kube-runtime watcher on its own Node (field selector `metadata.name=NODE`) and the
//!   host's update_engine status stream are the only triggers (no polling);
//! - on every change it builds a [`NodeView`] and asks `next_step` what to do;
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
//! [`run`] keeps no global or process-wide state and spawns no task that could outlive it:
//! dropping (aborting) its future stops everything, so it can run in-process once per
//! simulated node, and be restarted like a DaemonSet pod.

pub mod cli;
pub mod drain;
mod events;
pub mod metrics;
pub mod recovery;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use host::{Host, UpdateStatus};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use protocol::agent::{AgentInput, AgentStep, may_reboot, next_step, reboot_failed};
use protocol::evicted::{self, PodRecovery, WorkloadPods};
use protocol::keys;
use protocol::node::{NodeState, NodeView};
use protocol::patch::NodePatch;
use telemetry::events::EventSink;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use protocol::agent::DrainTimeoutAction;
pub use protocol::hostinfo::HostInfo;

use crate::drain::{DrainError, DrainOptions, DrainSummary};
use crate::events::AgentEvent;
use shell::{Backoff, NodeWriter};

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
    /// This agent's metrics (its own registry): clone it before [`run`] to read them.
    pub metrics: metrics::Metrics,
    /// Serve `/metrics`, `/healthz` and `/readyz` here while [`run`] runs
    /// (`--metrics-address`; port 0 picks one, see [`metrics::Metrics::listening`]).
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
            metrics: metrics::Metrics::new(),
            metrics_address: None,
        }
    }

    fn drain_options(&self) -> DrainOptions {
        let mut o = DrainOptions::new(&self.node, self.grace_period);
        o.force = self.force_drain;
        o.pod_delete_margin = self.pod_delete_margin;
        o.metrics = Some(self.metrics.clone());
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
    info!(
        node = %cfg.node,
        grace_period_s = cfg.grace_period.as_secs_f64(),
        force_drain = cfg.force_drain,
        drain_timeout_action = %cfg.drain_timeout_action,
        "update-agent starting"
    );
    // Observability: API errors counted on every request, the HTTP endpoint, and Events
    // from a bounded queue, all polled below: nothing outlives `run`.
    let metrics = cfg.metrics.clone();
    metrics.set_synced(false);
    let client = metrics.api.instrument(client);
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
        client.clone(),
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
    let (tx, rx) = watch::channel(None);
    let mut agent = Agent::new(client, cfg, events);
    let node = agent.cfg.node.clone();
    let r = tokio::select! {
        _ = shutdown.cancelled() => {
            info!(node = %node, "update-agent stopping");
            Ok(())
        }
        never = follow_host(&host, tx, &node) => match never {},
        r = agent.run(&host, rx) => r,
        () = background => Err(anyhow::anyhow!("the observability tasks ended unexpectedly")),
    };
    metrics.set_synced(false);
    r
}

/// Follows update_engine's status into `tx`, reopening the stream with backoff whenever it
/// fails or ends. Never returns.
async fn follow_host<H: Host>(
    host: &H,
    tx: watch::Sender<Option<UpdateStatus>>,
    node: &str,
) -> std::convert::Infallible {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match host.status_updates().await {
            Ok(mut statuses) => {
                info!(node = %node, "following update_engine");
                let mut first = true;
                while let Some(status) = statuses.next().await {
                    if first {
                        backoff.reset();
                        first = false;
                    }
                    debug!(node = %node, ?status, "update_engine status");
                    tx.send_replace(Some(status));
                }
                warn!(node = %node, "lost update_engine's status stream; reconnecting");
            }
            Err(e) => warn!(node = %node, error = %e, "cannot follow update_engine; retrying"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Whether `new` is not newer than `cur`. resourceVersions are opaque; when both are integers
/// (etcd, the sandbox) an event that is not newer (e.g. one from before our own write, whose
/// response we already took) is skipped. Otherwise staleness is caught by the
/// resourceVersion precondition of our writes (409).
fn is_older(new: &Node, cur: &Node) -> bool {
    let rv = |n: &Node| n.resource_version().and_then(|v| v.parse::<u64>().ok());
    matches!((rv(new), rv(cur)), (Some(a), Some(b)) if a <= b)
}

type DrainFuture = Pin<Box<dyn Future<Output = Result<DrainSummary, DrainError>> + Send>>;

/// Whether `decide` should go on deciding (the node changed) or stop until the next event.
enum Flow {
    Again,
    Done,
}

struct Agent {
    client: Client,
    /// Reads and writes of its own Node, as [`FIELD_MANAGER`].
    nodes: NodeWriter,
    cfg: AgentConfig,
    /// The newest Node seen (watch, write response or read).
    node: Option<Node>,
    /// The first list of the watch arrived.
    listed: bool,
    /// Buffer of a (re)list in progress.
    relist: Option<Option<Node>>,
    host: Option<UpdateStatus>,
    /// A drain finished in this cycle (reset when the node is no longer cordoned and in
    /// progress, so a later cycle drains again).
    drained: bool,
    api_backoff: Backoff,
    /// No decisions before this (API backoff).
    retry_at: Option<Instant>,
    reboot_backoff: Backoff,
    /// No reboot attempt before this (after a failure, or while the accepted one happens).
    reboot_not_before: Option<Instant>,
    /// When logind last accepted a reboot.
    reboot_accepted_at: Option<Instant>,
    last_wait: Option<String>,
    last_malformed: Option<String>,
    /// Events on this node (best effort, never waits).
    events: EventSink,
    /// When the running drain started.
    drain_started: Option<Instant>,
    /// The pods of the workloads the drain evicted, when last listed (after the reboot).
    pods: Option<(Instant, WorkloadPods)>,
    /// List them again (and decide) at this instant.
    recheck_at: Option<Instant>,
    /// Where the health gate stood at the last decision, for the Event when it passes.
    gate: PodRecovery,
}

impl Agent {
    fn new(client: Client, cfg: AgentConfig, events: EventSink) -> Self {
        Self {
            nodes: NodeWriter::new(client.clone(), FIELD_MANAGER),
            client,
            api_backoff: Backoff::new(Duration::from_millis(200), cfg.api_backoff_max),
            reboot_backoff: Backoff::new(Duration::from_millis(500), cfg.reboot_backoff_max),
            cfg,
            node: None,
            listed: false,
            relist: None,
            host: None,
            drained: false,
            retry_at: None,
            reboot_not_before: None,
            reboot_accepted_at: None,
            last_wait: None,
            last_malformed: None,
            events,
            drain_started: None,
            pods: None,
            recheck_at: None,
            gate: PodRecovery::NotApplicable,
        }
    }

    /// An Event on this node.
    fn event(&self, event: AgentEvent<'_>) {
        let uid = self.node.as_ref().and_then(|n| n.uid());
        event.publish(&self.events, &self.cfg.node, uid);
    }

    /// Events for what a write we made changed.
    fn report_write(&self, before: &NodeView, after: &Node) {
        let after = node_view(after);
        if before.annotation(keys::EVICTED_PODS).is_some()
            && after.annotation(keys::EVICTED_PODS).is_none()
        {
            self.report_gate();
        }
        let in_progress = |v: &NodeView| v.annotation(keys::REBOOT_IN_PROGRESS) == Some(keys::TRUE);
        if in_progress(before) && !in_progress(&after) {
            if after.annotation(keys::REBOOT_NEEDED) != Some(keys::TRUE) {
                self.event(AgentEvent::BackFromReboot {
                    old_boot_id: before.annotation(keys::REBOOT_BOOT_ID),
                    new_boot_id: &after.boot_id,
                });
            } else {
                self.event(AgentEvent::RebootStopped);
            }
        }
    }

    /// The health gate passed (the record of evicted pods was removed after the reboot).
    fn report_gate(&self) {
        match &self.gate {
            PodRecovery::Recovered => self.event(AgentEvent::EvictedPodsReady),
            PodRecovery::TimedOut { pending } => {
                let what = evicted::describe(pending.iter().map(|(w, c)| (w, *c)));
                warn!(node = %self.cfg.node, workloads = %what, "evicted pods not Ready again within --pod-recovery-timeout; releasing the slot anyway");
                self.event(AgentEvent::EvictedPodsNotReady {
                    timeout: self.cfg.pod_recovery_timeout,
                    workloads: &what,
                });
            }
            _ => {}
        }
    }

    /// After the reboot, while the node's record of evicted pods is there: their pods now,
    /// listed again at most every `pod_recovery_poll` (`None` if the list failed).
    async fn gather_pods(&mut self, state: Option<&NodeState>) -> Option<WorkloadPods> {
        let rec = state
            .filter(|s| !s.reboot_in_progress)
            .and_then(|s| s.evicted_pods.as_ref())
            .filter(|r| r.back.is_some());
        let Some(rec) = rec else {
            self.pods = None;
            self.recheck_at = None;
            return None;
        };
        let poll = self.cfg.pod_recovery_poll;
        if self
            .pods
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= poll)
        {
            self.pods = match recovery::look(&self.client, rec).await {
                Ok(p) => Some((Instant::now(), p)),
                Err(e) => {
                    warn!(node = %self.cfg.node, error = %e, "cannot list the evicted workloads' pods; retrying");
                    None
                }
            };
            // Again after the poll interval, or at the timeout if that comes first.
            let timeout =
                TimeDelta::from_std(self.cfg.pod_recovery_timeout).unwrap_or(TimeDelta::MAX);
            let left = match rec.back.and_then(|b| b.checked_add_signed(timeout)) {
                Some(deadline) => (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                None => poll,
            };
            self.recheck_at = Some(Instant::now() + poll.min(left + Duration::from_millis(10)));
        }
        self.pods.as_ref().map(|(_, p)| p.clone())
    }

    async fn run<H: Host>(
        &mut self,
        host: &H,
        mut host_rx: watch::Receiver<Option<UpdateStatus>>,
    ) -> anyhow::Result<()> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.cfg.node));
        let mut events: BoxStream<'static, Result<watcher::Event<Node>, watcher::Error>> =
            watcher(self.nodes.api().clone(), config)
                .default_backoff()
                .boxed();
        // The running drain, if any (kept out of `self`, which must stay `Sync`).
        let mut drain: Option<DrainFuture> = None;
        let mut dirty = false;
        loop {
            if dirty && self.retry_at.is_none() {
                dirty = false;
                self.decide(host, &mut drain).await;
            }
            let retry_at = self.retry_at;
            let reboot_at = self.reboot_not_before;
            let recheck_at = self.recheck_at;
            tokio::select! {
                ev = events.next() => match ev.context("the node watch ended")? {
                    Ok(ev) => dirty |= self.on_node_event(ev),
                    Err(e) => warn!(node = %self.cfg.node, error = %e, "watching the node"),
                },
                changed = host_rx.changed() => {
                    changed.context("the host follower stopped")?;
                    self.host = host_rx.borrow_and_update().clone();
                    dirty = true;
                }
                result = async { drain.as_mut().expect("guarded").await }, if drain.is_some() => {
                    drain = None;
                    self.drain_done(result).await;
                    dirty = true;
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    self.retry_at = None;
                    dirty = true;
                }
                _ = tokio::time::sleep_until(reboot_at.unwrap_or_else(Instant::now)), if reboot_at.is_some() => {
                    self.reboot_not_before = None;
                    dirty = true;
                }
                _ = tokio::time::sleep_until(recheck_at.unwrap_or_else(Instant::now)), if recheck_at.is_some() => {
                    self.recheck_at = None;
                    self.pods = None;
                    dirty = true;
                }
            }
        }
    }

    /// Takes a watch event; true if the node may have changed.
    fn on_node_event(&mut self, ev: watcher::Event<Node>) -> bool {
        match ev {
            watcher::Event::Apply(n) => self.offer(n),
            watcher::Event::Delete(_) => {
                self.node = None;
                true
            }
            watcher::Event::Init => {
                self.relist = Some(None);
                false
            }
            watcher::Event::InitApply(n) => {
                if let Some(r) = self.relist.as_mut() {
                    *r = Some(n);
                }
                false
            }
            watcher::Event::InitDone => {
                self.listed = true;
                self.cfg.metrics.set_synced(true);
                match self.relist.take().flatten() {
                    Some(n) => {
                        self.offer(n);
                    }
                    None => self.node = None,
                }
                true
            }
        }
    }

    /// Takes `n` as the newest node unless it is older than what we have (see [`is_older`]).
    fn offer(&mut self, n: Node) -> bool {
        if self.node.as_ref().is_some_and(|cur| is_older(&n, cur)) {
            return false;
        }
        self.node = Some(n);
        true
    }

    /// Decides and acts until there is nothing more to do right now.
    async fn decide<H: Host>(&mut self, host: &H, drain: &mut Option<DrainFuture>) {
        const MAX_ROUNDS: usize = 16;
        for _ in 0..MAX_ROUNDS {
            match self.decide_once(host, drain).await {
                Flow::Again => continue,
                Flow::Done => return,
            }
        }
        warn!(node = %self.cfg.node, "the node kept changing under every write; pausing");
        self.back_off_for(self.api_backoff.clone().next_delay());
    }

    async fn decide_once<H: Host>(&mut self, host: &H, drain: &mut Option<DrainFuture>) -> Flow {
        if !self.listed {
            return Flow::Done;
        }
        let Some(node) = self.node.clone() else {
            self.stop_drain(drain, "the node is gone");
            self.note_wait(format!("node {} not found", self.cfg.node));
            return Flow::Done;
        };
        let view = node_view(&node);
        let in_progress = view.annotation(keys::REBOOT_IN_PROGRESS) == Some(keys::TRUE);
        if !(in_progress && view.unschedulable) && self.drained {
            debug!(node = %view.name, "a new cycle will drain again");
            self.drained = false;
        }
        self.warn_if_malformed(&view);
        let state = NodeState::parse(&view).ok();
        let pods = self.gather_pods(state.as_ref()).await;
        let now = Utc::now();
        let pod_recovery_timeout =
            TimeDelta::from_std(self.cfg.pod_recovery_timeout).unwrap_or(TimeDelta::MAX);
        self.gate = evicted::evaluate(
            state.as_ref().and_then(|s| s.evicted_pods.as_ref()),
            pods.as_ref(),
            pod_recovery_timeout,
            now,
        );
        let step = next_step(&AgentInput {
            node: &view,
            host: self.host.as_ref(),
            info: &self.cfg.host_info,
            drained: self.drained,
            now,
            pods: pods.as_ref(),
            pod_recovery_timeout,
        });
        let keep_drain = in_progress
            && view.unschedulable
            && matches!(step, AgentStep::Drain | AgentStep::Patch(_));
        if !keep_drain {
            self.stop_drain(drain, "the decision changed");
        }
        match step {
            AgentStep::Patch(p) => self.write_decided(&p, &node).await,
            AgentStep::Drain => {
                if drain.is_none() {
                    info!(node = %view.name, grace_period_s = self.cfg.grace_period.as_secs_f64(), "draining");
                    self.drain_started = Some(Instant::now());
                    self.event(AgentEvent::DrainStarted {
                        grace_period: self.cfg.grace_period,
                    });
                    let client = self.client.clone();
                    let opts = self.cfg.drain_options();
                    *drain = Some(Box::pin(async move { drain::drain(client, &opts).await }));
                }
                self.last_wait = None;
                Flow::Done
            }
            AgentStep::Reboot => self.reboot(host).await,
            AgentStep::Wait(reason) => {
                self.note_wait(reason);
                Flow::Done
            }
        }
    }

    /// Writes a decided patch with the resourceVersion it was decided on.
    async fn write_decided(&mut self, p: &NodePatch, node: &Node) -> Flow {
        match self.write(p, node.resource_version().as_deref()).await {
            Ok(n) => {
                self.api_backoff.reset();
                self.report_write(&node_view(node), &n);
                self.node = Some(n);
                Flow::Again
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                debug!(node = %self.cfg.node, "the node changed since; reading it again");
                self.reread().await
            }
            Err(e) => {
                self.back_off("writing the node", &e);
                Flow::Done
            }
        }
    }

    async fn write(&self, p: &NodePatch, rv: Option<&str>) -> Result<Node, kube::Error> {
        info!(node = %self.cfg.node, patch = %p.merge_patch(), "patching the node");
        self.nodes.patch(p, rv).await
    }

    async fn reread(&mut self) -> Flow {
        match self.nodes.api().get_opt(&self.cfg.node).await {
            Ok(n) => {
                self.api_backoff.reset();
                self.node = n;
                Flow::Again
            }
            Err(e) => {
                self.back_off("reading the node", &e);
                Flow::Done
            }
        }
    }

    async fn reboot<H: Host>(&mut self, host: &H) -> Flow {
        let now = Instant::now();
        if self.reboot_not_before.is_some_and(|t| now < t) {
            return Flow::Done;
        }
        // Confirm on a fresh read: a stale view or an API outage never reboots.
        let fresh = match self.nodes.api().get(&self.cfg.node).await {
            Ok(n) => n,
            Err(e) => {
                self.back_off("reading the node before rebooting", &e);
                return Flow::Done;
            }
        };
        self.api_backoff.reset();
        let view = node_view(&fresh);
        let same =
            fresh.resource_version() == self.node.as_ref().and_then(|n| n.resource_version());
        self.node = Some(fresh);
        if !may_reboot(&view, self.drained) {
            return if same { Flow::Done } else { Flow::Again };
        }
        if let Some(at) = self.reboot_accepted_at {
            let msg = format!(
                "logind accepted the reboot {}s ago but the host is still up; asking again",
                at.elapsed().as_secs()
            );
            warn!(node = %view.name, "{msg}");
            self.record_reboot_error(&view, &msg).await;
        }
        info!(node = %view.name, boot_id = %view.boot_id, "rebooting");
        self.event(AgentEvent::Rebooting {
            boot_id: &view.boot_id,
        });
        // Give the Events so far a moment to be written before the machine goes down.
        self.events.flush(Duration::from_secs(2)).await;
        match host.reboot().await {
            Ok(()) => {
                info!(node = %view.name, "logind accepted the reboot; waiting to go down");
                self.reboot_backoff.reset();
                self.reboot_accepted_at = Some(Instant::now());
                self.reboot_not_before = Some(Instant::now() + self.cfg.reboot_timeout);
            }
            Err(e) => {
                let wait = self.reboot_backoff.next_delay();
                warn!(node = %view.name, error = %e, retry_in_ms = wait.as_millis() as u64, "reboot failed; retrying");
                self.record_reboot_error(&view, &e.to_string()).await;
                self.reboot_not_before = Some(Instant::now() + wait);
            }
        }
        Flow::Done
    }

    /// Writes `reboot-error` (informational: no resourceVersion precondition).
    async fn record_reboot_error(&mut self, view: &NodeView, error: &str) {
        self.event(AgentEvent::RebootFailed { error });
        let p = reboot_failed(view, error, Utc::now());
        match self.write(&p, None).await {
            Ok(n) => self.node = Some(n),
            Err(e) => {
                warn!(node = %view.name, error = %e, "cannot record the reboot error on the node")
            }
        }
    }

    async fn drain_done(&mut self, result: Result<DrainSummary, DrainError>) {
        let e = match result {
            Ok(summary) => {
                info!(
                    node = %self.cfg.node,
                    evicted = summary.evicted.len(),
                    deleted = summary.deleted.len(),
                    skipped = summary.skipped.len(),
                    "drain finished"
                );
                let took = self.drain_started.take().map(|t| t.elapsed());
                if let Some(d) = took {
                    self.cfg.metrics.drained(d);
                }
                self.event(AgentEvent::DrainFinished {
                    took,
                    summary: &summary,
                });
                self.drained = true;
                return;
            }
            Err(e) => e,
        };
        let reason = e.to_string();
        warn!(node = %self.cfg.node, error = %reason, "drain failed");
        self.drain_started = None;
        self.cfg.metrics.drain_failed(e.reason());
        self.event(AgentEvent::DrainFailed {
            error: &reason,
            action: self.cfg.drain_timeout_action,
        });
        for _ in 0..8 {
            let Some(node) = self.node.clone() else {
                return;
            };
            let view = node_view(&node);
            match protocol::agent::drain_failed(
                &view,
                &reason,
                self.cfg.drain_timeout_action,
                Utc::now(),
            ) {
                AgentStep::Patch(mut p) => {
                    p.minimize(&view);
                    if p.is_empty() {
                        return;
                    }
                    match self.write(&p, node.resource_version().as_deref()).await {
                        Ok(n) => {
                            self.api_backoff.reset();
                            self.node = Some(n);
                            return;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            if let Flow::Done = self.reread().await {
                                return;
                            }
                        }
                        Err(e) => {
                            // Not recorded: the next decision drains again (after backoff).
                            self.back_off("recording the drain failure", &e);
                            return;
                        }
                    }
                }
                AgentStep::Reboot => {
                    warn!(node = %view.name, "rebooting without a complete drain (--drain-timeout-action=reboot)");
                    self.drained = true;
                    return;
                }
                AgentStep::Wait(r) => {
                    self.note_wait(r);
                    return;
                }
                AgentStep::Drain => return,
            }
        }
    }

    fn stop_drain(&mut self, drain: &mut Option<DrainFuture>, why: &str) {
        if drain.take().is_some() {
            info!(node = %self.cfg.node, "drain stopped: {why}");
            self.drain_started = None;
            self.event(AgentEvent::DrainStopped { why });
        }
    }

    fn note_wait(&mut self, reason: String) {
        if self.last_wait.as_ref() != Some(&reason) {
            info!(node = %self.cfg.node, %reason, "waiting");
            self.last_wait = Some(reason);
        }
    }

    fn warn_if_malformed(&mut self, view: &NodeView) {
        match NodeState::parse(view) {
            Ok(_) => self.last_malformed = None,
            Err(e) => {
                let msg = e.to_string();
                if self.last_malformed.as_ref() != Some(&msg) {
                    warn!(
                        node = %e.node,
                        key = %e.key,
                        value = ?e.value,
                        kind = %e.kind,
                        expected = e.expected,
                        "malformed {} {} on this node: taking no action until it is fixed",
                        e.kind,
                        e.key
                    );
                    self.last_malformed = Some(msg);
                }
            }
        }
    }

    fn back_off(&mut self, what: &str, e: &kube::Error) {
        let wait = self.api_backoff.next_delay();
        warn!(node = %self.cfg.node, error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
        self.back_off_for(wait);
    }

    fn back_off_for(&mut self, wait: Duration) {
        self.retry_at = Some(Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
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

    #[test]
    fn older_events_are_skipped() {
        let at = |rv: &str| Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(is_older(&at("9"), &at("10")));
        assert!(is_older(&at("10"), &at("10")));
        assert!(!is_older(&at("11"), &at("10")));
        assert!(!is_older(&at("opaque"), &at("10")));
    }
}
