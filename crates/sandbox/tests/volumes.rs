//! Volumes attached to nodes as a CSI driver's are: VolumeAttachments and the Node's
//! `status.volumesInUse` follow the pods that mount a claim. Checked through kube-rs (get,
//! list, watch, eviction), the real kubectl and RBAC.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Kubectl, raw_with};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use sandbox::testing::wait_for;
use sandbox::{Options, Sandbox, UserInfo, authz::Mode};
use serde_json::{Value, json};
use tokio::time::Instant;

const ATTACH: Duration = Duration::from_millis(400);
const DETACH: Duration = Duration::from_millis(2000);
const WAIT: Duration = Duration::from_secs(10);

/// The names Kubernetes' CSI attacher gives, worked out apart from the sandbox:
/// `printf 'pv-shop-datasandbox.csi.k8s.ionode-1' | sha256sum`.
const DATA_ON_1: &str = "csi-6fee9f4dac6b1e884b8070f9da95f9ef47f2a8522afff5c1bc32bc073852b5ce";
const LOGS_ON_1: &str = "csi-559d82273aeb8dce8a20fd702b0fa4df696a8327f967270404dc0a8e92ddb40d";
const DATA_IN_USE: &str = "kubernetes.io/csi/sandbox.csi.k8s.io^pv-shop-data";
const LOGS_IN_USE: &str = "kubernetes.io/csi/sandbox.csi.k8s.io^pv-shop-logs";

fn options() -> Options {
    Options {
        pod_start: Duration::from_millis(50),
        volume_attach: ATTACH,
        volume_detach: DETACH,
        ..Default::default()
    }
}

async fn with_shop(opts: Options) -> Sandbox {
    let sb = common::sandbox_with(2, opts).await;
    sb.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}))
        .unwrap();
    sb
}

/// A pod bound to `node` that mounts `claims`, removed at once when deleted.
fn pod(name: &str, node: &str, claims: &[&str]) -> Pod {
    let volumes: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": 0, "volumes": volumes,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
        },
    }))
    .unwrap()
}

async fn in_use(client: &kube::Client, node: &str) -> Vec<String> {
    let n = Api::<Node>::all(client.clone()).get(node).await.unwrap();
    n.status.and_then(|s| s.volumes_in_use).unwrap_or_default()
}

fn is_attached(va: &VolumeAttachment) -> bool {
    va.status.as_ref().is_some_and(|s| s.attached)
}

async fn wait_running(pods: &Api<Pod>, name: &str) {
    wait_for(&format!("pod {name} running"), WAIT, || async {
        let p = pods.get(name).await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await
}

/// Every VolumeAttachment event of a watch from now on: (type, name, attached, being deleted).
async fn record(client: &kube::Client) -> Arc<Mutex<Vec<(String, String, bool, bool)>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l, vas) = (log.clone(), Api::<VolumeAttachment>::all(client.clone()));
    // From the list's resourceVersion: every later event, however late the watch opens.
    let rv = vas
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    tokio::spawn(async move {
        let mut events = vas
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        while let Some(Ok(ev)) = events.next().await {
            let (kind, va) = match ev {
                WatchEvent::Added(va) => ("ADDED", va),
                WatchEvent::Modified(va) => ("MODIFIED", va),
                WatchEvent::Deleted(va) => ("DELETED", va),
                _ => continue,
            };
            let name = va.metadata.name.clone().unwrap_or_default();
            let deleting = va.metadata.deletion_timestamp.is_some();
            l.lock()
                .unwrap()
                .push((kind.into(), name, is_attached(&va), deleting));
        }
    });
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_attached_in_use_and_detached_only_after_its_last_pod_is_gone() {
    let sb = with_shop(options()).await;
    let client = sb.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let vas: Api<VolumeAttachment> = Api::all(client.clone());
    let log = record(&client).await;

    let t0 = Instant::now();
    let pp = PostParams::default();
    pods.create(&pp, &pod("one", "node-1", &["data"]))
        .await
        .unwrap();
    let va = wait_for("data attached on node-1", WAIT, || async {
        vas.get_opt(DATA_ON_1).await.unwrap().filter(is_attached)
    })
    .await;
    assert!(
        t0.elapsed() >= ATTACH,
        "attached only after the attach delay"
    );
    assert_eq!(
        serde_json::to_value(&va.spec).unwrap(),
        json!({"attacher": "sandbox.csi.k8s.io", "nodeName": "node-1", "source": {"persistentVolumeName": "pv-shop-data"}})
    );
    assert_eq!(in_use(&client, "node-1").await, [DATA_IN_USE]);

    // A second pod with the same claim and another: one entry each, sorted, one
    // VolumeAttachment each.
    pods.create(&pp, &pod("two", "node-1", &["logs", "data"]))
        .await
        .unwrap();
    wait_for("logs attached on node-1", WAIT, || async {
        vas.get_opt(LOGS_ON_1).await.unwrap().filter(is_attached)
    })
    .await;
    assert_eq!(in_use(&client, "node-1").await, [DATA_IN_USE, LOGS_IN_USE]);

    // A pod without claims on node-2 runs with nothing attached there.
    pods.create(&pp, &pod("plain", "node-2", &[]))
        .await
        .unwrap();
    wait_running(&pods, "plain").await;
    assert!(in_use(&client, "node-2").await.is_empty());
    let all = vas.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2, "only node-1's two volumes: {all:?}");
    assert!(
        all.iter()
            .all(|va| va.spec.node_name == "node-1" && is_attached(va))
    );

    // The first pod goes; the second still uses both. A pod started after the deletion
    // proves the controllers have seen it (they handle events in order).
    pods.delete("one", &DeleteParams::default()).await.unwrap();
    pods.create(&pp, &pod("marker", "node-1", &[]))
        .await
        .unwrap();
    wait_running(&pods, "marker").await;
    assert!(pods.get_opt("one").await.unwrap().is_none());
    assert_eq!(in_use(&client, "node-1").await, [DATA_IN_USE, LOGS_IN_USE]);
    let data = vas.get(DATA_ON_1).await.unwrap();
    assert!(is_attached(&data) && data.metadata.deletion_timestamp.is_none());

    // The last pod goes: out of volumesInUse at once; attached until the detach delay.
    let deleted = Instant::now();
    pods.delete("two", &DeleteParams::default()).await.unwrap();
    wait_for("node-1's volumesInUse emptied", WAIT, || async {
        in_use(&client, "node-1").await.is_empty().then_some(())
    })
    .await;
    let both = vas.list(&ListParams::default()).await.unwrap().items;
    assert!(
        deleted.elapsed() < DETACH,
        "this machine is too slow for this test's detach delay"
    );
    assert_eq!(both.len(), 2, "still there before the detach delay");
    for va in &both {
        assert!(is_attached(va), "still attached: {va:?}");
        assert_eq!(
            va.metadata.finalizers.as_deref(),
            Some(&["external-attacher/sandbox-csi-k8s-io".to_string()][..])
        );
        assert!(va.metadata.deletion_timestamp.is_some(), "being deleted");
    }
    wait_for("node-1's VolumeAttachments gone", WAIT, || async {
        vas.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        deleted.elapsed() >= DETACH,
        "gone only after the detach delay"
    );

    // What a watcher saw of one of them, in order.
    let seen: Vec<(String, bool, bool)> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, name, _, _)| name == DATA_ON_1)
        .map(|(kind, _, attached, deleting)| (kind.clone(), *attached, *deleting))
        .collect();
    let ev = |k: &str, a, d| (k.to_string(), a, d);
    assert_eq!(
        seen,
        [
            ev("ADDED", false, false),
            ev("MODIFIED", true, false),
            ev("MODIFIED", true, true),
            ev("MODIFIED", false, true),
            ev("DELETED", false, true),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_shares_its_claim_across_nodes_and_eviction_detaches_it() {
    let sb = with_shop(options()).await;
    sb.add_workload_with_claim("shop", "db", 2, Some(1), 0, "data")
        .unwrap();
    assert!(sb.wait_pods_ready(WAIT).await);
    let client = sb.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let vas: Api<VolumeAttachment> = Api::all(client.clone());
    let on = |node: &'static str| {
        let vas = vas.clone();
        move || {
            let vas = vas.clone();
            async move {
                let all = vas.list(&ListParams::default()).await.ok()?.items;
                let mine: Vec<_> = all
                    .into_iter()
                    .filter(|va| va.spec.node_name == node)
                    .collect();
                (mine.len() == 1 && is_attached(&mine[0])).then(|| mine[0].clone())
            }
        }
    };
    // ReadWriteMany: each node has its own attachment of the one volume.
    let one = wait_for("attached on node-1", WAIT, on("node-1")).await;
    let two = wait_for("attached on node-2", WAIT, on("node-2")).await;
    assert_eq!(one.metadata.name.as_deref(), Some(DATA_ON_1));
    assert_ne!(one.metadata.name, two.metadata.name);
    assert_eq!(
        two.spec.source.persistent_volume_name.as_deref(),
        Some("pv-shop-data")
    );
    for n in ["node-1", "node-2"] {
        assert_eq!(in_use(&client, n).await, [DATA_IN_USE]);
    }
    // A writer of node status that drops the list does not have the last word: the kubelet does.
    let nodes: Api<Node> = Api::all(client.clone());
    let dropped = nodes
        .patch_status(
            "node-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"volumesInUse": null}})),
        )
        .await
        .unwrap();
    assert_eq!(dropped.status.unwrap().volumes_in_use, None);
    wait_for("node-2's volumesInUse restored", WAIT, || async {
        (in_use(&client, "node-2").await == [DATA_IN_USE]).then_some(())
    })
    .await;

    // Drain node-1: its pod is evicted and replaced on node-2.
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let victim = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let evicted = Instant::now();
    pods.evict(&victim, &EvictParams::default()).await.unwrap();
    wait_for("node-1's volumesInUse emptied", WAIT, || async {
        in_use(&client, "node-1").await.is_empty().then_some(())
    })
    .await;
    let still = vas.get(DATA_ON_1).await.unwrap();
    assert!(evicted.elapsed() < DETACH, "this machine is too slow");
    assert!(is_attached(&still) && still.metadata.deletion_timestamp.is_some());
    wait_for("node-1's attachment gone", WAIT, || async {
        vas.get_opt(DATA_ON_1)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(evicted.elapsed() >= DETACH);
    // Both pods on node-2 now: one entry there, and its attachment untouched.
    assert!(sb.wait_pods_ready(WAIT).await);
    let placed = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(
        placed
            .iter()
            .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some("node-2"))
    );
    assert_eq!(in_use(&client, "node-2").await, [DATA_IN_USE]);
    let kept = vas
        .get(two.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(kept.metadata.uid, two.metadata.uid);
    assert!(is_attached(&kept) && kept.metadata.deletion_timestamp.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_creates_and_explains_volume_attachments() {
    let sb = with_shop(options()).await;
    let client = sb.client();
    Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &pod("one", "node-1", &["data"]))
        .await
        .unwrap();
    let vas: Api<VolumeAttachment> = Api::all(client.clone());
    wait_for("attached", WAIT, || async {
        vas.get_opt(DATA_ON_1).await.unwrap().filter(is_attached)
    })
    .await;
    let k = Kubectl::new(&sb);

    let out = k.ok(&["get", "volumeattachments"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "ATTACHER", "PV", "NODE", "ATTACHED", "AGE"]
    );
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[1][..5],
        [
            DATA_ON_1,
            "sandbox.csi.k8s.io",
            "pv-shop-data",
            "node-1",
            "true"
        ]
    );

    let api = k.ok(&["api-resources", "--api-group=storage.k8s.io"]).await;
    let row: Vec<&str> = api.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "volumeattachments",
            "storage.k8s.io/v1",
            "false",
            "VolumeAttachment"
        ]
    );

    // By name, by field and label selector, as JSON.
    let one = k.json(&["get", "volumeattachment", DATA_ON_1]).await;
    assert_eq!(one["status"], json!({"attached": true}));
    let by_field = k
        .json(&[
            "get",
            "volumeattachments",
            "--field-selector",
            &format!("metadata.name={DATA_ON_1}"),
        ])
        .await;
    assert_eq!(by_field["items"].as_array().unwrap().len(), 1);
    let none = k
        .json(&["get", "volumeattachments", "-l", "app=nothing"])
        .await;
    assert_eq!(none["items"], json!([]));

    // kubectl create sends a built-in kind as protobuf; another driver's is left alone.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("va.yaml");
    std::fs::write(
        &file,
        "apiVersion: storage.k8s.io/v1\nkind: VolumeAttachment\nmetadata:\n  name: other\n  labels:\n    app: other\nspec:\n  attacher: other.csi.example.com\n  nodeName: node-2\n  source:\n    persistentVolumeName: pv-other\n",
    )
    .unwrap();
    k.ok(&["create", "-f", file.to_str().unwrap()]).await;
    let other = k
        .json(&["get", "volumeattachments", "-l", "app=other"])
        .await;
    assert_eq!(
        other["items"][0]["spec"],
        json!({"attacher": "other.csi.example.com", "nodeName": "node-2", "source": {"persistentVolumeName": "pv-other"}})
    );
    // Its status is its attacher's to write, through the status subresource.
    k.ok(&[
        "patch",
        "volumeattachment",
        "other",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"attached":true}}"#,
    ])
    .await;
    let out = k.ok(&["get", "volumeattachment", "other"]).await;
    assert!(
        out.lines().nth(1).unwrap().split_whitespace().nth(4) == Some("true"),
        "{out}"
    );
    k.ok(&["delete", "volumeattachment", "other"]).await;
    assert!(vas.get_opt("other").await.unwrap().is_none());
    assert!(in_use(&client, "node-2").await.is_empty());

    let explain = k.ok(&["explain", "volumeattachment.spec.attacher"]).await;
    assert!(
        explain.contains("attacher indicates the name of the volume driver"),
        "{explain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_decides_who_reads_volume_attachments() {
    let sb = with_shop(Options {
        authorization: Mode::Rbac,
        ..options()
    })
    .await;
    let nobody = UserInfo::service_account("shop", "nobody");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("nobody");
    sb.write_kubeconfig_for(&nobody, &kubeconfig).unwrap();
    let k = Kubectl::with_kubeconfig(&kubeconfig);
    let user = "system:serviceaccount:shop:nobody";

    let (ok, _, err) = k.run(&["get", "volumeattachments"]).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "Error from server (Forbidden): volumeattachments.storage.k8s.io is forbidden: User \"{user}\" cannot list resource \"volumeattachments\" in API group \"storage.k8s.io\" at the cluster scope"
        )
    );
    let token = sb.token(&nobody);
    let auth = format!("Bearer {token}");
    let (code, body) = raw_with(
        sb.addr(),
        "GET",
        &format!("/apis/storage.k8s.io/v1/volumeattachments/{DATA_ON_1}"),
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(code, 403);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], "Forbidden");
    assert_eq!(
        v["details"],
        json!({"name": DATA_ON_1, "group": "storage.k8s.io", "kind": "volumeattachments"})
    );

    // Granted read (what an agent waiting on detaches needs), it reads; writing stays refused.
    sb.create(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "read-attachments"},
        "rules": [{"apiGroups": ["storage.k8s.io"], "resources": ["volumeattachments"], "verbs": ["get", "list", "watch"]}],
    }))
    .unwrap();
    sb.create(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "read-attachments"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "read-attachments"},
        "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": "shop"}],
    }))
    .unwrap();
    Api::<Pod>::namespaced(sb.client(), "shop")
        .create(&PostParams::default(), &pod("one", "node-1", &["data"]))
        .await
        .unwrap();
    let reader: Api<VolumeAttachment> = Api::all(sb.client_for(&nobody).unwrap());
    wait_for("attached, as the reader sees it", WAIT, || async {
        reader.get_opt(DATA_ON_1).await.unwrap().filter(is_attached)
    })
    .await;
    let (ok, _, err) = k.run(&["delete", "volumeattachment", DATA_ON_1]).await;
    assert!(!ok);
    assert!(
        err.contains(&format!("User \"{user}\" cannot delete resource \"volumeattachments\" in API group \"storage.k8s.io\" at the cluster scope")),
        "{err}"
    );
}
