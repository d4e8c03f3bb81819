//! The leader's work: a cache of Nodes kept from one watch, [`protocol::operator::decide`]
//! on every change and at [`Decision::next_check`], and the resulting patches.
//!
//! Each Node is converted to the protocol's view and parsed once per change, when its watch
//! event (or our patch's answer) arrives ([`CachedNode`]); every round's decision, quiet
//! check and Events share that, and the cache keeps nothing else of the Node.
//!
//! Patches are JSON merge patches carrying the `metadata.resourceVersion` of
//! the Node they were decided on, so a Node that changed in between answers
//! 409 and is decided again on the next event. They are applied in three
//! phases: first the patches on nodes that hold a reboot slot (withdrawals,
//! releases, their upkeep), then the ones that take a slot (`before-reboot`
//! label, `reboot-ok=true`), each as soon as the releases that landed cover it
//! and none after a release fails ([`write_slots`]), then the rest
//! (bookkeeping on nodes that neither hold nor take one, e.g.
//! `reboot-needed-since`), in the background, [`BOOKKEEPING_BATCH`] at a
//! time, while the next rounds release and grant (those decided while a batch
//! is in flight are queued for the next; a node with a bookkeeping write in
//! flight or queued gets no other bookkeeping patch until it lands; a grant on
//! it is written at once, and answers 409 if the batch got there first). So a
//! failed release can never leave more slot holders than the maximum, and a
//! grant never waits behind bookkeeping (5,000 nodes asking at once are 5,000
//! such patches). Each node's patch is on its own: one failure does not stop
//! the others, except that a failed release stops the grants not yet out.
//!
//! The watch's cache can lag behind our own writes. The Node a successful
//! patch returns is kept as an overlay until the cache has moved past the
//! resourceVersion the patch was decided on, so a decision never counts a
//! slot we just granted as free. A bookkeeping batch in flight is shown as it
//! will leave its nodes (it never changes who holds a slot) and taken back for
//! a node whose write fails, so rounds do not patch those nodes again meanwhile:
//! at 5,000 nodes asking at once, each round otherwise copied and re-parsed
//! thousands of views for patches it would not send.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use protocol::keys::{DEPARTED_SLOTS, SLOT_HOLDERS};
use protocol::node::{NodeView, Parsed, ParsedNode};
use protocol::operator::{
    ClusterInputs, Decision, DepartedSlot, OperatorConfig, SlotHolders, busy_parsed, decide_parsed,
    departed_slot, format_departed, format_slot_holders, unseen_departures,
};
use protocol::patch::NodePatch;
use shell::{Backoff, NodeWriter};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::Config;
use crate::events::{Observer, Reporter};
use crate::lease::{Leadership, WorkEnd};
use protocol::k8s::into_node_view;

/// How often the cached nodes are decided on again even without events (no
/// API request is made for it).
const RESYNC: Duration = Duration::from_secs(60);
/// After a 409, decide again after this long even if no event arrives.
const CONFLICT_RETRY: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// At most this many node patches in flight at once: a round's releases, then its grants, go
/// out in waves of this many (k = 250 frees up to 250 slots at once; 8 made that 32 waves of
/// round trips before the last grant).
const PATCH_CONCURRENCY: usize = 32;
/// At most this many bookkeeping patches (on nodes that neither hold nor take a slot, e.g.
/// `reboot-needed-since`) are written in one batch, in the background; the others are
/// queued and follow when it has landed. Rounds go on releasing and granting meanwhile (a
/// round that waited for them held freed slots back by hundreds of milliseconds at 5,000
/// nodes), deciding on the batch's and the queue's nodes as they will be left, so they are
/// not patched again in every round.
const BOOKKEEPING_BATCH: usize = 2048;

/// Bookkeeping patches in flight at once. Few: they are not urgent (a stamp carries the time
/// it was decided, not written), and each one in flight is one more request a release or a
/// grant waits behind at the API server (32 at once, as the slot writes, made the freed
/// slots of a 5,000-node rollout's first waves wait 80 to 140 ms).
const BOOKKEEPING_CONCURRENCY: usize = 4;

/// What became of one node's patch.
#[derive(Debug)]
enum Outcome {
    Applied(Box<CachedNode>),
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

/// The bookkeeping patches being written in the background, one batch at a time, and the
/// ones decided meanwhile, queued for the next batches.
#[derive(Default)]
struct Bookkeeping {
    /// The nodes they are for (in flight or queued), with the resourceVersion each was
    /// decided on: no other bookkeeping patch of theirs until they land.
    nodes: HashMap<String, String>,
    /// Decided while a batch was in flight. Shown in the overlay like the batch, so rounds
    /// do not decide them again while they wait: at 5,000 nodes asking at once, each round
    /// otherwise copied and re-parsed hundreds of views (decisions of 10 to 30 ms instead
    /// of 2 while the first batch was written).
    queued: Vec<(NodePatch, String)>,
    /// The batch in flight, and its nodes with the resourceVersion each was decided on.
    task: Option<AbortOnDropHandle<Vec<(NodePatch, String, Outcome)>>>,
    flying: Vec<(String, String)>,
    /// A write of the last batch failed: the next round backs off.
    failed: bool,
}

impl Bookkeeping {
    /// Queues `patches`; until they land, `overlay` shows their nodes as they will leave them
    /// (bookkeeping never changes who holds a slot, so no slot is counted wrong).
    fn add(
        &mut self,
        patches: Vec<(NodePatch, String)>,
        nodes: &[Arc<CachedNode>],
        overlay: &mut Overlay,
    ) {
        for (p, rv) in patches {
            if let Some(c) = find(nodes, &p.node) {
                let mut view = c.node.view.clone();
                p.apply(&mut view);
                let expected = CachedNode {
                    node: ParsedNode::new(view),
                    uid: c.uid.clone(),
                    // A later patch of ours on it is decided on the version the batch writes on.
                    resource_version: Some(rv.clone()),
                };
                overlay.expect(rv.clone(), expected);
            }
            self.nodes.insert(p.node.clone(), rv.clone());
            self.queued.push((p, rv));
        }
    }

    /// Starts writing the next [`BOOKKEEPING_BATCH`] queued patches unless a batch is in
    /// flight.
    fn start(&mut self, writer: &NodeWriter, leadership: &Leadership, keep: &Arc<Keep>) {
        if self.task.is_some() || self.queued.is_empty() {
            return;
        }
        let n = self.queued.len().min(BOOKKEEPING_BATCH);
        let batch: Vec<(NodePatch, String)> = self.queued.drain(..n).collect();
        self.flying = batch
            .iter()
            .map(|(p, rv)| (p.node.clone(), rv.clone()))
            .collect();
        let (writer, leadership, keep) = (writer.clone(), leadership.clone(), keep.clone());
        self.task = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            write_all(&writer, &leadership, batch, &keep).await
        })));
    }

    /// Nothing in flight or queued.
    fn idle(&self) -> bool {
        self.task.is_none() && self.queued.is_empty()
    }

    /// Waits for the batch in flight to land (pending while none is), then takes its
    /// outcomes into `overlay`. If its task died, nothing is known of its writes: what the
    /// overlay showed of its nodes is taken back and the next round backs off.
    async fn landed(&mut self, overlay: &mut Overlay) {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let joined = task.await;
        self.task = None;
        let flying = std::mem::take(&mut self.flying);
        for (node, _) in &flying {
            self.nodes.remove(node);
        }
        let mut r = RoundResult::default();
        match joined {
            Ok(outcomes) => settle(outcomes, overlay, &mut r),
            Err(e) => {
                warn!(error = %e, "the bookkeeping writes' task ended without an answer; deciding on the nodes as they are");
                for (node, rv) in &flying {
                    overlay.unexpect(node, rv);
                }
                r.failed = true;
            }
        }
        self.failed = r.failed;
    }
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
                warn!(node = %st.node, since = %protocol::node::format_time(st.since), reason = %st.reason, "node is stuck: it keeps its reboot slot until it comes back");
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
/// What the cache keeps of a Node's annotations and labels: what the operator reads. Our
/// protocol's keys (all under [`protocol::keys::PREFIX`]), the hook annotations
/// (`--before-reboot-annotations`, `--after-reboot-annotations`), and the labels
/// `--zone-label` and `--node-selector` name. Other controllers' annotations (some are
/// kilobytes of JSON) and labels are never read, so they are not kept.
pub(crate) struct Keep {
    annotations: BTreeSet<String>,
    labels: BTreeSet<String>,
}

impl Keep {
    pub(crate) fn new(cfg: &OperatorConfig) -> Self {
        let annotations = cfg
            .before_reboot_annotations
            .iter()
            .chain(&cfg.after_reboot_annotations)
            .cloned()
            .collect();
        let labels = std::iter::once(cfg.zone_label.clone())
            .chain(
                cfg.node_selector
                    .iter()
                    .flat_map(|s| s.requirements().iter().map(|r| r.key.clone())),
            )
            .collect();
        Keep {
            annotations,
            labels,
        }
    }

    fn annotation(&self, key: &str) -> bool {
        key.starts_with(protocol::keys::PREFIX) || self.annotations.contains(key)
    }

    fn label(&self, key: &str) -> bool {
        key.starts_with(protocol::keys::PREFIX) || self.labels.contains(key)
    }
}

/// One Node as the leader keeps it: its view (what [`Keep`] keeps) and state, converted and
/// parsed once when its watch event or our patch's answer arrives, then shared by every
/// round until the Node changes again; the uid (Events) and the resourceVersion (patch
/// preconditions, overlay). Nothing else of the Node is kept: its managedFields, images,
/// addresses, conditions, ... were most of the cache's memory at 5,000 nodes.
#[derive(Debug)]
pub(crate) struct CachedNode {
    pub(crate) node: ParsedNode,
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
}

impl CachedNode {
    pub(crate) fn new(mut node: Node, keep: &Keep) -> Self {
        let uid = node.metadata.uid.take();
        let resource_version = node.metadata.resource_version.take();
        let mut view = into_node_view(node);
        view.annotations.retain(|k, _| keep.annotation(k));
        view.labels.retain(|k, _| keep.label(k));
        // The agent's taint is the agent's business (it writes spec.taints whole).
        view.taints = Vec::new();
        CachedNode {
            node: ParsedNode::new(view),
            uid,
            resource_version,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.node.view.name
    }

    pub(crate) fn parsed(&self) -> Parsed<'_> {
        self.node.as_parsed()
    }
}

/// The position of node `name` in `nodes`, which are in name order.
fn find<'a>(nodes: &'a [Arc<CachedNode>], name: &str) -> Option<&'a Arc<CachedNode>> {
    nodes
        .binary_search_by(|c| c.name().cmp(name))
        .ok()
        .map(|i| &nodes[i])
}

/// The Nodes as the watch last showed them, by name, kept up to date from its events by the
/// watch's task (which converts and parses each Node there, off the rounds' path).
#[derive(Default)]
pub(crate) struct NodeCache {
    nodes: BTreeMap<String, Arc<CachedNode>>,
    /// During a (re)list: the nodes listed so far; they replace `nodes` when it is done.
    relist: Option<BTreeMap<String, Arc<CachedNode>>>,
    /// The first list is done.
    ready: bool,
    /// Nodes deleted since the last round took them (as last seen, and when), whether by a
    /// watch event or missing from a relist: one that held a slot leaves a departed slot.
    departures: Vec<(Arc<CachedNode>, chrono::DateTime<Utc>)>,
}

impl NodeCache {
    pub(crate) fn apply(&mut self, ev: watcher::Event<Node>, keep: &Keep) {
        let entry = |n: Node| {
            let c = CachedNode::new(n, keep);
            (c.name().to_string(), Arc::new(c))
        };
        match ev {
            watcher::Event::Init => self.relist = Some(BTreeMap::new()),
            watcher::Event::InitApply(n) => {
                let (name, c) = entry(n);
                self.relist.get_or_insert_default().insert(name, c);
            }
            watcher::Event::InitDone => {
                if let Some(nodes) = self.relist.take() {
                    let now = Utc::now();
                    let old = std::mem::replace(&mut self.nodes, nodes);
                    for (name, c) in old {
                        if !self.nodes.contains_key(&name) {
                            self.departures.push((c, now));
                        }
                    }
                }
                self.ready = true;
            }
            watcher::Event::Apply(n) => {
                let (name, c) = entry(n);
                self.nodes.insert(name, c);
            }
            watcher::Event::Delete(n) => {
                if let Some(c) = self.nodes.remove(&n.name_any()) {
                    self.departures.push((c, Utc::now()));
                }
            }
        }
    }

    /// The nodes deleted since the last call.
    fn take_departures(&mut self) -> Vec<(Arc<CachedNode>, chrono::DateTime<Utc>)> {
        std::mem::take(&mut self.departures)
    }

    /// The nodes in name order (shared, not copied).
    pub(crate) fn snapshot(&self) -> Vec<Arc<CachedNode>> {
        self.nodes.values().cloned().collect()
    }
}

/// What the overlay shows of one node: the resourceVersions our Node supersedes, and it.
type Shown = (Vec<String>, Arc<CachedNode>);

/// Our own writes, until the watch's cache has caught up with them.
///
/// Per node: the patched Node we got back, and the resourceVersions it
/// supersedes (the one our first patch was decided on, then each of our
/// later patches' bases). Every version in between is ours (each patch
/// carried its base as a precondition), so while the cache still shows one of
/// the superseded versions, our Node is newer; once it shows anything else,
/// the cache has caught up.
#[derive(Default)]
struct Overlay {
    nodes: HashMap<String, Shown>,
    /// Writes without an answer: node name -> resourceVersion decided on. Until
    /// we know the node's state after them, no new slot is granted.
    uncertain: HashMap<String, String>,
    /// Nodes shown as a bookkeeping write in flight will leave them ([`Overlay::expect`]):
    /// what was shown of them before.
    before_expected: HashMap<String, Option<Shown>>,
}

impl Overlay {
    /// Resolves uncertain writes against the current (overlaid) nodes:
    /// settled once the node has moved past the decided resourceVersion, or
    /// by reading it back. Returns whether some are still unresolved.
    async fn resolve(&mut self, api: &Api<Node>, current: &[Arc<CachedNode>], keep: &Keep) -> bool {
        let pending: Vec<(String, String)> = self.uncertain.drain().collect();
        for (name, decided_rv) in pending {
            let rv = find(current, &name).and_then(|n| n.resource_version.as_deref());
            if rv != Some(decided_rv.as_str()) {
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(10), api.get_opt(&name)).await {
                Ok(Ok(Some(node))) => {
                    if node.resource_version().as_deref() != Some(decided_rv.as_str()) {
                        self.record(decided_rv, CachedNode::new(node, keep));
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

    /// The nodes to decide on, in name order: the cache's, with our newer writes on top.
    fn merged(&mut self, cached: &[Arc<CachedNode>]) -> Vec<Arc<CachedNode>> {
        let mut nodes = cached.to_vec();
        self.nodes.retain(|name, (superseded, patched)| {
            match nodes.binary_search_by(|c| c.name().cmp(name)) {
                Ok(i)
                    if nodes[i]
                        .resource_version
                        .as_ref()
                        .is_some_and(|rv| superseded.contains(rv)) =>
                {
                    nodes[i] = patched.clone();
                    true
                }
                _ => false,
            }
        });
        nodes
    }

    /// Shows `expected` (a node as a write in flight, decided on `decided_rv`, will leave it)
    /// until the write lands ([`Overlay::record`]) or fails ([`Overlay::unexpect`]).
    fn expect(&mut self, decided_rv: String, expected: CachedNode) {
        let name = expected.name().to_string();
        self.before_expected
            .insert(name, self.nodes.get(expected.name()).cloned());
        self.record(decided_rv, expected);
    }

    /// The write decided on `decided_rv` did not happen (or may not have): what
    /// [`Overlay::expect`] showed of `node` gives way to what was shown before, unless a
    /// later write of ours replaced it.
    fn unexpect(&mut self, node: &str, decided_rv: &str) {
        let Some(before) = self.before_expected.remove(node) else {
            return;
        };
        if let Some((_, shown)) = self.nodes.get(node)
            && shown.resource_version.as_deref() == Some(decided_rv)
        {
            match before {
                Some(entry) => self.nodes.insert(node.to_string(), entry),
                None => self.nodes.remove(node),
            };
        }
    }

    /// Records the Node a write decided on `decided_rv` produced.
    fn record(&mut self, decided_rv: String, patched: CachedNode) {
        let name = patched.name().to_string();
        if patched.resource_version.as_deref() != Some(&decided_rv) {
            // A real answer, not an expectation.
            self.before_expected.remove(&name);
        }
        let patched = Arc::new(patched);
        match self.nodes.get_mut(&name) {
            Some((superseded, prev)) if prev.resource_version.as_deref() == Some(&decided_rv) => {
                superseded.push(decided_rv);
                *prev = patched;
            }
            _ => {
                self.nodes.insert(name, (vec![decided_rv], patched));
            }
        }
    }
}

#[tracing::instrument(name = "patch", skip_all, fields(node = %patch.node))]
async fn apply_one(
    writer: &NodeWriter,
    leadership: &Leadership,
    patch: &NodePatch,
    resource_version: &str,
    keep: &Keep,
) -> Outcome {
    let Some(left) = leadership.time_left() else {
        return Outcome::NotLeader;
    };
    debug!(change = %describe(patch), "patching node");
    match tokio::time::timeout(left, writer.patch(patch, Some(resource_version))).await {
        // Converted at once: a phase holds every answer until all its patches are done.
        Ok(Ok(node)) => Outcome::Applied(Box::new(CachedNode::new(node, keep))),
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

/// Writes the bookkeeping patches, [`BOOKKEEPING_CONCURRENCY`] at a time.
async fn write_all(
    writer: &NodeWriter,
    leadership: &Leadership,
    patches: Vec<(NodePatch, String)>,
    keep: &Keep,
) -> Vec<(NodePatch, String, Outcome)> {
    stream::iter(patches)
        .map(|(p, rv)| async move {
            let o = apply_one(writer, leadership, &p, &rv, keep).await;
            (p, rv, o)
        })
        .buffer_unordered(BOOKKEEPING_CONCURRENCY)
        .collect()
        .await
}

/// What [`write_slots`] did.
struct SlotWrites {
    persisted: Result<(), String>,
    /// Milliseconds into the round when the Lease write and the last release returned.
    persisted_ms: f64,
    released_ms: f64,
    /// Grants not written: the round may not grant, or a release or the Lease write did not
    /// succeed.
    held_back: usize,
    outcomes: Vec<(NodePatch, String, Outcome)>,
}

/// How many of a round's grants may be out once some of its releases landed.
#[derive(Debug, Clone, Copy)]
struct GrantPlan {
    grants: usize,
    /// The releases that free a slot.
    freeing: usize,
    pipelined: bool,
    may_grant: bool,
}

impl GrantPlan {
    /// The decision granted `grants` counting on `freeing` slots to be freed, so at least
    /// `grants - freeing` were free before it: that many grants need no release, and each
    /// freeing release that lands covers one more. Not pipelined (per-zone maximums: a
    /// grant may count on a release in its own zone only), none before every release landed.
    fn allowed(&self, landed_freeing: usize, releases_left: usize) -> usize {
        if !self.may_grant {
            0
        } else if self.pipelined {
            (self.grants.saturating_sub(self.freeing) + landed_freeing).min(self.grants)
        } else if releases_left == 0 {
            self.grants
        } else {
            0
        }
    }
}

/// Writes a round's slot changes: the slot records on the Lease and the releases at once,
/// then each grant as soon as the records are on the Lease and the releases that landed
/// cover it ([`GrantPlan::allowed`]), so a freed slot is granted one round trip after its
/// release rather than after the round's last one. The grants out are never more than the
/// slots free before the round plus the releases that landed, so a release that fails
/// never leaves more holders than the maximum; once one fails (or answers anything but
/// success), no further grant goes out this round. Until the releases land, the record
/// still names their nodes: it never shows fewer holders than there are.
#[allow(clippy::too_many_arguments)]
async fn write_slots(
    writer: &NodeWriter,
    leadership: &Leadership,
    keep: &Keep,
    records: &mut SlotRecords,
    release: Vec<(NodePatch, String, bool)>,
    acquire: Vec<(NodePatch, String)>,
    plan: GrantPlan,
    ms: &impl Fn() -> f64,
) -> SlotWrites {
    let mut releases_left = release.len();
    let mut releases = release.into_iter();
    let mut grants = acquire.into_iter();
    let (mut granted, mut landed_freeing, mut release_failed) = (0, 0, false);
    let write = |p: NodePatch, rv: String, release: Option<bool>| async move {
        let o = apply_one(writer, leadership, &p, &rv, keep).await;
        (p, rv, release, o)
    };
    let mut writes = FuturesUnordered::new();
    let persist = records.persist(leadership);
    tokio::pin!(persist);
    let mut persisted = None;
    let mut out = SlotWrites {
        persisted: Ok(()),
        persisted_ms: 0.0,
        released_ms: ms(),
        held_back: 0,
        outcomes: Vec::new(),
    };
    loop {
        while writes.len() < PATCH_CONCURRENCY {
            if let Some((p, rv, frees)) = releases.next() {
                writes.push(write(p, rv, Some(frees)));
            } else if matches!(persisted, Some(Ok(())))
                && !release_failed
                && granted < plan.allowed(landed_freeing, releases_left)
                && let Some((p, rv)) = grants.next()
            {
                granted += 1;
                writes.push(write(p, rv, None));
            } else {
                break;
            }
        }
        if writes.is_empty() && persisted.is_some() {
            break;
        }
        tokio::select! {
            p = &mut persist, if persisted.is_none() => {
                persisted = Some(p);
                out.persisted_ms = ms();
            }
            Some((p, rv, release, o)) = writes.next(), if !writes.is_empty() => {
                if let Some(frees) = release {
                    releases_left -= 1;
                    if releases_left == 0 {
                        out.released_ms = ms();
                    }
                    match o {
                        Outcome::Applied(_) => landed_freeing += usize::from(frees),
                        _ => release_failed = true,
                    }
                }
                out.outcomes.push((p, rv, o));
            }
        }
    }
    out.persisted = persisted.unwrap_or(Ok(()));
    out.held_back = grants.len();
    out
}

/// Takes in the outcomes of writes: our new Nodes into the overlay, failures into `result`.
fn settle(
    outcomes: Vec<(NodePatch, String, Outcome)>,
    overlay: &mut Overlay,
    result: &mut RoundResult,
) {
    for (p, rv, outcome) in outcomes {
        if !matches!(outcome, Outcome::Applied(_)) {
            overlay.unexpect(&p.node, &rv);
        }
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
    /// Kept up to date by the watch's task.
    cache: Arc<Mutex<NodeCache>>,
    keep: Arc<Keep>,
    overlay: Overlay,
    problems: ProblemLog,
    observer: Observer,
    records: SlotRecords,
    bookkeeping: Bookkeeping,
}

/// The reboot slots of deleted Nodes ([`DepartedSlot`]) and the nodes that hold or are about
/// to hold one: kept by the leader, mirrored in the Lease's
/// [`protocol::keys::DEPARTED_SLOTS`] and [`protocol::keys::SLOT_HOLDERS`] annotations so the
/// next leader counts them too, including a holder deleted while no leader watched.
struct SlotRecords {
    leases: Api<Lease>,
    lease_name: String,
    slots: BTreeMap<String, DepartedSlot>,
    /// The holders as the Lease should record them: a superset of the nodes that hold a slot,
    /// written before any grant.
    holders: SlotHolders,
    /// What the Lease carries as far as we know (None: unknown, write it).
    persisted: Option<(BTreeMap<String, DepartedSlot>, SlotHolders)>,
    /// The Lease as our last write returned it: the next write replaces it with its
    /// resourceVersion (a 409 after a renewal reads it again).
    lease: Option<Lease>,
    /// An annotation did not parse: no new grants until it is fixed.
    malformed: Option<String>,
}

impl SlotRecords {
    /// Takes over what the Lease carries (at the start of a leadership).
    fn adopt(&mut self, on_lease: Result<(BTreeMap<String, DepartedSlot>, SlotHolders), String>) {
        match on_lease {
            Ok((slots, holders)) => {
                for (node, s) in &slots {
                    warn!(node = %node, since = %protocol::node::format_time(s.since), "a node deleted while it held a reboot slot still counts against the maximums (recorded on the Lease by the previous leader)");
                }
                if let Some(e) = self.malformed.take() {
                    info!(problem = %e, "the Lease's records of reboot slots are well-formed again");
                }
                self.persisted = Some((slots.clone(), holders.clone()));
                self.slots = slots;
                self.holders = holders;
            }
            Err(e) => {
                if self.malformed.as_ref() != Some(&e) {
                    warn!(lease = %self.lease_name, problem = %e, "no new reboots");
                }
                self.malformed = Some(e);
            }
        }
    }

    /// At the start of a leadership, with the first list done: recorded holders no Node of
    /// that name exists for were deleted while no leader watched.
    fn departed_unseen(&mut self, present: impl Fn(&str) -> bool) {
        let gone = unseen_departures(&self.holders, &self.slots, present, Utc::now());
        for (node, slot) in gone {
            warn!(node = %node, "a node recorded on the Lease as holding a reboot slot is gone (deleted while no leader watched): its slot counts against the maximums until a node of that name is Ready again or --reboot-timeout has passed");
            self.slots.insert(node, slot);
        }
    }

    /// Records a slot holder's deletion.
    fn departed(&mut self, node: &CachedNode, at: chrono::DateTime<Utc>, cfg: &OperatorConfig) {
        let p = node.parsed();
        let Some(slot) = departed_slot(p.view, p.state.ok(), cfg, at) else {
            return;
        };
        if self.slots.contains_key(node.name()) {
            return;
        }
        warn!(node = %node.name(), "a node was deleted while it held a reboot slot: its machine may still be going down or booting, so the slot counts against the maximums until a node of that name is Ready again or --reboot-timeout has passed");
        self.slots.insert(node.name().to_string(), slot);
    }

    /// The holders to record given those of this round (holding now, or granted by it):
    /// rewritten (and pruned) only when one is missing, or when none is left, so a rollout
    /// costs a write per round that grants, not per release.
    fn want_holders(&mut self, now: SlotHolders) {
        let missing = now.keys().any(|n| !self.holders.contains_key(n));
        if missing || (now.is_empty() && !self.holders.is_empty()) {
            self.holders = now;
        }
    }

    /// Writes both records to the Lease if they changed (three tries on conflicts).
    async fn persist(&mut self, leadership: &Leadership) -> Result<(), String> {
        let want = (self.slots.clone(), self.holders.clone());
        if self.persisted.as_ref() == Some(&want) {
            return Ok(());
        }
        let departed = format_departed(&want.0);
        let holders = format_slot_holders(&want.1);
        let mut last = String::new();
        for _ in 0..3 {
            let Some(left) = leadership.time_left() else {
                return Err("leadership ended".into());
            };
            let cached = self.lease.take();
            let write = async {
                let mut lease = match cached {
                    Some(l) => l,
                    None => self.leases.get(&self.lease_name).await?,
                };
                let a = lease
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default);
                for (key, value) in [(DEPARTED_SLOTS, &departed), (SLOT_HOLDERS, &holders)] {
                    match value {
                        Some(v) => a.insert(key.to_string(), v.clone()),
                        None => a.remove(key),
                    };
                }
                self.leases
                    .replace(&self.lease_name, &Default::default(), &lease)
                    .await
            };
            match tokio::time::timeout(left, write).await {
                Ok(Ok(lease)) => {
                    self.lease = Some(lease);
                    self.persisted = Some(want);
                    return Ok(());
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 409 => last = s.message,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("timed out".into()),
            }
        }
        Err(format!("conflicts: {last}"))
    }
}

impl Leader {
    /// Decides once on the current view and applies the patches.
    #[tracing::instrument(name = "round", skip_all, fields(nodes))]
    async fn round(
        &mut self,
        inputs: &ClusterInputs,
    ) -> (RoundResult, Option<chrono::DateTime<Utc>>) {
        let Leader {
            writer,
            cfg,
            leadership,
            cache,
            keep,
            overlay,
            problems,
            observer,
            records,
            bookkeeping,
        } = self;
        let t0 = Instant::now();
        let (cached, departures) = {
            let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
            (c.snapshot(), c.take_departures())
        };
        for (gone, at) in departures {
            // Our own write may be newer than the watch's last view of it.
            let last = overlay
                .nodes
                .get(gone.name())
                .map_or(&gone, |(_, patched)| patched);
            records.departed(last, at, &cfg.operator);
        }
        tracing::Span::current().record("nodes", cached.len());
        let mut merged = overlay.merged(&cached);
        let mut unresolved = false;
        if !overlay.uncertain.is_empty() {
            unresolved = overlay.resolve(writer.api(), &merged, keep).await;
            merged = overlay.merged(&cached);
        }
        drop(cached);
        let now = Utc::now();
        let mut inputs = Cow::Borrowed(inputs);
        if !records.slots.is_empty() || records.malformed.is_some() {
            let i = inputs.to_mut();
            i.departed = records.slots.clone();
            i.blockers.extend(records.malformed.clone());
        }
        let inputs = &*inputs;
        let (decision, quiet) = {
            let parsed: Vec<Parsed<'_>> = merged.iter().map(|c| c.parsed()).collect();
            let decision = decide_parsed(&parsed, &cfg.operator, inputs, now);
            let quiet = parsed.iter().all(|p| !busy_parsed(*p, &cfg.operator));
            (decision, quiet)
        };
        problems.update(&decision);
        for (node, why) in &decision.departed_ended {
            info!(node = %node, why = %why, "the reboot slot of a deleted node no longer counts");
        }
        records.slots = decision.departed.clone();
        let phases = phases(&merged, &decision.patches, &cfg.operator);
        records.want_holders(holders_after(
            &merged,
            &decision.patches,
            &phases,
            &cfg.operator,
        ));
        // Milliseconds since the round started, for its debug line.
        let ms = || t0.elapsed().as_secs_f64() * 1e3;
        let t_decided = ms();
        // The decision keeps its patches for the Events below (which node it picked, the
        // slots in use after it); only the ones written now are copied.
        let (mut release, mut acquire, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for (p, phase) in decision.patches.iter().zip(phases) {
            match phase {
                Some((Phase::Release(frees), rv)) => release.push((p.clone(), rv, frees)),
                Some((Phase::Acquire, rv)) => acquire.push((p.clone(), rv)),
                Some((Phase::Rest, rv)) if !bookkeeping.nodes.contains_key(&p.node) => {
                    rest.push((p.clone(), rv));
                }
                _ => {}
            }
        }
        let counts = (release.len(), acquire.len(), rest.len());
        let mut result = RoundResult {
            failed: unresolved || std::mem::take(&mut bookkeeping.failed),
            ..Default::default()
        };
        let plan = GrantPlan {
            grants: acquire.len(),
            freeing: release.iter().filter(|r| r.2).count(),
            pipelined: cfg.operator.max_rebooting_per_zone.is_none(),
            // An unresolved write or a failed bookkeeping batch: no grant this round.
            may_grant: !result.failed,
        };
        let written = write_slots(
            writer, leadership, keep, records, release, acquire, plan, &ms,
        )
        .await;
        if let Err(e) = &written.persisted {
            warn!(error = %e, "cannot record the reboot slots on the Lease; no new grants until it is done; retrying with backoff");
            result.failed = true;
        }
        if written.held_back > 0 {
            debug!(
                waiting = written.held_back,
                "not granting new slots until the other writes of this decision succeed"
            );
        }
        settle(written.outcomes, overlay, &mut result);
        result.quiet = cfg.release_lease_after_idle.is_some()
            && !unresolved
            && records.slots.is_empty()
            && records.holders.is_empty()
            && records.malformed.is_none()
            && decision.patches.is_empty()
            && decision.stuck.is_empty()
            && decision.problems.is_empty()
            && bookkeeping.idle()
            && quiet;
        let (t_persisted, t_released) = (written.persisted_ms, written.released_ms);
        let t_granted = ms();
        // Events, notifications and node metrics (never waits), after the slot writes.
        observer.observe(&merged, &decision, &cfg.operator, inputs, now);
        if !rest.is_empty() {
            bookkeeping.add(rest, &merged, overlay);
        }
        bookkeeping.start(writer, leadership, keep);
        drop(merged);
        debug!(
            release = counts.0,
            acquire = counts.1,
            bookkeeping = counts.2,
            decided_ms = t_decided,
            recorded_ms = t_persisted,
            released_ms = t_released,
            granted_ms = t_granted,
            done_ms = ms(),
            "round done"
        );
        (result, decision.next_check)
    }
}

/// When a patch is written in a round: releases first (they free slots), then grants, then
/// bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// On a node that holds a slot; true if the patch frees it (the node no longer counts
    /// against the maximum once it lands).
    Release(bool),
    /// Makes its node take a slot.
    Acquire,
    Rest,
}

/// Each patch's phase with the resourceVersion it was decided on (None: its node is not in
/// the view, or has no resourceVersion). Computed once per round: the slot holders to
/// record and the order of the writes both come from it.
fn phases(
    nodes: &[Arc<CachedNode>],
    patches: &[NodePatch],
    cfg: &OperatorConfig,
) -> Vec<Option<(Phase, String)>> {
    patches
        .iter()
        .map(|p| {
            let c = find(nodes, &p.node)?;
            let rv = c.resource_version.clone()?;
            let phase = if c.parsed().holds_slot() {
                let (v, state) = (&c.node.view, c.node.state.as_ref().ok());
                let frees = cfg.counts_against_max_parsed(v, state)
                    && !cfg.counts_against_max_after(v, state, p);
                Phase::Release(frees)
            } else if p.takes_slot() {
                Phase::Acquire
            } else {
                Phase::Rest
            };
            Some((phase, rv))
        })
        .collect()
}

/// The managed nodes that hold a slot now or take one in this decision, with their zones.
fn holders_after(
    nodes: &[Arc<CachedNode>],
    patches: &[NodePatch],
    phases: &[Option<(Phase, String)>],
    cfg: &OperatorConfig,
) -> SlotHolders {
    let zone = |v: &NodeView| cfg.zone_of(v).map(str::to_string);
    let mut out = SlotHolders::new();
    for c in nodes {
        let v = &c.node.view;
        if c.parsed().holds_slot() && cfg.manages(v) {
            out.insert(v.name.clone(), zone(v));
        }
    }
    for (p, phase) in patches.iter().zip(phases) {
        if let Some((Phase::Acquire, _)) = phase
            && let Some(c) = find(nodes, &p.node)
        {
            out.insert(p.node.clone(), zone(&c.node.view));
        }
    }
    out
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
    let cache = Arc::new(Mutex::new(NodeCache::default()));
    let keep = Arc::new(Keep::new(&cfg.operator));
    let (ready_tx, mut ready) = tokio::sync::watch::channel(false);
    let changed = Arc::new(Notify::new());
    let node_watch = crate::leader_needed::node_watch(&cfg.operator);
    let inputs = crate::inputs::Inputs::start(&client, &cfg, changed.clone());
    let events = {
        let (changed, cache, keep) = (changed.clone(), cache.clone(), keep.clone());
        let stream = watcher(writer.api().clone(), node_watch).default_backoff();
        async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(ev) => {
                        // Converted and parsed here, once per change; the lock is never held
                        // across an await.
                        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                        c.apply(ev, &keep);
                        let is_ready = c.ready;
                        drop(c);
                        if is_ready {
                            ready_tx.send_if_modified(|r| !std::mem::replace(r, true));
                        }
                        changed.notify_one();
                    }
                    Err(e) => warn!(error = %e, "watching nodes failed; retrying with backoff"),
                }
            }
        }
    };
    let _events = AbortOnDropHandle::new(tokio::spawn(events));

    tokio::select! {
        _ = leadership.cancelled() => return Ok(WorkEnd::LeadershipEnded),
        r = ready.wait_for(|r| *r) => {
            r.map_err(|e| anyhow::anyhow!("node watch stopped: {e}"))?;
        }
    }
    tokio::select! {
        _ = leadership.cancelled() => return Ok(WorkEnd::LeadershipEnded),
        r = inputs.wait_until_ready() => r?,
    }
    let listed = cache.lock().unwrap_or_else(|e| e.into_inner()).nodes.len();
    info!(nodes = listed, "watching nodes; deciding");

    let mut leader = Leader {
        writer,
        cfg: cfg.clone(),
        leadership: leadership.clone(),
        cache,
        keep,
        overlay: Overlay::default(),
        problems: ProblemLog::default(),
        observer,
        records: SlotRecords {
            leases: Api::namespaced(client.clone(), &cfg.namespace),
            lease_name: cfg.lease_name.clone(),
            slots: BTreeMap::new(),
            holders: SlotHolders::new(),
            persisted: None,
            lease: None,
            malformed: None,
        },
        bookkeeping: Bookkeeping::default(),
    };
    leader.records.adopt(inputs.departed_on_lease());
    {
        let cache = leader.cache.lock().unwrap_or_else(|e| e.into_inner());
        leader
            .records
            .departed_unseen(|n| cache.nodes.contains_key(n));
    }
    let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
    let mut idle_since: Option<Instant> = None;
    loop {
        if !leadership.may_act() {
            return Ok(WorkEnd::LeadershipEnded);
        }
        if leader.records.malformed.is_some() {
            leader.records.adopt(inputs.departed_on_lease());
        }
        let (result, next_check) = leader.round(&inputs.current()).await;
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
            _ = leader.bookkeeping.landed(&mut leader.overlay) => {}
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
    use protocol::k8s::node_view;
    use protocol::keys;
    use serde_json::json;

    fn cached(n: Node) -> CachedNode {
        CachedNode::new(n, &Keep::new(&OperatorConfig::default()))
    }

    fn node(name: &str, rv: &str, ok: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "resourceVersion": rv, "annotations": {keys::REBOOT_OK: ok}},
        }))
        .unwrap()
    }

    fn names(nodes: &[Arc<CachedNode>]) -> Vec<String> {
        nodes
            .iter()
            .map(|c| &c.node.view)
            .map(|v| format!("{}={}", v.name, v.annotation(keys::REBOOT_OK).unwrap_or("")))
            .collect()
    }

    fn ok_of(o: &mut Overlay, nodes: &[Node]) -> Vec<String> {
        let nodes: Vec<Arc<CachedNode>> =
            nodes.iter().cloned().map(|n| Arc::new(cached(n))).collect();
        names(&o.merged(&nodes))
    }

    #[test]
    fn node_cache_follows_the_watch() {
        let keep = Keep::new(&OperatorConfig::default());
        let mut cache = NodeCache::default();
        cache.apply(watcher::Event::Init, &keep);
        cache.apply(watcher::Event::InitApply(node("b", "1", "false")), &keep);
        cache.apply(watcher::Event::InitApply(node("a", "1", "false")), &keep);
        // Until the list is done, nothing is there.
        assert!(!cache.ready && cache.snapshot().is_empty());
        cache.apply(watcher::Event::InitDone, &keep);
        assert!(cache.ready);
        assert_eq!(names(&cache.snapshot()), ["a=false", "b=false"]);
        let a = cache.snapshot()[0].clone();
        // A changed node is parsed again; an unchanged one is the same object.
        cache.apply(watcher::Event::Apply(node("b", "2", "true")), &keep);
        let now = cache.snapshot();
        assert_eq!(names(&now), ["a=false", "b=true"]);
        assert!(Arc::ptr_eq(&now[0], &a));
        assert_eq!(now[1].resource_version.as_deref(), Some("2"));
        assert!(now[1].node.state.as_ref().is_ok_and(|s| s.reboot_ok));
        cache.apply(watcher::Event::Delete(node("a", "1", "false")), &keep);
        assert_eq!(names(&cache.snapshot()), ["b=true"]);
        // A relist replaces the nodes once it is done; in between the old ones stay.
        cache.apply(watcher::Event::Init, &keep);
        cache.apply(watcher::Event::InitApply(node("c", "3", "yes")), &keep);
        assert_eq!(names(&cache.snapshot()), ["b=true"]);
        cache.apply(watcher::Event::InitDone, &keep);
        let now = cache.snapshot();
        assert_eq!(names(&now), ["c=yes"]);
        assert!(now[0].node.state.is_err());
        assert!(find(&now, "c").is_some() && find(&now, "b").is_none());
    }

    #[test]
    fn overlay_keeps_our_writes_until_the_cache_catches_up() {
        let mut o = Overlay::default();
        o.record("10".into(), cached(node("a", "11", "true")));
        o.record("11".into(), cached(node("a", "12", "false")));
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
    fn overlay_shows_a_bookkeeping_write_in_flight_until_it_lands_or_fails() {
        let expected = |name: &str, rv: &str, ok: &str| {
            let mut c = cached(node(name, rv, ok));
            c.resource_version = Some(rv.into());
            c
        };
        let mut o = Overlay::default();
        // In flight on a's version 10: shown as it will be; when it lands, the answer.
        o.expect("10".into(), expected("a", "10", "x"));
        assert_eq!(ok_of(&mut o, &[node("a", "10", "y")]), ["a=x"]);
        o.record("10".into(), cached(node("a", "11", "x")));
        o.unexpect("a", "10");
        assert_eq!(ok_of(&mut o, &[node("a", "10", "y")]), ["a=x"]);
        assert_eq!(ok_of(&mut o, &[node("a", "11", "x")]), ["a=x"]);
        // It fails: the cache's version again ...
        o.expect("11".into(), expected("a", "11", "z"));
        assert_eq!(ok_of(&mut o, &[node("a", "11", "x")]), ["a=z"]);
        o.unexpect("a", "11");
        assert_eq!(ok_of(&mut o, &[node("a", "11", "x")]), ["a=x"]);
        // ... or our earlier write the cache has not caught up with.
        o.record("11".into(), cached(node("a", "12", "w")));
        o.expect("12".into(), expected("a", "12", "z"));
        assert_eq!(ok_of(&mut o, &[node("a", "11", "x")]), ["a=z"]);
        o.unexpect("a", "12");
        assert_eq!(ok_of(&mut o, &[node("a", "11", "x")]), ["a=w"]);
    }

    #[test]
    fn overlay_drops_deleted_nodes() {
        let mut o = Overlay::default();
        o.record("1".into(), cached(node("a", "2", "true")));
        assert!(ok_of(&mut o, &[]).is_empty());
        assert!(o.nodes.is_empty());
    }

    #[test]
    fn patches_are_told_apart_by_phase() {
        // a and c hold no slot, b holds one; d is not in the view.
        let nodes: Vec<Arc<CachedNode>> = [
            node("a", "1", "false"),
            node("b", "2", "true"),
            node("c", "3", "false"),
        ]
        .into_iter()
        .map(|n| Arc::new(cached(n)))
        .collect();
        let mut grant = NodePatch::new("a");
        grant.set_annotation(keys::REBOOT_OK, keys::TRUE);
        let mut release = NodePatch::new("b");
        release.set_annotation(keys::REBOOT_OK, keys::FALSE);
        let mut label = NodePatch::new("c");
        label.set_label(keys::BEFORE_REBOOT, keys::TRUE);
        let mut bookkeeping = NodePatch::new("c");
        bookkeeping.set_annotation(keys::REBOOT_NEEDED_SINCE, "2026-12-07T00:00:00Z");
        // Upkeep on a holder that leaves it holding: written with the releases, frees nothing.
        let mut upkeep = NodePatch::new("b");
        upkeep.set_annotation(keys::REBOOT_NEEDED_SINCE, "2026-12-07T00:00:00Z");
        let gone = NodePatch::new("d");
        let patches = [grant, release, label, bookkeeping, upkeep, gone];
        let cfg = OperatorConfig::default();
        assert_eq!(
            phases(&nodes, &patches, &cfg),
            [
                Some((Phase::Acquire, "1".to_string())),
                Some((Phase::Release(true), "2".to_string())),
                Some((Phase::Acquire, "3".to_string())),
                Some((Phase::Rest, "3".to_string())),
                Some((Phase::Release(false), "2".to_string())),
                None,
            ]
        );
        let holders = holders_after(&nodes, &patches, &phases(&nodes, &patches, &cfg), &cfg);
        assert_eq!(holders.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn the_cache_keeps_what_the_operator_reads() {
        let full: Node = serde_json::from_value(json!({
            "metadata": {
                "name": "n1", "uid": "u1", "resourceVersion": "7",
                "annotations": {
                    keys::REBOOT_NEEDED: "true", "hook.example.com/ok": "true",
                    "other.example.com/big": "{\"json\": \"the operator never reads\"}",
                },
                "labels": {
                    "topology.kubernetes.io/zone": "a", "role": "worker",
                    "kubernetes.io/hostname": "n1", keys::BEFORE_REBOOT: "true",
                },
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
        let cfg = OperatorConfig {
            after_reboot_annotations: vec!["hook.example.com/ok".into()],
            node_selector: Some(protocol::selector::LabelSelector::parse("role=worker").unwrap()),
            ..OperatorConfig::default()
        };
        let c = CachedNode::new(full.clone(), &Keep::new(&cfg));
        // Our keys, the hooks, the zone and the selector's labels; not the others'
        // annotations and labels, nor the agent's taints.
        let mut want = node_view(&full);
        assert!(!want.taints.is_empty());
        want.taints.clear();
        want.annotations.remove("other.example.com/big");
        want.labels.remove("kubernetes.io/hostname");
        assert_eq!(c.node.view, want);
        assert_eq!(c.node.view.labels.len(), 3);
        assert_eq!(c.node.state, protocol::node::NodeState::parse(&want));
        assert_eq!(c.uid.as_deref(), Some("u1"));
        assert_eq!(c.resource_version.as_deref(), Some("7"));
        // Without hooks or a selector, only what the protocol reads stays.
        let c = cached(full);
        assert_eq!(c.node.view.annotations.len(), 1);
        assert_eq!(
            c.node.view.labels.keys().collect::<Vec<_>>(),
            [keys::BEFORE_REBOOT, "topology.kubernetes.io/zone"]
        );
        // A node without spec or status: not Ready, no boot ID.
        let bare = cached(node("b", "1", "false"));
        assert!(!bare.node.view.ready && bare.node.view.boot_id.is_empty());
    }

    proptest::proptest! {
        /// However the releases land, the grants out never exceed the slots free before the
        /// round plus the freeing releases landed (so a release that never lands cannot
        /// leave one holder too many), never exceed the decision's grants, and are all out
        /// once every release landed.
        #[test]
        fn grants_out_are_covered_by_free_slots_and_landed_releases(
            grants in 0usize..40,
            freeing in 0usize..40,
            other_releases in 0usize..5,
            spare in 0usize..5,
            landed in 0usize..40,
            others_landed in 0usize..5,
            pipelined: bool,
            may_grant: bool,
        ) {
            // The decision never grants more than the free slots and the slots it frees.
            let free_before = grants.saturating_sub(freeing) + spare;
            let landed = landed.min(freeing);
            let others_landed = others_landed.min(other_releases);
            let releases_left = (freeing - landed) + (other_releases - others_landed);
            let plan = GrantPlan { grants, freeing, pipelined, may_grant };
            let allowed = plan.allowed(landed, releases_left);
            proptest::prop_assert!(allowed <= grants);
            proptest::prop_assert!(allowed <= free_before + landed);
            if !may_grant {
                proptest::prop_assert_eq!(allowed, 0);
            } else if releases_left == 0 {
                proptest::prop_assert_eq!(allowed, grants);
            }
            if !pipelined && releases_left > 0 {
                proptest::prop_assert_eq!(allowed, 0);
            }
        }
    }
}
