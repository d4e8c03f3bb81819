//! The simulated scheduler, kubelet, DaemonSet and disruption controllers, driven by what
//! changed: placement by load, nodeSelector, cordons and readiness, and the triggers that
//! re-place a pod once a node can take it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, sandbox};
use sandbox::Sandbox;
use sandbox::eviction::{pdbs, pods};
use sandbox::resources;
use serde_json::{Value, json};

fn nodes() -> &'static resources::Resource {
    resources::find("", "v1", "nodes").expect("nodes")
}

fn daemonsets() -> &'static resources::Resource {
    resources::find("apps", "v1", "daemonsets").expect("daemonsets")
}

fn set_ready(sb: &Sandbox, node: &str, ready: bool) {
    sb.store()
        .lock()
        .modify(nodes(), "", node, |v| {
            for c in v["status"]["conditions"].as_array_mut().unwrap() {
                if c["type"] == "Ready" {
                    c["status"] = json!(if ready { "True" } else { "False" });
                }
            }
            Ok(())
        })
        .unwrap();
}

fn modify_node(sb: &Sandbox, node: &str, f: impl FnOnce(&mut Value)) {
    sb.store()
        .lock()
        .modify(nodes(), "", node, |v| {
            f(v);
            Ok(())
        })
        .unwrap();
}

fn bare_pod(sb: &Sandbox, name: &str, spec: Value) {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "app", "image": "registry.k8s.io/pause:3.10"}]);
    sb.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
        // What the API server defaults on create (this goes to the store directly).
        "status": {"phase": "Pending"},
    }))
    .unwrap();
}

fn pod(sb: &Sandbox, name: &str) -> Value {
    (*sb.store().lock().get(pods(), "default", name).expect(name)).clone()
}

fn node_of(p: &Value) -> Option<String> {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Pods per node, all namespaces.
fn load(sb: &Sandbox) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, p) in sb.store().lock().iter(pods(), None) {
        if let Some(n) = node_of(p) {
            *out.entry(n).or_default() += 1;
        }
    }
    out
}

/// node-1, node-2 (zone a), node-3 (zone b), node-4 (zone b, cordoned), node-5 (zone a, not
/// Ready).
async fn five_nodes() -> Sandbox {
    let sb = sandbox(0).await;
    for (n, zone) in [
        ("node-1", "a"),
        ("node-2", "a"),
        ("node-3", "b"),
        ("node-4", "b"),
        ("node-5", "a"),
    ] {
        sb.add_node(n, &[("topology.kubernetes.io/zone", zone)])
            .unwrap();
    }
    modify_node(&sb, "node-4", |v| v["spec"]["unschedulable"] = json!(true));
    set_ready(&sb, "node-5", false);
    sb
}

#[tokio::test]
async fn pods_go_to_the_least_loaded_ready_schedulable_node() {
    let sb = five_nodes().await;
    // node-1 already runs two pods.
    bare_pod(&sb, "pinned-1", json!({"nodeName": "node-1"}));
    bare_pod(&sb, "pinned-2", json!({"nodeName": "node-1"}));
    sb.add_workload("shop", "web", 7, None, 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(20)).await);
    // Least loaded first, ties to the first name: node-2 and node-3 catch up with node-1, then
    // one more each.
    let want: BTreeMap<String, usize> = [("node-1", 3), ("node-2", 3), ("node-3", 3)]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    assert_eq!(load(&sb), want);
}

#[tokio::test]
async fn node_selectors_cordons_and_readiness() {
    let sb = five_nodes().await;
    // Zone b: node-4 is cordoned, so node-3.
    bare_pod(
        &sb,
        "in-b",
        json!({"nodeSelector": {"topology.kubernetes.io/zone": "b"}}),
    );
    // Only node-4 fits, and it is cordoned; only node-5 fits, and it is not Ready.
    bare_pod(
        &sb,
        "on-4",
        json!({"nodeSelector": {"kubernetes.io/hostname": "node-4"}}),
    );
    bare_pod(
        &sb,
        "on-5",
        json!({"nodeSelector": {"kubernetes.io/hostname": "node-5"}}),
    );
    // Bound by hand to a node that is not Ready: it does not start.
    bare_pod(&sb, "bound-5", json!({"nodeName": "node-5"}));
    assert!(eventually(10, || phase(&pod(&sb, "in-b")) == "Running").await);
    assert_eq!(node_of(&pod(&sb, "in-b")).as_deref(), Some("node-3"));
    // Other changes, none of which makes room for on-4 or on-5.
    modify_node(&sb, "node-3", |v| {
        v["metadata"]["labels"]["extra"] = json!("x")
    });
    bare_pod(&sb, "anywhere", json!({}));
    assert!(eventually(10, || phase(&pod(&sb, "anywhere")) == "Running").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in ["on-4", "on-5"] {
        assert_eq!(node_of(&pod(&sb, p)), None, "{p} stays unbound");
    }
    assert_eq!(phase(&pod(&sb, "bound-5")), "Pending");

    // Uncordoned: on-4 is placed and starts.
    modify_node(&sb, "node-4", |v| {
        v["spec"].as_object_mut().unwrap().remove("unschedulable");
    });
    assert!(eventually(10, || phase(&pod(&sb, "on-4")) == "Running").await);
    assert_eq!(node_of(&pod(&sb, "on-4")).as_deref(), Some("node-4"));
    assert_eq!(node_of(&pod(&sb, "on-5")), None);

    // Ready: on-5 is placed, and both pods on node-5 start.
    set_ready(&sb, "node-5", true);
    assert!(
        eventually(10, || {
            phase(&pod(&sb, "on-5")) == "Running" && phase(&pod(&sb, "bound-5")) == "Running"
        })
        .await
    );
    assert_eq!(node_of(&pod(&sb, "on-5")).as_deref(), Some("node-5"));

    // A pod that fits nowhere yet is placed when a node gets the label it selects.
    bare_pod(&sb, "gpu", json!({"nodeSelector": {"gpu": "true"}}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node_of(&pod(&sb, "gpu")), None);
    modify_node(&sb, "node-2", |v| {
        v["metadata"]["labels"]["gpu"] = json!("true")
    });
    assert!(eventually(10, || phase(&pod(&sb, "gpu")) == "Running").await);
    assert_eq!(node_of(&pod(&sb, "gpu")).as_deref(), Some("node-2"));
}

#[tokio::test]
async fn daemonsets_follow_nodes_and_their_labels() {
    let sb = five_nodes().await;
    sb.create(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": {"topology.kubernetes.io/zone": "a"}, "containers": [{"name": "a", "image": "agent"}]},
            },
        },
    }))
    .unwrap();
    let on = |sb: &Sandbox| -> Vec<String> {
        let st = sb.store().lock();
        let mut v: Vec<String> = st
            .iter(pods(), Some("kube-system"))
            .filter_map(|(_, p)| node_of(p))
            .collect();
        v.sort();
        v
    };
    let desired = |sb: &Sandbox| {
        sb.store()
            .lock()
            .get(daemonsets(), "kube-system", "agent")
            .and_then(|d| d.pointer("/status/desiredNumberScheduled").cloned())
    };
    // Zone a, cordoned or not Ready included.
    assert!(eventually(10, || on(&sb) == ["node-1", "node-2", "node-5"]).await);
    // A node that joins zone a gets one; annotations alone change nothing.
    modify_node(&sb, "node-3", |v| {
        v["metadata"]["labels"]["topology.kubernetes.io/zone"] = json!("a")
    });
    modify_node(&sb, "node-1", |v| {
        v["metadata"]["annotations"]["x"] = json!("y")
    });
    assert!(eventually(10, || on(&sb) == ["node-1", "node-2", "node-3", "node-5"]).await);
    assert!(eventually(10, || desired(&sb) == Some(json!(4))).await);
    // A new node gets one; a deleted node's pod goes.
    sb.add_node("node-6", &[("topology.kubernetes.io/zone", "a")])
        .unwrap();
    sb.store().lock().remove(nodes(), "", "node-2").unwrap();
    assert!(eventually(10, || on(&sb) == ["node-1", "node-3", "node-5", "node-6"]).await);
    // A deleted DaemonSet pod is replaced.
    let victim = {
        let st = sb.store().lock();
        st.pods_on_node("node-1")
            .map(|((_, n), _)| n.clone())
            .next()
            .unwrap()
    };
    sb.store()
        .lock()
        .remove(pods(), "kube-system", &victim)
        .unwrap();
    assert!(
        eventually(10, || {
            let st = sb.store().lock();
            st.pods_on_node("node-1").any(|((_, n), _)| *n != victim)
        })
        .await
    );
    assert!(eventually(10, || on(&sb) == ["node-1", "node-3", "node-5", "node-6"]).await);
}

#[tokio::test]
async fn pdb_status_follows_its_pods_and_their_controllers_scale() {
    let sb = sandbox(2).await;
    sb.add_workload("shop", "web", 3, Some(1), 1).unwrap();
    sb.add_workload("shop", "api", 2, Some(1), 1).unwrap();
    let status = |name: &str| {
        let p = sb.store().lock().get(pdbs(), "shop", name).unwrap();
        (
            p.pointer("/status/expectedPods").cloned(),
            p.pointer("/status/currentHealthy").cloned(),
            p.pointer("/status/disruptionsAllowed").cloned(),
        )
    };
    let is = |e: i64, h: i64, a: i64| (Some(json!(e)), Some(json!(h)), Some(json!(a)));
    assert!(
        eventually(10, || status("web") == is(3, 3, 1)
            && status("api") == is(2, 2, 1))
        .await
    );
    // Scaled up: expected follows at once, healthy once the new pods run.
    let deployments = resources::find("apps", "v1", "deployments").unwrap();
    sb.store()
        .lock()
        .modify(deployments, "shop", "web", |v| {
            v["spec"]["replicas"] = json!(5);
            Ok(())
        })
        .unwrap();
    assert!(eventually(10, || status("web") == is(5, 5, 1)).await);
    assert_eq!(status("api"), is(2, 2, 1));
    // A running pod without a controller counts once; relabelled out of the selector, it
    // leaves the budget.
    sb.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray", "namespace": "shop", "labels": {"app": "api"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap();
    assert!(eventually(10, || status("api") == is(3, 3, 1)).await);
    sb.store()
        .lock()
        .modify(pods(), "shop", "stray", |v| {
            v["metadata"]["labels"] = json!({"app": "debug"});
            Ok(())
        })
        .unwrap();
    assert!(eventually(10, || status("api") == is(2, 2, 1)).await);
    assert_eq!(status("web"), is(5, 5, 1));
}
