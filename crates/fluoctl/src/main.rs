//! fluoctl: the command line for people.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    /// Serve an in-process Kubernetes API with simulated Flatcar nodes, until interrupted.
    Sandbox(SandboxArgs),
}

#[derive(clap::Args)]
struct SandboxArgs {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    nodes: u32,
    /// Workload pods per node (Deployments guarded by PodDisruptionBudgets).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=100))]
    pods_per_node: u32,
    /// Address the API server listens on (plain HTTP), e.g. 127.0.0.1:8080. Port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Sandbox(args) => sandbox(args).await,
    }
}

async fn sandbox(args: SandboxArgs) -> anyhow::Result<()> {
    let sb = sandbox::Sandbox::start(sandbox::Options {
        listen: args.listen,
        ..Default::default()
    })
    .await
    .context("starting the sandbox")?;
    let width = args.nodes.to_string().len().max(2);
    for i in 1..=args.nodes {
        sb.add_node(&format!("node-{i:0width$}"), &[])?;
    }
    let total = args.nodes * args.pods_per_node;
    // Workloads of 5 replicas each, so every PodDisruptionBudget (maxUnavailable 1) matters.
    let mut left = total;
    let mut n = 0;
    while left > 0 {
        let replicas = left.min(5);
        n += 1;
        sb.add_workload("demo", &format!("web-{n}"), replicas, Some(1), 2)?;
        left -= replicas;
    }
    sb.wait_pods_ready(Duration::from_secs(30)).await;
    println!("sandbox API server: {}", sb.url());
    println!("kubeconfig: {}", sb.kubeconfig_path().display());
    println!(
        "look at it with:\n  kubectl --server {} get nodes\n  kubectl --kubeconfig {} get pods -A",
        sb.url(),
        sb.kubeconfig_path().display()
    );
    println!("press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
