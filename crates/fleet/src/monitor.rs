//! A watch-based monitor of every Node: the peaks of slot holders, grants and
//! unavailable nodes over every state the cluster passed through (each watch
//! event is one change, so every intermediate state is seen), and per node a
//! timeline of its reboot cycles.
//!
//! Times are seconds since the monitor started ([`Monitor::now`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use protocol::keys;
use protocol::node::{NodeState, NodeView};
use serde::Serialize;
use tokio::task::JoinHandle;

/// The zone label the monitor reports.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Maxima over every state the cluster passed through.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Peaks {
    /// Nodes holding a reboot slot (see `NodeView::holds_slot`).
    pub slot_holders: usize,
    /// Nodes granted (`reboot-ok=true`).
    pub granted: usize,
    /// Nodes unavailable: unschedulable (not counting the excluded ones),
    /// reboot-in-progress or NotReady.
    pub disrupted: usize,
    /// Per node: the boot IDs seen, in order.
    pub boot_ids: BTreeMap<String, Vec<String>>,
    /// A log of the unavailable nodes each time the peak rose, for messages.
    pub history: Vec<String>,
}

/// One reboot cycle of a node, from `reboot-needed=true` (or a grant, or a
/// reboot in progress, whichever is seen first) until the node holds no slot
/// and needs nothing any more. Times in seconds on the monitor's clock.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Cycle {
    /// `reboot-needed=true` first seen.
    pub needed: Option<f64>,
    /// `reboot-ok=true` first seen (the grant).
    pub granted: Option<f64>,
    /// `reboot-in-progress=true` first seen: the agent cordoned the node and
    /// starts draining.
    pub drain_start: Option<f64>,
    /// The node went NotReady: the agent's drain had finished and it asked logind to reboot
    /// (so this is also the end of the drain).
    pub reboot_start: Option<f64>,
    /// Ready again with a new boot ID.
    pub back: Option<f64>,
    /// The cycle ended: no slot held, nothing needed (the operator released the grant).
    pub released: Option<f64>,
    /// New boot IDs seen during this cycle (1 for a good cycle).
    pub reboots: u32,
    #[serde(skip)]
    schedulable_before: bool,
}

impl Cycle {
    /// Whether the cycle has ended.
    pub fn is_closed(&self) -> bool {
        self.released.is_some()
    }
}

/// Where a node is, for progress displays: its [`protocol::phase::Phase`] grouped into the
/// steps of a rollout, plus what only the monitor knows (`Done`: it saw the node reboot
/// and be released).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Nothing to do (no reboot needed, none done).
    Idle,
    /// Wants a reboot, not granted yet: `needs_reboot`, `paused`, `waiting_for_before_hooks`.
    Waiting,
    /// Granted, the agent has not started: `granted`.
    Granted,
    /// Cordoned, pods being evicted: `draining`.
    Draining,
    /// Down, or back but not released yet: `rebooting`, `waiting_for_pods`,
    /// `waiting_for_after_hooks`; or NotReady, or seen rebooting, during the cycle.
    Rebooting,
    /// Rebooted, released, nothing pending.
    Done,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Idle,
        Phase::Waiting,
        Phase::Granted,
        Phase::Draining,
        Phase::Rebooting,
        Phase::Done,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Waiting => "waiting",
            Phase::Granted => "granted",
            Phase::Draining => "draining",
            Phase::Rebooting => "rebooting",
            Phase::Done => "done",
        }
    }

    /// The phase of a node in an open cycle, from its protocol phase. A stuck node is shown
    /// where it is stuck: `stuck-since` is the operator's clock running out, not a step.
    fn in_cycle(v: &NodeView) -> Phase {
        use protocol::phase::Phase as P;
        let Ok(mut s) = NodeState::parse(v) else {
            // The operator leaves a malformed node alone until a person fixes it.
            return Phase::Waiting;
        };
        s.stuck_since = None;
        match P::of(&s) {
            P::Idle | P::NeedsReboot | P::Paused | P::WaitingForBeforeHooks => Phase::Waiting,
            P::Granted => Phase::Granted,
            P::Draining => Phase::Draining,
            // Stuck is not reached (cleared above).
            P::Rebooting | P::WaitingForPods | P::WaitingForAfterHooks | P::Stuck => {
                Phase::Rebooting
            }
        }
    }
}

/// How many nodes are in each [`Phase`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub idle: usize,
    pub waiting: usize,
    pub granted: usize,
    pub draining: usize,
    pub rebooting: usize,
    pub done: usize,
}

impl Counts {
    pub fn get(&self, p: Phase) -> usize {
        match p {
            Phase::Idle => self.idle,
            Phase::Waiting => self.waiting,
            Phase::Granted => self.granted,
            Phase::Draining => self.draining,
            Phase::Rebooting => self.rebooting,
            Phase::Done => self.done,
        }
    }

    fn add(&mut self, p: Phase) {
        *match p {
            Phase::Idle => &mut self.idle,
            Phase::Waiting => &mut self.waiting,
            Phase::Granted => &mut self.granted,
            Phase::Draining => &mut self.draining,
            Phase::Rebooting => &mut self.rebooting,
            Phase::Done => &mut self.done,
        } += 1;
    }

    /// Nodes in a reboot cycle (waiting, granted, draining or rebooting).
    pub fn busy(&self) -> usize {
        self.waiting + self.granted + self.draining + self.rebooting
    }
}

/// What the monitor knows of one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeTrack {
    pub name: String,
    /// The `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
    pub phase: Phase,
    /// Reboot cycles, oldest first; the last one may be open.
    pub cycles: Vec<Cycle>,
    /// Boot IDs seen, in order.
    pub boot_ids: Vec<String>,
    /// The `version` label (the agent's view of the running OS version).
    pub version: Option<String>,
    /// `spec.unschedulable` now.
    pub unschedulable: bool,
    /// Unavailable now (see [`Peaks::disrupted`]).
    pub unavailable: bool,
    /// The node was cordoned during a reboot cycle after being schedulable
    /// before it, and is still cordoned.
    pub cordoned_by_cycle: bool,
    /// An agent has written the protocol's annotations (`reboot-needed`).
    pub agent_seen: bool,
}

impl NodeTrack {
    fn new(name: &str) -> NodeTrack {
        NodeTrack {
            name: name.to_string(),
            zone: None,
            phase: Phase::Idle,
            cycles: Vec::new(),
            boot_ids: Vec::new(),
            version: None,
            unschedulable: false,
            unavailable: false,
            cordoned_by_cycle: false,
            agent_seen: false,
        }
    }

    /// Reboots seen (new boot IDs after the first one).
    pub fn reboots(&self) -> usize {
        self.boot_ids.len().saturating_sub(1)
    }

    /// The open cycle, if any.
    pub fn open_cycle(&self) -> Option<&Cycle> {
        self.cycles.last().filter(|c| !c.is_closed())
    }

    fn update(&mut self, v: &NodeView, unavailable: bool, t: f64) {
        let is_true = |k| v.annotation(k) == Some(keys::TRUE);
        let needed = is_true(keys::REBOOT_NEEDED);
        let ok = is_true(keys::REBOOT_OK);
        let in_progress = is_true(keys::REBOOT_IN_PROGRESS);
        let was_unschedulable = self.unschedulable;
        let new_boot = !v.boot_id.is_empty() && self.boot_ids.last() != Some(&v.boot_id);
        let rebooted = new_boot && !self.boot_ids.is_empty();
        if new_boot {
            self.boot_ids.push(v.boot_id.clone());
        }
        self.zone = v.label(ZONE_LABEL).map(str::to_string);
        self.version = v.label(keys::LABEL_VERSION).map(str::to_string);
        self.agent_seen |= v.annotation(keys::REBOOT_NEEDED).is_some();
        self.unschedulable = v.unschedulable;
        self.unavailable = unavailable;

        if self.open_cycle().is_none() && (needed || ok || in_progress) {
            self.cycles.push(Cycle {
                schedulable_before: !was_unschedulable,
                ..Cycle::default()
            });
        }
        if let Some(c) = self.cycles.last_mut().filter(|c| !c.is_closed()) {
            if needed && c.needed.is_none() {
                c.needed = Some(t);
            }
            if ok && c.granted.is_none() {
                c.granted = Some(t);
            }
            if in_progress && c.drain_start.is_none() {
                c.drain_start = Some(t);
            }
            if !v.ready && c.reboot_start.is_none() && c.drain_start.is_some() {
                c.reboot_start = Some(t);
            }
            if rebooted {
                c.reboots += 1;
                c.back = None;
                c.reboot_start.get_or_insert(t);
            }
            if c.reboots > 0 && v.ready && c.back.is_none() {
                c.back = Some(t);
            }
            if v.unschedulable && !was_unschedulable && c.schedulable_before {
                self.cordoned_by_cycle = true;
            }
            if !v.holds_slot() && !needed && !in_progress && !ok {
                c.released = Some(t);
            }
        }
        if !v.unschedulable {
            self.cordoned_by_cycle = false;
        }
        self.phase = match self.open_cycle() {
            None if self.cycles.iter().any(|c| c.reboots > 0) => Phase::Done,
            None => Phase::Idle,
            // What the monitor saw itself: down, or a new boot ID in this cycle.
            Some(c) if !v.ready || c.reboots > 0 => Phase::Rebooting,
            Some(_) => Phase::in_cycle(v),
        };
    }
}

/// Everything the monitor knows at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Seconds since the monitor started.
    pub now: f64,
    /// The wall clock when the monitor started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// By name.
    pub nodes: Vec<NodeTrack>,
    pub counts: Counts,
    pub peaks: Peaks,
    /// (time, unavailable nodes) at every change of the number.
    pub concurrency: Vec<(f64, usize)>,
}

impl Snapshot {
    pub fn node(&self, name: &str) -> Option<&NodeTrack> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

struct State {
    views: BTreeMap<String, NodeView>,
    tracks: BTreeMap<String, NodeTrack>,
    peaks: Peaks,
    concurrency: Vec<(f64, usize)>,
    /// What `views` add up to, kept in step with each change: recounting every node on
    /// every event made the monitor fall seconds behind its watch at 1,000 nodes.
    holders: usize,
    granted: usize,
    disrupted: BTreeSet<String>,
}

/// Watches all nodes until dropped.
pub struct Monitor {
    state: Arc<Mutex<State>>,
    origin: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    changes: tokio::sync::watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Monitor {
    /// Watches all nodes; `cordoned_by_admin` nodes' cordons are not counted
    /// as unavailable. Panics if the watch does not start within 20 s.
    pub async fn start(client: kube::Client, cordoned_by_admin: &[&str]) -> Monitor {
        Monitor::try_start(client, cordoned_by_admin)
            .await
            .expect("monitor's watch starts")
    }

    /// [`Monitor::start`], with an error instead of a panic.
    pub async fn try_start(
        client: kube::Client,
        cordoned_by_admin: &[&str],
    ) -> anyhow::Result<Monitor> {
        let origin = Instant::now();
        let started_at = chrono::Utc::now();
        let state = Arc::new(Mutex::new(State::new()));
        let excluded: BTreeSet<String> = cordoned_by_admin.iter().map(|s| s.to_string()).collect();
        let (changes_tx, changes) = tokio::sync::watch::channel(0u64);
        let st = state.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut init: BTreeMap<String, NodeView> = BTreeMap::new();
            let stream =
                watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let t = origin.elapsed().as_secs_f64();
                let mut s = st.lock().unwrap();
                // The node that changed; None: all of them.
                let mut changed = None;
                match ev {
                    Ok(watcher::Event::Apply(n)) => {
                        let v = protocol::k8s::node_view(&n);
                        changed = Some(v.name.clone());
                        s.set_view(&excluded, &v.name.clone(), Some(v));
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        let v = protocol::k8s::node_view(&n);
                        s.set_view(&excluded, &v.name, None);
                        changed = Some(v.name);
                    }
                    Ok(watcher::Event::Init) => {
                        init.clear();
                        continue;
                    }
                    Ok(watcher::Event::InitApply(n)) => {
                        let v = protocol::k8s::node_view(&n);
                        init.insert(v.name.clone(), v);
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        s.relist(&excluded, std::mem::take(&mut init));
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(_) => continue,
                }
                s.observe(changed.as_deref(), t);
                drop(s);
                changes_tx.send_modify(|c| *c += 1);
            }
        });
        match tokio::time::timeout(Duration::from_secs(20), ready_rx).await {
            Ok(Ok(())) => {}
            _ => {
                task.abort();
                anyhow::bail!("the monitor's watch of Nodes did not start within 20 s");
            }
        }
        Ok(Monitor {
            state,
            origin,
            started_at,
            changes,
            task,
        })
    }

    /// The peaks so far.
    pub fn peaks(&self) -> Peaks {
        self.state.lock().unwrap().peaks.clone()
    }

    /// Seconds since the monitor started (the clock of every time it reports).
    pub fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// Everything known now.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.state.lock().unwrap();
        let mut counts = Counts::default();
        for t in s.tracks.values() {
            counts.add(t.phase);
        }
        Snapshot {
            now: self.now(),
            started_at: self.started_at,
            nodes: s.tracks.values().cloned().collect(),
            counts,
            peaks: s.peaks.clone(),
            concurrency: s.concurrency.clone(),
        }
    }

    /// Changes whenever a Node changed (for progress displays).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.clone()
    }
}

fn unavailable(v: &NodeView, excluded: &BTreeSet<String>) -> bool {
    (v.unschedulable && !excluded.contains(&v.name))
        || v.annotation(keys::REBOOT_IN_PROGRESS) == Some(keys::TRUE)
        || !v.ready
}

impl State {
    /// No nodes yet; the concurrency line starts at 0.
    fn new() -> State {
        State {
            views: BTreeMap::new(),
            tracks: BTreeMap::new(),
            peaks: Peaks::default(),
            concurrency: vec![(0.0, 0)],
            holders: 0,
            granted: 0,
            disrupted: BTreeSet::new(),
        }
    }

    /// Adds `v` to the counts (`sign` 1) or takes it out (-1).
    fn count(&mut self, v: &NodeView, excluded: &BTreeSet<String>, sign: isize) {
        let step = |n: &mut usize, on: bool| {
            if on {
                *n = n.saturating_add_signed(sign);
            }
        };
        step(&mut self.holders, v.holds_slot());
        step(
            &mut self.granted,
            v.annotation(keys::REBOOT_OK) == Some(keys::TRUE),
        );
        if unavailable(v, excluded) {
            if sign > 0 {
                self.disrupted.insert(v.name.clone());
            } else {
                self.disrupted.remove(&v.name);
            }
        }
    }

    /// One node's new view (None: deleted).
    fn set_view(&mut self, excluded: &BTreeSet<String>, name: &str, v: Option<NodeView>) {
        if let Some(old) = self.views.remove(name) {
            self.count(&old, excluded, -1);
        }
        match v {
            Some(v) => {
                self.count(&v, excluded, 1);
                self.views.insert(name.to_string(), v);
            }
            None => {
                self.tracks.remove(name);
            }
        }
    }

    /// Every node listed afresh.
    fn relist(&mut self, excluded: &BTreeSet<String>, views: BTreeMap<String, NodeView>) {
        self.views = views;
        (self.holders, self.granted) = (0, 0);
        self.disrupted.clear();
        let views = std::mem::take(&mut self.views);
        for v in views.values() {
            self.count(v, excluded, 1);
        }
        self.views = views;
        let State { views, tracks, .. } = self;
        tracks.retain(|name, _| views.contains_key(name));
    }

    /// Records the state after a change of `changed` (None: of every node).
    fn observe(&mut self, changed: Option<&str>, t: f64) {
        let State {
            views,
            tracks,
            peaks,
            concurrency,
            holders,
            granted,
            disrupted,
        } = self;
        let seen: Vec<&NodeView> = match changed {
            Some(name) => views.get(name).into_iter().collect(),
            None => views.values().collect(),
        };
        for v in seen {
            tracks
                .entry(v.name.clone())
                .or_insert_with(|| NodeTrack::new(&v.name))
                .update(v, disrupted.contains(&v.name), t);
            let ids = match peaks.boot_ids.get_mut(&v.name) {
                Some(ids) => ids,
                None => peaks.boot_ids.entry(v.name.clone()).or_default(),
            };
            if !v.boot_id.is_empty() && ids.last() != Some(&v.boot_id) {
                ids.push(v.boot_id.clone());
            }
        }
        peaks.slot_holders = peaks.slot_holders.max(*holders);
        peaks.granted = peaks.granted.max(*granted);
        if disrupted.len() > peaks.disrupted {
            peaks.disrupted = disrupted.len();
            let names: Vec<&str> = disrupted.iter().map(String::as_str).collect();
            peaks.history.push(format!("disrupted: {names:?}"));
        }
        if concurrency.last().map(|c| c.1) != Some(disrupted.len()) {
            concurrency.push((t, disrupted.len()));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Summary;

    fn view(anns: &[(&str, &str)], unschedulable: bool, ready: bool, boot: &str) -> NodeView {
        NodeView {
            name: "n1".into(),
            annotations: anns
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels: BTreeMap::new(),
            unschedulable,
            boot_id: boot.into(),
            ready,
            taints: vec![],
        }
    }

    const T: &str = keys::TRUE;
    const F: &str = keys::FALSE;

    #[test]
    fn counts_follow_each_change_as_a_recount_would() {
        let named = |name: &str, v: NodeView| NodeView {
            name: name.into(),
            ..v
        };
        let excluded: BTreeSet<String> = ["admin".to_string()].into();
        let mut s = State::new();
        let steps: Vec<(&str, Option<NodeView>)> = vec![
            ("a", Some(view(&[(keys::REBOOT_OK, T)], false, true, "b1"))),
            (
                "b",
                Some(view(&[(keys::REBOOT_IN_PROGRESS, T)], true, true, "b1")),
            ),
            ("admin", Some(view(&[], true, true, "b1"))),
            ("a", Some(view(&[(keys::REBOOT_OK, T)], true, false, "b1"))),
            ("b", None),
            ("a", Some(view(&[(keys::REBOOT_OK, F)], false, true, "b2"))),
        ];
        for (i, (name, v)) in steps.into_iter().enumerate() {
            s.set_view(&excluded, name, v.map(|v| named(name, v)));
            s.observe(Some(name), i as f64);
            let recount: Vec<&str> = s
                .views
                .values()
                .filter(|v| unavailable(v, &excluded))
                .map(|v| v.name.as_str())
                .collect();
            let holders = s.views.values().filter(|v| v.holds_slot()).count();
            assert_eq!(s.holders, holders, "step {i}");
            assert_eq!(
                s.disrupted.iter().map(String::as_str).collect::<Vec<_>>(),
                recount,
                "step {i}"
            );
        }
        assert!(!s.tracks.contains_key("b"));
        assert_eq!(s.peaks.disrupted, 2);
        assert_eq!(s.peaks.granted, 1);
        assert_eq!(s.peaks.boot_ids["a"], ["b1", "b2"]);
        // A relist counts afresh.
        let views: BTreeMap<String, NodeView> = [(
            "c".to_string(),
            named("c", view(&[(keys::REBOOT_OK, T)], false, false, "b1")),
        )]
        .into();
        s.relist(&excluded, views);
        assert_eq!((s.holders, s.granted, s.disrupted.len()), (1, 1, 1));
        assert!(s.tracks.is_empty());
    }

    /// A whole good cycle: idle, waiting, granted, draining, rebooting, done.
    fn good_cycle(track: &mut NodeTrack) -> Vec<Phase> {
        let steps = [
            view(&[(keys::REBOOT_NEEDED, F)], false, true, "b1"),
            view(&[(keys::REBOOT_NEEDED, T)], false, true, "b1"),
            view(
                &[(keys::REBOOT_NEEDED, T), (keys::REBOOT_OK, T)],
                false,
                true,
                "b1",
            ),
            view(
                &[
                    (keys::REBOOT_NEEDED, T),
                    (keys::REBOOT_OK, T),
                    (keys::REBOOT_IN_PROGRESS, T),
                    (keys::AGENT_MADE_UNSCHEDULABLE, T),
                ],
                true,
                true,
                "b1",
            ),
            view(
                &[
                    (keys::REBOOT_NEEDED, T),
                    (keys::REBOOT_OK, T),
                    (keys::REBOOT_IN_PROGRESS, T),
                    (keys::AGENT_MADE_UNSCHEDULABLE, T),
                ],
                true,
                false,
                "b1",
            ),
            view(
                &[
                    (keys::REBOOT_NEEDED, T),
                    (keys::REBOOT_OK, T),
                    (keys::REBOOT_IN_PROGRESS, T),
                    (keys::AGENT_MADE_UNSCHEDULABLE, T),
                ],
                true,
                true,
                "b2",
            ),
            view(
                &[
                    (keys::REBOOT_NEEDED, F),
                    (keys::REBOOT_OK, T),
                    (keys::REBOOT_IN_PROGRESS, F),
                    (keys::AGENT_MADE_UNSCHEDULABLE, F),
                ],
                false,
                true,
                "b2",
            ),
            view(
                &[
                    (keys::REBOOT_NEEDED, F),
                    (keys::REBOOT_OK, F),
                    (keys::REBOOT_IN_PROGRESS, F),
                    (keys::AGENT_MADE_UNSCHEDULABLE, F),
                ],
                false,
                true,
                "b2",
            ),
        ];
        steps
            .iter()
            .enumerate()
            .map(|(i, v)| {
                track.update(v, false, i as f64);
                track.phase
            })
            .collect()
    }

    fn snapshot(track: NodeTrack, disrupted: usize) -> Snapshot {
        Snapshot {
            now: 10.0,
            started_at: chrono::Utc::now(),
            nodes: vec![track],
            counts: Counts::default(),
            peaks: Peaks {
                disrupted,
                ..Peaks::default()
            },
            concurrency: vec![],
        }
    }

    #[test]
    fn a_cycle_is_timed_and_phased() {
        let mut t = NodeTrack::new("n1");
        let phases = good_cycle(&mut t);
        use Phase::*;
        assert_eq!(
            phases,
            [
                Idle, Waiting, Granted, Draining, Rebooting, Rebooting, Rebooting, Done
            ]
        );
        let c = &t.cycles[0];
        assert_eq!(t.cycles.len(), 1);
        assert_eq!(
            (
                c.needed,
                c.granted,
                c.drain_start,
                c.reboot_start,
                c.back,
                c.released
            ),
            (
                Some(1.0),
                Some(2.0),
                Some(3.0),
                Some(4.0),
                Some(5.0),
                Some(7.0)
            )
        );
        assert_eq!(c.reboots, 1);
        assert!(!t.cordoned_by_cycle);
        let s = Summary::compute(&snapshot(t, 1), 1, Some(0.0), true);
        assert!(s.violations.is_empty(), "{s:?}");
        assert_eq!((s.rebooted, s.wall_seconds, s.node_seconds), (1, 7.0, 2.0));
        assert_eq!(s.physical_limit_seconds, 2.0);
        assert_eq!(s.ratio, Some(3.5));
    }

    #[test]
    fn phases_in_a_cycle_group_the_protocol_phases() {
        let stuck = "2024-05-01T12:00:00Z not back within --reboot-timeout=30m";
        for (anns, phase) in [
            (
                vec![(keys::REBOOT_NEEDED, T), (keys::REBOOT_PAUSED, T)],
                Phase::Waiting,
            ),
            (
                vec![(keys::REBOOT_NEEDED, T), (keys::REBOOT_OK, "yes")],
                Phase::Waiting,
            ),
            (
                vec![
                    (keys::REBOOT_NEEDED, T),
                    (keys::REBOOT_OK, T),
                    (keys::STUCK_SINCE, stuck),
                ],
                Phase::Granted,
            ),
            (
                vec![
                    (keys::REBOOT_NEEDED, T),
                    (keys::REBOOT_OK, T),
                    (keys::REBOOT_IN_PROGRESS, T),
                    (keys::STUCK_SINCE, stuck),
                ],
                Phase::Draining,
            ),
        ] {
            assert_eq!(
                Phase::in_cycle(&view(&anns, false, true, "b1")),
                phase,
                "{anns:?}"
            );
        }
        let hooks = NodeView {
            labels: [(keys::BEFORE_REBOOT.to_string(), T.to_string())].into(),
            ..view(&[(keys::REBOOT_NEEDED, T)], false, true, "b1")
        };
        assert_eq!(Phase::in_cycle(&hooks), Phase::Waiting);
        let after = NodeView {
            labels: [(keys::AFTER_REBOOT.to_string(), T.to_string())].into(),
            ..view(&[(keys::REBOOT_OK, T)], false, true, "b2")
        };
        assert_eq!(Phase::in_cycle(&after), Phase::Rebooting);
    }

    #[test]
    fn violations_are_found() {
        // Two cycles, each a reboot: twice in all.
        let mut t = NodeTrack::new("n1");
        good_cycle(&mut t);
        let mut second = NodeTrack::new("n1");
        good_cycle(&mut second);
        t.cycles.extend(second.cycles);
        t.boot_ids.push("b3".into());
        let s = Summary::compute(&snapshot(t.clone(), 3), 2, Some(0.0), true);
        assert_eq!(s.violations.len(), 2, "{s:?}");
        assert!(s.violations[0].contains("3 nodes unavailable"), "{s:?}");
        assert!(s.violations[1].contains("rebooted 2 times"), "{s:?}");
        // Twice in two cycles is fine when reboots are asked for from outside.
        assert!(
            Summary::compute(&snapshot(t, 1), 1, None, false)
                .violations
                .is_empty()
        );

        // Left cordoned: the cycle ended with the node still unschedulable.
        let mut t2 = NodeTrack::new("n1");
        for (i, v) in [
            view(&[(keys::REBOOT_NEEDED, T)], false, true, "b1"),
            view(
                &[(keys::REBOOT_NEEDED, T), (keys::REBOOT_IN_PROGRESS, T)],
                true,
                true,
                "b1",
            ),
            view(&[(keys::REBOOT_NEEDED, F)], true, true, "b2"),
        ]
        .iter()
        .enumerate()
        {
            t2.update(v, true, i as f64);
        }
        assert!(t2.cordoned_by_cycle && t2.open_cycle().is_none());
        let s = Summary::compute(&snapshot(t2, 1), 1, Some(0.0), true);
        assert_eq!(s.violations.len(), 1, "{s:?}");
        assert!(s.violations[0].contains("left cordoned"), "{s:?}");
    }
}
