//! Shared helpers for the operator's tests against the sandbox: hand edits of
//! Nodes, waiting with timeouts, the Lease. Operator replicas, the real agent
//! per simulated node and the watch-based monitor come from the `fleet` crate.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use fleet::{Monitor, Replica, op_config};

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use sandbox::testing::{annotation, get_node, label, patch_node, unschedulable, wait_for};
use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use protocol::keys;
use sandbox::{Options, Sandbox};
use serde_json::{Value, json};

/// The namespace the operator's Lease lives in during tests.
pub const NAMESPACE: &str = fleet::LEASE_NAMESPACE;

/// Default patience for anything the operator should do promptly.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_client=warn,kube_runtime=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A sandbox enforcing deploy/'s RBAC and admission policy (loaded). The agents of `fleet::Fleet` run as their
/// service account; `Replica::start` runs a test user in system:masters, [`start_operator_sa`]
/// the operator's service account.
pub async fn sandbox() -> Sandbox {
    init_tracing();
    let sb = Sandbox::start(Options {
        authorization: sandbox::authz::Mode::Rbac,
        ..Options::default()
    })
    .await
    .expect("sandbox starts");
    sb.load_shipped_rbac().expect("deploy/'s RBAC loads");
    sb.load_shipped_admission()
        .expect("deploy/admission's policy loads");
    sb
}

/// The operator as deploy/ runs it: as its service account, its Lease in reboot-coordinator
/// under the default name (the only one its Role allows).
/// A sandbox with these nodes (Ready, no annotations) and an admin client.
pub async fn sandbox_with_nodes(nodes: &[&str]) -> (Sandbox, kube::Client) {
    let sb = sandbox().await;
    for n in nodes {
        sb.add_node(n, &[]).unwrap();
    }
    let admin = sb.client_as("admin").unwrap();
    (sb, admin)
}

/// Waits up to [`PATIENCE`] for `node` to be granted a reboot.
pub async fn wait_granted(client: &kube::Client, node: &str) {
    wait_for(&format!("{node} granted"), PATIENCE, || async {
        granted(&get_node(client, node).await).then_some(())
    })
    .await;
}

pub fn start_operator_sa(sb: &Sandbox, op: protocol::operator::OperatorConfig) -> Replica {
    let mut cfg = operator::Config::new(sandbox::identity::NAMESPACE, op);
    cfg.identity = "update-operator".into();
    cfg.lease = fleet::fast_lease();
    Replica::start_as(sb, &sandbox::UserInfo::operator(), cfg).expect("operator starts")
}

pub async fn all_nodes(client: &kube::Client) -> Vec<Node> {
    Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list nodes")
        .items
}

pub fn granted(n: &Node) -> bool {
    annotation(n, keys::REBOOT_OK) == Some("true")
}

pub fn ready(n: &Node) -> bool {
    protocol::k8s::node_view(n).ready
}

pub fn boot_id(n: &Node) -> String {
    protocol::k8s::node_view(n).boot_id
}

/// A merge patch of a node's annotations (None removes), as an admin would.
pub async fn annotate(client: &kube::Client, node: &str, changes: &[(&str, Option<&str>)]) {
    let anns: serde_json::Map<String, Value> = changes
        .iter()
        .map(|(k, v)| (k.to_string(), v.map_or(Value::Null, |v| json!(v))))
        .collect();
    patch_node(client, node, json!({"metadata": {"annotations": anns}})).await;
}

/// What an agent does when its node wants a reboot (annotation and label).
pub async fn mark_reboot_needed(client: &kube::Client, node: &str) {
    patch_node(
        client,
        node,
        json!({"metadata": {
            "annotations": {keys::REBOOT_NEEDED: "true"},
            "labels": {keys::REBOOT_NEEDED: "true"},
        }}),
    )
    .await;
}

/// What an agent does once its node came back: not needed, not in progress.
pub async fn mark_rebooted(client: &kube::Client, node: &str) {
    patch_node(
        client,
        node,
        json!({"metadata": {
            "annotations": {keys::REBOOT_NEEDED: "false", keys::REBOOT_IN_PROGRESS: "false"},
            "labels": {keys::REBOOT_NEEDED: "false"},
        }}),
    )
    .await;
}

/// The node's Ready condition, as its kubelet would report it.
pub async fn set_ready(client: &kube::Client, node: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    Api::<Node>::all(client.clone())
        .patch_status(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"conditions": [
                {"type": "Ready", "status": status, "reason": "Test", "message": "set by the test"}
            ]}})),
        )
        .await
        .expect("patch node status");
}

pub async fn lease_holder(client: &kube::Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), NAMESPACE)
        .get_opt(operator::DEFAULT_LEASE_NAME)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Waits until `identity` holds the Lease.
pub async fn wait_for_leader(client: &kube::Client, identity: &str, timeout: Duration) {
    wait_for(&format!("{identity} to lead"), timeout, || async {
        (lease_holder(client).await.as_deref() == Some(identity)).then_some(())
    })
    .await
}

/// Users that sent a request with `verb` on `resource` (audit record).
pub fn users_with(sb: &Sandbox, verb: &str, resource: &str) -> BTreeSet<String> {
    sb.audit()
        .entries()
        .into_iter()
        .filter(|e| e.verb == verb && e.resource == resource)
        .map(|e| e.user)
        .collect()
}
