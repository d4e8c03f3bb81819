//! The real `fluoctl sandbox` binary: a whole rollout with the report, the SVG
//! timeline and kubectl watching through --listen; reboots asked for from
//! outside with --no-updates; bad flags.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fluoctl");
const NEW_VERSION: &str = "4152.2.0";

/// The binary with a clean environment (no UPDATE_OPERATOR_* or KUBECONFIG).
fn fluoctl(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("sandbox").args(args).env_clear().stdin(Stdio::null());
    if let Ok(path) = std::env::var("PATH") {
        c.env("PATH", path);
    }
    c
}

/// Runs `fluoctl sandbox ARGS` to the end (at most `limit`).
fn run(args: &[&str], limit: Duration) -> Output {
    let child = fluoctl(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fluoctl");
    wait(child, limit)
}

fn wait(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "fluoctl did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `fluoctl sandbox`, its stdout lines arriving on a channel.
struct Running {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = fluoctl(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fluoctl");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child: Some(child),
            lines,
            stdout: Vec::new(),
        }
    }

    /// The admin kubeconfig, from the printed banner (kubectl sends credentials only over
    /// HTTPS, which the kubeconfig names with the sandbox's CA).
    fn kubeconfig(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.stdout.push(line.clone());
                if let Some(path) = line.strip_prefix("admin kubeconfig: ") {
                    return path.trim().to_string();
                }
            }
        }
        panic!("no admin kubeconfig printed; stdout: {:#?}", self.stdout);
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_some()
    }

    /// Waits for the exit; returns (status success, all stdout, stderr).
    fn finish(mut self, limit: Duration) -> (bool, String, String) {
        let out = wait(self.child.take().unwrap(), limit);
        // The reader thread ends with the pipe.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.stdout.push(line);
        }
        (
            out.status.success(),
            self.stdout.join("\n"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `kubectl ARGS` with the kubeconfig `kubeconfig` and a private cache.
fn kubectl(kubeconfig: &str, cache: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--cache-dir")
        .arg(cache)
        .args(["--request-timeout", "10s"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs (it must be installed)")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the report was written");
    serde_json::from_str(&text).expect("the report is JSON")
}

/// Every text node of the SVG, which must be well-formed XML with an `svg` root.
fn svg_texts(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("the timeline was written");
    let doc = roxmltree::Document::parse(&text).expect("the timeline is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert_eq!(
        doc.root_element().tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    doc.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn rollout_of_six_nodes_two_at_a_time_reports_and_kubectl_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("R.json");
    let timeline = dir.path().join("T.svg");
    let mut sb = Running::start(&[
        "--nodes",
        "6",
        "--max-rebooting-nodes",
        "2",
        "--pods-per-node",
        "3",
        "--reboot-seconds",
        "1",
        "--drain-seconds",
        "1",
        "--exit-when-done",
        "--report",
        report.to_str().unwrap(),
        "--timeline",
        timeline.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let url = sb.kubeconfig();

    // Watch the rollout with the real kubectl until fluoctl exits.
    let cache = dir.path().join("kube-cache");
    let mut first_boot: BTreeMap<String, String> = BTreeMap::new();
    let mut cordoned: BTreeSet<String> = BTreeSet::new();
    let mut rebooted: BTreeSet<String> = BTreeSet::new();
    let mut new_os: BTreeSet<String> = BTreeSet::new();
    let mut listings = 0;
    while !sb.exited() {
        let out = kubectl(&url, &cache, &["get", "nodes", "-o", "json"]);
        if !out.status.success() {
            // fluoctl may have just exited.
            continue;
        }
        listings += 1;
        let list: Value = serde_json::from_slice(&out.stdout).expect("kubectl prints JSON");
        for n in list["items"].as_array().unwrap() {
            let name = n["metadata"]["name"].as_str().unwrap().to_string();
            let boot = n["status"]["nodeInfo"]["bootID"]
                .as_str()
                .unwrap()
                .to_string();
            if first_boot.get(&name).is_some_and(|b| *b != boot) {
                rebooted.insert(name.clone());
            }
            first_boot.entry(name.clone()).or_insert(boot);
            if n["spec"]["unschedulable"] == Value::Bool(true) {
                cordoned.insert(name.clone());
            }
            if n["status"]["nodeInfo"]["osImage"]
                .as_str()
                .unwrap()
                .contains(NEW_VERSION)
            {
                new_os.insert(name);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, stdout, stderr) = sb.finish(Duration::from_secs(30));
    assert!(ok, "fluoctl failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(listings > 0, "kubectl never listed the nodes");
    assert_eq!(first_boot.len(), 6, "kubectl saw {first_boot:?}");
    assert!(
        !cordoned.is_empty() || !rebooted.is_empty() || !new_os.is_empty(),
        "kubectl saw no node change in {listings} listings"
    );
    let violations = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("violations"))
        .expect("a violations line");
    assert_eq!(violations.split_whitespace().nth(1), Some("0"), "{stdout}");
    assert!(
        stdout.contains(&format!("kubectl --kubeconfig {url} get nodes")),
        "{stdout}"
    );

    let r = read_json(&report);
    let s = &r["summary"];
    assert_eq!(s["nodes"], 6, "{s}");
    assert_eq!(s["rebooted"], 6, "{s}");
    assert_eq!(s["max_rebooting"], 2, "{s}");
    assert!(s["max_unavailable"].as_u64().unwrap() <= 2, "{s}");
    assert!(s["max_unavailable"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["violations"], serde_json::json!([]), "{s}");
    assert!(s["ratio"].as_f64().unwrap() > 0.5, "{s}");
    assert!(
        s["node_seconds"].as_f64().unwrap() >= 2.0,
        "drain 1 s + reboot 1 s: {s}"
    );
    let nodes = r["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    for n in nodes {
        let name = n["name"].as_str().unwrap();
        assert_eq!(n["reboots"], 1, "{name} rebooted once: {n}");
        assert_eq!(n["version"], NEW_VERSION, "{n}");
        let cycles = n["cycles"].as_array().unwrap();
        assert_eq!(cycles.len(), 1, "{n}");
        let c = &cycles[0];
        let t = |k: &str| {
            c[k].as_f64()
                .unwrap_or_else(|| panic!("{name}: no {k}: {c}"))
        };
        assert!(t("granted") <= t("drain_start"), "{c}");
        assert!(t("drain_start") <= t("drain_end"), "{c}");
        assert!(t("reboot_start") < t("back"), "{c}");
        assert!(t("back") <= t("released"), "{c}");
    }
    // Never more than 2 unavailable in the series either.
    for point in r["concurrency"].as_array().unwrap() {
        assert!(point[1].as_u64().unwrap() <= 2, "{point}");
    }

    let texts = svg_texts(&timeline);
    for n in nodes {
        let name = n["name"].as_str().unwrap();
        assert!(texts.contains(name), "{name} missing from the timeline");
    }
}

#[test]
fn no_updates_serves_and_a_kubectl_annotation_reboots_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("R.json");
    let mut sb = Running::start(&[
        "--nodes",
        "3",
        "--zones",
        "2",
        "--pods-per-node",
        "2",
        "--reboot-seconds",
        "1",
        "--drain-seconds",
        "1",
        "--before-reboot-annotations",
        "example.com/drained-ok",
        "--no-updates",
        "--exit-when-done",
        "--report",
        report.to_str().unwrap(),
        "--kubeconfig-dir",
        dir.path().join("kc").to_str().unwrap(),
    ]);
    let url = sb.kubeconfig();
    let cache = dir.path().join("kube-cache");
    // The agents initialised every node before the banner was printed.
    let out = kubectl(
        &url,
        &cache,
        &[
            "annotate",
            "node",
            "node-02",
            "--overwrite",
            "flatcar-linux-update.v1.flatcar-linux.net/reboot-needed=true",
        ],
    );
    assert!(
        out.status.success(),
        "kubectl annotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The identities of --kubeconfig-dir, under deploy/'s RBAC.
    let kc = |f: &str| dir.path().join("kc").join(f).to_str().unwrap().to_string();
    for f in [
        "admin",
        "update-operator",
        "update-agent-node-01",
        "update-agent-node-03",
    ] {
        assert!(Path::new(&kc(f)).is_file(), "{f} written");
    }
    let out = kubectl(
        &kc("update-agent-node-01"),
        &cache,
        &["get", "secrets", "-A"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "secrets is forbidden: User \"system:serviceaccount:reboot-coordinator:flatcar-linux-update-agent\" cannot list resource \"secrets\" in API group \"\" at the cluster scope"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // deploy/admission's policy is enforced too: an agent may write only its own node.
    let out = kubectl(
        &kc("update-agent-node-01"),
        &cache,
        &[
            "annotate",
            "node",
            "node-03",
            "--overwrite",
            "flatcar-linux-update.v1.flatcar-linux.net/reboot-needed=true",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the update-agent of node \"node-01\" may not modify node \"node-03\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&kc("update-operator"), &cache, &["auth", "can-i", "--list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{list}");
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["nodes", "[]", "[]", "[get", "list", "watch", "patch]"]),
        "{list}"
    );
    assert!(
        !list.contains("pods"),
        "the operator has no rights on pods: {list}"
    );
    let (ok, stdout, stderr) = sb.finish(Duration::from_secs(60));
    assert!(ok, "fluoctl failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("1 of 3 nodes rebooted"), "{stdout}");
    let r = read_json(&report);
    assert_eq!(r["summary"]["rebooted"], 1, "{}", r["summary"]);
    assert_eq!(r["summary"]["violations"], serde_json::json!([]));
    assert_eq!(r["settings"]["updates_offered"], false);
    for n in r["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        let want = u64::from(name == "node-02");
        assert_eq!(n["reboots"], want, "{n}");
        // Round-robin zones.
        let zone = if name == "node-02" {
            "zone-2"
        } else {
            "zone-1"
        };
        assert_eq!(n["zone"], zone, "{n}");
    }
}

#[test]
fn bad_flags_fail_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder").join("r.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--nodes", "0"], "--nodes"),
        (vec!["--nodes", "many"], "--nodes"),
        (vec!["--max-rebooting-nodes", "0"], "--max-rebooting-nodes"),
        (
            vec!["--max-rebooting-nodes", "150%"],
            "--max-rebooting-nodes",
        ),
        (vec!["--reboot-seconds", "0"], "--reboot-seconds"),
        (vec!["--pods-per-node", "101"], "--pods-per-node"),
        (vec!["--zones", "0"], "--zones"),
        (vec!["--drain-seconds", "-1"], "--drain-seconds"),
        (vec!["--listen", "nowhere"], "--listen"),
        (
            vec![
                "--reboot-window-start",
                "Funday 10:00",
                "--reboot-window-length",
                "1h",
            ],
            "--reboot-window-start",
        ),
        (
            vec!["--before-reboot-annotations", "not a key"],
            "--before-reboot-annotations",
        ),
        (vec!["--namespace", "elsewhere"], "--namespace"),
        (vec!["--report", missing.to_str().unwrap()], "--report"),
    ];
    for (args, flag) in cases {
        let out = run(&args, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
}

/// `fluoctl ARGS` (not `sandbox`) with a clean environment.
fn cli(args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_clear().stdin(Stdio::null());
    if let Ok(path) = std::env::var("PATH") {
        c.env("PATH", path);
    }
    c.output().expect("run fluoctl")
}

/// Issue 15's run: mid-rollout with an operator at max 2, `status` shows the operator's
/// maximum from its Lease and `plan` gives every node a turn, without repeating the flag.
#[test]
fn mid_rollout_status_and_plan_know_the_operators_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = Running::start(&[
        "--nodes",
        "6",
        "--max-rebooting-nodes",
        "2",
        "--reboot-seconds",
        "20",
        "--pods-per-node",
        "2",
        "--kubeconfig-dir",
        dir.path().join("kc").to_str().unwrap(),
    ]);
    let kc = sb.kubeconfig();
    // Wait for the first batch: two slots held.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(&["status", "--kubeconfig", &kc, "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["slots_held"] == 2 && v["settings"]["from_lease"] == true {
            assert_eq!(v["max_rebooting"], 2, "{v}");
            assert_eq!(v["max_rebooting_source"], "lease", "{v}");
            break;
        }
        assert!(!sb.exited(), "the sandbox ended");
        assert!(Instant::now() < deadline, "no first batch: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cli(&["status", "--kubeconfig", &kc]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("2 max (--max-rebooting-nodes 2, from the operator's Lease)"),
        "{text}"
    );

    let out = cli(&["plan", "--kubeconfig", &kc, "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["max_rebooting"], 2, "{p}");
    assert_eq!(p["skipped"], serde_json::json!([]), "{p}");
    let steps = p["steps"].as_array().unwrap();
    let in_flight = steps.iter().filter(|s| s["in_flight"] == true).count();
    // The first batch is in flight (20 s reboots); every other node has a later turn.
    assert!((1..=2).contains(&in_flight), "{p}");
    assert_eq!(steps.len(), 6, "{p}");
    for s in steps.iter().filter(|s| s["in_flight"] == false) {
        assert!(s["batch"].as_u64().unwrap() >= 2, "{p}");
    }

    // A flag overrides the Lease and says so.
    let out = cli(&["plan", "--kubeconfig", &kc, "--max-rebooting-nodes", "3"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("at most 3 at a time (--max-rebooting-nodes, given)")
            && text.contains("given on the command line instead: --max-rebooting-nodes"),
        "{text}"
    );
    drop(sb);
}
