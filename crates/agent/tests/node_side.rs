//! The node-side options, end to end: the real agent, authenticated as its own service
//! account under the shipped RBAC (deploy/core) and admission policy (deploy/admission),
//! both enforced by the sandbox; the test plays the operator (grant, withdraw).
//!
//! - `--reboot-sentinel`: one coordinated reboot per appearance, none for a sentinel that
//!   outlives its reboot;
//! - `--volume-detach-timeout`: the reboot waits for the simulated CSI detach (and, as a
//!   control, does not with the wait off);
//! - `--prefer-no-schedule-taint`: tainted while waiting, untainted after, others' taints kept;
//! - `--exclude-from-load-balancers`: labelled at the drain, unlabelled after, a label set by
//!   someone else kept;
//! - `--skip-wait-for-delete-timeout`, `--drain-pod-selector`, `--drain-kube-system`;
//! - and a reboot logind accepted that never happened: asked again after `--reboot-timeout`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use protocol::keys;
use sandbox::authz::Mode;
use sandbox::testing::{get_node, wait_for};
use sandbox::{NodeLifecycle, Options, Sandbox, UserInfo};
use serde_json::json;

/// A sandbox enforcing the shipped RBAC and admission policy, with `nodes`.
async fn cluster(nodes: &[&str], opts: Options) -> Sandbox {
    init_logging();
    let sb = Sandbox::start(Options {
        pod_start: Duration::from_millis(100),
        reboot_duration: Duration::from_millis(500),
        authorization: Mode::Rbac,
        ..opts
    })
    .await
    .expect("sandbox");
    for n in nodes {
        sb.add_node(n, &[]).expect("add node");
    }
    sb.load_shipped_rbac().expect("deploy/core RBAC");
    sb.load_shipped_admission().expect("deploy/admission");
    sb
}

/// The agent of `node` as its own service account.
fn start(sb: &Sandbox, node: &str, cfg: agent::AgentConfig) -> Machine {
    Machine::start_as(sb, node, cfg, &UserInfo::agent(node))
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

async fn wait_event(client: &Client, reason: &str) -> Event {
    wait_for(reason, STEP, || async {
        events(client, reason).await.into_iter().next()
    })
    .await
}

async fn settled(client: &Client, node: &str) {
    wait_node(client, node, "the agent's first marks", |n| {
        annotation(n, keys::STATUS) == Some("UPDATE_STATUS_IDLE")
            && label(n, keys::REBOOT_NEEDED) == Some("false")
    })
    .await;
}

/// Grants `node`, waits for its reboot to start and end and for the agent to finish the
/// cycle, then withdraws the grant (as the operator does). `at_reboot` runs when the
/// machine goes down.
async fn reboot(sb: &Sandbox, node: &str, at_reboot: impl AsyncFnOnce()) {
    let client = sb.client();
    let mut lifecycle = sb.lifecycle();
    grant(&client, node).await;
    wait_lifecycle(&mut lifecycle, NodeLifecycle::RebootStarted(node.into())).await;
    at_reboot().await;
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up(node.into())).await;
    wait_node(&client, node, "the cycle's end", |n| {
        annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false")
            && annotation(n, keys::REBOOT_NEEDED) == Some("false")
            && !unschedulable(n)
    })
    .await;
    withdraw(&client, node).await;
}

fn sentinel_config(node: &str, path: &std::path::Path) -> agent::AgentConfig {
    let mut cfg = config(node, Duration::from_secs(30));
    cfg.reboot_sentinel = Some(path.to_path_buf());
    cfg.sentinel_poll = Duration::from_millis(100);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_triggers_exactly_one_coordinated_reboot() {
    let sb = cluster(&["node-1"], Options::default()).await;
    let client = sb.client();
    let dir = tempfile::tempdir().unwrap();
    let sentinel: PathBuf = dir.path().join("reboot-required");
    let machine = start(&sb, "node-1", sentinel_config("node-1", &sentinel));
    settled(&client, "node-1").await;
    let boot = boot_id(&get_node(&client, "node-1").await);

    std::fs::write(&sentinel, "").unwrap();
    wait_node(&client, "node-1", "reboot-needed by the sentinel", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
            && label(n, keys::REBOOT_NEEDED) == Some("true")
            && annotation(n, keys::REBOOT_NEEDED_BY) == Some("sentinel")
            && annotation(n, keys::SENTINEL_BOOT_ID) == Some(boot.as_str())
    })
    .await;
    let asked = wait_event(&client, "RebootRequested").await;
    assert!(
        asked
            .message
            .as_deref()
            .unwrap_or("")
            .contains("asked by sentinel"),
        "{asked:?}"
    );
    // Nothing happens without the operator's grant.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(machine.host().reboots(), 0);

    // The reboot clears /run (tmpfs): the sentinel goes with it.
    reboot(&sb, "node-1", async || {
        std::fs::remove_file(&sentinel).unwrap()
    })
    .await;
    let n = wait_node(&client, "node-1", "the sentinel forgotten", |n| {
        annotation(n, keys::SENTINEL_BOOT_ID).is_none()
            && annotation(n, keys::REBOOT_NEEDED_BY).is_none()
    })
    .await;
    assert_ne!(boot_id(&n), boot);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(machine.host().reboots(), 1);
    assert_eq!(
        annotation(&get_node(&client, "node-1").await, keys::REBOOT_NEEDED),
        Some("false")
    );
    machine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_outlives_its_reboot_is_reported_not_obeyed() {
    let sb = cluster(&["node-1"], Options::default()).await;
    let client = sb.client();
    let dir = tempfile::tempdir().unwrap();
    let sentinel = dir.path().join("reboot-required");
    let machine = start(&sb, "node-1", sentinel_config("node-1", &sentinel));
    settled(&client, "node-1").await;
    let first_boot = boot_id(&get_node(&client, "node-1").await);
    std::fs::write(&sentinel, "").unwrap();
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    // Not on tmpfs: it survives the reboot.
    reboot(&sb, "node-1", async || {}).await;
    let stale = wait_event(&client, "RebootSentinelStale").await;
    let note = stale.message.unwrap_or_default();
    assert!(
        note.contains(&sentinel.display().to_string()) && note.contains(&first_boot),
        "{note}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = get_node(&client, "node-1").await;
    assert_eq!(annotation(&n, keys::REBOOT_NEEDED), Some("false"));
    assert_eq!(
        annotation(&n, keys::SENTINEL_BOOT_ID),
        Some(first_boot.as_str())
    );
    assert_eq!(machine.host().reboots(), 1, "no second reboot");

    // Removed, then touched again: a new request.
    std::fs::remove_file(&sentinel).unwrap();
    wait_node(&client, "node-1", "the sentinel forgotten", |n| {
        annotation(n, keys::SENTINEL_BOOT_ID).is_none()
    })
    .await;
    std::fs::write(&sentinel, "").unwrap();
    wait_node(&client, "node-1", "a new request", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    machine.stop().await;
}

/// The node's attached VolumeAttachments and volumesInUse, as the API shows them now.
async fn volumes_on(client: &Client, node: &str) -> (Vec<String>, Vec<String>) {
    let attached = Api::<VolumeAttachment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|va| va.spec.node_name == node && va.status.as_ref().is_some_and(|s| s.attached))
        .map(|va| va.metadata.name.unwrap_or_default())
        .collect();
    let in_use = get_node(client, node)
        .await
        .status
        .and_then(|s| s.volumes_in_use)
        .unwrap_or_default();
    (attached, in_use)
}

/// Runs a reboot of node-1, which has a pod with an attached volume, and returns what was
/// still attached when the machine went down.
async fn volumes_at_reboot(detach_timeout: Duration) -> (Sandbox, (Vec<String>, Vec<String>)) {
    let sb = cluster(
        &["node-1"],
        Options {
            volume_attach: Duration::from_millis(200),
            volume_detach: Duration::from_secs(2),
            ..Options::default()
        },
    )
    .await;
    let client = sb.client();
    sb.add_workload_with_claim("default", "db", 1, None, 1, "data")
        .unwrap();
    wait_ready_pods(&client, "app=db", 1).await;
    wait_for("the volume attached", STEP, || async {
        let (attached, in_use) = volumes_on(&client, "node-1").await;
        (attached.len() == 1 && in_use.len() == 1).then_some(())
    })
    .await;
    let mut cfg = config("node-1", Duration::from_secs(30));
    cfg.volume_detach_timeout = detach_timeout;
    let machine = start(&sb, "node-1", cfg);
    settled(&client, "node-1").await;
    machine.host().offer_update("4081.3.0").await;
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    let at_reboot = std::sync::Mutex::new(None);
    reboot(&sb, "node-1", async || {
        *at_reboot.lock().unwrap() = Some(volumes_on(&client, "node-1").await);
    })
    .await;
    machine.stop().await;
    let seen = at_reboot
        .into_inner()
        .unwrap()
        .expect("looked at the reboot");
    (sb, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reboot_waits_for_the_volumes_to_detach() {
    let (sb, (attached, in_use)) = volumes_at_reboot(Duration::from_secs(60)).await;
    assert!(
        attached.is_empty() && in_use.is_empty(),
        "still attached at the reboot: {attached:?} {in_use:?}"
    );
    let ev = wait_event(&sb.client(), "VolumesDetached").await;
    let note = ev.message.unwrap_or_default();
    assert!(
        note.starts_with("the node's volumes are detached (waited "),
        "{note}"
    );
}

/// The control: without the wait, the reboot outruns the detach, so the check above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_wait_the_reboot_outruns_the_detach() {
    let (sb, (attached, _)) = volumes_at_reboot(Duration::ZERO).await;
    assert_eq!(attached.len(), 1, "the reboot came before the detach");
    assert!(events(&sb.client(), "VolumesDetached").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefer_no_schedule_taint_is_there_while_waiting_and_gone_after() {
    let sb = cluster(&["node-1"], Options::default()).await;
    let client = sb.client();
    let theirs = json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"});
    patch_node(&client, "node-1", json!({"spec": {"taints": [theirs]}})).await;
    let mut cfg = config("node-1", Duration::from_secs(30));
    cfg.node_options.prefer_no_schedule_taint = true;
    let machine = start(&sb, "node-1", cfg);
    settled(&client, "node-1").await;
    let taints = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|t| format!("{}={}:{}", t.key, t.value.unwrap_or_default(), t.effect))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        taints(&get_node(&client, "node-1").await),
        ["dedicated=gpu:NoSchedule"]
    );
    machine.host().offer_update("4081.3.0").await;
    let ours = format!("{}=:PreferNoSchedule", keys::REBOOT_TAINT);
    wait_node(&client, "node-1", "tainted while waiting", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
            && taints(n) == ["dedicated=gpu:NoSchedule", ours.as_str()]
    })
    .await;
    reboot(&sb, "node-1", async || {}).await;
    wait_node(&client, "node-1", "untainted after", |n| {
        taints(n) == ["dedicated=gpu:NoSchedule"]
    })
    .await;
    machine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_balancer_label_is_set_for_the_reboot_and_a_foreign_one_kept() {
    let sb = cluster(&["node-1", "node-2"], Options::default()).await;
    let client = sb.client();
    sb.add_workload("default", "web", 2, None, 1).unwrap();
    wait_ready_pods(&client, "app=web", 2).await;
    let lb = keys::EXCLUDE_FROM_LB_LABEL;
    // Someone else's exclusion of node-2.
    patch_node(
        &client,
        "node-2",
        json!({"metadata": {"labels": {lb: "true"}}}),
    )
    .await;
    let mut machines = Vec::new();
    for node in ["node-1", "node-2"] {
        let mut cfg = config(node, Duration::from_secs(30));
        cfg.node_options.exclude_from_load_balancers = true;
        cfg.exclude_from_lb_wait = Duration::from_secs(2);
        cfg.volume_detach_timeout = Duration::ZERO;
        machines.push(start(&sb, node, cfg));
        settled(&client, node).await;
        machines
            .last()
            .unwrap()
            .host()
            .offer_update("4081.3.0")
            .await;
    }

    grant(&client, "node-1").await;
    wait_node(&client, "node-1", "labelled at the drain", |n| {
        label(n, lb) == Some("true") && annotation(n, keys::AGENT_EXCLUDED_FROM_LB) == Some("true")
    })
    .await;
    // The wait before evicting: node-1's pods are still running a moment later.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let on_node = pods_on(&client, "node-1").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert!(!on_node.is_empty());
    for p in &on_node {
        let pod = pods.get(p.split_once('/').unwrap().1).await.unwrap();
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{p} evicted before --exclude-from-load-balancers-wait"
        );
    }
    withdraw(&client, "node-1").await;
    wait_node(&client, "node-1", "the reboot called off", |n| {
        annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false")
    })
    .await;
    reboot(&sb, "node-1", async || {}).await;
    wait_node(&client, "node-1", "unlabelled after", |n| {
        label(n, lb).is_none() && annotation(n, keys::AGENT_EXCLUDED_FROM_LB).is_none()
    })
    .await;

    reboot(&sb, "node-2", async || {}).await;
    let n2 = get_node(&client, "node-2").await;
    assert_eq!(label(&n2, lb), Some("true"), "someone else's label kept");
    assert_eq!(annotation(&n2, keys::AGENT_EXCLUDED_FROM_LB), None);
    for m in &machines {
        m.stop().await;
    }
}

/// node-1 with one pod of `stuck` that a finalizer keeps Terminating after its eviction.
async fn stuck_pod(sb: &Sandbox) -> String {
    let client = sb.client();
    sb.add_workload("default", "stuck", 1, None, 1).unwrap();
    wait_ready_pods(&client, "app=stuck", 1).await;
    let name = pods_on(&client, "node-1").await.remove(0);
    let name = name.split_once('/').expect("namespace/name").1.to_string();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
    )
    .await
    .unwrap();
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stuck_terminating_no_longer_blocks_the_drain_with_the_flag() {
    // Without the flag: the drain fails on it, as before.
    let sb = cluster(&["node-1"], Options::default()).await;
    let client = sb.client();
    stuck_pod(&sb).await;
    let cfg = config("node-1", Duration::from_secs(60));
    let machine = start(&sb, "node-1", cfg);
    settled(&client, "node-1").await;
    machine.host().offer_update("4081.3.0").await;
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    grant(&client, "node-1").await;
    let n = wait_node(&client, "node-1", "the drain failed", |n| {
        annotation(n, keys::DRAIN_FAILURE).is_some()
    })
    .await;
    assert!(
        annotation(&n, keys::DRAIN_FAILURE)
            .unwrap()
            .contains("still there"),
        "{:?}",
        annotation(&n, keys::DRAIN_FAILURE)
    );
    assert_eq!(machine.host().reboots(), 0);
    machine.stop().await;

    // With it: counted as gone two seconds past its deletionTimestamp; the node reboots.
    let sb = cluster(&["node-1"], Options::default()).await;
    let client = sb.client();
    let stuck = stuck_pod(&sb).await;
    let mut cfg = config("node-1", Duration::from_secs(60));
    cfg.skip_wait_for_delete_timeout = Duration::from_secs(2);
    let machine = start(&sb, "node-1", cfg);
    settled(&client, "node-1").await;
    machine.host().offer_update("4081.3.0").await;
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    reboot(&sb, "node-1", async || {}).await;
    assert_eq!(machine.host().reboots(), 1);
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get(&stuck)
        .await
        .expect("the finalizer still holds the pod");
    assert!(pod.metadata.deletion_timestamp.is_some());
    machine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_takes_only_selected_pods_and_kube_system_when_asked() {
    let sb = cluster(&["node-1"], Options::default()).await;
    let client = sb.client();
    sb.add_workload("default", "web", 1, None, 1).unwrap();
    sb.add_workload("default", "keep", 1, None, 1).unwrap();
    sb.add_workload("kube-system", "dns", 1, None, 1).unwrap();
    for app in ["web", "keep", "dns"] {
        wait_ready_pods(&client, &format!("app={app}"), 1).await;
    }
    let pod_of = |app: &'static str| {
        let client = client.clone();
        async move {
            let ns = if app == "dns" {
                "kube-system"
            } else {
                "default"
            };
            Api::<Pod>::namespaced(client, ns)
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|p| p.metadata.uid.unwrap_or_default())
                .collect::<Vec<_>>()
        }
    };
    let before = (
        pod_of("web").await,
        pod_of("keep").await,
        pod_of("dns").await,
    );
    let mut cfg = config("node-1", Duration::from_secs(30));
    cfg.drain_pod_selector = Some("app in (web,dns)".into());
    cfg.drain_kube_system = true;
    let machine = start(&sb, "node-1", cfg);
    settled(&client, "node-1").await;
    machine.host().offer_update("4081.3.0").await;
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    let evicted_at_reboot = std::sync::Mutex::new(None);
    reboot(&sb, "node-1", async || {
        *evicted_at_reboot.lock().unwrap() = Some((
            pod_of("web").await,
            pod_of("keep").await,
            pod_of("dns").await,
        ));
    })
    .await;
    let (web, keep, dns) = evicted_at_reboot.into_inner().unwrap().unwrap();
    assert!(!web.iter().any(|u| before.0.contains(u)), "web evicted");
    assert!(
        !dns.iter().any(|u| before.2.contains(u)),
        "kube-system's dns evicted"
    );
    assert_eq!(keep, before.1, "the unselected pod stayed until the reboot");
    let drained = wait_event(&client, "DrainFinished").await;
    assert!(
        drained
            .message
            .unwrap_or_default()
            .contains("2 pods evicted"),
        "web and dns only"
    );
    machine.stop().await;
}

/// logind accepts the reboot but the machine never goes down (a hung shutdown): after
/// `--reboot-timeout` the agent says so on the node and asks again, and the machine
/// reboots exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_that_never_happened_is_asked_again_and_reboots_once() {
    let sb = cluster(&["node-1"], Options::default()).await;
    let client = sb.client();
    let mut cfg = config("node-1", Duration::from_secs(30));
    cfg.reboot_timeout = Duration::from_secs(1);
    let machine = start(&sb, "node-1", cfg);
    settled(&client, "node-1").await;
    machine.host().lose_reboots(1);
    machine.host().offer_update("4081.3.0").await;
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    reboot(&sb, "node-1", async || {}).await;
    assert_eq!(machine.host().reboots_lost(), 1);
    assert_eq!(machine.host().reboots(), 1, "one reboot, not two");
    let ev = wait_event(&client, "RebootFailed").await;
    let note = ev.message.unwrap_or_default();
    assert!(
        note.contains("logind accepted the reboot") && note.contains("still up"),
        "{note}"
    );
    machine.stop().await;
}

/// A grant stamped by the operator, judged by an agent whose machine's clock is minutes
/// off: `grant-expires` is read on the API server's clock (its answers' `Date`), so a grant
/// that expired is not started by a node whose clock lags, and one that has not expired is
/// started by a node whose clock runs ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_expiry_is_judged_on_the_api_servers_clock_not_the_nodes() {
    let sb = cluster(&["node-1", "node-2"], Options::default()).await;
    let client = sb.client();
    let stamp = |d: chrono::TimeDelta| {
        (chrono::Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let mut machines = Vec::new();
    for (node, skew) in [("node-1", -10), ("node-2", 10)] {
        let mut cfg = config(node, Duration::from_secs(30));
        cfg.clock = shell::ServerClock::with_local_skew(chrono::TimeDelta::minutes(skew));
        let m = start(&sb, node, cfg);
        settled(&client, node).await;
        m.host().offer_update("4081.3.0").await;
        wait_node(&client, node, "reboot-needed", |n| {
            annotation(n, keys::REBOOT_NEEDED) == Some("true")
        })
        .await;
        machines.push(m);
    }
    // node-1's clock lags 10 minutes: its grant expired 5 s ago on the server's clock (and
    // on the operator's), 9 minutes 55 s in the future on node-1's own.
    set_annotations(
        &client,
        "node-1",
        &[
            (keys::GRANTED_AT, &stamp(chrono::TimeDelta::minutes(-1))),
            (keys::GRANT_EXPIRES, &stamp(chrono::TimeDelta::seconds(-5))),
            (keys::REBOOT_OK, "true"),
        ],
    )
    .await;
    // node-2's clock runs 10 minutes ahead: its grant has 2 minutes left on the server's
    // clock, expired 8 minutes ago on node-2's own.
    set_annotations(
        &client,
        "node-2",
        &[
            (keys::GRANTED_AT, &stamp(chrono::TimeDelta::seconds(-5))),
            (keys::GRANT_EXPIRES, &stamp(chrono::TimeDelta::minutes(2))),
            (keys::REBOOT_OK, "true"),
        ],
    )
    .await;
    wait_node(
        &client,
        "node-2",
        "node-2 starts its unexpired grant",
        |n| annotation(n, keys::REBOOT_IN_PROGRESS) == Some("true"),
    )
    .await;
    // node-2's start shows the agents have acted on their grants; node-1 must not have.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n1 = get_node(&client, "node-1").await;
    assert_ne!(
        annotation(&n1, keys::REBOOT_IN_PROGRESS),
        Some("true"),
        "node-1 started a grant that had expired"
    );
    assert!(!unschedulable(&n1));
    assert_eq!(machines[0].host().reboots(), 0);
    for m in machines {
        m.stop().await;
    }
}
