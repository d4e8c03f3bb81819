//! Shared helpers for the operator's tests against the sandbox: operator
//! replicas, hand edits of Nodes, waiting with timeouts, and a watch-based
//! monitor of node states. `agents.rs` (included separately) runs the real
//! agent per simulated node.
#![allow(dead_code)]

pub mod agents;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use operator::{Config, LeaseTiming};
use protocol::keys;
use protocol::operator::OperatorConfig;
use sandbox::{Options, Sandbox};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The namespace the operator's Lease lives in during tests.
pub const NAMESPACE: &str = "kube-system";

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

pub async fn sandbox() -> Sandbox {
    init_tracing();
    Sandbox::start(Options::default())
        .await
        .expect("sandbox starts")
}

/// Fast leader election for tests: 3 s lease, 2 s renew deadline, 250 ms retry.
pub fn fast_lease() -> LeaseTiming {
    LeaseTiming {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(250),
    }
}

/// An operator config with `max` nodes at once, no window, no hooks.
pub fn op_config(max: u32) -> OperatorConfig {
    OperatorConfig {
        max_rebooting: protocol::operator::MaxRebooting::Count(max),
        ..Default::default()
    }
}

/// One in-process operator replica.
pub struct Replica {
    pub identity: String,
    pub token: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    /// Starts `operator::run` as `user` (also its identity and audit name).
    pub fn start(sb: &Sandbox, user: &str, op: OperatorConfig) -> Replica {
        let mut cfg = Config::new(NAMESPACE, op);
        cfg.identity = user.to_string();
        cfg.lease = fast_lease();
        Replica::start_with(sb, user, cfg)
    }

    pub fn start_with(sb: &Sandbox, user: &str, cfg: Config) -> Replica {
        let client = sb.client_as(user).expect("client");
        let token = CancellationToken::new();
        let identity = cfg.identity.clone();
        let handle = tokio::spawn(operator::run(client, cfg, token.clone()));
        Replica {
            identity,
            token,
            handle,
        }
    }

    /// Graceful shutdown (releases the Lease); returns run()'s result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("operator stops in time")
            .expect("operator task did not panic")
    }

    /// Abrupt death: the task is aborted, nothing is released.
    pub fn kill(self) {
        self.handle.abort();
    }
}

/// Polls `f` every 50 ms until it yields `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn get_node(client: &kube::Client, name: &str) -> Node {
    Api::<Node>::all(client.clone())
        .get(name)
        .await
        .expect("get node")
}

pub async fn all_nodes(client: &kube::Client) -> Vec<Node> {
    Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list nodes")
        .items
}

pub fn annotation<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

pub fn label<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.metadata
        .labels
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

pub fn granted(n: &Node) -> bool {
    annotation(n, keys::REBOOT_OK) == Some("true")
}

pub fn unschedulable(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

pub fn ready(n: &Node) -> bool {
    operator::convert::node_view(n).ready
}

pub fn boot_id(n: &Node) -> String {
    operator::convert::node_view(n).boot_id
}

/// A merge patch of a node's annotations (None removes), as an admin would.
pub async fn annotate(client: &kube::Client, node: &str, changes: &[(&str, Option<&str>)]) {
    let anns: serde_json::Map<String, Value> = changes
        .iter()
        .map(|(k, v)| (k.to_string(), v.map_or(Value::Null, |v| json!(v))))
        .collect();
    patch_node(client, node, json!({"metadata": {"annotations": anns}})).await;
}

pub async fn patch_node(client: &kube::Client, node: &str, body: Value) {
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("patch node");
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

/// Maxima over every state the cluster passed through, from a watch of all
/// Nodes (each event is one change, so every intermediate state is seen).
#[derive(Debug, Default, Clone)]
pub struct Peaks {
    /// Nodes holding a reboot slot (see `NodeView::holds_slot`).
    pub slot_holders: usize,
    /// Nodes granted (`reboot-ok=true`).
    pub granted: usize,
    /// Nodes unschedulable (not counting the excluded ones), reboot-in-progress or NotReady.
    pub disrupted: usize,
    /// Per node: the boot IDs seen, in order.
    pub boot_ids: BTreeMap<String, Vec<String>>,
    /// A log of (node, what) when disrupted changed, for failure messages.
    pub history: Vec<String>,
}

pub struct Monitor {
    peaks: Arc<Mutex<Peaks>>,
    task: JoinHandle<()>,
}

impl Monitor {
    /// Watches all nodes; `cordoned_by_admin` nodes' cordons are not counted.
    pub async fn start(client: kube::Client, cordoned_by_admin: &[&str]) -> Monitor {
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let excluded: BTreeSet<String> = cordoned_by_admin.iter().map(|s| s.to_string()).collect();
        let p = peaks.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
            let mut init: BTreeMap<String, Node> = BTreeMap::new();
            let stream = watcher(Api::<Node>::all(client), watcher::Config::default());
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::Apply(n)) => {
                        nodes.insert(n.name_any(), n);
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        nodes.remove(&n.name_any());
                    }
                    Ok(watcher::Event::Init) => init.clear(),
                    Ok(watcher::Event::InitApply(n)) => {
                        init.insert(n.name_any(), n);
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        nodes = std::mem::take(&mut init);
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(_) => continue,
                }
                let mut pk = p.lock().unwrap();
                let views: Vec<_> = nodes.values().map(operator::convert::node_view).collect();
                let holders = views.iter().filter(|v| v.holds_slot()).count();
                let granted = views
                    .iter()
                    .filter(|v| v.annotation(keys::REBOOT_OK) == Some("true"))
                    .count();
                let disrupted: Vec<&str> = views
                    .iter()
                    .filter(|v| {
                        (v.unschedulable && !excluded.contains(&v.name))
                            || v.annotation(keys::REBOOT_IN_PROGRESS) == Some("true")
                            || !v.ready
                    })
                    .map(|v| v.name.as_str())
                    .collect();
                pk.slot_holders = pk.slot_holders.max(holders);
                pk.granted = pk.granted.max(granted);
                if disrupted.len() > pk.disrupted {
                    pk.disrupted = disrupted.len();
                    pk.history.push(format!("disrupted: {disrupted:?}"));
                }
                for v in &views {
                    let ids = pk.boot_ids.entry(v.name.clone()).or_default();
                    if !v.boot_id.is_empty() && ids.last() != Some(&v.boot_id) {
                        ids.push(v.boot_id.clone());
                    }
                }
            }
        });
        tokio::time::timeout(PATIENCE, ready_rx)
            .await
            .expect("monitor's watch starts")
            .expect("monitor running");
        Monitor { peaks, task }
    }

    pub fn peaks(&self) -> Peaks {
        self.peaks.lock().unwrap().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}
