//! The agent's observability through the real interfaces: the real `update-agent` binary
//! (on a private D-Bus with fake update_engine and logind, against the sandbox) serving
//! `/metrics`, `/healthz` and `/readyz` over HTTP and logging JSON; Events as the real
//! `kubectl get events` shows them; a failed drain as an Event and a metric.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use host::UpdateStatus;
use host::testing::{FakeLogind, FakeUpdateEngine, TestBus};
use protocol::keys;
use protocol::update_engine::{UPDATE_STATUS_IDLE, UPDATE_STATUS_UPDATED_NEED_REBOOT};
use sandbox::Sandbox;
use serde_json::json;
use telemetry::testing::{http_get, sample};
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_update-agent");

fn status(op: &str, last_checked_time: i64, new_version: &str) -> UpdateStatus {
    UpdateStatus {
        last_checked_time,
        progress: 0.0,
        current_operation: op.into(),
        new_version: new_version.into(),
        new_size: 0,
    }
}

async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kubectl get events -A` against the sandbox.
async fn kubectl_events(sb: &Sandbox) -> String {
    let cache = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("kubectl")
        .args(["--server", &sb.url(), "--cache-dir"])
        .arg(cache.path())
        .args(["get", "events", "-A"])
        .env("KUBECONFIG", "/dev/null")
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The REASON column of the rows about `object` (`node/node-1`).
fn reasons_for(table: &str, object: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let i = cols.iter().position(|c| *c == object)?;
            Some(cols.get(i.checked_sub(1)?)?.to_string())
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn agent_command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .args([
            "--os-release-path=/nonexistent/os-release",
            "--update-conf-paths=/nonexistent/update.conf",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("UPDATE_AGENT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_metrics_health_and_readiness_and_writes_events() {
    let bus = TestBus::start().expect("dbus-daemon");
    let engine = FakeUpdateEngine::start(bus.address(), status(UPDATE_STATUS_IDLE, 100, "0.0.0"))
        .await
        .expect("fake update_engine");
    let logind = FakeLogind::start(bus.address()).await.expect("fake logind");
    let sb = sandbox().await;
    sb.add_node("node-1", &[]).unwrap();
    // Two pods on node-1 under a budget of one unavailable: the second eviction must wait
    // (429) until the first one's replacement runs on node-2.
    sb.add_workload("default", "web", 2, Some(1), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(30)).await);
    sb.add_node("node-2", &[]).unwrap();
    let client = sb.client();

    // First: an API server that does not answer: alive, not ready.
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead-kubeconfig");
    sandbox::write_kubeconfig(&dead, &format!("http://127.0.0.1:{}", free_port())).unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = agent_command(&[
        "--node=node-1",
        &format!("--kubeconfig={}", dead.display()),
        &format!("--dbus-address={}", bus.address()),
        &format!("--metrics-address=127.0.0.1:{port}"),
    ])
    .spawn()
    .unwrap();
    until("/healthz", || async {
        (http_get(addr, "/healthz").await.0 == 200).then_some(())
    })
    .await;
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not synced"), "{body}");
    child.kill().await.unwrap();

    // Now the sandbox.
    let kubeconfig = sb.kubeconfig_path();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = agent_command(&[
        "--node=node-1",
        &format!("--kubeconfig={}", kubeconfig.display()),
        &format!("--dbus-address={}", bus.address()),
        &format!("--metrics-address=127.0.0.1:{port}"),
        "--log-format=json",
        "--grace-period=30",
    ])
    .spawn()
    .unwrap();
    until("/readyz", || async {
        (http_get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".into()));
    let (_, m) = http_get(addr, "/metrics").await;
    for series in [
        "fluo_drain_duration_seconds_count",
        "fluo_drain_failures_total{reason=\"timeout\"}",
        "fluo_eviction_retries_total",
        "fluo_api_errors_total{verb=\"patch\"}",
    ] {
        assert_eq!(sample(&m, series), Some(0.0), "{series}:\n{m}");
    }

    wait_node(&client, "node-1", "initialised", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("false")
    })
    .await;
    engine
        .set_status(status(UPDATE_STATUS_UPDATED_NEED_REBOOT, 500, "4081.3.0"))
        .await
        .unwrap();
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    grant(&client, "node-1").await;
    tokio::time::timeout(Duration::from_secs(30), logind.wait_for_reboot_calls(1))
        .await
        .expect("the agent reboots through logind");

    let (_, m) = http_get(addr, "/metrics").await;
    eprintln!("--- update-agent /metrics ---\n{m}");
    assert_eq!(
        sample(&m, "fluo_drain_duration_seconds_count"),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "fluo_eviction_retries_total").unwrap() >= 1.0,
        "the budget made an eviction wait:\n{m}"
    );
    assert_eq!(
        sample(&m, "fluo_api_errors_total{verb=\"patch\"}"),
        Some(0.0),
        "{m}"
    );

    let table = until("the agent's Events", || async {
        let t = kubectl_events(&sb).await;
        let r = reasons_for(&t, "node/node-1");
        ["DrainStarted", "DrainFinished", "Rebooting"]
            .iter()
            .all(|w| r.iter().any(|x| x == w))
            .then_some(t)
    })
    .await;
    eprintln!("--- kubectl get events -A ---\n{table}");

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{stderr}");
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
        if v["message"] == "update-agent starting" {
            assert_eq!(v["node"], "node-1", "fields at the top level: {line}");
        }
    }
    assert!(stderr.contains("serving /metrics"), "{stderr}");
    drop(logind);
    drop(engine);
}

#[tokio::test]
async fn the_binary_rejects_a_bad_metrics_address_naming_the_flag() {
    for bad in ["nonsense", "8080", "example.com:80", "1.2.3.4:99999"] {
        let out = agent_command(&["--node=n1", &format!("--metrics-address={bad}")])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(stderr.contains("--metrics-address"), "{bad}: {stderr}");
    }
    // '' and 'off' disable it; the default is deploy/'s.
    use agent::cli::Args;
    for off in ["", "off"] {
        let a = Args::try_parse_go_style([
            "update-agent",
            "--node=n1",
            &format!("-metrics-address={off}"),
        ])
        .unwrap();
        assert_eq!(a.metrics_address.0, None);
    }
    let a = Args::try_parse_go_style(["update-agent", "--node=n1"]).unwrap();
    assert_eq!(a.metrics_address.0, Some("0.0.0.0:8080".parse().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_drain_is_a_warning_event_and_a_metric() {
    init_logging();
    let sb = sandbox().await;
    sb.add_node("node-1", &[]).unwrap();
    let client = sb.client();
    // A pod without a controller, and no --force-drain: the drain fails at once.
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
    wait_ready_pods(&client, "", 1).await;
    let mut cfg = config("node-1", Duration::from_secs(600));
    cfg.metrics_address = Some("127.0.0.1:0".parse().unwrap());
    let metrics = cfg.metrics.clone();
    let machine = Machine::start(&sb, "node-1", cfg);
    machine.host().offer_update("4081.3.0").await;
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
    })
    .await;
    grant(&client, "node-1").await;
    wait_node(&client, "node-1", "drain failure recorded", |n| {
        annotation(n, keys::DRAIN_FAILURE).is_some()
    })
    .await;
    assert_eq!(metrics.drain_failures("unmanaged_pods"), 1);
    let addr = metrics.listening().expect("serving");
    let (_, m) = http_get(addr, "/metrics").await;
    assert_eq!(
        sample(&m, "fluo_drain_failures_total{reason=\"unmanaged_pods\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "fluo_drain_duration_seconds_count"), Some(0.0));
    let table = until("the DrainFailed Event", || async {
        let t = kubectl_events(&sb).await;
        reasons_for(&t, "node/node-1")
            .contains(&"DrainFailed".to_string())
            .then_some(t)
    })
    .await;
    let row = table.lines().find(|l| l.contains("DrainFailed")).unwrap();
    assert!(
        row.contains("Warning") && row.contains("default/bare") && row.contains("--force-drain"),
        "{row}"
    );
    machine.stop().await;
}
