//! The agent with the real D-Bus host (DbusHost) on a private dbus-daemon with fake
//! update_engine and logind, against a sandbox node.

mod common;

use std::time::Duration;

use common::*;
use host::testing::{FakeLogind, FakeUpdateEngine, TestBus, emit_status_update};
use host::{DbusHost, UpdateStatus};
use kube::Client;
use protocol::keys;
use protocol::update_engine::{
    UPDATE_STATUS_CHECKING_FOR_UPDATE, UPDATE_STATUS_IDLE, UPDATE_STATUS_UPDATED_NEED_REBOOT,
};
use sandbox::Sandbox;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn status(op: &str, last_checked_time: i64, new_version: &str) -> UpdateStatus {
    UpdateStatus {
        last_checked_time,
        progress: 0.0,
        current_operation: op.into(),
        new_version: new_version.into(),
        new_size: 0,
    }
}

struct Setup {
    bus: TestBus,
    engine: FakeUpdateEngine,
    logind: FakeLogind,
    sb: Sandbox,
    client: Client,
    agent: JoinHandle<()>,
    stop: CancellationToken,
}

async fn setup() -> Setup {
    let bus = TestBus::start().expect("dbus-daemon");
    let engine = FakeUpdateEngine::start(bus.address(), status(UPDATE_STATUS_IDLE, 100, "0.0.0"))
        .await
        .expect("fake update_engine");
    let logind = FakeLogind::start(bus.address()).await.expect("fake logind");
    let sb = sandbox().await;
    let sim = sb.add_node("node-1", &[]).unwrap();
    let client = sb.client();
    let dbus = DbusHost::connect(Some(bus.address()))
        .await
        .expect("DbusHost");
    let mut cfg = config("node-1", Duration::from_secs(30));
    cfg.host_info = host_info(&sim);
    let stop = CancellationToken::new();
    let agent = tokio::spawn({
        let (client, stop) = (sb.client_as("agent-node-1").unwrap(), stop.clone());
        async move {
            agent::run(client, dbus, cfg, stop)
                .await
                .expect("agent::run")
        }
    });
    Setup {
        bus,
        engine,
        logind,
        sb,
        client,
        agent,
        stop,
    }
}

impl Setup {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(STEP, self.agent)
            .await
            .expect("agent stops")
            .expect("agent task");
        drop(self.sb);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_annotations_follow_update_engine_and_spoofs_are_ignored() {
    init_logging();
    let s = setup().await;
    let c = &s.client;
    wait_node(c, "node-1", "initial status", |n| {
        annotation(n, keys::STATUS) == Some(UPDATE_STATUS_IDLE)
            && annotation(n, keys::LAST_CHECKED_TIME) == Some("100")
            && annotation(n, keys::NEW_VERSION) == Some("0.0.0")
            && annotation(n, keys::REBOOT_NEEDED) == Some("false")
    })
    .await;

    // Only last-checked-time changes: rewritten all the same.
    s.engine
        .set_status(status(UPDATE_STATUS_IDLE, 200, "0.0.0"))
        .await
        .unwrap();
    wait_node(c, "node-1", "last-checked-time 200", |n| {
        annotation(n, keys::LAST_CHECKED_TIME) == Some("200")
    })
    .await;
    // Only new-version changes.
    s.engine
        .set_status(status(UPDATE_STATUS_IDLE, 200, "4000.0.0"))
        .await
        .unwrap();
    wait_node(c, "node-1", "new-version 4000.0.0", |n| {
        annotation(n, keys::NEW_VERSION) == Some("4000.0.0")
    })
    .await;

    // Spoofs from another connection: broadcast, and sent straight to the agent's
    // connection (the one that called GetStatus).
    let spoofer = s.bus.connect().await.unwrap();
    let spoof = (
        300i64,
        1.0f64,
        UPDATE_STATUS_UPDATED_NEED_REBOOT,
        "6666.6.6",
        1i64,
    );
    emit_status_update(&spoofer, None, &spoof).await.unwrap();
    for caller in s.engine.get_status_callers() {
        emit_status_update(&spoofer, Some(&caller), &spoof)
            .await
            .unwrap();
    }
    // A malformed StatusUpdate from the real owner.
    s.engine.emit_raw(&("garbage", 7u32)).await.unwrap();
    // Then a real one: once it shows, everything sent before it was handled.
    s.engine
        .set_status(status(UPDATE_STATUS_CHECKING_FOR_UPDATE, 400, ""))
        .await
        .unwrap();
    let n = wait_node(c, "node-1", "status CHECKING_FOR_UPDATE", |n| {
        annotation(n, keys::STATUS) == Some(UPDATE_STATUS_CHECKING_FOR_UPDATE)
            && annotation(n, keys::LAST_CHECKED_TIME) == Some("400")
    })
    .await;
    assert_eq!(
        annotation(&n, keys::REBOOT_NEEDED),
        Some("false"),
        "a spoof was believed"
    );
    assert_eq!(label(&n, keys::REBOOT_NEEDED), Some("false"));

    s.engine
        .set_status(status(UPDATE_STATUS_UPDATED_NEED_REBOOT, 500, "4081.3.0"))
        .await
        .unwrap();
    let n = wait_node(c, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
            && label(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    assert_eq!(
        annotation(&n, keys::STATUS),
        Some(UPDATE_STATUS_UPDATED_NEED_REBOOT)
    );
    assert_eq!(annotation(&n, keys::NEW_VERSION), Some("4081.3.0"));
    assert_eq!(annotation(&n, keys::LAST_CHECKED_TIME), Some("500"));
    // No grant, no reboot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.logind.reboot_calls().is_empty());
    assert!(!unschedulable(&n));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logind_error_is_surfaced_on_the_node_and_retried() {
    init_logging();
    let s = setup().await;
    let c = &s.client;
    s.engine
        .set_status(status(UPDATE_STATUS_UPDATED_NEED_REBOOT, 500, "4081.3.0"))
        .await
        .unwrap();
    wait_node(c, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    s.logind
        .fail_reboots_with(Some(zbus::fdo::Error::AccessDenied(
            "inhibited by the test".into(),
        )));
    grant(c, "node-1").await;
    let n = wait_node(c, "node-1", "reboot-error", |n| {
        annotation(n, keys::REBOOT_ERROR).is_some_and(|e| e.contains("inhibited by the test"))
    })
    .await;
    assert!(unschedulable(&n));
    assert_eq!(annotation(&n, keys::REBOOT_IN_PROGRESS), Some("true"));
    // Retried with backoff, not dropped; succeeds once logind lets it.
    tokio::time::timeout(STEP, s.logind.wait_for_reboot_calls(2))
        .await
        .expect("a second Reboot call");
    s.logind.fail_reboots_with(None);
    // A failed attempt is retried within the 2 s backoff cap; an accepted one is not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = s.logind.reboot_calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = s.logind.reboot_calls();
    assert_eq!(
        calls.len(),
        settled.len(),
        "still calling Reboot after it was accepted"
    );
    assert!(
        calls.iter().all(|interactive| !interactive),
        "Reboot(false)"
    );
    s.stop().await;
}

/// The system's dbus-daemon restarts: every connection drops, update_engine and logind
/// come back on the new bus. The agent follows the new update_engine (re-subscribing and
/// reading its status again) and its reboot goes to the new logind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_system_bus_is_followed_and_the_reboot_reaches_the_new_logind() {
    init_logging();
    let mut s = setup().await;
    let c = s.client.clone();
    wait_node(&c, "node-1", "initial status", |n| {
        annotation(n, keys::LAST_CHECKED_TIME) == Some("100")
    })
    .await;
    s.bus.restart().expect("dbus-daemon restarts");
    s.engine = FakeUpdateEngine::start(
        s.bus.address(),
        status(UPDATE_STATUS_UPDATED_NEED_REBOOT, 600, "4081.3.0"),
    )
    .await
    .expect("update_engine on the new bus");
    s.logind = FakeLogind::start(s.bus.address())
        .await
        .expect("logind on the new bus");
    wait_node(
        &c,
        "node-1",
        "reboot-needed from the new update_engine",
        |n| {
            annotation(n, keys::REBOOT_NEEDED) == Some("true")
                && annotation(n, keys::LAST_CHECKED_TIME) == Some("600")
        },
    )
    .await;
    grant(&c, "node-1").await;
    let calls = tokio::time::timeout(STEP, s.logind.wait_for_reboot_calls(1))
        .await
        .expect("Reboot reached the new logind");
    assert_eq!(calls, vec![false]);
    s.stop().await;
}
