//! DbusHost against a private dbus-daemon with fake update_engine and logind.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use host::testing::{FakeLogind, FakeUpdateEngine, TestBus, emit_status_update};
use host::{DbusHost, Host, HostError, UpdateStatus};

/// Bounds a whole test, so a bug fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

async fn guard(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

fn status(operation: &str, last_checked_time: i64) -> UpdateStatus {
    UpdateStatus {
        last_checked_time,
        progress: 0.5,
        current_operation: operation.to_owned(),
        new_version: "4081.2.0".to_owned(),
        new_size: 123_456,
    }
}

fn body(s: &UpdateStatus) -> (i64, f64, &str, &str, i64) {
    (
        s.last_checked_time,
        s.progress,
        &s.current_operation,
        &s.new_version,
        s.new_size,
    )
}

async fn next(stream: &mut BoxStream<'static, UpdateStatus>) -> UpdateStatus {
    tokio::time::timeout(STEP_TIMEOUT, stream.next())
        .await
        .expect("no status within 5 s")
        .expect("status stream ended")
}

/// A bus, an update_engine answering `initial`, and a host following it (initial status consumed).
async fn setup(
    initial: UpdateStatus,
) -> (
    TestBus,
    FakeUpdateEngine,
    DbusHost,
    BoxStream<'static, UpdateStatus>,
) {
    let bus = TestBus::start().expect("start dbus-daemon");
    let engine = FakeUpdateEngine::start(bus.address(), initial.clone())
        .await
        .unwrap();
    let host = DbusHost::connect(Some(bus.address())).await.unwrap();
    let mut stream = host.status_updates().await.unwrap();
    assert_eq!(next(&mut stream).await, initial);
    (bus, engine, host, stream)
}

#[tokio::test]
async fn initial_status_comes_from_get_status() {
    guard(async {
        let (_bus, engine, _host, _stream) =
            setup(status("UPDATE_STATUS_IDLE", 1_700_000_000)).await;
        assert_eq!(engine.get_status_callers().len(), 1);
    })
    .await
}

#[tokio::test]
async fn status_update_from_owner_arrives_in_order() {
    guard(async {
        let (_bus, engine, _host, mut stream) = setup(status("UPDATE_STATUS_IDLE", 1)).await;
        let updates = [
            status("UPDATE_STATUS_CHECKING_FOR_UPDATE", 2),
            status("UPDATE_STATUS_DOWNLOADING", 2),
            status("UPDATE_STATUS_UPDATED_NEED_REBOOT", 2),
        ];
        for s in &updates {
            engine.set_status(s.clone()).await.unwrap();
        }
        for s in updates {
            assert_eq!(next(&mut stream).await, s);
        }
    })
    .await
}

#[tokio::test]
async fn signal_older_than_get_status_reply_is_dropped() {
    guard(async {
        let bus = TestBus::start().expect("start dbus-daemon");
        let current = status("UPDATE_STATUS_UPDATED_NEED_REBOOT", 2);
        let engine = FakeUpdateEngine::start(bus.address(), current.clone())
            .await
            .unwrap();
        engine.emit_before_next_reply(status("UPDATE_STATUS_FINALIZING", 1));
        let host = DbusHost::connect(Some(bus.address())).await.unwrap();
        let mut stream = host.status_updates().await.unwrap();
        assert_eq!(next(&mut stream).await, current);
        let later = status("UPDATE_STATUS_IDLE", 3);
        engine.set_status(later.clone()).await.unwrap();
        assert_eq!(
            next(&mut stream).await,
            later,
            "the stale FINALIZING must not follow"
        );
    })
    .await
}

#[tokio::test]
async fn spoofed_status_update_is_ignored() {
    guard(async {
        let (bus, engine, _host, mut stream) = setup(status("UPDATE_STATUS_IDLE", 1)).await;
        let spoofer = bus.connect().await.unwrap();
        let fake = status("UPDATE_STATUS_UPDATED_NEED_REBOOT", 666);
        // Broadcast, as update_engine does (the bus's sender match drops it)...
        emit_status_update(&spoofer, None, &body(&fake))
            .await
            .unwrap();
        // ...and sent straight to the host's connection (which bypasses match rules).
        let host_name = engine.get_status_callers().pop().unwrap();
        emit_status_update(&spoofer, Some(&host_name), &body(&fake))
            .await
            .unwrap();
        let real = status("UPDATE_STATUS_CHECKING_FOR_UPDATE", 2);
        engine.set_status(real.clone()).await.unwrap();
        assert_eq!(next(&mut stream).await, real);
    })
    .await
}

#[tokio::test]
async fn malformed_status_update_is_ignored() {
    guard(async {
        let (_bus, engine, _host, mut stream) = setup(status("UPDATE_STATUS_IDLE", 1)).await;
        engine.emit_raw(&("UPDATE_STATUS_IDLE",)).await.unwrap();
        engine.emit_raw(&(1i64, 0.5f64, "x")).await.unwrap();
        engine
            .emit_raw(&(1i64, 0.5f64, "x", "y", 1i64, "extra"))
            .await
            .unwrap();
        engine
            .emit_raw(&(1i32, 0.5f64, "x", "y", 1i64))
            .await
            .unwrap();
        engine.emit_raw(&()).await.unwrap();
        let good = status("UPDATE_STATUS_DOWNLOADING", 2);
        engine.set_status(good.clone()).await.unwrap();
        assert_eq!(next(&mut stream).await, good);
    })
    .await
}

#[tokio::test]
async fn update_engine_restart_is_followed() {
    guard(async {
        let (bus, old, _host, mut stream) = setup(status("UPDATE_STATUS_IDLE", 1)).await;

        // A new instance takes the name while the old one is still connected.
        old.release_name().await.unwrap();
        let restarted = status("UPDATE_STATUS_UPDATE_AVAILABLE", 2);
        let new = FakeUpdateEngine::start(bus.address(), restarted.clone())
            .await
            .unwrap();
        assert_eq!(
            next(&mut stream).await,
            restarted,
            "GetStatus after restart"
        );

        // The old instance no longer counts, even sending straight to the host.
        let host_name = new.get_status_callers().pop().unwrap();
        let stale_status = status("UPDATE_STATUS_IDLE", 999);
        let stale = body(&stale_status);
        old.emit_raw(&stale).await.unwrap();
        emit_status_update(old.connection(), Some(&host_name), &stale)
            .await
            .unwrap();
        let from_new = status("UPDATE_STATUS_DOWNLOADING", 3);
        new.set_status(from_new.clone()).await.unwrap();
        assert_eq!(next(&mut stream).await, from_new);

        // update_engine exits and comes back.
        old.stop().await.unwrap();
        new.stop().await.unwrap();
        let third = status("UPDATE_STATUS_UPDATED_NEED_REBOOT", 4);
        let engine = FakeUpdateEngine::start(bus.address(), third.clone())
            .await
            .unwrap();
        assert_eq!(next(&mut stream).await, third);
        let later = status("UPDATE_STATUS_IDLE", 5);
        engine.set_status(later.clone()).await.unwrap();
        assert_eq!(next(&mut stream).await, later);
    })
    .await
}

#[tokio::test]
async fn update_engine_started_after_the_host_is_picked_up() {
    guard(async {
        let bus = TestBus::start().expect("start dbus-daemon");
        let host = DbusHost::connect(Some(bus.address())).await.unwrap();
        let mut stream = host.status_updates().await.unwrap();
        let initial = status("UPDATE_STATUS_IDLE", 1);
        let engine = FakeUpdateEngine::start(bus.address(), initial.clone())
            .await
            .unwrap();
        assert_eq!(next(&mut stream).await, initial);
        let later = status("UPDATE_STATUS_CHECKING_FOR_UPDATE", 2);
        engine.set_status(later.clone()).await.unwrap();
        assert_eq!(next(&mut stream).await, later);
    })
    .await
}

#[tokio::test]
async fn stream_ends_when_the_bus_goes_away() {
    guard(async {
        let (bus, _engine, _host, mut stream) = setup(status("UPDATE_STATUS_IDLE", 1)).await;
        drop(bus);
        let end = tokio::time::timeout(STEP_TIMEOUT, stream.next())
            .await
            .expect("stream did not end within 5 s");
        assert_eq!(end, None);
    })
    .await
}

#[tokio::test]
async fn reboot_calls_logind_with_interactive_false() {
    guard(async {
        let bus = TestBus::start().expect("start dbus-daemon");
        let logind = FakeLogind::start(bus.address()).await.unwrap();
        let host = DbusHost::connect(Some(bus.address())).await.unwrap();
        host.reboot().await.unwrap();
        assert_eq!(logind.reboot_calls(), vec![false]);
    })
    .await
}

#[tokio::test]
async fn reboot_error_is_surfaced() {
    guard(async {
        let bus = TestBus::start().expect("start dbus-daemon");
        let logind = FakeLogind::start(bus.address()).await.unwrap();
        logind.fail_reboots_with(Some(zbus::fdo::Error::AccessDenied(
            "Interactive authentication required.".into(),
        )));
        let host = DbusHost::connect(Some(bus.address())).await.unwrap();
        let err = host.reboot().await.unwrap_err();
        assert!(matches!(err, HostError::Reboot(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("org.freedesktop.DBus.Error.AccessDenied")
                && message.contains("Interactive authentication required."),
            "{message}"
        );

        // The refusal was a real call, and a later attempt can succeed.
        logind.fail_reboots_with(None);
        host.reboot().await.unwrap();
        assert_eq!(logind.reboot_calls(), vec![false, false]);
    })
    .await
}

#[tokio::test]
async fn reboot_without_logind_is_an_error() {
    guard(async {
        let bus = TestBus::start().expect("start dbus-daemon");
        let host = DbusHost::connect(Some(bus.address())).await.unwrap();
        let err = host.reboot().await.unwrap_err();
        assert!(err.to_string().contains("org.freedesktop.login1"), "{err}");
    })
    .await
}

#[tokio::test]
async fn connect_to_a_missing_bus_fails() {
    guard(async {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}", dir.path().join("no-bus").display());
        let err = DbusHost::connect(Some(&address)).await.err().unwrap();
        assert!(matches!(err, HostError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&address), "{err}");
    })
    .await
}
