//! The agent's loop over its own Node: watch it, decide with [`next_step`], act.
//!
//! The loop is here; what each decision leads to lives beside it, by role: `writes` (patches
//! with a resourceVersion precondition, and the Events they cause), `draining` (starting,
//! stopping and finishing the drain), `reboot` (the confirmed logind call) and
//! `health_gate` (the evicted workloads' pods after the reboot).
//!
//! Everything runs inside [`crate::run`]'s span, which names the node, so log lines here do
//! not repeat it.

mod draining;
mod health_gate;
mod reboot;
mod writes;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use chrono::TimeDelta;
use futures::StreamExt;
use futures::stream::BoxStream;
use host::{Host, UpdateStatus};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use protocol::agent::{AgentInput, AgentStep, next_step, sentinel_outlived_reboot};
use protocol::evicted;
use protocol::keys;
use protocol::node::{NodeState, NodeView};
use shell::{Backoff, NodeWriter};
use telemetry::events::EventSink;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::drain::{DrainError, DrainSummary};
use crate::events::AgentEvent;
use crate::{AgentConfig, FIELD_MANAGER, node_view};

use self::health_gate::HealthGate;
use self::reboot::Reboots;

/// The running drain. Kept out of [`Agent`], which must stay `Sync`.
type DrainFuture = Pin<Box<dyn Future<Output = Result<DrainSummary, DrainError>> + Send>>;

/// Whether `decide` should go on deciding (the node changed) or stop until the next event.
enum Flow {
    Again,
    Done,
}

/// The watch's list of this node (at its start and after every reconnect) arrives as
/// `Init`, `InitApply`..., `InitDone`; what it found is only taken at `InitDone`, so a node
/// deleted while the watch was down is noticed.
enum Relist {
    /// No list in progress.
    Idle,
    /// A list in progress, with the node it returned so far (`None`: none yet).
    Listing(Option<Box<Node>>),
}

/// One agent's state between events.
pub(crate) struct Agent {
    client: Client,
    /// Reads and writes of its own Node, as [`FIELD_MANAGER`].
    nodes: NodeWriter,
    cfg: AgentConfig,
    /// Events on this node (best effort, never waits).
    events: EventSink,
    /// The newest Node seen (watch, write response or read).
    node: Option<Node>,
    /// The first list of the watch arrived: no decision before that.
    listed: bool,
    relist: Relist,
    /// update_engine's newest status.
    host: Option<UpdateStatus>,
    /// Whether `--reboot-sentinel` exists (`None`: not looked at yet, or no sentinel).
    sentinel: Option<bool>,
    /// The boot ID a sentinel that outlived its reboot was reported for (once each).
    sentinel_reported: Option<String>,
    /// A drain finished in this cycle (reset when the node is no longer cordoned and in
    /// progress, so a later cycle drains again).
    drained: bool,
    /// When the running drain started.
    drain_started: Option<Instant>,
    api_backoff: Backoff,
    /// No decisions before this (API backoff).
    retry_at: Option<Instant>,
    reboot: Reboots,
    gate: HealthGate,
    /// The last wait reason and malformed value logged, so each is logged once.
    last_wait: Option<String>,
    last_malformed: Option<String>,
}

impl Agent {
    pub(crate) fn new(client: Client, cfg: AgentConfig, events: EventSink) -> Self {
        Self {
            nodes: NodeWriter::new(client.clone(), FIELD_MANAGER),
            client,
            api_backoff: Backoff::new(Duration::from_millis(200), cfg.api_backoff_max),
            reboot: Reboots::new(cfg.reboot_backoff_max),
            cfg,
            events,
            node: None,
            listed: false,
            relist: Relist::Idle,
            host: None,
            sentinel: None,
            sentinel_reported: None,
            drained: false,
            drain_started: None,
            retry_at: None,
            gate: HealthGate::default(),
            last_wait: None,
            last_malformed: None,
        }
    }

    /// An Event on this node.
    fn event(&self, event: AgentEvent<'_>) {
        let uid = self.node.as_ref().and_then(|n| n.uid());
        event.publish(&self.events, &self.cfg.node, uid);
    }

    /// Watches the node and `host_rx`, deciding whenever something changed. Returns only if
    /// a stream it depends on ended.
    pub(crate) async fn run<H: Host>(
        &mut self,
        host: &H,
        mut host_rx: watch::Receiver<Option<UpdateStatus>>,
        mut sentinel_rx: watch::Receiver<Option<bool>>,
    ) -> anyhow::Result<()> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.cfg.node));
        let mut events: BoxStream<'static, Result<watcher::Event<Node>, watcher::Error>> =
            watcher(self.nodes.api().clone(), config)
                .default_backoff()
                .boxed();
        let mut drain: Option<DrainFuture> = None;
        let mut dirty = false;
        loop {
            if dirty && self.retry_at.is_none() {
                dirty = false;
                self.decide(host, &mut drain).await;
            }
            let retry_at = self.retry_at;
            let reboot_at = self.reboot.not_before;
            let recheck_at = self.gate.recheck_at;
            tokio::select! {
                ev = events.next() => match ev.context("the node watch ended")? {
                    Ok(ev) => dirty |= self.on_node_event(ev),
                    Err(e) => warn!(error = %e, "watching the node"),
                },
                changed = host_rx.changed() => {
                    changed.context("the host follower stopped")?;
                    self.host = host_rx.borrow_and_update().clone();
                    dirty = true;
                }
                changed = sentinel_rx.changed() => {
                    changed.context("the sentinel follower stopped")?;
                    self.sentinel = *sentinel_rx.borrow_and_update();
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
                    self.reboot.not_before = None;
                    dirty = true;
                }
                _ = tokio::time::sleep_until(recheck_at.unwrap_or_else(Instant::now)), if recheck_at.is_some() => {
                    self.gate.recheck_due();
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
                self.relist = Relist::Listing(None);
                false
            }
            watcher::Event::InitApply(n) => {
                if let Relist::Listing(found) = &mut self.relist {
                    *found = Some(Box::new(n));
                }
                false
            }
            watcher::Event::InitDone => {
                self.listed = true;
                self.cfg.metrics.set_synced(true);
                match std::mem::replace(&mut self.relist, Relist::Idle) {
                    Relist::Listing(Some(n)) => {
                        self.offer(*n);
                    }
                    Relist::Listing(None) | Relist::Idle => self.node = None,
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
        warn!("the node kept changing under every write; pausing");
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
        // With a sentinel, nothing is decided before it was looked at: deciding as if there
        // were none would forget the record of what it asked.
        let sentinel = match (&self.cfg.reboot_sentinel, self.sentinel) {
            (None, _) => None,
            (Some(_), None) => return Flow::Done,
            (Some(_), Some(present)) => Some(present),
        };
        let view = node_view(&node);
        self.report_stale_sentinel(&view, sentinel);
        let in_progress = view.annotation(keys::REBOOT_IN_PROGRESS) == Some(keys::TRUE);
        if !(in_progress && view.unschedulable) && self.drained {
            debug!("a new cycle will drain again");
            self.drained = false;
        }
        self.warn_if_malformed(&view);
        let state = NodeState::parse(&view).ok();
        let pods = self.gather_pods(state.as_ref()).await;
        let now = self.cfg.clock.now();
        let pod_recovery_timeout =
            TimeDelta::from_std(self.cfg.pod_recovery_timeout).unwrap_or(TimeDelta::MAX);
        self.gate.status = evicted::evaluate(
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
            options: self.cfg.node_options,
            sentinel,
        });
        // The drain goes on while the node stays cordoned for it and the decision is still
        // to drain (or to record something on the way).
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
                    *drain = Some(self.start_drain());
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

    /// A sentinel still there after the reboot it asked for is not obeyed again: said once
    /// per boot it asked in, as a Warning Event and a log line.
    fn report_stale_sentinel(&mut self, view: &NodeView, sentinel: Option<bool>) {
        let Some(asked_in) = sentinel_outlived_reboot(view, sentinel) else {
            return;
        };
        if self.sentinel_reported.as_deref() == Some(asked_in) {
            return;
        }
        let path = self.cfg.reboot_sentinel.as_deref().unwrap_or(Path::new(""));
        warn!(
            path = %path.display(),
            asked_in_boot = asked_in,
            "the reboot sentinel is still there after the reboot it asked for; not rebooting again until it is removed"
        );
        self.event(AgentEvent::SentinelOutlivedReboot {
            path,
            asked_in_boot: asked_in,
        });
        self.sentinel_reported = Some(asked_in.to_string());
    }

    fn note_wait(&mut self, reason: String) {
        if self.last_wait.as_ref() != Some(&reason) {
            info!(%reason, "waiting");
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
        warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
        self.back_off_for(wait);
    }

    fn back_off_for(&mut self, wait: Duration) {
        self.retry_at = Some(Instant::now() + wait);
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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
