//! Pools (deploy/pools): two operators with disjoint `--node-selector`s and their own Lease,
//! each with its own maximum, run with the flags `kubectl kustomize deploy/pools` renders, as
//! the operators' service account under the overlay's RBAC and the shipped admission policy.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use protocol::keys;
use serde_json::{Value, json};

const OK: Option<&str> = Some("true");
const POOL: &str = "example.com/pool";

/// deploy/pools rendered by the real kubectl.
fn rendered() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/pools");
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .output()
        .expect("kubectl (installed on every machine) runs");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/pools: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect()
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in deploy/pools"))
}

/// The operator config a Deployment's container args give, through the real flag parser.
/// Its reboot window (weekend nights) is dropped so the test does not depend on the day, and
/// metrics are off (both would listen on :8080).
fn config(docs: &[Value], deployment: &str, identity: &str) -> operator::Config {
    let args = object(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
        ["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .filter(|a| !a.starts_with("--reboot-window="));
    let argv = [
        "update-operator".to_string(),
        format!("--namespace={}", sandbox::identity::NAMESPACE),
    ]
    .into_iter()
    .chain(args);
    let mut cfg = operator::cli::parse(argv)
        .unwrap_or_else(|e| panic!("{deployment}'s flags: {e:?}"))
        .config;
    cfg.metrics_address = None;
    cfg.identity = identity.into();
    cfg.lease = fleet::fast_lease();
    cfg
}

fn pool_of(n: &Node) -> &'static str {
    if label(n, POOL) == Some("gpu") {
        "gpu"
    } else {
        "default"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_each_within_its_own_maximum() {
    let docs = rendered();
    let sb = sandbox().await;
    let admin = sb.client_as("admin").unwrap();
    // The overlay's Role: the operators may lead through both Leases.
    let role = object(&docs, "Role", "flatcar-linux-update-operator");
    let roles: Api<k8s_openapi::api::rbac::v1::Role> =
        Api::namespaced(admin.clone(), sandbox::identity::NAMESPACE);
    roles
        .patch(
            "flatcar-linux-update-operator",
            &Default::default(),
            &kube::api::Patch::Merge(&json!({"rules": role["rules"]})),
        )
        .await
        .expect("the overlay's Role applies");
    for i in 1..=3 {
        sb.add_node(&format!("node-{i}"), &[]).unwrap();
        sb.add_node(&format!("gpu-{i}"), &[(POOL, "gpu")]).unwrap();
    }
    let default = config(&docs, "flatcar-linux-update-operator", "default-pool");
    let gpu = config(&docs, "flatcar-linux-update-operator-gpu", "gpu-pool");
    let max: BTreeMap<&str, usize> = [
        ("default", default.operator.max_rebooting.resolve(3)),
        ("gpu", gpu.operator.max_rebooting.resolve(3)),
    ]
    .into();
    assert_eq!(
        max,
        [("default", 1), ("gpu", 2)].into(),
        "the overlay's limits"
    );
    let ops = [
        Replica::start_as(&sb, &sandbox::UserInfo::operator(), default).unwrap(),
        Replica::start_as(&sb, &sandbox::UserInfo::operator(), gpu).unwrap(),
    ];
    let names: Vec<String> = (1..=3)
        .flat_map(|i| [format!("node-{i}"), format!("gpu-{i}")])
        .collect();
    for n in &names {
        mark_reboot_needed(&admin, n).await;
    }
    // Both pools take their maximum at once, side by side.
    wait_for("both pools at their maximum", PATIENCE, || async {
        let nodes = all_nodes(&admin).await;
        let held = |pool| {
            nodes
                .iter()
                .filter(|n| granted(n) && pool_of(n) == pool)
                .count()
        };
        (held("default") == 1 && held("gpu") == 2).then_some(())
    })
    .await;
    // Reboot each granted node by hand until every node is done; never more holders in a
    // pool than its maximum.
    let mut rebooted: BTreeMap<String, bool> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let nodes = all_nodes(&admin).await;
        let mut held: BTreeMap<&str, usize> = BTreeMap::new();
        for n in nodes.iter().filter(|n| granted(n)) {
            *held.entry(pool_of(n)).or_default() += 1;
        }
        for (pool, h) in &held {
            assert!(*h <= max[pool], "{pool}: {h} holders, max {}", max[pool]);
        }
        for n in nodes.iter().filter(|n| granted(n)) {
            let name = n.metadata.name.clone().unwrap_or_default();
            if rebooted.insert(name.clone(), true).is_none() {
                annotate(&admin, &name, &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
                mark_rebooted(&admin, &name).await;
            }
        }
        let done = nodes
            .iter()
            .all(|n| !granted(n) && annotation(n, keys::REBOOT_NEEDED) == Some("false"));
        if done && rebooted.len() == names.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pools did not roll out in 90 s; rebooted: {rebooted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each operator led through its own Lease.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), sandbox::identity::NAMESPACE);
    for name in [
        "flatcar-linux-update-operator-lock",
        "flatcar-linux-update-operator-lock-gpu",
    ] {
        let l = leases.get(name).await.expect("the pool's Lease");
        assert!(l.spec.is_some(), "{name}");
    }
    for op in ops {
        op.stop().await.unwrap();
    }
}
