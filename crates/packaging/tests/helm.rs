//! The Helm chart (deploy/helm/reboot-coordinator), rendered by the real Helm engine (Helm v4's
//! SDK as a shared library, PyPI `helm-python-sdk`, through tests/helm_render.py): it lints
//! clean; its default render is `kubectl kustomize deploy/` plus exactly the differences
//! docs/deploy.md lists; every value changes what it should and nothing else; the schema
//! refuses bad values naming them; the rendered flags are accepted by the real binaries; the
//! real `kubectl apply -f` installs the render into the sandbox; Helm's own install, upgrade
//! and uninstall run against the sandbox, also over a kustomize install; and the real
//! binaries, started as the chart's containers say with non-default values, roll an update out.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use packaging::cluster::yaml_docs;
use packaging::{binary, python, repo_root, run, tool};
use sandbox::testing::contained;
use serde_json::{Value, json};

const RELEASE: &str = "rc";
const CHART: &str = "deploy/helm/reboot-coordinator";
const OPERATOR: &str = "flatcar-linux-update-operator";
const AGENT: &str = "flatcar-linux-update-agent";

/// The workspace version (Cargo.toml's `[workspace.package]`), which the chart follows.
fn workspace_version() -> String {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let section = text
        .split("[workspace.package]")
        .nth(1)
        .expect("[workspace.package] in Cargo.toml");
    section
        .lines()
        .find_map(|l| l.trim().strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("workspace version")
}

/// tests/helm_render.py, running: one Helm session (releases live as long as it does).
struct Helm {
    child: std::process::Child,
    answers: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Helm {
    fn start() -> Helm {
        let script = repo_root().join("crates/packaging/tests/helm_render.py");
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs");
        let stdout = child.stdout.take().unwrap();
        Helm {
            child,
            answers: std::io::BufRead::lines(std::io::BufReader::new(stdout)),
        }
    }

    fn ask(&mut self, request: Value) -> Value {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{request}").unwrap();
        stdin.flush().unwrap();
        let line = self.answers.next().and_then(Result::ok).unwrap_or_else(|| {
            panic!(
                "helm_render.py died (its error is above; is helm-python-sdk installed in target/tools/venv? scripts/setup installs it)"
            )
        });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for Helm {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// One request, in the test process's shared session (loading Helm takes a while; when the
/// process ends, the session sees its input close and ends too).
fn helm(request: Value) -> Value {
    static SESSION: std::sync::Mutex<Option<Helm>> = std::sync::Mutex::new(None);
    let mut session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    session.get_or_insert_with(Helm::start).ask(request)
}

/// The chart rendered as `helm install` would (release "rc", `--namespace default`, which
/// must not matter: the objects go to namespace.name): its objects, and NOTES.txt. Err is
/// Helm's message.
fn try_render(values: Value) -> Result<(Vec<Value>, String), String> {
    let answer = helm(json!({
        "action": "render",
        "chart": repo_root().join(CHART),
        "values": values,
        "name": RELEASE,
        "namespace": "default",
    }));
    if answer["ok"] != true {
        return Err(format!("{}: {}", answer["error"], answer["message"]));
    }
    let mut objects = Vec::new();
    let mut notes = String::new();
    for (path, text) in answer["manifests"].as_object().unwrap() {
        let text = text.as_str().unwrap();
        if path.ends_with("NOTES.txt") {
            notes = text.to_string();
        } else {
            objects.extend(yaml_docs(text));
        }
    }
    Ok((objects, notes))
}

fn render(values: Value) -> Vec<Value> {
    try_render(values.clone())
        .unwrap_or_else(|e| panic!("render with {values} failed: {e}"))
        .0
}

/// `kubectl kustomize deploy/`.
fn kustomize() -> Vec<Value> {
    let kubectl = tool("kubectl", "kubernetes-client");
    let (ok, out, err) = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(repo_root().join("deploy"))
        .env("KUBECONFIG", "/dev/null"));
    assert!(ok, "kubectl kustomize deploy/ failed: {err}");
    yaml_docs(&out)
}

type Key = (String, String, String, Option<String>);

fn key(o: &Value) -> Key {
    (
        o["apiVersion"].as_str().unwrap().to_string(),
        o["kind"].as_str().unwrap().to_string(),
        o["metadata"]["name"].as_str().unwrap().to_string(),
        o["metadata"]["namespace"].as_str().map(str::to_string),
    )
}

fn by_key(objs: &[Value]) -> BTreeMap<Key, Value> {
    let map: BTreeMap<Key, Value> = objs.iter().map(|o| (key(o), o.clone())).collect();
    assert_eq!(map.len(), objs.len(), "no duplicate objects");
    map
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} rendered"))
}

fn kinds(objs: &[Value]) -> BTreeSet<String> {
    objs.iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

fn pod_spec<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    &find(objs, kind, name)["spec"]["template"]["spec"]
}

fn operator_pod(objs: &[Value]) -> &Value {
    pod_spec(objs, "Deployment", OPERATOR)
}

fn agent_pod(objs: &[Value]) -> &Value {
    pod_spec(objs, "DaemonSet", AGENT)
}

fn args(pod: &Value) -> Vec<String> {
    pod["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The labels Helm's render adds to every object's metadata, and nothing else differs from
/// `kubectl kustomize deploy/` but the image tag (docs/deploy.md, "Helm").
fn helm_labels() -> BTreeMap<String, String> {
    let v = workspace_version();
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".into(), "Helm".into()),
        ("app.kubernetes.io/instance".into(), RELEASE.into()),
        ("app.kubernetes.io/version".into(), v.clone()),
        ("helm.sh/chart".into(), format!("reboot-coordinator-{v}")),
    ])
}

const KUSTOMIZE_IMAGE: &str = "ghcr.io/flatcar-reboot-coordinator/reboot-coordinator:latest";

#[test]
fn chart_lints_clean_and_follows_the_workspace_version() {
    let answer = helm(json!({"action": "lint", "chart": repo_root().join(CHART)}));
    assert_eq!(answer["ok"], true, "{answer}");
    let report = &answer["report"];
    assert_eq!(report["total_charts_linted"], 1, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    // Severity 2 is a warning, 3 an error; only Helm's "icon is recommended" (1, info)
    // remains: the project has no icon to point at.
    let findings: Vec<&Value> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap() >= 2 || m["error"] != "icon is recommended")
        .collect();
    assert!(findings.is_empty(), "helm lint --strict: {findings:?}");
    assert!(
        answer["helm"].as_str().unwrap().starts_with("v4."),
        "{answer}"
    );

    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join(CHART).join("Chart.yaml")).unwrap(),
    )
    .unwrap();
    let version = workspace_version();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "reboot-coordinator");
    assert_eq!(chart["version"], version.as_str());
    assert_eq!(chart["appVersion"], version.as_str());
}

#[test]
fn the_charts_alert_rules_are_deploy_prometheus_rules_yaml() {
    let root = repo_root();
    let copy = std::fs::read(root.join(CHART).join("files/prometheus-rules.yaml")).unwrap();
    let original = std::fs::read(root.join("deploy/prometheus/rules.yaml")).unwrap();
    assert!(
        copy == original,
        "{CHART}/files/prometheus-rules.yaml differs from deploy/prometheus/rules.yaml: copy it over"
    );
    // And the rendered PrometheusRule carries them unchanged, `{{ $value }}` included.
    let objs = render(json!({}));
    let rule = find(&objs, "PrometheusRule", "reboot-coordinator");
    let rules: Value = serde_yaml::from_slice(&original).unwrap();
    assert_eq!(rule["spec"]["groups"], rules["groups"]);
    assert!(rule.to_string().contains("{{ $value }}"));
}

#[test]
fn default_render_is_the_kustomize_base_plus_helms_labels_and_the_image_tag() {
    let (objs, notes) = try_render(json!({})).unwrap();
    let chart = by_key(&objs);
    let base = by_key(&kustomize());
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        base.keys().collect::<Vec<_>>(),
        "the same objects: names, kinds and namespaces"
    );
    let image = format!(
        "ghcr.io/flatcar-reboot-coordinator/reboot-coordinator:{}",
        workspace_version()
    );
    for (k, want) in &base {
        let mut got = chart[k].clone();
        // Exactly Helm's labels are added, and none of the base's is changed or lost.
        let labels = got["metadata"]["labels"].as_object_mut().unwrap();
        let mut added = BTreeMap::new();
        for name in helm_labels().keys() {
            let v = labels
                .remove(name)
                .unwrap_or_else(|| panic!("{k:?}: {name}"));
            added.insert(name.clone(), v.as_str().unwrap().to_string());
        }
        assert_eq!(added, helm_labels(), "{k:?}");
        // The image: the chart's appVersion, where the base says `latest`.
        if let Some(c) = got.pointer_mut("/spec/template/spec/containers/0") {
            assert_eq!(c["image"], image.as_str(), "{k:?}");
            c["image"] = json!(KUSTOMIZE_IMAGE);
        }
        let mut want = want.clone();
        // kustomize's YAML library reads a folded scalar's more-indented line with an extra
        // line break (YAML 1.2 example 8.10 has one); four of the policy's CEL expressions
        // have such lines. The chart keeps the file's text; CEL ignores the whitespace.
        if k.1 == "ValidatingAdmissionPolicy" {
            for v in want["spec"]["validations"].as_array_mut().unwrap() {
                let e = v["expression"].as_str().unwrap().replace("\n\n", "\n");
                v["expression"] = json!(e);
            }
        }
        assert_eq!(got, want, "{k:?} differs from kubectl kustomize deploy/");
    }
    assert!(notes.contains("namespace reboot-coordinator"), "{notes}");
    assert!(notes.contains(&image), "{notes}");
}

/// Every long flag of a binary, from its real `--help`.
fn flags_of(bin: &str) -> BTreeSet<String> {
    let (ok, out, err) = run(Command::new(binary(bin)).arg("--help"));
    assert!(ok, "{bin} --help: {err}");
    out.lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn camel(flag: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in flag.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn schema() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo_root().join(CHART).join("values.schema.json")).unwrap(),
    )
    .unwrap()
}

fn chart_values() -> Value {
    serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join(CHART).join("values.yaml")).unwrap(),
    )
    .unwrap()
}

fn object_keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// Flags that are not values: `--help`/`--version`; `--metrics-address` (from metricsPort,
/// which the probes and port share); the agent's `--node` and the operator's `--namespace`
/// (from the downward API, as in FLUO); `--kubeconfig` (a pod uses its service account);
/// `--reboot-sentinel` (from `agent.rebootSentinel`, a host path the chart also mounts).
const NOT_VALUES: &[&str] = &[
    "help",
    "version",
    "metrics-address",
    "node",
    "namespace",
    "kubeconfig",
    "reboot-sentinel",
];

#[test]
fn every_flag_of_both_binaries_is_a_value() {
    let schema = schema();
    let values = chart_values();
    for (component, bin) in [("operator", "update-operator"), ("agent", "update-agent")] {
        let want: BTreeSet<String> = flags_of(bin)
            .into_iter()
            .filter(|f| !NOT_VALUES.contains(&f.as_str()))
            .map(|f| camel(&f))
            .collect();
        let in_schema =
            object_keys(&schema["properties"][component]["properties"]["flags"]["properties"]);
        assert_eq!(in_schema, want, "{component}.flags in values.schema.json");
        let in_values = object_keys(&values[component]["flags"]);
        assert_eq!(in_values, want, "{component}.flags in values.yaml");
        // Unset by default: each binary's own defaults apply.
        for (k, v) in values[component]["flags"].as_object().unwrap() {
            assert!(
                v.is_null() || *v == json!([]),
                "{component}.flags.{k} = {v}"
            );
        }
    }
}

/// (component, value key, value, the args it adds).
#[rustfmt::skip]
fn flag_cases() -> Vec<(&'static str, &'static str, Value, Vec<&'static str>)> {
    vec![
        ("operator", "rebootWindowStart", json!("Mon 14:00"), vec!["--reboot-window-start=Mon 14:00"]),
        ("operator", "rebootWindowLength", json!("2h"), vec!["--reboot-window-length=2h"]),
        ("operator", "beforeRebootAnnotations", json!(["example.com/drained", "example.com/backed-up"]),
            vec!["--before-reboot-annotations=example.com/drained", "--before-reboot-annotations=example.com/backed-up"]),
        ("operator", "afterRebootAnnotations", json!(["example.com/healthy"]), vec!["--after-reboot-annotations=example.com/healthy"]),
        ("operator", "maxRebootingNodes", json!(2), vec!["--max-rebooting-nodes=2"]),
        ("operator", "maxRebootingNodes", json!("25%"), vec!["--max-rebooting-nodes=25%"]),
        ("operator", "rebootWindow", json!(["Mon-Fri 02:00-05:00", "Sat,Sun 22:00-24:00"]),
            vec!["--reboot-window=Mon-Fri 02:00-05:00", "--reboot-window=Sat,Sun 22:00-24:00"]),
        ("operator", "rebootWindowTimezone", json!("Europe/Berlin"), vec!["--reboot-window-timezone=Europe/Berlin"]),
        ("operator", "maxRebootingNodesPerZone", json!("50%"), vec!["--max-rebooting-nodes-per-zone=50%"]),
        ("operator", "zoneLabel", json!("example.com/rack"), vec!["--zone-label=example.com/rack"]),
        ("operator", "nodeSelector", json!("role=worker,zone in (a,b)"), vec!["--node-selector=role=worker,zone in (a,b)"]),
        ("operator", "minRebootInterval", json!("15m"), vec!["--min-reboot-interval=15m"]),
        ("operator", "rebootTimeout", json!("1h"), vec!["--reboot-timeout=1h"]),
        ("operator", "stuckNodeAction", json!("release"), vec!["--stuck-node-action=release"]),
        ("operator", "blockingPodSelector", json!("app=backup"), vec!["--blocking-pod-selector=app=backup"]),
        ("operator", "prometheusUrl", json!("http://prometheus.monitoring:9090"), vec!["--prometheus-url=http://prometheus.monitoring:9090"]),
        ("operator", "alertFilterRegexp", json!("^(RebootRequired|Watchdog)$"), vec!["--alert-filter-regexp=^(RebootRequired|Watchdog)$"]),
        ("operator", "alertFilterMatchOnly", json!(true), vec!["--alert-filter-match-only=true"]),
        ("operator", "alertFilterMatchOnly", json!(false), vec!["--alert-filter-match-only=false"]),
        ("operator", "alertFiringOnly", json!(true), vec!["--alert-firing-only=true"]),
        ("operator", "alertmanagerUrl", json!("http://alertmanager.monitoring:9093"), vec!["--alertmanager-url=http://alertmanager.monitoring:9093"]),
        ("operator", "alertCheckInterval", json!("1m"), vec!["--alert-check-interval=1m"]),
        ("operator", "releaseLeaseAfterIdle", json!("0s"), vec!["--release-lease-after-idle=0s"]),
        ("operator", "leaseName", json!("reboot-lock"), vec!["--lease-name=reboot-lock"]),
        ("operator", "logFormat", json!("json"), vec!["--log-format=json"]),
        ("operator", "notifyUrl", json!("https://hooks.example.com/reboots"), vec!["--notify-url=https://hooks.example.com/reboots"]),
        ("operator", "notifyFormat", json!("slack"), vec!["--notify-format=slack"]),
        ("operator", "notifyMessageTemplate", json!("[{{event}}] {{node}}: {{reason}}"), vec!["--notify-message-template=[{{event}}] {{node}}: {{reason}}"]),
        ("agent", "gracePeriod", json!(900), vec!["--grace-period=900"]),
        ("agent", "gracePeriod", json!(10_000_000), vec!["--grace-period=10000000"]),
        ("agent", "gracePeriod", json!("15m"), vec!["--grace-period=15m"]),
        ("agent", "forceDrain", json!(true), vec!["--force-drain=true"]),
        ("agent", "podRecoveryTimeout", json!("20m"), vec!["--pod-recovery-timeout=20m"]),
        ("agent", "dbusAddress", json!("unix:path=/run/dbus/system_bus_socket"), vec!["--dbus-address=unix:path=/run/dbus/system_bus_socket"]),
        ("agent", "drainTimeoutAction", json!("reboot"), vec!["--drain-timeout-action=reboot"]),
        ("agent", "osReleasePath", json!("/usr/lib/os-release"), vec!["--os-release-path=/usr/lib/os-release"]),
        ("agent", "updateConfPaths", json!(["/usr/share/flatcar/update.conf", "/etc/flatcar/update.conf"]),
            vec!["--update-conf-paths=/usr/share/flatcar/update.conf", "--update-conf-paths=/etc/flatcar/update.conf"]),
        ("agent", "logFormat", json!("json"), vec!["--log-format=json"]),
        ("agent", "preferNoScheduleTaint", json!(true), vec!["--prefer-no-schedule-taint=true"]),
        ("agent", "excludeFromLoadBalancers", json!(true), vec!["--exclude-from-load-balancers=true"]),
        ("agent", "excludeFromLoadBalancersWait", json!("30s"), vec!["--exclude-from-load-balancers-wait=30s"]),
        ("agent", "volumeDetachTimeout", json!(0), vec!["--volume-detach-timeout=0"]),
        ("agent", "skipWaitForDeleteTimeout", json!(60), vec!["--skip-wait-for-delete-timeout=60"]),
        ("agent", "drainPodSelector", json!("app!=keep,tier in (web)"), vec!["--drain-pod-selector=app!=keep,tier in (web)"]),
        ("agent", "drainKubeSystem", json!(true), vec!["--drain-kube-system=true"]),
    ]
}

fn pod_of<'a>(objs: &'a [Value], component: &str) -> &'a Value {
    match component {
        "operator" => operator_pod(objs),
        _ => agent_pod(objs),
    }
}

#[test]
fn each_flag_value_appears_in_args_exactly_when_set() {
    let default = render(json!({}));
    let metrics = vec!["--metrics-address=0.0.0.0:8080".to_string()];
    assert_eq!(args(operator_pod(&default)), metrics);
    assert_eq!(args(agent_pod(&default)), metrics);

    let mut covered = BTreeSet::new();
    for (component, name, value, want) in flag_cases() {
        covered.insert((component, name));
        let objs = render(json!({ component: {"flags": { name: value }} }));
        let mut expected = metrics.clone();
        expected.extend(want.iter().map(|s| s.to_string()));
        assert_eq!(
            args(pod_of(&objs, component)),
            expected,
            "{component}.flags.{name}={value}"
        );
        let other = if component == "operator" {
            "agent"
        } else {
            "operator"
        };
        assert_eq!(
            args(pod_of(&objs, other)),
            metrics,
            "{component}.flags.{name} leaves the {other} alone"
        );
    }
    let schema = schema();
    for component in ["operator", "agent"] {
        for name in
            object_keys(&schema["properties"][component]["properties"]["flags"]["properties"])
        {
            assert!(
                covered.iter().any(|(c, n)| *c == component && *n == name),
                "no case for {component}.flags.{name}"
            );
        }
    }

    // extraArgs come after the flags, verbatim.
    let objs = render(json!({
        "operator": {"flags": {"rebootTimeout": "1h"}, "extraArgs": ["--reboot-timeout=2h", "-log-format=json"]},
        "agent": {"extraArgs": ["--force-drain"]},
    }));
    assert_eq!(
        args(operator_pod(&objs)),
        [
            "--metrics-address=0.0.0.0:8080",
            "--reboot-timeout=1h",
            "--reboot-timeout=2h",
            "-log-format=json"
        ]
    );
    assert_eq!(
        args(agent_pod(&objs)),
        ["--metrics-address=0.0.0.0:8080", "--force-drain"]
    );
}

/// Runs a binary with the rendered args plus `--kubeconfig` pointing at no file: the
/// binaries validate every flag before they look for the cluster, so failing on the
/// kubeconfig (and not on a flag) shows the real binary accepts the rendered flags.
fn accepted_by(bin: &str, rendered: &[String], env: (&str, &str)) {
    let mut cmd = Command::new(binary(bin));
    cmd.args(rendered)
        .arg("--kubeconfig=/nonexistent/kubeconfig")
        .env_remove("KUBECONFIG")
        .env(env.0, env.1);
    let (ok, out, err) = run(&mut cmd);
    assert!(!ok, "{bin} ran without a kubeconfig: {out}{err}");
    assert!(
        err.contains("/nonexistent/kubeconfig")
            && !err.contains("--kubeconfig=")
            && !err.contains("Usage:"),
        "{bin} {rendered:?} refused a flag before reaching the kubeconfig:\n{err}"
    );
}

#[test]
fn the_real_binaries_accept_the_rendered_flags() {
    // Every flag at once, except the two window kinds, which exclude each other.
    let mut fluo_window = serde_json::Map::new();
    let mut windows = serde_json::Map::new();
    let mut agent = serde_json::Map::new();
    for (component, name, value, _) in flag_cases() {
        let target = match (component, name) {
            ("agent", _) => &mut agent,
            (_, "rebootWindow" | "rebootWindowTimezone") => &mut windows,
            _ => &mut fluo_window,
        };
        target.insert(name.to_string(), value);
    }
    for flags in [fluo_window, windows] {
        let objs = render(json!({"operator": {"flags": flags}}));
        accepted_by(
            "update-operator",
            &args(operator_pod(&objs)),
            ("POD_NAMESPACE", "reboot-coordinator"),
        );
    }
    let objs = render(json!({"agent": {"flags": agent}}));
    accepted_by(
        "update-agent",
        &args(agent_pod(&objs)),
        ("UPDATE_AGENT_NODE", "node-1"),
    );

    // The check itself: a flag the binary refuses is caught.
    let objs = render(json!({"operator": {"extraArgs": ["--max-rebooting-nodes=0"]}}));
    let (ok, _, err) = run(Command::new(binary("update-operator"))
        .args(args(operator_pod(&objs)))
        .arg("--kubeconfig=/nonexistent/kubeconfig")
        .env("POD_NAMESPACE", "reboot-coordinator"));
    assert!(
        !ok && err.contains("--max-rebooting-nodes") && !err.contains("/nonexistent/kubeconfig"),
        "{err}"
    );
}

#[test]
fn image_values() {
    let v = workspace_version();
    let image = |values: Value| {
        let objs = render(values);
        let (o, a) = (operator_pod(&objs).clone(), agent_pod(&objs).clone());
        assert_eq!(o["containers"][0]["image"], a["containers"][0]["image"]);
        assert_eq!(
            o["containers"][0].get("imagePullPolicy"),
            a["containers"][0].get("imagePullPolicy")
        );
        assert_eq!(o.get("imagePullSecrets"), a.get("imagePullSecrets"));
        o
    };
    let pod = image(json!({}));
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        format!("ghcr.io/flatcar-reboot-coordinator/reboot-coordinator:{v}")
    );
    assert!(c.get("imagePullPolicy").is_none() && pod.get("imagePullSecrets").is_none());

    let pod =
        image(json!({"image": {"repository": "registry.example.com:5000/me/rc", "tag": "v9.9.9"}}));
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example.com:5000/me/rc:v9.9.9"
    );

    let digest = format!("sha256:{}", "ab".repeat(32));
    let pod = image(json!({"image": {"tag": "v9.9.9", "digest": digest}}));
    assert_eq!(
        pod["containers"][0]["image"],
        format!("ghcr.io/flatcar-reboot-coordinator/reboot-coordinator@{digest}")
    );

    let pod =
        image(json!({"image": {"pullPolicy": "Always", "imagePullSecrets": [{"name": "ghcr"}]}}));
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "ghcr"}]));
}

/// Every place a namespace appears: object namespaces, binding subjects, the admission
/// policy's user name, and the Namespace object itself.
fn namespaces_used(objs: &[Value]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for o in objs {
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            out.insert(ns.to_string());
        }
        if o["kind"] == "Namespace" {
            out.insert(o["metadata"]["name"].as_str().unwrap().to_string());
        }
        for s in o["subjects"].as_array().into_iter().flatten() {
            out.insert(s["namespace"].as_str().unwrap().to_string());
        }
    }
    let policy = find(
        objs,
        "ValidatingAdmissionPolicy",
        "flatcar-linux-update-agent-own-node",
    );
    let expr = policy["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap();
    let user = expr.split('\'').nth(1).expect("a quoted user name");
    let ns = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.strip_suffix(":flatcar-linux-update-agent"))
        .unwrap_or_else(|| panic!("{expr}"));
    out.insert(ns.to_string());
    out
}

#[test]
fn namespace_values() {
    let default = render(json!({}));
    assert_eq!(
        namespaces_used(&default),
        BTreeSet::from(["reboot-coordinator".to_string()])
    );

    let objs = render(json!({"namespace": {"name": "fluo-system"}}));
    assert_eq!(
        namespaces_used(&objs),
        BTreeSet::from(["fluo-system".to_string()])
    );
    let ns = find(&objs, "Namespace", "fluo-system");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    // Only the namespace moved.
    assert_eq!(objs.len(), default.len());

    let objs = render(json!({"namespace": {"name": "fluo-system", "create": false}}));
    assert!(!kinds(&objs).contains("Namespace"));
    assert_eq!(objs.len(), default.len() - 1);
    assert_eq!(
        namespaces_used(&objs),
        BTreeSet::from(["fluo-system".to_string()])
    );
}

#[test]
fn lease_name_and_metrics_port_values_follow_through() {
    // The Lease's rule and the ConfigMap's: the two halves of the lock.
    let role = |objs: &[Value]| {
        let rules = &find(objs, "Role", OPERATOR)["rules"];
        [1, 3].map(|i| rules[i]["resourceNames"].clone())
    };
    assert_eq!(
        role(&render(json!({}))),
        [(); 2].map(|_| json!(["flatcar-linux-update-operator-lock"]))
    );
    let objs = render(json!({"operator": {"flags": {"leaseName": "reboot-lock"}}}));
    assert_eq!(role(&objs), [(); 2].map(|_| json!(["reboot-lock"])));

    let objs = render(json!({"operator": {"metricsPort": 9100}, "agent": {"metricsPort": 9101}}));
    for (pod, port) in [(operator_pod(&objs), 9100), (agent_pod(&objs), 9101)] {
        let c = &pod["containers"][0];
        assert_eq!(args(pod)[0], format!("--metrics-address=0.0.0.0:{port}"));
        assert_eq!(
            c["ports"],
            json!([{"name": "metrics", "containerPort": port, "protocol": "TCP"}])
        );
        // The probes and the PodMonitor name the port, not its number.
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    }
}

#[test]
fn scheduling_and_resource_values() {
    let default = render(json!({}));
    let resources = json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}});
    let tolerations = json!([{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]);
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}});
    let objs = render(json!({
        "operator": {
            "replicas": 2,
            "resources": resources,
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
            "tolerations": tolerations,
            "affinity": affinity,
            "priorityClassName": "system-cluster-critical",
        },
        "agent": {
            "resources": resources,
            "nodeSelector": {"flatcar": "true"},
            "tolerations": tolerations,
            "priorityClassName": "system-node-critical",
        },
    }));
    assert_eq!(find(&objs, "Deployment", OPERATOR)["spec"]["replicas"], 2);
    let (op, ag) = (operator_pod(&objs), agent_pod(&objs));
    assert_eq!(op["containers"][0]["resources"], resources);
    assert_eq!(ag["containers"][0]["resources"], resources);
    assert_eq!(
        op["nodeSelector"],
        json!({"node-role.kubernetes.io/control-plane": ""})
    );
    assert_eq!(ag["nodeSelector"], json!({"flatcar": "true"}));
    assert_eq!(op["tolerations"], tolerations);
    assert_eq!(ag["tolerations"], tolerations);
    assert_eq!(op["affinity"], affinity);
    assert_eq!(op["priorityClassName"], "system-cluster-critical");
    assert_eq!(ag["priorityClassName"], "system-node-critical");

    // Nothing else in the pods changed.
    let strip = |pod: &Value| {
        let mut p = pod.clone();
        let m = p.as_object_mut().unwrap();
        for k in [
            "nodeSelector",
            "tolerations",
            "affinity",
            "priorityClassName",
        ] {
            m.remove(k);
        }
        p["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("resources");
        p
    };
    assert_eq!(strip(op), strip(operator_pod(&default)));
    assert_eq!(strip(ag), strip(agent_pod(&default)));
    // The defaults: none of these but the base's tolerations and resources.
    for pod in [operator_pod(&default), agent_pod(&default)] {
        for k in ["nodeSelector", "affinity", "priorityClassName"] {
            assert!(pod.get(k).is_none(), "{k}: {pod}");
        }
    }
}

#[test]
fn toggles_remove_the_admission_and_monitoring_objects() {
    let all = kinds(&render(json!({})));
    let without = |values: Value| -> BTreeSet<String> {
        all.difference(&kinds(&render(values))).cloned().collect()
    };
    let set = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        without(json!({"admission": {"enabled": false}})),
        set(&[
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ])
    );
    assert_eq!(
        without(json!({"monitoring": {"podMonitor": {"enabled": false}}})),
        set(&["PodMonitor"])
    );
    assert_eq!(
        without(json!({"monitoring": {"prometheusRule": {"enabled": false}}})),
        set(&["PrometheusRule"])
    );
    let (objs, notes) = try_render(json!({
        "admission": {"enabled": false},
        "monitoring": {"podMonitor": {"enabled": false}, "prometheusRule": {"enabled": false}},
    }))
    .unwrap();
    assert_eq!(
        kinds(&objs),
        set(&[
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "DaemonSet"
        ])
    );
    assert!(
        notes.contains("disabled (admission.enabled=false)"),
        "{notes}"
    );

    // Extra labels for a Prometheus' selectors.
    let objs = render(json!({"monitoring": {
        "podMonitor": {"labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"labels": {"release": "kube-prometheus-stack", "role": "alert-rules"}},
    }}));
    let labels = |kind| find(&objs, kind, "reboot-coordinator")["metadata"]["labels"].clone();
    assert_eq!(labels("PodMonitor")["release"], "kube-prometheus-stack");
    assert_eq!(labels("PrometheusRule")["role"], "alert-rules");
}

#[test]
fn bad_values_are_refused_naming_them() {
    #[rustfmt::skip]
    let cases = [
        (json!({"operater": {}}), "additional properties 'operater' not allowed"),
        (json!({"operator": {"flags": {"rebootWindowStar": "Mon 14:00"}}}), "'rebootWindowStar' not allowed"),
        (json!({"operator": {"replicas": "two"}}), "/operator/replicas"),
        (json!({"operator": {"flags": {"rebootWindowStart": "Mun 14:00"}}}), "/operator/flags/rebootWindowStart"),
        (json!({"operator": {"flags": {"rebootWindowStart": "Mon 24:00"}}}), "/operator/flags/rebootWindowStart"),
        (json!({"operator": {"flags": {"rebootWindowLength": "2 hours"}}}), "/operator/flags/rebootWindowLength"),
        (json!({"operator": {"flags": {"rebootWindow": ["Mon-Fri 02:00-05:00", "weekends"]}}}), "/operator/flags/rebootWindow/1"),
        (json!({"operator": {"flags": {"rebootWindow": "Mon-Fri 02:00-05:00"}}}), "/operator/flags/rebootWindow"),
        (json!({"operator": {"flags": {"maxRebootingNodes": 0}}}), "/operator/flags/maxRebootingNodes"),
        (json!({"operator": {"flags": {"maxRebootingNodes": "150%"}}}), "/operator/flags/maxRebootingNodes"),
        (json!({"operator": {"flags": {"beforeRebootAnnotations": ["not a name"]}}}), "/operator/flags/beforeRebootAnnotations/0"),
        (json!({"operator": {"flags": {"prometheusUrl": "prometheus:9090"}}}), "/operator/flags/prometheusUrl"),
        (json!({"operator": {"flags": {"alertFiringOnly": "yes"}}}), "/operator/flags/alertFiringOnly"),
        (json!({"operator": {"flags": {"leaseName": "Lock_1"}}}), "/operator/flags/leaseName"),
        (json!({"operator": {"flags": {"logFormat": "xml"}}}), "/operator/flags/logFormat"),
        (json!({"agent": {"flags": {"gracePeriod": 0}}}), "/agent/flags/gracePeriod"),
        (json!({"agent": {"flags": {"gracePeriod": 1.5}}}), "/agent/flags/gracePeriod"),
        (json!({"agent": {"flags": {"podRecoveryTimeout": "10 min"}}}), "/agent/flags/podRecoveryTimeout"),
        (json!({"agent": {"flags": {"drainTimeoutAction": "drain"}}}), "/agent/flags/drainTimeoutAction"),
        (json!({"agent": {"flags": {"osReleasePath": "etc/os-release"}}}), "/agent/flags/osReleasePath"),
        (json!({"agent": {"flags": {"forceDrain": "true"}}}), "/agent/flags/forceDrain"),
        (json!({"agent": {"flags": {"volumeDetachTimeout": -1}}}), "/agent/flags/volumeDetachTimeout"),
        (json!({"agent": {"flags": {"skipWaitForDeleteTimeout": "1 min"}}}), "/agent/flags/skipWaitForDeleteTimeout"),
        (json!({"agent": {"flags": {"drainPodSelector": ""}}}), "/agent/flags/drainPodSelector"),
        (json!({"agent": {"affinity": {}}}), "additional properties 'affinity' not allowed"),
        (json!({"agent": {"tolerations": [{"operator": "Exist"}]}}), "/agent/tolerations/0/operator"),
        (json!({"agent": {"metricsPort": 70000}}), "/agent/metricsPort"),
        (json!({"image": {"digest": "sha256:abc"}}), "/image/digest"),
        (json!({"image": {"tag": "v1 beta"}}), "/image/tag"),
        (json!({"image": {"pullPolicy": "Sometimes"}}), "/image/pullPolicy"),
        (json!({"namespace": {"name": "Reboot_Coordinator"}}), "/namespace/name"),
        (json!({"admission": {"enabled": "no"}}), "/admission/enabled"),
        (json!({"operator": {"resources": {"limits": {"memory": "lots"}}}}), "/operator/resources/limits/memory"),
        (json!({"agent": {"resources": {"requests": {"memory": "64mi"}}}}), "/agent/resources/requests/memory"),
    ];
    for (values, names) in cases {
        let err = try_render(values.clone())
            .map(|_| ())
            .expect_err(&format!("{values} accepted"));
        assert!(err.starts_with("\"HelmValuesError\""), "{values}: {err}");
        assert!(
            err.contains(names),
            "{values}: the message should name {names}: {err}"
        );
    }
}

/// Helm's install order for the kinds the chart has, so `kubectl apply -f` of one file
/// creates the namespace before what goes in it.
fn install_rank(o: &Value) -> usize {
    [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "DaemonSet",
        "Deployment",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    .iter()
    .position(|k| o["kind"] == *k)
    .unwrap_or(usize::MAX)
}

/// Writes the objects as one multi-document YAML file, in install order.
fn manifest_file(objs: &[Value], dir: &std::path::Path) -> std::path::PathBuf {
    let mut objs = objs.to_vec();
    objs.sort_by_key(install_rank);
    let text = objs
        .iter()
        .map(|o| serde_yaml::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    let path = dir.join("rendered.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The real kubectl against the sandbox.
struct Kubectl {
    server: String,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(tool("kubectl", "kubernetes-client"));
        cmd.arg("--server")
            .arg(&self.server)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .env("KUBECONFIG", "/dev/null");
        cmd
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        run(&mut self.command(args))
    }

    /// Runs kubectl with `input` on its stdin (`-f -`); panics if it fails.
    fn pipe(&self, args: &[&str], input: &str) {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The stored version of a rendered object, by `kubectl get -o json`.
    fn get_as_stored(&self, obj: &Value) -> Value {
        let (api_version, kind, name, ns) = key(obj);
        let resource = match api_version.rsplit_once('/') {
            Some((group, _)) => format!("{}.{group}", kind.to_lowercase()),
            None => kind.to_lowercase(),
        };
        let mut args = vec!["get", resource.as_str(), name.as_str(), "-o", "json"];
        if let Some(ns) = ns.as_deref() {
            args.extend(["-n", ns]);
        }
        let (ok, out, err) = self.run(&args);
        assert!(ok, "kubectl {args:?}: {err}");
        serde_json::from_str(&out).expect("JSON")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_render_applies_to_the_sandbox_with_kubectl() {
    let objs = render(json!({}));
    let sb = sandbox::Sandbox::start(sandbox::Options {
        pod_start: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    for n in ["node-1", "node-2"] {
        sb.add_node(n, &[]).expect("node");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = manifest_file(&objs, dir.path());
    let file = file.to_str().unwrap();
    let k = Kubectl {
        server: sb.url(),
        cache: tempfile::tempdir().unwrap(),
    };

    let kk = &k;
    let (ok, out, err) = tokio::task::block_in_place(|| kk.run(&["apply", "-f", file]));
    assert!(ok, "kubectl apply -f failed:\n{err}\n{out}");
    let created = out.lines().filter(|l| l.ends_with(" created")).count();
    assert_eq!(created, objs.len(), "every object created:\n{out}");

    // Every rendered object is stored as rendered.
    for obj in &objs {
        let live = tokio::task::block_in_place(|| kk.get_as_stored(obj));
        let (_, kind, name, _) = key(obj);
        if let Err(diff) = contained(obj, &live, &format!("{kind}/{name}")) {
            panic!("stored object differs from the rendered one: {diff}");
        }
    }

    // The DaemonSet puts an agent on every node.
    let mut nodes = BTreeSet::new();
    for _ in 0..200 {
        let (ok, out, _) = tokio::task::block_in_place(|| {
            kk.run(&[
                "get",
                "pods",
                "-n",
                "reboot-coordinator",
                "-l",
                "app=flatcar-linux-update-agent",
                "-o",
                "json",
            ])
        });
        if ok {
            let pods: Value = serde_json::from_str(&out).unwrap();
            nodes = pods["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
                .collect();
            if nodes.len() == 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        nodes,
        BTreeSet::from(["node-1".to_string(), "node-2".to_string()])
    );

    // Applying again changes nothing.
    let (ok, out, err) = tokio::task::block_in_place(|| kk.run(&["apply", "-f", file]));
    assert!(ok, "second kubectl apply -f failed:\n{err}\n{out}");
    assert!(out.lines().all(|l| l.ends_with(" unchanged")), "{out}");
    assert_eq!(out.lines().count(), objs.len(), "{out}");
}

/// The real `helm install`, `helm upgrade` and `helm uninstall` (Helm v4's actions, through the
/// SDK) against the sandbox's API server, checked with the real kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall_against_the_sandbox() {
    let sb = sandbox::Sandbox::start(sandbox::Options {
        pod_start: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    for n in ["node-1", "node-2"] {
        sb.add_node(n, &[]).expect("node");
    }
    let k = Kubectl {
        server: sb.url(),
        cache: tempfile::tempdir().unwrap(),
    };
    let kk = &k;
    let get = |args: &[&str]| -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let (ok, out, err) = tokio::task::block_in_place(|| kk.run(&a));
        if ok {
            Some(serde_json::from_str(&out).unwrap())
        } else {
            assert!(
                err.contains("NotFound") || err.contains("not found"),
                "kubectl {a:?}: {err}"
            );
            None
        }
    };
    let operator = || get(&["get", "deployment", OPERATOR, "-n", "reboot-coordinator"]);
    let policy = || {
        get(&[
            "get",
            "validatingadmissionpolicy",
            "flatcar-linux-update-agent-own-node",
        ])
    };

    let mut helm = Helm::start();
    let url = sb.url();
    let mut ask = |action: &str, values: Value| {
        tokio::task::block_in_place(|| {
            helm.ask(json!({
                "action": action,
                "server": url,
                "chart": repo_root().join(CHART),
                "values": values,
                "name": RELEASE,
                // Helm's record; the objects go to namespace.name.
                "namespace": "default",
            }))
        })
    };
    let release = |answer: Value| {
        assert_eq!(answer["ok"], true, "{answer}");
        answer["release"].clone()
    };

    // helm install: the chart creates its namespace and everything in it.
    let r = release(ask("install", json!({})));
    assert_eq!(
        (r["revision"].clone(), r["status"].clone()),
        (json!(1), json!("deployed")),
        "{r}"
    );
    assert_eq!(r["app_version"], workspace_version().as_str());
    let deployment = operator().expect("the operator's Deployment");
    assert_eq!(
        deployment["metadata"]["annotations"]["meta.helm.sh/release-name"],
        RELEASE
    );
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(
        args(&deployment["spec"]["template"]["spec"]),
        ["--metrics-address=0.0.0.0:8080"]
    );
    assert!(policy().is_some());
    let ns = get(&["get", "namespace", "reboot-coordinator"]).expect("namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let mut agents = 0;
    for _ in 0..200 {
        let pods = get(&[
            "get",
            "pods",
            "-n",
            "reboot-coordinator",
            "-l",
            "app=flatcar-linux-update-agent",
        ])
        .unwrap();
        agents = pods["items"].as_array().unwrap().len();
        if agents == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(agents, 2, "an agent on each node");

    // helm upgrade: new flags reach the pods' args, a disabled object is deleted.
    let r = release(ask(
        "upgrade",
        json!({
            "operator": {"flags": {"maxRebootingNodes": 2, "rebootWindow": ["Mon-Fri 02:00-05:00"]}},
            "agent": {"flags": {"drainTimeoutAction": "reboot"}},
            "admission": {"enabled": false},
        }),
    ));
    assert_eq!(
        (r["revision"].clone(), r["status"].clone()),
        (json!(2), json!("deployed")),
        "{r}"
    );
    let deployment = operator().expect("the operator's Deployment");
    assert_eq!(
        args(&deployment["spec"]["template"]["spec"]),
        [
            "--metrics-address=0.0.0.0:8080",
            "--max-rebooting-nodes=2",
            "--reboot-window=Mon-Fri 02:00-05:00"
        ]
    );
    let ds = get(&["get", "daemonset", AGENT, "-n", "reboot-coordinator"]).unwrap();
    assert_eq!(
        args(&ds["spec"]["template"]["spec"]),
        [
            "--metrics-address=0.0.0.0:8080",
            "--drain-timeout-action=reboot"
        ]
    );
    assert!(
        policy().is_none(),
        "admission.enabled=false deletes the policy"
    );

    // A value the schema refuses fails the upgrade and changes nothing.
    let answer = ask(
        "upgrade",
        json!({"operator": {"flags": {"maxRebootingNodes": "all"}}}),
    );
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("/operator/flags/maxRebootingNodes"),
        "{answer}"
    );
    assert_eq!(
        operator().unwrap()["metadata"]["resourceVersion"],
        deployment["metadata"]["resourceVersion"]
    );

    // helm uninstall removes what it installed.
    let r = release(ask("uninstall", json!(null)));
    assert_eq!(r["status"], "uninstalled", "{r}");
    assert!(operator().is_none());
    assert!(get(&["get", "clusterrole", OPERATOR]).is_none());
    assert!(get(&["get", "daemonset", AGENT, "-n", "reboot-coordinator"]).is_none());
}

/// A cluster installed with `kubectl apply -k deploy/` (or FLUO's, taken over that way first)
/// moves to Helm as docs/deploy.md says: mark the objects as the release's, then `helm
/// install` adopts them instead of refusing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_adopts_a_kustomize_install() {
    let sb = sandbox::Sandbox::start(sandbox::Options {
        pod_start: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    sb.add_node("node-1", &[]).expect("node");
    let k = Kubectl {
        server: sb.url(),
        cache: tempfile::tempdir().unwrap(),
    };
    let deploy = repo_root().join("deploy");
    let (ok, out, err) =
        tokio::task::block_in_place(|| k.run(&["apply", "-k", deploy.to_str().unwrap()]));
    assert!(ok, "kubectl apply -k deploy/: {err}{out}");

    let mut helm = Helm::start();
    let mut install = || {
        tokio::task::block_in_place(|| {
            helm.ask(json!({
                "action": "install",
                "server": sb.url(),
                "chart": repo_root().join(CHART),
                "values": {},
                "name": "reboot-coordinator",
                "namespace": "default",
            }))
        })
    };
    // Without the marks Helm refuses to take objects it did not create.
    let answer = install();
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("cannot be imported into the current release"),
        "{answer}"
    );

    // docs/deploy.md's commands, with the real kubectl.
    let (ok, objects, err) =
        tokio::task::block_in_place(|| k.run(&["kustomize", deploy.to_str().unwrap()]));
    assert!(ok, "{err}");
    tokio::task::block_in_place(|| {
        k.pipe(
            &[
                "annotate",
                "-f",
                "-",
                "--overwrite",
                "meta.helm.sh/release-name=reboot-coordinator",
                "meta.helm.sh/release-namespace=default",
            ],
            &objects,
        );
        k.pipe(
            &[
                "label",
                "-f",
                "-",
                "--overwrite",
                "app.kubernetes.io/managed-by=Helm",
            ],
            &objects,
        );
    });

    let answer = install();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["release"]["status"], "deployed");
    // Every object is now the release's, with the chart's labels and image.
    for obj in render(json!({})) {
        let live = tokio::task::block_in_place(|| k.get_as_stored(&obj));
        let (_, kind, name, _) = key(&obj);
        assert_eq!(
            live["metadata"]["annotations"]["meta.helm.sh/release-name"], "reboot-coordinator",
            "{kind}/{name}"
        );
        assert_eq!(
            live["metadata"]["labels"]["helm.sh/chart"],
            format!("reboot-coordinator-{}", workspace_version()),
            "{kind}/{name}"
        );
    }
    let (_, out, _) = tokio::task::block_in_place(|| {
        k.run(&[
            "get",
            "deployment",
            OPERATOR,
            "-n",
            "reboot-coordinator",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
    });
    assert_eq!(
        out,
        format!(
            "ghcr.io/flatcar-reboot-coordinator/reboot-coordinator:{}",
            workspace_version()
        )
    );
}

/// The chart rendered with non-default values runs a rollout: the real update-operator and
/// an update-agent per node, started with exactly the rendered containers' command, args and
/// environment (packaging::cluster), over the sandbox. Each value shows its effect: the
/// namespace and Lease name, two nodes picked at once, no reboot before the hook annotation,
/// JSON logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_runs_from_the_chart_rendered_with_non_default_flags() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Node;
    use kube::Api;
    use kube::api::{Patch, PatchParams};
    use packaging::cluster::{Cluster, Runtime, rolled_out};
    use protocol::keys;
    use sandbox::testing::{annotation, label};

    const VERSION: &str = "4152.0.0";
    const HOOK: &str = "example.com/backup-done";
    let objs = render(json!({
        "namespace": {"name": "fluo-system"},
        "operator": {"flags": {
            "maxRebootingNodes": 2,
            "beforeRebootAnnotations": [HOOK],
            "leaseName": "reboot-lock",
            "releaseLeaseAfterIdle": "0s",
            "logFormat": "json",
        }},
        "agent": {"flags": {"gracePeriod": "2m", "drainTimeoutAction": "reboot", "logFormat": "json"}},
    }));
    let nodes = ["node-1", "node-2", "node-3"];
    let mut cluster = Cluster::start(Runtime::Host, &objs, &nodes).await;
    let api: Api<Node> = Api::all(cluster.sandbox.client());
    let get = |name: &'static str| {
        let api = api.clone();
        async move { api.get(name).await.expect("get node") }
    };
    let tr = Some(keys::TRUE);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = true;
        for n in nodes {
            ready &= annotation(&get(n).await, keys::STATUS) == Some("UPDATE_STATUS_IDLE");
        }
        if ready {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents never reported:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in nodes {
        cluster.sandbox.host(n).unwrap().offer_update(VERSION).await;
    }

    // maxRebootingNodes=2: two nodes are picked, and wait for the before-reboot hook.
    let picked = |all: &[Node]| -> Vec<String> {
        all.iter()
            .filter(|n| label(n, keys::BEFORE_REBOOT) == tr)
            .map(|n| n.metadata.name.clone().unwrap())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = Vec::new();
        for n in nodes {
            all.push(get(n).await);
        }
        if picked(&all).len() == 2 {
            break;
        }
        assert!(picked(&all).len() < 3, "more than maxRebootingNodes picked");
        assert!(
            tokio::time::Instant::now() < deadline,
            "two nodes never picked:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // beforeRebootAnnotations: without the hook's annotation, no grant and no reboot.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut all = Vec::new();
    for n in nodes {
        all.push(get(n).await);
    }
    assert_eq!(picked(&all).len(), 2, "still two picked");
    for n in &all {
        assert_ne!(
            annotation(n, keys::REBOOT_OK),
            tr,
            "granted before the hook: {:?}",
            n.metadata.name
        );
    }
    for n in nodes {
        assert_eq!(cluster.reboot_calls(n), 0, "{n} rebooted before its hook");
    }

    // The hook: annotate every picked node, until the rollout is done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = true;
        for n in nodes {
            let node = get(n).await;
            if label(&node, keys::BEFORE_REBOOT) == tr && annotation(&node, HOOK) != tr {
                let patch = json!({"metadata": {"annotations": {HOOK: "true"}}});
                api.patch(n, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("annotate");
            }
            done &= rolled_out(&node, VERSION);
        }
        if done {
            break;
        }
        assert!(
            cluster.all_running(),
            "a container exited:\n{}",
            cluster.logs()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout did not finish:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in nodes {
        assert_eq!(cluster.reboot_calls(n), 1, "{n}:\n{}", cluster.logs());
    }

    // namespace.name and leaseName: the leader holds Lease fluo-system/reboot-lock.
    let leases: Api<Lease> = Api::namespaced(cluster.sandbox.client(), "fluo-system");
    let lease = leases
        .get("reboot-lock")
        .await
        .expect("the operator's Lease");
    assert!(
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .is_some_and(|h| !h.is_empty())
    );

    // logFormat=json, for both: every line of their logs is a JSON object.
    let logs = cluster.logs();
    let mut seen = BTreeSet::new();
    for section in logs.split("--- ").filter(|s| !s.is_empty()) {
        let (name, body) = section.split_once('\n').unwrap_or((section, ""));
        let program = if name.starts_with("update-operator") {
            "operator"
        } else {
            "agent"
        };
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            assert!(v["level"].is_string(), "{name}: {line}");
            seen.insert(program);
        }
    }
    assert_eq!(seen, BTreeSet::from(["operator", "agent"]), "{logs}");
}

#[test]
fn the_reboot_sentinel_is_mounted_read_only_and_passed_inside_the_pod() {
    let default = render(json!({}));
    let pod = agent_pod(&default);
    assert!(
        !serde_json::to_string(pod)
            .unwrap()
            .contains("reboot-sentinel"),
        "no sentinel by default"
    );
    let objs = render(json!({"agent": {"rebootSentinel": "/run/reboot-required"}}));
    let pod = agent_pod(&objs);
    assert!(
        args(pod).contains(&"--reboot-sentinel=/host/run/reboot-required".to_string()),
        "{:?}",
        args(pod)
    );
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m["name"] == "reboot-sentinel")
        .expect("the sentinel's mount");
    assert_eq!(mount["mountPath"], "/host/run");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "reboot-sentinel")
        .expect("the sentinel's volume");
    assert_eq!(
        volume["hostPath"],
        json!({"path": "/run", "type": "Directory"})
    );
    accepted_by("update-agent", &args(pod), ("UPDATE_AGENT_NODE", "node-1"));
    // A path whose directory would be the host's root, or a relative one, is refused.
    for bad in ["/reboot-required", "run/reboot-required", "/run/"] {
        let e = try_render(json!({"agent": {"rebootSentinel": bad}})).unwrap_err();
        assert!(e.contains("/agent/rebootSentinel"), "{bad}: {e}");
    }
}
