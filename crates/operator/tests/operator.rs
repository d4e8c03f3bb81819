//! The operator alone against the sandbox, with nodes annotated by hand (as
//! agents or admins would): capacity, hooks, windows, malformed values and
//! leader election.

mod common;

use std::time::Duration;

use common::*;
use protocol::keys;
use protocol::operator::OperatorConfig;
use protocol::window::RebootWindow;

const OK: Option<&str> = Some("true");

async fn granted_nodes(client: &kube::Client) -> Vec<String> {
    let mut v: Vec<String> = all_nodes(client)
        .await
        .iter()
        .filter(|n| granted(n))
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_at_most_max_and_refills_as_nodes_come_back() {
    let sb = sandbox().await;
    let names = ["n1", "n2", "n3", "n4", "n5"];
    for n in names {
        sb.add_node(n, &[]).unwrap();
    }
    let admin = sb.client_as("admin").unwrap();
    let monitor = Monitor::start(sb.client_as("monitor").unwrap(), &[]).await;
    let op = Replica::start(&sb, "operator", op_config(2));
    for n in names {
        mark_reboot_needed(&admin, n).await;
    }
    let mut done: Vec<String> = Vec::new();
    while done.len() < names.len() {
        let now = wait_for("a grant", PATIENCE, || async {
            let g = granted_nodes(&admin).await;
            let pending = names.len() - done.len();
            (g.len() == pending.min(2)).then_some(g)
        })
        .await;
        // Nothing more is granted while both slots are taken.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(granted_nodes(&admin).await, now);
        // The first granted node "reboots" and comes back.
        let n = now[0].clone();
        let node = get_node(&admin, &n).await;
        assert!(annotation(&node, keys::GRANTED_AT).is_some());
        annotate(&admin, &n, &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
        mark_rebooted(&admin, &n).await;
        wait_for("the slot to be released", PATIENCE, || async {
            let node = get_node(&admin, &n).await;
            (annotation(&node, keys::REBOOT_OK) == Some("false")).then_some(())
        })
        .await;
        done.push(n);
    }
    let peaks = monitor.peaks();
    assert!(peaks.granted <= 2, "{peaks:?}");
    assert!(peaks.slot_holders <= 2, "{peaks:?}");
    // Only merge patches, never full updates, of nodes.
    let verbs: Vec<_> = sb
        .audit()
        .entries()
        .into_iter()
        .filter(|e| e.user == "operator" && e.resource == "nodes")
        .map(|e| e.verb)
        .collect();
    assert!(verbs.contains(&"patch".to_string()), "{verbs:?}");
    assert!(!verbs.contains(&"update".to_string()), "{verbs:?}");
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_gate_grant_and_release() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    sb.add_node("n2", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let before = "example.com/before-ok";
    let after = "example.com/after-ok";
    let op = Replica::start(
        &sb,
        "operator",
        OperatorConfig {
            before_reboot_annotations: vec![before.into()],
            after_reboot_annotations: vec![after.into()],
            ..op_config(1)
        },
    );
    // A stale hook annotation is cleared when the node is picked.
    annotate(&admin, "n1", &[(before, OK)]).await;
    mark_reboot_needed(&admin, "n1").await;
    wait_for("before-reboot label on n1", PATIENCE, || async {
        let n = get_node(&admin, "n1").await;
        (label(&n, keys::BEFORE_REBOOT) == OK && annotation(&n, before).is_none()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !granted(&get_node(&admin, "n1").await),
        "granted before the hook"
    );

    annotate(&admin, "n1", &[(before, OK)]).await;
    wait_for("reboot-ok on n1", PATIENCE, || async {
        let n = get_node(&admin, "n1").await;
        (granted(&n)
            && label(&n, keys::BEFORE_REBOOT).is_none()
            && annotation(&n, before).is_none())
        .then_some(())
    })
    .await;

    // n1 reboots and comes back; n2 wants a reboot meanwhile (max 1).
    annotate(&admin, "n1", &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    mark_reboot_needed(&admin, "n2").await;
    mark_rebooted(&admin, "n1").await;
    wait_for("after-reboot label on n1", PATIENCE, || async {
        let n = get_node(&admin, "n1").await;
        (label(&n, keys::AFTER_REBOOT) == OK).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n1 = get_node(&admin, "n1").await;
    assert!(
        granted(&n1),
        "the slot is held until the after-hook is done"
    );
    let n2 = get_node(&admin, "n2").await;
    assert!(label(&n2, keys::BEFORE_REBOOT).is_none() && !granted(&n2));

    annotate(&admin, "n1", &[(after, OK)]).await;
    wait_for("n1 released", PATIENCE, || async {
        let n = get_node(&admin, "n1").await;
        (annotation(&n, keys::REBOOT_OK) == Some("false")
            && label(&n, keys::AFTER_REBOOT).is_none()
            && annotation(&n, after).is_none())
        .then_some(())
    })
    .await;
    wait_for("before-reboot label on n2", PATIENCE, || async {
        let n = get_node(&admin, "n2").await;
        (label(&n, keys::BEFORE_REBOOT) == OK).then_some(())
    })
    .await;
    op.stop().await.unwrap();
}

fn hhmm(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%H:%M").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_window_grants_nothing_open_window_grants() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    let now = chrono::Utc::now();
    let closed = RebootWindow::parse(&hhmm(now + chrono::TimeDelta::hours(2)), "1h").unwrap();
    let op = Replica::start(
        &sb,
        "operator",
        OperatorConfig {
            window: Some(closed),
            ..op_config(2)
        },
    );
    wait_for_leader(&admin, "operator", PATIENCE).await;
    for n in ["n1", "n2"] {
        mark_reboot_needed(&admin, n).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in all_nodes(&admin).await {
        assert!(!granted(&n), "granted outside the window");
        assert!(label(&n, keys::BEFORE_REBOOT).is_none());
    }
    op.stop().await.unwrap();

    let open = RebootWindow::parse(&hhmm(now - chrono::TimeDelta::minutes(30)), "2h").unwrap();
    let op = Replica::start(
        &sb,
        "operator-2",
        OperatorConfig {
            window: Some(open),
            ..op_config(2)
        },
    );
    wait_for("grants inside the window", PATIENCE, || async {
        (granted_nodes(&admin).await.len() == 2).then_some(())
    })
    .await;
    let n1 = get_node(&admin, "n1").await;
    let expires = annotation(&n1, keys::GRANT_EXPIRES).expect("grant-expires set");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    assert!(expires > now && expires <= now + chrono::TimeDelta::hours(2));
    op.stop().await.unwrap();
}

/// Captures log lines of this test process.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_annotation_is_left_alone_and_logged_once() {
    let logs = Captured::default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(logs.clone())
        .try_init();
    let sb = sandbox::Sandbox::start(sandbox::Options::default())
        .await
        .unwrap();
    for n in ["n1", "n2", "n3"] {
        sb.add_node(n, &[]).unwrap();
    }
    let admin = sb.client_as("admin").unwrap();
    annotate(&admin, "n1", &[(keys::REBOOT_OK, Some("yes"))]).await;
    let op = Replica::start(&sb, "operator", op_config(3));
    for n in ["n1", "n2", "n3"] {
        mark_reboot_needed(&admin, n).await;
    }
    wait_for("n2 and n3 granted", PATIENCE, || async {
        (granted_nodes(&admin).await == ["n2", "n3"]).then_some(())
    })
    .await;
    // More events on n1: still no action, no repeated log line.
    for i in 0..5 {
        annotate(&admin, "n1", &[("example.com/poke", Some(&i.to_string()))]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n1 = get_node(&admin, "n1").await;
    assert_eq!(annotation(&n1, keys::REBOOT_OK), Some("yes"));
    assert!(annotation(&n1, keys::GRANTED_AT).is_none());
    assert!(label(&n1, keys::BEFORE_REBOOT).is_none());
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("malformed") && l.contains("n1"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("reboot-ok"),
        "{}",
        lines[0]
    );
    // Fixing it is noticed.
    annotate(&admin, "n1", &[(keys::REBOOT_OK, None)]).await;
    wait_for("the fix to be logged", PATIENCE, || async {
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        text.contains("well-formed again").then_some(())
    })
    .await;
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_standby_takes_over_on_shutdown() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    let a = Replica::start(&sb, "operator-a", op_config(1));
    wait_for_leader(&admin, "operator-a", PATIENCE).await;
    let b = Replica::start(&sb, "operator-b", op_config(1));
    mark_reboot_needed(&admin, "n1").await;
    mark_reboot_needed(&admin, "n2").await;
    wait_for("one grant", PATIENCE, || async {
        (granted_nodes(&admin).await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let patchers = users_with(&sb, "patch", "nodes");
    assert!(
        patchers.contains("operator-a") && !patchers.contains("operator-b"),
        "{patchers:?}"
    );
    // The standby only watches Nodes (whether any needs an operator): one list, one watch.
    let standby: Vec<_> = sb
        .audit()
        .entries()
        .into_iter()
        .filter(|e| e.user == "operator-b" && e.resource == "nodes")
        .map(|e| e.verb)
        .collect();
    assert!(
        standby.iter().all(|v| v == "list" || v == "watch"),
        "{standby:?}"
    );
    assert_eq!(lease_holder(&admin).await.as_deref(), Some("operator-a"));

    let first = granted_nodes(&admin).await[0].clone();
    let stopped = tokio::time::Instant::now();
    a.stop().await.unwrap();
    wait_for_leader(&admin, "operator-b", Duration::from_secs(5)).await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(3), "takeover took {took:?}");

    // The new leader continues: n1 comes back, the other node is granted.
    annotate(&admin, &first, &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    mark_rebooted(&admin, &first).await;
    wait_for("the other node granted by operator-b", PATIENCE, || async {
        let g = granted_nodes(&admin).await;
        (g.len() == 1 && g[0] != first).then_some(())
    })
    .await;
    assert!(users_with(&sb, "patch", "nodes").contains("operator-b"));
    b.stop().await.unwrap();
    assert_eq!(lease_holder(&admin).await, None, "released on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_after_its_lease_expires() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    sb.add_node("n2", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let a = Replica::start(&sb, "operator-a", op_config(1));
    wait_for_leader(&admin, "operator-a", PATIENCE).await;
    // A node holding a slot: a leader is needed, so the standby campaigns.
    mark_reboot_needed(&admin, "n1").await;
    wait_for("n1 granted by a", PATIENCE, || async {
        granted(&get_node(&admin, "n1").await).then_some(())
    })
    .await;
    let b = Replica::start(&sb, "operator-b", op_config(1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = tokio::time::Instant::now();
    a.kill();
    wait_for_leader(&admin, "operator-b", Duration::from_secs(10)).await;
    let took = killed.elapsed();
    // Not before the 3 s lease could have expired, and promptly after.
    assert!(
        took >= Duration::from_millis(2500),
        "took over too early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "took over too late: {took:?}"
    );
    annotate(&admin, "n1", &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    mark_rebooted(&admin, "n1").await;
    mark_reboot_needed(&admin, "n2").await;
    wait_for("n2 granted by b", PATIENCE, || async {
        granted(&get_node(&admin, "n2").await).then_some(())
    })
    .await;
    assert!(users_with(&sb, "patch", "nodes").contains("operator-b"));
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_stops_acting() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let a = Replica::start(&sb, "operator-a", op_config(1));
    wait_for_leader(&admin, "operator-a", PATIENCE).await;
    // Someone else takes the Lease (e.g. a partitioned replica's successor).
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(admin.clone(), NAMESPACE);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    leases
        .patch(
            operator::DEFAULT_LEASE_NAME,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "intruder", "leaseDurationSeconds": 3600,
                "renewTime": now, "acquireTime": now,
            }})),
        )
        .await
        .unwrap();
    // Within a renew period a notices and stops; then n1 asks for a reboot.
    tokio::time::sleep(Duration::from_secs(1)).await;
    mark_reboot_needed(&admin, "n1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !granted(&get_node(&admin, "n1").await),
        "acted without the lease"
    );
    assert_eq!(lease_holder(&admin).await.as_deref(), Some("intruder"));
    assert!(!a.handle.is_finished(), "a keeps standing by");
    a.stop().await.unwrap();
    assert_eq!(
        lease_holder(&admin).await.as_deref(),
        Some("intruder"),
        "not released by a non-holder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_back_off_and_other_nodes_proceed() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2", "n3"]).await;
    // Half of all node patches fail with 500 (the admin's too: retry those).
    sb.faults().set(sandbox::FaultPlan {
        errors: vec![sandbox::ErrorRule {
            verb: Some("patch".into()),
            resource: Some("nodes".into()),
            rate: 0.5,
            code: 500,
        }],
        ..Default::default()
    });
    let op = Replica::start(&sb, "operator", op_config(3));
    for n in ["n1", "n2", "n3"] {
        loop {
            let body =
                serde_json::json!({"metadata": {"annotations": {keys::REBOOT_NEEDED: "true"}}});
            let r = kube::Api::<k8s_openapi::api::core::v1::Node>::all(admin.clone())
                .patch(n, &Default::default(), &kube::api::Patch::Merge(&body))
                .await;
            if r.is_ok() {
                break;
            }
        }
    }
    wait_for(
        "all three granted despite errors",
        Duration::from_secs(30),
        || async { (granted_nodes(&admin).await.len() == 3).then_some(()) },
    )
    .await;
    sb.faults().set(Default::default());
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_acting_at_the_renew_deadline() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let a = Replica::start(&sb, "operator-a", op_config(1));
    wait_for_leader(&admin, "operator-a", PATIENCE).await;
    // Every write to the Lease fails from now on (node writes still work).
    sb.faults().set(sandbox::FaultPlan {
        errors: vec![sandbox::ErrorRule {
            verb: Some("update".into()),
            resource: Some("leases".into()),
            rate: 1.0,
            code: 500,
        }],
        ..Default::default()
    });
    // Past the 2 s renew deadline (well before the 3 s lease could expire
    // for anyone else), a must no longer act.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    mark_reboot_needed(&admin, "n1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !granted(&get_node(&admin, "n1").await),
        "acted without a renewed lease"
    );
    // The API recovers: a leads again and acts.
    sb.faults().set(Default::default());
    wait_for("n1 granted after recovery", PATIENCE, || async {
        granted(&get_node(&admin, "n1").await).then_some(())
    })
    .await;
    a.stop().await.unwrap();
}

/// The operator under deploy/'s RBAC as replica `identity`.
fn operator_sa(sb: &sandbox::Sandbox, identity: &str) -> Replica {
    let mut cfg = operator::Config::new(sandbox::identity::NAMESPACE, op_config(1));
    cfg.identity = identity.into();
    cfg.lease = fleet::fast_lease();
    Replica::start_as(sb, &sandbox::UserInfo::operator(), cfg).expect("operator starts")
}

/// deploy/'s Lease (in the operator's own namespace).
async fn shipped_lease(client: &kube::Client) -> k8s_openapi::api::coordination::v1::Lease {
    kube::Api::namespaced(client.clone(), sandbox::identity::NAMESPACE)
        .get(operator::DEFAULT_LEASE_NAME)
        .await
        .expect("the Lease")
}

async fn departed_on_lease(client: &kube::Client) -> Option<String> {
    shipped_lease(client)
        .await
        .metadata
        .annotations
        .and_then(|a| a.get(keys::DEPARTED_SLOTS).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_deleted_mid_reboot_keeps_its_slot_across_a_failover_until_it_is_back() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    let a = operator_sa(&sb, "operator-a");
    for n in ["n1", "n2"] {
        mark_reboot_needed(&admin, n).await;
    }
    let first = wait_for("a grant", PATIENCE, || async {
        let g = granted_nodes(&admin).await;
        (g.len() == 1).then(|| g[0].clone())
    })
    .await;
    let other = if first == "n1" { "n2" } else { "n1" };
    // It drains and goes down; then its Node is deleted (a cloud controller, an admin).
    annotate(&admin, &first, &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    set_ready(&admin, &first, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(admin.clone())
        .delete(&first, &Default::default())
        .await
        .expect("delete the node");
    let recorded = wait_for("the departed slot on the Lease", PATIENCE, || async {
        departed_on_lease(&admin).await
    })
    .await;
    assert!(recorded.contains(&format!("\"{first}\"")), "{recorded}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        granted_nodes(&admin).await.is_empty(),
        "the other node was granted while the deleted one may still be rebooting"
    );
    // The leader dies; the next one takes the record over from the Lease.
    a.kill();
    let b = operator_sa(&sb, "operator-b");
    wait_for("operator-b to lead", Duration::from_secs(10), || async {
        let spec = shipped_lease(&admin).await.spec?;
        (spec.holder_identity.as_deref() == Some("operator-b")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        granted_nodes(&admin).await.is_empty(),
        "granted after the failover"
    );
    // Its kubelet registers it again, without our marks, NotReady, then Ready.
    let fresh: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": first, "labels": {"kubernetes.io/hostname": first}},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]},
    }))
    .unwrap();
    kube::Api::all(admin.clone())
        .create(&Default::default(), &fresh)
        .await
        .expect("register the node again");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        granted_nodes(&admin).await.is_empty(),
        "granted before it was Ready"
    );
    set_ready(&admin, &first, true).await;
    wait_for("the other node granted", PATIENCE, || async {
        (granted_nodes(&admin).await == [other]).then_some(())
    })
    .await;
    wait_for("the record removed from the Lease", PATIENCE, || async {
        departed_on_lease(&admin).await.is_none().then_some(())
    })
    .await;
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_deleted_while_no_leader_watches_keeps_its_slot_from_the_recorded_holders() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    let a = operator_sa(&sb, "operator-a");
    mark_reboot_needed(&admin, "n1").await;
    wait_granted(&admin, "n1").await;
    // Recorded before its grant.
    let holders = shipped_lease(&admin)
        .await
        .metadata
        .annotations
        .and_then(|a| a.get(keys::SLOT_HOLDERS).cloned());
    assert_eq!(holders.as_deref(), Some(r#"{"n1":null}"#));
    annotate(&admin, "n1", &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    set_ready(&admin, "n1", false).await;
    // The leader dies; the Node is deleted before any other replica watches.
    a.kill();
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(admin.clone())
        .delete("n1", &Default::default())
        .await
        .expect("delete the node");
    mark_reboot_needed(&admin, "n2").await;
    let b = operator_sa(&sb, "operator-b");
    wait_for("operator-b to lead", Duration::from_secs(10), || async {
        let spec = shipped_lease(&admin).await.spec?;
        (spec.holder_identity.as_deref() == Some("operator-b")).then_some(())
    })
    .await;
    let recorded = wait_for("n1's departed slot on the Lease", PATIENCE, || async {
        departed_on_lease(&admin).await
    })
    .await;
    assert!(recorded.contains("\"n1\""), "{recorded}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        granted_nodes(&admin).await.is_empty(),
        "n2 was granted while the deleted n1 may still be rebooting"
    );
    // n1's kubelet registers it again, Ready: n2 may go.
    sb.add_node("n1", &[]).unwrap();
    wait_for("n2 granted", PATIENCE, || async {
        (granted_nodes(&admin).await == ["n2"]).then_some(())
    })
    .await;
    b.stop().await.unwrap();
}
