//! fluoctl: the command line for people. The code behind both binaries,
//! `fluoctl` and the kubectl plugin `kubectl-fluo` (`kubectl fluo status`).

mod chaos;
mod demo;
mod pause;
mod plan;
mod status;
mod svg;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fluoctl",
    version,
    about = "Reboot coordination for Flatcar Container Linux nodes on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch a whole rollout: a simulated cluster with the real update-operator and one real
    /// update-agent per node, an update offered to every node, live progress, a summary.
    #[command(
        long_about = "Runs a simulated cluster in-process (an in-process Kubernetes API server with \
                      simulated Flatcar nodes and workloads guarded by PodDisruptionBudgets), the \
                      real update-operator and one real update-agent per node (restarted when its \
                      node reboots), offers an update to every node and shows the rollout live \
                      until every node is updated; then a summary: wall time against the \
                      physical limit, the most nodes unavailable at once, and violations. \
                      The operator's own flags are passed through unchanged. \
                      kubectl can watch: see --listen."
    )]
    Sandbox(Box<demo::SandboxArgs>),
    /// The reboot state of a live cluster: every managed node's state, versions and since
    /// when; the slots held, the window, the cluster-wide pause and the operator's leader.
    Status(Box<status::StatusArgs>),
    /// Pause reboots: of one node (annotation reboot-paused=true) or, without NODE, of the
    /// whole cluster (annotation paused=true on the operator's Lease).
    Pause(pause::PauseArgs),
    /// Undo `fluoctl pause`: of one node or, without NODE, of the whole cluster.
    Resume(pause::PauseArgs),
    /// Seeded chaos scenarios on the sandbox: faults (operator leader killed, agents killed at
    /// each step, API errors, latency, cut watches, an API outage, watch expiry and API server
    /// restarts with 410 Gone, a partitioned agent, revoked RBAC, logind refusing or losing a
    /// reboot, a node that never comes back, a PDB that never allows eviction, a window
    /// boundary, late updates) during a rollout, every change checked against the protocol's
    /// invariants; then the rollout must finish. Ends with `N scenarios, F faults, V
    /// violations` (exit status 1 if V > 0).
    Chaos(chaos::ChaosArgs),
    /// A dry run: the order in which the nodes that need a reboot would reboot, in batches,
    /// with the operator's settings, window boundaries and the estimated duration.
    Plan(Box<plan::PlanArgs>),
}

/// The command line, with the operator's flags that make no sense in the sandbox hidden.
fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("sandbox", demo::adjust_command)
        .mut_subcommand("status", status::adjust_command)
        .mut_subcommand("plan", status::adjust_command)
}

/// The whole program; `bin` is the name shown in usage and errors
/// (`fluoctl`, or `kubectl fluo` for the plugin).
pub fn main_as(bin: &'static str) -> ExitCode {
    let matches = command().name(bin).bin_name(bin).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // The commands against a live cluster report their own errors; kube's
                // own error log of the same failure would only repeat it.
                tracing_subscriber::EnvFilter::new(match cli.command {
                    Command::Sandbox(_) => "error",
                    // Faults make the agents and operators log errors by design.
                    Command::Chaos(_) => "off",
                    _ => "error,kube_client=off",
                })
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fluoctl: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Sandbox(args) => {
            let sub = matches
                .subcommand_matches("sandbox")
                .expect("the sandbox subcommand matched");
            runtime.block_on(demo::run(*args, sub))
        }
        Command::Status(args) => {
            let sub = matches
                .subcommand_matches("status")
                .expect("status matched");
            runtime.block_on(status::run(*args, sub, bin))
        }
        Command::Chaos(args) => runtime.block_on(chaos::run(args)),
        Command::Pause(args) => runtime.block_on(pause::run(args, true, bin)),
        Command::Resume(args) => runtime.block_on(pause::run(args, false, bin)),
        Command::Plan(args) => {
            let sub = matches.subcommand_matches("plan").expect("plan matched");
            runtime.block_on(plan::run(*args, sub, bin))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_valid() {
        super::command().debug_assert();
    }
}
