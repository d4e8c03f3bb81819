//! `bench`: the project's benchmarks, written to bench/RESULTS.md and bench/results.json.
//! See docs/bench.md.

mod child;
mod growth;
mod probe;
mod report;
mod scenarios;
mod simagent;
mod slots;
mod soak;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use report::{Machine, Metric, Results};
use scenarios::Env;

/// Runs the benchmarks (grant latency, a rollout against its physical limit, the operator's
/// memory and CPU at scale, API requests, the agent's memory) and writes RESULTS.md and
/// results.json. Build in release mode first: cargo build --release -p operator -p agent -p bench.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Small sizes (seconds, not minutes), for a smoke test; figures are not meaningful.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated (default: all but `soak`, which runs only when
    /// named and writes bench/SOAK.md).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Where RESULTS.md and results.json go.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench"))]
    out: PathBuf,
    /// The folder with the update-operator and update-agent binaries (default: this binary's).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Grant latency: nodes [100; quick 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    latency_nodes: Option<u32>,
    /// Grant latency: samples (one node at a time) [200; quick 20].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    latency_samples: Option<u32>,
    /// Rollout ratio (simulated agents): nodes [1000; quick 20].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    ratio_nodes: Option<u32>,
    /// Rollout ratio (simulated agents): --max-rebooting-nodes [25; quick 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    ratio_max_rebooting: Option<u32>,
    /// Rollout ratio, second run: seconds a simulated reboot takes [10; quick 2]. The first
    /// run's reboots take 1 s, which makes a fixed cost per reboot cycle look large.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=600))]
    ratio_reboot_seconds: Option<u32>,
    /// Rollout ratio, second run: --max-rebooting-nodes [100; quick 10] (fewer rounds of
    /// the longer reboots keep the bench's time down).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    ratio_long_max_rebooting: Option<u32>,
    /// Rollout with real agents: nodes [100; quick 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    rollout_nodes: Option<u32>,
    /// Rollout with real agents: --max-rebooting-nodes [10; quick 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    rollout_max_rebooting: Option<u32>,
    /// Rollout: workload pods per node [2].
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=100))]
    rollout_pods_per_node: u32,
    /// Rollout: seconds an evicted pod takes to go [1].
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=600))]
    rollout_drain_seconds: u32,
    /// Rollout: seconds a reboot keeps a node down [2; quick 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=600))]
    rollout_reboot_seconds: Option<u32>,
    /// Operator at scale: nodes [5000; quick 50].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    scale_nodes: Option<u32>,
    /// Operator at scale: pods [100000; quick 500].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    scale_pods: Option<u32>,
    /// Operator at scale: --max-rebooting-nodes [250; quick 20].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    scale_max_rebooting: Option<u32>,
    /// Soak: minutes [60; quick 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    soak_minutes: Option<u64>,
    /// Soak: nodes [300; quick 20].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    soak_nodes: Option<u32>,
    /// Soak: --max-rebooting-nodes [30; quick 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    soak_max_rebooting: Option<u32>,
    /// Soak: the leading update-operator is killed this often, seconds [900; quick 20].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    soak_failover_seconds: Option<u64>,
    /// Soak: nodes running the real update-agent binary (on a private dbus-daemon) [2].
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=20))]
    soak_real_agents: u32,
    /// Growth: the operator scenario at these node counts [1000,5000,15000; quick 20,50].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=20_000))]
    growth_nodes: Vec<u32>,
    /// Growth: pods per node [20; quick 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=110))]
    growth_pods_per_node: Option<u32>,
    /// Growth: --max-rebooting-nodes [250; quick 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    growth_max_rebooting: Option<u32>,
    /// Idle windows (API requests while nothing happens; the agent's memory) [60; quick 2].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    idle_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Latency,
    Ratio,
    Rollout,
    Operator,
    Agent,
    Soak,
    Growth,
}

fn pick<T>(given: Option<T>, quick: bool, small: T, full: T) -> T {
    given.unwrap_or(if quick { small } else { full })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let q = args.quick;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let work = tempfile::tempdir()?;
    let env = Env {
        operator: child::binary(&bin_dir, "update-operator")?,
        agent: child::binary(&bin_dir, "update-agent")?,
        logs: work.path().to_path_buf(),
    };
    // The soak and the growth curve run only when named (each writes its own report).
    let runs = |s: Scenario| {
        args.only.contains(&s)
            || (args.only.is_empty() && s != Scenario::Soak && s != Scenario::Growth)
    };
    let idle = Duration::from_secs(pick(args.idle_seconds, q, 2, 60));
    let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut scenarios = BTreeMap::new();
    let mut notes = Vec::new();
    let started = Instant::now();
    let load_at_start = report::load_average();
    let step = |what: &str| {
        eprintln!(
            "bench: {what} ({:.0} s in)",
            started.elapsed().as_secs_f64()
        )
    };

    if runs(Scenario::Soak) {
        let cfg = soak::SoakConfig {
            nodes: pick(args.soak_nodes, q, 20, 300),
            max: pick(args.soak_max_rebooting, q, 5, 30),
            duration: Duration::from_secs(60 * pick(args.soak_minutes, q, 1, 60)),
            round_every: Duration::from_secs(if q { 15 } else { 120 }),
            // Long enough between kills for each replica's own slope.
            failover_every: Duration::from_secs(pick(args.soak_failover_seconds, q, 20, 900)),
            restart_every: Duration::from_secs(if q { 10 } else { 60 }),
            real_agents: args.soak_real_agents,
            sample_every: Duration::from_secs(if q { 2 } else { 15 }),
        };
        step(&format!(
            "soak: {} nodes, {} at a time, {:.0} min",
            cfg.nodes,
            cfg.max,
            cfg.duration.as_secs_f64() / 60.0
        ));
        let r = soak::soak(&env, &cfg, 1).await?;
        let machine = machine_line(&repo, &load_at_start);
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(args.out.join("SOAK.md"), soak::markdown(&r, &machine, &cfg))?;
        std::fs::write(
            args.out.join("soak.json"),
            serde_json::to_string_pretty(&r)?,
        )?;
        eprintln!("bench: wrote {}", args.out.join("SOAK.md").display());
        anyhow::ensure!(
            r.lost.is_empty(),
            "the soak lost or doubled updates: {}",
            r.lost.join("; ")
        );
        if args.only.iter().all(|s| *s == Scenario::Soak) {
            return Ok(());
        }
    }

    if runs(Scenario::Growth) {
        let cfg = growth::GrowthConfig {
            nodes: if !args.growth_nodes.is_empty() {
                args.growth_nodes.clone()
            } else if q {
                vec![20, 50]
            } else {
                vec![1000, 5000, 15000]
            },
            pods_per_node: pick(args.growth_pods_per_node, q, 5, 20),
            max_rebooting: pick(args.growth_max_rebooting, q, 10, 250),
        };
        let points = growth::growth(&env, &cfg, step).await?;
        let machine = machine_line(&repo, &load_at_start);
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(
            args.out.join("GROWTH.md"),
            growth::markdown(&points, &machine, &cfg),
        )?;
        std::fs::write(args.out.join("growth.svg"), growth::svg(&points))?;
        std::fs::write(
            args.out.join("growth.json"),
            serde_json::to_string_pretty(&points)?,
        )?;
        eprintln!("bench: wrote {}", args.out.join("GROWTH.md").display());
        if args
            .only
            .iter()
            .all(|s| *s == Scenario::Growth || *s == Scenario::Soak)
        {
            return Ok(());
        }
    }

    let latency = if runs(Scenario::Latency) {
        let (n, s) = (
            pick(args.latency_nodes, q, 10, 100),
            pick(args.latency_samples, q, 20, 200),
        );
        step(&format!("grant latency: {n} nodes, {s} samples"));
        let l = scenarios::grant_latency(&env, n, s).await?;
        notes.push((
            "Grant latency".to_string(),
            vec![
                format!(
                    "{} samples on {} simulated nodes; the `update-operator` binary with \
                     `--max-rebooting-nodes {n}` (a slot is always free); one node at a time \
                     asks (its simulated agent writes `reboot-needed=true`); the figure is the \
                     time between the watch events `reboot-needed=true` and `reboot-ok=true` \
                     of one watch of all Nodes.",
                    l.samples, l.nodes
                ),
                format!(
                    "p50 {} ms, p99 {} ms, max {} ms, mean {} ms.",
                    l.p50_ms, l.p99_ms, l.max_ms, l.mean_ms
                ),
            ],
        ));
        scenarios.insert("grant_latency", serde_json::to_value(&l)?);
        Some(l)
    } else {
        None
    };

    let (ratio, ratio_long) = if runs(Scenario::Ratio) {
        let nodes = pick(args.ratio_nodes, q, 20, 1000);
        let k = pick(args.ratio_max_rebooting, q, 10, 25);
        let long_k = pick(args.ratio_long_max_rebooting, q, 10, 100);
        let long_reboot = pick(args.ratio_reboot_seconds, q, 2, 10);
        let mut lines = vec![format!(
            "The `update-operator` binary on {nodes} nodes (with {} pods) and simulated agents \
             (as in the operator scenario below: the real agent's decisions, no drain). Two \
             runs: reboots of 1 s with `--max-rebooting-nodes {k}`, where a fixed cost per \
             reboot cycle weighs most, and reboots of {long_reboot} s with \
             `--max-rebooting-nodes {long_k}`.",
            2 * nodes
        )];
        let mut runs = Vec::new();
        for (k, reboot) in [(k, 1), (long_k, long_reboot)] {
            step(&format!(
                "rollout ratio: {nodes} nodes, {k} at a time, reboots of {reboot} s"
            ));
            let o = scenarios::operator_scale(
                &env,
                nodes,
                2 * nodes,
                k,
                Duration::from_secs(reboot.into()),
                Duration::from_secs(1),
                true,
            )
            .await?;
            lines.extend(ratio_notes(&o, &report::load_average())?);
            runs.push(o);
        }
        notes.push(("Rollout ratio".to_string(), lines));
        scenarios.insert("ratio", serde_json::to_value(&runs[0])?);
        scenarios.insert("ratio_long_reboots", serde_json::to_value(&runs[1])?);
        let long = runs.pop();
        (runs.pop(), long)
    } else {
        (None, None)
    };

    let rollout = if runs(Scenario::Rollout) {
        let nodes = pick(args.rollout_nodes, q, 10, 100);
        let k = pick(args.rollout_max_rebooting, q, 5, 10);
        let reboot = pick(args.rollout_reboot_seconds, q, 1, 2);
        step(&format!("rollout: {nodes} nodes, {k} at a time"));
        let r = scenarios::rollout(
            nodes,
            k,
            args.rollout_pods_per_node,
            args.rollout_drain_seconds,
            reboot,
            idle,
            // --quick: seconds, not the production 30 s.
            if q {
                Duration::from_secs(2)
            } else {
                operator::DEFAULT_RELEASE_LEASE_AFTER_IDLE
            },
        )
        .await?;
        let s = &r.summary;
        let per = s.rebooted.max(1) as f64;
        let mins = r.idle_seconds as f64 / 60.0;
        notes.push((
            "Rollout and API requests".to_string(),
            vec![
                format!(
                    "A fleet cluster in one process: the sandbox, {nodes} nodes with {} pods \
                     each (Deployments of 5 with a PodDisruptionBudget of maxUnavailable 1, \
                     terminationGracePeriodSeconds {}), reboots of {reboot} s, one real agent \
                     (`agent::run`) per node restarted across its reboot, the real operator \
                     (`operator::run`) with `--max-rebooting-nodes {k}`; started in {:.0} s.",
                    r.pods_per_node, r.drain_seconds, r.start_seconds
                ),
                format!(
                    "{} of {} nodes rebooted in {:.1} s; T (mean drain start -> Ready with a \
                     new boot ID) {:.2} s; physical limit ceil({}/{k}) x T = {:.1} s; most nodes \
                     unavailable at once {}; violations: {}.",
                    s.rebooted,
                    s.nodes,
                    s.wall_seconds,
                    s.node_seconds,
                    s.rebooted,
                    s.physical_limit_seconds,
                    s.max_unavailable,
                    if s.violations.is_empty() {
                        "none".to_string()
                    } else {
                        s.violations.join("; ")
                    }
                ),
                format!(
                    "Requests per node reboot, operator: {}.",
                    r.operator_requests.describe(per)
                ),
                format!(
                    "Requests per node reboot, agents: {}.",
                    r.agent_requests.describe(per)
                ),
                format!(
                    "After the rollout the operator gave its Lease up {:.1} s after the last \
                     node was done (`--release-lease-after-idle` {} s), with these requests \
                     in between: {}.",
                    r.lease_released_seconds,
                    r.release_lease_after_idle_seconds,
                    r.operator_winding_down.describe(1.0)
                ),
                format!(
                    "Idle: the same cluster for {} s from then (nothing to do, no leader); \
                     per minute, operator: {}; all {nodes} agents: {}. A watch counts once, \
                     when opened.",
                    r.idle_seconds,
                    r.operator_idle.describe(mins),
                    r.agent_idle.describe(mins)
                ),
            ],
        ));
        scenarios.insert("rollout", serde_json::to_value(&r)?);
        Some(r)
    } else {
        None
    };

    let scale = if runs(Scenario::Operator) {
        let nodes = pick(args.scale_nodes, q, 50, 5000);
        let pods = pick(args.scale_pods, q, 500, 100_000);
        let k = pick(args.scale_max_rebooting, q, 20, 250);
        step(&format!(
            "operator at scale: {nodes} nodes, {pods} pods, {k} at a time"
        ));
        let settle = Duration::from_secs(if q { 1 } else { 5 });
        let o =
            scenarios::operator_scale(&env, nodes, pods, k, Duration::from_secs(1), settle, false)
                .await?;
        notes.push((
            "Operator memory and CPU at scale".to_string(),
            vec![
                format!(
                    "The `update-operator` binary as a child process (`--max-rebooting-nodes \
                     {k}`), against a sandbox on loopback in the bench process with {nodes} \
                     nodes and {pods} Running pods ({} at the end: a rebooted machine's pods are \
                     put back as their controllers would). Memory (VmRSS, VmHWM) and CPU \
                     (utime + stime) from /proc/PID of the operator alone.",
                    o.pods_at_end
                ),
                format!(
                    "The node side is simulated agents in the bench process: the real agent's \
                     decisions (`protocol::agent::next_step`) per node on one watch of all \
                     Nodes, its patches written as the agent writes them, reboots through the \
                     sandbox's simulated hosts ({} s); drains evict nothing (the operator does \
                     not see pods; by default it does not watch them).",
                    o.reboot_seconds
                ),
                format!(
                    "Before the rollout (leading, all nodes listed): RSS {:.1} MiB ({:.1} \
                     anonymous, {:.1} file-backed), {:.2} CPU s since start. After: RSS {:.1} \
                     MiB ({:.1} anonymous), peak {:.1} MiB; the rollout took {:.2} CPU s \
                     ({:.2} ms per node reboot).",
                    o.idle.rss_mib,
                    o.idle.anon_rss_mib,
                    o.idle.file_rss_mib,
                    o.idle.cpu_seconds,
                    o.end.rss_mib,
                    o.end.anon_rss_mib,
                    o.end.peak_rss_mib,
                    o.rollout_cpu_seconds,
                    o.cpu_seconds_per_node_reboot * 1000.0
                ),
                format!(
                    "All {nodes} nodes rebooted and released {:.1} s after the update was \
                     offered (polled once a second; at this size the bench does not run the \
                     watch-based monitor, whose work per event grows with the node count).",
                    o.wall_seconds
                ),
                format!(
                    "Grant latency under load, through this rollout (a slot holder's agent \
                     says it is back -> the grant that fills its slot, from the store's change \
                     feed in the bench process): {}.",
                    o.slot_latency.describe()
                ),
                format!(
                    "The API's own write round trip through the same rollout (a client of its \
                     own patches a ConfigMap, one request every 20 ms; a freed slot costs at \
                     least two in a row, the release and the grant): {}.",
                    o.api_round_trip
                        .as_ref()
                        .map_or("not measured".to_string(), |l| l.summary("patches"))
                ),
                format!(
                    "Operator requests per node reboot: {}.",
                    o.requests.describe(f64::from(nodes))
                ),
            ],
        ));
        scenarios.insert("operator_scale", serde_json::to_value(&o)?);
        Some(o)
    } else {
        None
    };

    let agent = if runs(Scenario::Agent) {
        step("agent idle");
        let a = scenarios::agent_idle(&env, idle, work.path()).await?;
        notes.push((
            "Agent idle".to_string(),
            vec![
                format!(
                    "The `update-agent` binary as a child process against a one-node sandbox and \
                     a private dbus-daemon with fake update_engine (idle) and logind; measured \
                     after it annotated its node and then {} s with nothing to do: RSS {:.1} \
                     MiB ({:.1} anonymous, {:.1} file-backed: the executable's and libraries' \
                     pages), peak {:.1} MiB, {:.2} CPU s in all.",
                    a.idle_seconds,
                    a.usage.rss_mib,
                    a.usage.anon_rss_mib,
                    a.usage.file_rss_mib,
                    a.usage.peak_rss_mib,
                    a.usage.cpu_seconds
                ),
                format!(
                    "Requests per minute while idle: {}.",
                    a.requests.describe(a.idle_seconds as f64 / 60.0)
                ),
            ],
        ));
        scenarios.insert("agent_idle", serde_json::to_value(&a)?);
        Some(a)
    } else {
        None
    };

    let per_reboot = |r: &scenarios::Requests, n: usize| r.total as f64 / n.max(1) as f64;
    let per_minute = |r: &scenarios::Requests, secs: u64| r.total as f64 * 60.0 / secs as f64;
    let rn = rollout.as_ref().map_or(0, |r| r.nodes);
    let an = ratio.as_ref().map_or(0, |o| o.nodes);
    let sn = scale.as_ref().map_or(0, |o| o.nodes);
    let metrics = vec![
        Metric::new(
            "grant latency p50 (reboot-needed -> reboot-ok)",
            latency.as_ref().map(|l| l.p50_ms / 1000.0),
            "s",
        ),
        Metric::new(
            "grant latency p99 (reboot-needed -> reboot-ok)",
            latency.as_ref().map(|l| l.p99_ms / 1000.0),
            "s",
        )
        .target(1.0),
        Metric::new(
            format!("rollout wall time, {an} nodes"),
            ratio
                .as_ref()
                .and_then(|o| o.summary.as_ref().map(|s| s.wall_seconds)),
            "s",
        ),
        Metric::new(
            format!("rollout physical limit ceil(N/k)·T, {an} nodes"),
            ratio
                .as_ref()
                .and_then(|o| o.summary.as_ref().map(|s| s.physical_limit_seconds)),
            "s",
        ),
        Metric::new(
            format!(
                "rollout ratio wall / physical limit, {an} nodes, reboots of {} s",
                ratio.as_ref().map_or(0.0, |o| o.reboot_seconds)
            ),
            ratio.as_ref().and_then(|o| o.summary.as_ref()?.ratio),
            "",
        )
        .target(1.02),
        Metric::new(
            format!(
                "rollout ratio, {an} nodes, reboots of {} s (k = {})",
                ratio_long.as_ref().map_or(0.0, |o| o.reboot_seconds),
                ratio_long.as_ref().map_or(0, |o| o.max_rebooting)
            ),
            ratio_long.as_ref().and_then(|o| o.summary.as_ref()?.ratio),
            "",
        )
        .target(1.05),
        Metric::new(
            format!("rollout ratio, {rn} nodes, real agents draining pods under PDBs"),
            rollout.as_ref().and_then(|r| r.summary.ratio),
            "",
        ),
        Metric::new(
            format!("operator peak RSS (VmHWM), {sn} nodes, whole rollout"),
            scale.as_ref().map(|o| o.end.peak_rss_mib),
            "MiB",
        )
        .target(64.0),
        Metric::new(
            format!("operator anonymous memory before the rollout, {an} nodes"),
            ratio.as_ref().map(|o| o.idle.anon_rss_mib),
            "MiB",
        )
        .target(17.0),
        Metric::new(
            format!("grant latency under load p99 (freed slot -> next grant), {sn}-node rollout"),
            scale.as_ref().map(|o| o.slot_latency.p99_ms / 1000.0),
            "s",
        )
        .target(0.05),
        Metric::new(
            format!("API write round trip p99 under load (ConfigMap patch), {sn}-node rollout"),
            scale
                .as_ref()
                .and_then(|o| o.api_round_trip.as_ref())
                .map(|l| l.p99_ms / 1000.0),
            "s",
        ),
        Metric::new(
            format!("operator RSS idle, {sn} nodes"),
            scale.as_ref().map(|o| o.idle.rss_mib),
            "MiB",
        ),
        Metric::new(
            format!("operator CPU, whole rollout of {sn} nodes"),
            scale.as_ref().map(|o| o.rollout_cpu_seconds),
            "s",
        ),
        Metric::new(
            "operator CPU per node reboot",
            scale
                .as_ref()
                .map(|o| o.cpu_seconds_per_node_reboot * 1000.0),
            "ms",
        ),
        Metric::new(
            "API requests per node reboot, operator",
            rollout
                .as_ref()
                .map(|r| per_reboot(&r.operator_requests, r.summary.rebooted)),
            "",
        ),
        Metric::new(
            "API requests per node reboot, agent",
            rollout
                .as_ref()
                .map(|r| per_reboot(&r.agent_requests, r.summary.rebooted)),
            "",
        ),
        Metric::new(
            "API requests per minute idle, operator",
            rollout
                .as_ref()
                .map(|r| per_minute(&r.operator_idle, r.idle_seconds)),
            "",
        )
        .target(0.0),
        Metric::new(
            format!("API requests per minute idle, all {rn} agents"),
            rollout
                .as_ref()
                .map(|r| per_minute(&r.agent_idle, r.idle_seconds)),
            "",
        )
        .target(0.0),
        Metric::new(
            "API requests per minute idle, update-agent binary",
            agent
                .as_ref()
                .map(|a| per_minute(&a.requests, a.idle_seconds)),
            "",
        )
        .target(0.0),
        Metric::new(
            "agent RSS idle (update-agent binary)",
            agent.as_ref().map(|a| a.usage.rss_mib),
            "MiB",
        )
        .target(10.0),
    ];
    let results = Results {
        machine: Machine::detect(&repo, load_at_start),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        metrics,
        scenarios,
        notes,
    };
    results.write(&args.out)?;
    print!("{}", results.markdown());
    eprintln!(
        "bench: wrote {} and results.json in {:.0} s",
        args.out.join("RESULTS.md").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The machine, the commit and the load, for a report's first line.
fn machine_line(repo: &std::path::Path, load_at_start: &str) -> String {
    let m = Machine::detect(repo, load_at_start.to_string());
    format!(
        "{}, git {}, {} build; {} cores ({}), {:.1} GiB; load average {} at the start, {} at the end.",
        m.date,
        m.git_commit,
        m.build,
        m.cores,
        m.cpu_model,
        m.memory_gib,
        m.load_average[0].trim(),
        report::load_average().trim()
    )
}

/// The ratio scenario's notes for one run: the result, then where the wall time and a slot's
/// time go.
fn ratio_notes(o: &scenarios::OperatorScale, load: &str) -> anyhow::Result<Vec<String>> {
    let s = o
        .summary
        .as_ref()
        .context("the ratio needs the monitor's summary")?;
    let k = o.max_rebooting;
    let mut lines = vec![format!(
        "**Reboots of {} s, `--max-rebooting-nodes {k}`** (load average {load} at the end): \
         {} of {} nodes rebooted in {:.1} s; T (mean of drain start -> Ready with a new boot \
         ID) {:.2} s; physical limit ceil({}/{k}) x T = {:.1} s; **ratio {}**; most nodes \
         unavailable at once {}; violations: {}.",
        o.reboot_seconds,
        s.rebooted,
        s.nodes,
        s.wall_seconds,
        s.node_seconds,
        s.rebooted,
        s.physical_limit_seconds,
        s.ratio.map_or("-".to_string(), |r| format!("{r:.3}")),
        s.max_unavailable,
        if s.violations.is_empty() {
            "none".to_string()
        } else {
            s.violations.join("; ")
        }
    )];
    lines.push(format!(
        "Grant latency under load (a slot holder's agent says it is back -> the grant that \
         fills its slot, from the store's change feed): {}.",
        o.slot_latency.describe()
    ));
    if let Some(t) = &o.timeline {
        let rounds = f64::from(o.nodes.div_ceil(k.max(1)));
        lines.push(format!(
            "Where the wall time goes (from the monitor's watch). The clock starts at the first \
             `reboot-needed=true`, {:.3} s after the update was offered to every node at once \
             (the simulated agents' reaction to it, about 2,000 patches at once, is not \
             counted). Then: the last `reboot-needed=true` {:.3} s; first grant {:.3}; all {k} \
             slots taken {:.3}; last grant {:.3}; last node back {:.3}; last release {:.3} (the \
             end). So: until the slots are full {:.2} s; the {} rounds after it {:.2} s ({:.3} s \
             per round); the last round from its grant {:.2} s.",
            t.offer_to_first_needed,
            t.all_needed,
            t.first_grant,
            t.slots_full,
            t.last_grant,
            t.last_back,
            t.last_release,
            t.slots_full,
            rounds - 1.0,
            t.last_grant - t.slots_full,
            (t.last_grant - t.slots_full) / (rounds - 1.0).max(1.0),
            t.last_release - t.last_grant,
        ));
    }
    if let Some(p) = &o.phases {
        let slot = p.grant_to_drain
            + p.drain_to_reboot
            + p.reboot_to_back
            + p.back_to_release
            + p.release_to_next_grant;
        lines.push(format!(
            "Where a slot's time goes (means over the reboot cycles, from the monitor's watch): \
             grant -> reboot-in-progress {:.3} s, -> NotReady {:.3} s, -> Ready with a new boot \
             ID {:.3} s, -> released {:.3} s, release -> the next grant of the freed slot {:.3} \
             s; {:.3} s per slot and cycle against T = {:.3} s.",
            p.grant_to_drain,
            p.drain_to_reboot,
            p.reboot_to_back,
            p.back_to_release,
            p.release_to_next_grant,
            slot,
            s.node_seconds
        ));
    }
    if let Some(a) = &o.agent_side {
        lines.push(format!(
            "The same steps split at the simulated agents' own moments (means): the grant \
             reaches the agent {:.3} s after the monitor, its `reboot-in-progress=true` patch \
             returns {:.3} s later and reaches the monitor {:.3} s after that; the node's return \
             reaches the agent {:.3} s after the monitor, its `reboot-in-progress=false` patch \
             returns {:.3} s later, and the operator's release reaches the monitor {:.3} s after \
             that (the operator's watch, its decision and patch, the monitor's watch).",
            a.grant_seen,
            a.mark_in_progress,
            a.in_progress_seen,
            a.back_seen,
            a.mark_done,
            a.operator_release
        ));
    }
    Ok(lines)
}
