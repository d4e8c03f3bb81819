//! The leader renews its Lease with one update per retry period, and reads it
//! again only after someone else wrote it (a 409); it gives the Lease up when
//! no node needs an operator, and then no replica makes a request.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use protocol::keys;
use sandbox::Sandbox;
use serde_json::json;

/// (gets, updates) of Leases by `user` so far, from the sandbox's audit.
fn lease_requests(sb: &Sandbox, user: &str) -> (u64, u64) {
    let mut gets = 0;
    let mut updates = 0;
    for (e, n) in sb.audit().counts() {
        if e.user != user || e.resource != "leases" {
            continue;
        }
        match e.verb.as_str() {
            "get" => gets += n,
            "update" => updates += n,
            _ => {}
        }
    }
    (gets, updates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_are_single_updates_and_a_foreign_write_is_read_back() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let op = Replica::start(&sb, "operator", op_config(1));
    wait_for_leader(&admin, "operator", PATIENCE).await;

    // The fleet's replicas renew every 250 ms.
    let (gets, updates) = lease_requests(&sb, "operator");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (gets_after, updates_after) = lease_requests(&sb, "operator");
    assert!(
        updates_after - updates >= 6,
        "{} renewals in 3 s",
        updates_after - updates
    );
    assert_eq!(gets_after, gets, "renewals read the Lease");

    // An admin pauses the cluster on the Lease: the next renewal answers 409,
    // the leader reads the Lease again and renews it keeping the annotation.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    leases
        .patch(
            operator::DEFAULT_LEASE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {keys::PAUSED: "true"}}})),
        )
        .await
        .unwrap();
    let paused = leases.get(operator::DEFAULT_LEASE_NAME).await.unwrap();
    wait_for("a renewal after the admin's write", PATIENCE, || async {
        let l = leases.get(operator::DEFAULT_LEASE_NAME).await.unwrap();
        (l.metadata.resource_version != paused.metadata.resource_version).then_some(l)
    })
    .await;
    let (gets_now, _) = lease_requests(&sb, "operator");
    assert!(gets_now > gets_after, "the 409 was not followed by a read");
    let l = leases.get(operator::DEFAULT_LEASE_NAME).await.unwrap();
    assert_eq!(
        l.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::PAUSED))
            .map(String::as_str),
        Some("true"),
        "the renewal dropped the admin's annotation"
    );
    // The same single updates publish the operator's settings for fluoctl.
    let published = protocol::settings::from_annotations(l.metadata.annotations.as_ref())
        .unwrap()
        .expect("no operator-settings annotation on the Lease");
    assert_eq!(
        published.to_config().unwrap(),
        op_config(1),
        "{published:?}"
    );
    assert_eq!(lease_holder(&admin).await.as_deref(), Some("operator"));
    // And back to single updates.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (gets_before, _) = lease_requests(&sb, "operator");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lease_requests(&sb, "operator").0, gets_before);
    op.stop().await.unwrap();
}

/// All requests `user` made so far, from the sandbox's audit.
fn requests(sb: &Sandbox, user: &str) -> u64 {
    sb.audit()
        .counts()
        .into_iter()
        .filter(|(e, _)| e.user == user)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_has_no_leader_and_costs_no_requests() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    sb.add_node("n2", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let replica = |name: &str| {
        let mut cfg = operator::Config::new(NAMESPACE, op_config(1));
        cfg.identity = name.to_string();
        cfg.lease = fleet::fast_lease();
        cfg.release_lease_after_idle = Some(Duration::from_secs(1));
        Replica::start_with(&sb, name, cfg).unwrap()
    };
    let a = replica("operator-a");
    let b = replica("operator-b");
    // A new replica takes a look, finds nothing to do and gives the Lease up.
    wait_for_leader(&admin, "operator-a", PATIENCE).await;
    wait_for("the idle leader to release", PATIENCE, || async {
        lease_holder(&admin).await.is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = (requests(&sb, "operator-a"), requests(&sb, "operator-b"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        (requests(&sb, "operator-a"), requests(&sb, "operator-b")),
        before,
        "requests while idle"
    );

    // A node asks: one replica leads and grants it; once it is back and
    // released, the Lease is given up again.
    mark_reboot_needed(&admin, "n1").await;
    wait_granted(&admin, "n1").await;
    let leader = lease_holder(&admin)
        .await
        .expect("a leader while n1 holds a slot");
    assert!(leader == "operator-a" || leader == "operator-b", "{leader}");
    annotate(&admin, "n1", &[(keys::REBOOT_IN_PROGRESS, Some("true"))]).await;
    mark_rebooted(&admin, "n1").await;
    wait_for("n1 released", PATIENCE, || async {
        let n = get_node(&admin, "n1").await;
        (annotation(&n, keys::REBOOT_OK) == Some("false")
            && annotation(&n, keys::RELEASED_AT).is_some())
        .then_some(())
    })
    .await;
    wait_for("the Lease given up again", PATIENCE, || async {
        lease_holder(&admin).await.is_none().then_some(())
    })
    .await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
