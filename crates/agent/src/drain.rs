//! Draining the node through the Eviction API (policy/v1), so PodDisruptionBudgets hold.
//!
//! What is drained, in this order (see [`classify`]):
//! - with `--drain-pod-selector`, only the pods it matches are looked at (kubectl drain's
//!   `--pod-selector`);
//! - pods in `kube-system` are left alone, as FLUO does (it never evicts them, to keep the
//!   control plane and node-critical add-ons running until the reboot), unless
//!   `--drain-kube-system`;
//! - mirror pods (annotation `kubernetes.io/config.mirror`) and pods controlled by a
//!   DaemonSet are skipped (the kubelet and the DaemonSet controller own them);
//! - pods already terminating are waited for, unless their deletionTimestamp is older than
//!   `--skip-wait-for-delete-timeout` (then they count as gone, as in kubectl drain);
//! - finished pods (`Succeeded`/`Failed`) are deleted;
//! - pods without a controller are evicted only with `--force-drain`; otherwise the drain
//!   fails at once, naming them (they would not come back anywhere, so they are never
//!   removed silently);
//! - everything else is evicted.
//!
//! Before the first eviction the workloads (controllers) of the pods to evict are recorded on
//! the node ([`protocol::keys::EVICTED_PODS`]), so the operator keeps the slot after the
//! reboot until they run Ready again; a drain that cannot record them fails.
//!
//! Evictions run concurrently. `429 Too Many Requests` (a PodDisruptionBudget says not now)
//! and transient API errors are retried with backoff; `404` means the pod is already gone,
//! and so does a `409` after which a read finds no pod with that UID (a `409` may also be a
//! conflict on the PodDisruptionBudget's update with the pod still there: then it is
//! retried). Each request carries the pod's UID as a precondition, so a replacement pod with
//! the same name (a StatefulSet's) is never evicted by mistake. The drain then waits until
//! every pod is gone or replaced (UID change), watching the node's pods (no polling); each
//! pod must be gone within its grace period (plus [`DrainOptions::pod_delete_margin`]), and
//! the whole drain within [`DrainOptions::timeout`] (`--grace-period`). With
//! `--skip-wait-for-delete-timeout`, a pod still terminating that long after its
//! deletionTimestamp counts as gone instead of failing the drain.
//!
//! With `--exclude-from-load-balancers-wait`, the evictions start only that long after the
//! plan is recorded (the node was labelled out of load balancers just before the drain).
//! When every pod is gone, the drain waits up to `--volume-detach-timeout` for the node's
//! volumes to detach ([`wait_for_volumes`]), so a fast reboot does not leave them attached
//! (Multi-Attach errors where the pods start again); past it the reboot goes ahead.
//!
//! [`drain`] runs these steps in order: `list_pods`, `plan` (classify each; nothing touched
//! yet), `record_plan` (the record on the node), then `wait_until_gone`, which sends the
//! evictions and deletions (`request`, each retried on its own) and watches the pods go, and
//! last [`wait_for_volumes`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use protocol::evicted::EvictedPods;

use crate::recovery::workload_of;

mod volumes;
use shell::{Backoff, NodeWriter};
use volumes::wait_for_volumes;

/// The annotation the kubelet puts on mirror pods of static pods.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The namespace FLUO never drains.
pub const KUBE_SYSTEM: &str = "kube-system";

/// How to drain.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// The node to drain.
    pub node: String,
    /// The whole drain must finish within this (`--grace-period`).
    pub timeout: Duration,
    /// Evict pods without a controller too (`--force-drain`).
    pub force: bool,
    /// How long past its grace period a pod may take to disappear from the API
    /// (the kubelet reports the kill, then the API server removes the object).
    pub pod_delete_margin: Duration,
    /// Longest wait between retries of one eviction (429 or a transient error).
    pub retry_max: Duration,
    /// Counts eviction retries (`fluo_eviction_retries_total`), if set.
    pub metrics: Option<crate::metrics::Metrics>,
    /// `--drain-pod-selector`: only pods matching this label selector are drained.
    pub pod_selector: Option<String>,
    /// `--drain-kube-system`: drain kube-system's pods too.
    pub kube_system: bool,
    /// `--skip-wait-for-delete-timeout`: a pod this long past its deletionTimestamp counts
    /// as gone.
    pub skip_wait_for_delete: Option<Duration>,
    /// Wait this long after recording the plan before the first eviction
    /// (`--exclude-from-load-balancers-wait`).
    pub wait_before_evicting: Duration,
    /// `--volume-detach-timeout` (zero: do not wait).
    pub volume_detach_timeout: Duration,
    /// The API server's clock, which set the pods' deletionTimestamps.
    pub clock: shell::ServerClock,
}

impl DrainOptions {
    /// Defaults: no force, 10 s margin, retries at most every 5 s (as kubectl).
    pub fn new(node: impl Into<String>, timeout: Duration) -> Self {
        Self {
            node: node.into(),
            timeout,
            force: false,
            pod_delete_margin: Duration::from_secs(10),
            retry_max: Duration::from_secs(5),
            metrics: None,
            pod_selector: None,
            kube_system: false,
            skip_wait_for_delete: None,
            wait_before_evicting: Duration::ZERO,
            volume_detach_timeout: Duration::ZERO,
            clock: shell::ServerClock::default(),
        }
    }
}

/// What the drain does with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAction {
    /// Left alone, with the reason.
    Skip(&'static str),
    /// Already terminating: only wait for it.
    Wait,
    /// Finished: delete it.
    Delete,
    /// Evict it.
    Evict,
    /// No controller and no `--force-drain`: the drain fails.
    Blocked,
}

/// Decides what to do with a pod at `now` (see the module docs for the rules).
pub fn classify(pod: &Pod, opts: &DrainOptions, now: chrono::DateTime<chrono::Utc>) -> PodAction {
    if !opts.kube_system && pod.namespace().as_deref() == Some(KUBE_SYSTEM) {
        return PodAction::Skip("in kube-system (not drained without --drain-kube-system)");
    }
    if pod.annotations().contains_key(MIRROR_POD_ANNOTATION) {
        return PodAction::Skip("mirror pod");
    }
    let controller = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    if controller.is_some_and(|c| c.kind == "DaemonSet") {
        return PodAction::Skip("DaemonSet pod");
    }
    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        let past = now.timestamp() - deleted.0.as_second();
        if opts
            .skip_wait_for_delete
            .is_some_and(|skip| past > skip.as_secs() as i64)
        {
            return PodAction::Skip(SKIPPED_TERMINATING);
        }
        return PodAction::Wait;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return PodAction::Delete;
    }
    if controller.is_none() && !opts.force {
        return PodAction::Blocked;
    }
    PodAction::Evict
}

/// How long a read of a pod past its deadline may take before it counts as no answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a pod stuck in Terminating was left behind.
const SKIPPED_TERMINATING: &str = "still terminating past --skip-wait-for-delete-timeout";

/// What a successful drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainSummary {
    /// `namespace/name` of evicted pods.
    pub evicted: Vec<String>,
    /// `namespace/name` of deleted (finished) pods.
    pub deleted: Vec<String>,
    /// `namespace/name` of pods already terminating, waited for.
    pub waited: Vec<String>,
    /// `namespace/name` of skipped pods, with the reason.
    pub skipped: Vec<(String, &'static str)>,
    /// What became of the node's volumes after the pods were gone.
    pub volumes: Volumes,
}

/// The wait for the node's volumes to detach ([`wait_for_volumes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Volumes {
    /// Not waited for (`--volume-detach-timeout=0`).
    #[default]
    NotChecked,
    /// None attached (any more), after this long.
    Detached(Duration),
    /// Still attached or in use when the time was up (or they could not be looked at):
    /// what, for the Warning Event.
    NotDetached(String),
}

/// Why a drain failed. The message is complete on its own: it goes on the node.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DrainError {
    /// Pods without a controller, and no `--force-drain`.
    #[error(
        "pods without a controller would be lost: {} (use --force-drain to evict them)",
        .0.join(", ")
    )]
    Unmanaged(Vec<String>),
    /// The whole drain took longer than `--grace-period`.
    #[error("the drain did not finish within --grace-period {}: {}", fmt_duration(*.timeout), .waiting)]
    Timeout {
        /// The limit.
        timeout: Duration,
        /// What it was still waiting for.
        waiting: String,
    },
    /// A pod was evicted but did not go away within its grace period.
    #[error("pod {pod} was still there {}s after its eviction (grace period {grace_seconds}s)", .waited.as_secs())]
    PodNotGone {
        /// `namespace/name`.
        pod: String,
        /// The pod's grace period.
        grace_seconds: i64,
        /// How long the drain waited.
        waited: Duration,
    },
    /// The API refused an eviction or deletion for good.
    #[error("cannot {verb} pod {pod}: {message}")]
    Refused {
        /// `evict` or `delete`.
        verb: &'static str,
        /// `namespace/name`.
        pod: String,
        /// The API's message.
        message: String,
    },
}

impl DrainError {
    /// The `reason` label of `fluo_drain_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            DrainError::Unmanaged(_) => "unmanaged_pods",
            DrainError::Timeout { .. } => "timeout",
            DrainError::PodNotGone { .. } => "pod_not_gone",
            DrainError::Refused { .. } => "refused",
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn grace_seconds(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0)
}

/// A pod the drain acts on, until it is gone.
struct Pending {
    key: String,
    grace_seconds: i64,
    /// Set once the eviction/deletion was accepted: it must be gone by then.
    deadline: Option<Instant>,
    /// The eviction or deletion was accepted (or it was already terminating).
    accepted: bool,
}

enum Outcome {
    /// Accepted: the pod is terminating or deleted.
    Accepted,
    /// The pod (with this UID) no longer exists.
    Gone,
}

/// Drains `opts.node`. Cancel-safe: dropping the future stops it (evictions already
/// accepted stay accepted, as with kubectl).
#[tracing::instrument(name = "drain", skip_all, fields(node = %opts.node))]
pub async fn drain(client: Client, opts: &DrainOptions) -> Result<DrainSummary, DrainError> {
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let pods = list_pods(&client, opts, deadline).await?;
    let plan = plan(pods, opts)?;
    record_plan(&client, opts, &plan.evicted, deadline).await?;
    if !opts.wait_before_evicting.is_zero() && !plan.requests.is_empty() {
        info!(
            wait_s = opts.wait_before_evicting.as_secs_f64(),
            "excluded from load balancers; waiting before the first eviction"
        );
        tokio::time::sleep_until(deadline.min(Instant::now() + opts.wait_before_evicting)).await;
    }
    info!(
        evict = plan.summary.evicted.len(),
        delete = plan.summary.deleted.len(),
        wait = plan.summary.waited.len(),
        skip = plan.summary.skipped.len(),
        "draining"
    );
    // Only now are the requests sent: they are lazy, and polled first in `wait_until_gone`.
    let requests = plan
        .requests
        .into_iter()
        .map(|(pod, evict)| request(client.clone(), pod, evict, opts))
        .collect();
    let mut summary = plan.summary;
    let abandoned = wait_until_gone(&client, opts, plan.pending, requests, deadline).await?;
    summary
        .skipped
        .extend(abandoned.into_iter().map(|k| (k, SKIPPED_TERMINATING)));
    info!(elapsed_ms = start.elapsed().as_millis() as u64, "drained");
    summary.volumes = wait_for_volumes(&client, opts).await;
    Ok(summary)
}

/// The pods on the node. Retried until `deadline`: an API hiccup at the start should not
/// fail a drain that has minutes to run.
async fn list_pods(
    client: &Client,
    opts: &DrainOptions,
    deadline: Instant,
) -> Result<Vec<Pod>, DrainError> {
    let all: Api<Pod> = Api::all(client.clone());
    let mut on_node = ListParams::default().fields(&format!("spec.nodeName={}", opts.node));
    if let Some(selector) = &opts.pod_selector {
        on_node = on_node.labels(selector);
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), opts.retry_max);
    loop {
        match all.list(&on_node).await {
            Ok(list) => return Ok(list.items),
            Err(e) => {
                let wait = backoff.next_delay();
                if Instant::now() + wait >= deadline {
                    return Err(DrainError::Timeout {
                        timeout: opts.timeout,
                        waiting: format!("cannot list the node's pods: {e}"),
                    });
                }
                warn!(error = %e, "cannot list the node's pods; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// What the drain will do, decided before it does anything.
struct Plan {
    summary: DrainSummary,
    /// The pods to see gone, by UID.
    pending: HashMap<String, Pending>,
    /// The pods to evict (`true`) or delete.
    requests: Vec<(Pod, bool)>,
    /// The workloads of the pods to evict, for the node's record.
    evicted: EvictedPods,
}

/// [`classify`]s every pod. Fails before anything is touched if a pod without a controller
/// would be lost, so a drain that cannot finish never evicts half the node.
fn plan(pods: Vec<Pod>, opts: &DrainOptions) -> Result<Plan, DrainError> {
    let mut summary = DrainSummary::default();
    let mut blocked = Vec::new();
    let mut pending = HashMap::new();
    let mut requests = Vec::new();
    let mut evicting = Vec::new();
    let now = opts.clock.now();
    // A pod's own wait after its grace period: the margin, or as long as kubectl would.
    let after_grace = opts.skip_wait_for_delete.unwrap_or(opts.pod_delete_margin);
    for pod in pods {
        let k = key(&pod);
        let uid = pod.uid().unwrap_or_default();
        let action = classify(&pod, opts, now);
        debug!(pod = %k, ?action, "drain plan");
        let mut entry = Pending {
            key: k.clone(),
            grace_seconds: grace_seconds(&pod),
            deadline: None,
            accepted: false,
        };
        match action {
            PodAction::Skip(why) => {
                summary.skipped.push((k, why));
                continue;
            }
            PodAction::Blocked => {
                blocked.push(k);
                continue;
            }
            PodAction::Wait => {
                // Gone by its deletionTimestamp (plus margin).
                let left = pod
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .map(|t| (t.0.as_second() - now.timestamp()).max(0))
                    .unwrap_or(entry.grace_seconds);
                entry.deadline =
                    Some(Instant::now() + Duration::from_secs(left as u64) + after_grace);
                entry.accepted = true;
                summary.waited.push(k);
            }
            PodAction::Delete => {
                summary.deleted.push(k);
                requests.push((pod, false));
            }
            PodAction::Evict => {
                evicting.extend(workload_of(&pod));
                summary.evicted.push(k);
                requests.push((pod, true));
            }
        }
        pending.insert(uid, entry);
    }
    if !blocked.is_empty() {
        return Err(DrainError::Unmanaged(blocked));
    }
    Ok(Plan {
        summary,
        pending,
        requests,
        evicted: EvictedPods::of(evicting),
    })
}

/// Sends the requests and waits until every pending pod is gone: one watch of the node's
/// pods (no polling) sees each deleted, or missing from a relist after a reconnect. Each
/// pod must be gone by its own deadline, and all by `deadline`. With
/// `--skip-wait-for-delete-timeout` a pod past its own deadline counts as gone instead:
/// those are returned.
async fn wait_until_gone(
    client: &Client,
    opts: &DrainOptions,
    pending: HashMap<String, Pending>,
    mut requests: FuturesUnordered<impl Future<Output = (String, Result<Outcome, DrainError>)>>,
    deadline: Instant,
) -> Result<Vec<String>, DrainError> {
    let all: Api<Pod> = Api::all(client.clone());
    let on_node = format!("spec.nodeName={}", opts.node);
    let mut events = watcher(all, watcher::Config::default().fields(&on_node))
        .default_backoff()
        .boxed();
    let mut waiting = Waiting {
        pending,
        relisted: None,
    };
    let after_grace = opts.skip_wait_for_delete.unwrap_or(opts.pod_delete_margin);
    let mut abandoned = Vec::new();
    loop {
        if waiting.pending.is_empty() {
            return Ok(abandoned);
        }
        let next_pod_deadline = waiting.next_deadline();
        let pod_deadline = next_pod_deadline.as_ref().map(|(d, _)| *d);
        tokio::select! {
            Some((uid, result)) = requests.next(), if !requests.is_empty() => match result? {
                Outcome::Gone => {
                    waiting.pending.remove(&uid);
                }
                Outcome::Accepted => waiting.accepted(&uid, after_grace),
            },
            ev = events.next() => match ev {
                Some(Ok(ev)) => waiting.on_event(ev),
                Some(Err(e)) => warn!(error = %e, "watching the node's pods"),
                None => unreachable!("a watcher stream never ends"),
            },
            _ = tokio::time::sleep_until(pod_deadline.unwrap_or(deadline)), if pod_deadline.is_some_and(|d| d < deadline) => {
                let (_, uid) = next_pod_deadline.expect("a deadline");
                if opts.skip_wait_for_delete.is_some() {
                    let p = waiting.pending.remove(&uid).expect("pending");
                    warn!(pod = %p.key, "still terminating past --skip-wait-for-delete-timeout; counting it as gone");
                    abandoned.push(p.key);
                    continue;
                }
                // The watch may be down (backing off after errors, a 410 or a partition) and
                // have missed the deletion: a read decides, never the silence. A read without
                // an answer is tried again in a second, within the drain's timeout.
                let p = &waiting.pending[&uid];
                let (ns, name) = p.key.split_once('/').unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                let read = tokio::time::timeout_at(
                    deadline.min(Instant::now() + READ_TIMEOUT),
                    still_there(&api, name, &uid),
                );
                match read.await {
                    Ok(Ok(true)) => return Err(waiting.not_gone(&uid, opts.pod_delete_margin)),
                    Ok(Ok(false)) => {
                        debug!(pod = %p.key, "pod gone (read; the watch had not said so)");
                        waiting.pending.remove(&uid);
                    }
                    Ok(Err(e)) => {
                        warn!(pod = %p.key, error = %e, "cannot read a pod past its deadline; reading again");
                        waiting.retry(&uid);
                    }
                    Err(_) => {
                        warn!(pod = %p.key, "no answer reading a pod past its deadline; reading again");
                        waiting.retry(&uid);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(DrainError::Timeout {
                    timeout: opts.timeout,
                    waiting: waiting.describe(),
                });
            }
        }
    }
}

/// The pods the drain still waits for, by UID.
struct Waiting {
    pending: HashMap<String, Pending>,
    /// The UIDs a relist of the watch returned so far, while it is in progress.
    relisted: Option<HashSet<String>>,
}

impl Waiting {
    /// Its eviction or deletion was accepted: from now it has its grace period (plus
    /// `margin`) to go.
    fn accepted(&mut self, uid: &str, margin: Duration) {
        if let Some(p) = self.pending.get_mut(uid) {
            p.accepted = true;
            p.deadline =
                Some(Instant::now() + Duration::from_secs(p.grace_seconds as u64) + margin);
        }
    }

    /// A read of it got no answer: read again in a second.
    fn retry(&mut self, uid: &str) {
        if let Some(p) = self.pending.get_mut(uid) {
            p.deadline = Some(Instant::now() + Duration::from_secs(1));
        }
    }

    /// A pod deleted, or missing from a relist (deleted while the watch was down), is gone.
    fn on_event(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Delete(p) => {
                if let Some(gone) = self.pending.remove(&p.uid().unwrap_or_default()) {
                    debug!(pod = %gone.key, "pod gone");
                }
            }
            watcher::Event::Init => self.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(p) => {
                if let Some(r) = self.relisted.as_mut() {
                    r.insert(p.uid().unwrap_or_default());
                }
            }
            watcher::Event::InitDone => {
                if let Some(present) = self.relisted.take() {
                    self.pending.retain(|uid, _| present.contains(uid));
                }
            }
            watcher::Event::Apply(_) => {}
        }
    }

    /// The earliest of the pods' own deadlines, with that pod's UID.
    fn next_deadline(&self) -> Option<(Instant, String)> {
        self.pending
            .iter()
            .filter_map(|(uid, p)| p.deadline.map(|d| (d, uid.clone())))
            .min()
    }

    fn not_gone(&self, uid: &str, margin: Duration) -> DrainError {
        let p = &self.pending[uid];
        DrainError::PodNotGone {
            pod: p.key.clone(),
            grace_seconds: p.grace_seconds,
            waited: Duration::from_secs(p.grace_seconds as u64) + margin,
        }
    }

    /// What the drain is still waiting for, for the timeout's message: the pods not yet
    /// evicted apart from those already terminating, since the fix differs (a budget, or a
    /// slow shutdown).
    fn describe(&self) -> String {
        let mut waiting: BTreeMap<bool, Vec<&str>> = BTreeMap::new();
        for p in self.pending.values() {
            waiting.entry(p.accepted).or_default().push(&p.key);
        }
        let part = |accepted: bool, what: &str| {
            waiting.get(&accepted).map(|v| {
                let mut v = v.clone();
                v.sort();
                format!("{what} {}", v.join(", "))
            })
        };
        [
            part(false, "not yet evicted (disruption budget or API errors):"),
            part(true, "still terminating:"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
    }
}

/// Writes the drain's plan into the node's record of evicted pods (merged with one from an
/// earlier drain of the same reboot), retrying until `deadline`. Before any eviction, so
/// the operator keeps the slot after the reboot until those workloads are Ready again;
/// a drain that cannot record them fails rather than evict untracked.
async fn record_plan(
    client: &Client,
    opts: &DrainOptions,
    plan: &EvictedPods,
    deadline: Instant,
) -> Result<(), DrainError> {
    let nodes = NodeWriter::new(client.clone(), crate::FIELD_MANAGER);
    let mut backoff = Backoff::new(Duration::from_millis(200), opts.retry_max);
    loop {
        let result = match nodes.api().get(&opts.node).await {
            Ok(node) => {
                let view = protocol::k8s::node_view(&node);
                let Some(p) = protocol::agent::record_evictions(&view, plan) else {
                    return Ok(());
                };
                // Decided on this version of the node (409 -> read again).
                nodes
                    .patch(&p, node.resource_version().as_deref())
                    .await
                    .map(drop)
            }
            Err(e) => Err(e),
        };
        let e = match result {
            Ok(()) => {
                info!(
                    workloads = plan.workloads.len(),
                    "recorded the workloads to evict"
                );
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 && Instant::now() < deadline => continue,
            Err(e) => e,
        };
        let wait = backoff.next_delay();
        if Instant::now() + wait >= deadline {
            return Err(DrainError::Timeout {
                timeout: opts.timeout,
                waiting: format!("cannot record the pods to evict on the node: {e}"),
            });
        }
        warn!(error = %e, "cannot record the pods to evict; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// Evicts (or deletes) one pod, retrying 429 and transient errors with backoff: a
/// PodDisruptionBudget says "not now", not "never". Returns the pod's UID with the outcome.
async fn request(
    client: Client,
    pod: Pod,
    evict: bool,
    opts: &DrainOptions,
) -> (String, Result<Outcome, DrainError>) {
    let uid = pod.uid().unwrap_or_default();
    let k = key(&pod);
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
    let verb = if evict { "evict" } else { "delete" };
    let mut backoff = Backoff::new(Duration::from_millis(250), opts.retry_max);
    let mut said_budget = false;
    loop {
        let err = match send(&api, &pod, &uid, evict).await {
            Ok(()) => {
                info!(pod = %k, "{verb}ed");
                return (uid, Ok(Outcome::Accepted));
            }
            Err(e) => e,
        };
        match &err {
            kube::Error::Api(s) if s.code == 404 => {
                debug!(pod = %k, "already gone");
                return (uid, Ok(Outcome::Gone));
            }
            // 409 is a failed UID precondition (the pod we meant is gone) or a conflict on the
            // PodDisruptionBudget's update (the pod is still there): only a read tells.
            kube::Error::Api(s) if s.code == 409 => match still_there(&api, &name, &uid).await {
                Ok(false) => return (uid, Ok(Outcome::Gone)),
                Ok(true) => debug!(pod = %k, reason = %s.message, "conflict; retrying"),
                Err(e) => warn!(pod = %k, error = %e, "cannot read pod after a conflict; retrying"),
            },
            kube::Error::Api(s) if s.code == 429 => {
                if !said_budget {
                    info!(pod = %k, reason = %s.message, "eviction refused for now; retrying");
                    said_budget = true;
                }
            }
            kube::Error::Api(s) if s.code == 500 && s.message.contains("more than one") => {
                return (
                    uid,
                    Err(DrainError::Refused {
                        verb,
                        pod: k,
                        message: s.message.clone(),
                    }),
                );
            }
            kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 408 => {
                return (
                    uid,
                    Err(DrainError::Refused {
                        verb,
                        pod: k,
                        message: format!("{} ({})", s.message, s.code),
                    }),
                );
            }
            e => warn!(pod = %k, error = %e, "cannot {verb} pod; retrying"),
        }
        if evict && let Some(m) = &opts.metrics {
            m.eviction_retried();
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Whether the pod `name` with UID `uid` is still there (one of that name with another UID
/// is a replacement, not it). Read by a list of that one name: the agent's Role may list
/// pods but not get them.
async fn still_there(api: &Api<Pod>, name: &str, uid: &str) -> Result<bool, kube::Error> {
    let one = ListParams::default().fields(&format!("metadata.name={name}"));
    let pods = api.list(&one).await?;
    Ok(pods.items.iter().any(|p| p.uid().as_deref() == Some(uid)))
}

/// One eviction (or deletion) of `pod`, with its UID as a precondition so a replacement
/// with the same name (a StatefulSet's) is never hit.
async fn send(api: &Api<Pod>, pod: &Pod, uid: &str, evict: bool) -> Result<(), kube::Error> {
    let name = pod.name_any();
    if evict {
        let eviction = Eviction {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: pod.namespace(),
                ..Default::default()
            },
            delete_options: Some(DeleteOptions {
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..Default::default()
            }),
        };
        // Not kube's `Api::evict`: kube-core 5 sends its DeleteOptions as
        // `delete_options`, a field the API server does not know, so the UID
        // precondition would be dropped.
        api.create_subresource::<_, serde_json::Value>(
            "eviction",
            &name,
            &PostParams::default(),
            &eviction,
        )
        .await
        .map(drop)
    } else {
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        api.delete(&name, &dp).await.map(drop)
    }
}

impl fmt::Display for PodAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodAction::Skip(why) => write!(f, "skip ({why})"),
            PodAction::Wait => f.write_str("wait"),
            PodAction::Delete => f.write_str("delete"),
            PodAction::Evict => f.write_str("evict"),
            PodAction::Blocked => f.write_str("blocked (no controller)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn pod(ns: &str, owner: Option<&str>, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some(ns.into()),
                uid: Some("u1".into()),
                owner_references: owner.map(|kind| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: kind.into(),
                        name: "o".into(),
                        uid: "o1".into(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]
                }),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn opts(force: bool) -> DrainOptions {
        let mut o = DrainOptions::new("n", Duration::from_secs(60));
        o.force = force;
        o
    }

    #[test]
    fn kube_system_and_stuck_terminating_pods_by_flag() {
        let now = chrono::Utc::now();
        let sys = pod("kube-system", Some("ReplicaSet"), "Running");
        assert!(matches!(
            classify(&sys, &opts(false), now),
            PodAction::Skip(_)
        ));
        let mut o = opts(false);
        o.kube_system = true;
        assert_eq!(classify(&sys, &o, now), PodAction::Evict);
        // Deleted (grace over) 90 s ago.
        let mut stuck = pod("default", Some("ReplicaSet"), "Running");
        stuck.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(now.timestamp() - 90).unwrap(),
        ));
        assert_eq!(classify(&stuck, &opts(false), now), PodAction::Wait);
        o.skip_wait_for_delete = Some(Duration::from_secs(60));
        assert_eq!(
            classify(&stuck, &o, now),
            PodAction::Skip(SKIPPED_TERMINATING)
        );
        o.skip_wait_for_delete = Some(Duration::from_secs(120));
        assert_eq!(classify(&stuck, &o, now), PodAction::Wait);
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(
                &pod("default", Some("ReplicaSet"), "Running"),
                &opts(false),
                chrono::Utc::now()
            ),
            PodAction::Evict
        );
        assert!(matches!(
            classify(
                &pod("kube-system", None, "Running"),
                &opts(false),
                chrono::Utc::now()
            ),
            PodAction::Skip(_)
        ));
        assert!(matches!(
            classify(
                &pod("default", Some("DaemonSet"), "Running"),
                &opts(false),
                chrono::Utc::now()
            ),
            PodAction::Skip(_)
        ));
        let mut mirror = pod("default", None, "Running");
        mirror
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(MIRROR_POD_ANNOTATION.into(), "x".into());
        assert!(matches!(
            classify(&mirror, &opts(false), chrono::Utc::now()),
            PodAction::Skip(_)
        ));
        assert_eq!(
            classify(
                &pod("default", None, "Running"),
                &opts(false),
                chrono::Utc::now()
            ),
            PodAction::Blocked
        );
        assert_eq!(
            classify(
                &pod("default", None, "Running"),
                &opts(true),
                chrono::Utc::now()
            ),
            PodAction::Evict
        );
        // Finished pods go, controller or not.
        assert_eq!(
            classify(
                &pod("default", None, "Succeeded"),
                &opts(false),
                chrono::Utc::now()
            ),
            PodAction::Delete
        );
        assert_eq!(
            classify(
                &pod("default", Some("Job"), "Failed"),
                &opts(false),
                chrono::Utc::now()
            ),
            PodAction::Delete
        );
        let mut term = pod("default", Some("ReplicaSet"), "Running");
        term.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(
            classify(&term, &opts(false), chrono::Utc::now()),
            PodAction::Wait
        );
        // A non-controller owner does not count as a controller.
        let mut loose = pod("default", Some("ReplicaSet"), "Running");
        loose.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        assert_eq!(
            classify(&loose, &opts(false), chrono::Utc::now()),
            PodAction::Blocked
        );
    }

    #[test]
    fn messages_name_what_to_do() {
        let e = DrainError::Unmanaged(vec!["default/bare".into()]);
        let m = e.to_string();
        assert!(
            m.contains("default/bare") && m.contains("--force-drain"),
            "{m}"
        );
        let e = DrainError::Timeout {
            timeout: Duration::from_secs(600),
            waiting: "x".into(),
        };
        assert!(e.to_string().contains("--grace-period 600s"));
    }
}
