//! `fluoctl pause [NODE]` / `fluoctl resume [NODE]`: FLUO's per-node
//! `reboot-paused` annotation, or the cluster-wide `paused` annotation on
//! the operator's Lease.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use protocol::keys;
use serde_json::{Value, json};

use crate::status::{Connect, DEFAULT_NAMESPACE, client};

/// The field manager of our patches.
const FIELD_MANAGER: &str = "fluoctl";

/// `fluoctl pause` / `resume`'s flags.
#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// The node; without it, the whole cluster (the annotation on the operator's Lease).
    pub node: Option<String>,
    #[command(flatten)]
    pub connect: Connect,
    /// Path to a kubeconfig file (else KUBECONFIG, ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The operator's namespace (where its Lease is).
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_NAMESPACE, value_name = "NAMESPACE")]
    pub namespace: String,
    /// The operator's Lease (its --lease-name).
    #[arg(long, default_value = operator::DEFAULT_LEASE_NAME, value_name = "NAME")]
    pub lease_name: String,
    /// Cluster-wide: create the Lease if it does not exist (the operator then finds it paused).
    #[arg(long)]
    pub create: bool,
}

/// Runs `pause` (`pause = true`) or `resume`.
pub async fn run(args: PauseArgs, pause: bool, bin: &str) -> ExitCode {
    let verb = if pause { "pause" } else { "resume" };
    match change(args, pause).await {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{bin} {verb}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn annotation_value(pause: bool) -> Value {
    if pause {
        json!(keys::TRUE)
    } else {
        Value::Null
    }
}

async fn change(args: PauseArgs, pause: bool) -> anyhow::Result<String> {
    let kubeconfig = args
        .kubeconfig
        .clone()
        .filter(|p| !p.as_os_str().is_empty());
    let (client, url) = client(&args.connect, kubeconfig.as_deref()).await?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patch = json!({"metadata": {"annotations": {
        (if args.node.is_some() { keys::REBOOT_PAUSED } else { keys::PAUSED }): annotation_value(pause)
    }}});
    if let Some(node) = &args.node {
        let nodes: Api<Node> = Api::all(client);
        let current = nodes
            .get_opt(node)
            .await
            .with_context(|| format!("cannot read node {node} at {url}"))?
            .with_context(|| format!("no node {node:?} at {url}"))?;
        let was = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::REBOOT_PAUSED))
            .cloned();
        nodes
            .patch(node, &params, &Patch::Merge(&patch))
            .await
            .with_context(|| format!("cannot patch node {node} at {url}"))?;
        return Ok(match (pause, was.as_deref()) {
            (true, Some(keys::TRUE)) => format!(
                "node {node}: already paused ({}=true); unchanged",
                keys::REBOOT_PAUSED
            ),
            (true, _) => format!(
                "node {node}: paused: set {}=true (the operator will not pick it; a reboot \
                 already granted and not started is withdrawn)",
                keys::REBOOT_PAUSED
            ),
            (false, None) => format!(
                "node {node}: was not paused (no {} annotation); unchanged",
                keys::REBOOT_PAUSED
            ),
            (false, Some(v)) => {
                format!("node {node}: resumed: removed {}={v}", keys::REBOOT_PAUSED)
            }
        });
    }
    let (ns, name) = (&args.namespace, &args.lease_name);
    let leases: Api<Lease> = Api::namespaced(client, ns);
    let current = leases
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read Lease {ns}/{name} at {url}"))?;
    let Some(current) = current else {
        if !args.create {
            anyhow::bail!(
                "no Lease {ns}/{name} at {url}: the update-operator is not running in namespace \
                 {ns:?} (give its --namespace / --lease-name, or --create to create the Lease{})",
                if pause { " paused" } else { "" }
            );
        }
        if !pause {
            return Ok(format!(
                "cluster: not paused (no Lease {ns}/{name}); nothing to resume"
            ));
        }
        let lease: Lease = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {keys::PAUSED: keys::TRUE}},
            "spec": {}
        }))?;
        leases
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &lease,
            )
            .await
            .with_context(|| format!("cannot create Lease {ns}/{name} at {url}"))?;
        return Ok(format!(
            "cluster: paused: created Lease {ns}/{name} with {}=true (no new reboot will be granted \
             anywhere; reboots in progress finish)",
            keys::PAUSED
        ));
    };
    let was = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::PAUSED))
        .cloned();
    leases
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .with_context(|| format!("cannot patch Lease {ns}/{name} at {url}"))?;
    Ok(match (pause, was.as_deref()) {
        (true, Some(keys::TRUE)) => format!(
            "cluster: already paused ({}=true on Lease {ns}/{name}); unchanged",
            keys::PAUSED
        ),
        (true, _) => format!(
            "cluster: paused: set {}=true on Lease {ns}/{name} (no new reboot will be granted \
             anywhere; reboots in progress finish)",
            keys::PAUSED
        ),
        (false, None) => format!(
            "cluster: was not paused (no {} annotation on Lease {ns}/{name}); unchanged",
            keys::PAUSED
        ),
        (false, Some(v)) => format!(
            "cluster: resumed: removed {}={v} from Lease {ns}/{name}",
            keys::PAUSED
        ),
    })
}
