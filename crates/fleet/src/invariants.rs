//! An invariant checker of the reboot protocol, fed by every change the
//! sandbox's store makes.
//!
//! It subscribes to the store in-process rather than watching over HTTP: it is
//! the referee, not a player, so injected API faults must not blind it, and it
//! sees every intermediate state in resourceVersion order (Nodes, Pods and
//! PodDisruptionBudgets interleaved exactly as they happened). Node states are
//! typed with the protocol's own [`NodeState::parse`].
//!
//! Checked on every change:
//! - at most `max` nodes disrupted at once (cordoned by us, i.e. unschedulable
//!   with `agent-made-unschedulable=true`, or `reboot-in-progress=true`), and
//!   at most the per-zone maximum in each zone; a node whose Node object is deleted while
//!   disrupted still counts until a Node of that name is registered again and Ready (its
//!   machine may still be going down or booting);
//! - no grant (`reboot-ok` turning true) and no drain start
//!   (`reboot-in-progress` turning true) while the reboot window is closed;
//! - no node goes down (Ready turning false) with a pod still on it that a
//!   PodDisruptionBudget protects (unless `--drain-timeout-action=reboot`);
//! - no node boots more than `max_reboots` times;
//! - annotations of another writer (under `foreign_prefix`, decimal counters)
//!   are never removed nor set back to an older value (a lost update);
//! - protocol values stay well-formed.
//!
//! What must hold at the end (rebooted once, nobody left cordoned) is judged
//! by the caller from [`Checker::nodes`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::Node;
use protocol::keys;
use protocol::node::{NodeState, NodeView};
use protocol::operator::MaxRebooting;
use protocol::window::RebootWindow;
use sandbox::Store;
use sandbox::selector::LabelSelector;
use sandbox::store::{EventType, WatchEvent, meta};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The scenario's seed (reproduce with `fluoctl chaos --seeds 1 --first-seed SEED`).
    pub seed: u64,
    /// Seconds since the checker started.
    pub at: f64,
    /// The nodes involved.
    pub nodes: Vec<String>,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} at {:.2}s [{}]: {}",
            self.seed,
            self.at,
            self.nodes.join(","),
            self.what
        )
    }
}

/// What the checker holds the cluster to.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The scenario's seed, copied into every violation.
    pub seed: u64,
    /// `--max-rebooting-nodes`, resolved.
    pub max: usize,
    /// `--max-rebooting-nodes-per-zone`.
    pub per_zone: Option<MaxRebooting>,
    /// `--zone-label`.
    pub zone_label: String,
    /// The operator's reboot window (None: always open); see [`Checker::set_window`].
    pub window: Option<RebootWindow>,
    /// How late after the window closed a grant or drain start may still be
    /// stored: the writer decided while it was open, then its request took
    /// this long (injected latency, retries).
    pub window_slack: Duration,
    /// `--drain-timeout-action=reboot`: a node may go down undrained.
    pub drain_timeout_reboots: bool,
    /// Boots after the first one allowed per node (1: one update each).
    pub max_reboots: usize,
    /// Annotations under this prefix belong to another writer.
    pub foreign_prefix: String,
}

/// What the checker knows of one node now.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub view: NodeView,
    /// The protocol state (None while a value is malformed).
    pub state: Option<NodeState>,
    /// Boot IDs seen, in order (the first is the one it had at the start).
    pub boot_ids: Vec<String>,
}

impl NodeFacts {
    /// Reboots seen.
    pub fn reboots(&self) -> usize {
        self.boot_ids.len().saturating_sub(1)
    }
}

struct Pod {
    ns: String,
    name: String,
    node: Option<String>,
    labels: Map<String, Value>,
    daemon: bool,
    terminating: bool,
}

struct State {
    rules: Rules,
    origin: Instant,
    nodes: BTreeMap<String, NodeFacts>,
    pods: BTreeMap<(String, String), Pod>,
    pdbs: BTreeMap<(String, String), LabelSelector>,
    violations: Vec<Violation>,
    /// Nodes whose Node object was deleted, as last seen, and whether they still count as
    /// disrupted (they were when deleted, and no Node of that name is Ready yet).
    departed: BTreeMap<String, (NodeFacts, bool)>,
    /// The last over-limit sets reported (global, per zone), so a lasting
    /// breach is one violation, not one per event.
    over: BTreeMap<String, BTreeSet<String>>,
    changes: u64,
}

/// Watches the store until dropped.
pub struct Checker {
    state: Arc<Mutex<State>>,
    changes: tokio::sync::watch::Receiver<u64>,
    task: JoinHandle<()>,
}

fn nodes_res() -> &'static sandbox::resources::Resource {
    sandbox::resources::find("", "v1", "nodes").expect("nodes")
}

fn is_true(v: &NodeView, key: &str) -> bool {
    v.annotation(key) == Some(keys::TRUE)
}

/// Cordoned by us, draining or rebooting (from the raw values, so a
/// malformed node is still counted when it says "true").
pub fn disrupted(v: &NodeView) -> bool {
    is_true(v, keys::REBOOT_IN_PROGRESS)
        || (v.unschedulable && is_true(v, keys::AGENT_MADE_UNSCHEDULABLE))
}

impl Checker {
    /// Starts checking `store` from its current state.
    pub fn start(store: &Store, rules: Rules) -> Checker {
        // Subscribe first, then read the state: events at or below the
        // state's resourceVersion are already in it.
        let mut rx = store.subscribe_all();
        let origin = Instant::now();
        let mut st = State {
            rules,
            origin,
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            pdbs: BTreeMap::new(),
            violations: Vec::new(),
            departed: BTreeMap::new(),
            over: BTreeMap::new(),
            changes: 0,
        };
        let since = {
            let inner = store.lock();
            for (_, n) in inner.iter(nodes_res(), None) {
                st.node_changed(n);
            }
            for (_, p) in inner.iter(sandbox::eviction::pods(), None) {
                st.pod_changed(p, false);
            }
            for (_, p) in inner.iter(sandbox::eviction::pdbs(), None) {
                st.pdb_changed(p, false);
            }
            inner.current_rv()
        };
        let state = Arc::new(Mutex::new(st));
        let (tx, changes) = tokio::sync::watch::channel(0u64);
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let ev: Arc<WatchEvent> = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(RecvError::Lagged(n)) => {
                        s.lock().unwrap().violate(
                            Vec::new(),
                            format!("the checker fell behind and lost {n} changes"),
                        );
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if ev.rv <= since {
                    continue;
                }
                let gone = ev.kind == EventType::Deleted;
                let mut st = s.lock().unwrap();
                if ev.storage == nodes_res().storage {
                    if gone {
                        let name = meta(&ev.object, "name").unwrap_or("");
                        st.node_deleted(name);
                    } else {
                        st.node_changed(&ev.object);
                    }
                } else if ev.storage == sandbox::eviction::pods().storage {
                    st.pod_changed(&ev.object, gone);
                } else if ev.storage == sandbox::eviction::pdbs().storage {
                    st.pdb_changed(&ev.object, gone);
                } else {
                    continue;
                }
                st.changes += 1;
                let c = st.changes;
                drop(st);
                tx.send_replace(c);
            }
        });
        Checker {
            state,
            changes,
            task,
        }
    }

    /// Every violation so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Records a violation found by the caller (e.g. a rollout that did not finish).
    pub fn violate(&self, nodes: Vec<String>, what: String) {
        self.state.lock().unwrap().violate(nodes, what);
    }

    /// Every node now, by name.
    pub fn nodes(&self) -> BTreeMap<String, NodeFacts> {
        self.state.lock().unwrap().nodes.clone()
    }

    /// The window changed (the operators were restarted with another one).
    pub fn set_window(&self, window: Option<RebootWindow>) {
        self.state.lock().unwrap().rules.window = window;
    }

    /// Seconds since the checker started.
    pub fn now(&self) -> f64 {
        self.state.lock().unwrap().origin.elapsed().as_secs_f64()
    }

    /// Changes whenever a Node, Pod or PodDisruptionBudget changed.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.clone()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl State {
    fn violate(&mut self, mut nodes: Vec<String>, what: String) {
        nodes.sort();
        self.violations.push(Violation {
            seed: self.rules.seed,
            at: (self.origin.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            nodes,
            what,
        });
    }

    fn pod_changed(&mut self, obj: &Value, gone: bool) {
        let key = (
            meta(obj, "namespace").unwrap_or("").to_string(),
            meta(obj, "name").unwrap_or("").to_string(),
        );
        if gone {
            self.pods.remove(&key);
            return;
        }
        let daemon = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|os| os.iter().any(|o| o["kind"] == "DaemonSet"));
        let pod = Pod {
            ns: key.0.clone(),
            name: key.1.clone(),
            node: obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .map(str::to_string),
            labels: obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            daemon,
            terminating: sandbox::eviction::is_terminating(obj),
        };
        self.pods.insert(key, pod);
    }

    fn pdb_changed(&mut self, obj: &Value, gone: bool) {
        let key = (
            meta(obj, "namespace").unwrap_or("").to_string(),
            meta(obj, "name").unwrap_or("").to_string(),
        );
        // A PDB without a selector protects nothing.
        let selector = obj
            .pointer("/spec/selector")
            .filter(|s| !s.is_null())
            .and_then(|s| LabelSelector::from_label_selector_object(s).ok());
        match selector {
            Some(sel) if !gone => {
                self.pdbs.insert(key, sel);
            }
            _ => {
                self.pdbs.remove(&key);
            }
        }
    }

    /// Pods on `node` that were never evicted and that a PDB protects.
    fn protected_pods(&self, node: &str) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| p.node.as_deref() == Some(node) && !p.daemon && !p.terminating)
            .filter(|p| {
                self.pdbs
                    .iter()
                    .any(|((ns, _), sel)| *ns == p.ns && sel.matches(Some(&p.labels)))
            })
            .map(|p| format!("{}/{}", p.ns, p.name))
            .collect()
    }

    fn window_closed(&self) -> bool {
        let Some(w) = &self.rules.window else {
            return false;
        };
        let now = Utc::now();
        let slack = chrono::TimeDelta::from_std(self.rules.window_slack).unwrap_or_default();
        !w.contains(now) && !w.contains(now - slack)
    }

    fn node_deleted(&mut self, name: &str) {
        if let Some(f) = self.nodes.remove(name) {
            let counts = disrupted(&f.view);
            self.departed.insert(name.to_string(), (f, counts));
            self.check_limits();
        }
    }

    fn node_changed(&mut self, obj: &Value) {
        let node: Node = match serde_json::from_value(obj.clone()) {
            Ok(n) => n,
            Err(e) => {
                let name = meta(obj, "name").unwrap_or("").to_string();
                self.violate(vec![name], format!("the Node does not decode: {e}"));
                return;
            }
        };
        let view = protocol::k8s::node_view(&node);
        let name = view.name.clone();
        let state = match NodeState::parse(&view) {
            Ok(s) => Some(s),
            Err(e) => {
                let was_ok = self.nodes.get(&name).is_none_or(|f| f.state.is_some());
                if was_ok {
                    self.violate(vec![name.clone()], e.to_string());
                }
                None
            }
        };
        let prev = self.nodes.get(&name).map(|f| f.view.clone());
        // A Node registered again continues the machine's boot history.
        let mut boot_ids = self
            .nodes
            .get(&name)
            .or_else(|| self.departed.get(&name).map(|d| &d.0))
            .map(|f| f.boot_ids.clone())
            .unwrap_or_default();
        if !view.boot_id.is_empty() && boot_ids.last() != Some(&view.boot_id) {
            boot_ids.push(view.boot_id.clone());
            let reboots = boot_ids.len() - 1;
            if reboots > self.rules.max_reboots {
                self.violate(
                    vec![name.clone()],
                    format!(
                        "rebooted {reboots} times, more than {} (boot IDs {boot_ids:?})",
                        self.rules.max_reboots
                    ),
                );
            }
        }
        if let Some(prev) = &prev {
            self.transitions(prev, &view);
        }
        // Back and Ready, or disrupted again and counted as itself.
        if view.ready || disrupted(&view) {
            self.departed.remove(&name);
        }
        self.nodes.insert(
            name,
            NodeFacts {
                view,
                state,
                boot_ids,
            },
        );
        self.check_limits();
    }

    /// What may not happen between two consecutive states of a node.
    fn transitions(&mut self, prev: &NodeView, now: &NodeView) {
        let name = now.name.clone();
        for (key, what) in [
            (keys::REBOOT_OK, "granted"),
            (keys::REBOOT_IN_PROGRESS, "started draining"),
        ] {
            if !is_true(prev, key) && is_true(now, key) && self.window_closed() {
                let w = self.rules.window.as_ref().map(|w| w.to_string());
                self.violate(
                    vec![name.clone()],
                    format!(
                        "{what} outside the reboot window ({}, now {})",
                        w.unwrap_or_default(),
                        protocol::node::format_time(Utc::now())
                    ),
                );
            }
        }
        if prev.ready && !now.ready && !self.rules.drain_timeout_reboots {
            let pods = self.protected_pods(&name);
            if !pods.is_empty() {
                self.violate(
                    vec![name.clone()],
                    format!(
                        "went down with pods a PodDisruptionBudget protects still on it: {}",
                        pods.join(", ")
                    ),
                );
            }
        }
        let prefix = self.rules.foreign_prefix.clone();
        if prefix.is_empty() {
            return;
        }
        for (k, old) in prev
            .annotations
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
        {
            match now.annotation(k) {
                None => self.violate(
                    vec![name.clone()],
                    format!("annotation {k}={old} of another writer was removed"),
                ),
                Some(new) => {
                    if let (Ok(o), Ok(n)) = (old.parse::<u64>(), new.parse::<u64>())
                        && n < o
                    {
                        self.violate(
                            vec![name.clone()],
                            format!(
                                "annotation {k} of another writer went back from {o} to {n} (a lost update)"
                            ),
                        );
                    }
                }
            }
        }
    }

    fn check_limits(&mut self) {
        let disrupted_now: Vec<&NodeView> = self
            .nodes
            .values()
            .map(|f| &f.view)
            .filter(|v| disrupted(v))
            .chain(
                self.departed
                    .values()
                    .filter(|(_, counts)| *counts)
                    .map(|(f, _)| &f.view),
            )
            .collect();
        let mut breaches: Vec<(String, usize, BTreeSet<String>)> = Vec::new();
        if disrupted_now.len() > self.rules.max {
            breaches.push((
                "the cluster".to_string(),
                self.rules.max,
                disrupted_now.iter().map(|v| v.name.clone()).collect(),
            ));
        }
        if let Some(per_zone) = self.rules.per_zone {
            let zone_of = |v: &NodeView| v.label(&self.rules.zone_label).unwrap_or("").to_string();
            let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
            for f in self.nodes.values() {
                *sizes.entry(zone_of(&f.view)).or_default() += 1;
            }
            let mut by_zone: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for v in &disrupted_now {
                by_zone
                    .entry(zone_of(v))
                    .or_default()
                    .insert(v.name.clone());
            }
            for (zone, set) in by_zone {
                let limit = per_zone.resolve(sizes.get(&zone).copied().unwrap_or(0));
                if set.len() > limit {
                    let label = if zone.is_empty() {
                        "the nodes without a zone".to_string()
                    } else {
                        format!("zone {zone}")
                    };
                    breaches.push((label, limit, set));
                }
            }
        }
        let scopes: BTreeSet<String> = breaches.iter().map(|b| b.0.clone()).collect();
        self.over.retain(|scope, _| scopes.contains(scope));
        for (scope, limit, set) in breaches {
            if self.over.get(&scope) == Some(&set) {
                continue;
            }
            self.over.insert(scope.clone(), set.clone());
            self.violate(
                set.iter().cloned().collect(),
                format!(
                    "{} nodes cordoned by us, draining or rebooting at once in {scope}, more than {limit}",
                    set.len()
                ),
            );
        }
    }
}
