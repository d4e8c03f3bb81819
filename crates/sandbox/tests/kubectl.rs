//! The real `kubectl` against the sandbox: if kubectl cannot tell it from a cluster, neither can we.

mod common;

use std::time::Duration;

use common::{Kubectl, eventually, sandbox};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_and_pods() {
    let sb = sandbox(3).await;
    sb.add_workload("shop", "web", 4, Some(1), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let k = Kubectl::new(&sb);
    let out = k.ok(&["get", "nodes"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATUS") && lines[0].contains("VERSION"),
        "{out}"
    );
    for n in ["node-1", "node-2", "node-3"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(n) && l.contains(" Ready ")),
            "{n} Ready in:\n{out}"
        );
    }
    let pods = k.json(&["get", "pods", "-A"]).await;
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(
        items
            .iter()
            .all(|p| p["status"]["phase"] == "Running" && p["metadata"]["namespace"] == "shop")
    );
    let wide = k.ok(&["get", "pods", "-n", "shop", "-o", "wide"]).await;
    assert!(wide.contains("NODE") && wide.contains("node-"), "{wide}");
    let one = k.json(&["get", "node", "node-2"]).await;
    assert_eq!(one["metadata"]["name"], "node-2");
    let (ok, _, err) = k.run(&["get", "node", "node-9"]).await;
    assert!(
        !ok && err.contains("NotFound") && err.contains("node-9"),
        "{err}"
    );
    let by_label = k
        .ok(&[
            "get",
            "nodes",
            "-l",
            "kubernetes.io/hostname=node-1",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(by_label.trim(), "node/node-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_annotate_cordon_uncordon() {
    let sb = sandbox(2).await;
    let k = Kubectl::new(&sb);
    let nodes: Api<Node> = Api::all(sb.client());
    k.ok(&["label", "node", "node-1", "team=blue"]).await;
    k.ok(&[
        "annotate",
        "node",
        "node-1",
        "--overwrite",
        "flatcar-linux-update.v1.flatcar-linux.net/reboot-needed=true",
    ])
    .await;
    k.ok(&[
        "annotate",
        "node",
        "node-1",
        "--overwrite",
        "flatcar-linux-update.v1.flatcar-linux.net/reboot-needed=false",
    ])
    .await;
    let n = nodes.get("node-1").await.unwrap();
    assert_eq!(n.metadata.labels.as_ref().unwrap()["team"], "blue");
    assert_eq!(
        n.metadata.annotations.as_ref().unwrap()["flatcar-linux-update.v1.flatcar-linux.net/reboot-needed"],
        "false"
    );
    // Without --overwrite kubectl refuses to change an existing value.
    let (ok, _, err) = k
        .run(&[
            "annotate",
            "node",
            "node-1",
            "flatcar-linux-update.v1.flatcar-linux.net/reboot-needed=true",
        ])
        .await;
    assert!(!ok && err.contains("already has a value"), "{err}");
    k.ok(&["label", "node", "node-1", "team-"]).await;
    assert!(
        !nodes
            .get("node-1")
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap()
            .contains_key("team")
    );
    let out = k.ok(&["cordon", "node-2"]).await;
    assert!(out.contains("node/node-2 cordoned"), "{out}");
    assert_eq!(
        nodes
            .get("node-2")
            .await
            .unwrap()
            .spec
            .unwrap()
            .unschedulable,
        Some(true)
    );
    let listing = k.ok(&["get", "nodes"]).await;
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("node-2") && l.contains("SchedulingDisabled")),
        "{listing}"
    );
    let out = k.ok(&["uncordon", "node-2"]).await;
    assert!(out.contains("node/node-2 uncordoned"), "{out}");
    assert_ne!(
        nodes
            .get("node-2")
            .await
            .unwrap()
            .spec
            .unwrap()
            .unschedulable,
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_the_pdb_then_completes() {
    let sb = sandbox(3).await;
    sb.add_workload("shop", "web", 6, Some(1), 1).unwrap();
    // A DaemonSet pod on every node, which drain must leave alone.
    sb.create(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}},
    }))
    .unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let k = Kubectl::new(&sb);
    let before = k
        .json(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=node-1",
        ])
        .await;
    let web_before: Vec<String> = before["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["namespace"] == "shop")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        web_before.len() >= 2,
        "several guarded pods on node-1: {web_before:?}"
    );
    let out = k
        .ok(&[
            "drain",
            "node-1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ])
        .await;
    assert!(out.contains("node/node-1 drained"), "{out}");
    let after = k.json(&["get", "pods", "-A"]).await;
    let items = after["items"].as_array().unwrap();
    let on_node1: Vec<&Value> = items
        .iter()
        .filter(|p| p["spec"]["nodeName"] == "node-1")
        .collect();
    assert!(
        on_node1
            .iter()
            .all(|p| p["metadata"]["namespace"] == "kube-system"),
        "only the DaemonSet pod stays: {on_node1:?}"
    );
    assert_eq!(on_node1.len(), 1);
    let web: Vec<&Value> = items
        .iter()
        .filter(|p| p["metadata"]["namespace"] == "shop")
        .collect();
    assert_eq!(web.len(), 6, "replacements were created");
    assert!(web.iter().all(|p| p["spec"]["nodeName"] != "node-1"));
    // Drain went one pod at a time: the budget never allowed two of the six to be down.
    let stored = sb
        .store()
        .lock()
        .get(sandbox::eviction::pdbs(), "shop", "web")
        .unwrap();
    assert_eq!(stored["status"]["desiredHealthy"], 5);
    let node = k.json(&["get", "node", "node-1"]).await;
    assert_eq!(node["spec"]["unschedulable"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_leases() {
    let sb = sandbox(1).await;
    let k = Kubectl::new(&sb);
    // The simulated kubelet records a Rebooted event, as the real one does.
    use host::Host;
    sb.host("node-1").unwrap().reboot().await.unwrap();
    let events: Api<Event> = Api::all(sb.client());
    let mut seen = false;
    for _ in 0..100 {
        if !events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen);
    let out = k.ok(&["get", "events", "-A"]).await;
    assert!(
        out.contains("Rebooted") && out.contains("node/node-1"),
        "{out}"
    );
    let leases: Api<Lease> = Api::namespaced(sb.client(), "reboot-coordinator");
    let (ok, _, err) = k.run(&["get", "lease", "-n", "reboot-coordinator"]).await;
    assert!(ok, "{err}");
    // apply sends JSON (kubectl create sends protobuf: see kubectl_defaults.rs).
    let manifest = k.cache.path().join("ns.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: reboot-coordinator\n",
    )
    .unwrap();
    let out = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(
        out.contains("namespace/reboot-coordinator created"),
        "{out}"
    );
    let out = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(
        out.contains("namespace/reboot-coordinator unchanged"),
        "{out}"
    );
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "flatcar-linux-update-operator-lock"}, "spec": {"holderIdentity": "op-1", "leaseDurationSeconds": 15}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let out = k.ok(&["get", "lease", "-n", "reboot-coordinator"]).await;
    assert!(
        out.contains("flatcar-linux-update-operator-lock") && out.contains("op-1"),
        "{out}"
    );
    assert!(eventually(5, || sb.host("node-1").unwrap().reboots() == 1).await);
}
