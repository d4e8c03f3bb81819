//! `fluoctl sandbox`: the rollout demo. A simulated cluster ([`fleet::Cluster`]:
//! the sandbox, the real operator, one real agent per node), an update offered
//! to every node, live progress, and a summary against the physical limit.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use fleet::cluster::{NAMESPACE, NEW_VERSION, REPLICAS_PER_WORKLOAD, WORKLOAD_NAMESPACE};
use fleet::{Cluster, ClusterSpec, Phase, Report, Snapshot, Summary};
use indicatif::{ProgressBar, ProgressStyle};
use protocol::keys;
use serde_json::json;

/// `fluoctl sandbox`'s flags: the demo's own, then the operator's.
#[derive(clap::Args)]
pub struct SandboxArgs {
    #[command(flatten)]
    pub demo: DemoArgs,
    #[command(
        flatten,
        next_help_heading = "update-operator's flags (passed through unchanged)"
    )]
    pub operator: operator::cli::Args,
}

/// The demo's own flags.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Number of simulated nodes.
    #[arg(long, allow_negative_numbers = true, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub nodes: u32,
    /// Spread the nodes round-robin over N zones (label topology.kubernetes.io/zone=zone-1..zone-N).
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub zones: Option<u32>,
    /// Workload pods per node, in Deployments of 5 replicas, each with a PodDisruptionBudget of maxUnavailable 1.
    #[arg(long, allow_negative_numbers = true, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub pods_per_node: u32,
    /// How long a reboot keeps a node down (NotReady), in seconds.
    #[arg(long, allow_negative_numbers = true, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub reboot_seconds: u32,
    /// How long an evicted pod takes to go (the pods' terminationGracePeriodSeconds), in seconds.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub drain_seconds: u32,
    /// Simulated hooks set the --before/after-reboot-annotations to "true" this long after the
    /// operator labels a node before-reboot/after-reboot, in seconds.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub hook_seconds: u32,
    /// Do not simulate hooks: set the hook annotations yourself (e.g. with kubectl annotate).
    #[arg(long)]
    pub manual_hooks: bool,
    /// Serve the Kubernetes API here (plain HTTP), e.g. 127.0.0.1:8080; port 0 picks a free one.
    /// HTTPS, with the sandbox's own CA, is served on a free port of the same address; kubectl
    /// sends credentials only over HTTPS, so use the printed kubeconfig. The exact kubectl
    /// command to watch is printed.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Write one kubeconfig per identity into DIR (created if missing): `admin`
    /// (system:masters), `update-operator` and `update-agent-<node>` (the service accounts
    /// deploy/'s RBAC grants, which the sandbox enforces). Each has the HTTPS endpoint, its CA
    /// and the identity's bearer token.
    #[arg(long, value_name = "DIR")]
    pub kubeconfig_dir: Option<PathBuf>,
    /// Offer no update: serve and wait; reboots are asked for from outside, e.g.
    /// `kubectl annotate node NODE --overwrite flatcar-linux-update.v1.flatcar-linux.net/reboot-needed=true`.
    #[arg(long)]
    pub no_updates: bool,
    /// Exit after the summary (status 1 if there were violations) instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Write the summary and every node's timeline (grant, drain, reboot, back, released) as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Write an SVG chart: one row per node with its drain and reboot bars, and the number of
    /// nodes unavailable over time.
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<PathBuf>,
}

/// The operator's flags that do not apply here (the sandbox is the cluster, the Lease lives
/// in `reboot-coordinator`, logs are off unless RUST_LOG says otherwise) are hidden.
pub fn adjust_command(c: clap::Command) -> clap::Command {
    c.mut_arg("kubeconfig", |a| a.hide(true))
        .mut_arg("namespace", |a| a.hide(true))
        .mut_arg("log_format", |a| a.hide(true))
}

const NOT_HERE: [(&str, &str, &str); 3] = [
    ("kubeconfig", "--kubeconfig", "the sandbox is the cluster"),
    (
        "namespace",
        "--namespace",
        "the operator's Lease lives in namespace reboot-coordinator",
    ),
    (
        "log_format",
        "--log-format",
        "logs are off; set RUST_LOG=info to see them",
    ),
];

/// A usage error (exit status 2) or a failure (exit status 1).
enum Failure {
    Usage(String),
    Run(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Run(e)
    }
}

pub async fn run(args: SandboxArgs, m: &ArgMatches) -> ExitCode {
    match run_demo(args, m).await {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("fluoctl sandbox: error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("fluoctl sandbox: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An output file's folder must exist.
fn check_output(path: &Option<PathBuf>, flag: &str) -> Result<(), Failure> {
    if let Some(p) = path {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        if p.as_os_str().is_empty() || p.is_dir() || dir.is_some_and(|d| !d.is_dir()) {
            return Err(Failure::Usage(format!(
                "{flag}: cannot write {:?}: not a file in an existing folder",
                p.display().to_string()
            )));
        }
    }
    Ok(())
}

async fn run_demo(args: SandboxArgs, m: &ArgMatches) -> Result<ExitCode, Failure> {
    let SandboxArgs {
        demo: args,
        operator: mut op_args,
    } = args;
    for (id, flag, why) in NOT_HERE {
        if m.value_source(id) == Some(ValueSource::CommandLine) {
            return Err(Failure::Usage(format!(
                "{flag}: not used by `fluoctl sandbox`: {why}"
            )));
        }
    }
    check_output(&args.report, "--report")?;
    check_output(&args.timeline, "--timeline")?;
    if let Some(d) = &args.kubeconfig_dir {
        std::fs::create_dir_all(d).map_err(|e| {
            Failure::Usage(format!(
                "--kubeconfig-dir: cannot use {:?} as a folder for the kubeconfigs: {e}",
                d.display().to_string()
            ))
        })?;
    }
    let spec = ClusterSpec {
        nodes: args.nodes,
        zones: args.zones.unwrap_or(0),
        pods_per_node: args.pods_per_node,
        drain_seconds: args.drain_seconds,
        reboot: Duration::from_secs(args.reboot_seconds.into()),
        hook_delay: (!args.manual_hooks).then(|| Duration::from_secs(args.hook_seconds.into())),
    };
    let sb = sandbox::Sandbox::start(spec.sandbox_options(args.listen))
        .await
        .map_err(|e| Failure::Usage(format!("--listen {}: {e:#}", args.listen)))?;
    op_args.namespace = Some(NAMESPACE.to_string());
    // Checked by the operator's flag validation; the operator's client is the sandbox's.
    op_args.kubeconfig = Some(sb.kubeconfig_path());
    let max_flag = op_args.max_rebooting_nodes.to_string();
    let settings = op_args
        .into_settings(m)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let mut config = settings.config;
    // update-operator serves /metrics on 0.0.0.0:8080 by default; the sandbox only where asked.
    if !matches!(
        m.value_source("metrics_address"),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    ) {
        config.metrics_address = None;
    }
    let metrics = config.metrics_address.map(|_| config.metrics.clone());
    let op = config.operator.clone();
    let k = op.max_rebooting.resolve(args.nodes as usize);
    let url = sb.https_url();
    let plain_url = sb.url();
    let kubeconfig = sb.kubeconfig_path();

    let cluster = Cluster::start(sb, &spec, config)
        .await
        .context("starting the simulated cluster")?;
    let pods = args.nodes * args.pods_per_node;
    println!(
        "fluoctl sandbox: {} nodes{}, {pods} pods in {} Deployment(s) (PDB maxUnavailable 1, \
         terminationGracePeriodSeconds {}), reboots of {} s",
        args.nodes,
        args.zones
            .map(|z| format!(" in {z} zones"))
            .unwrap_or_default(),
        pods.div_ceil(REPLICAS_PER_WORKLOAD),
        args.drain_seconds,
        args.reboot_seconds,
    );
    println!(
        "update-operator: --max-rebooting-nodes {max_flag} ({k} of {} nodes), reboot window {}{}{}",
        args.nodes,
        op.window
            .as_ref()
            .map_or_else(|| "always open".to_string(), |w| w.to_string()),
        hooks_note("before", &op.before_reboot_annotations),
        hooks_note("after", &op.after_reboot_annotations),
    );
    if let Some(metrics) = &metrics {
        for _ in 0..50 {
            if metrics.listening().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(a) = metrics.listening() {
            println!("update-operator metrics: http://{a}/metrics");
        }
    }
    println!("sandbox API server: {url} (plain HTTP, without credentials: {plain_url})");
    println!(
        "RBAC from deploy/ is enforced; the operator and every agent run as their service accounts"
    );
    if let Some(dir) = &args.kubeconfig_dir {
        cluster
            .sandbox
            .write_kubeconfig_dir(dir, &cluster.names)
            .with_context(|| format!("--kubeconfig-dir {}", dir.display()))?;
        println!(
            "kubeconfigs per identity: {} (admin, update-operator, update-agent-<node>)",
            dir.display()
        );
    }
    println!("admin kubeconfig: {}", kubeconfig.display());
    println!("watch it with kubectl:");
    println!(
        "  kubectl --kubeconfig {} get nodes -L {} -w",
        kubeconfig.display(),
        keys::LABEL_VERSION
    );
    println!(
        "  kubectl --kubeconfig {} get pods -n {WORKLOAD_NAMESPACE} -o wide",
        kubeconfig.display()
    );
    if args.no_updates {
        println!(
            "no update offered (--no-updates); ask for a reboot with:\n  kubectl --kubeconfig {} \
             annotate node {} --overwrite {}=true",
            kubeconfig.display(),
            cluster.names[0],
            keys::REBOOT_NEEDED
        );
    } else {
        println!(
            "offering update {} -> {NEW_VERSION} to every node",
            sandbox::sim::INITIAL_VERSION
        );
    }

    let start = if args.no_updates {
        None
    } else {
        let t = cluster.monitor.now();
        cluster.offer_updates(NEW_VERSION).await;
        Some(t)
    };
    let outcome = follow(&cluster, &args, &op, k, start, &url).await;
    let stopped = cluster.stop().await;
    match (outcome, stopped) {
        (Err(Failure::Run(e)), Err(why)) => Err(Failure::Run(why.context(e.to_string()))),
        (Ok(code), Err(e)) => {
            eprintln!("fluoctl sandbox: warning: the operator did not stop cleanly: {e:#}");
            Ok(code)
        }
        (outcome, _) => outcome,
    }
}

fn hooks_note(when: &str, annotations: &[String]) -> String {
    if annotations.is_empty() {
        String::new()
    } else {
        format!(", {when}-reboot hooks {}", annotations.join(","))
    }
}

/// Reboot cycles finished (rebooted and released).
fn completed(s: &Snapshot) -> usize {
    s.nodes
        .iter()
        .flat_map(|n| n.cycles.iter())
        .filter(|c| c.is_closed() && c.reboots > 0)
        .count()
}

async fn follow(
    cluster: &Cluster,
    args: &DemoArgs,
    op: &protocol::operator::OperatorConfig,
    k: usize,
    start: Option<f64>,
    url: &str,
) -> Result<ExitCode, Failure> {
    // The nodes the operator manages (--node-selector); the rollout is done when they all are.
    let targets = managed_nodes(cluster, op).await?;
    let total = targets.len();
    let interactive = std::io::stderr().is_terminal();
    let mut progress = Some(Progress::new(total, interactive));
    let mut changes = cluster.monitor.changes();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut shutdown = std::pin::pin!(shutdown_signal());
    // The rollout is complete; the summary follows once it stayed so for a second.
    let mut settle_until: Option<tokio::time::Instant> = None;
    let mut summarised = 0;
    let mut last_code = ExitCode::SUCCESS;
    loop {
        let interrupted = tokio::select! {
            _ = &mut shutdown => true,
            r = changes.changed() => {
                if r.is_err() {
                    return Err(anyhow::anyhow!("the monitor's watch of Nodes ended").into());
                }
                false
            }
            _ = tick.tick() => false,
        };
        if cluster.operator.is_finished() {
            return Err(anyhow::anyhow!("update-operator stopped unexpectedly").into());
        }
        let snap = cluster.monitor.snapshot();
        let window_closed = op
            .window
            .as_ref()
            .is_some_and(|w| !w.contains(chrono::Utc::now()));
        if let Some(p) = progress.as_mut() {
            p.update(&snap, start, window_closed);
        }
        let complete = if args.no_updates {
            completed(&snap) > summarised && snap.counts.busy() == 0
        } else {
            snap.nodes
                .iter()
                .filter(|n| n.phase == Phase::Done && targets.contains(&n.name))
                .count()
                == total
        };
        if interrupted {
            let Some(mut p) = progress.take() else {
                // Done and summarised already: a normal stop.
                return Ok(last_code);
            };
            p.finish();
            if complete {
                // Stopped while the finished rollout settled: the summary as usual.
                return summarise(&snap, args, op, k, start);
            }
            if completed(&snap) > summarised || snap.counts.busy() > 0 {
                println!("interrupted before the rollout finished");
                summarise(&snap, args, op, k, start)?;
            }
            return Ok(ExitCode::from(130));
        }
        if progress.is_none() || !complete {
            settle_until = None;
            continue;
        }
        let now = tokio::time::Instant::now();
        match settle_until {
            None => {
                settle_until = Some(now + Duration::from_secs(1));
                continue;
            }
            Some(t) if now < t => continue,
            Some(_) => settle_until = None,
        }
        let snap = cluster.monitor.snapshot();
        if let Some(mut p) = progress.take() {
            p.finish();
        }
        summarised = completed(&snap);
        last_code = summarise(&snap, args, op, k, start)?;
        if args.exit_when_done {
            return Ok(last_code);
        }
        if args.no_updates {
            println!("still serving on {url}; waiting for more reboot requests (Ctrl-C stops)");
            progress = Some(Progress::new(total, interactive));
        } else {
            println!("still serving on {url} (Ctrl-C stops)");
        }
    }
}

/// The `--report` file: the settings, then the report.
#[derive(serde::Serialize)]
struct ReportFile<'a> {
    settings: serde_json::Value,
    #[serde(flatten)]
    report: &'a Report,
}

/// The nodes `--node-selector` selects (all without one).
async fn managed_nodes(
    cluster: &Cluster,
    op: &protocol::operator::OperatorConfig,
) -> anyhow::Result<BTreeSet<String>> {
    let Some(selector) = &op.node_selector else {
        return Ok(cluster.names.iter().cloned().collect());
    };
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(cluster.sandbox.client())
        .list(&Default::default())
        .await
        .context("listing the nodes")?;
    let targets: BTreeSet<String> = nodes
        .items
        .iter()
        .filter(|n| selector.matches(&n.metadata.labels.clone().unwrap_or_default()))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    anyhow::ensure!(
        !targets.is_empty(),
        "--node-selector selects none of the sandbox's nodes"
    );
    Ok(targets)
}

/// Prints the summary, writes the report and the timeline; the exit status they call for.
fn summarise(
    snap: &Snapshot,
    args: &DemoArgs,
    op: &protocol::operator::OperatorConfig,
    k: usize,
    start: Option<f64>,
) -> Result<ExitCode, Failure> {
    let summary = Summary::compute(snap, k, start, !args.no_updates);
    print_summary(&summary, args, &op.max_rebooting.to_string());
    let report = Report::new(snap, summary.clone(), start);
    if let Some(path) = &args.report {
        let out = ReportFile {
            settings: json!({
                "nodes": args.nodes,
                "zones": args.zones,
                "pods_per_node": args.pods_per_node,
                "reboot_seconds": args.reboot_seconds,
                "drain_seconds": args.drain_seconds,
                "max_rebooting_nodes": op.max_rebooting.to_string(),
                "reboot_window": op.window.as_ref().map(|w| w.to_string()),
                "before_reboot_annotations": op.before_reboot_annotations,
                "after_reboot_annotations": op.after_reboot_annotations,
                "updates_offered": !args.no_updates,
                "new_version": (!args.no_updates).then_some(NEW_VERSION),
            }),
            report: &report,
        };
        let text = serde_json::to_string_pretty(&out).context("encoding the report")?;
        write(path, "--report", &text)?;
        println!("report: {}", path.display());
    }
    if let Some(path) = &args.timeline {
        write(path, "--timeline", &crate::svg::render(&report))?;
        println!("timeline: {}", path.display());
    }
    Ok(if summary.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write(path: &Path, flag: &str, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("{flag}: cannot write {}", path.display()))
}

fn print_summary(s: &Summary, args: &DemoArgs, max_flag: &str) {
    let what = if args.no_updates {
        format!("{} of {} nodes rebooted", s.rebooted, s.nodes)
    } else {
        format!(
            "{} of {} nodes updated to {NEW_VERSION}",
            s.rebooted, s.nodes
        )
    };
    println!(
        "summary: {what}, at most {} at a time (--max-rebooting-nodes {max_flag})",
        s.max_rebooting
    );
    println!("  wall time         {:>8.1} s", s.wall_seconds);
    println!(
        "  T, one node       {:>8.1} s   {}",
        s.node_seconds,
        fleet::report::NODE_SECONDS_HOW
    );
    println!(
        "  physical limit    {:>8.1} s   ceil({}/{}) x T",
        s.physical_limit_seconds, s.rebooted, s.max_rebooting
    );
    match s.ratio {
        Some(r) => println!("  ratio             {r:>8.2}     wall time / physical limit"),
        None => println!("  ratio                    -"),
    }
    println!(
        "  most unavailable  {:>6}       nodes at once (cordoned, draining or rebooting; limit {})",
        s.max_unavailable, s.max_rebooting
    );
    println!("  violations        {:>6}", s.violations.len());
    for v in &s.violations {
        println!("    - {v}");
    }
}

/// Live progress on stderr: a bar and per-state counts on a terminal, else a line per change.
struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    last: String,
}

impl Progress {
    fn new(total: usize, interactive: bool) -> Progress {
        let bar = interactive.then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30.green/white}] {pos}/{len} updated  {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            total,
            last: String::new(),
        }
    }

    fn update(&mut self, s: &Snapshot, start: Option<f64>, window_closed: bool) {
        let mut parts: Vec<String> = Phase::ALL
            .iter()
            .filter(|&&p| p != Phase::Idle || s.counts.idle > 0)
            .map(|&p| format!("{} {}", p.name(), s.counts.get(p)))
            .collect();
        if window_closed {
            parts.push("(reboot window closed)".into());
        }
        let msg = parts.join("  ");
        match &self.bar {
            Some(bar) => {
                bar.set_position(s.counts.done as u64);
                bar.set_message(msg);
            }
            None if msg != self.last => {
                let t = s.now - start.unwrap_or(0.0);
                eprintln!(
                    "[{t:>7.1}s] {}/{} updated: {msg}",
                    s.counts.done, self.total
                );
                self.last = msg;
            }
            None => {}
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
