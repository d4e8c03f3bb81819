//! The agent against the sandbox (a real Kubernetes API over HTTP with simulated kubelets
//! and hosts), with the test acting as the operator.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use agent::{AgentConfig, DrainTimeoutAction};
use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use protocol::keys;
use protocol::update_engine::UPDATE_STATUS_UPDATED_NEED_REBOOT;
use sandbox::{ErrorRule, NodeLifecycle, Sandbox};
use serde_json::json;

const NEW_VERSION: &str = "4081.3.0";

/// Three nodes; `node-1` is the one under test.
async fn cluster() -> Sandbox {
    let sb = sandbox().await;
    for n in ["node-1", "node-2", "node-3"] {
        sb.add_node(n, &[]).expect("add node");
    }
    sb
}

/// [`cluster`] running `app`: 3 Ready pods (1 s grace period) under a PodDisruptionBudget
/// allowing `max_unavailable`.
async fn cluster_running(app: &str, max_unavailable: u32) -> (Sandbox, Client) {
    let sb = cluster().await;
    let client = sb.client();
    sb.add_workload("default", app, 3, Some(max_unavailable), 1)
        .unwrap();
    wait_ready_pods(&client, &format!("app={app}"), 3).await;
    (sb, client)
}

/// Starts node-1's machine and agent and makes an update there need a reboot. Returns the
/// machine and the node as the agent first annotated it.
async fn start_needing_reboot(sb: &Sandbox, cfg: AgentConfig) -> (Machine, Node) {
    let client = sb.client();
    let machine = Machine::start(sb, "node-1", cfg);
    let started = wait_node(&client, "node-1", "agent started", |n| {
        annotation(n, keys::STATUS).is_some()
    })
    .await;
    machine.host().offer_update(NEW_VERSION).await;
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    (machine, started)
}

/// The lowest number of Ready, non-terminating pods of `app` seen at any event.
fn watch_min_available(
    client: &Client,
    app: &str,
) -> (Arc<AtomicI64>, tokio::task::JoinHandle<()>) {
    let min = Arc::new(AtomicI64::new(i64::MAX));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cfg = watcher::Config::default().labels(&format!("app={app}"));
    let task = tokio::spawn({
        let min = min.clone();
        async move {
            let mut healthy: HashMap<String, bool> = HashMap::new();
            let mut stream = watcher(pods, cfg).default_backoff().boxed();
            let mut listed = false;
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let ok = |p: &Pod| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                };
                match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        healthy.insert(p.uid().unwrap_or_default(), ok(&p));
                    }
                    watcher::Event::Delete(p) => {
                        healthy.remove(&p.uid().unwrap_or_default());
                    }
                    watcher::Event::Init => healthy.clear(),
                    watcher::Event::InitDone => listed = true,
                }
                if listed {
                    let n = healthy.values().filter(|h| **h).count() as i64;
                    min.fetch_min(n, Ordering::SeqCst);
                }
            }
        }
    });
    (min, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_grant_pdb_respecting_drain_reboot_and_return() {
    init_logging();
    let sb = cluster().await;
    let client = sb.client();
    // Two replicas per node; at most one may be unavailable.
    sb.add_workload("default", "web", 6, Some(1), 1).unwrap();
    wait_ready_pods(&client, "app=web", 6).await;
    assert_eq!(pods_on(&client, "node-1").await.len(), 2);
    let (min_available, monitor) = watch_min_available(&client, "web");

    let machine = Machine::start(&sb, "node-1", config("node-1", Duration::from_secs(30)));
    let host = machine.host().clone();
    let n = wait_node(&client, "node-1", "status annotations and labels", |n| {
        annotation(n, keys::STATUS) == Some("UPDATE_STATUS_IDLE")
            && label(n, keys::LABEL_ID) == Some("flatcar")
            && label(n, keys::LABEL_VERSION) == Some("4081.2.0")
            && label(n, keys::LABEL_GROUP) == Some("stable")
            && annotation(n, keys::REBOOT_NEEDED) == Some("false")
            && label(n, keys::REBOOT_NEEDED) == Some("false")
            && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false")
    })
    .await;
    let first_boot = boot_id(&n);

    host.offer_update(NEW_VERSION).await;
    let n = wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
            && label(n, keys::REBOOT_NEEDED) == Some("true")
            && annotation(n, keys::STATUS) == Some(UPDATE_STATUS_UPDATED_NEED_REBOOT)
            && annotation(n, keys::NEW_VERSION) == Some(NEW_VERSION)
    })
    .await;
    // Nothing happens without the operator's grant.
    assert!(!unschedulable(&n));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(host.reboots(), 0);
    assert_eq!(pods_on(&client, "node-1").await.len(), 2);

    let mut lifecycle = sb.lifecycle();
    grant(&client, "node-1").await;
    let n = wait_node(&client, "node-1", "cordon and reboot-in-progress", |n| {
        unschedulable(n)
            && annotation(n, keys::AGENT_MADE_UNSCHEDULABLE) == Some("true")
            && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("true")
    })
    .await;
    assert_eq!(
        annotation(&n, keys::REBOOT_BOOT_ID),
        Some(first_boot.as_str())
    );

    wait_lifecycle(
        &mut lifecycle,
        NodeLifecycle::RebootStarted("node-1".into()),
    )
    .await;
    // The drain finished before the reboot: nothing of the workload was left on the node.
    assert!(pods_on(&client, "node-1").await.is_empty());
    wait_ready_pods(&client, "app=web", 6).await;
    assert!(
        min_available.load(Ordering::SeqCst) >= 5,
        "the PodDisruptionBudget was violated: {} available",
        min_available.load(Ordering::SeqCst)
    );
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up("node-1".into())).await;
    assert_eq!(host.reboots(), 1);

    // The fresh agent on the rebooted node finishes the cycle.
    let n = wait_node(&client, "node-1", "uncordoned and flags cleared", |n| {
        !unschedulable(n)
            && annotation(n, keys::AGENT_MADE_UNSCHEDULABLE) == Some("false")
            && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false")
            && annotation(n, keys::REBOOT_NEEDED) == Some("false")
            && label(n, keys::REBOOT_NEEDED) == Some("false")
            && annotation(n, keys::REBOOT_BOOT_ID).is_none()
            && label(n, keys::LABEL_VERSION) == Some(NEW_VERSION)
            && annotation(n, keys::STATUS) == Some("UPDATE_STATUS_IDLE")
    })
    .await;
    assert_ne!(boot_id(&n), first_boot);
    assert_eq!(machine.starts(), 2);

    // The operator withdraws the grant; the agent just waits.
    withdraw(&client, "node-1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(host.reboots(), 1);
    let n = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .get("node-1")
        .await
        .unwrap();
    assert!(!unschedulable(&n));
    assert!(
        min_available.load(Ordering::SeqCst) >= 5,
        "the PodDisruptionBudget was violated"
    );
    machine.stop().await;
    monitor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cordoned_by_an_admin_stays_cordoned() {
    init_logging();
    let sb = cluster().await;
    let client = sb.client();
    // `kubectl cordon node-1` before anything.
    patch_node(&client, "node-1", json!({"spec": {"unschedulable": true}})).await;
    let (machine, _) = start_needing_reboot(&sb, config("node-1", Duration::from_secs(30))).await;
    let mut lifecycle = sb.lifecycle();
    grant(&client, "node-1").await;
    let n = wait_node(&client, "node-1", "reboot-in-progress", |n| {
        annotation(n, keys::REBOOT_IN_PROGRESS) == Some("true")
    })
    .await;
    assert_ne!(annotation(&n, keys::AGENT_MADE_UNSCHEDULABLE), Some("true"));
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up("node-1".into())).await;
    let n = wait_node(&client, "node-1", "cycle finished", |n| {
        annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false")
            && annotation(n, keys::REBOOT_NEEDED) == Some("false")
    })
    .await;
    assert!(unschedulable(&n), "the admin's cordon was undone");
    assert_ne!(annotation(&n, keys::AGENT_MADE_UNSCHEDULABLE), Some("true"));
    withdraw(&client, "node-1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .get("node-1")
        .await
        .unwrap();
    assert!(unschedulable(&n), "the admin's cordon was undone");
    assert_eq!(machine.host().reboots(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_drain_resumes_and_reboots_once() {
    init_logging();
    let sb = cluster().await;
    let client = sb.client();
    // One pod per node, none may be unavailable: every eviction is refused for now.
    sb.add_workload("default", "db", 3, Some(0), 1).unwrap();
    wait_ready_pods(&client, "app=db", 3).await;
    let (machine, n) = start_needing_reboot(&sb, config("node-1", Duration::from_secs(60))).await;
    let first_boot = boot_id(&n);
    grant(&client, "node-1").await;
    wait_node(&client, "node-1", "draining", |n| {
        unschedulable(n) && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("true")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods_on(&client, "node-1").await.len(), 1, "the budget held");

    // The agent dies mid-drain; meanwhile someone uncordons the node.
    machine.kill_agent();
    patch_node(&client, "node-1", json!({"spec": {"unschedulable": false}})).await;
    // Let the budget allow one disruption, then the DaemonSet brings the agent back.
    Api::<PodDisruptionBudget>::namespaced(client.clone(), "default")
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxUnavailable": 1}})),
        )
        .await
        .unwrap();
    let mut lifecycle = sb.lifecycle();
    machine.start_agent();

    // Not taken as rebooted: re-cordoned, still in progress with the same boot ID.
    let n = wait_node(&client, "node-1", "re-cordoned", |n| {
        unschedulable(n) && annotation(n, keys::AGENT_MADE_UNSCHEDULABLE) == Some("true")
    })
    .await;
    assert_eq!(annotation(&n, keys::REBOOT_IN_PROGRESS), Some("true"));
    assert_eq!(
        annotation(&n, keys::REBOOT_BOOT_ID),
        Some(first_boot.as_str())
    );
    assert_eq!(machine.host().reboots(), 0);

    wait_lifecycle(
        &mut lifecycle,
        NodeLifecycle::RebootStarted("node-1".into()),
    )
    .await;
    assert!(
        pods_on(&client, "node-1").await.is_empty(),
        "drained before the reboot"
    );
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up("node-1".into())).await;
    let n = wait_node(&client, "node-1", "cycle finished", |n| {
        !unschedulable(n)
            && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false")
            && annotation(n, keys::REBOOT_NEEDED) == Some("false")
    })
    .await;
    assert_ne!(boot_id(&n), first_boot);
    withdraw(&client, "node-1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(machine.host().reboots(), 1, "rebooted exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_uncordons_records_and_does_not_reboot() {
    init_logging();
    let (sb, client) = cluster_running("db", 0).await;
    let (machine, _) = start_needing_reboot(&sb, config("node-1", Duration::from_secs(1))).await;
    grant(&client, "node-1").await;
    wait_node(&client, "node-1", "draining", unschedulable).await;
    let n = wait_node(&client, "node-1", "drain failure recorded", |n| {
        annotation(n, keys::DRAIN_FAILURE).is_some()
    })
    .await;
    let failure = annotation(&n, keys::DRAIN_FAILURE).unwrap();
    assert!(
        failure.contains("--grace-period") && failure.contains("default/db-"),
        "{failure}"
    );
    assert!(!unschedulable(&n), "our cordon was not undone");
    assert_eq!(
        annotation(&n, keys::AGENT_MADE_UNSCHEDULABLE),
        Some("false")
    );
    assert_eq!(annotation(&n, keys::REBOOT_IN_PROGRESS), Some("false"));
    assert_eq!(annotation(&n, keys::REBOOT_BOOT_ID), None);
    // The grant is spent: the agent waits for the operator, and never reboots undrained.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(machine.host().reboots(), 0);
    let n = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .get("node-1")
        .await
        .unwrap();
    assert!(!unschedulable(&n));
    assert_eq!(annotation(&n, keys::REBOOT_IN_PROGRESS), Some("false"));
    assert_eq!(pods_on(&client, "node-1").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_with_reboot_action_reboots_as_fluo() {
    init_logging();
    let (sb, client) = cluster_running("db", 0).await;
    let mut cfg = config("node-1", Duration::from_secs(1));
    cfg.drain_timeout_action = DrainTimeoutAction::Reboot;
    let (machine, _) = start_needing_reboot(&sb, cfg).await;
    let mut lifecycle = sb.lifecycle();
    grant(&client, "node-1").await;
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up("node-1".into())).await;
    assert_eq!(machine.host().reboots(), 1);
}

/// A pod without a controller, bound to node-1.
async fn bare_pod(sb: &Sandbox) {
    sb.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare", "namespace": "default"},
        "spec": {
            "nodeName": "node-1",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
        },
        "status": {"phase": "Pending"},
    }))
    .unwrap();
    wait_ready_pods(&sb.client(), "", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_without_controller_blocks_the_drain() {
    init_logging();
    let sb = cluster().await;
    let client = sb.client();
    bare_pod(&sb).await;
    // A long grace period: the failure must come at once, not by timeout.
    let (machine, _) = start_needing_reboot(&sb, config("node-1", Duration::from_secs(600))).await;
    grant(&client, "node-1").await;
    let n = wait_node(&client, "node-1", "drain failure recorded", |n| {
        annotation(n, keys::DRAIN_FAILURE).is_some()
    })
    .await;
    let failure = annotation(&n, keys::DRAIN_FAILURE).unwrap();
    assert!(
        failure.contains("default/bare") && failure.contains("--force-drain"),
        "{failure}"
    );
    assert!(!unschedulable(&n));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(machine.host().reboots(), 0);
    assert_eq!(
        pods_on(&client, "node-1").await,
        vec!["default/bare".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_drain_evicts_a_pod_without_controller() {
    init_logging();
    let sb = cluster().await;
    let client = sb.client();
    bare_pod(&sb).await;
    let mut cfg = config("node-1", Duration::from_secs(30));
    cfg.force_drain = true;
    let (machine, _) = start_needing_reboot(&sb, cfg).await;
    let mut lifecycle = sb.lifecycle();
    grant(&client, "node-1").await;
    wait_lifecycle(
        &mut lifecycle,
        NodeLifecycle::RebootStarted("node-1".into()),
    )
    .await;
    assert!(pods_on(&client, "node-1").await.is_empty());
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up("node-1".into())).await;
    assert_eq!(machine.host().reboots(), 1);
    let n = wait_node(&client, "node-1", "cycle finished", |n| {
        annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false") && !unschedulable(n)
    })
    .await;
    assert_eq!(annotation(&n, keys::DRAIN_FAILURE), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_annotation_is_logged_and_not_acted_on() {
    let log = init_logging();
    let sb = cluster().await;
    let client = sb.client();
    let (machine, _) = start_needing_reboot(&sb, config("node-1", Duration::from_secs(30))).await;
    // A grant that is not "true".
    set_annotations(&client, "node-1", &[(keys::REBOOT_OK, "yes")]).await;
    common::eventually("a warning naming the node and key", || {
        let text = log.text();
        text.lines().any(|l| {
            l.contains("WARN")
                && l.contains("malformed")
                && l.contains("node-1")
                && l.contains(keys::REBOOT_OK)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .get("node-1")
        .await
        .unwrap();
    assert!(!unschedulable(&n));
    assert_eq!(annotation(&n, keys::REBOOT_IN_PROGRESS), Some("false"));
    assert_eq!(machine.host().reboots(), 0);
    // Fixed: the agent acts.
    grant(&client, "node-1").await;
    wait_node(&client, "node-1", "cordon", |n| {
        unschedulable(n) && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("true")
    })
    .await;
    let warnings = log
        .text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("malformed"))
        .count();
    assert_eq!(
        warnings, 1,
        "one line per malformed value, not one per event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_mid_drain_never_causes_a_reboot() {
    init_logging();
    let (sb, client) = cluster_running("db", 0).await;
    let (machine, _) = start_needing_reboot(&sb, config("node-1", Duration::from_secs(60))).await;
    grant(&client, "node-1").await;
    wait_node(&client, "node-1", "draining", |n| {
        unschedulable(n) && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("true")
    })
    .await;
    // Every request fails with 503 for two seconds.
    sb.faults()
        .update(|p| p.outage_until = Some(std::time::Instant::now() + Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(machine.host().reboots(), 0);
    assert_eq!(pods_on(&client, "node-1").await.len(), 1);
    // After the outage the drain goes on as before.
    let mut lifecycle = sb.lifecycle();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), "default")
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxUnavailable": 1}})),
        )
        .await
        .unwrap();
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up("node-1".into())).await;
    wait_node(&client, "node-1", "cycle finished", |n| {
        !unschedulable(n) && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false")
    })
    .await;
    assert_eq!(machine.host().reboots(), 1);
}

/// A pod gone while the drain's watch of the node's pods cannot resume (its watch requests
/// fail, as after an API server restart or an outage, with the watcher backing off) is read
/// before the drain gives up on it: the node drains and reboots, no drain failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_while_the_drain_cannot_watch_is_read_before_giving_up() {
    init_logging();
    let (sb, client) = cluster_running("web", 1).await;
    let mut cfg = config("node-1", Duration::from_secs(30));
    cfg.pod_delete_margin = Duration::from_secs(1);
    let (machine, _) = start_needing_reboot(&sb, cfg).await;
    // Watches of pods fail from now on; lists work.
    // 500: not retried by the client (503s are), so the read gets no answer at once.
    let fail = |verb: &str| ErrorRule {
        verb: Some(verb.into()),
        resource: Some("pods".into()),
        rate: 1.0,
        code: 500,
    };
    sb.faults().update(|p| p.errors = vec![fail("watch")]);
    let mut lifecycle = sb.lifecycle();
    grant(&client, "node-1").await;
    // Once its pod is evicted (terminating), lists fail too: past the pod's deadline (1 s
    // grace + 1 s margin) a read without an answer is not "still there", and the drain goes
    // on waiting.
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = kube::api::ListParams::default().fields("spec.nodeName=node-1");
    sandbox::testing::wait_for("the pod evicted", Duration::from_secs(20), || async {
        let l = pods.list(&on_node).await.ok()?;
        l.items
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    sb.faults()
        .update(|p| p.errors = vec![fail("watch"), fail("list")]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(machine.host().reboots(), 0);
    let n = Api::<Node>::all(client.clone())
        .get("node-1")
        .await
        .unwrap();
    assert_eq!(
        annotation(&n, keys::DRAIN_FAILURE),
        None,
        "gave up on an unread pod"
    );
    assert!(unschedulable(&n), "no longer draining");
    sb.faults().update(|p| p.errors = vec![fail("watch")]);
    wait_lifecycle(
        &mut lifecycle,
        NodeLifecycle::RebootStarted("node-1".into()),
    )
    .await;
    assert_eq!(machine.host().reboots(), 0);
    let n = Api::<Node>::all(client.clone())
        .get("node-1")
        .await
        .unwrap();
    assert_eq!(annotation(&n, keys::DRAIN_FAILURE), None);
    assert!(
        sb.faults()
            .injected()
            .errors
            .iter()
            .any(|(c, n)| *c == 500 && *n > 1)
    );
    sb.faults().update(|p| p.errors.clear());
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up("node-1".into())).await;
    assert_eq!(machine.host().reboots(), 1);
    machine.stop().await;
}

/// A 409 from an eviction is not proof that the pod is gone (in a real cluster it may be a
/// conflict on the PodDisruptionBudget's update): the agent reads the pod and retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_conflicts_are_retried_not_taken_for_a_gone_pod() {
    init_logging();
    let (sb, client) = cluster_running("db", 1).await;
    let (machine, _) = start_needing_reboot(&sb, config("node-1", Duration::from_secs(60))).await;
    sb.faults().update(|p| {
        p.errors = vec![ErrorRule {
            verb: Some("create".into()),
            resource: Some("pods/eviction".into()),
            rate: 1.0,
            code: 409,
        }]
    });
    grant(&client, "node-1").await;
    wait_node(&client, "node-1", "draining", |n| {
        unschedulable(n) && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("true")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        machine.host().reboots(),
        0,
        "rebooted with the pod still there"
    );
    assert_eq!(pods_on(&client, "node-1").await.len(), 1);

    let mut lifecycle = sb.lifecycle();
    sb.faults().update(|p| p.errors.clear());
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up("node-1".into())).await;
    assert_eq!(machine.host().reboots(), 1);
    machine.stop().await;
}
