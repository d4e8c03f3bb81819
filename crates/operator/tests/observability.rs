//! Observability through the real interfaces: `/metrics`, `/healthz` and `/readyz` over
//! HTTP (in-process replicas and agents, and the real binary), Kubernetes Events as the real
//! `kubectl get events` shows them after a rollout on the sandbox, and `--notify-url`
//! notifications received by a local HTTP server.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use common::*;
use fleet::{Fleet, agent_config, fast_lease};
use operator::notify::{MessageTemplate, Notification, NotifyConfig, NotifyFormat};
use protocol::keys;
use protocol::operator::StuckNodeAction;
use telemetry::testing::{http_get, sample};
use tokio::io::AsyncReadExt;

const E2E_PATIENCE: Duration = Duration::from_secs(90);
const NEW_VERSION: &str = "4152.2.0";

/// A webhook receiver on 127.0.0.1 that answers 500 to its first `fail_first` requests.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<u32>>,
    fail_first: u32,
    got: Arc<Mutex<Vec<Notification>>>,
    /// Every body as received, whatever its format.
    raw: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    async fn start(fail_first: u32) -> (Receiver, SocketAddr) {
        let r = Receiver {
            fail_first,
            ..Default::default()
        };
        async fn hook(
            State(r): State<Receiver>,
            body: axum::extract::Json<serde_json::Value>,
        ) -> StatusCode {
            let n = {
                let mut n = r.requests.lock().unwrap();
                *n += 1;
                *n
            };
            if n <= r.fail_first {
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            if let Ok(n) = serde_json::from_value(body.0.clone()) {
                r.got.lock().unwrap().push(n);
            }
            r.raw.lock().unwrap().push(body.0);
            StatusCode::NO_CONTENT
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(r.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (r, addr)
    }

    fn got(&self) -> Vec<Notification> {
        self.got.lock().unwrap().clone()
    }

    fn raw(&self) -> Vec<serde_json::Value> {
        self.raw.lock().unwrap().clone()
    }

    fn requests(&self) -> u32 {
        *self.requests.lock().unwrap()
    }
}

fn notify_to(addr: SocketAddr) -> NotifyConfig {
    let mut n = NotifyConfig::new(&format!("http://{addr}/hook")).unwrap();
    n.initial_backoff = Duration::from_millis(100);
    n.max_backoff = Duration::from_millis(400);
    n.timeout = Duration::from_secs(2);
    n
}

/// `kubectl get events -A` against the sandbox.
async fn kubectl_events(sb: &sandbox::Sandbox) -> String {
    let cache = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("kubectl")
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["get", "events", "-A"])
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The REASON column of the rows of `kubectl get events -A` about `object` (`node/n1`).
fn reasons_for(table: &str, object: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().any(|w| w == object))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let i = cols.iter().position(|c| *c == object)?;
            Some(cols.get(i.checked_sub(1)?)?.to_string())
        })
        .collect()
}

async fn wait_all_rebooted_once(sb: &sandbox::Sandbox, client: &kube::Client, names: &[&str]) {
    wait_for("every node rebooted and settled", E2E_PATIENCE, || async {
        for n in names {
            if sb.host(n).unwrap().reboots() != 1 {
                return None;
            }
            let v = protocol::k8s::node_view(&get_node(client, n).await);
            if v.holds_slot() || v.annotation(keys::REBOOT_NEEDED) != Some("false") || !v.ready {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_shows_in_metrics_events_and_notifications() {
    let sb = sandbox().await;
    let names = ["n1", "n2", "n3"];
    for n in names {
        sb.add_node(n, &[]).unwrap();
    }
    sb.add_workload("default", "web", 4, Some(1), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(30)).await);
    let admin = sb.client_as("admin").unwrap();
    // The receiver fails the first two deliveries: they are retried.
    let (receiver, hook) = Receiver::start(2).await;

    // n1's agent serves its metrics; its registry outlives each agent process (restarted
    // after the reboot, as a DaemonSet pod would be), as a scrape series would.
    let n1_metrics = agent::metrics::Metrics::new();
    let m1 = n1_metrics.clone();
    let fleet = Fleet::start(&sb, &names, move |node, host| {
        let mut c = agent_config(node, host);
        if node == "n1" {
            c.metrics = m1.clone();
            c.metrics_address = Some("127.0.0.1:0".parse().unwrap());
        }
        c
    });
    let mut cfg = operator::Config::new(NAMESPACE, op_config(1));
    cfg.identity = "operator".into();
    cfg.lease = fast_lease();
    cfg.metrics_address = Some("127.0.0.1:0".parse().unwrap());
    cfg.notify = Some(notify_to(hook));
    let metrics = cfg.metrics.clone();
    let op = Replica::start_with(&sb, "operator", cfg).unwrap();

    // Up before the rollout: alive, ready (the API answers), leading.
    let addr = wait_for("the operator's endpoint", PATIENCE, || async {
        metrics.listening()
    })
    .await;
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    wait_for("the operator to be ready", PATIENCE, || async {
        (http_get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    wait_for("the leader gauge", PATIENCE, || async {
        let (_, m) = http_get(addr, "/metrics").await;
        (sample(&m, "fluo_operator_leader") == Some(1.0)).then_some(())
    })
    .await;

    for n in names {
        sb.host(n).unwrap().offer_update(NEW_VERSION).await;
    }
    wait_all_rebooted_once(&sb, &admin, &names).await;

    // Operator metrics, scraped over HTTP (the leader counts a release when its cache shows
    // it, a moment after the write).
    let m = wait_for("the last release in /metrics", PATIENCE, || async {
        let (status, m) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        (sample(&m, "fluo_reboots_completed_total") == Some(3.0)).then_some(m)
    })
    .await;
    eprintln!("--- operator /metrics ---\n{m}");
    assert_eq!(sample(&m, "fluo_grants_total"), Some(3.0), "{m}");
    assert_eq!(sample(&m, "fluo_reboots_completed_total"), Some(3.0), "{m}");
    assert_eq!(
        sample(&m, "fluo_reboot_duration_seconds_count"),
        Some(3.0),
        "{m}"
    );
    assert!(sample(&m, "fluo_reboot_duration_seconds_sum").unwrap() > 0.0);
    assert_eq!(sample(&m, "fluo_operator_leader"), Some(1.0));
    assert_eq!(sample(&m, "fluo_reboot_window_open"), Some(1.0));
    for state in operator::metrics::NODE_STATES {
        assert_eq!(
            sample(&m, &format!("fluo_nodes{{state=\"{state}\"}}")),
            Some(0.0),
            "{state} after the rollout:\n{m}"
        );
    }
    // One slot, three nodes: the others waited for it.
    assert!(
        sample(&m, "fluo_grants_blocked_total{blocker=\"capacity\"}").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    for series in [
        "fluo_api_errors_total{verb=\"patch\"}",
        "fluo_notifications_dropped_total{reason=\"queue_full\"}",
        "fluo_grants_blocked_total{blocker=\"window\"}",
    ] {
        assert!(sample(&m, series).is_some(), "{series} missing:\n{m}");
    }
    assert_eq!(
        sample(
            &m,
            "fluo_notifications_dropped_total{reason=\"undeliverable\"}"
        ),
        Some(0.0)
    );
    assert_eq!(metrics.notifications_dropped("undeliverable"), 0);

    // n1's agent, scraped over HTTP (the agent started after the reboot).
    let a1 = n1_metrics.listening().expect("n1's agent serves metrics");
    assert_eq!(http_get(a1, "/healthz").await.0, 200);
    wait_for("n1's agent to be ready", PATIENCE, || async {
        (http_get(a1, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let (_, am) = http_get(a1, "/metrics").await;
    eprintln!("--- agent n1 /metrics ---\n{am}");
    assert_eq!(
        sample(&am, "fluo_drain_duration_seconds_count"),
        Some(1.0),
        "{am}"
    );
    assert!(sample(&am, "fluo_drain_duration_seconds_sum").unwrap() > 0.0);
    for series in [
        "fluo_eviction_retries_total",
        "fluo_drain_failures_total{reason=\"timeout\"}",
        "fluo_api_errors_total{verb=\"patch\"}",
    ] {
        assert!(sample(&am, series).is_some(), "{series} missing:\n{am}");
    }

    // Events, as kubectl shows them.
    let want = [
        "RebootNeeded",
        "RebootGranted",
        "DrainStarted",
        "DrainFinished",
        "Rebooting",
        "BackFromReboot",
        "RebootReleased",
    ];
    let table = wait_for("the Events of every step", PATIENCE, || async {
        let t = kubectl_events(&sb).await;
        names
            .iter()
            .all(|n| {
                let r = reasons_for(&t, &format!("node/{n}"));
                want.iter().all(|w| r.iter().any(|x| x == w))
            })
            .then_some(t)
    })
    .await;
    eprintln!("--- kubectl get events -A ---\n{table}");
    assert!(
        reasons_for(&table, &format!("lease/{}", operator::DEFAULT_LEASE_NAME))
            .contains(&"LeaderElection".to_string()),
        "{table}"
    );

    // Notifications: grant, reboot, back for each node, in order, despite two failures.
    let got = wait_for("the notifications", PATIENCE, || async {
        let got = receiver.got();
        (got.len() >= 9).then_some(got)
    })
    .await;
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &got {
        assert!(
            chrono::DateTime::parse_from_rfc3339(&n.time).is_ok(),
            "{n:?}"
        );
        assert!(!n.reason.is_empty(), "{n:?}");
        per_node
            .entry(n.node.clone())
            .or_default()
            .push(n.event.clone());
    }
    for n in names {
        assert_eq!(per_node[n], ["grant", "reboot", "back"], "{got:#?}");
    }
    assert_eq!(receiver.requests(), got.len() as u32 + 2);

    op.stop().await.unwrap();
    fleet.stop().await;
    // A stopped replica no longer claims to lead.
    assert!(!metrics.is_leader());
}

/// A node granted by the first decision that sees it ask, with the slot free, was never held
/// back: no `RebootBlocked` Event and no `fluo_grants_blocked_total` for it. (A round once
/// reported on its decision after handing the patches to the writes, so it saw no pick and
/// counted slots as before the grant.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_granted_at_once_is_never_reported_blocked() {
    let (sb, admin) = sandbox_with_nodes(&["n1"]).await;
    let mut cfg = operator::Config::new(NAMESPACE, op_config(1));
    cfg.identity = "operator".into();
    cfg.lease = fast_lease();
    let metrics = cfg.metrics.clone();
    let op = Replica::start_with(&sb, "operator", cfg).unwrap();
    wait_for("the operator to lead", PATIENCE, || async {
        metrics.is_leader().then_some(())
    })
    .await;
    mark_reboot_needed(&admin, "n1").await;
    wait_granted(&admin, "n1").await;
    // RebootNeeded shows the request was seen by a round that reports (not the term's first,
    // which only records); RebootGranted, that a later round saw the grant.
    let table = wait_for(
        "n1's RebootNeeded and RebootGranted Events",
        PATIENCE,
        || async {
            let t = kubectl_events(&sb).await;
            let r = reasons_for(&t, "node/n1");
            ["RebootNeeded", "RebootGranted"]
                .iter()
                .all(|w| r.iter().any(|x| x == w))
                .then_some(t)
        },
    )
    .await;
    assert!(
        !reasons_for(&table, "node/n1").contains(&"RebootBlocked".to_string()),
        "{table}"
    );
    for blocker in operator::metrics::BLOCKERS {
        assert_eq!(metrics.grants_blocked(blocker), 0, "{blocker}");
    }
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_reboots_is_reported_stuck() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let (receiver, hook) = Receiver::start(0).await;
    let mut op_cfg = op_config(1);
    op_cfg.reboot_timeout = chrono::TimeDelta::seconds(2);
    let mut cfg = operator::Config::new(NAMESPACE, op_cfg);
    cfg.identity = "operator".into();
    cfg.lease = fast_lease();
    cfg.notify = Some(notify_to(hook));
    let metrics = cfg.metrics.clone();
    let op = Replica::start_with(&sb, "operator", cfg).unwrap();
    wait_for_leader(&admin, "operator", PATIENCE).await;
    // No agent: granted, it never reboots.
    mark_reboot_needed(&admin, "n1").await;
    wait_for("n1 to be reported stuck", PATIENCE, || async {
        let got = receiver.got();
        got.iter()
            .any(|n| n.event == "stuck" && n.node == "n1")
            .then_some(())
    })
    .await;
    let events: Vec<String> = receiver.got().into_iter().map(|n| n.event).collect();
    assert_eq!(events, ["grant", "stuck"]);
    wait_for("fluo_nodes{state=\"stuck\"} 1", PATIENCE, || async {
        (metrics.nodes_in("stuck") == 1).then_some(())
    })
    .await;
    let table = wait_for("the NodeStuck Event", PATIENCE, || async {
        let t = kubectl_events(&sb).await;
        reasons_for(&t, "node/n1")
            .contains(&"NodeStuck".to_string())
            .then_some(t)
    })
    .await;
    assert!(table.contains("Warning"), "{table}");
    op.stop().await.unwrap();
}

/// n1 is granted and its drain fails, with notifications in `format`: returns each body
/// received (the grant's, then the failed drain's).
async fn a_failed_drain_notified_as(format: NotifyFormat) -> Vec<serde_json::Value> {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let (receiver, hook) = Receiver::start(0).await;
    let mut notify = notify_to(hook);
    notify.format = format;
    notify.template = MessageTemplate::parse("[{{event}}] {{node}}: {{reason}}").unwrap();
    let mut cfg = operator::Config::new(sandbox::identity::NAMESPACE, op_config(1));
    cfg.identity = "update-operator".into();
    cfg.lease = fast_lease();
    cfg.notify = Some(notify);
    let op = Replica::start_as(&sb, &sandbox::UserInfo::operator(), cfg).expect("operator starts");
    mark_reboot_needed(&admin, "n1").await;
    wait_granted(&admin, "n1").await;
    // The agent's drain fails: the operator withdraws the grant.
    let failure = format!(
        "{} evicting default/web-1: Cannot evict pod as it would violate the pod's disruption budget",
        protocol::node::format_time(chrono::Utc::now())
    );
    annotate(&admin, "n1", &[(keys::DRAIN_FAILURE, Some(&failure))]).await;
    let raw = wait_for("both notifications", PATIENCE, || async {
        let raw = receiver.raw();
        (raw.len() >= 2).then_some(raw)
    })
    .await;
    op.stop().await.unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_for_slack_carry_the_templated_text() {
    let raw = a_failed_drain_notified_as(NotifyFormat::Slack).await;
    assert_eq!(
        raw[0],
        serde_json::json!({"text": "[grant] n1: reboot granted (1 of 1 slots in use)"})
    );
    let text = raw[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with("[drain-failed] n1: reboot grant withdrawn: the drain failed: "),
        "{text}"
    );
    assert!(text.contains("disruption budget"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_for_teams_are_adaptive_cards() {
    let raw = a_failed_drain_notified_as(NotifyFormat::Teams).await;
    let text = |b: &serde_json::Value| {
        assert_eq!(b["type"], "message");
        let a = &b["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        a["content"]["body"][0]["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        text(&raw[0]),
        "[grant] n1: reboot granted (1 of 1 slots in use)"
    );
    assert!(
        text(&raw[1]).starts_with("[drain-failed] n1: "),
        "{}",
        text(&raw[1])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_in_json_by_default_include_failed_drains() {
    let raw = a_failed_drain_notified_as(NotifyFormat::Json).await;
    let events: Vec<&str> = raw.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["grant", "drain-failed"]);
    assert_eq!(raw[1]["node"], "n1");
}

/// n1 is granted, starts its reboot and never comes back (NotReady); n2 waits. Returns
/// once n1 is marked stuck, with the operator (as its service account) still running.
async fn a_node_down_past_the_timeout(
    action: StuckNodeAction,
) -> (sandbox::Sandbox, kube::Client, Receiver, Replica) {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    let (receiver, hook) = Receiver::start(0).await;
    let mut op_cfg = op_config(1);
    op_cfg.reboot_timeout = chrono::TimeDelta::seconds(2);
    op_cfg.stuck_node_action = action;
    let mut cfg = operator::Config::new(sandbox::identity::NAMESPACE, op_cfg);
    cfg.identity = "update-operator".into();
    cfg.lease = fast_lease();
    cfg.notify = Some(notify_to(hook));
    // As deploy/ runs it: its service account, the shipped RBAC and admission policy.
    let op = Replica::start_as(&sb, &sandbox::UserInfo::operator(), cfg).expect("operator starts");
    mark_reboot_needed(&admin, "n1").await;
    wait_granted(&admin, "n1").await;
    // Its agent starts the reboot; the node goes down and stays down.
    let boot = boot_id(&get_node(&admin, "n1").await);
    annotate(
        &admin,
        "n1",
        &[
            (keys::REBOOT_IN_PROGRESS, Some("true")),
            (keys::REBOOT_BOOT_ID, Some(&boot)),
        ],
    )
    .await;
    set_ready(&admin, "n1", false).await;
    mark_reboot_needed(&admin, "n2").await;
    wait_for("n1 marked stuck", PATIENCE, || async {
        annotation(&get_node(&admin, "n1").await, keys::STUCK_SINCE).map(|_| ())
    })
    .await;
    (sb, admin, receiver, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_node_action_hold_keeps_the_slot_of_a_node_that_never_comes_back() {
    let (_sb, admin, receiver, op) = a_node_down_past_the_timeout(StuckNodeAction::Hold).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!granted(&get_node(&admin, "n2").await), "n1 keeps its slot");
    let events: Vec<String> = receiver.got().into_iter().map(|n| n.event).collect();
    assert_eq!(events, ["grant", "reboot", "stuck"]);
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_node_action_release_lets_the_next_node_go() {
    let (sb, admin, receiver, op) = a_node_down_past_the_timeout(StuckNodeAction::Release).await;
    wait_granted(&admin, "n2").await;
    // n1 keeps every mark: still granted, in progress, marked stuck.
    let n1 = get_node(&admin, "n1").await;
    assert!(granted(&n1));
    assert_eq!(annotation(&n1, keys::REBOOT_IN_PROGRESS), Some("true"));
    let mark = annotation(&n1, keys::STUCK_SINCE).expect("still marked");
    // n2 went only once n1 was past the timeout.
    let time = |s: &str| protocol::node::parse_time(s.split(' ').next().unwrap()).unwrap();
    let n2 = get_node(&admin, "n2").await;
    assert!(
        time(annotation(&n2, keys::GRANTED_AT).unwrap()) >= time(mark),
        "{mark}"
    );
    let table = wait_for("the SlotReleased Event", PATIENCE, || async {
        let t = kubectl_events(&sb).await;
        reasons_for(&t, "node/n1")
            .contains(&"SlotReleased".to_string())
            .then_some(t)
    })
    .await;
    assert!(table.contains("--stuck-node-action=release"), "{table}");
    let released = wait_for("the slot-released notification", PATIENCE, || async {
        receiver
            .got()
            .into_iter()
            .find(|n| n.event == "slot-released" && n.node == "n1")
    })
    .await;
    assert!(
        released.reason.contains("may reboot"),
        "{}",
        released.reason
    );
    // n1 comes back rebooted: released as usual, without taking a slot again (n2 keeps
    // its grant, and nothing exceeds the max of one).
    mark_rebooted(&admin, "n1").await;
    set_ready(&admin, "n1", true).await;
    wait_for("n1 released", PATIENCE, || async {
        let n = get_node(&admin, "n1").await;
        (!granted(&n) && annotation(&n, keys::STUCK_SINCE).is_none()).then_some(())
    })
    .await;
    assert!(granted(&get_node(&admin, "n2").await));
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_never_holds_the_operator_back() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    // A receiver that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        loop {
            if let Ok((c, _)) = silent.accept().await {
                conns.push(c);
            }
        }
    });
    let mut notify = notify_to(hook);
    notify.timeout = Duration::from_secs(30);
    notify.queue_capacity = 1;
    let mut cfg = operator::Config::new(NAMESPACE, op_config(2));
    cfg.identity = "operator".into();
    cfg.lease = fast_lease();
    cfg.notify = Some(notify);
    let metrics = cfg.metrics.clone();
    let op = Replica::start_with(&sb, "operator", cfg).unwrap();
    wait_for_leader(&admin, "operator", PATIENCE).await;
    for n in ["n1", "n2"] {
        mark_reboot_needed(&admin, n).await;
    }
    // Both granted at once while the first notification hangs; the queue of one drops.
    for n in ["n1", "n2"] {
        wait_for("the grant", PATIENCE, || async {
            granted(&get_node(&admin, n).await).then_some(())
        })
        .await;
    }
    for n in ["n1", "n2"] {
        mark_rebooted(&admin, n).await;
    }
    wait_for("both released", PATIENCE, || async {
        let mut done = true;
        for n in ["n1", "n2"] {
            done &= !granted(&get_node(&admin, n).await);
        }
        done.then_some(())
    })
    .await;
    wait_for("both releases counted", PATIENCE, || async {
        (metrics.reboots_completed() == 2).then_some(())
    })
    .await;
    wait_for("drops to be counted", PATIENCE, || async {
        (metrics.notifications_dropped("queue_full") >= 1).then_some(())
    })
    .await;
    op.stop().await.unwrap();
}

// ---- the real binary ----

const BIN: &str = env!("CARGO_BIN_EXE_update-operator");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Ok(path) = std::env::var("PATH") {
        c.env("PATH", path);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_metrics_health_and_readiness_and_logs_json() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let kubeconfig = sb.kubeconfig_path();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().unwrap();
    let mut child = command(
        &["--metrics-address", &listen, "--log-format", "json"],
        &[
            ("POD_NAMESPACE", NAMESPACE),
            ("UPDATE_OPERATOR_KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("HOSTNAME", "operator-pod-1"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for("/healthz", PATIENCE, || async {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => Some(()),
            Err(_) => None,
        }
    })
    .await;
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".into()));
    wait_for("/readyz", PATIENCE, || async {
        (http_get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(http_get(addr, "/nothing").await.0, 404);
    mark_reboot_needed(&admin, "n1").await;
    wait_granted(&admin, "n1").await;
    let m = wait_for("the grant in /metrics", PATIENCE, || async {
        let (_, m) = http_get(addr, "/metrics").await;
        (sample(&m, "fluo_grants_total") == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(sample(&m, "fluo_operator_leader"), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "fluo_nodes{state=\"granted\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(m.ends_with("# EOF\n"));

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
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    // Every line is a JSON object with a level and a message.
    let mut lines = 0;
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
        if v["message"] == "update-operator starting" {
            assert!(
                v["identity"]
                    .as_str()
                    .unwrap()
                    .starts_with("operator-pod-1_"),
                "fields at the top level: {line}"
            );
        }
        lines += 1;
    }
    assert!(stderr.contains("serving /metrics"), "{stderr}");
    assert!(lines >= 3, "{stderr}");
}

#[tokio::test]
async fn the_binary_rejects_bad_metrics_and_notify_values_naming_the_flag() {
    for (args, flag, code) in [
        (
            vec!["--metrics-address", "nonsense"],
            "--metrics-address",
            2,
        ),
        (vec!["--metrics-address=8080"], "--metrics-address", 2),
        (vec!["-metrics-address=1.2.3.4"], "--metrics-address", 2),
        (vec!["--notify-url", "ftp://x/y"], "--notify-url", 2),
        (vec!["--notify-url=hooks.example.com"], "--notify-url", 2),
    ] {
        let out = command(&args, &[("POD_NAMESPACE", "ns")])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    // Taken: the startup fails naming the flag.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let sb = sandbox().await;
    let kubeconfig = sb.kubeconfig_path();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        command(
            &["--metrics-address", &addr],
            &[
                ("POD_NAMESPACE", NAMESPACE),
                ("UPDATE_OPERATOR_KUBECONFIG", kubeconfig.to_str().unwrap()),
            ],
        )
        .output(),
    )
    .await
    .expect("exits")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--metrics-address"), "{stderr}");
    // Disabled: '' and 'off' are accepted (the binary then runs; the flag check is enough).
    for off in ["", "off"] {
        let s = operator::cli::parse([
            "update-operator",
            "--namespace",
            "ns",
            "--metrics-address",
            off,
        ])
        .map_err(|e| format!("{e:?}"))
        .unwrap();
        assert_eq!(s.config.metrics_address, None);
    }
    let s = operator::cli::parse(["update-operator", "--namespace", "ns"])
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    assert_eq!(
        s.config.metrics_address,
        Some("0.0.0.0:8080".parse().unwrap())
    );
    assert!(s.config.notify.is_none());
}

/// Every `fluo_*` series the alerts and the dashboard in deploy/ query is one the binaries
/// expose (and the other way round, every metric is documented in docs/metrics.md).
#[test]
fn deploy_queries_and_docs_match_the_exposed_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let mut exposed = std::collections::BTreeSet::new();
    let op = operator::metrics::Metrics::new();
    let ag = agent::metrics::Metrics::new();
    for text in [op.encode(), ag.encode()] {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // A histogram's family name (in texts about it) is fine too.
            if let Some(base) = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
            {
                exposed.insert(base.to_string());
            }
            exposed.insert(name);
        }
    }
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("fluo_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            out.insert(name);
        }
        out
    };
    for file in [
        "deploy/prometheus/rules.yaml",
        "deploy/prometheus/rules_test.yaml",
        "deploy/monitoring/prometheusrule.yaml",
        "deploy/grafana/dashboard.json",
    ] {
        for name in names(&read(file)) {
            assert!(
                exposed.contains(&name),
                "{file} uses {name}, which is not exposed; exposed: {exposed:?}"
            );
        }
    }
    let doc = read("docs/metrics.md");
    for name in &exposed {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            doc.contains(&format!("`{base}`")),
            "{base} is not in docs/metrics.md"
        );
    }
}
