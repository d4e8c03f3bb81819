//! The real `fluoctl` and `kubectl-fluo` binaries against a sandbox cluster
//! (no operator running, so the states set by hand stay): `status` (table,
//! JSON, as a kubectl plugin), `pause`/`resume` of a node and of the
//! cluster, `plan`, and an unreachable server.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use protocol::keys;
use serde_json::{Value, json};

const FLUOCTL: &str = env!("CARGO_BIN_EXE_fluoctl");
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-fluo");
const NS: &str = "reboot-coordinator";
const LEASE: &str = "flatcar-linux-update-operator-lock";

/// Runs a program with a clean environment (no KUBECONFIG, UPDATE_OPERATOR_*, POD_NAMESPACE).
async fn run_prog(prog: &str, args: &[&str], path: Option<&str>) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut c = tokio::process::Command::new(prog);
    c.args(args).env_clear().env("HOME", home.path());
    let mut p = std::env::var("PATH").unwrap_or_default();
    if let Some(extra) = path {
        p = format!("{extra}:{p}");
    }
    c.env("PATH", p);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), c.output())
        .await
        .expect("finished within 60 s")
        .expect("spawn");
    eprintln!(
        "$ {prog} {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn fluoctl(args: &[&str]) -> Output {
    run_prog(FLUOCTL, args, None).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn patch_node(client: &kube::Client, node: &str, anns: Value, labels: Value) {
    let api: Api<Node> = Api::all(client.clone());
    api.patch(
        node,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": anns, "labels": labels}})),
    )
    .await
    .unwrap();
}

async fn annotations(client: &kube::Client, node: &str) -> BTreeMap<String, String> {
    let api: Api<Node> = Api::all(client.clone());
    api.get(node)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
}

async fn lease_annotations(client: &kube::Client) -> Option<BTreeMap<String, String>> {
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    api.get_opt(LEASE)
        .await
        .unwrap()
        .map(|l| l.metadata.annotations.unwrap_or_default())
}

fn create_lease(sb: &sandbox::Sandbox, holder: &str) {
    let _ = sb.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}));
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    sb.create(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": NS},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600,
                 "acquireTime": now, "renewTime": now}
    }))
    .unwrap();
}

/// Nine nodes, one per state.
async fn states_cluster() -> sandbox::Sandbox {
    let sb = sandbox::Sandbox::start(Default::default()).await.unwrap();
    for i in 1..=9 {
        sb.add_node(&format!("node-0{i}"), &[]).unwrap();
    }
    let c = sb.client();
    let t = "2024-05-01T10:00:00Z";
    let n = json!({});
    let needed = json!({keys::REBOOT_NEEDED: "true", keys::NEW_VERSION: "4152.2.0",
                        keys::REBOOT_NEEDED_SINCE: t});
    patch_node(&c, "node-02", needed.clone(), n.clone()).await;
    patch_node(
        &c,
        "node-03",
        needed.clone(),
        json!({keys::BEFORE_REBOOT: "true"}),
    )
    .await;
    patch_node(
        &c,
        "node-04",
        json!({keys::REBOOT_NEEDED: "true", keys::REBOOT_OK: "true", keys::GRANTED_AT: t}),
        n.clone(),
    )
    .await;
    patch_node(
        &c,
        "node-05",
        json!({keys::REBOOT_NEEDED: "true", keys::REBOOT_OK: "true", keys::REBOOT_IN_PROGRESS: "true"}),
        n.clone(),
    )
    .await;
    patch_node(
        &c,
        "node-06",
        json!({keys::REBOOT_OK: "true"}),
        json!({keys::AFTER_REBOOT: "true"}),
    )
    .await;
    patch_node(
        &c,
        "node-07",
        json!({keys::REBOOT_NEEDED: "true", keys::REBOOT_PAUSED: "true"}),
        n.clone(),
    )
    .await;
    patch_node(
        &c,
        "node-08",
        json!({keys::REBOOT_NEEDED: "true", keys::REBOOT_OK: "true", keys::GRANTED_AT: t,
               keys::STUCK_SINCE: format!("{t} not back within --reboot-timeout=30m")}),
        n.clone(),
    )
    .await;
    patch_node(&c, "node-09", json!({keys::REBOOT_OK: "yes"}), n).await;
    sb
}

const EXPECTED: [(&str, &str); 9] = [
    ("node-01", "idle"),
    ("node-02", "needs_reboot"),
    ("node-03", "waiting_for_before_hooks"),
    ("node-04", "granted"),
    ("node-05", "draining"),
    ("node-06", "waiting_for_after_hooks"),
    ("node-07", "paused"),
    ("node-08", "stuck"),
    ("node-09", "malformed"),
];

fn check_table(out: &str, url: &str) {
    for (node, state) in EXPECTED {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{node} ")))
            .unwrap_or_else(|| panic!("no row for {node}:\n{out}"));
        let cols: Vec<&str> = line
            .split("   ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(cols[1], state, "{line}");
    }
    assert!(out.contains(url), "{out}");
    // Slots: before-reboot, granted, in progress, after-reboot, stuck, malformed (conservative).
    assert!(out.contains("slots:   6 held / "), "{out}");
    assert!(out.contains("leader:  op-1"), "{out}");
    assert!(out.contains("paused:  no"), "{out}");
    assert!(out.contains("window:  always open"), "{out}");
    // The parse error of the malformed node, naming key and value.
    assert!(
        out.contains(&format!(
            "node-09 (malformed): node node-09: annotation {} has malformed value \"yes\"",
            keys::REBOOT_OK
        )),
        "{out}"
    );
    // OS version from the version label or osImage; new version; since.
    let row2 = out.lines().find(|l| l.starts_with("node-02 ")).unwrap();
    assert!(
        row2.contains("4081.2.0") && row2.contains("4152.2.0") && row2.contains('d'),
        "{row2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_state_as_table_json_and_kubectl_plugin() {
    let sb = states_cluster().await;
    create_lease(&sb, "op-1");
    let url = sb.url();

    let out = fluoctl(&["status", "--server", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    check_table(&stdout(&out), &url);
    assert!(stdout(&out).contains("6 held / 1 max (--max-rebooting-nodes 1, the default)"));

    let out = fluoctl(&["status", "--server", &url, "-o", "json"]).await;
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let states: BTreeMap<String, String> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().into(),
                n["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (node, state) in EXPECTED {
        assert_eq!(states[node], state);
    }
    assert_eq!(v["slots_held"], 6);
    assert_eq!(v["max_rebooting"], 1);
    assert_eq!(v["leader"], "op-1");
    assert_eq!(v["paused"], false);
    assert!(
        v["nodes"][8]["detail"]
            .as_str()
            .unwrap()
            .contains("\"yes\"")
    );

    // --max-rebooting-nodes as the operator runs with it.
    let out = fluoctl(&["status", "--server", &url, "--max-rebooting-nodes", "50%"]).await;
    assert!(stdout(&out).contains("6 held / 4 max (--max-rebooting-nodes 50%, given)"));

    // The kubeconfig instead of --server: the admin's, HTTPS with the sandbox's CA and a token.
    let kc = sb.kubeconfig_path();
    let out = fluoctl(&["status", "--kubeconfig", kc.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    check_table(&stdout(&out), &sb.https_url());

    // The maximum the operator's Deployment runs with, unless given.
    sb.create(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "update-operator", "namespace": NS},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "update-operator"}},
                 "template": {"metadata": {"labels": {"app": "update-operator"}},
                              "spec": {"containers": [{"name": "update-operator", "image": "x",
                                  "command": ["/bin/update-operator"],
                                  "args": ["--max-rebooting-nodes", "3"]}]}}}
    }))
    .unwrap();
    let out = fluoctl(&["status", "--server", &url]).await;
    assert!(
        stdout(&out).contains(
            "6 held / 3 max (--max-rebooting-nodes 3, from Deployment reboot-coordinator/update-operator)"
        ),
        "{}",
        stdout(&out)
    );
    let out = fluoctl(&["status", "--server", &url, "--max-rebooting-nodes", "2"]).await;
    assert!(stdout(&out).contains("6 held / 2 max (--max-rebooting-nodes 2, given)"));

    // The plugin binary, directly and through the real kubectl.
    let out = run_prog(PLUGIN, &["status", "--server", &url], None).await;
    assert!(out.status.success());
    check_table(&stdout(&out), &url);
    let dir = Path::new(PLUGIN)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    // kubectl refuses flags before a plugin's name ("flags cannot be placed before plugin
    // name"), so --server follows it and reaches the plugin.
    let out = run_prog("kubectl", &["fluo", "status", "--server", &url], Some(&dir)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    check_table(&stdout(&out), &url);
    let out = run_prog("kubectl", &["fluo", "--help"], Some(&dir)).await;
    assert!(stdout(&out).contains("kubectl fluo"), "{}", stdout(&out));
}

/// Sets the operator-settings annotation on the Lease.
async fn publish(client: &kube::Client, value: &str) {
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    api.patch(
        LEASE,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {keys::OPERATOR_SETTINGS: value}}})),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_published_on_the_lease_are_used_unless_a_flag_is_given() {
    let sb = states_cluster().await;
    let url = sb.url();
    let c = sb.client();

    // No Lease: the defaults, and why.
    let out = fluoctl(&["status", "--server", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("1 max (--max-rebooting-nodes 1, the default)"),
        "{text}"
    );
    assert!(
        text.contains("settings: the flags given and the defaults (no Lease reboot-coordinator/"),
        "{text}"
    );

    // A Lease without the annotation.
    create_lease(&sb, "op-1");
    let out = fluoctl(&["status", "--server", &url]).await;
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "(no {} annotation on Lease",
            keys::OPERATOR_SETTINGS
        )),
        "{text}"
    );

    // What an operator with --max-rebooting-nodes 2 and a 10m interval publishes.
    let published =
        protocol::settings::PublishedSettings::of(&protocol::operator::OperatorConfig {
            max_rebooting: protocol::operator::MaxRebooting::Count(2),
            min_reboot_interval: chrono::TimeDelta::minutes(10),
            ..Default::default()
        });
    publish(&c, &published.to_annotation()).await;
    let out = fluoctl(&["status", "--server", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("6 held / 2 max (--max-rebooting-nodes 2, from the operator's Lease)"),
        "{text}"
    );
    assert!(
        text.contains("settings: from the operator's Lease\n"),
        "{text}"
    );
    let out = fluoctl(&["status", "--server", &url, "-o", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["max_rebooting"], 2);
    assert_eq!(v["max_rebooting_source"], "lease");
    assert_eq!(v["settings"]["from_lease"], true);

    // A flag wins, and says so; the other settings still come from the Lease.
    let out = fluoctl(&["status", "--server", &url, "--max-rebooting-nodes", "3"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("6 held / 3 max (--max-rebooting-nodes 3, given)"),
        "{text}"
    );
    assert!(
        text.contains(
            "settings: from the operator's Lease; given on the command line instead: --max-rebooting-nodes"
        ),
        "{text}"
    );
    let out = fluoctl(&["plan", "--server", &url, "--max-rebooting-nodes", "3"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("at most 3 at a time (--max-rebooting-nodes, given)"),
        "{text}"
    );
    let out = fluoctl(&["plan", "--server", &url]).await;
    let text = stdout(&out);
    assert!(
        text.contains(
            "settings: from the operator's Lease; at most 2 at a time (from the operator's Lease)"
        ),
        "{text}"
    );

    // A malformed or unknown-version annotation is ignored with a note; status still shows.
    for (value, reason) in [
        ("{not json", "not a JSON object"),
        (r#"{"version":99}"#, "unknown format version 99"),
    ] {
        publish(&c, value).await;
        for cmd in ["status", "plan"] {
            let out = fluoctl(&[cmd, "--server", &url]).await;
            assert!(out.status.success(), "{cmd}: {}", stderr(&out));
            let text = stdout(&out);
            assert!(
                text.contains(&format!(
                    "ignored the annotation {}",
                    keys::OPERATOR_SETTINGS
                )) && text.contains(reason),
                "{cmd}: {text}"
            );
        }
        let out = fluoctl(&["status", "--server", &url]).await;
        let text = stdout(&out);
        assert!(
            text.contains("1 max (--max-rebooting-nodes 1, the default)"),
            "{text}"
        );
        check_table(&text, &url);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_a_node_and_the_cluster() {
    let sb = sandbox::Sandbox::start(Default::default()).await.unwrap();
    sb.add_node("node-01", &[]).unwrap();
    let c = sb.client();
    let url = sb.url();

    // A node.
    let out = fluoctl(&["pause", "node-01", "--server", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("node node-01: paused"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains(keys::REBOOT_PAUSED));
    assert_eq!(
        annotations(&c, "node-01")
            .await
            .get(keys::REBOOT_PAUSED)
            .map(String::as_str),
        Some("true")
    );
    let out = fluoctl(&["pause", "node-01", "--server", &url]).await;
    assert!(out.status.success() && stdout(&out).contains("already paused"));
    let out = fluoctl(&["resume", "node-01", "--server", &url]).await;
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("node node-01: resumed: removed"),
        "{}",
        stdout(&out)
    );
    assert!(
        !annotations(&c, "node-01")
            .await
            .contains_key(keys::REBOOT_PAUSED)
    );
    let out = fluoctl(&["pause", "node-99", "--server", &url]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no node \"node-99\""),
        "{}",
        stderr(&out)
    );

    // The cluster, without an operator (no Lease): a clear failure, unless --create.
    let out = fluoctl(&["pause", "--server", &url]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("the update-operator is not running in namespace \"reboot-coordinator\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(lease_annotations(&c).await, None);
    sb.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    let out = fluoctl(&["pause", "--server", &url, "--create"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("created Lease reboot-coordinator/flatcar-linux-update-operator-lock")
    );
    assert_eq!(
        lease_annotations(&c)
            .await
            .unwrap()
            .get(keys::PAUSED)
            .map(String::as_str),
        Some("true")
    );
    let out = fluoctl(&["status", "--server", &url]).await;
    assert!(stdout(&out).contains("paused:  yes"), "{}", stdout(&out));
    let out = fluoctl(&["resume", "--server", &url]).await;
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("cluster: resumed: removed"),
        "{}",
        stdout(&out)
    );
    assert!(
        !lease_annotations(&c)
            .await
            .unwrap()
            .contains_key(keys::PAUSED)
    );
    let out = fluoctl(&["pause", "--server", &url]).await;
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("cluster: paused: set"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        lease_annotations(&c)
            .await
            .unwrap()
            .get(keys::PAUSED)
            .map(String::as_str),
        Some("true")
    );
}

fn plan_steps(v: &Value) -> Vec<(String, usize, String)> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap().to_string(),
                s["batch"].as_u64().unwrap() as usize,
                s["zone"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_orders_every_needing_node_in_batches() {
    let sb = sandbox::Sandbox::start(Default::default()).await.unwrap();
    let zone = "topology.kubernetes.io/zone";
    for i in 1..=7 {
        let z = if i % 2 == 1 { "zone-a" } else { "zone-b" };
        sb.add_node(&format!("node-0{i}"), &[(zone, z)]).unwrap();
    }
    let c = sb.client();
    // node-07 waited longest: it goes first; node-06 is paused; node-05 needs nothing.
    for (node, since) in [
        ("node-01", "2024-05-01T10:00:00Z"),
        ("node-02", "2024-05-01T10:00:00Z"),
        ("node-03", "2024-05-01T10:00:00Z"),
        ("node-04", "2024-05-01T10:00:00Z"),
        ("node-07", "2024-05-01T09:00:00Z"),
    ] {
        patch_node(
            &c,
            node,
            json!({keys::REBOOT_NEEDED: "true", keys::REBOOT_NEEDED_SINCE: since}),
            json!({}),
        )
        .await;
    }
    patch_node(
        &c,
        "node-06",
        json!({keys::REBOOT_NEEDED: "true", keys::REBOOT_PAUSED: "true"}),
        json!({}),
    )
    .await;
    let url = sb.url();

    let out = fluoctl(&["plan", "--server", &url, "-o", "json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = plan_steps(&v);
    let names: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        ["node-07", "node-01", "node-02", "node-03", "node-04"]
    );
    assert_eq!(
        steps.iter().map(|s| s.1).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(v["duration_seconds"], 5 * 300);
    assert_eq!(v["skipped"][0]["node"], "node-06");

    let out = fluoctl(&[
        "plan",
        "--server",
        &url,
        "--max-rebooting-nodes",
        "2",
        "--reboot-estimate",
        "10m",
        "-o",
        "json",
    ])
    .await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = plan_steps(&v);
    assert_eq!(steps.len(), 5);
    let mut per_batch: BTreeMap<usize, usize> = BTreeMap::new();
    for s in &steps {
        *per_batch.entry(s.1).or_default() += 1;
    }
    assert_eq!(per_batch.values().copied().collect::<Vec<_>>(), [2, 2, 1]);
    // Longest waiting first, within a batch too.
    assert_eq!(steps[0].0, "node-07");
    assert_eq!(v["duration_seconds"], 3 * 600);

    // Per zone: at most one node of a zone at a time.
    let out = fluoctl(&[
        "plan",
        "--server",
        &url,
        "--max-rebooting-nodes",
        "3",
        "--max-rebooting-nodes-per-zone",
        "1",
        "-o",
        "json",
    ])
    .await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = plan_steps(&v);
    assert_eq!(steps.len(), 5);
    let mut zones_per_batch: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for s in &steps {
        zones_per_batch.entry(s.1).or_default().push(s.2.clone());
    }
    for zs in zones_per_batch.values() {
        let mut d = zs.clone();
        d.dedup();
        assert_eq!(d.len(), zs.len(), "{zones_per_batch:?}");
    }
    assert_eq!(v["zones"]["zone-a"].as_array().unwrap().len(), 3);

    // The table: every node, the skipped one with its reason, the duration.
    let out = fluoctl(&["plan", "--server", &url, "--max-rebooting-nodes", "2"]).await;
    assert!(out.status.success());
    let text = stdout(&out);
    for n in ["node-01", "node-02", "node-03", "node-04", "node-07"] {
        assert!(text.contains(n), "{text}");
    }
    assert!(text.contains("node-06: paused"), "{text}");
    assert!(text.contains("estimated duration: 15m"), "{text}");

    // The SVG timeline: valid, a row per planned node.
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("plan.svg");
    let out = fluoctl(&[
        "plan",
        "--server",
        &url,
        "--max-rebooting-nodes",
        "2",
        "--timeline",
        svg.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("valid SVG");
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for n in ["node-01", "node-02", "node-03", "node-04", "node-07"] {
        assert!(labels.contains(&n), "{n} not in {labels:?}");
    }
    assert!(!labels.contains(&"node-06"));

    // A window: the plan waits for it (and says when it opens).
    let out = fluoctl(&[
        "plan",
        "--server",
        &url,
        "--reboot-window",
        "Mon-Sun 03:00-03:20",
        "-o",
        "json",
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan_steps(&v).len(), 5);
    assert!(
        v["windows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["open"] == true),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    for cmd in [
        vec!["status"],
        vec!["plan"],
        vec!["pause", "node-01"],
        vec!["resume"],
    ] {
        let mut args = cmd.clone();
        args.extend(["--server", &url]);
        let out = fluoctl(&args).await;
        assert!(!out.status.success());
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(&url), "{}", stderr(&out));
        assert!(stderr(&out).contains("error"), "{}", stderr(&out));
        // One message, not kube's log of the same failure as well.
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_the_slots_of_deleted_nodes_the_operator_still_holds() {
    let sb = states_cluster().await;
    create_lease(&sb, "op-1");
    let url = sb.url();
    let admin = sb.client_as("admin").unwrap();
    let since = chrono::Utc::now() - chrono::TimeDelta::minutes(3);
    let value = format!(
        r#"{{"gone-1":{{"since":"{}","zone":"z1"}}}}"#,
        protocol::node::format_time(since)
    );
    let api: Api<Lease> = Api::namespaced(admin.clone(), NS);
    let set = |v: String| {
        let api = api.clone();
        async move {
            api.patch(
                LEASE,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"metadata": {"annotations": {keys::DEPARTED_SLOTS: v}}}),
                ),
            )
            .await
            .unwrap();
        }
    };
    set(value).await;
    let out = fluoctl(&["status", "--server", &url]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("7 held / 1 max")
            && text.contains("gone-1 (Node deleted 3m")
            && text.contains("counts until it is back and Ready"),
        "{text}"
    );
    let out = fluoctl(&["status", "--server", &url, "-o", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["slots_held"], 7);
    assert_eq!(v["departed"][0]["node"], "gone-1");
    assert_eq!(v["departed"][0]["zone"], "z1");
    // Malformed: said, naming the annotation.
    set("[]".into()).await;
    let out = fluoctl(&["status", "--server", &url]).await;
    let text = stdout(&out);
    assert!(
        text.contains("6 held / 1 max")
            && text.contains(&format!("warning: annotation {}", keys::DEPARTED_SLOTS)),
        "{text}"
    );
}
