//! What a rollout achieved, from a [`Snapshot`]: wall time against the
//! physical limit, the most nodes unavailable at once, and violations.

use serde::Serialize;

use crate::monitor::{Cycle, Snapshot};

/// A rollout's figures. Times in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Nodes that completed a reboot cycle (rebooted and released).
    pub rebooted: usize,
    /// The most nodes allowed to reboot at once (`--max-rebooting-nodes`, resolved).
    pub max_rebooting: usize,
    /// From the start of the rollout (updates offered, or the first reboot
    /// request) to the last node released (or to now, while a node is still
    /// in a reboot cycle).
    pub wall_seconds: f64,
    /// T: one node's drain + reboot + return, measured as the mean over the
    /// rebooted nodes of the time from `reboot-in-progress=true` (cordon, drain
    /// starts) to the node Ready again with a new boot ID.
    pub node_seconds: f64,
    /// ceil(rebooted / max_rebooting) × T: the rollout could not be faster
    /// with that many nodes at a time.
    pub physical_limit_seconds: f64,
    /// wall / physical limit (None when nothing rebooted).
    pub ratio: Option<f64>,
    /// The most nodes unavailable (cordoned, draining or rebooting) at once.
    pub max_unavailable: usize,
    /// More than `max_rebooting` nodes unavailable at once, a node rebooted more
    /// than once, a node left cordoned by its reboot cycle.
    pub violations: Vec<String>,
}

/// How T is measured, for people.
pub const NODE_SECONDS_HOW: &str =
    "mean per node of drain start (cordon) -> Ready again with a new boot ID";

impl Summary {
    /// `start`: when the rollout started on the monitor's clock (None: the
    /// first reboot request seen). `once`: every node should reboot at most
    /// once in all (an update offered once); otherwise at most once per cycle.
    pub fn compute(s: &Snapshot, max_rebooting: usize, start: Option<f64>, once: bool) -> Summary {
        let k = max_rebooting.max(1);
        let done: Vec<&Cycle> = s
            .nodes
            .iter()
            .flat_map(|n| n.cycles.iter())
            .filter(|c| c.is_closed() && c.reboots > 0)
            .collect();
        let rebooted = s
            .nodes
            .iter()
            .filter(|n| n.cycles.iter().any(|c| c.is_closed() && c.reboots > 0))
            .count();
        let start = start.unwrap_or_else(|| {
            s.nodes
                .iter()
                .flat_map(|n| n.cycles.iter())
                .filter_map(|c| c.needed.or(c.granted).or(c.drain_start))
                .fold(f64::INFINITY, f64::min)
        });
        let start = if start.is_finite() { start } else { s.now };
        // The last release; now while some node is still in a cycle (an interrupted rollout).
        let end = done
            .iter()
            .filter_map(|c| c.released)
            .fold(f64::NEG_INFINITY, f64::max);
        let in_cycle = s.nodes.iter().any(|n| n.open_cycle().is_some());
        let end = if end.is_finite() && !in_cycle {
            end
        } else {
            s.now
        };
        let wall = (end - start).max(0.0);
        let times: Vec<f64> = done
            .iter()
            .filter_map(|c| Some(c.back? - c.drain_start?))
            .collect();
        let node_seconds = if times.is_empty() {
            0.0
        } else {
            times.iter().sum::<f64>() / times.len() as f64
        };
        let physical = rebooted.div_ceil(k) as f64 * node_seconds;
        let ratio = (physical > 0.0).then(|| wall / physical);

        let mut violations = Vec::new();
        if s.peaks.disrupted > k {
            violations.push(format!(
                "{} nodes unavailable at once, more than {k} ({})",
                s.peaks.disrupted,
                s.peaks.history.last().map_or("", String::as_str)
            ));
        }
        for n in &s.nodes {
            if once && n.reboots() > 1 {
                violations.push(format!("{} rebooted {} times", n.name, n.reboots()));
            } else if let Some(c) = n.cycles.iter().find(|c| c.reboots > 1) {
                violations.push(format!(
                    "{} rebooted {} times in one reboot cycle",
                    n.name, c.reboots
                ));
            }
            if n.cordoned_by_cycle && n.open_cycle().is_none() {
                violations.push(format!("{} left cordoned after its reboot cycle", n.name));
            }
        }
        let ms = |t: f64| (t * 1000.0).round() / 1000.0;
        Summary {
            nodes: s.nodes.len(),
            rebooted,
            max_rebooting: k,
            wall_seconds: ms(wall),
            node_seconds: ms(node_seconds),
            physical_limit_seconds: ms(physical),
            ratio: ratio.map(ms),
            max_unavailable: s.peaks.disrupted,
            violations,
        }
    }
}

/// One node's reboot cycle in a report, in seconds since the rollout started.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub needed: Option<f64>,
    /// The grant (`reboot-ok=true`).
    pub granted: Option<f64>,
    /// Cordoned, drain started (`reboot-in-progress=true`).
    pub drain_start: Option<f64>,
    /// Drain finished: the agent asked for the reboot, the node went NotReady
    /// (the same instant as `reboot_start`).
    pub drain_end: Option<f64>,
    pub reboot_start: Option<f64>,
    /// Ready again with a new boot ID.
    pub back: Option<f64>,
    /// The operator released the slot; the node needs nothing.
    pub released: Option<f64>,
    pub reboots: u32,
}

/// One node in a report.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub zone: Option<String>,
    /// Reboots seen in all.
    pub reboots: usize,
    /// The `version` label now.
    pub version: Option<String>,
    pub boot_ids: Vec<String>,
    pub cycles: Vec<CycleReport>,
}

/// A summary plus every node's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub summary: Summary,
    /// How `summary.node_seconds` (T) is measured.
    pub node_seconds_measured_as: &'static str,
    /// The wall clock at time 0 (the rollout's start).
    pub started_at: String,
    pub nodes: Vec<NodeReport>,
    /// [seconds, nodes unavailable] at every change.
    pub concurrency: Vec<(f64, usize)>,
}

impl Report {
    /// Times relative to `start` (monitor clock; None: the first request seen).
    pub fn new(s: &Snapshot, summary: Summary, start: Option<f64>) -> Report {
        let t0 = start.unwrap_or_else(|| {
            let first = s
                .nodes
                .iter()
                .flat_map(|n| n.cycles.iter())
                .filter_map(|c| c.needed.or(c.granted).or(c.drain_start))
                .fold(f64::INFINITY, f64::min);
            if first.is_finite() { first } else { 0.0 }
        });
        let rel = |t: Option<f64>| t.map(|t| ((t - t0) * 1000.0).round() / 1000.0);
        let started_at =
            s.started_at + chrono::Duration::milliseconds((t0 * 1000.0).round() as i64);
        Report {
            summary,
            node_seconds_measured_as: NODE_SECONDS_HOW,
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            nodes: s
                .nodes
                .iter()
                .map(|n| NodeReport {
                    name: n.name.clone(),
                    zone: n.zone.clone(),
                    reboots: n.reboots(),
                    version: n.version.clone(),
                    boot_ids: n.boot_ids.clone(),
                    cycles: n
                        .cycles
                        .iter()
                        .map(|c| CycleReport {
                            needed: rel(c.needed),
                            granted: rel(c.granted),
                            drain_start: rel(c.drain_start),
                            drain_end: rel(c.reboot_start),
                            reboot_start: rel(c.reboot_start),
                            back: rel(c.back),
                            released: rel(c.released),
                            reboots: c.reboots,
                        })
                        .collect(),
                })
                .collect(),
            concurrency: {
                // The value at time 0, then every change after it.
                let at_start = s
                    .concurrency
                    .iter()
                    .take_while(|(t, _)| *t <= t0)
                    .last()
                    .map_or(0, |c| c.1);
                std::iter::once((0.0, at_start))
                    .chain(
                        s.concurrency
                            .iter()
                            .filter(|(t, _)| *t > t0)
                            .map(|&(t, n)| (rel(Some(t)).unwrap_or(0.0), n)),
                    )
                    .collect()
            },
        }
    }
}
