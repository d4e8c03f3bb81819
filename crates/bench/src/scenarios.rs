//! The measurements. Each starts its own sandbox, so the audit record of API requests is
//! its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleet::cluster::NEW_VERSION;
use fleet::{Cluster, ClusterSpec, Monitor, Phase, Snapshot, Summary};
use host::UpdateStatus;
use k8s_openapi::api::core::v1::Node;
use protocol::k8s::node_view;
use protocol::keys;
use protocol::node::NodeView;
use protocol::update_engine::{UPDATE_STATUS_IDLE, UPDATE_STATUS_UPDATED_NEED_REBOOT};
use sandbox::Sandbox;
use sandbox::audit::AuditEntry;
use serde::Serialize;
use serde_json::json;

use crate::child::{ChildProc, Usage};
use crate::simagent::{SimAgents, Step};

/// The operator's Lease namespace in every scenario.
pub(crate) const NAMESPACE: &str = fleet::cluster::NAMESPACE;

/// Where the binaries are and where their logs go.
pub struct Env {
    pub operator: PathBuf,
    pub agent: PathBuf,
    pub logs: PathBuf,
}

fn need_reboot_status() -> UpdateStatus {
    UpdateStatus {
        last_checked_time: chrono::Utc::now().timestamp(),
        progress: 1.0,
        current_operation: UPDATE_STATUS_UPDATED_NEED_REBOOT.into(),
        new_version: NEW_VERSION.into(),
        new_size: 300_000_000,
    }
}

pub(crate) fn node_names(n: u32) -> Vec<String> {
    ClusterSpec {
        nodes: n,
        ..Default::default()
    }
    .node_names()
}

/// The sandbox API server's own threads, one per core as the bench's: in a real cluster
/// the thousands of simulated machines and controllers run elsewhere, and their work must
/// not queue the operator's requests behind it.
fn api_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("sandbox-api")
        .enable_all()
        .build()
        .context("cannot start the sandbox API's runtime")?;
    Ok(RUNTIME.get_or_init(|| rt).handle().clone())
}

/// A sandbox with `names` as nodes and the operator's namespace.
pub(crate) async fn sandbox_with_nodes(
    names: &[String],
    reboot: Duration,
) -> anyhow::Result<Sandbox> {
    let sb = Sandbox::start(sandbox::Options {
        reboot_duration: reboot,
        api_runtime: Some(api_runtime()?),
        ..Default::default()
    })
    .await?;
    sb.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))?;
    for n in names {
        sb.add_node(n, &[])?;
    }
    Ok(sb)
}

fn phases(s: &Snapshot) -> String {
    Phase::ALL
        .iter()
        .map(|p| format!("{} {}", p.name(), s.counts.get(*p)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until `done` holds for the monitor's snapshot, checking `child` is alive. Shows the
/// nodes' phases every 15 s; gives up after `timeout`, or after 120 s without any change.
async fn wait_for(
    monitor: &Monitor,
    mut child: Option<&mut ChildProc>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> anyhow::Result<Snapshot> {
    let start = Instant::now();
    let mut changes = monitor.changes();
    let (mut last_change, mut last_shown) = (start, start);
    loop {
        let taken = Instant::now();
        let snap = monitor.snapshot();
        if done(&snap) {
            return Ok(snap);
        }
        if let Some(c) = child.as_deref_mut() {
            c.check_running()?;
        }
        let now = Instant::now();
        anyhow::ensure!(
            now - start < timeout && now - last_change < Duration::from_secs(120),
            "{what}: not done within {:.0} s ({:.0} s since the last change); nodes: {}",
            (now - start).as_secs_f64(),
            (now - last_change).as_secs_f64(),
            phases(&snap)
        );
        if now - last_shown >= Duration::from_secs(15) {
            eprintln!("bench:   {what}: {}", phases(&snap));
            last_shown = now;
        }
        // A snapshot copies every node's track: at 1,000 nodes, taking one on every change
        // was a quarter of the bench process's CPU, which the operator and the sandbox then
        // lacked. When to stop waiting changes no time measured (those are the monitor's),
        // so this loop spends at most about a tenth of the time on it.
        drop(snap);
        let pause = taken.elapsed() * 9;
        if let Ok(Ok(())) =
            tokio::time::timeout(Duration::from_millis(500), changes.changed()).await
        {
            last_change = Instant::now();
            tokio::time::sleep(pause).await;
        }
    }
}

/// Polls the store once a second until `done` holds for every node, checking `child`.
async fn wait_nodes(
    sb: &Sandbox,
    mut child: Option<&mut ChildProc>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&NodeView) -> bool,
) -> anyhow::Result<()> {
    let nodes = sandbox::resources::find("", "v1", "nodes").expect("nodes");
    let start = Instant::now();
    let mut last_shown = start;
    loop {
        let objects: Vec<Arc<serde_json::Value>> = {
            let st = sb.store().lock();
            st.iter(nodes, None).map(|(_, v)| v.clone()).collect()
        };
        let pending = objects
            .iter()
            .filter(|v| {
                !serde_json::from_value::<Node>((***v).clone()).is_ok_and(|n| done(&node_view(&n)))
            })
            .count();
        if pending == 0 {
            return Ok(());
        }
        if let Some(c) = child.as_deref_mut() {
            c.check_running()?;
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "{what}: {pending} of {} nodes not done within {timeout:?}",
            objects.len()
        );
        if last_shown.elapsed() >= Duration::from_secs(15) {
            eprintln!(
                "bench:   {what}: {pending} of {} nodes to go",
                objects.len()
            );
            last_shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn all_seen(s: &Snapshot, n: usize) -> bool {
    s.nodes.len() == n && s.nodes.iter().all(|t| t.agent_seen)
}

fn all_done(s: &Snapshot, n: usize) -> bool {
    s.nodes.len() == n && s.nodes.iter().all(|t| t.phase == Phase::Done)
}

/// The `update-operator` binary against `sb`, allowed `max` nodes at once.
fn spawn_operator(env: &Env, sb: &Sandbox, max: u32, tag: &str) -> anyhow::Result<ChildProc> {
    spawn_operator_with_env(env, sb, max, tag, &[])
}

/// [`spawn_operator`] with these environment variables added.
pub(crate) fn spawn_operator_with_env(
    env: &Env,
    sb: &Sandbox,
    max: u32,
    tag: &str,
    vars: &[(&str, &str)],
) -> anyhow::Result<ChildProc> {
    let args = [
        "--kubeconfig".to_string(),
        sb.kubeconfig_path().display().to_string(),
        "--namespace".into(),
        NAMESPACE.into(),
        "--max-rebooting-nodes".into(),
        max.to_string(),
        "--metrics-address".into(),
        "off".into(),
    ];
    ChildProc::spawn_with_env(
        &env.operator,
        &args,
        vars,
        env.logs.join(format!("update-operator-{tag}.log")),
    )
}

/// Whether some replica holds the operator's Lease (read from the store: no request).
fn lease_held(sb: &Sandbox) -> bool {
    fleet::operators::lease_holder(sb, NAMESPACE).is_some()
}

/// Waits until some replica holds the operator's Lease.
async fn wait_leader(sb: &Sandbox, child: &mut ChildProc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if lease_held(sb) {
            return Ok(());
        }
        child.check_running()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "update-operator did not take its Lease within 30 s (log: {})",
            child.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub nodes: u32,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub samples_ms: Vec<f64>,
}

/// Grant latency: `update-operator` (the binary) on `nodes` simulated nodes; one node at a
/// time asks for a reboot, and the time from `reboot-needed=true` to `reboot-ok=true` is
/// taken from one watch of all Nodes (the fleet Monitor), so both ends are seen alike.
/// The operator may reboot every node at once, so a free slot never waits; each granted
/// node completes its reboot cycle in the background while the next one asks.
pub async fn grant_latency(env: &Env, nodes: u32, samples: u32) -> anyhow::Result<Latency> {
    let names = node_names(nodes);
    let sb = sandbox_with_nodes(&names, Duration::from_millis(200)).await?;
    // The monitor first: its initial list should not compete with every agent's first write.
    let monitor = Monitor::try_start(sb.client_as("monitor")?, &[]).await?;
    let _agents = SimAgents::start(&sb, &names, "sim-agents")?;
    wait_for(
        &monitor,
        None,
        Duration::from_secs(60),
        "agents start",
        |s| all_seen(s, names.len()),
    )
    .await?;
    let mut op = spawn_operator(env, &sb, nodes, "latency")?;
    wait_leader(&sb, &mut op).await?;
    for i in 0..samples as usize {
        let name = &names[i % names.len()];
        let idle = |s: &Snapshot| {
            s.node(name)
                .is_some_and(|t| matches!(t.phase, Phase::Idle | Phase::Done))
        };
        let before = wait_for(
            &monitor,
            Some(&mut op),
            Duration::from_secs(60),
            "a node's previous reboot cycle",
            idle,
        )
        .await?
        .node(name)
        .map_or(0, |t| t.cycles.len());
        sb.host(name)
            .context("simulated host")?
            .set_status(need_reboot_status());
        wait_for(
            &monitor,
            Some(&mut op),
            Duration::from_secs(30),
            "a grant",
            |s| {
                s.node(name).is_some_and(|t| {
                    t.cycles.len() > before && t.cycles.last().is_some_and(|c| c.granted.is_some())
                })
            },
        )
        .await?;
    }
    let snap = monitor.snapshot();
    let mut ms: Vec<f64> = snap
        .nodes
        .iter()
        .flat_map(|t| t.cycles.iter())
        .filter_map(|c| Some(round3((c.granted? - c.needed?) * 1000.0)))
        .collect();
    ms.sort_by(f64::total_cmp);
    anyhow::ensure!(
        ms.len() == samples as usize,
        "expected {samples} grants, the monitor saw {}",
        ms.len()
    );
    Ok(Latency {
        nodes,
        samples: ms.len(),
        p50_ms: percentile(&ms, 50.0),
        p99_ms: percentile(&ms, 99.0),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        mean_ms: round3(ms.iter().sum::<f64>() / ms.len() as f64),
        samples_ms: ms,
    })
}

/// API requests of some users between two audit snapshots.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Requests {
    pub total: u64,
    /// "verb resource" -> requests.
    pub by_kind: BTreeMap<String, u64>,
}

impl Requests {
    pub fn between(
        before: &[(AuditEntry, u64)],
        after: &[(AuditEntry, u64)],
        who: impl Fn(&str) -> bool,
    ) -> Requests {
        let was: BTreeMap<&AuditEntry, u64> = before.iter().map(|(e, n)| (e, *n)).collect();
        let mut r = Requests::default();
        for (e, n) in after.iter().filter(|(e, _)| who(&e.user)) {
            let d = n - was.get(e).copied().unwrap_or(0);
            if d > 0 {
                r.total += d;
                *r.by_kind
                    .entry(format!("{} {}", e.verb, e.resource))
                    .or_default() += d;
            }
        }
        r
    }

    /// "3.00 (patch nodes 2.00, watch nodes 1.00)" with every count divided by `per`.
    pub fn describe(&self, per: f64) -> String {
        let parts: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {:.2}", *n as f64 / per))
            .collect();
        if parts.is_empty() {
            return "0".to_string();
        }
        format!("{:.2} ({})", self.total as f64 / per, parts.join(", "))
    }
}

#[derive(Debug, Serialize)]
pub struct Rollout {
    pub nodes: u32,
    pub max_rebooting: u32,
    pub pods_per_node: u32,
    pub drain_seconds: u32,
    pub reboot_seconds: u32,
    pub start_seconds: f64,
    pub summary: Summary,
    /// During the rollout (update offered -> every node done).
    pub operator_requests: Requests,
    pub agent_requests: Requests,
    /// From every node done until the operator gave its Lease up
    /// (`--release-lease-after-idle`), and its requests in that time.
    pub release_lease_after_idle_seconds: u64,
    pub lease_released_seconds: f64,
    pub operator_winding_down: Requests,
    /// While nothing happens, over `idle_seconds` after the Lease was given up.
    pub idle_seconds: u64,
    pub operator_idle: Requests,
    pub agent_idle: Requests,
}

/// A whole rollout on a fleet cluster (the real agent per node and the real operator,
/// in-process), then an idle window on the same cluster.
pub async fn rollout(
    nodes: u32,
    max_rebooting: u32,
    pods_per_node: u32,
    drain_seconds: u32,
    reboot_seconds: u32,
    idle: Duration,
    release_lease_after_idle: Duration,
) -> anyhow::Result<Rollout> {
    let spec = ClusterSpec {
        nodes,
        zones: 0,
        pods_per_node,
        drain_seconds,
        reboot: Duration::from_secs(reboot_seconds.into()),
        hook_delay: None,
    };
    let t = Instant::now();
    let sb = Sandbox::start(spec.sandbox_options(([127, 0, 0, 1], 0).into())).await?;
    let mut cfg = operator::Config::new(NAMESPACE, fleet::op_config(max_rebooting));
    cfg.identity = "update-operator".into();
    cfg.release_lease_after_idle = Some(release_lease_after_idle);
    let cluster = Cluster::start(sb, &spec, cfg)
        .await
        .context("starting the fleet cluster")?;
    let start_seconds = round3(t.elapsed().as_secs_f64());
    // The cluster runs them as their service accounts (deploy/'s RBAC is enforced).
    let operator_user = sandbox::UserInfo::operator().username;
    let agent_user = sandbox::UserInfo::agent("").username;
    let is_operator = |u: &str| u == operator_user;
    let is_agent = |u: &str| u == agent_user;
    let c0 = cluster.sandbox.audit().counts();
    let t0 = cluster.monitor.now();
    cluster.offer_updates(NEW_VERSION).await;
    // Three times a generous estimate of the physical limit.
    let rounds = u64::from(nodes.div_ceil(max_rebooting));
    let patience = Duration::from_secs(
        120 + 3 * rounds * (u64::from(reboot_seconds) + 3 * u64::from(drain_seconds) + 10),
    );
    let snap = wait_for(&cluster.monitor, None, patience, "the rollout", |s| {
        all_done(s, nodes as usize)
    })
    .await?;
    let c1 = cluster.sandbox.audit().counts();
    let summary = Summary::compute(&snap, max_rebooting as usize, Some(t0), true);
    // The operator gives its Lease up once no node has needed it for a while; the idle
    // window opens then (and at least 2 s after the last writes).
    let done = Instant::now();
    let patience = release_lease_after_idle + Duration::from_secs(60);
    while lease_held(&cluster.sandbox) {
        anyhow::ensure!(
            done.elapsed() < patience,
            "the operator still held its Lease {patience:?} after the rollout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease_released_seconds = round3(done.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let i0 = cluster.sandbox.audit().counts();
    tokio::time::sleep(idle).await;
    let i1 = cluster.sandbox.audit().counts();
    let r = Rollout {
        nodes,
        max_rebooting,
        pods_per_node,
        drain_seconds,
        reboot_seconds,
        start_seconds,
        summary,
        operator_requests: Requests::between(&c0, &c1, is_operator),
        agent_requests: Requests::between(&c0, &c1, is_agent),
        release_lease_after_idle_seconds: release_lease_after_idle.as_secs(),
        lease_released_seconds,
        operator_winding_down: Requests::between(&c1, &i0, is_operator),
        idle_seconds: idle.as_secs(),
        operator_idle: Requests::between(&i0, &i1, is_operator),
        agent_idle: Requests::between(&i0, &i1, is_agent),
    };
    cluster.stop().await?;
    Ok(r)
}

#[derive(Debug, Serialize)]
pub struct OperatorScale {
    pub nodes: u32,
    pub pods: u32,
    pub pods_at_end: usize,
    pub max_rebooting: u32,
    pub reboot_seconds: f64,
    /// After taking the Lease with every node listed, before the rollout.
    pub idle: Usage,
    /// After the rollout (peak_rss_mib is the peak over the whole life).
    pub end: Usage,
    pub rollout_cpu_seconds: f64,
    pub cpu_seconds_per_node_reboot: f64,
    /// Updates offered -> every node released (with a monitor: to its last release seen;
    /// without: polled once a second).
    pub wall_seconds: f64,
    /// A freed slot -> the grant that fills it, through the rollout (grant latency under load).
    pub slot_latency: crate::slots::SlotLatency,
    /// The API's write round trip through the rollout ([`crate::probe`]); without a monitor
    /// only (the ratio runs are left as they were).
    pub api_round_trip: Option<crate::slots::SlotLatency>,
    /// With a monitor only.
    pub summary: Option<Summary>,
    /// Where a reboot slot's time goes; with a monitor only.
    pub phases: Option<Phases>,
    /// Where the whole wall time goes; with a monitor only.
    pub timeline: Option<Timeline>,
    /// The simulated agents' share of a slot's time; with a monitor only.
    pub agent_side: Option<AgentSide>,
    pub requests: Requests,
}

/// Mean seconds of each step of the closed reboot cycles, as the monitor saw them.
#[derive(Debug, Serialize)]
pub struct Phases {
    /// `reboot-ok=true` -> `reboot-in-progress=true` (the agent sees its grant).
    pub grant_to_drain: f64,
    /// `reboot-in-progress=true` -> NotReady (cordon, drain, ask logind).
    pub drain_to_reboot: f64,
    /// NotReady -> Ready with a new boot ID.
    pub reboot_to_back: f64,
    /// Ready again -> released (the agent marks it done, the operator releases).
    pub back_to_release: f64,
    /// A release -> the grant that fills the freed slot (the k-th grant after it).
    pub release_to_next_grant: f64,
}

impl Phases {
    fn compute(snap: &Snapshot, max_rebooting: usize) -> Option<Phases> {
        let cycles: Vec<_> = snap
            .nodes
            .iter()
            .flat_map(|n| &n.cycles)
            .filter(|c| c.is_closed())
            .collect();
        let mean = |f: &dyn Fn(&fleet::Cycle) -> Option<f64>| {
            let v: Vec<f64> = cycles.iter().filter_map(|c| f(c)).collect();
            (!v.is_empty()).then(|| round3(v.iter().sum::<f64>() / v.len() as f64))
        };
        let span = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        let mut grants: Vec<f64> = cycles.iter().filter_map(|c| c.granted).collect();
        let mut releases: Vec<f64> = cycles.iter().filter_map(|c| c.released).collect();
        grants.sort_by(f64::total_cmp);
        releases.sort_by(f64::total_cmp);
        // The i-th release frees the slot the (i + k)-th grant takes.
        let gaps: Vec<f64> = releases
            .iter()
            .zip(grants.iter().skip(max_rebooting))
            .map(|(r, g)| g - r)
            .collect();
        Some(Phases {
            grant_to_drain: mean(&|c| span(c.granted, c.drain_start))?,
            drain_to_reboot: mean(&|c| span(c.drain_start, c.reboot_start))?,
            reboot_to_back: mean(&|c| span(c.reboot_start, c.back))?,
            back_to_release: mean(&|c| span(c.back, c.released))?,
            release_to_next_grant: if gaps.is_empty() {
                0.0
            } else {
                round3(gaps.iter().sum::<f64>() / gaps.len() as f64)
            },
        })
    }
}

/// The rollout's milestones as the monitor saw them, in seconds since the clock's start:
/// the first `reboot-needed=true` (before it the operator has nothing to do).
#[derive(Debug, Serialize)]
pub struct Timeline {
    /// The update offered to every node at once -> the first `reboot-needed=true`: the
    /// simulated agents' reaction (about 2,000 patches at once), not counted in the wall time.
    pub offer_to_first_needed: f64,
    /// The last node's `reboot-needed=true`.
    pub all_needed: f64,
    pub first_grant: f64,
    /// The k-th grant: every slot taken.
    pub slots_full: f64,
    pub last_grant: f64,
    /// The last node Ready with a new boot ID.
    pub last_back: f64,
    /// The last release: the end of the wall time.
    pub last_release: f64,
}

impl Timeline {
    fn compute(snap: &Snapshot, max_rebooting: usize, offered: f64) -> Option<Timeline> {
        let times = |f: &dyn Fn(&fleet::Cycle) -> Option<f64>| {
            let mut v: Vec<f64> = snap
                .nodes
                .iter()
                .flat_map(|n| &n.cycles)
                .filter_map(f)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let needed = times(&|c| c.needed);
        let grants = times(&|c| c.granted);
        let start = *needed.first()?;
        let r = |t: f64| round3(t - start);
        Some(Timeline {
            offer_to_first_needed: round3(start - offered),
            all_needed: r(*needed.last()?),
            first_grant: r(*grants.first()?),
            slots_full: r(grants[max_rebooting.clamp(1, grants.len()) - 1]),
            last_grant: r(*grants.last()?),
            last_back: r(*times(&|c| c.back).last()?),
            last_release: r(*times(&|c| c.released).last()?),
        })
    }
}

/// A slot's steps split at the simulated agents' own moments (their stamps, on the
/// monitor's clock): what the node side takes, and what the watches and the operator take.
/// Means over the nodes, in seconds.
#[derive(Debug, Serialize)]
pub struct AgentSide {
    /// The monitor sees `reboot-ok=true` -> the agent's watch delivers it (the two watches'
    /// delivery differs; negative: the agent saw it first).
    pub grant_seen: f64,
    /// The agent sees the grant -> its `reboot-in-progress=true` patch returns.
    pub mark_in_progress: f64,
    /// That patch returns -> the monitor sees it (watch delivery).
    pub in_progress_seen: f64,
    /// The monitor sees the node Ready with a new boot ID -> the agent sees it.
    pub back_seen: f64,
    /// The agent sees itself back -> its `reboot-in-progress=false` patch returns.
    pub mark_done: f64,
    /// That patch returns -> the monitor sees the release: the operator's watch delivers
    /// the agent's write, the operator decides and patches, the monitor's watch delivers.
    pub operator_release: f64,
}

impl AgentSide {
    fn compute(snap: &Snapshot, stamps: &[(String, Step, f64)]) -> Option<AgentSide> {
        // Each node's first closed cycle and its stamps of that cycle.
        let mut by_node: BTreeMap<&str, BTreeMap<&'static str, f64>> = BTreeMap::new();
        for (n, step, t) in stamps {
            let key = match step {
                Step::GrantSeen => "grant",
                Step::MarkedInProgress => "in_progress",
                Step::RebootAsked => "reboot",
                Step::BackSeen => "back",
                Step::MarkedDone => "done",
            };
            by_node.entry(n).or_default().entry(key).or_insert(*t);
        }
        let mut sums = [0.0f64; 6];
        let mut count = 0usize;
        for node in &snap.nodes {
            let (Some(c), Some(st)) = (
                node.cycles.iter().find(|c| c.is_closed()),
                by_node.get(node.name.as_str()),
            ) else {
                continue;
            };
            let get = |k: &str| st.get(k).copied();
            let spans = || {
                Some([
                    get("grant")? - c.granted?,
                    get("in_progress")? - get("grant")?,
                    c.drain_start? - get("in_progress")?,
                    get("back")? - c.back?,
                    get("done")? - get("back")?,
                    c.released? - get("done")?,
                ])
            };
            if let Some(spans) = spans() {
                for (s, v) in sums.iter_mut().zip(spans) {
                    *s += v;
                }
                count += 1;
            }
        }
        let m = |i: usize| round3(sums[i] / count as f64);
        (count > 0).then(|| AgentSide {
            grant_seen: m(0),
            mark_in_progress: m(1),
            in_progress_seen: m(2),
            back_seen: m(3),
            mark_done: m(4),
            operator_release: m(5),
        })
    }
}

/// `count` bare Running pods bound to `node`, as a kubelet would report them.
fn add_pods(store: &sandbox::Store, node: &str, count: u32) -> anyhow::Result<()> {
    let pods = sandbox::eviction::pods();
    let mut st = store.lock();
    for i in 0..count {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{node}-app-{i}"), "namespace": "default", "labels": {"app": format!("app-{}", i % 50)}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        });
        st.create(pods, pod)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    Ok(())
}

/// `update-operator` (the binary, alone in its process) through a whole rollout of `nodes`
/// simulated nodes carrying `pods` pods; the node side is [`SimAgents`].
#[allow(clippy::too_many_arguments)]
pub async fn operator_scale(
    env: &Env,
    nodes: u32,
    pods: u32,
    max_rebooting: u32,
    reboot: Duration,
    settle: Duration,
    with_monitor: bool,
) -> anyhow::Result<OperatorScale> {
    let names = node_names(nodes);
    let sb = sandbox_with_nodes(&names, reboot).await?;
    let per_node = move |i: usize| pods / nodes + u32::from((i as u32) < pods % nodes);
    for (i, n) in names.iter().enumerate() {
        add_pods(sb.store(), n, per_node(i))?;
    }
    // The monitor's work per event grows with the node count: at thousands of nodes the
    // bench polls the store instead (and computes no ratio).
    let monitor = if with_monitor {
        Some(Monitor::try_start(sb.client_as("monitor")?, &[]).await?)
    } else {
        None
    };
    let agents = SimAgents::start(&sb, &names, "sim-agents")?;
    let started = |v: &NodeView| v.annotation(keys::REBOOT_NEEDED).is_some();
    wait_nodes(&sb, None, Duration::from_secs(300), "agents start", started).await?;
    // A rebooted machine's pods were removed by the sandbox; their controllers would put
    // them back, so the store keeps its pods.
    let mut lifecycle = sb.lifecycle();
    let index: BTreeMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    let repopulate = {
        let store = sb.store().clone();
        tokio::spawn(async move {
            loop {
                let ev = match lifecycle.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                if let sandbox::NodeLifecycle::Up(n) = ev
                    && let Some(&i) = index.get(&n)
                {
                    let _ = add_pods(&store, &n, per_node(i));
                }
            }
        })
    };
    let mut op = spawn_operator(env, &sb, max_rebooting, "scale")?;
    wait_leader(&sb, &mut op).await?;
    tokio::time::sleep(settle).await;
    let idle = op.usage()?;
    let c0 = sb.audit().counts();
    let slots = crate::slots::SlotRecorder::start(sb.store());
    let probe = match monitor {
        None => Some(crate::probe::ApiProbe::start(&sb, crate::probe::USER).await?),
        Some(_) => None,
    };
    let t0 = monitor.as_ref().map(Monitor::now);
    let wall = Instant::now();
    for n in &names {
        sb.host(n)
            .context("simulated host")?
            .set_status(need_reboot_status());
    }
    let patience = Duration::from_secs(300 + u64::from(nodes) / 2);
    let snap = match &monitor {
        Some(m) => Some(
            wait_for(m, Some(&mut op), patience, "the rollout", |s| {
                all_done(s, names.len())
            })
            .await?,
        ),
        None => {
            let hosts: BTreeMap<String, sandbox::SimHost> = names
                .iter()
                .filter_map(|n| Some((n.clone(), sb.host(n)?)))
                .collect();
            let released = |v: &NodeView| {
                hosts.get(&v.name).is_some_and(|h| h.reboots() >= 1)
                    && !v.holds_slot()
                    && v.annotation(keys::REBOOT_NEEDED) != Some(keys::TRUE)
            };
            wait_nodes(&sb, Some(&mut op), patience, "the rollout", released).await?;
            None
        }
    };
    let wall_seconds = round3(wall.elapsed().as_secs_f64());
    let slot_latency = slots.latency(max_rebooting as usize);
    drop(slots);
    let api_round_trip = match probe {
        Some(p) => Some(p.finish().await?),
        None => None,
    };
    let end = op.usage()?;
    let c1 = sb.audit().counts();
    repopulate.abort();
    let pods_at_end = sb
        .store()
        .lock()
        .iter(sandbox::eviction::pods(), None)
        .count();
    let phases = snap
        .as_ref()
        .and_then(|s| Phases::compute(s, max_rebooting as usize));
    let (timeline, agent_side) = match (&snap, &monitor, t0) {
        (Some(s), Some(m), Some(t0)) => {
            // The agents' stamps on the monitor's clock.
            let origin = Instant::now() - Duration::from_secs_f64(m.now());
            let stamps: Vec<(String, Step, f64)> = agents
                .stamps()
                .into_iter()
                .map(|(n, step, at)| (n, step, at.saturating_duration_since(origin).as_secs_f64()))
                .collect();
            (
                Timeline::compute(s, max_rebooting as usize, t0),
                AgentSide::compute(s, &stamps),
            )
        }
        _ => (None, None),
    };
    // The clock starts at the first `reboot-needed=true`, as Timeline says why.
    let summary = snap.map(|s| Summary::compute(&s, max_rebooting as usize, None, true));
    let rollout_cpu = round3(end.cpu_seconds - idle.cpu_seconds);
    let operator_user = |u: &str| u != "sim-agents" && u != "monitor" && u != crate::probe::USER;
    Ok(OperatorScale {
        nodes,
        pods,
        pods_at_end,
        max_rebooting,
        reboot_seconds: reboot.as_secs_f64(),
        idle,
        end,
        rollout_cpu_seconds: rollout_cpu,
        cpu_seconds_per_node_reboot: rollout_cpu / f64::from(nodes),
        wall_seconds,
        slot_latency,
        api_round_trip,
        summary,
        phases,
        timeline,
        agent_side,
        requests: Requests::between(&c0, &c1, operator_user),
    })
}

#[derive(Debug, Serialize)]
pub struct AgentIdle {
    pub idle_seconds: u64,
    pub usage: Usage,
    pub requests: Requests,
}

/// `update-agent` (the binary) on a private dbus-daemon with fake update_engine and logind,
/// against a one-node sandbox: its memory and API requests once it has nothing to do.
pub async fn agent_idle(env: &Env, idle: Duration, work: &Path) -> anyhow::Result<AgentIdle> {
    use host::testing::{FakeLogind, FakeUpdateEngine, TestBus};
    let bus = TestBus::start().context("starting dbus-daemon (is it installed?)")?;
    let status = UpdateStatus {
        last_checked_time: chrono::Utc::now().timestamp(),
        progress: 0.0,
        current_operation: UPDATE_STATUS_IDLE.into(),
        new_version: "0.0.0".into(),
        new_size: 0,
    };
    let _engine = FakeUpdateEngine::start(bus.address(), status).await?;
    let _logind = FakeLogind::start(bus.address()).await?;
    let names = vec!["node-1".to_string()];
    let sb = sandbox_with_nodes(&names, Duration::from_secs(1)).await?;
    let os_release = work.join("os-release");
    std::fs::write(&os_release, sb.host("node-1").context("host")?.os_release())?;
    let args = [
        "--node".to_string(),
        "node-1".into(),
        "--kubeconfig".into(),
        sb.kubeconfig_path().display().to_string(),
        "--dbus-address".into(),
        bus.address().to_string(),
        "--os-release-path".into(),
        os_release.display().to_string(),
        "--metrics-address".into(),
        "off".into(),
    ];
    let mut agent = ChildProc::spawn(&env.agent, &args, env.logs.join("update-agent.log"))?;
    let nodes = sandbox::resources::find("", "v1", "nodes").expect("nodes");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = sb.store().lock().get(nodes, "", "node-1").is_some_and(|n| {
            n.pointer("/metadata/annotations")
                .and_then(|a| a.get(keys::STATUS))
                .is_some_and(|s| s == UPDATE_STATUS_IDLE)
        });
        if ready {
            break;
        }
        agent.check_running()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "update-agent did not annotate its node within 30 s (log: {})",
            agent.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c0 = sb.audit().counts();
    tokio::time::sleep(idle).await;
    let c1 = sb.audit().counts();
    let usage = agent.usage()?;
    Ok(AgentIdle {
        idle_seconds: idle.as_secs(),
        usage,
        requests: Requests::between(&c0, &c1, |_| true),
    })
}
