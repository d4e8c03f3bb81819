//! Scheduling beyond FLUO, on the sandbox with the operator alone and nodes
//! annotated by hand (as agents or admins would): windows in a time zone,
//! per-zone maximum, node selector, order and backoff, cluster-wide pause,
//! minimum interval, stuck and deleted nodes, the health gate, blocking pods,
//! and bad flag values of the real binary.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use operator::Config;
use protocol::keys;
use protocol::node::{format_time, parse_time};
use protocol::operator::{MaxRebooting, OperatorConfig};
use protocol::schedule::Schedule;
use protocol::selector::LabelSelector;
use serde_json::json;

const OK: Option<&str> = Some("true");
const ZONE: &str = "topology.kubernetes.io/zone";

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

fn start_with(sb: &sandbox::Sandbox, op: OperatorConfig, f: impl FnOnce(&mut Config)) -> Replica {
    let mut cfg = Config::new(NAMESPACE, op);
    cfg.identity = "operator".into();
    cfg.lease = fleet::fast_lease();
    f(&mut cfg);
    Replica::start_with(sb, "operator", cfg).expect("operator starts")
}

/// A node of ours that "reboots": in progress, then back (needed=false).
async fn reboot_by_hand(client: &kube::Client, node: &str) {
    annotate(client, node, &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    mark_rebooted(client, node).await;
}

async fn wait_released(client: &kube::Client, node: &str) {
    wait_for(&format!("{node} released"), PATIENCE, || async {
        let n = get_node(client, node).await;
        (annotation(&n, keys::REBOOT_OK) == Some("false")).then_some(())
    })
    .await;
}

/// `HH:MM` of `t` in time zone `tz`.
fn local_hhmm(t: DateTime<Utc>, tz: &str) -> String {
    let tz = protocol::schedule::parse_timezone(tz).unwrap();
    t.with_timezone(&tz).format("%H:%M").to_string()
}

fn schedule(windows: &[String], tz: &str) -> Schedule {
    Schedule::from_flags(windows, tz).unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_in_a_time_zone_and_closing_mid_rollout() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2", "n3"]).await;
    let tz = "Asia/Kolkata"; // +05:30: local minutes differ from UTC's
    let now = Utc::now();

    // A window later today (local time): nothing is picked.
    let later = vec![format!(
        "{}-{}",
        local_hhmm(now + TimeDelta::hours(2), tz),
        local_hhmm(now + TimeDelta::hours(3), tz)
    )];
    let op = Replica::start(
        &sb,
        "operator-closed",
        OperatorConfig {
            windows: Some(schedule(&later, tz)),
            ..op_config(1)
        },
    );
    wait_for_leader(&admin, "operator-closed", PATIENCE).await;
    for n in ["n1", "n2", "n3"] {
        mark_reboot_needed(&admin, n).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        granted_nodes(&admin).await.is_empty(),
        "granted outside the window"
    );
    op.stop().await.unwrap();

    // A window open now that closes at the next full minute (at least 8 s away).
    let mut end = DateTime::from_timestamp((Utc::now().timestamp() / 60 + 1) * 60, 0).unwrap();
    if end - Utc::now() < TimeDelta::seconds(8) {
        end += TimeDelta::minutes(1);
    }
    let open = vec![format!(
        "{}-{}",
        local_hhmm(end - TimeDelta::minutes(30), tz),
        local_hhmm(end, tz)
    )];
    let op = start_with(
        &sb,
        OperatorConfig {
            windows: Some(schedule(&open, tz)),
            ..op_config(1)
        },
        |_| {},
    );
    wait_for("n1 granted inside the window", PATIENCE, || async {
        (granted_nodes(&admin).await == ["n1"]).then_some(())
    })
    .await;
    let n1 = get_node(&admin, "n1").await;
    assert_eq!(
        annotation(&n1, keys::GRANT_EXPIRES).and_then(parse_time),
        Some(end),
        "the grant expires when the window closes"
    );
    // n1 starts its reboot before the window closes ...
    annotate(&admin, "n1", &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    let wait = (end - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(1500);
    tokio::time::sleep(wait).await;
    // ... and finishes after it: its grant is kept, its slot released.
    assert!(
        granted(&get_node(&admin, "n1").await),
        "a reboot in progress keeps its grant"
    );
    mark_rebooted(&admin, "n1").await;
    wait_released(&admin, "n1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        granted_nodes(&admin).await.is_empty(),
        "granted after the window closed"
    );
    for n in ["n2", "n3"] {
        assert!(label(&get_node(&admin, n).await, keys::BEFORE_REBOOT).is_none());
    }
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_zone_maximum_on_top_of_the_global_one() {
    let sb = sandbox().await;
    for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        sb.add_node(n, &[(ZONE, z)]).unwrap();
    }
    sb.add_node("x1", &[]).unwrap(); // no zone label: a zone of its own
    let admin = sb.client_as("admin").unwrap();
    let monitor = Monitor::start(sb.client_as("monitor").unwrap(), &[]).await;
    let op = Replica::start(
        &sb,
        "operator",
        OperatorConfig {
            max_rebooting_per_zone: Some(MaxRebooting::Count(1)),
            ..op_config(5)
        },
    );
    for n in ["a1", "a2", "b1", "b2", "x1"] {
        mark_reboot_needed(&admin, n).await;
    }
    wait_for("one grant per zone", PATIENCE, || async {
        (granted_nodes(&admin).await == ["a1", "b1", "x1"]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(granted_nodes(&admin).await, ["a1", "b1", "x1"]);
    // a1 comes back: its zone's next node follows.
    reboot_by_hand(&admin, "a1").await;
    wait_granted(&admin, "a2").await;
    assert!(!granted(&get_node(&admin, "b2").await));
    assert!(monitor.peaks().granted <= 3);
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_limits_the_managed_nodes() {
    let sb = sandbox().await;
    for n in ["w1", "w2"] {
        sb.add_node(n, &[("role", "worker")]).unwrap();
    }
    sb.add_node("db1", &[("role", "db")]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    // An unmanaged node "rebooting": it does not take the only slot.
    annotate(&admin, "db1", &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    mark_reboot_needed(&admin, "db1").await;
    let op = Replica::start(
        &sb,
        "operator",
        OperatorConfig {
            node_selector: Some(LabelSelector::parse("role in (worker)").unwrap()),
            ..op_config(1)
        },
    );
    mark_reboot_needed(&admin, "w1").await;
    mark_reboot_needed(&admin, "w2").await;
    wait_for("w1 granted", PATIENCE, || async {
        (granted_nodes(&admin).await == ["w1"]).then_some(())
    })
    .await;
    reboot_by_hand(&admin, "w1").await;
    wait_for("w2 granted", PATIENCE, || async {
        (granted_nodes(&admin).await == ["w2"]).then_some(())
    })
    .await;
    let db1 = get_node(&admin, "db1").await;
    assert!(annotation(&db1, keys::REBOOT_NEEDED_SINCE).is_none());
    assert!(annotation(&db1, keys::GRANTED_AT).is_none());
    // The operator never wrote to db1.
    for k in [keys::REBOOT_OK, keys::PICKED_AT, keys::STUCK_SINCE] {
        assert!(annotation(&db1, k).is_none(), "{k} on db1");
    }
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_waiting_first_and_failed_nodes_back_off() {
    let sb = sandbox().await;
    for n in ["a", "b", "c", "d"] {
        sb.add_node(n, &[]).unwrap();
    }
    let admin = sb.client_as("admin").unwrap();
    let ago = |m: i64| format_time(Utc::now() - TimeDelta::minutes(m));
    for (n, since) in [("a", 60), ("b", 120), ("c", 180)] {
        mark_reboot_needed(&admin, n).await;
        annotate(&admin, n, &[(keys::REBOOT_NEEDED_SINCE, Some(&ago(since)))]).await;
    }
    // c waited longest, but its last drain failed a minute ago: it goes last
    // and backs off (10 min).
    let failure = format!("{} pod web-1: PDB allows no eviction", ago(1));
    annotate(
        &admin,
        "c",
        &[
            (keys::REBOOT_FAILURES, Some("1")),
            (keys::DRAIN_FAILURE, Some(&failure)),
        ],
    )
    .await;
    let op = Replica::start(&sb, "operator", op_config(1));
    mark_reboot_needed(&admin, "d").await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let n = wait_for("the next grant", PATIENCE, || async {
            let g = granted_nodes(&admin).await;
            (g.len() == 1).then(|| g[0].clone())
        })
        .await;
        reboot_by_hand(&admin, &n).await;
        wait_released(&admin, &n).await;
        order.push(n);
    }
    assert_eq!(order, ["b", "a", "d"]);
    // The operator recorded since when d needs a reboot (and forgot it after).
    let d = get_node(&admin, "d").await;
    assert!(annotation(&d, keys::REBOOT_NEEDED_SINCE).is_none());
    assert!(annotation(&d, keys::RELEASED_AT).is_some());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !granted(&get_node(&admin, "c").await),
        "c is in its backoff"
    );
    op.stop().await.unwrap();
}

async fn annotate_lease(client: &kube::Client, value: Option<&str>) {
    Api::<Lease>::namespaced(client.clone(), NAMESPACE)
        .patch(
            operator::DEFAULT_LEASE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {keys::PAUSED: value}}})),
        )
        .await
        .expect("annotate the Lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_pause_on_the_lease() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    let op = Replica::start(&sb, "operator", op_config(2));
    wait_for_leader(&admin, "operator", PATIENCE).await;
    annotate_lease(&admin, Some("true")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    mark_reboot_needed(&admin, "n1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        granted_nodes(&admin).await.is_empty(),
        "granted while paused"
    );
    assert_eq!(lease_holder(&admin).await.as_deref(), Some("operator"));
    // A malformed value pauses as well (the safe reading).
    annotate_lease(&admin, Some("yes")).await;
    mark_reboot_needed(&admin, "n2").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        granted_nodes(&admin).await.is_empty(),
        "granted while paused"
    );
    // Lifted: both are granted, promptly (watch-driven).
    annotate_lease(&admin, None).await;
    wait_for("grants after the pause", Duration::from_secs(5), || async {
        (granted_nodes(&admin).await.len() == 2).then_some(())
    })
    .await;
    // Paused again: a grant not started yet is withdrawn.
    annotate_lease(&admin, Some("true")).await;
    wait_for("grants withdrawn", Duration::from_secs(5), || async {
        granted_nodes(&admin).await.is_empty().then_some(())
    })
    .await;
    assert!(!op.is_finished());
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_reboot_interval_between_picks() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2", "n3"]).await;
    let op = Replica::start(
        &sb,
        "operator",
        OperatorConfig {
            min_reboot_interval: TimeDelta::seconds(3),
            ..op_config(3)
        },
    );
    for n in ["n1", "n2", "n3"] {
        mark_reboot_needed(&admin, n).await;
    }
    wait_for("all granted", PATIENCE, || async {
        (granted_nodes(&admin).await.len() == 3).then_some(())
    })
    .await;
    let mut picked: Vec<DateTime<Utc>> = Vec::new();
    for n in all_nodes(&admin).await {
        picked.push(
            annotation(&n, keys::PICKED_AT)
                .and_then(parse_time)
                .unwrap(),
        );
    }
    picked.sort();
    for w in picked.windows(2) {
        assert!(w[1] - w[0] >= TimeDelta::seconds(3), "{picked:?}");
    }
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_node_is_marked_keeps_its_slot_and_deleting_it_frees_the_slot() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    let op = Replica::start(
        &sb,
        "operator",
        OperatorConfig {
            reboot_timeout: TimeDelta::seconds(2),
            ..op_config(1)
        },
    );
    mark_reboot_needed(&admin, "n1").await;
    wait_granted(&admin, "n1").await;
    annotate(&admin, "n1", &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    mark_reboot_needed(&admin, "n2").await;
    let mark = wait_for("n1 marked stuck", PATIENCE, || async {
        annotation(&get_node(&admin, "n1").await, keys::STUCK_SINCE).map(str::to_string)
    })
    .await;
    assert!(mark.contains("--reboot-timeout=2s"), "{mark}");
    assert!(mark.contains("has not finished"), "{mark}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !granted(&get_node(&admin, "n2").await),
        "the stuck node keeps its slot"
    );
    // The dead node is removed from the cluster: its slot is free at once.
    Api::<Node>::all(admin.clone())
        .delete("n1", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("n2 granted", Duration::from_secs(5), || async {
        granted(&get_node(&admin, "n2").await).then_some(())
    })
    .await;
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gate_holds_the_slot_until_the_node_is_ready() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    let after = "example.com/after-ok";
    let op = Replica::start(
        &sb,
        "operator",
        OperatorConfig {
            after_reboot_annotations: vec![after.into()],
            ..op_config(1)
        },
    );
    mark_reboot_needed(&admin, "n1").await;
    wait_granted(&admin, "n1").await;
    mark_reboot_needed(&admin, "n2").await;
    annotate(&admin, "n1", &[(keys::REBOOT_IN_PROGRESS, OK)]).await;
    set_ready(&admin, "n1", false).await;
    mark_rebooted(&admin, "n1").await;
    wait_for("after-reboot label", PATIENCE, || async {
        (label(&get_node(&admin, "n1").await, keys::AFTER_REBOOT) == OK).then_some(())
    })
    .await;
    annotate(&admin, "n1", &[(after, OK)]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n1 = get_node(&admin, "n1").await;
    assert!(granted(&n1), "released while not Ready");
    assert!(!granted(&get_node(&admin, "n2").await));
    set_ready(&admin, "n1", true).await;
    wait_released(&admin, "n1").await;
    wait_granted(&admin, "n2").await;
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_pods_block_their_node_until_they_go() {
    let sb = sandbox().await;
    for n in ["n1", "n2"] {
        sb.add_node(n, &[]).unwrap();
    }
    sb.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "backup", "namespace": "default", "labels": {"app": "backup"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
        "status": {"phase": "Running"},
    }))
    .unwrap();
    let admin = sb.client_as("admin").unwrap();
    let op = start_with(&sb, op_config(2), |c| {
        c.blocking_pod_selector = Some(LabelSelector::parse("app=backup").unwrap());
    });
    mark_reboot_needed(&admin, "n1").await;
    mark_reboot_needed(&admin, "n2").await;
    wait_for("n2 granted", PATIENCE, || async {
        (granted_nodes(&admin).await == ["n2"]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(granted_nodes(&admin).await, ["n2"], "n1 is blocked");
    // The pod goes: n1 follows at once (a watch, not the 60 s resync).
    Api::<Pod>::namespaced(admin.clone(), "default")
        .delete("backup", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_for("n1 granted", Duration::from_secs(5), || async {
        granted(&get_node(&admin, "n1").await).then_some(())
    })
    .await;
    assert!(users_with(&sb, "watch", "pods").contains("operator"));
    op.stop().await.unwrap();
}

const BIN: &str = env!("CARGO_BIN_EXE_update-operator");

/// Runs the binary with `args` and POD_NAMESPACE; returns (exit code, stderr).
fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("POD_NAMESPACE", "reboot-coordinator")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn update-operator");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("update-operator {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_scheduling_flags_are_startup_errors_naming_the_flag() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--reboot-window", "Mon 02:00"], &["--reboot-window"]),
        (
            &["--reboot-window", "Funday 02:00-03:00"],
            &["--reboot-window"],
        ),
        (&["--reboot-window", "02:00-02:00"], &["--reboot-window"]),
        (&["--reboot-window", "25:00-26:00"], &["--reboot-window"]),
        (&["--reboot-window", " ; "], &["--reboot-window"]),
        (
            &[
                "--reboot-window",
                "02:00-03:00",
                "--reboot-window-timezone",
                "Mars/Olympus",
            ],
            &["--reboot-window-timezone"],
        ),
        (
            &[
                "--reboot-window",
                "02:00-03:00",
                "--reboot-window-start",
                "02:00",
                "--reboot-window-length",
                "1h",
            ],
            &["--reboot-window", "--reboot-window-start"],
        ),
        (
            &[
                "--reboot-window-timezone",
                "Europe/Berlin",
                "--reboot-window-start",
                "02:00",
                "--reboot-window-length",
                "1h",
            ],
            &["--reboot-window-timezone"],
        ),
        (
            &["--max-rebooting-nodes-per-zone", "0"],
            &["--max-rebooting-nodes-per-zone"],
        ),
        (
            &["--max-rebooting-nodes-per-zone", "150%"],
            &["--max-rebooting-nodes-per-zone"],
        ),
        (&["--zone-label", "bad label"], &["--zone-label"]),
        (&["--node-selector", "role in (a"], &["--node-selector"]),
        (&["--node-selector", "a=b=c"], &["--node-selector"]),
        (
            &["--blocking-pod-selector", "app in backup"],
            &["--blocking-pod-selector"],
        ),
        (&["--min-reboot-interval", "10"], &["--min-reboot-interval"]),
        (
            &["--min-reboot-interval", "-5m"],
            &["--min-reboot-interval"],
        ),
        (&["--reboot-timeout", "0s"], &["--reboot-timeout"]),
        (&["--reboot-timeout", "soon"], &["--reboot-timeout"]),
        // Go-style single-dash spelling as well.
        (&["-reboot-timeout=0s"], &["--reboot-timeout"]),
    ];
    for (args, flags) in cases {
        let (code, stderr) = run_binary(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        for f in *flags {
            assert!(stderr.contains(f), "{args:?}: expected {f} in: {stderr}");
        }
    }
}

#[test]
fn scheduling_flags_reach_the_config() {
    let s = operator::cli::parse([
        "update-operator",
        "--namespace",
        "reboot-coordinator",
        "--reboot-window",
        "Mon-Fri 02:00-05:00; Sat,Sun 00:00-08:00",
        "--reboot-window",
        "Fri 22:00-02:00",
        "--reboot-window-timezone",
        "Europe/Berlin",
        "--max-rebooting-nodes-per-zone=25%",
        "--zone-label",
        "example.com/rack",
        "--node-selector",
        "role in (worker), !example.com/no-reboots",
        "-min-reboot-interval=15m",
        "--reboot-timeout",
        "1h",
        "--blocking-pod-selector",
        "app=backup",
    ])
    .unwrap_or_else(|e| panic!("{e:?}"));
    let op = &s.config.operator;
    assert_eq!(
        op.windows.as_ref().unwrap().to_string(),
        "Mon,Tue,Wed,Thu,Fri 02:00-05:00; Sat,Sun 00:00-08:00; Fri 22:00-02:00 (Europe/Berlin)"
    );
    assert_eq!(op.window, None);
    assert_eq!(op.max_rebooting_per_zone, Some(MaxRebooting::Percent(25)));
    assert_eq!(op.zone_label, "example.com/rack");
    assert_eq!(
        op.node_selector.as_ref().unwrap().to_string(),
        "role in (worker),!example.com/no-reboots"
    );
    assert_eq!(op.min_reboot_interval, TimeDelta::minutes(15));
    assert_eq!(op.reboot_timeout, TimeDelta::hours(1));
    assert_eq!(
        s.config.blocking_pod_selector.as_ref().unwrap().to_string(),
        "app=backup"
    );
    // Defaults.
    let s = operator::cli::parse(["update-operator", "--namespace", "ns"])
        .unwrap_or_else(|e| panic!("{e:?}"));
    let op = &s.config.operator;
    assert_eq!(op.windows, None);
    assert_eq!(op.max_rebooting_per_zone, None);
    assert_eq!(op.zone_label, "topology.kubernetes.io/zone");
    assert_eq!(op.node_selector, None);
    assert_eq!(op.min_reboot_interval, TimeDelta::zero());
    assert_eq!(op.reboot_timeout, TimeDelta::minutes(30));
    assert_eq!(s.config.blocking_pod_selector, None);
}

/// A node that starts asking while the operator's bookkeeping writes are in flight is queued
/// for the next batch: stamped once, after the batch, and never patched twice meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_asking_while_bookkeeping_is_written_is_stamped_once_after_it() {
    // Slow, but not so slow that the Lease's renewal (two requests, 2 s deadline) fails.
    const SLOW: Duration = Duration::from_millis(400);
    let (sb, admin) = sandbox_with_nodes(&["a", "b", "c"]).await;
    // Paused nodes are never granted: the only writes are the stamps.
    for n in ["a", "b", "c"] {
        annotate(&admin, n, &[(keys::REBOOT_PAUSED, Some("true"))]).await;
    }
    let op = Replica::start(&sb, "operator", op_config(1));
    let stamp = |n: &'static str| {
        let admin = admin.clone();
        async move {
            annotation(&get_node(&admin, n).await, keys::REBOOT_NEEDED_SINCE)
                .map(|s| parse_time(s).unwrap())
        }
    };
    // c asking keeps the operator leading.
    mark_reboot_needed(&admin, "c").await;
    wait_for("c stamped", PATIENCE, || stamp("c")).await;
    // Every request answers late: a asks at SLOW, its stamp is in flight until about
    // 2 SLOW, and b asks at about 1.5 SLOW. (Had b been seen with a, the two would share a
    // batch: this test would pass without queueing, but never with a queued patch lost.)
    sb.faults().update(|p| {
        p.latency = SLOW;
        p.latency_rate = 1.0;
    });
    let first = {
        let admin = admin.clone();
        tokio::spawn(async move { mark_reboot_needed(&admin, "a").await })
    };
    tokio::time::sleep(SLOW / 2).await;
    mark_reboot_needed(&admin, "b").await;
    first.await.unwrap();
    let (a, b) = wait_for("a and b stamped", PATIENCE, || async {
        Some((stamp("a").await?, stamp("b").await?))
    })
    .await;
    assert!(a <= b, "a asked first: a {a}, b {b}");
    sb.faults().set(Default::default());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let patches: u64 = sb
        .audit()
        .counts()
        .into_iter()
        .filter(|(e, _)| e.user == "operator" && e.verb == "patch" && e.resource == "nodes")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(patches, 3, "one stamp per node");
    op.stop().await.unwrap();
}
