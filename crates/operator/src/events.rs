//! What the leader reports about the rollout: Kubernetes Events on the Nodes (and on the
//! Lease when a replica becomes leader), `--notify-url` notifications, and the metrics
//! computed from its node cache.
//!
//! [`Observer::observe`] runs on every decision with the nodes the decision was made on. It
//! sets `fluo_nodes{state}` and `fluo_reboot_window_open`, and compares each node with how
//! it was at the previous decision: every change of the protocol state is one Event (and
//! counter, and notification). The first decision of a term only records the state, so a
//! new leader does not repeat what its predecessor reported. All of it is best effort and
//! never waits: Events and notifications go through bounded queues.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use protocol::keys;
use protocol::node::{NodeState, NodeView, format_time};
use protocol::operator::{ClusterInputs, Decision, OperatorConfig, failure_backoff};
use protocol::phase::Phase;
use telemetry::events::{EventSink, node_ref};

use crate::metrics::Metrics;
use crate::notify::{self, Notification, Notifier};
use crate::reconcile::CachedNode;

/// What every term of one replica reports through.
pub(crate) struct Reporter {
    pub(crate) events: EventSink,
    pub(crate) notifier: Option<Notifier>,
    pub(crate) metrics: Metrics,
    pub(crate) lease: ObjectReference,
    pub(crate) identity: String,
}

impl Reporter {
    fn event(
        &self,
        node: &str,
        uid: Option<String>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.events
            .publish(node_ref(node, uid), type_, reason, action, note);
    }

    fn notify(&self, event: &'static str, node: &str, reason: String, now: DateTime<Utc>) {
        if let Some(n) = &self.notifier {
            n.send(Notification {
                event: event.to_string(),
                node: node.to_string(),
                reason,
                time: format_time(now),
            });
        }
    }
}

/// A node's protocol state as last seen.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    needed: bool,
    granted: bool,
    in_progress: bool,
    before: bool,
    after: bool,
    stuck: Option<String>,
    /// Holds a slot `--stuck-node-action=release` gave back.
    released: bool,
    blocker: Option<&'static str>,
    granted_at: Option<DateTime<Utc>>,
    /// The round that saw it last (entries of nodes gone are dropped).
    round: u64,
}

/// One leader term's reporting state. Creating it sets `fluo_operator_leader` to 1 and
/// writes the leader election Event; dropping it (the term ended) zeroes the leader's
/// gauges.
pub(crate) struct Observer {
    r: Arc<Reporter>,
    /// None until the first decision of the term. Updated in place: a round allocates
    /// only for nodes new to it. Looked up for every node in every round, so with a fast
    /// hash (SipHash was a fifth of the Events' CPU at 5,000 nodes).
    seen: Option<FastMap<String, Seen>>,
    round: u64,
    problems: HashMap<String, String>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.r.metrics.reset_leader_view();
    }
}

fn short(key: &str) -> &str {
    key.strip_prefix(keys::PREFIX).unwrap_or(key)
}

/// Maps looked up once per node in every round: foldhash (randomly seeded per process, so
/// node names cannot be chosen to collide) instead of the far slower SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Whether `decision` picks `node` this time (grants it or labels it `before-reboot`).
fn picked(decision: &Decision) -> HashSet<&str, foldhash::fast::RandomState> {
    decision
        .patches
        .iter()
        .filter(|p| {
            p.annotations.get(keys::REBOOT_OK) == Some(&Some(keys::TRUE.to_string()))
                || p.labels.get(keys::BEFORE_REBOOT) == Some(&Some(keys::TRUE.to_string()))
        })
        .map(|p| p.node.as_str())
        .collect()
}

/// Slot use after the decision, to tell which limit holds a node back.
struct Capacity<'a> {
    max: usize,
    held: usize,
    zone_max: Option<protocol::operator::MaxRebooting>,
    zone_nodes: BTreeMap<Option<&'a str>, usize>,
    zone_held: BTreeMap<Option<&'a str>, usize>,
    /// `--min-reboot-interval` runs until then.
    interval_until: Option<DateTime<Utc>>,
    /// The reboot window is open (worked out once, not for each waiting node).
    window_open: bool,
}

impl<'a> Capacity<'a> {
    fn new(
        managed: &[&'a CachedNode],
        decision: &Decision,
        cfg: &'a OperatorConfig,
        now: DateTime<Utc>,
    ) -> Self {
        let patches: HashMap<&str, _> = decision
            .patches
            .iter()
            .map(|p| (p.node.as_str(), p))
            .collect();
        let mut zone_nodes = BTreeMap::new();
        let mut zone_held = BTreeMap::new();
        let mut held = 0;
        for c in managed {
            let v = &c.node.view;
            let z = cfg.limit_zone_of(v);
            *zone_nodes.entry(z).or_default() += 1;
            let state = c.node.state.as_ref().ok();
            let counts = match patches.get(v.name.as_str()) {
                Some(p) => cfg.counts_against_max_after(v, state, p),
                None => cfg.counts_against_max_parsed(v, state),
            };
            if counts {
                held += 1;
                *zone_held.entry(z).or_default() += 1;
            }
        }
        let interval = cfg.min_reboot_interval;
        let last_turn = managed
            .iter()
            .filter_map(|c| c.node.state.as_ref().ok())
            .flat_map(|s| [s.picked_at, s.released_at, s.granted_at])
            .flatten()
            .chain(picked(decision).iter().map(|_| now))
            .max();
        let interval_until = last_turn
            .filter(|_| interval > TimeDelta::zero())
            .and_then(|t| t.checked_add_signed(interval))
            .filter(|until| now < *until);
        Capacity {
            window_open: cfg.window_open(now),
            max: cfg.max_rebooting.resolve(managed.len()),
            held,
            zone_max: cfg.max_rebooting_per_zone,
            zone_nodes,
            zone_held,
            interval_until,
        }
    }
}

/// Why a node that needs a reboot and holds no slot was not picked. Found for every waiting
/// node in every round (thousands at the start of a rollout), so it only points at what
/// the sentence needs; the sentence is written when an Event or notification uses it.
#[derive(Debug, Clone, Copy)]
enum Blocked<'a> {
    Paused,
    ClusterPaused,
    Alerts(&'a [String]),
    Pods(&'a [String]),
    Window,
    NotReady,
    Backoff {
        until: DateTime<Utc>,
        reason: &'a str,
    },
    Interval(DateTime<Utc>),
    Capacity {
        held: usize,
        max: usize,
    },
    ZoneCapacity {
        held: usize,
        max: usize,
        zone: Option<&'a str>,
    },
    Waiting {
        held: usize,
        max: usize,
    },
}

impl Blocked<'_> {
    /// The `blocker` label of `fluo_grants_blocked_total`.
    fn label(&self) -> &'static str {
        match self {
            Blocked::Paused => "paused",
            Blocked::ClusterPaused => "cluster_paused",
            Blocked::Alerts(_) => "alerts",
            Blocked::Pods(_) => "pods",
            Blocked::Window => "window",
            Blocked::NotReady => "not_ready",
            Blocked::Backoff { .. } => "backoff",
            Blocked::Interval(_) => "interval",
            Blocked::Capacity { .. } | Blocked::Waiting { .. } => "capacity",
            Blocked::ZoneCapacity { .. } => "zone_capacity",
        }
    }

    /// The sentence for the Event.
    fn note(&self, cfg: &OperatorConfig, now: DateTime<Utc>) -> String {
        match *self {
            Blocked::Paused => format!(
                "the node is paused ({} is true)",
                short(keys::REBOOT_PAUSED)
            ),
            Blocked::ClusterPaused => {
                "reboots are paused cluster-wide (the operator's Lease is annotated paused=true)"
                    .into()
            }
            Blocked::Alerts(b) => format!("blocked cluster-wide: {}", b.join("; ")),
            Blocked::Pods(b) => format!("blocked: {}", b.join("; ")),
            Blocked::Window => {
                let next = cfg
                    .window_next_change(now)
                    .map(|t| format!(" (it opens at {})", format_time(t)))
                    .unwrap_or_default();
                format!("the reboot window is closed{next}")
            }
            Blocked::NotReady => "the node is not Ready".into(),
            Blocked::Backoff { until, reason } => format!(
                "backing off after a failed drain until {} ({reason})",
                format_time(until)
            ),
            Blocked::Interval(until) => format!(
                "--min-reboot-interval: the next node may be picked at {}",
                format_time(until)
            ),
            Blocked::Capacity { held, max } => {
                format!("all {held} of {max} reboot slots are in use (--max-rebooting-nodes)")
            }
            Blocked::ZoneCapacity { held, max, zone } => format!(
                "{held} of {max} reboot slots of zone {} are in use (--max-rebooting-nodes-per-zone)",
                zone.unwrap_or("(no zone label)")
            ),
            Blocked::Waiting { held, max } => {
                format!("waiting for a reboot slot ({held} of {max} in use)")
            }
        }
    }
}

/// Why a node that needs a reboot and holds no slot was not picked. Mirrors the order of
/// `protocol::operator::decide_parsed`'s checks.
fn blocker<'a>(
    s: &'a NodeState,
    view: &'a NodeView,
    cfg: &OperatorConfig,
    inputs: &'a ClusterInputs,
    cap: &Capacity,
    now: DateTime<Utc>,
) -> Blocked<'a> {
    if s.reboot_paused {
        return Blocked::Paused;
    }
    if inputs.paused {
        return Blocked::ClusterPaused;
    }
    if !inputs.blockers.is_empty() {
        return Blocked::Alerts(&inputs.blockers);
    }
    if let Some(b) = inputs.node_blockers.get(&s.name).filter(|b| !b.is_empty()) {
        return Blocked::Pods(b);
    }
    if !cap.window_open {
        return Blocked::Window;
    }
    if !s.ready {
        return Blocked::NotReady;
    }
    if let Some(f) = &s.drain_failure
        && let Some(until) = f.at.checked_add_signed(failure_backoff(s.reboot_failures))
        && now < until
    {
        return Blocked::Backoff {
            until,
            reason: &f.reason,
        };
    }
    if let Some(until) = cap.interval_until {
        return Blocked::Interval(until);
    }
    let (held, max) = (cap.held, cap.max);
    if held >= max {
        return Blocked::Capacity { held, max };
    }
    if let Some(m) = cap.zone_max {
        let zone = cfg.zone_of(view);
        let zmax = m.resolve(cap.zone_nodes.get(&zone).copied().unwrap_or(0));
        let zheld = cap.zone_held.get(&zone).copied().unwrap_or(0);
        if zheld >= zmax {
            return Blocked::ZoneCapacity {
                held: zheld,
                max: zmax,
                zone,
            };
        }
    }
    Blocked::Waiting { held, max }
}

fn list(hooks: &[String]) -> String {
    hooks.join(", ")
}

impl Observer {
    pub(crate) fn new(r: Arc<Reporter>) -> Self {
        r.metrics.set_leader(true);
        r.events.publish(
            r.lease.clone(),
            EventType::Normal,
            "LeaderElection",
            "Lead",
            format!("{} became leader", r.identity),
        );
        Observer {
            r,
            seen: None,
            round: 0,
            problems: HashMap::new(),
        }
    }

    /// Reports on the nodes `decision` was made on (in name order), from their states as
    /// parsed when they changed.
    pub(crate) fn observe(
        &mut self,
        nodes: &[Arc<CachedNode>],
        decision: &Decision,
        cfg: &OperatorConfig,
        inputs: &ClusterInputs,
        now: DateTime<Utc>,
    ) {
        let r = self.r.clone();
        let managed: Vec<&CachedNode> = nodes
            .iter()
            .map(|c| &**c)
            .filter(|c| cfg.manages(&c.node.view))
            .collect();
        // Stuck as of this decision (its `stuck-since` is written by it).
        let stuck: FastMap<&str, &str> = decision
            .stuck
            .iter()
            .map(|s| (s.node.as_str(), s.reason.as_str()))
            .collect();
        let mut counts: BTreeMap<Phase, i64> = BTreeMap::new();
        for c in &managed {
            let Ok(s) = &c.node.state else { continue };
            let phase = if stuck.contains_key(c.name()) {
                Phase::Stuck
            } else {
                Phase::of(s)
            };
            *counts.entry(phase).or_default() += 1;
        }
        r.metrics.set_nodes(&counts.into_iter().collect::<Vec<_>>());

        self.report_problems(decision, nodes);

        let picked = picked(decision);
        let cap = Capacity::new(&managed, decision, cfg, now);
        r.metrics.set_window_open(cap.window_open);
        self.round += 1;
        let round = self.round;
        // The first decision of a term only records.
        let report = self.seen.is_some();
        let seen = self.seen.get_or_insert_with(FastMap::default);
        for c in &managed {
            let Ok(s) = &c.node.state else { continue };
            let v = &c.node.view;
            let name = v.name.as_str();
            let blocked = (s.reboot_needed && !s.holds_slot() && !picked.contains(name))
                .then(|| blocker(s, v, cfg, inputs, &cap, now));
            let cur = Seen {
                needed: s.reboot_needed,
                granted: s.reboot_ok,
                in_progress: s.reboot_in_progress,
                before: s.before_reboot,
                after: s.after_reboot,
                stuck: stuck
                    .get(name)
                    .map(|r| r.to_string())
                    .or_else(|| s.stuck_since.as_ref().map(|st| st.reason.clone())),
                released: decision
                    .released
                    .binary_search_by(|n| n.as_str().cmp(name))
                    .is_ok(),
                blocker: blocked.as_ref().map(Blocked::label),
                granted_at: s.granted_at,
                round,
            };
            match seen.get_mut(name) {
                Some(old) => {
                    if report {
                        transitions(&r, v, c.uid.as_deref(), old, &cur, blocked, cfg, &cap, now);
                    }
                    *old = cur;
                }
                None => {
                    seen.insert(name.to_string(), cur);
                }
            }
        }
        seen.retain(|_, s| s.round == round);
    }

    /// A Warning Event for each node whose malformed values changed.
    fn report_problems(&mut self, decision: &Decision, nodes: &[Arc<CachedNode>]) {
        let mut now: HashMap<String, String> = HashMap::new();
        for p in &decision.problems {
            now.insert(p.node.clone(), p.message.clone());
        }
        for (node, msg) in &now {
            if self.problems.get(node) != Some(msg) {
                let uid = nodes
                    .binary_search_by(|c| c.name().cmp(node))
                    .ok()
                    .and_then(|i| nodes[i].uid.clone());
                self.r.event(
                    node,
                    uid,
                    EventType::Warning,
                    "InvalidProtocolValue",
                    "Skip",
                    format!("leaving the node alone until this is fixed: {msg}"),
                );
            }
        }
        self.problems = now;
    }
}

/// The Events, metrics and notifications of one node's changes since the last round.
#[allow(clippy::too_many_arguments)]
fn transitions(
    r: &Reporter,
    v: &NodeView,
    uid: Option<&str>,
    old: &Seen,
    cur: &Seen,
    blocked: Option<Blocked<'_>>,
    cfg: &OperatorConfig,
    cap: &Capacity,
    now: DateTime<Utc>,
) {
    let name = v.name.as_str();
    let ev = |type_, reason: &str, action: &str, note: String| {
        r.event(name, uid.map(str::to_string), type_, reason, action, note)
    };
    use EventType::{Normal, Warning};
    if cur.needed && !old.needed {
        let version = v
            .annotation(keys::NEW_VERSION)
            .filter(|s| !s.is_empty())
            .map(|s| format!(" (update to {s})"))
            .unwrap_or_default();
        ev(
            Normal,
            "RebootNeeded",
            "Observe",
            format!("the node needs a reboot{version}"),
        );
    }
    if cur.before && !old.before {
        ev(
            Normal,
            "BeforeRebootHooks",
            "Pick",
            format!(
                "picked for a reboot; waiting for the before-reboot annotations: {}",
                list(&cfg.before_reboot_annotations)
            ),
        );
    }
    if cur.granted && !old.granted {
        r.metrics.granted();
        let until = v
            .annotation(keys::GRANT_EXPIRES)
            .map(|t| format!(", to start before {t}"))
            .unwrap_or_default();
        let note = format!(
            "reboot granted ({} of {} slots in use{until})",
            cap.held, cap.max
        );
        ev(Normal, "RebootGranted", "Grant", note.clone());
        r.notify(notify::GRANT, name, note, now);
    }
    if cur.in_progress && !old.in_progress {
        r.notify(
            notify::REBOOT,
            name,
            "the agent started draining and rebooting the node".into(),
            now,
        );
    }
    if cur.after && !old.after {
        ev(
            Normal,
            "AfterRebootHooks",
            "Wait",
            format!(
                "back from the reboot; waiting for the after-reboot annotations: {}",
                list(&cfg.after_reboot_annotations)
            ),
        );
    }
    if old.granted && !cur.granted {
        if !cur.needed {
            let took = old.granted_at.and_then(|g| (now - g).to_std().ok());
            r.metrics.completed(took);
            let took = took
                .map(|d| format!(" {}s after the grant", d.as_secs()))
                .unwrap_or_default();
            let note = format!("rebooted and back: reboot slot released{took}");
            ev(Normal, "RebootReleased", "Release", note.clone());
            r.notify(notify::BACK, name, note, now);
        } else {
            let why = if let Some(f) = v.annotation(keys::DRAIN_FAILURE) {
                format!("the drain failed: {f}")
            } else if v.annotation(keys::REBOOT_PAUSED) == Some(keys::TRUE) {
                "the node was paused".into()
            } else if !cfg.window_open(now) {
                "the reboot window closed before the reboot started".into()
            } else if let Some(b) = blocked {
                b.note(cfg, now)
            } else {
                "the grant expired or was withdrawn before the reboot started".into()
            };
            let failed = v.annotation(keys::DRAIN_FAILURE).is_some();
            let type_ = if failed { Warning } else { Normal };
            let note = format!("reboot grant withdrawn: {why}");
            ev(type_, "GrantWithdrawn", "Withdraw", note.clone());
            let event = if failed {
                notify::DRAIN_FAILED
            } else {
                notify::GRANT_WITHDRAWN
            };
            r.notify(event, name, note, now);
        }
    } else if old.before && !cur.before && !cur.granted {
        ev(
            Normal,
            "GrantWithdrawn",
            "Withdraw",
            format!(
                "no longer waiting for the before-reboot annotations: {}",
                blocked.map_or_else(
                    || "the node is no longer rebootable".to_string(),
                    |b| b.note(cfg, now)
                )
            ),
        );
    }
    if let Some(why) = &cur.stuck
        && old.stuck.is_none()
    {
        ev(Warning, "NodeStuck", "Timeout", why.clone());
        r.notify(notify::STUCK, name, why.clone(), now);
    }
    if cur.released && !old.released {
        // The stuck node keeps its marks; only the count changes.
        let note = format!(
            "stuck and down: its reboot slot no longer counts against --max-rebooting-nodes \
             (--stuck-node-action=release), so the next node may reboot while this one stays down \
             ({} of {} slots in use)",
            cap.held, cap.max
        );
        ev(Warning, "SlotReleased", "Release", note.clone());
        r.notify(notify::SLOT_RELEASED, name, note, now);
    }
    if cur.blocker.is_some()
        && cur.blocker != old.blocker
        && let Some(b) = blocked
    {
        r.metrics.blocked(b.label());
        ev(
            Normal,
            "RebootBlocked",
            "Block",
            format!("cannot grant a reboot now: {}", b.note(cfg, now)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::node::NodeView;

    fn state(anns: &[(&str, &str)], labels: &[(&str, &str)], ready: bool) -> NodeState {
        let v = NodeView {
            name: "n".into(),
            annotations: anns
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            boot_id: "b2".into(),
            ready,
            ..Default::default()
        };
        NodeState::parse(&v).unwrap()
    }

    #[test]
    fn node_states() {
        use keys::*;
        let t = "true";
        let of = |s: &NodeState| Phase::of(s).as_str();
        assert_eq!(of(&state(&[], &[], true)), "idle");
        assert_eq!(of(&state(&[(REBOOT_NEEDED, t)], &[], true)), "needs_reboot");
        assert_eq!(
            of(&state(&[(REBOOT_NEEDED, t), (REBOOT_PAUSED, t)], &[], true)),
            "paused"
        );
        assert_eq!(
            of(&state(&[(REBOOT_NEEDED, t), (REBOOT_OK, t)], &[], true)),
            "granted"
        );
        assert_eq!(
            of(&state(&[(REBOOT_NEEDED, t)], &[(BEFORE_REBOOT, t)], true)),
            "waiting_for_before_hooks"
        );
        assert_eq!(
            of(&state(&[(REBOOT_OK, t)], &[(AFTER_REBOOT, t)], true)),
            "waiting_for_after_hooks"
        );
        let record = r#"{"back":"2024-05-01T12:00:00Z","workloads":[]}"#;
        assert_eq!(
            of(&state(
                &[(REBOOT_OK, t), (EVICTED_PODS, record)],
                &[(AFTER_REBOOT, t)],
                true
            )),
            "waiting_for_pods"
        );
        let in_progress = [
            (REBOOT_NEEDED, t),
            (REBOOT_OK, t),
            (REBOOT_IN_PROGRESS, t),
            (REBOOT_BOOT_ID, "b2"),
        ];
        assert_eq!(of(&state(&in_progress, &[], true)), "draining");
        assert_eq!(of(&state(&in_progress, &[], false)), "rebooting");
        assert_eq!(of(&state(&[(REBOOT_OK, t)], &[], false)), "rebooting");
        assert_eq!(
            of(&state(
                &[(REBOOT_OK, t), (STUCK_SINCE, "2024-01-01T00:00:00Z late")],
                &[],
                false
            )),
            "stuck"
        );
    }
}
