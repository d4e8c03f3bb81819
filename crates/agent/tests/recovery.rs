//! The post-reboot health gate end to end: the sandbox (a real Kubernetes API over HTTP
//! with simulated kubelets and hosts), one real agent per node and the real operator with
//! `--max-rebooting-nodes 1`. The pods evicted from the first node cannot run anywhere at
//! first (their nodeSelector matches no node), so the slot must stay held and the second
//! node must not be granted until they run Ready again, or until --pod-recovery-timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::Client;
use kube::api::{Api, PostParams};
use protocol::evicted::EvictedPods;
use protocol::keys;
use sandbox::Sandbox;
use serde_json::json;

const NEW_VERSION: &str = "4081.3.0";
const POOL: &str = "example.com/pool";

/// Three nodes, agents on all of them (`pod_recovery_timeout` as given), and the operator.
/// A Deployment `pinned` of two pods runs on node-1 (the only node in pool `a`), then
/// node-1 leaves the pool: its pods keep running, but replacements fit no node.
async fn cluster(
    pod_recovery_timeout: Duration,
) -> (Sandbox, fleet::agents::Fleet, fleet::operators::Replica) {
    let sb = sandbox().await;
    sb.add_node("node-1", &[(POOL, "a")]).unwrap();
    sb.add_node("node-2", &[]).unwrap();
    sb.add_node("node-3", &[]).unwrap();
    let client = sb.client();
    sb.add_workload("default", "free", 3, None, 1).unwrap();
    let labels = json!({"app": "pinned"});
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pinned", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {POOL: "a"},
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the deployment");
    wait_ready_pods(&client, "app=pinned", 2).await;
    wait_ready_pods(&client, "app=free", 3).await;
    patch_node(
        &client,
        "node-1",
        json!({"metadata": {"labels": {POOL: null}}}),
    )
    .await;

    let agents = fleet::agents::Fleet::start(&sb, &["node-1", "node-2", "node-3"], move |n, h| {
        let mut c = fleet::agents::agent_config(n, h);
        c.pod_recovery_timeout = pod_recovery_timeout;
        c.pod_recovery_poll = Duration::from_millis(200);
        c
    });
    let operator =
        fleet::operators::Replica::start(&sb, "operator", fleet::operators::op_config(1));
    (sb, agents, operator)
}

/// Node-1 asks first and is granted; then node-2 asks too.
async fn updates(sb: &Sandbox) {
    let client = sb.client();
    sb.host("node-1").unwrap().offer_update(NEW_VERSION).await;
    wait_node(&client, "node-1", "the grant", |n| {
        annotation(n, keys::REBOOT_OK) == Some("true")
    })
    .await;
    sb.host("node-2").unwrap().offer_update(NEW_VERSION).await;
    wait_node(&client, "node-2", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
}

fn record(n: &Node) -> Option<EvictedPods> {
    annotation(n, keys::EVICTED_PODS).map(|v| EvictedPods::parse(v).expect("a well-formed record"))
}

/// Node-1 rebooted and is back, uncordoned, with the record stamped `back`.
async fn back_and_waiting(client: &Client) -> Node {
    let n = wait_node(client, "node-1", "the record before the reboot", |n| {
        annotation(n, keys::REBOOT_IN_PROGRESS) == Some("true") && record(n).is_some()
    })
    .await;
    let rec = record(&n).unwrap();
    assert!(rec.back.is_none());
    let pinned: Vec<_> = rec
        .workloads
        .iter()
        .filter(|w| w.kind == "ReplicaSet" && w.name.starts_with("pinned-"))
        .collect();
    assert_eq!(pinned.len(), 1, "{rec:?}");
    assert_eq!(pinned[0].count, 2);
    let first_boot = boot_id(&n);
    wait_node(client, "node-1", "back from the reboot", |n| {
        boot_id(n) != first_boot
            && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false")
            && !unschedulable(n)
            && record(n).is_some_and(|r| r.back.is_some())
    })
    .await
}

/// Holds for `d`: node-1 keeps its slot and node-2 has no grant.
async fn slot_held_for(client: &Client, d: Duration) {
    let nodes: Api<Node> = Api::all(client.clone());
    let end = Instant::now() + d;
    while Instant::now() < end {
        let n1 = nodes.get("node-1").await.unwrap();
        let n2 = nodes.get("node-2").await.unwrap();
        assert_eq!(
            annotation(&n1, keys::REBOOT_OK),
            Some("true"),
            "node-1 released early"
        );
        assert!(record(&n1).is_some(), "the record went early");
        assert_ne!(
            annotation(&n2, keys::REBOOT_OK),
            Some("true"),
            "node-2 granted early"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn events(client: &Client, reason: &str) -> Vec<Event> {
    Api::<Event>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_waits_until_the_evicted_pods_run_ready_again() {
    init_logging();
    let (sb, agents, operator) = cluster(Duration::from_secs(600)).await;
    let client = sb.client();
    updates(&sb).await;
    back_and_waiting(&client).await;
    // The replacements are Pending: no node is in the pool.
    slot_held_for(&client, Duration::from_secs(2)).await;

    // A node joins the pool: the pods run Ready there, the record goes, the slot is
    // released and node-2 gets it.
    let t = Instant::now();
    patch_node(
        &client,
        "node-3",
        json!({"metadata": {"labels": {POOL: "a"}}}),
    )
    .await;
    wait_ready_pods(&client, "app=pinned", 2).await;
    let n1 = wait_node(&client, "node-1", "released", |n| {
        annotation(n, keys::REBOOT_OK) == Some("false") && record(n).is_none()
    })
    .await;
    assert!(annotation(&n1, keys::RELEASED_AT).is_some());
    wait_node(&client, "node-2", "the next grant", |n| {
        annotation(n, keys::REBOOT_OK) == Some("true")
    })
    .await;
    eprintln!(
        "pool joined -> node-2 granted: {} ms",
        t.elapsed().as_millis()
    );
    let on_3 = pods_on(&client, "node-3").await;
    assert_eq!(
        on_3.iter()
            .filter(|p| p.starts_with("default/pinned-"))
            .count(),
        2
    );
    assert!(!events(&client, "EvictedPodsReady").await.is_empty());
    assert!(events(&client, "EvictedPodsNotReady").await.is_empty());
    agents.stop().await;
    operator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_pod_recovery_timeout_the_slot_is_released_with_a_warning() {
    init_logging();
    let timeout = Duration::from_secs(4);
    let (sb, agents, operator) = cluster(timeout).await;
    let client = sb.client();
    updates(&sb).await;
    let n1 = back_and_waiting(&client).await;
    let back = record(&n1).unwrap().back.unwrap();
    slot_held_for(&client, Duration::from_secs(2)).await;

    let n1 = wait_node(&client, "node-1", "released after the timeout", |n| {
        annotation(n, keys::REBOOT_OK) == Some("false") && record(n).is_none()
    })
    .await;
    let released = protocol::node::parse_time(annotation(&n1, keys::RELEASED_AT).unwrap()).unwrap();
    let waited = (released - back).to_std().unwrap();
    eprintln!("back -> released: {waited:?} (--pod-recovery-timeout {timeout:?})");
    // RFC3339 seconds: the release is at most a second early on paper.
    assert!(waited + Duration::from_secs(1) >= timeout, "{waited:?}");
    wait_node(&client, "node-2", "the next grant", |n| {
        annotation(n, keys::REBOOT_OK) == Some("true")
    })
    .await;
    // The pods are still Pending, and the Warning names their workload.
    let warnings = events(&client, "EvictedPodsNotReady").await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert_eq!(w.type_.as_deref(), Some("Warning"));
    assert_eq!(w.involved_object.name.as_deref(), Some("node-1"));
    let msg = w.message.clone().unwrap_or_default();
    assert!(
        msg.contains("default/ReplicaSet pinned-") && msg.contains("(0/2 Ready)"),
        "{msg}"
    );
    assert!(events(&client, "EvictedPodsReady").await.is_empty());
    let pinned: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let pending = pinned
        .list(&kube::api::ListParams::default().labels("app=pinned"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
        .count();
    assert_eq!(pending, 2);
    agents.stop().await;
    operator.stop().await.unwrap();
}
