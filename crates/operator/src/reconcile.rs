//! The leader's work: a reflector of Nodes, [`protocol::operator::decide`] on
//! every change and at [`Decision::next_check`], and the resulting patches.
//!
//! Patches are JSON merge patches carrying the `metadata.resourceVersion` of
//! the Node they were decided on, so a Node that changed in between answers
//! 409 and is decided again on the next event. They are applied in three
//! phases: first the patches on nodes that hold a reboot slot (withdrawals,
//! releases, their upkeep), then, only if all of those succeeded, the ones
//! that take a slot (`before-reboot` label, `reboot-ok=true`), then the rest
//! (bookkeeping on nodes that neither hold nor take one, e.g.
//! `reboot-needed-since`). So a failed release can never leave more slot
//! holders than the maximum, and a grant never waits behind bookkeeping (a
//! thousand nodes asking at once are a thousand such patches). Each node's
//! patch is on its own: one failure does not stop the others.
//!
//! The reflector's cache can lag behind our own writes. The Node a successful
//! patch returns is kept as an overlay until the cache has moved past the
//! resourceVersion the patch was decided on, so a decision never counts a
//! slot we just granted as free.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use protocol::node::NodeView;
use protocol::operator::{ClusterInputs, Decision, busy, decide_with};
use protocol::patch::NodePatch;
use shell::{Backoff, NodeWriter};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::Config;
use crate::events::{Observer, Reporter};
use crate::lease::{Leadership, WorkEnd};
use protocol::k8s::node_view;

/// How often the cached nodes are decided on again even without events (no
/// API request is made for it).
const RESYNC: Duration = Duration::from_secs(60);
/// After a 409, decide again after this long even if no event arrives.
const CONFLICT_RETRY: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// At most this many node patches in flight at once.
const PATCH_CONCURRENCY: usize = 8;

/// What became of one node's patch.
#[derive(Debug)]
enum Outcome {
    Applied(Box<Node>),
    /// 409: the node changed since the decision.
    Conflict,
    /// 404: the node is gone.
    Gone,
    /// Leadership ended before the write.
    NotLeader,
    /// The server refused the write (4xx: it did not happen).
    Failed(String),
    /// No answer, or a 5xx: the write may or may not have happened.
    Unknown(String),
}

#[derive(Default)]
struct RoundResult {
    failed: bool,
    conflict: bool,
    not_leader: bool,
    /// Nothing to do and no node needs an operator: the Lease may be given up.
    quiet: bool,
}

/// Logs each node's malformed values once (again only when the message
/// changes), and likewise stuck nodes.
#[derive(Default)]
struct ProblemLog {
    logged: HashMap<String, String>,
    stuck: HashMap<String, String>,
}

impl ProblemLog {
    fn update(&mut self, decision: &Decision) {
        let mut now: HashMap<String, String> = HashMap::new();
        for p in &decision.problems {
            now.insert(p.node.clone(), p.message.clone());
        }
        for (node, msg) in &now {
            if self.logged.get(node) != Some(msg) {
                warn!(node = %node, problem = %msg, "leaving node alone: malformed reboot protocol value (fix or remove it)");
            }
        }
        for node in self.logged.keys() {
            if !now.contains_key(node) {
                info!(node = %node, "node's reboot protocol values are well-formed again");
            }
        }
        self.logged = now;
        let stuck: HashMap<String, String> = decision
            .stuck
            .iter()
            .map(|s| (s.node.clone(), s.reason.clone()))
            .collect();
        for st in &decision.stuck {
            if self.stuck.get(&st.node) != Some(&st.reason) {
                warn!(node = %st.node, since = %protocol::node::format_time(st.since), reason = %st.reason, "node is stuck: it keeps its reboot slot until it comes back (or is deleted)");
            }
        }
        for node in self.stuck.keys() {
            if !stuck.contains_key(node) {
                info!(node = %node, "node is no longer stuck");
            }
        }
        self.stuck = stuck;
    }
}

/// Our own writes, until the reflector has caught up with them.
///
/// Per node: the patched Node we got back, and the resourceVersions it
/// supersedes (the one our first patch was decided on, then each of our
/// later patches' bases). Every version in between is ours (each patch
/// carried its base as a precondition), so while the cache still shows one of
/// the superseded versions, our Node is newer; once it shows anything else,
/// the cache has caught up.
#[derive(Default)]
struct Overlay {
    nodes: HashMap<String, (Vec<String>, Arc<Node>)>,
    /// Writes without an answer: node name -> resourceVersion decided on. Until
    /// we know the node's state after them, no new slot is granted.
    uncertain: HashMap<String, String>,
}

impl Overlay {
    /// Resolves uncertain writes against the current (overlaid) nodes:
    /// settled once the node has moved past the decided resourceVersion, or
    /// by reading it back. Returns whether some are still unresolved.
    async fn resolve(&mut self, api: &Api<Node>, current: &BTreeMap<String, Arc<Node>>) -> bool {
        let pending: Vec<(String, String)> = self.uncertain.drain().collect();
        for (name, decided_rv) in pending {
            let rv = current.get(&name).and_then(|n| n.resource_version());
            if rv.as_deref() != Some(decided_rv.as_str()) {
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(10), api.get_opt(&name)).await {
                Ok(Ok(Some(node))) => {
                    if node.resource_version().as_deref() != Some(decided_rv.as_str()) {
                        self.record(decided_rv, node);
                    }
                }
                Ok(Ok(None)) => {}
                _ => {
                    self.uncertain.insert(name, decided_rv);
                }
            }
        }
        !self.uncertain.is_empty()
    }

    /// The nodes to decide on, by name: the cache, with our newer writes on top.
    fn merged(&mut self, cached: &[Arc<Node>]) -> BTreeMap<String, Arc<Node>> {
        let mut by_name: BTreeMap<String, Arc<Node>> = BTreeMap::new();
        for n in cached {
            by_name.insert(n.name_any(), n.clone());
        }
        self.nodes
            .retain(|name, (superseded, patched)| match by_name.get_mut(name) {
                Some(cached)
                    if cached
                        .resource_version()
                        .is_some_and(|rv| superseded.contains(&rv)) =>
                {
                    *cached = patched.clone();
                    true
                }
                _ => false,
            });
        by_name
    }

    /// Records the Node a write decided on `decided_rv` produced.
    fn record(&mut self, decided_rv: String, mut patched: Node) {
        slim(&mut patched);
        let name = patched.name_any();
        let patched = Arc::new(patched);
        match self.nodes.get_mut(&name) {
            Some((superseded, prev)) if prev.resource_version().as_deref() == Some(&decided_rv) => {
                superseded.push(decided_rv);
                *prev = patched;
            }
            _ => {
                self.nodes.insert(name, (vec![decided_rv], patched));
            }
        }
    }
}

/// The last round's views, reused for every node whose object is the same `Arc` (the
/// reflector and the overlay hand out the same one while a Node is unchanged): converting
/// every Node on every event was a quarter of a round at 1,000 nodes, and a round's length
/// is how long a freed slot waits for the next event's decision.
#[derive(Default)]
struct ViewCache {
    nodes: Vec<Arc<Node>>,
    views: Vec<NodeView>,
}

impl ViewCache {
    /// The views of `merged`, in its (name) order.
    fn update(&mut self, merged: &BTreeMap<String, Arc<Node>>) -> &[NodeView] {
        if self.nodes.len() != merged.len() {
            self.nodes = merged.values().cloned().collect();
            self.views = self.nodes.iter().map(|n| node_view(n)).collect();
        }
        for (i, n) in merged.values().enumerate() {
            if !Arc::ptr_eq(&self.nodes[i], n) {
                self.views[i] = node_view(n);
                self.nodes[i] = n.clone();
            }
        }
        &self.views
    }
}

/// Keeps only what the operator reads of a Node: what
/// [`protocol::k8s::node_view`] reads (name, annotations, labels,
/// `spec.unschedulable`, the Ready condition's status, `status.nodeInfo.bootID`),
/// the uid (Events) and the resourceVersion (patch preconditions, overlay).
/// The rest (managedFields, images, addresses, capacity, the other
/// conditions, ...) was most of the cache's memory at 5,000 nodes.
fn slim(node: &mut Node) {
    let meta = std::mem::take(&mut node.metadata);
    node.metadata = ObjectMeta {
        name: meta.name,
        uid: meta.uid,
        resource_version: meta.resource_version,
        // All of them: hook annotations (`--before-reboot-annotations`) can have any key.
        annotations: meta.annotations,
        // All of them: `--node-selector` and `--zone-label` can name any key.
        labels: meta.labels,
        ..ObjectMeta::default()
    };
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable);
    node.spec = unschedulable.map(|u| NodeSpec {
        unschedulable: Some(u),
        ..NodeSpec::default()
    });
    node.status = node.status.take().map(|s| NodeStatus {
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| NodeCondition {
                    type_: c.type_,
                    status: c.status,
                    ..NodeCondition::default()
                })
                .collect()
        }),
        node_info: s.node_info.map(|i| NodeSystemInfo {
            boot_id: i.boot_id,
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    });
}

#[tracing::instrument(name = "patch", skip_all, fields(node = %patch.node))]
async fn apply_one(
    writer: &NodeWriter,
    leadership: &Leadership,
    patch: &NodePatch,
    resource_version: &str,
) -> Outcome {
    let Some(left) = leadership.time_left() else {
        return Outcome::NotLeader;
    };
    debug!(change = %describe(patch), "patching node");
    match tokio::time::timeout(left, writer.patch(patch, Some(resource_version))).await {
        // Slimmed at once: a phase holds every answer until all its patches are done.
        Ok(Ok(mut node)) => {
            slim(&mut node);
            Outcome::Applied(Box::new(node))
        }
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => Outcome::Conflict,
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Outcome::Gone,
        // A 5xx (e.g. 504 after a storage timeout) may still have been applied.
        Ok(Err(kube::Error::Api(s))) if s.code >= 500 => {
            Outcome::Unknown(format!("{} ({})", s.message, s.code))
        }
        Ok(Err(kube::Error::Api(s))) => Outcome::Failed(format!("{} ({})", s.message, s.code)),
        Ok(Err(e)) => Outcome::Unknown(e.to_string()),
        Err(_) => Outcome::Unknown("timed out".into()),
    }
}

fn describe(patch: &NodePatch) -> String {
    let mut parts = Vec::new();
    let short = |k: &str| {
        k.strip_prefix(protocol::keys::PREFIX)
            .unwrap_or(k)
            .to_string()
    };
    for (k, v) in &patch.annotations {
        parts.push(match v {
            Some(v) => format!("{}={v}", short(k)),
            None => format!("-{}", short(k)),
        });
    }
    for (k, v) in &patch.labels {
        parts.push(match v {
            Some(v) => format!("label {}={v}", short(k)),
            None => format!("-label {}", short(k)),
        });
    }
    if let Some(u) = patch.unschedulable {
        parts.push(format!("unschedulable={u}"));
    }
    parts.join(" ")
}

/// Applies one phase's patches concurrently.
async fn apply_phase(
    writer: &NodeWriter,
    leadership: &Leadership,
    patches: Vec<(NodePatch, String)>,
    overlay: &mut Overlay,
    result: &mut RoundResult,
) {
    let outcomes: Vec<(NodePatch, String, Outcome)> = stream::iter(patches)
        .map(|(p, rv)| async move {
            let o = apply_one(writer, leadership, &p, &rv).await;
            (p, rv, o)
        })
        .buffer_unordered(PATCH_CONCURRENCY)
        .collect()
        .await;
    for (p, rv, outcome) in outcomes {
        match outcome {
            Outcome::Applied(node) => {
                info!(node = %p.node, change = %describe(&p), "updated node");
                overlay.record(rv, *node);
            }
            Outcome::Conflict => {
                debug!(node = %p.node, "node changed since the decision (409); deciding again");
                result.conflict = true;
            }
            Outcome::Gone => debug!(node = %p.node, "node is gone"),
            Outcome::NotLeader => result.not_leader = true,
            Outcome::Failed(e) => {
                warn!(node = %p.node, error = %e, change = %describe(&p), "cannot patch node; will retry with backoff");
                result.failed = true;
            }
            Outcome::Unknown(e) => {
                warn!(node = %p.node, error = %e, change = %describe(&p), "no answer to a node patch; will read the node back and retry with backoff");
                overlay.uncertain.insert(p.node.clone(), rv);
                result.failed = true;
            }
        }
    }
}

/// What the leader keeps from one decision round to the next.
struct Leader {
    writer: NodeWriter,
    cfg: Arc<Config>,
    leadership: Leadership,
    overlay: Overlay,
    cache: ViewCache,
    problems: ProblemLog,
    observer: Observer,
}

impl Leader {
    /// Decides once on the current view and applies the patches.
    #[tracing::instrument(name = "round", skip_all, fields(nodes = cached.len()))]
    async fn round(
        &mut self,
        cached: Vec<Arc<Node>>,
        inputs: &ClusterInputs,
    ) -> (RoundResult, Option<chrono::DateTime<Utc>>) {
        let Leader {
            writer,
            cfg,
            leadership,
            overlay,
            cache,
            problems,
            observer,
        } = self;
        let mut merged = overlay.merged(&cached);
        let mut unresolved = false;
        if !overlay.uncertain.is_empty() {
            unresolved = overlay.resolve(writer.api(), &merged).await;
            merged = overlay.merged(&cached);
        }
        let views = cache.update(&merged);
        let nodes: HashMap<String, Arc<Node>> = merged.into_iter().collect();
        let now = Utc::now();
        let decision = decide_with(views, &cfg.operator, inputs, now);
        problems.update(&decision);
        // Events, notifications and node metrics (never waits).
        observer.observe(views, &nodes, &decision, &cfg.operator, inputs, now);
        let mut result = RoundResult {
            failed: unresolved,
            quiet: cfg.release_lease_after_idle.is_some()
                && !unresolved
                && decision.patches.is_empty()
                && decision.stuck.is_empty()
                && decision.problems.is_empty()
                && views.iter().all(|v| !busy(v, &cfg.operator)),
            ..Default::default()
        };
        let by_name: HashMap<&str, &NodeView> =
            views.iter().map(|v| (v.name.as_str(), v)).collect();
        let (mut release, mut acquire, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for p in decision.patches {
            let Some(rv) = nodes.get(&p.node).and_then(|n| n.resource_version()) else {
                continue;
            };
            match by_name.get(p.node.as_str()) {
                Some(v) if v.holds_slot() => release.push((p, rv)),
                Some(v) if holds_slot_after(v, &p) => acquire.push((p, rv)),
                _ => rest.push((p, rv)),
            }
        }
        apply_phase(writer, leadership, release, overlay, &mut result).await;
        if !acquire.is_empty() {
            if unresolved || result.failed || result.conflict || result.not_leader {
                debug!(
                    waiting = acquire.len(),
                    "not granting new slots until the other writes of this decision succeed"
                );
            } else {
                apply_phase(writer, leadership, acquire, overlay, &mut result).await;
            }
        }
        apply_phase(writer, leadership, rest, overlay, &mut result).await;
        (result, decision.next_check)
    }
}

/// Whether `view` holds a reboot slot once `patch` is applied.
fn holds_slot_after(view: &NodeView, patch: &NodePatch) -> bool {
    let mut after = view.clone();
    patch.apply(&mut after);
    after.holds_slot()
}

fn instant_at(t: chrono::DateTime<Utc>) -> Instant {
    let d = (t - Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO)
        // A window edge is never further than a week; wake at least hourly anyway.
        .min(Duration::from_secs(3600));
    // Wake a little after the edge so `decide` sees it passed.
    Instant::now() + d + Duration::from_millis(20)
}

/// Runs while `leadership` lasts, or until no node has needed an operator for
/// `--release-lease-after-idle` ([`WorkEnd::Idle`]).
pub(crate) async fn lead(
    client: kube::Client,
    cfg: Arc<Config>,
    leadership: Leadership,
    reporter: Arc<Reporter>,
) -> anyhow::Result<WorkEnd> {
    // Leader gauge and election Event now; the leader's gauges are zeroed when it drops.
    let observer = Observer::new(reporter);
    let writer = NodeWriter::new(client.clone(), &cfg.field_manager);
    let (reader, store_writer) = reflector::store::<Node>();
    let changed = Arc::new(Notify::new());
    let node_watch = crate::leader_needed::node_watch(&cfg.operator);
    let inputs = crate::inputs::Inputs::start(&client, &cfg, changed.clone());
    let events = {
        let changed = changed.clone();
        let stream = reflector(
            store_writer,
            watcher(writer.api().clone(), node_watch).modify(slim),
        )
        .default_backoff();
        async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(_) => changed.notify_one(),
                    Err(e) => warn!(error = %e, "watching nodes failed; retrying with backoff"),
                }
            }
        }
    };
    let _events = AbortOnDropHandle::new(tokio::spawn(events));

    tokio::select! {
        _ = leadership.cancelled() => return Ok(WorkEnd::LeadershipEnded),
        r = reader.wait_until_ready() => r.map_err(|e| anyhow::anyhow!("node reflector stopped: {e}"))?,
    }
    tokio::select! {
        _ = leadership.cancelled() => return Ok(WorkEnd::LeadershipEnded),
        r = inputs.wait_until_ready() => r?,
    }
    info!(nodes = reader.len(), "watching nodes; deciding");

    let mut leader = Leader {
        writer,
        cfg: cfg.clone(),
        leadership: leadership.clone(),
        overlay: Overlay::default(),
        cache: ViewCache::default(),
        problems: ProblemLog::default(),
        observer,
    };
    let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
    let mut idle_since: Option<Instant> = None;
    loop {
        if !leadership.may_act() {
            return Ok(WorkEnd::LeadershipEnded);
        }
        let (result, next_check) = leader.round(reader.state(), &inputs.current()).await;
        let mut wake = Instant::now() + RESYNC;
        if let Some(t) = next_check {
            wake = wake.min(instant_at(t));
        }
        let mut not_before = None;
        if result.failed {
            // API errors: no new round before the backoff, even on events.
            let delay = backoff.next_delay();
            not_before = Some(Instant::now() + delay);
            wake = wake.min(Instant::now() + delay);
        } else {
            backoff.reset();
        }
        if result.conflict {
            wake = wake.min(Instant::now() + CONFLICT_RETRY);
        }
        match cfg.release_lease_after_idle {
            Some(after) if result.quiet && !result.failed && !result.conflict => {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= after {
                    info!(idle_for = ?since.elapsed(), "no node needs an operator; giving up the lease");
                    return Ok(WorkEnd::Idle);
                }
                wake = wake.min(since + after);
            }
            _ => idle_since = None,
        }
        tokio::select! {
            _ = leadership.cancelled() => return Ok(WorkEnd::LeadershipEnded),
            _ = changed.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        if let Some(t) = not_before {
            tokio::select! {
                _ = leadership.cancelled() => return Ok(WorkEnd::LeadershipEnded),
                _ = tokio::time::sleep_until(t) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::keys;
    use serde_json::json;

    fn node(name: &str, rv: &str, ok: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "resourceVersion": rv, "annotations": {keys::REBOOT_OK: ok}},
        }))
        .unwrap()
    }

    fn ok_of(o: &mut Overlay, cached: &[Node]) -> Vec<String> {
        let cached: Vec<Arc<Node>> = cached.iter().cloned().map(Arc::new).collect();
        o.merged(&cached)
            .values()
            .map(|n| node_view(n))
            .map(|v| format!("{}={}", v.name, v.annotation(keys::REBOOT_OK).unwrap_or("")))
            .collect()
    }

    #[test]
    fn view_cache_follows_the_objects() {
        let names = |v: &[NodeView]| -> Vec<String> {
            v.iter()
                .map(|v| format!("{}={}", v.name, v.annotation(keys::REBOOT_OK).unwrap_or("")))
                .collect()
        };
        let by_name = |nodes: &[&Arc<Node>]| -> BTreeMap<String, Arc<Node>> {
            nodes
                .iter()
                .map(|n| (n.name_any(), Arc::clone(n)))
                .collect()
        };
        let a = Arc::new(node("a", "1", "false"));
        let b = Arc::new(node("b", "1", "false"));
        let mut cache = ViewCache::default();
        assert_eq!(
            names(cache.update(&by_name(&[&a, &b]))),
            ["a=false", "b=false"]
        );
        // A changed object is converted again; an unchanged one is kept.
        let b2 = Arc::new(node("b", "2", "true"));
        assert_eq!(
            names(cache.update(&by_name(&[&a, &b2]))),
            ["a=false", "b=true"]
        );
        assert!(Arc::ptr_eq(&cache.nodes[0], &a));
        // One gone, another come at the same count: every position follows its object.
        let c = Arc::new(node("c", "1", "true"));
        assert_eq!(
            names(cache.update(&by_name(&[&b2, &c]))),
            ["b=true", "c=true"]
        );
        assert_eq!(names(cache.update(&by_name(&[&c]))), ["c=true"]);
        assert!(cache.update(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn overlay_keeps_our_writes_until_the_cache_catches_up() {
        let mut o = Overlay::default();
        o.record("10".into(), node("a", "11", "true"));
        o.record("11".into(), node("a", "12", "false"));
        let b = node("b", "5", "false");
        // The cache lags: our latest write wins.
        assert_eq!(
            ok_of(&mut o, &[node("a", "10", "x"), b.clone()]),
            ["a=false", "b=false"]
        );
        assert_eq!(
            ok_of(&mut o, &[node("a", "11", "true"), b.clone()]),
            ["a=false", "b=false"]
        );
        // Caught up (or moved past by someone else): the cache wins, the overlay is dropped.
        assert_eq!(
            ok_of(&mut o, &[node("a", "13", "y"), b.clone()]),
            ["a=y", "b=false"]
        );
        assert!(o.nodes.is_empty());
        assert_eq!(
            ok_of(&mut o, &[node("a", "10", "x"), b]),
            ["a=x", "b=false"]
        );
    }

    #[test]
    fn overlay_drops_deleted_nodes() {
        let mut o = Overlay::default();
        o.record("1".into(), node("a", "2", "true"));
        assert!(ok_of(&mut o, &[]).is_empty());
        assert!(o.nodes.is_empty());
    }

    #[test]
    fn taking_a_slot_is_told_apart() {
        let free = NodeView {
            name: "a".into(),
            ..Default::default()
        };
        let mut grant = NodePatch::new("a");
        grant.set_annotation(keys::REBOOT_OK, keys::TRUE);
        assert!(holds_slot_after(&free, &grant));
        let mut label = NodePatch::new("a");
        label.set_label(keys::BEFORE_REBOOT, keys::TRUE);
        assert!(holds_slot_after(&free, &label));
        let mut held = free.clone();
        held.annotations
            .insert(keys::REBOOT_OK.into(), "true".into());
        let mut release = NodePatch::new("a");
        release.set_annotation(keys::REBOOT_OK, keys::FALSE);
        assert!(!holds_slot_after(&held, &release));
    }

    #[test]
    fn slimming_keeps_what_the_operator_reads() {
        let full: Node = serde_json::from_value(json!({
            "metadata": {
                "name": "n1", "uid": "u1", "resourceVersion": "7",
                "annotations": {keys::REBOOT_NEEDED: "true", "hook.example.com/ok": "true"},
                "labels": {"topology.kubernetes.io/zone": "a"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"unschedulable": true, "podCIDR": "10.244.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "message": "fine"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"},
                ],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                "capacity": {"cpu": "4"},
                "images": [{"names": ["registry/image:tag"], "sizeBytes": 1}],
                "nodeInfo": {
                    "bootID": "b1", "machineID": "m", "systemUUID": "s", "kernelVersion": "k",
                    "osImage": "o", "containerRuntimeVersion": "c", "kubeletVersion": "v",
                    "kubeProxyVersion": "v", "operatingSystem": "linux", "architecture": "amd64",
                },
            },
        }))
        .unwrap();
        let mut slimmed = full.clone();
        slim(&mut slimmed);
        // Taints are the agent's business (its PreferNoSchedule taint); the operator drops them.
        let mut want = node_view(&full);
        assert!(!want.taints.is_empty());
        want.taints.clear();
        assert_eq!(node_view(&slimmed), want);
        assert_eq!(slimmed.uid().as_deref(), Some("u1"));
        assert_eq!(slimmed.resource_version().as_deref(), Some("7"));
        assert_eq!(
            serde_json::to_value(&slimmed).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {
                    "name": "n1", "uid": "u1", "resourceVersion": "7",
                    "annotations": {keys::REBOOT_NEEDED: "true", "hook.example.com/ok": "true"},
                    "labels": {"topology.kubernetes.io/zone": "a"},
                },
                "spec": {"unschedulable": true},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "nodeInfo": {
                        "bootID": "b1", "machineID": "", "systemUUID": "", "kernelVersion": "",
                        "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "",
                        "kubeProxyVersion": "", "operatingSystem": "", "architecture": "",
                    },
                },
            })
        );
        // A node without spec or status stays without them.
        let mut bare = node("b", "1", "false");
        slim(&mut bare);
        assert!(bare.spec.is_none() && bare.status.is_none());
    }
}
