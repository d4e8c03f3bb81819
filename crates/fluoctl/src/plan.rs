//! `fluoctl plan`: a dry run of the rollout. From the live cluster and the
//! operator's settings, the pure core's decision ([`decide_with`]) is run
//! again and again on simulated time: every granted node is taken to reboot
//! in `--reboot-estimate` and hooks to be satisfied at once.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use clap::ArgMatches;
use protocol::keys;
use protocol::node::{NodeState, NodeView, format_time};
use protocol::operator::{ClusterInputs, OperatorConfig, decide_with};
use protocol::window::{format_go_duration, parse_go_duration};
use serde::Serialize;

use crate::status::{Connect, Output, client, lease_paused, read_all, settings, table};

/// `fluoctl plan`'s flags: its own, then the operator's.
#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// How long one node takes from its grant to its release (drain, reboot, back).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_estimate)]
    pub reboot_estimate: TimeDelta,
    /// Output format: a table, or the same as JSON.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// Also write the plan as an SVG chart (the `fluoctl sandbox --timeline` chart): a row per
    /// node with its estimated reboot, and the number of nodes rebooting over time.
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<std::path::PathBuf>,
    #[command(
        flatten,
        next_help_heading = "update-operator's flags (as the operator runs with them)"
    )]
    pub operator: operator::cli::Args,
}

/// The plan as a [`fleet::Report`], for [`crate::svg::render`]: each node's estimated reboot
/// as one bar from its grant to its release; seconds from the plan's start.
pub fn report(p: &Plan) -> fleet::Report {
    let now = protocol::node::parse_time(&p.now).unwrap_or_else(Utc::now);
    let secs = |t: &str| {
        protocol::node::parse_time(t).map_or(0.0, |t| ((t - now).num_seconds() as f64).max(0.0))
    };
    let mut changes: Vec<(f64, i64)> = Vec::new();
    let nodes: Vec<fleet::report::NodeReport> = p
        .steps
        .iter()
        .map(|s| {
            let (a, b) = (secs(&s.start), secs(&s.end));
            changes.push((a, 1));
            changes.push((b, -1));
            fleet::report::NodeReport {
                name: s.node.clone(),
                zone: s.zone.clone(),
                reboots: 1,
                version: None,
                boot_ids: Vec::new(),
                cycles: vec![fleet::report::CycleReport {
                    needed: None,
                    granted: Some(a),
                    drain_start: Some(a),
                    drain_end: None,
                    reboot_start: None,
                    back: None,
                    released: Some(b),
                    reboots: 1,
                }],
            }
        })
        .collect();
    // Releases before grants at the same instant.
    changes.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let mut concurrency = vec![(0.0, 0usize)];
    let mut level: i64 = 0;
    for (t, d) in changes {
        level += d;
        concurrency.push((t, level.max(0) as usize));
    }
    let peak = concurrency.iter().map(|c| c.1).max().unwrap_or(0);
    let k = p.max_rebooting.max(1);
    let t = parse_go_duration(&p.reboot_estimate).map_or(0.0, |d| d.num_seconds() as f64);
    let limit = p.steps.len().div_ceil(k) as f64 * t;
    let wall = p.duration_seconds as f64;
    fleet::Report {
        summary: fleet::Summary {
            nodes: p.steps.len(),
            rebooted: p.steps.len(),
            max_rebooting: p.max_rebooting,
            wall_seconds: wall,
            node_seconds: t,
            physical_limit_seconds: limit,
            ratio: (limit > 0.0).then(|| wall / limit),
            max_unavailable: peak,
            violations: Vec::new(),
        },
        node_seconds_measured_as: "--reboot-estimate (a plan)",
        started_at: p.now.clone(),
        nodes,
        concurrency,
    }
}

fn parse_estimate(s: &str) -> Result<TimeDelta, String> {
    let d = parse_go_duration(s.trim()).map_err(|e| e.to_string())?;
    if d <= TimeDelta::zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

/// One node's place in the plan.
#[derive(Serialize, Debug, Clone)]
pub struct Step {
    /// 1-based order of the grants.
    pub order: usize,
    pub node: String,
    pub zone: Option<String>,
    /// Batch number: nodes granted at the same instant.
    pub batch: usize,
    pub start: String,
    pub end: String,
    /// Already granted or rebooting when the plan was made.
    pub in_flight: bool,
}

/// A window opening or closing during the plan.
#[derive(Serialize, Debug, Clone)]
pub struct WindowEdge {
    pub at: String,
    pub open: bool,
}

/// A node that needs a reboot but will not get one, and why.
#[derive(Serialize, Debug, Clone)]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

/// The whole plan.
#[derive(Serialize, Debug)]
pub struct Plan {
    pub now: String,
    pub max_rebooting: usize,
    pub reboot_estimate: String,
    pub cluster_paused: bool,
    pub steps: Vec<Step>,
    pub windows: Vec<WindowEdge>,
    pub skipped: Vec<Skipped>,
    /// From now to the last release; 0 if nothing is to reboot.
    pub duration_seconds: i64,
    pub end: Option<String>,
    /// Per zone: the nodes in order.
    pub zones: BTreeMap<String, Vec<String>>,
    /// Where the operator's settings came from (the Lease, flags, defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<crate::status::SettingsSource>,
}

const NO_ZONE: &str = "(no zone)";

/// Simulates the rollout from `nodes` at `now`.
pub fn simulate(
    nodes: &[NodeView],
    cfg: &OperatorConfig,
    estimate: TimeDelta,
    now: DateTime<Utc>,
) -> Plan {
    let mut views: Vec<NodeView> = nodes.iter().filter(|v| cfg.manages(v)).cloned().collect();
    let inputs = ClusterInputs::default();
    let max = cfg.max_rebooting.resolve(views.len());
    let mut skipped = Vec::new();
    for v in &views {
        match NodeState::parse(v) {
            Err(e) => skipped.push(Skipped {
                node: v.name.clone(),
                reason: format!("malformed: {e}"),
            }),
            Ok(s) if s.reboot_needed && s.reboot_paused && !s.holds_slot() => {
                skipped.push(Skipped {
                    node: v.name.clone(),
                    reason: format!("paused ({}=true)", keys::REBOOT_PAUSED),
                })
            }
            Ok(s) if s.reboot_needed && !s.ready && !s.holds_slot() => skipped.push(Skipped {
                node: v.name.clone(),
                reason: "not Ready (the operator picks only Ready nodes)".into(),
            }),
            _ => {}
        }
    }
    // Nodes already granted or rebooting: done `estimate` after their grant (at the earliest now).
    let mut finishing: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut batch = 0;
    for v in views.iter_mut() {
        if let Ok(s) = NodeState::parse(v)
            && (s.reboot_ok || s.reboot_in_progress)
            && s.reboot_needed
        {
            v.annotations
                .insert(keys::REBOOT_IN_PROGRESS.into(), keys::TRUE.into());
            let start = s.granted_at.unwrap_or(now);
            let end = (start + estimate).max(now);
            finishing.insert(v.name.clone(), end);
            if batch == 0 {
                batch = 1;
            }
            steps.push(Step {
                order: steps.len() + 1,
                node: v.name.clone(),
                zone: v.label(&cfg.zone_label).map(str::to_string),
                batch,
                start: format_time(start),
                end: format_time(end),
                in_flight: true,
            });
        }
    }
    let mut windows = Vec::new();
    let mut t = now;
    let mut last_open = cfg.window_open(now);
    let horizon = now + TimeDelta::days(366);
    let mut end: Option<DateTime<Utc>> = finishing.values().copied().max();
    for _ in 0..100_000 {
        // Decide until the core has nothing more to do at `t`, satisfying hooks at once.
        let mut granted_now = Vec::new();
        let mut next_check = None;
        for _ in 0..10 {
            for v in views.iter_mut() {
                let hooks = if v.label(keys::BEFORE_REBOOT) == Some(keys::TRUE) {
                    &cfg.before_reboot_annotations
                } else if v.label(keys::AFTER_REBOOT) == Some(keys::TRUE) {
                    &cfg.after_reboot_annotations
                } else {
                    continue;
                };
                for h in hooks {
                    v.annotations.insert(h.clone(), keys::TRUE.into());
                }
            }
            let d = decide_with(&views, cfg, &inputs, t);
            next_check = d.next_check;
            if d.patches.is_empty() {
                break;
            }
            for p in d.patches {
                if let Some(v) = views.iter_mut().find(|v| v.name == p.node) {
                    let was_ok = v.annotation(keys::REBOOT_OK) == Some(keys::TRUE);
                    p.apply(v);
                    if !was_ok
                        && v.annotation(keys::REBOOT_OK) == Some(keys::TRUE)
                        && v.annotation(keys::REBOOT_NEEDED) == Some(keys::TRUE)
                        && !finishing.contains_key(&v.name)
                    {
                        // The simulated agent starts at once.
                        v.annotations
                            .insert(keys::REBOOT_IN_PROGRESS.into(), keys::TRUE.into());
                        granted_now.push(v.name.clone());
                    }
                }
            }
        }
        if !granted_now.is_empty() {
            batch += 1;
            // In the operator's pick order: longest waiting first, then by name.
            granted_now.sort_by_key(|name| {
                let s = views
                    .iter()
                    .find(|v| &v.name == name)
                    .and_then(|v| NodeState::parse(v).ok());
                (
                    s.as_ref().map_or(0, |s| s.reboot_failures),
                    s.and_then(|s| s.reboot_needed_since),
                    name.clone(),
                )
            });
            for name in granted_now {
                let done = t + estimate;
                finishing.insert(name.clone(), done);
                end = end.max(Some(done));
                let zone = views
                    .iter()
                    .find(|v| v.name == name)
                    .and_then(|v| cfg.zone_of(v))
                    .map(str::to_string);
                steps.push(Step {
                    order: steps.len() + 1,
                    node: name,
                    zone,
                    batch,
                    start: format_time(t),
                    end: format_time(done),
                    in_flight: false,
                });
            }
        }
        let waiting = views.iter().any(|v| {
            NodeState::parse(v).is_ok_and(|s| {
                s.rebootable() && s.ready && !finishing.contains_key(&s.name) && !s.holds_slot()
            })
        });
        let next_done = finishing
            .iter()
            .filter(|(n, at)| {
                **at > t
                    || views
                        .iter()
                        .any(|v| &v.name == *n && v.annotation(keys::REBOOT_NEEDED) == Some("true"))
            })
            .map(|(_, at)| (*at).max(t))
            .min();
        let next = match (
            next_done,
            next_check.filter(|_| waiting || next_done.is_some()),
        ) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(x) => x,
                None => break,
            },
        };
        if next > horizon {
            break;
        }
        t = next.max(t);
        // The simulated agents: nodes whose reboot is done are back with nothing needed.
        for v in views.iter_mut() {
            if finishing.get(&v.name).is_some_and(|at| *at <= t)
                && v.annotation(keys::REBOOT_NEEDED) == Some(keys::TRUE)
            {
                v.annotations
                    .insert(keys::REBOOT_NEEDED.into(), keys::FALSE.into());
                v.annotations
                    .insert(keys::REBOOT_IN_PROGRESS.into(), keys::FALSE.into());
                v.annotations.remove(keys::AGENT_MADE_UNSCHEDULABLE);
                // Back as the real agent leaves it: uncordoned, on a new boot, its evicted
                // pods back; otherwise the core waits for these forever and a node in
                // flight never frees its slot (the waiting nodes would get no turn).
                v.unschedulable = false;
                v.annotations.remove(keys::EVICTED_PODS);
                v.labels.remove(keys::REBOOT_NEEDED);
                v.boot_id = format!("{}+plan", v.boot_id);
                if let Some(nv) = v.annotation(keys::NEW_VERSION).map(str::to_string) {
                    v.labels.insert(keys::LABEL_VERSION.into(), nv);
                }
            }
        }
        let open = cfg.window_open(t);
        if open != last_open {
            windows.push(WindowEdge {
                at: format_time(t),
                open,
            });
            last_open = open;
        }
    }
    // Needing nodes that never got a turn (beyond the horizon, or blocked otherwise).
    for v in &views {
        if let Ok(s) = NodeState::parse(v)
            && s.reboot_needed
            && !finishing.contains_key(&s.name)
            && !skipped.iter().any(|k| k.node == s.name)
        {
            skipped.push(Skipped {
                node: s.name.clone(),
                reason: "no turn found within a year (window, interval or limits)".into(),
            });
        }
    }
    let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &steps {
        zones
            .entry(s.zone.clone().unwrap_or_else(|| NO_ZONE.into()))
            .or_default()
            .push(s.node.clone());
    }
    Plan {
        now: format_time(now),
        max_rebooting: max,
        reboot_estimate: format_go_duration(estimate),
        cluster_paused: false,
        duration_seconds: end.map_or(0, |e| (e - now).num_seconds().max(0)),
        end: end.map(format_time),
        steps,
        windows,
        skipped,
        zones,
        settings: None,
    }
}

fn duration_text(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// The plan for people.
pub fn render(p: &Plan) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "plan from {}: {} node(s) to reboot, at most {} at a time, {} per node (--reboot-estimate)\n",
        p.now,
        p.steps.len(),
        p.max_rebooting,
        p.reboot_estimate
    ));
    if let Some(src) = &p.settings {
        out.push_str(&format!(
            "settings: {}; at most {} at a time ({})\n",
            src.line(),
            p.max_rebooting,
            match src.max_rebooting.as_str() {
                "given" => "--max-rebooting-nodes, given".to_string(),
                "default" => "--max-rebooting-nodes, the default".to_string(),
                "lease" => "from the operator's Lease".to_string(),
                from => format!("from {from}"),
            }
        ));
    }
    if p.cluster_paused {
        out.push_str("note: the cluster is paused; the plan assumes `fluoctl resume` now\n");
    }
    out.push('\n');
    if p.steps.is_empty() {
        out.push_str("nothing to reboot\n");
    } else {
        // Steps and window edges, in time order.
        let mut rows = vec![
            ["#", "BATCH", "NODE", "ZONE", "START", "END"]
                .map(String::from)
                .to_vec(),
        ];
        let mut edges = p.windows.iter().peekable();
        for s in &p.steps {
            while let Some(e) = edges.next_if(|e| e.at <= s.start) {
                rows.push(window_row(e));
            }
            rows.push(vec![
                s.order.to_string(),
                s.batch.to_string(),
                s.node.clone(),
                s.zone.clone().unwrap_or_else(|| "-".into()),
                if s.in_flight {
                    format!("{} (in flight)", s.start)
                } else {
                    s.start.clone()
                },
                s.end.clone(),
            ]);
        }
        for e in edges {
            if p.end.as_ref().is_some_and(|end| e.at <= *end) {
                rows.push(window_row(e));
            }
        }
        out.push_str(&table(&rows));
        if p.zones.len() > 1 || p.zones.keys().any(|z| z != NO_ZONE) {
            out.push_str("\nper zone:\n");
            for (z, nodes) in &p.zones {
                out.push_str(&format!("  {z}: {}\n", nodes.join(", ")));
            }
        }
    }
    if !p.skipped.is_empty() {
        out.push_str("\nnot planned:\n");
        for s in &p.skipped {
            out.push_str(&format!("  {}: {}\n", s.node, s.reason));
        }
    }
    if let Some(end) = &p.end {
        out.push_str(&format!(
            "\nestimated duration: {} (done at {end})\n",
            duration_text(p.duration_seconds)
        ));
    }
    out
}

fn window_row(e: &WindowEdge) -> Vec<String> {
    vec![
        "--".into(),
        String::new(),
        if e.open {
            "reboot window opens".into()
        } else {
            "reboot window closes".into()
        },
        String::new(),
        e.at.clone(),
        String::new(),
    ]
}

/// `fluoctl plan`.
pub async fn run(args: PlanArgs, m: &ArgMatches, bin: &str) -> ExitCode {
    match plan(args, m).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{bin} plan: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn plan(args: PlanArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let mut s = settings(args.operator, m)?;
    let (client, url) = client(&args.connect, s.kubeconfig.as_deref()).await?;
    let (cluster, source) = read_all(&client, &url, &mut s.config, m).await?;
    let views: Vec<NodeView> = cluster.nodes.into_iter().map(|(v, _)| v).collect();
    let mut p = simulate(&views, &s.config.operator, args.reboot_estimate, Utc::now());
    p.cluster_paused = lease_paused(cluster.lease.as_ref()).0;
    p.settings = Some(source);
    if let Some(path) = &args.timeline {
        std::fs::write(path, crate::svg::render(&report(&p)))
            .with_context(|| format!("--timeline: cannot write {}", path.display()))?;
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&p)?),
        Output::Table => print!("{}", render(&p)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use protocol::window::RebootWindow;

    fn node(name: &str, anns: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: name.into(),
            annotations: anns
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready: true,
            boot_id: "b".into(),
            ..Default::default()
        }
    }

    #[test]
    fn in_flight_first_then_the_rest_one_at_a_time() {
        let now = Utc.with_ymd_and_hms(2025, 1, 6, 12, 0, 0).unwrap();
        let nodes = [
            node("a", &[(keys::REBOOT_NEEDED, "true")]),
            node(
                "b",
                &[
                    (keys::REBOOT_NEEDED, "true"),
                    (keys::REBOOT_OK, "true"),
                    (keys::REBOOT_IN_PROGRESS, "true"),
                    (keys::GRANTED_AT, "2025-01-06T11:58:00Z"),
                ],
            ),
            node("c", &[(keys::REBOOT_NEEDED, "true")]),
            node("d", &[]),
        ];
        let p = simulate(
            &nodes,
            &OperatorConfig::default(),
            TimeDelta::minutes(5),
            now,
        );
        let order: Vec<(&str, bool)> = p
            .steps
            .iter()
            .map(|s| (s.node.as_str(), s.in_flight))
            .collect();
        assert_eq!(order, [("b", true), ("a", false), ("c", false)]);
        // b ends at 12:03, a 12:03-12:08, c 12:08-12:13.
        assert_eq!(p.steps[1].start, "2025-01-06T12:03:00Z");
        assert_eq!(p.duration_seconds, 13 * 60);
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn a_rollout_in_progress_gives_every_waiting_node_a_turn() {
        // As `fluoctl sandbox --nodes 6 --max-rebooting-nodes 2` looks mid-batch: two nodes
        // draining (cordoned, pods evicted, boot ID recorded), four waiting.
        let now = Utc.with_ymd_and_hms(2025, 1, 6, 12, 0, 0).unwrap();
        let mut nodes = Vec::new();
        for name in ["n1", "n2", "n3", "n4", "n5", "n6"] {
            let mut v = node(
                name,
                &[
                    (keys::REBOOT_NEEDED, "true"),
                    (keys::REBOOT_NEEDED_SINCE, "2025-01-06T11:59:00Z"),
                ],
            );
            v.labels.insert(keys::REBOOT_NEEDED.into(), "true".into());
            if name == "n1" || name == "n6" {
                for (k, val) in [
                    (keys::REBOOT_OK, "true"),
                    (keys::REBOOT_IN_PROGRESS, "true"),
                    (keys::GRANTED_AT, "2025-01-06T11:59:30Z"),
                    (keys::PICKED_AT, "2025-01-06T11:59:30Z"),
                    (keys::AGENT_MADE_UNSCHEDULABLE, "true"),
                    (keys::REBOOT_BOOT_ID, "b"),
                    (
                        keys::EVICTED_PODS,
                        r#"{"workloads":[{"namespace":"demo","kind":"ReplicaSet","name":"web","uid":"u","count":1}]}"#,
                    ),
                ] {
                    v.annotations.insert(k.into(), val.into());
                }
                v.unschedulable = true;
            }
            nodes.push(v);
        }
        let cfg = OperatorConfig {
            max_rebooting: protocol::operator::MaxRebooting::Count(2),
            ..Default::default()
        };
        let p = simulate(&nodes, &cfg, TimeDelta::minutes(5), now);
        assert!(p.skipped.is_empty(), "{}", render(&p));
        let batches: Vec<(&str, usize, bool)> = p
            .steps
            .iter()
            .map(|s| (s.node.as_str(), s.batch, s.in_flight))
            .collect();
        assert_eq!(
            batches,
            [
                ("n1", 1, true),
                ("n6", 1, true),
                ("n2", 2, false),
                ("n3", 2, false),
                ("n4", 3, false),
                ("n5", 3, false)
            ]
        );
        // In flight until 12:04:30, then two batches of 5 minutes.
        assert_eq!(p.steps[2].start, "2025-01-06T12:04:30Z");
        assert_eq!(p.end.as_deref(), Some("2025-01-06T12:14:30Z"));
    }

    #[test]
    fn waits_for_the_window_and_shows_its_edges() {
        // Monday 12:00; FLUO's window: daily 14:00 for 7 minutes.
        let now = Utc.with_ymd_and_hms(2025, 1, 6, 12, 0, 0).unwrap();
        let cfg = OperatorConfig {
            window: Some(
                RebootWindow::from_flags(Some("14:00"), Some("7m"))
                    .unwrap()
                    .unwrap(),
            ),
            ..Default::default()
        };
        let nodes = [
            node("a", &[(keys::REBOOT_NEEDED, "true")]),
            node("b", &[(keys::REBOOT_NEEDED, "true")]),
            node("c", &[(keys::REBOOT_NEEDED, "true")]),
        ];
        let p = simulate(&nodes, &cfg, TimeDelta::minutes(5), now);
        let starts: Vec<&str> = p.steps.iter().map(|s| s.start.as_str()).collect();
        // a at 14:00, b at 14:05 (a released, still open), c the next day.
        assert_eq!(
            starts,
            [
                "2025-01-06T14:00:00Z",
                "2025-01-06T14:05:00Z",
                "2025-01-07T14:00:00Z"
            ]
        );
        assert!(
            p.windows
                .iter()
                .any(|w| w.open && w.at == "2025-01-06T14:00:00Z")
        );
        assert!(
            p.windows
                .iter()
                .any(|w| !w.open && w.at == "2025-01-06T14:07:00Z")
        );
        let text = render(&p);
        assert!(text.contains("reboot window opens"), "{text}");
    }
}
