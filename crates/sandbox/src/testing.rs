//! Node accessors, waits and object comparisons that every crate's tests share, so a node reads
//! the same way in the agent's, the operator's and the packaging tests.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::Value;

/// The node's annotation `key`.
pub fn annotation<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The node's label `key`.
pub fn label<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.metadata
        .labels
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Whether the node is cordoned.
pub fn unschedulable(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// `status.nodeInfo.bootID`, empty when unknown.
pub fn boot_id(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.boot_id.clone())
        .unwrap_or_default()
}

/// Reads `name`; panics if it cannot.
pub async fn get_node(client: &kube::Client, name: &str) -> Node {
    Api::<Node>::all(client.clone())
        .get(name)
        .await
        .expect("get node")
}

/// A merge patch of the node, as an admin (or a test acting as a component) would write it.
pub async fn patch_node(client: &kube::Client, node: &str, body: Value) {
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("patch node");
}

/// Polls `f` every 50 ms until it yields `Some`, or panics after `timeout` naming `what`.
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

/// `sub` is contained in `sup`: every field of `sub` is in `sup` with the same value
/// (lists element by element). Returns the first path that differs.
pub fn contained(sub: &Value, sup: &Value, path: &str) -> Result<(), String> {
    match (sub, sup) {
        (Value::Object(a), Value::Object(b)) => a.iter().try_for_each(|(k, v)| {
            let p = format!("{path}.{k}");
            b.get(k)
                .ok_or_else(|| format!("{p} missing"))
                .and_then(|w| contained(v, w, &p))
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .try_for_each(|(i, (v, w))| contained(v, w, &format!("{path}[{i}]"))),
        _ if sub == sup => Ok(()),
        _ => Err(format!("{path}: {sub} != {sup}")),
    }
}
