//! Seeded chaos scenarios: a small simulated cluster, a rollout, and a
//! schedule of faults drawn from the seed; the [`Checker`] referees every
//! change, and after the faults stop the rollout must finish.
//!
//! Determinism: the same seed gives the same [`Scenario`] (cluster shape and
//! fault schedule, in times since the rollout started, and the sandbox's
//! fault RNG seed). The interleaving of the real agents' and operators' tasks
//! on the machine is not deterministic, so a run's exact trace is not either.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use operator::LeaseTiming;
use protocol::agent::DrainTimeoutAction;
use protocol::keys;
use protocol::operator::MaxRebooting;
use protocol::window::RebootWindow;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use sandbox::faults::{InjectedCounts, Partition};
use sandbox::{ErrorRule, FaultPlan, Sandbox, SimHost};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::agents::agent_config;
use crate::cluster::{
    Cluster, ClusterSpec, NAMESPACE, NEW_VERSION, WORKLOAD_NAMESPACE, ZONE_LABEL,
};
use crate::invariants::{Checker, NodeFacts, Rules, Violation};
use crate::operators::{Replica, op_config};

/// Annotations of the bystander, a writer that is not us.
pub const BYSTANDER_PREFIX: &str = "chaos.example.com/";
const BYSTANDER_KEY: &str = "chaos.example.com/bystander";
/// The agents' drain timeout (`--grace-period`): long enough for a drain
/// through the faults while PodDisruptionBudgets let one pod go at a time.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The drain timeout of the agent on the node a PDB blocks for good, so its
/// drain gives up within the scenario.
pub const BLOCKED_DRAIN_TIMEOUT: Duration = Duration::from_secs(6);
/// The operator's `--reboot-timeout` in scenarios (stuck-node marking).
pub const REBOOT_TIMEOUT: Duration = Duration::from_secs(5);
/// The agents' `--reboot-timeout`: how long after logind accepted a reboot the agent asks
/// again (a lost reboot).
pub const AGENT_REBOOT_TIMEOUT: Duration = Duration::from_secs(2);
/// deploy/'s ClusterRoleBindings, revoked by [`FaultKind::RbacRevoke`].
pub const AGENT_BINDING: &str = "flatcar-linux-update-agent";
pub const OPERATOR_BINDING: &str = "flatcar-linux-update-operator";
/// The hooks of scenarios with [`FaultKind::LeaderKillBetweenPhases`]: approved this long
/// after the operator's label appears.
const HOOK_DELAY: Duration = Duration::from_millis(300);
const BEFORE_HOOK: &str = "hooks.example.com/before-reboot-ok";
const AFTER_HOOK: &str = "hooks.example.com/after-reboot-ok";
/// What logind says while an inhibitor lock refuses the reboot.
const INHIBITED: &str = "Operation inhibited by \"chaos\" (inhibitor lock held; \
                         org.freedesktop.login1.OperationInProgress)";

/// Where a node is in its reboot, to kill its agent right there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// `reboot-needed=true`, not granted yet.
    Waiting,
    /// Granted, the drain has not started.
    Granted,
    /// `reboot-in-progress=true`, still on the old boot.
    Draining,
    /// Back with a new boot ID, before or while the agent finishes the cycle.
    AfterReboot,
}

impl Step {
    const ALL: [Step; 4] = [
        Step::Waiting,
        Step::Granted,
        Step::Draining,
        Step::AfterReboot,
    ];

    fn reached(self, f: &NodeFacts) -> bool {
        let v = &f.view;
        let t = |k| v.annotation(k) == Some(keys::TRUE);
        match self {
            Step::Waiting => t(keys::REBOOT_NEEDED) && !t(keys::REBOOT_OK),
            Step::Granted => t(keys::REBOOT_OK) && !t(keys::REBOOT_IN_PROGRESS),
            Step::Draining => t(keys::REBOOT_IN_PROGRESS) && v.ready && f.reboots() == 0,
            Step::AfterReboot => f.reboots() >= 1 && v.ready,
        }
    }
}

/// One fault of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Requests (of `verb` on `resource`, None: any) fail with `code` at `rate`.
    ApiErrors {
        code: u16,
        rate: f64,
        verb: Option<&'static str>,
        resource: Option<&'static str>,
        lasting: Duration,
    },
    /// Requests are delayed by `delay` at `rate`.
    Latency {
        delay: Duration,
        rate: f64,
        lasting: Duration,
    },
    /// Every watch stream ends after `after_events` events.
    WatchCuts {
        after_events: usize,
        lasting: Duration,
    },
    /// Every request fails with 503.
    Outage { lasting: Duration },
    /// The leading operator replica dies abruptly; a new replica starts.
    LeaderKill,
    /// `node`'s agent dies when the node reaches `step`, and is restarted `down` later.
    AgentKill {
        node: String,
        step: Step,
        down: Duration,
    },
    /// `node` goes down for its reboot and never comes back.
    NeverBack { node: String },
    /// A pod on `node` under a PodDisruptionBudget that never allows an eviction.
    PdbBlock { node: String },
    /// The reboot window closes; it opens again `reopen_after` later.
    WindowClose { reopen_after: Duration },
    /// Updates arrive on these nodes (the others got theirs at the start).
    LateUpdate { nodes: Vec<String> },
    /// Every open watch ends and the history is compacted (etcd compaction): resuming
    /// from an older resourceVersion, or continuing a list, is 410 Gone.
    WatchExpiry,
    /// The API server restarts: every watch ends, every request fails with 503 for
    /// `lasting`, and the history is compacted at both ends (410 on resume).
    ApiRestart { lasting: Duration },
    /// logind refuses `node`'s reboot (an inhibitor lock) for `lasting` from when the node
    /// starts draining.
    LogindRefuse { node: String, lasting: Duration },
    /// logind accepts `node`'s first reboot call but the machine never goes down.
    RebootLost { node: String },
    /// The ClusterRoleBinding `binding` (the agents' or the operator's) is deleted for
    /// `lasting`, then created again: their requests are 403 meanwhile.
    RbacRevoke {
        binding: &'static str,
        lasting: Duration,
    },
    /// `node`'s agent is cut off from the API for `lasting`: its requests get no answer,
    /// then 504; half of them were carried out all the same.
    AgentPartition { node: String, lasting: Duration },
    /// With before- and after-reboot hooks configured: the leader dies right after it
    /// labelled a node `label` (`before-reboot` or `after-reboot`), between that first
    /// write and the one that finishes the step (the grant, the release).
    LeaderKillBetweenPhases { label: &'static str },
    /// These nodes' clocks are off by so many seconds (either way, minutes), while the
    /// reboot window closes (a `WindowClose` is always scheduled with it): the operator's
    /// stamps must be judged on the API server's clock.
    ClockSkew { nodes: Vec<(String, i64)> },
    /// The Node object of the first node seen down for its reboot (not the one that never
    /// comes back) is deleted (a cloud controller, an admin); its kubelet registers a fresh
    /// one, without our marks, when the machine is back.
    NodeRecreate,
}

impl FaultKind {
    /// The kind's name, for counts.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::ApiErrors { .. } => "api-errors",
            FaultKind::Latency { .. } => "latency",
            FaultKind::WatchCuts { .. } => "watch-cuts",
            FaultKind::Outage { .. } => "outage",
            FaultKind::LeaderKill => "leader-kill",
            FaultKind::AgentKill { .. } => "agent-kill",
            FaultKind::NeverBack { .. } => "never-back",
            FaultKind::PdbBlock { .. } => "pdb-block",
            FaultKind::WindowClose { .. } => "window-close",
            FaultKind::LateUpdate { .. } => "late-update",
            FaultKind::WatchExpiry => "watch-expiry",
            FaultKind::ApiRestart { .. } => "api-restart",
            FaultKind::LogindRefuse { .. } => "logind-refuse",
            FaultKind::RebootLost { .. } => "reboot-lost",
            FaultKind::RbacRevoke { .. } => "rbac-revoke",
            FaultKind::AgentPartition { .. } => "agent-partition",
            FaultKind::LeaderKillBetweenPhases { .. } => "leader-kill-between-phases",
            FaultKind::ClockSkew { .. } => "clock-skew",
            FaultKind::NodeRecreate => "node-recreate",
        }
    }

    /// Every kind's name.
    pub const NAMES: [&'static str; 19] = [
        "api-errors",
        "latency",
        "watch-cuts",
        "outage",
        "leader-kill",
        "agent-kill",
        "never-back",
        "pdb-block",
        "window-close",
        "late-update",
        "watch-expiry",
        "api-restart",
        "logind-refuse",
        "reboot-lost",
        "rbac-revoke",
        "agent-partition",
        "leader-kill-between-phases",
        "clock-skew",
        "node-recreate",
    ];

    fn lasting(&self) -> Option<Duration> {
        match self {
            FaultKind::ApiErrors { lasting, .. }
            | FaultKind::Latency { lasting, .. }
            | FaultKind::WatchCuts { lasting, .. }
            | FaultKind::Outage { lasting }
            | FaultKind::ApiRestart { lasting }
            | FaultKind::AgentPartition { lasting, .. } => Some(*lasting),
            _ => None,
        }
    }
}

/// A fault at a time after the rollout started (for [`FaultKind::AgentKill`]
/// and [`FaultKind::NeverBack`], armed from then on).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub kind: FaultKind,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>5.2}s {:?}", self.at.as_secs_f64(), self.kind)
    }
}

/// Everything a seed decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub seed: u64,
    pub nodes: u32,
    /// 0: no zone label.
    pub zones: u32,
    /// `--max-rebooting-nodes`.
    pub max: u32,
    /// `--max-rebooting-nodes-per-zone`.
    pub per_zone: Option<u32>,
    pub pods_per_node: u32,
    /// The pods' terminationGracePeriodSeconds.
    pub drain_seconds: u32,
    /// How long a reboot keeps a node down.
    pub reboot: Duration,
    /// `--drain-timeout-action`.
    pub drain_timeout_action: DrainTimeoutAction,
    /// Sorted by time.
    pub faults: Vec<Fault>,
    /// The faults stop this long after the rollout started.
    pub chaos_for: Duration,
}

impl Scenario {
    /// The scenario of `seed`; `nodes` None: 4 to 6, from the seed.
    pub fn from_seed(seed: u64, nodes: Option<u32>) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = nodes.unwrap_or_else(|| rng.random_range(4..=6)).max(1);
        let names = ClusterSpec {
            nodes,
            ..ClusterSpec::default()
        }
        .node_names();
        let zones = if nodes >= 4 && rng.random_bool(0.5) {
            rng.random_range(2..=3)
        } else {
            0
        };
        let mut max = rng.random_range(1..=3.min(nodes));
        let mut per_zone = (zones > 0 && rng.random_bool(0.5)).then(|| rng.random_range(1..=2));
        let chaos_for = Duration::from_millis(rng.random_range(4000..=7000));
        let ms =
            |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..=hi));
        let at = |rng: &mut StdRng| ms(rng, 0, chaos_for.as_millis() as u64 - 500);
        let mut faults = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let code = *[500u16, 503, 429, 409].choose(&mut rng).expect("codes");
            let verb = *[
                None,
                Some("patch"),
                Some("get"),
                Some("list"),
                Some("watch"),
            ]
            .choose(&mut rng)
            .expect("verbs");
            let resource = *[None, Some("nodes"), Some("pods"), Some("leases")]
                .choose(&mut rng)
                .expect("resources");
            faults.push(Fault {
                at: at(&mut rng),
                kind: FaultKind::ApiErrors {
                    code,
                    rate: rng.random_range(5..=30) as f64 / 100.0,
                    verb,
                    resource,
                    lasting: ms(&mut rng, 500, 3000),
                },
            });
        }
        if rng.random_bool(0.6) {
            faults.push(Fault {
                at: at(&mut rng),
                kind: FaultKind::Latency {
                    delay: ms(&mut rng, 20, 300),
                    rate: rng.random_range(20..=80) as f64 / 100.0,
                    lasting: ms(&mut rng, 500, 3000),
                },
            });
        }
        if rng.random_bool(0.5) {
            faults.push(Fault {
                at: at(&mut rng),
                kind: FaultKind::WatchCuts {
                    after_events: rng.random_range(1..=5),
                    lasting: ms(&mut rng, 1000, 4000),
                },
            });
        }
        if rng.random_bool(0.4) {
            faults.push(Fault {
                at: at(&mut rng),
                kind: FaultKind::Outage {
                    lasting: ms(&mut rng, 500, 2000),
                },
            });
        }
        for _ in 0..rng.random_range(0..=2) {
            faults.push(Fault {
                at: at(&mut rng),
                kind: FaultKind::LeaderKill,
            });
        }
        for _ in 0..rng.random_range(1..=3) {
            faults.push(Fault {
                at: Duration::ZERO,
                kind: FaultKind::AgentKill {
                    node: names.choose(&mut rng).expect("nodes").clone(),
                    step: *Step::ALL.choose(&mut rng).expect("steps"),
                    down: ms(&mut rng, 100, 1500),
                },
            });
        }
        let mut spare: Vec<String> = names.clone();
        spare.shuffle(&mut rng);
        if nodes >= 3 && rng.random_bool(0.25) {
            let node = spare.pop().expect("a node");
            // The dead node keeps its slot: the others can finish only with a second one.
            max = max.max(2);
            per_zone = per_zone.map(|p| p.max(2));
            faults.push(Fault {
                at: Duration::ZERO,
                kind: FaultKind::NeverBack { node },
            });
        }
        if nodes >= 2 && rng.random_bool(0.3) {
            faults.push(Fault {
                at: Duration::ZERO,
                kind: FaultKind::PdbBlock {
                    node: spare.pop().expect("a node"),
                },
            });
        }
        if rng.random_bool(0.3) {
            faults.push(Fault {
                at: ms(&mut rng, 1000, 3500),
                kind: FaultKind::WindowClose {
                    reopen_after: ms(&mut rng, 1000, 2500),
                },
            });
        }
        if nodes >= 2 && rng.random_bool(0.5) {
            let mut late = names.clone();
            late.shuffle(&mut rng);
            late.truncate(rng.random_range(1..=(nodes as usize / 2).max(1)));
            late.sort();
            faults.push(Fault {
                at: ms(&mut rng, 500, chaos_for.as_millis() as u64 - 1000),
                kind: FaultKind::LateUpdate { nodes: late },
            });
        }
        let drain_seconds = rng.random_range(0..=1);
        let reboot = ms(&mut rng, 300, 700);
        let drain_timeout_action = if rng.random_bool(0.2) {
            DrainTimeoutAction::Reboot
        } else {
            DrainTimeoutAction::Uncordon
        };
        // The later kinds are drawn after everything above, so the earlier kinds' schedule
        // of a seed is what it was before they existed.
        if rng.random_bool(0.4) {
            faults.push(Fault {
                at: at(&mut rng),
                kind: FaultKind::WatchExpiry,
            });
        }
        if rng.random_bool(0.3) {
            faults.push(Fault {
                at: at(&mut rng),
                kind: FaultKind::ApiRestart {
                    lasting: ms(&mut rng, 200, 1000),
                },
            });
        }
        // Nodes that reboot in every scenario (not the dead one, not the blocked one).
        let rebooting: Vec<String> = names
            .iter()
            .filter(|n| {
                !faults.iter().any(|f| {
                    matches!(&f.kind, FaultKind::NeverBack { node } | FaultKind::PdbBlock { node } if node == *n)
                })
            })
            .cloned()
            .collect();
        if !rebooting.is_empty() && rng.random_bool(0.3) {
            faults.push(Fault {
                at: Duration::ZERO,
                kind: FaultKind::LogindRefuse {
                    node: rebooting.choose(&mut rng).expect("nodes").clone(),
                    lasting: ms(&mut rng, 500, 2500),
                },
            });
        }
        if !rebooting.is_empty() && rng.random_bool(0.25) {
            faults.push(Fault {
                at: Duration::ZERO,
                kind: FaultKind::RebootLost {
                    node: rebooting.choose(&mut rng).expect("nodes").clone(),
                },
            });
        }
        if rng.random_bool(0.3) {
            faults.push(Fault {
                at: at(&mut rng),
                kind: FaultKind::RbacRevoke {
                    binding: [AGENT_BINDING, OPERATOR_BINDING]
                        .choose(&mut rng)
                        .expect("bindings"),
                    lasting: ms(&mut rng, 500, 2000),
                },
            });
        }
        if rng.random_bool(0.3) {
            faults.push(Fault {
                at: at(&mut rng),
                kind: FaultKind::AgentPartition {
                    node: names.choose(&mut rng).expect("nodes").clone(),
                    lasting: ms(&mut rng, 500, 3000),
                },
            });
        }
        if rng.random_bool(0.3) {
            faults.push(Fault {
                at: Duration::ZERO,
                kind: FaultKind::LeaderKillBetweenPhases {
                    label: [keys::BEFORE_REBOOT, keys::AFTER_REBOOT]
                        .choose(&mut rng)
                        .expect("labels"),
                },
            });
        }
        if rng.random_bool(0.35) {
            let mut skewed = names.clone();
            skewed.shuffle(&mut rng);
            skewed.truncate(rng.random_range(1..=(nodes as usize / 2).max(1)));
            skewed.sort();
            let nodes = skewed
                .into_iter()
                .map(|n| {
                    let sign = if rng.random_bool(0.5) { 1 } else { -1 };
                    (n, sign * rng.random_range(60..=600))
                })
                .collect();
            faults.push(Fault {
                at: Duration::ZERO,
                kind: FaultKind::ClockSkew { nodes },
            });
            if !faults
                .iter()
                .any(|f| matches!(f.kind, FaultKind::WindowClose { .. }))
            {
                faults.push(Fault {
                    at: ms(&mut rng, 1000, 3500),
                    kind: FaultKind::WindowClose {
                        reopen_after: ms(&mut rng, 1000, 2500),
                    },
                });
            }
        }
        if rng.random_bool(0.3) {
            faults.push(Fault {
                at: Duration::ZERO,
                kind: FaultKind::NodeRecreate,
            });
        }
        faults.sort_by_key(|f| f.at);
        Scenario {
            seed,
            nodes,
            zones,
            max,
            per_zone,
            pods_per_node: 2,
            drain_seconds,
            reboot,
            drain_timeout_action,
            faults,
            chaos_for,
        }
    }

    fn spec(&self) -> ClusterSpec {
        ClusterSpec {
            nodes: self.nodes,
            zones: self.zones,
            pods_per_node: self.pods_per_node,
            drain_seconds: self.drain_seconds,
            reboot: self.reboot,
            hook_delay: self.hooks().then_some(HOOK_DELAY),
        }
    }

    /// Whether the operator runs with before- and after-reboot hooks.
    fn hooks(&self) -> bool {
        self.find(|k| matches!(k, FaultKind::LeaderKillBetweenPhases { .. }).then_some(()))
            .is_some()
    }

    fn find<'a, T>(&'a self, f: impl Fn(&'a FaultKind) -> Option<T>) -> Option<T> {
        self.faults.iter().find_map(|x| f(&x.kind))
    }

    fn never_back(&self) -> Option<&str> {
        self.find(|k| match k {
            FaultKind::NeverBack { node } => Some(node.as_str()),
            _ => None,
        })
    }

    fn pdb_blocked(&self) -> Option<&str> {
        self.find(|k| match k {
            FaultKind::PdbBlock { node } => Some(node.as_str()),
            _ => None,
        })
    }

    fn late_nodes(&self) -> BTreeSet<String> {
        self.find(|k| match k {
            FaultKind::LateUpdate { nodes } => Some(nodes.iter().cloned().collect()),
            _ => None,
        })
        .unwrap_or_default()
    }

    /// The operator's settings, with `window`.
    fn operator_config(&self, window: Option<RebootWindow>) -> protocol::operator::OperatorConfig {
        let mut op = op_config(self.max);
        op.max_rebooting_per_zone = self.per_zone.map(MaxRebooting::Count);
        op.reboot_timeout = chrono::TimeDelta::from_std(REBOOT_TIMEOUT).expect("small");
        op.window = window;
        if self.hooks() {
            op.before_reboot_annotations = vec![BEFORE_HOOK.to_string()];
            op.after_reboot_annotations = vec![AFTER_HOOK.to_string()];
        }
        op
    }

    /// The plan of the faults active `t` after the rollout started (`t0`).
    fn plan_at(&self, t: Duration, t0: Instant) -> FaultPlan {
        let mut plan = FaultPlan::default();
        for f in &self.faults {
            let Some(lasting) = f.kind.lasting() else {
                continue;
            };
            if t < f.at || t >= f.at + lasting {
                continue;
            }
            match &f.kind {
                FaultKind::ApiErrors {
                    code,
                    rate,
                    verb,
                    resource,
                    ..
                } => plan.errors.push(ErrorRule {
                    verb: verb.map(str::to_string),
                    resource: resource.map(str::to_string),
                    rate: *rate,
                    code: *code,
                }),
                FaultKind::Latency { delay, rate, .. } => {
                    plan.latency = plan.latency.max(*delay);
                    plan.latency_rate = plan.latency_rate.max(*rate);
                }
                FaultKind::WatchCuts { after_events, .. } => {
                    plan.watch_cut_after_events = Some(
                        plan.watch_cut_after_events
                            .map_or(*after_events, |n| n.min(*after_events)),
                    );
                }
                FaultKind::Outage { .. } | FaultKind::ApiRestart { .. } => {
                    plan.outage_until = Some(t0 + f.at + lasting);
                }
                FaultKind::AgentPartition { node, .. } => {
                    plan.partition = Some(Partition {
                        node: node.clone(),
                        until: t0 + f.at + lasting,
                        applied_rate: 0.5,
                    });
                }
                _ => {}
            }
        }
        plan
    }

    /// The longest latency the schedule injects.
    fn max_latency(&self) -> Duration {
        self.faults
            .iter()
            .filter_map(|f| match f.kind {
                FaultKind::Latency { delay, .. } => Some(delay),
                _ => None,
            })
            .max()
            .unwrap_or_default()
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} nodes, {} zones, max {}{}, reboot {} ms, drain {} s, \
             --drain-timeout-action {}, faults for {:.1} s",
            self.seed,
            self.nodes,
            self.zones,
            self.max,
            self.per_zone
                .map(|p| format!(" ({p} per zone)"))
                .unwrap_or_default(),
            self.reboot.as_millis(),
            self.drain_seconds,
            self.drain_timeout_action,
            self.chaos_for.as_secs_f64()
        )?;
        for fault in &self.faults {
            write!(f, "\n  {fault}")?;
        }
        Ok(())
    }
}

/// What a scenario came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    /// Faults that happened (a state-triggered fault whose state was never
    /// reached did not), by kind.
    pub fired: BTreeMap<&'static str, u32>,
    /// Requests the sandbox failed or delayed.
    pub injected: InjectedCounts,
    pub violations: Vec<Violation>,
    /// Every node finished as it should after the faults stopped.
    pub finished: bool,
    pub duration: Duration,
}

impl Outcome {
    /// Faults that happened.
    pub fn faults_injected(&self) -> u32 {
        self.fired.values().sum()
    }

    fn failed(seed: u64, started: Instant, e: anyhow::Error) -> Outcome {
        Outcome {
            seed,
            fired: BTreeMap::new(),
            injected: InjectedCounts::default(),
            violations: vec![Violation {
                seed,
                at: started.elapsed().as_secs_f64(),
                nodes: Vec::new(),
                what: format!("the scenario could not run: {e:#}"),
            }],
            finished: false,
            duration: started.elapsed(),
        }
    }
}

/// Fast leader election: a failover within about a second.
pub fn chaos_lease() -> LeaseTiming {
    LeaseTiming {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(700),
        retry_period: Duration::from_millis(150),
    }
}

/// A daily window open now that closes `close_in` from now.
fn window_closing_in(close_in: Duration) -> anyhow::Result<RebootWindow> {
    let now = Utc::now();
    let floor = now
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("valid time");
    let length = (now - floor) + chrono::TimeDelta::from_std(close_in)?;
    Ok(RebootWindow::parse(
        &format!("{:02}:{:02}", floor.hour(), floor.minute()),
        &format!("{}ms", length.num_milliseconds()),
    )?)
}

struct Operators<'a> {
    sb: &'a Sandbox,
    scenario: &'a Scenario,
    replicas: Mutex<Vec<Replica>>,
    window: Mutex<Option<RebootWindow>>,
    started: Mutex<u32>,
}

impl Operators<'_> {
    fn start_one(&self) -> anyhow::Result<Replica> {
        let n = {
            let mut s = self.started.lock().unwrap();
            *s += 1;
            *s
        };
        let op = self.scenario.operator_config(*self.window.lock().unwrap());
        let mut cfg = operator::Config::new(NAMESPACE, op);
        cfg.identity = format!("update-operator-{n}");
        cfg.lease = chaos_lease();
        Replica::start_as(self.sb, &sandbox::UserInfo::operator(), cfg)
    }

    /// Two replicas (after killing any running).
    fn restart_all(&self, window: Option<RebootWindow>) -> anyhow::Result<()> {
        *self.window.lock().unwrap() = window;
        let old: Vec<Replica> = std::mem::take(&mut *self.replicas.lock().unwrap());
        for r in old {
            r.kill();
        }
        let fresh = vec![self.start_one()?, self.start_one()?];
        *self.replicas.lock().unwrap() = fresh;
        Ok(())
    }

    fn leader(&self) -> Option<String> {
        crate::operators::lease_holder(self.sb, NAMESPACE)
    }

    /// Kills the leader (or the first replica when none leads) and starts another.
    fn kill_leader(&self) -> anyhow::Result<()> {
        let leader = self.leader();
        let victim = {
            let mut rs = self.replicas.lock().unwrap();
            let i = rs
                .iter()
                .position(|r| Some(&r.identity) == leader.as_ref())
                .unwrap_or(0);
            (i < rs.len()).then(|| rs.remove(i))
        };
        if let Some(v) = victim {
            v.kill();
        }
        let r = self.start_one()?;
        self.replicas.lock().unwrap().push(r);
        Ok(())
    }

    fn kill_all(&self) {
        for r in std::mem::take(&mut *self.replicas.lock().unwrap()) {
            r.kill();
        }
    }
}

/// A deployment of one replica pinned to `node`, under a PDB that allows no eviction.
fn add_blocking_pdb(sb: &Sandbox, node: &str) -> anyhow::Result<()> {
    let name = format!("pinned-{node}");
    let labels = json!({"app": name});
    sb.create(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": WORKLOAD_NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }))?;
    sb.create(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": WORKLOAD_NAMESPACE},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": labels}},
    }))?;
    Ok(())
}

/// Runs one scenario. Harness failures (the sandbox cannot start) are a
/// violation of the outcome too, so nothing passes silently.
pub async fn run(s: &Scenario) -> Outcome {
    let started = Instant::now();
    match run_inner(s, started).await {
        Ok(o) => o,
        Err(e) => Outcome::failed(s.seed, started, e),
    }
}

type Task<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

async fn run_inner(s: &Scenario, started: Instant) -> anyhow::Result<Outcome> {
    let spec = s.spec();
    let mut opts = spec.sandbox_options(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    opts.seed = s.seed;
    let sb = Sandbox::start(opts).await?;
    let mut first = operator::Config::new(NAMESPACE, s.operator_config(None));
    first.lease = chaos_lease();
    let action = s.drain_timeout_action;
    let blocked = s.pdb_blocked().map(str::to_string);
    let skews: BTreeMap<String, i64> = s
        .find(|k| match k {
            FaultKind::ClockSkew { nodes } => Some(nodes.iter().cloned().collect()),
            _ => None,
        })
        .unwrap_or_default();
    let skewed = !skews.is_empty();
    let mut cluster = Cluster::start_with(sb, &spec, first, move |node: &str, host: &SimHost| {
        let mut c = agent_config(node, host);
        if let Some(secs) = skews.get(node) {
            c.clock = shell::ServerClock::with_local_skew(chrono::TimeDelta::seconds(*secs));
        }
        c.grace_period = if blocked.as_deref() == Some(node) {
            BLOCKED_DRAIN_TIMEOUT
        } else {
            DRAIN_TIMEOUT
        };
        c.drain_timeout_action = action;
        c.api_backoff_max = Duration::from_secs(1);
        c.reboot_timeout = AGENT_REBOOT_TIMEOUT;
        // The agent's own default: scenarios run side by side on a busy machine.
        c.pod_delete_margin = Duration::from_secs(10);
        c
    })
    .await?;
    // The scenario runs its own replicas (killed and replaced at will); the
    // cluster's first one steps down and hands over its Lease.
    let parked = Replica {
        identity: String::new(),
        token: CancellationToken::new(),
        handle: tokio::spawn(async { Ok(()) }),
    };
    std::mem::replace(&mut cluster.operator, parked)
        .stop()
        .await?;
    let sb = &cluster.sandbox;
    let mut fired: BTreeMap<&'static str, u32> = BTreeMap::new();
    if skewed {
        *fired.entry("clock-skew").or_default() += 1;
    }
    if let Some(node) = s.pdb_blocked() {
        add_blocking_pdb(sb, node)?;
        anyhow::ensure!(
            sb.wait_pods_ready(Duration::from_secs(20)).await,
            "the pod pinned to {node} did not run"
        );
        *fired.entry("pdb-block").or_default() += 1;
    }
    if let Some(node) = s.never_back() {
        sb.host(node)
            .ok_or_else(|| anyhow::anyhow!("no host {node}"))?
            .stay_down();
    }
    let lost: Vec<&str> = s
        .faults
        .iter()
        .filter_map(|f| match &f.kind {
            FaultKind::RebootLost { node } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    for node in &lost {
        sb.host(node)
            .ok_or_else(|| anyhow::anyhow!("no host {node}"))?
            .lose_reboots(1);
    }
    // Taken out of the store directly: injected API errors must not stop the fault itself.
    let revoked: Mutex<Vec<serde_json::Value>> = Mutex::default();
    let window_close = s.find(|k| match k {
        FaultKind::WindowClose { reopen_after } => Some(*reopen_after),
        _ => None,
    });
    let close_at = s
        .faults
        .iter()
        .find(|f| matches!(f.kind, FaultKind::WindowClose { .. }))
        .map(|f| f.at);
    let window = close_at.map(window_closing_in).transpose()?;
    let checker = Checker::start(
        sb.store(),
        Rules {
            seed: s.seed,
            max: s.max as usize,
            per_zone: s.per_zone.map(MaxRebooting::Count),
            zone_label: ZONE_LABEL.to_string(),
            window,
            window_slack: Duration::from_millis(1500) + s.max_latency(),
            drain_timeout_reboots: s.drain_timeout_action == DrainTimeoutAction::Reboot,
            max_reboots: 1,
            foreign_prefix: BYSTANDER_PREFIX.to_string(),
        },
    );
    let ops = Operators {
        sb,
        scenario: s,
        replicas: Mutex::new(Vec::new()),
        window: Mutex::new(None),
        started: Mutex::new(0),
    };
    ops.restart_all(window)?;

    let t0 = Instant::now();
    let late = s.late_nodes();
    let first_hosts: Vec<SimHost> = cluster
        .names
        .iter()
        .filter(|n| !late.contains(*n))
        .filter_map(|n| sb.host(n))
        .collect();
    futures::future::join_all(first_hosts.iter().map(|h| h.offer_update(NEW_VERSION))).await;

    let fired_mx = Mutex::new(fired);
    let fire = |kind: &'static str| *fired_mx.lock().unwrap().entry(kind).or_default() += 1;
    let down_agents: Mutex<BTreeSet<String>> = Mutex::default();
    let reopened = Mutex::new(window_close.is_none());
    let bystander = Bystander::default();
    // Nodes whose Node object was deleted and registered again: their annotations went with it.
    let recreated: Mutex<BTreeSet<String>> = Mutex::default();
    let mut tasks: Vec<Task> = Vec::new();
    // The request-level faults: the plan of the moment.
    tasks.push(Box::pin(async {
        while t0.elapsed() < s.chaos_for {
            sb.faults().set(s.plan_at(t0.elapsed(), t0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }));
    tasks.push(Box::pin(bystander.run(sb, &cluster.names, s.seed)));
    for f in &s.faults {
        let at = t0 + f.at;
        let (fire, ops, checker, down_agents, reopened, cluster, recreated) = (
            &fire,
            &ops,
            &checker,
            &down_agents,
            &reopened,
            &cluster,
            &recreated,
        );
        let task: Task = match &f.kind {
            FaultKind::ApiErrors { .. }
            | FaultKind::Latency { .. }
            | FaultKind::WatchCuts { .. }
            | FaultKind::Outage { .. }
            | FaultKind::AgentPartition { .. } => {
                let name = f.kind.name();
                Box::pin(async move {
                    tokio::time::sleep_until(at.into()).await;
                    fire(name);
                    Ok(())
                })
            }
            FaultKind::LeaderKill => Box::pin(async move {
                tokio::time::sleep_until(at.into()).await;
                ops.kill_leader()?;
                fire("leader-kill");
                Ok(())
            }),
            FaultKind::AgentKill { node, step, down } => Box::pin(async move {
                let mut changes = checker.changes();
                loop {
                    if checker.nodes().get(node).is_some_and(|f| step.reached(f)) {
                        break;
                    }
                    changes.changed().await?;
                }
                cluster.fleet.kill(node);
                down_agents.lock().unwrap().insert(node.clone());
                fire("agent-kill");
                tokio::time::sleep(*down).await;
                restart_agent(cluster, node, down_agents);
                Ok(())
            }),
            FaultKind::WindowClose { reopen_after } => Box::pin(async move {
                tokio::time::sleep_until(at.into()).await;
                fire("window-close");
                tokio::time::sleep(*reopen_after).await;
                reopen(ops, checker, reopened)
            }),
            FaultKind::LateUpdate { nodes } => Box::pin(async move {
                tokio::time::sleep_until(at.into()).await;
                let hs: Vec<SimHost> = nodes.iter().filter_map(|n| sb.host(n)).collect();
                futures::future::join_all(hs.iter().map(|h| h.offer_update(NEW_VERSION))).await;
                fire("late-update");
                Ok(())
            }),
            FaultKind::WatchExpiry => Box::pin(async move {
                tokio::time::sleep_until(at.into()).await;
                compact_and_cut(sb);
                fire("watch-expiry");
                Ok(())
            }),
            FaultKind::ApiRestart { lasting } => Box::pin(async move {
                tokio::time::sleep_until(at.into()).await;
                compact_and_cut(sb);
                fire("api-restart");
                tokio::time::sleep(*lasting).await;
                // The restarted server's watch cache starts from now.
                sb.store().lock().compact();
                Ok(())
            }),
            FaultKind::LogindRefuse { node, lasting } => Box::pin(async move {
                let mut changes = checker.changes();
                while !checker
                    .nodes()
                    .get(node)
                    .is_some_and(|f| Step::Draining.reached(f))
                {
                    changes.changed().await?;
                }
                let host = sb
                    .host(node)
                    .ok_or_else(|| anyhow::anyhow!("no host {node}"))?;
                host.fail_reboots(Some(INHIBITED));
                fire("logind-refuse");
                tokio::time::sleep(*lasting).await;
                host.fail_reboots(None);
                Ok(())
            }),
            FaultKind::RbacRevoke { binding, lasting } => {
                let revoked = &revoked;
                Box::pin(async move {
                    tokio::time::sleep_until(at.into()).await;
                    revoke_binding(sb, binding, revoked)?;
                    fire("rbac-revoke");
                    tokio::time::sleep(*lasting).await;
                    restore_bindings(sb, revoked)
                })
            }
            FaultKind::LeaderKillBetweenPhases { label } => Box::pin(async move {
                let mut changes = checker.changes();
                while !checker
                    .nodes()
                    .values()
                    .any(|f| f.view.label(label) == Some(keys::TRUE))
                {
                    changes.changed().await?;
                }
                ops.kill_leader()?;
                fire("leader-kill-between-phases");
                Ok(())
            }),
            FaultKind::NodeRecreate => Box::pin(async move {
                let mut changes = checker.changes();
                // Down mid-reboot: draining done, the machine went NotReady.
                let node = loop {
                    let down = checker.nodes().into_iter().find(|(n, f)| {
                        s.never_back() != Some(n.as_str())
                            && f.reboots() == 0
                            && !f.view.ready
                            && f.view.annotation(keys::REBOOT_IN_PROGRESS) == Some(keys::TRUE)
                    });
                    if let Some((n, _)) = down {
                        break n;
                    }
                    changes.changed().await?;
                };
                let node = &node;
                // Out of the store directly, as the revoked bindings: injected API errors
                // must not stop the fault itself.
                let nodes = sandbox::resources::find("", "v1", "nodes")
                    .ok_or_else(|| anyhow::anyhow!("the sandbox serves no nodes"))?;
                sb.store()
                    .lock()
                    .remove(nodes, "", node)
                    .map_err(|e| anyhow::anyhow!("deleting Node {node}: {}", e.message))?;
                recreated.lock().unwrap().insert(node.clone());
                fire("node-recreate");
                Ok(())
            }),
            FaultKind::NeverBack { .. }
            | FaultKind::PdbBlock { .. }
            | FaultKind::RebootLost { .. }
            | FaultKind::ClockSkew { .. } => continue,
        };
        tasks.push(task);
    }
    let chaos = futures::future::try_join_all(tasks);
    if let Ok(Err(e)) = tokio::time::timeout(s.chaos_for, chaos).await {
        return Err(e.context("a fault could not be injected"));
    }
    // The faults stop: no more injected errors, every agent runs, the window is open,
    // logind allows reboots, the permissions are back.
    sb.faults().set(FaultPlan::default());
    for f in &s.faults {
        if let FaultKind::LogindRefuse { node, .. } = &f.kind
            && let Some(h) = sb.host(node)
        {
            h.fail_reboots(None);
        }
    }
    restore_bindings(sb, &revoked)?;
    let still_down: Vec<String> = down_agents.lock().unwrap().iter().cloned().collect();
    for node in still_down {
        restart_agent(&cluster, &node, &down_agents);
    }
    if !*reopened.lock().unwrap() {
        reopen(&ops, &checker, &reopened)?;
    }
    if let Some(node) = s.never_back()
        && checker.nodes().get(node).is_some_and(|f| !f.view.ready)
    {
        fire("never-back");
    }
    let deadline = Instant::now()
        + Duration::from_secs(30)
        + Duration::from_secs(4) * s.nodes.div_ceil(s.max.max(1));
    let mut pending;
    loop {
        pending = unfinished(s, &cluster.names, &checker.nodes());
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(node) = s.never_back()
        && !fired_mx.lock().unwrap().contains_key("never-back")
        && checker.nodes().get(node).is_some_and(|f| !f.view.ready)
    {
        fire("never-back");
    }
    for node in &lost {
        if sb.host(node).is_some_and(|h| h.reboots_lost() > 0) {
            fire("reboot-lost");
        }
    }
    let finished = pending.is_empty();
    for (node, why) in pending {
        checker.violate(
            vec![node],
            format!(
                "not finished {:.0} s after the faults stopped: {why}",
                deadline.duration_since(t0).as_secs_f64() - s.chaos_for.as_secs_f64()
            ),
        );
    }
    let recreated = recreated.into_inner().unwrap();
    for (node, why) in bystander.check(&checker.nodes()) {
        if recreated.contains(&node) {
            continue;
        }
        checker.violate(vec![node], why);
    }
    let injected = sb.faults().injected();
    let violations = checker.violations();
    ops.kill_all();
    drop(checker);
    // Everything is aborted, not stopped gracefully: nothing is left to check.
    drop(cluster);
    let fired = fired_mx.into_inner().unwrap();
    Ok(Outcome {
        seed: s.seed,
        fired,
        injected,
        violations,
        finished,
        duration: started.elapsed(),
    })
}

/// Ends every open watch and forgets the history before now: resumes are 410 Gone.
fn compact_and_cut(sb: &Sandbox) {
    let mut store = sb.store().lock();
    store.compact();
    sb.faults().cut_all_watches();
}

fn cluster_role_bindings() -> anyhow::Result<&'static sandbox::resources::Resource> {
    sandbox::resources::find("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        .ok_or_else(|| anyhow::anyhow!("the sandbox serves no clusterrolebindings"))
}

/// Deletes the ClusterRoleBinding `name`, keeping it to create again.
fn revoke_binding(
    sb: &Sandbox,
    name: &str,
    revoked: &Mutex<Vec<serde_json::Value>>,
) -> anyhow::Result<()> {
    let gone = sb
        .store()
        .lock()
        .remove(cluster_role_bindings()?, "", name)
        .map_err(|e| anyhow::anyhow!("deleting ClusterRoleBinding {name}: {}", e.message))?;
    revoked.lock().unwrap().push((*gone).clone());
    Ok(())
}

/// Creates again the ClusterRoleBindings a fault deleted.
fn restore_bindings(sb: &Sandbox, revoked: &Mutex<Vec<serde_json::Value>>) -> anyhow::Result<()> {
    let taken: Vec<serde_json::Value> = std::mem::take(&mut *revoked.lock().unwrap());
    for mut b in taken {
        if let Some(md) = b["metadata"].as_object_mut() {
            for k in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "managedFields",
            ] {
                md.remove(k);
            }
        }
        sb.create(b)?;
    }
    Ok(())
}

fn restart_agent(cluster: &Cluster, node: &str, down: &Mutex<BTreeSet<String>>) {
    if !down.lock().unwrap().remove(node) {
        return;
    }
    // A machine that is down gets its agent back from the fleet when it is up.
    if cluster
        .sandbox
        .host(node)
        .is_some_and(|h| !h.is_rebooting())
    {
        cluster.fleet.restart(node);
    }
}

fn reopen(ops: &Operators, checker: &Checker, reopened: &Mutex<bool>) -> anyhow::Result<()> {
    let mut r = reopened.lock().unwrap();
    if !*r {
        // The next window: simulated by new operators without a window (a
        // real reopening is at a full minute, too slow for a scenario).
        checker.set_window(None);
        ops.restart_all(None)?;
        *r = true;
    }
    Ok(())
}

/// The nodes not (yet) where the scenario must leave them, and why.
fn unfinished(
    s: &Scenario,
    names: &[String],
    nodes: &BTreeMap<String, NodeFacts>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = names
        .iter()
        .filter(|n| !nodes.contains_key(*n))
        .map(|n| {
            (
                n.clone(),
                "its Node is gone (deleted, not registered again)".to_string(),
            )
        })
        .collect();
    for (name, f) in nodes {
        let v = &f.view;
        let t = |k| v.annotation(k) == Some(keys::TRUE);
        let why = if s.never_back() == Some(name.as_str()) {
            // Down for good: the operator must say so.
            (v.annotation(keys::STUCK_SINCE).is_none()).then(|| {
                format!(
                    "never came back but is not marked {} (ready {}, reboots {})",
                    keys::STUCK_SINCE,
                    v.ready,
                    f.reboots()
                )
            })
        } else if s.pdb_blocked() == Some(name.as_str())
            && s.drain_timeout_action == DrainTimeoutAction::Uncordon
        {
            // Its drain can never finish: it must give up, uncordoned, slot released.
            if f.reboots() > 0 {
                Some("rebooted although its drain could not finish".to_string())
            } else if v.annotation(keys::DRAIN_FAILURE).is_none() {
                Some(format!("no {} recorded yet", keys::DRAIN_FAILURE))
            } else if v.unschedulable || v.holds_slot() {
                Some(format!(
                    "still cordoned ({}) or holding a slot ({}) after its drain failed",
                    v.unschedulable,
                    v.holds_slot()
                ))
            } else {
                None
            }
        } else if f.reboots() != 1 {
            Some(format!("rebooted {} times, not once", f.reboots()))
        } else if v.unschedulable || v.holds_slot() || t(keys::REBOOT_NEEDED) || !v.ready {
            Some(format!(
                "rebooted but not released: unschedulable {}, holds a slot {}, reboot-needed {}, ready {}",
                v.unschedulable,
                v.holds_slot(),
                t(keys::REBOOT_NEEDED),
                v.ready
            ))
        } else if let Some(l) = [keys::BEFORE_REBOOT, keys::AFTER_REBOOT]
            .into_iter()
            .find(|l| v.label(l) == Some(keys::TRUE))
        {
            Some(format!("still labelled {l}=true after its cycle"))
        } else if v.label(keys::LABEL_VERSION) != Some(NEW_VERSION) {
            Some(format!(
                "runs version {:?}, not {NEW_VERSION}",
                v.label(keys::LABEL_VERSION)
            ))
        } else {
            None
        };
        if let Some(w) = why {
            out.push((name.clone(), format!("{w}; {}", describe(f))));
        }
    }
    out
}

/// The node's protocol values, for messages.
fn describe(f: &NodeFacts) -> String {
    let v = &f.view;
    let mut parts: Vec<String> = v
        .annotations
        .iter()
        .chain(v.labels.iter())
        .filter_map(|(k, val)| Some(format!("{}={val}", k.strip_prefix(keys::PREFIX)?)))
        .filter(|p| !p.starts_with("status=") && !p.starts_with("last-checked-time="))
        .collect();
    parts.push(format!(
        "unschedulable={} ready={}",
        v.unschedulable, v.ready
    ));
    parts.join(" ")
}

/// Another writer: sets an increasing counter annotation on the nodes
/// throughout the rollout. None of its writes may be lost.
#[derive(Default)]
struct Bystander {
    acked: Mutex<BTreeMap<String, u64>>,
}

impl Bystander {
    async fn run(&self, sb: &Sandbox, names: &[String], seed: u64) -> anyhow::Result<()> {
        let api = kube::Api::<Node>::all(sb.client_as("bystander")?);
        let mut rng = StdRng::seed_from_u64(seed ^ 0xb157_a11d);
        for counter in 1u64.. {
            let node = names.choose(&mut rng).expect("nodes");
            let body = json!({"metadata": {"annotations": {BYSTANDER_KEY: counter.to_string()}}});
            if api
                .patch(node, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .is_ok()
            {
                self.acked.lock().unwrap().insert(node.clone(), counter);
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..=300))).await;
        }
        Ok(())
    }

    /// Each node must still carry the last value acknowledged for it, or a
    /// later one (a write cut off when the faults stopped may have been applied).
    fn check(&self, nodes: &BTreeMap<String, NodeFacts>) -> Vec<(String, String)> {
        let acked = self.acked.lock().unwrap();
        acked
            .iter()
            .filter_map(|(node, want)| {
                let have = nodes.get(node)?.view.annotation(BYSTANDER_KEY);
                let kept = have.and_then(|h| h.parse::<u64>().ok()) >= Some(*want);
                (!kept).then(|| {
                    (
                        node.clone(),
                        format!(
                            "annotation {BYSTANDER_KEY} is {have:?}, but {want} was written last (a lost update)"
                        ),
                    )
                })
            })
            .collect()
    }
}

/// Runs `scenarios`, `jobs` at a time, calling `done` with each outcome in
/// order; returns them all.
pub async fn run_many(
    scenarios: Vec<Scenario>,
    jobs: usize,
    mut done: impl FnMut(&Scenario, &Outcome),
) -> Vec<Outcome> {
    let mut stream = futures::stream::iter(scenarios.iter().map(|s| async move {
        // Each on its own task, so scenarios use both cores.
        let owned = s.clone();
        let o = tokio::spawn(async move { run(&owned).await }).await;
        (s, o)
    }))
    .buffered(jobs.max(1));
    let mut out = Vec::new();
    while let Some((s, o)) = stream.next().await {
        let o = o.unwrap_or_else(|e| {
            Outcome::failed(
                s.seed,
                Instant::now(),
                anyhow::anyhow!("the scenario panicked: {e}"),
            )
        });
        done(s, &o);
        out.push(o);
    }
    out
}
