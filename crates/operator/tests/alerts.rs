//! `--prometheus-url` alert blockers against the real Prometheus and Alertmanager (Debian's
//! `prometheus` and `prometheus-alertmanager`, started on loopback here), the sandbox and
//! the operator: firing alerts block every grant and show in Events and metrics; a silence
//! in Alertmanager lifts the block; `--alert-filter-regexp` ignores alerts by name;
//! `--alert-firing-only` ignores pending ones; a Prometheus that does not answer blocks.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use operator::Config;
use operator::alerts::{AlertFilter, AlertsConfig, check_once};
use protocol::keys;
use serde_json::json;
use telemetry::testing::http_get;

/// A child process killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &'static str, bin: &str, args: &[String], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                // The binaries are named as their Debian packages.
                panic!("{bin} does not start ({e}): apt-get install {bin} (scripts/setup installs every tool the tests need)")
            });
        Proc { name, child, log }
    }

    /// Waits until `path` answers 200 on `addr`; shows the log if it never does.
    async fn wait_ready(&mut self, addr: SocketAddr, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if http_get(addr, path).await.0 == 200 {
                return;
            }
            let exited = self.child.try_wait().unwrap();
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("{} not ready ({exited:?}):\n{log}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn alertmanager(dir: &Path) -> (Proc, SocketAddr) {
    let addr = free_addr();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let mut p = Proc::spawn(
        "alertmanager",
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address={addr}"),
            // No gossip: a lone instance on loopback.
            "--cluster.listen-address=".into(),
        ],
        dir,
    );
    p.wait_ready(addr, "/-/ready").await;
    (p, addr)
}

/// Prometheus with `rules` (a YAML list of alerting rules), evaluated every second, sending
/// to the Alertmanager at `am`; on `addr` if given.
async fn prometheus(
    dir: &Path,
    rules: &str,
    am: Option<SocketAddr>,
    addr: Option<SocketAddr>,
) -> (Proc, SocketAddr) {
    let addr = addr.unwrap_or_else(free_addr);
    let rules_file = dir.join("rules.yml");
    std::fs::write(
        &rules_file,
        format!("groups:\n  - name: test\n    interval: 1s\n    rules:\n{rules}"),
    )
    .unwrap();
    let alerting = am.map_or(String::new(), |am| {
        format!("alerting:\n  alertmanagers:\n    - static_configs: [{{targets: [\"{am}\"]}}]\n")
    });
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  evaluation_interval: 1s\n  external_labels: {{cluster: test}}\nrule_files: [{}]\n{alerting}",
            rules_file.display()
        ),
    )
    .unwrap();
    let mut p = Proc::spawn(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address={addr}"),
            // Alerts evaluated before the Alertmanager is discovered are dropped; resend
            // soon rather than after the default minute.
            "--rules.alert.resend-delay=1s".into(),
        ],
        dir,
    );
    p.wait_ready(addr, "/-/ready").await;
    (p, addr)
}

const ALWAYS_FIRING: &str =
    "      - alert: AlwaysFiring\n        expr: vector(1)\n        labels: {severity: critical}\n";
const IGNORED: &str = "      - alert: RebootRequired\n        expr: vector(1)\n";
const PENDING: &str = "      - alert: NotYet\n        expr: vector(1)\n        for: 1h\n";

/// Waits until a check with `cfg` (the operator's own) finds exactly `blockers`.
async fn wait_blockers(cfg: &AlertsConfig, blockers: &[&str]) {
    wait_for(
        &format!("Prometheus to show {blockers:?}"),
        PATIENCE,
        || async { (check_once(cfg).await.blockers == blockers).then_some(()) },
    )
    .await
}

/// A POST of `body` as JSON; (status, answer).
async fn post_json(url: &str, body: serde_json::Value) -> (u16, String) {
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.expect("an answer");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The notes of the `RebootBlocked` Events about `node`.
async fn blocked_notes(client: &kube::Client, node: &str) -> Vec<String> {
    Api::<Event>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("RebootBlocked")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node)
        })
        .filter_map(|e| e.note)
        .collect()
}

/// Starts the operator with `alerts` on a sandbox whose node `n1` needs a reboot. Events
/// and blocked counts are about changes, so `n1` is paused until the operator has seen it,
/// then resumed: from then on only the alerts can block it.
async fn start(
    sb: &sandbox::Sandbox,
    alerts: AlertsConfig,
) -> (Replica, operator::metrics::Metrics) {
    sb.add_node("n1", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    mark_reboot_needed(&admin, "n1").await;
    annotate(&admin, "n1", &[(keys::REBOOT_PAUSED, Some("true"))]).await;
    let mut cfg = Config::new(NAMESPACE, op_config(1));
    cfg.identity = "operator".into();
    cfg.lease = fleet::fast_lease();
    cfg.alerts = Some(alerts);
    let metrics = cfg.metrics.clone();
    let op = Replica::start_with(sb, "operator", cfg).expect("operator starts");
    wait_for("the operator to see n1", PATIENCE, || async {
        (metrics.nodes_in("paused") == 1).then_some(())
    })
    .await;
    annotate(&admin, "n1", &[(keys::REBOOT_PAUSED, None)]).await;
    (op, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_alerts_block_grants_until_silenced_in_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let ((_am, am), sb) = tokio::join!(alertmanager(dir.path()), sandbox());
    let (_prom, prom) = prometheus(
        dir.path(),
        &format!("{ALWAYS_FIRING}{IGNORED}"),
        Some(am),
        None,
    )
    .await;
    let unfiltered = AlertsConfig::new(&format!("http://{prom}")).unwrap();
    wait_blockers(
        &unfiltered,
        &[
            "Prometheus alert AlwaysFiring is firing",
            "Prometheus alert RebootRequired is firing",
        ],
    )
    .await;

    let mut alerts = unfiltered.clone();
    alerts.alertmanager_url = Some(format!("http://{am}/").parse().unwrap());
    // kured's meaning: the regexp names alerts to ignore.
    alerts.filter = Some(AlertFilter(regex::Regex::new("^RebootRequired$").unwrap()));
    alerts.interval = Duration::from_millis(500);
    let (op, metrics) = start(&sb, alerts).await;
    let admin = sb.client_as("admin").unwrap();

    let note = wait_for("a RebootBlocked Event", PATIENCE, || async {
        blocked_notes(&admin, "n1").await.into_iter().next()
    })
    .await;
    assert!(
        note.contains("Prometheus alert AlwaysFiring is firing"),
        "{note}"
    );
    assert!(!note.contains("RebootRequired"), "filtered out: {note}");
    assert!(metrics.grants_blocked("alerts") >= 1);
    // Several checks later, still no grant.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !granted(&get_node(&admin, "n1").await),
        "blocked by an alert"
    );

    // Silence it in Alertmanager: the grant follows (RebootRequired still fires, ignored).
    let now = chrono::Utc::now();
    let (status, answer) = post_json(
        &format!("http://{am}/api/v2/silences"),
        json!({
            "matchers": [{"name": "alertname", "value": "AlwaysFiring", "isRegex": false, "isEqual": true}],
            "startsAt": now.to_rfc3339(),
            "endsAt": (now + chrono::TimeDelta::hours(1)).to_rfc3339(),
            "createdBy": "test",
            "comment": "maintenance",
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    wait_for("n1 granted after the silence", PATIENCE, || async {
        granted(&get_node(&admin, "n1").await).then_some(())
    })
    .await;
    // Silences count only with --alertmanager-url.
    assert_eq!(
        check_once(&unfiltered).await.blockers,
        [
            "Prometheus alert AlwaysFiring is firing",
            "Prometheus alert RebootRequired is firing"
        ]
    );
    op.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_prometheus_blocks_and_pending_alerts_can_be_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox().await;
    // Nothing listens there yet.
    let addr = free_addr();
    let mut alerts = AlertsConfig::new(&format!("http://{addr}")).unwrap();
    alerts.firing_only = true;
    alerts.interval = Duration::from_millis(500);
    let (op, _metrics) = start(&sb, alerts.clone()).await;
    let admin = sb.client_as("admin").unwrap();
    let note = wait_for("a RebootBlocked Event", PATIENCE, || async {
        blocked_notes(&admin, "n1").await.into_iter().next()
    })
    .await;
    assert!(
        note.contains(&format!("Prometheus at http://{addr}/ cannot be asked")),
        "{note}"
    );
    assert!(note.contains("Connection refused"), "{note}");
    assert!(!granted(&get_node(&admin, "n1").await));

    // Prometheus comes up there with an alert that stays pending, which counts without
    // --alert-firing-only. n1 waits (paused) until the alert is in place.
    annotate(&admin, "n1", &[(keys::REBOOT_PAUSED, Some("true"))]).await;
    let (_prom, _) = prometheus(dir.path(), PENDING, None, Some(addr)).await;
    let mut all_states = alerts.clone();
    all_states.firing_only = false;
    wait_blockers(&all_states, &["Prometheus alert NotYet is pending"]).await;
    // A couple of the operator's checks later, it has seen the pending alert as well.
    tokio::time::sleep(2 * alerts.interval).await;
    annotate(&admin, "n1", &[(keys::REBOOT_PAUSED, None)]).await;
    wait_for(
        "n1 granted: firing-only ignores pending alerts",
        PATIENCE,
        || async { granted(&get_node(&admin, "n1").await).then_some(()) },
    )
    .await;
    op.stop().await.unwrap();
}

#[test]
fn alert_flags_reach_the_config() {
    let s = operator::cli::parse([
        "update-operator",
        "--namespace=ns",
        "--prometheus-url",
        "http://prometheus.monitoring:9090/prom/",
        "--alertmanager-url=https://alertmanager.monitoring:9093",
        "-alert-filter-regexp=^(RebootRequired|Watchdog)$",
        "--alert-firing-only",
        "--alert-check-interval=1m",
    ])
    .unwrap_or_else(|e| panic!("{e:?}"));
    let a = s.config.alerts.expect("alerts configured");
    assert_eq!(
        a.prometheus_url.to_string(),
        "http://prometheus.monitoring:9090/prom/"
    );
    assert_eq!(
        a.alertmanager_url.unwrap().to_string(),
        "https://alertmanager.monitoring:9093/"
    );
    assert_eq!(a.filter.unwrap().0.as_str(), "^(RebootRequired|Watchdog)$");
    assert!(a.firing_only && !a.filter_match_only);
    assert_eq!(a.interval, Duration::from_secs(60));
    // Defaults: no alerts; with a URL, pending alerts block, every 30 s.
    let s = operator::cli::parse(["update-operator", "--namespace=ns"]).unwrap();
    assert_eq!(s.config.alerts, None);
    let s = operator::cli::parse([
        "update-operator",
        "--namespace=ns",
        "--prometheus-url=http://p:9090",
    ])
    .unwrap();
    let a = s.config.alerts.unwrap();
    assert!(!a.firing_only && a.filter.is_none() && a.alertmanager_url.is_none());
    assert_eq!(a.interval, Duration::from_secs(30));
}

#[test]
fn bad_alert_flags_are_startup_errors_naming_the_flag() {
    let prom = "--prometheus-url=http://127.0.0.1:9090";
    let cases: &[(&[&str], &str)] = &[
        (&["--prometheus-url=prometheus:9090"], "--prometheus-url"),
        (
            &["--prometheus-url=http://u:p@prom:9090"],
            "--prometheus-url",
        ),
        (
            &[prom, "--alert-filter-regexp=(Reboot"],
            "--alert-filter-regexp",
        ),
        (&[prom, "--alertmanager-url=am:9093"], "--alertmanager-url"),
        (
            &[prom, "--alert-check-interval=0s"],
            "--alert-check-interval",
        ),
        (
            &[prom, "--alert-check-interval=30"],
            "--alert-check-interval",
        ),
        (
            &[prom, "--alert-filter-match-only"],
            "--alert-filter-match-only",
        ),
        (&["--alertmanager-url=http://am:9093"], "--alertmanager-url"),
        (&["--alert-filter-regexp=Watchdog"], "--alert-filter-regexp"),
        (&["--alert-firing-only"], "--alert-firing-only"),
    ];
    for (args, flag) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_update-operator"))
            .args(*args)
            .env_clear()
            .env("POD_NAMESPACE", "reboot-coordinator")
            .stdin(Stdio::null())
            .output()
            .expect("run update-operator");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        // clap's words for a bad value ("error: invalid value 'x' for '--flag <URL>'"), ours
        // for flags that do not go together ("update-operator: error: --flag: ..."): the
        // first line names the flag either way.
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(&format!("'{flag} "))
                || first.starts_with(&format!("update-operator: error: {flag}")),
            "{args:?}: expected {flag} in the first line of: {stderr}"
        );
    }
    // From the environment as well, saying so.
    let out = Command::new(env!("CARGO_BIN_EXE_update-operator"))
        .env_clear()
        .env("POD_NAMESPACE", "reboot-coordinator")
        .env("UPDATE_OPERATOR_PROMETHEUS_URL", "ftp://prom")
        .output()
        .expect("run update-operator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--prometheus-url") && stderr.contains("UPDATE_OPERATOR_PROMETHEUS_URL"),
        "{stderr}"
    );
}
