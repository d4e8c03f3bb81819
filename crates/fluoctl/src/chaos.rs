//! `fluoctl chaos`: seeded chaos scenarios on the sandbox (see
//! [`fleet::chaos`]), one line per scenario, then
//! `N scenarios, F faults, V violations`.

use std::process::ExitCode;

use fleet::chaos::{Scenario, run_many};

/// `fluoctl chaos`'s flags.
#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Number of scenarios to run (seeds S, S+1, ...).
    #[arg(long, allow_negative_numbers = true, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub seeds: u64,
    /// The first seed S. A scenario is reproduced from its seed alone:
    /// `fluoctl chaos --seeds 1 --first-seed S`.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub first_seed: u64,
    /// Nodes per scenario (default: 4 to 6, chosen by the seed).
    #[arg(long, allow_negative_numbers = true, value_name = "M", value_parser = clap::value_parser!(u32).range(1..=50))]
    pub nodes: Option<u32>,
    /// Scenarios run at once.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub jobs: u64,
    /// Also print each scenario's cluster shape, fault schedule and the requests the sandbox
    /// failed, delayed, refused or timed out, and the watches it ended.
    #[arg(long)]
    pub verbose: bool,
}

pub async fn run(args: ChaosArgs) -> ExitCode {
    let Some(last) = args.first_seed.checked_add(args.seeds - 1) else {
        eprintln!(
            "fluoctl chaos: error: --first-seed {} with --seeds {} runs past the largest seed {}",
            args.first_seed,
            args.seeds,
            u64::MAX
        );
        return ExitCode::from(2);
    };
    let verbose = args.verbose;
    let scenarios = (args.first_seed..=last)
        .map(|seed| Scenario::from_seed(seed, args.nodes))
        .collect();
    let outcomes = run_many(scenarios, args.jobs as usize, |s: &Scenario, o| {
        if verbose {
            println!("{s}");
        }
        println!(
            "seed {}: {} faults, {} violations, {:.1} s{}",
            o.seed,
            o.faults_injected(),
            o.violations.len(),
            o.duration.as_secs_f64(),
            if o.finished {
                ""
            } else {
                ", rollout not finished"
            }
        );
        if verbose {
            let fired: Vec<String> = o.fired.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let errors: Vec<String> = o
                .injected
                .errors
                .iter()
                .map(|(c, n)| format!("{n}x{c}"))
                .collect();
            println!(
                "  fired: {}; requests failed: {} ; delayed: {}; refused in outage: {}; \
                 refused by RBAC: {}; watches ended at once: {}; timed out in a partition: {} \
                 ({} carried out)",
                fired.join(", "),
                if errors.is_empty() {
                    "none".to_string()
                } else {
                    errors.join(" ")
                },
                o.injected.delayed,
                o.injected.outage,
                o.injected.forbidden,
                o.injected.watches_cut,
                o.injected.partitioned,
                o.injected.partitioned_applied
            );
        }
        for v in &o.violations {
            println!(
                "  violation: {v} (reproduce: fluoctl chaos --seeds 1 --first-seed {}{})",
                o.seed,
                args.nodes
                    .map(|n| format!(" --nodes {n}"))
                    .unwrap_or_default()
            );
        }
    })
    .await;
    let faults: u64 = outcomes
        .iter()
        .map(|o| u64::from(o.faults_injected()))
        .sum();
    let violations: usize = outcomes.iter().map(|o| o.violations.len()).sum();
    println!(
        "{} scenarios, {faults} faults, {violations} violations",
        outcomes.len()
    );
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
