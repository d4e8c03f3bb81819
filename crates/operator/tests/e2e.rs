//! End to end on the sandbox: the real operator and the real agent (one per
//! simulated node, restarted across reboots by `fleet::Fleet`), each as its own
//! service account under deploy/'s RBAC, which the sandbox enforces.

mod common;

use std::time::Duration;

use common::*;
use fleet::{Fleet, agent_config};
use protocol::keys;

const E2E_PATIENCE: Duration = Duration::from_secs(90);
const NEW_VERSION: &str = "4152.2.0";

/// Every node of `names` rebooted exactly once and is back to normal.
async fn wait_all_rebooted_once(sb: &sandbox::Sandbox, client: &kube::Client, names: &[&str]) {
    wait_for("every node rebooted and settled", E2E_PATIENCE, || async {
        for n in names {
            let host = sb.host(n).unwrap();
            if host.reboots() != 1 {
                return None;
            }
            let node = get_node(client, n).await;
            let v = protocol::k8s::node_view(&node);
            if v.holds_slot()
                || v.annotation(keys::REBOOT_NEEDED) != Some("false")
                || v.annotation(keys::REBOOT_OK) != Some("false")
                || !v.ready
            {
                return None;
            }
        }
        Some(())
    })
    .await;
}

async fn offer_updates(sb: &sandbox::Sandbox, names: &[&str]) {
    let offers: Vec<_> = names
        .iter()
        .map(|n| {
            let h = sb.host(n).unwrap();
            async move { h.offer_update(NEW_VERSION).await }
        })
        .collect();
    futures::future::join_all(offers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_of_five_nodes_two_at_a_time() {
    let sb = sandbox().await;
    let names = ["n1", "n2", "n3", "n4", "n5"];
    for n in names {
        sb.add_node(n, &[]).unwrap();
    }
    sb.add_workload("default", "web", 6, Some(2), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(30)).await);
    let admin = sb.client_as("admin").unwrap();
    // An admin cordoned n5 beforehand: it must stay cordoned.
    patch_node(
        &admin,
        "n5",
        serde_json::json!({"spec": {"unschedulable": true}}),
    )
    .await;
    let monitor = Monitor::start(sb.client_as("monitor").unwrap(), &["n5"]).await;
    let fleet = Fleet::start(&sb, &names, agent_config);
    let op = start_operator_sa(&sb, op_config(2));
    offer_updates(&sb, &names).await;

    wait_all_rebooted_once(&sb, &admin, &names).await;
    // Nothing else happens afterwards.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peaks = monitor.peaks();
    for n in names {
        let host = sb.host(n).unwrap();
        assert_eq!(host.reboots(), 1, "{n} rebooted {} times", host.reboots());
        assert_eq!(host.os_version(), NEW_VERSION);
        let ids = &peaks.boot_ids[n];
        assert_eq!(ids.len(), 2, "{n}: boot IDs {ids:?}");
        let node = get_node(&admin, n).await;
        assert_eq!(boot_id(&node), ids[1]);
        assert_eq!(unschedulable(&node), n == "n5", "{n} cordon state");
        assert_eq!(label(&node, keys::LABEL_VERSION), Some(NEW_VERSION), "{n}");
    }
    assert!(peaks.disrupted <= 2, "{peaks:#?}");
    assert!(peaks.slot_holders <= 2, "{peaks:#?}");
    assert_eq!(peaks.granted, 2, "two nodes at a time: {peaks:#?}");
    assert!(fleet.crashed().is_empty(), "{:?}", fleet.crashed());
    op.stop().await.unwrap();
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_annotate_reboot_needed_drains_and_reboots_the_node() {
    let sb = sandbox().await;
    for n in ["n1", "n2"] {
        sb.add_node(n, &[]).unwrap();
    }
    sb.add_workload("default", "web", 4, Some(1), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(30)).await);
    let admin = sb.client_as("admin").unwrap();
    let fleet = Fleet::start(&sb, &["n1", "n2"], agent_config);
    let op = start_operator_sa(&sb, op_config(1));
    // The agents have settled their nodes (reboot-needed=false) before the admin acts.
    wait_for("agents to initialise their nodes", E2E_PATIENCE, || async {
        let n = get_node(&admin, "n1").await;
        (annotation(&n, keys::REBOOT_NEEDED) == Some("false")).then_some(())
    })
    .await;
    let cache = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("kubectl")
        .arg("--cache-dir")
        .arg(cache.path())
        .args([
            "annotate",
            "node",
            "n1",
            "--overwrite",
            "flatcar-linux-update.v1.flatcar-linux.net/reboot-needed=true",
        ])
        // The admin's kubeconfig: kubectl sends credentials only over HTTPS.
        .env("KUBECONFIG", sb.kubeconfig_path())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("kubectl in time")
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n1 = sb.host("n1").unwrap();
    wait_for("n1 to reboot", E2E_PATIENCE, || async {
        (n1.reboots() == 1).then_some(())
    })
    .await;
    wait_for("n1 to settle", E2E_PATIENCE, || async {
        let n = get_node(&admin, "n1").await;
        let v = protocol::k8s::node_view(&n);
        (!v.holds_slot() && !v.unschedulable && v.ready).then_some(())
    })
    .await;
    // It was drained through the Eviction API by its agent (the agents share a service
    // account; their tokens' node-name extra tells them apart).
    assert!(sb.audit().entries().iter().any(|e| e.verb == "create"
        && e.resource == "pods/eviction"
        && e.user == sandbox::UserInfo::agent("n1").username
        && e.node == "n1"));
    assert_eq!(sb.host("n2").unwrap().reboots(), 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(n1.reboots(), 1);
    op.stop().await.unwrap();
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_finishes_the_rollout_when_the_leader_is_killed() {
    let sb = sandbox().await;
    let names = ["n1", "n2", "n3", "n4", "n5"];
    for n in names {
        sb.add_node(n, &[]).unwrap();
    }
    sb.add_workload("default", "web", 6, Some(2), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(30)).await);
    let admin = sb.client_as("admin").unwrap();
    let monitor = Monitor::start(sb.client_as("monitor").unwrap(), &[]).await;
    let fleet = Fleet::start(&sb, &names, agent_config);
    let a = Replica::start(&sb, "operator-a", op_config(2));
    wait_for_leader(&admin, "operator-a", PATIENCE).await;
    let b = Replica::start(&sb, "operator-b", op_config(2));
    offer_updates(&sb, &names).await;
    // Mid-rollout: some node has rebooted, others are still waiting.
    wait_for("the rollout to be under way", E2E_PATIENCE, || async {
        let total: u32 = names.iter().map(|n| sb.host(n).unwrap().reboots()).sum();
        (total >= 1).then_some(())
    })
    .await;
    let done_by_a: u32 = names.iter().map(|n| sb.host(n).unwrap().reboots()).sum();
    assert!(
        done_by_a < 5,
        "the rollout finished before the leader was killed"
    );
    a.kill();
    wait_for_leader(&admin, "operator-b", Duration::from_secs(15)).await;
    wait_all_rebooted_once(&sb, &admin, &names).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peaks = monitor.peaks();
    for n in names {
        assert_eq!(sb.host(n).unwrap().reboots(), 1, "{n}");
        assert_eq!(peaks.boot_ids[n].len(), 2, "{n}: {:?}", peaks.boot_ids[n]);
        assert!(
            !unschedulable(&get_node(&admin, n).await),
            "{n} left cordoned"
        );
    }
    assert!(peaks.disrupted <= 2, "{peaks:#?}");
    assert!(peaks.slot_holders <= 2, "{peaks:#?}");
    assert!(users_with(&sb, "patch", "nodes").contains("operator-b"));
    b.stop().await.unwrap();
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_drain_and_restarted_does_not_count_as_rebooted() {
    let sb = sandbox().await;
    for n in ["n1", "n2"] {
        sb.add_node(n, &[]).unwrap();
    }
    // Pods with a 3 s grace period make the drain take a while.
    sb.add_workload("default", "slow", 4, Some(1), 3).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(30)).await);
    let admin = sb.client_as("admin").unwrap();
    let monitor = Monitor::start(sb.client_as("monitor").unwrap(), &[]).await;
    let fleet = Fleet::start(&sb, &["n1", "n2"], agent_config);
    let op = start_operator_sa(&sb, op_config(1));
    sb.host("n1").unwrap().offer_update(NEW_VERSION).await;
    wait_for("n1's drain to start", E2E_PATIENCE, || async {
        let n = get_node(&admin, "n1").await;
        (annotation(&n, keys::REBOOT_IN_PROGRESS) == Some("true") && unschedulable(&n))
            .then_some(())
    })
    .await;
    assert_eq!(
        sb.host("n1").unwrap().reboots(),
        0,
        "drain should still be running"
    );
    fleet.kill("n1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = get_node(&admin, "n1").await;
    assert!(
        unschedulable(&n) && granted(&n),
        "nothing is released while the agent is down"
    );
    fleet.restart("n1");
    wait_all_rebooted_once(&sb, &admin, &["n1"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peaks = monitor.peaks();
    assert_eq!(sb.host("n1").unwrap().reboots(), 1);
    assert_eq!(peaks.boot_ids["n1"].len(), 2, "{:?}", peaks.boot_ids["n1"]);
    assert!(!unschedulable(&get_node(&admin, "n1").await));
    assert_eq!(sb.host("n2").unwrap().reboots(), 0);
    op.stop().await.unwrap();
    fleet.stop().await;
}
