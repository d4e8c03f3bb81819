//! fluoctl: the command line for people.

mod demo;
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
}

/// The command line, with the operator's flags that make no sense in the sandbox hidden.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("sandbox", demo::adjust_command)
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
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
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_valid() {
        super::command().debug_assert();
    }
}
