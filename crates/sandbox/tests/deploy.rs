//! deploy/: the kustomize base renders FLUO's objects (and ours) with least privilege, the
//! real `kubectl apply -k` installs it into the sandbox (twice, the second time changing
//! nothing), the PrometheusRule carries exactly deploy/prometheus/rules.yaml, and — when
//! `promtool` is installed (CI installs Debian's `prometheus` package) — the rules pass
//! `promtool check rules` and their unit tests in deploy/prometheus/rules_test.yaml.

mod common;

use common::Kubectl;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox::testing::contained;
use serde::Deserialize;
use serde_json::Value;

const NS: &str = "reboot-coordinator";
const PREFIX: &str = "flatcar-linux-update.v1.flatcar-linux.net/";
const IMAGE: &str = "ghcr.io/flatcar-reboot-coordinator/reboot-coordinator:latest";
const AGENT_SA: &str = "flatcar-linux-update-agent";
const OPERATOR_SA: &str = "flatcar-linux-update-operator-sa";

/// (apiVersion, kind, name, namespace) of everything `kubectl apply -k deploy/` creates.
const EXPECTED: &[(&str, &str, &str, Option<&str>)] = &[
    ("v1", "Namespace", NS, None),
    ("v1", "ServiceAccount", OPERATOR_SA, Some(NS)),
    ("v1", "ServiceAccount", AGENT_SA, Some(NS)),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "flatcar-linux-update-operator",
        None,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "flatcar-linux-update-operator",
        None,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "flatcar-linux-update-agent",
        None,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "flatcar-linux-update-agent",
        None,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        "flatcar-linux-update-operator",
        Some(NS),
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "flatcar-linux-update-operator",
        Some(NS),
    ),
    (
        "apps/v1",
        "Deployment",
        "flatcar-linux-update-operator",
        Some(NS),
    ),
    (
        "apps/v1",
        "DaemonSet",
        "flatcar-linux-update-agent",
        Some(NS),
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
        "flatcar-linux-update-agent-own-node",
        None,
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        "flatcar-linux-update-agent-own-node",
        None,
    ),
    (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        "reboot-coordinator",
        Some(NS),
    ),
    (
        "monitoring.coreos.com/v1",
        "PodMonitor",
        "reboot-coordinator",
        Some(NS),
    ),
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .canonicalize()
        .expect("deploy/ exists")
}

/// Runs a command to completion; returns (success, stdout, stderr).
fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", "/dev/null")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubectl kustomize deploy/`, parsed.
fn render() -> Vec<Value> {
    let dir = deploy_dir();
    let (ok, out, err) = run("kubectl", &["kustomize", dir.to_str().unwrap()]);
    assert!(ok, "kubectl kustomize deploy/ failed: {err}");
    yaml_docs(&out)
}

fn key(o: &Value) -> (String, String, String, Option<String>) {
    (
        o["apiVersion"].as_str().unwrap().to_string(),
        o["kind"].as_str().unwrap().to_string(),
        o["metadata"]["name"].as_str().unwrap().to_string(),
        o["metadata"]["namespace"].as_str().map(str::to_string),
    )
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} rendered"))
}

/// The one container of a workload.
fn container(workload: &Value) -> &Value {
    let cs = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 1, "one container");
    &cs[0]
}

fn env_field_ref(c: &Value, name: &str) -> Option<String> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str())
        .map(str::to_string)
}

#[test]
fn kustomize_renders_fluos_objects_and_ours() {
    let objs = render();
    let got: BTreeSet<_> = objs.iter().map(key).collect();
    let want: BTreeSet<_> = EXPECTED
        .iter()
        .map(|(a, k, n, ns)| {
            (
                a.to_string(),
                k.to_string(),
                n.to_string(),
                ns.map(str::to_string),
            )
        })
        .collect();
    assert_eq!(got, want, "rendered objects");
    assert_eq!(objs.len(), EXPECTED.len(), "no duplicates");

    // FLUO's selectors (immutable, so FLUO's objects are updated in place), container
    // names, environment, image and commands.
    let op = find(&objs, "Deployment", "flatcar-linux-update-operator");
    let agent = find(&objs, "DaemonSet", "flatcar-linux-update-agent");
    for (w, app, sa, cname, bin) in [
        (
            op,
            "flatcar-linux-update-operator",
            OPERATOR_SA,
            "update-operator",
            "/usr/local/bin/update-operator",
        ),
        (
            agent,
            "flatcar-linux-update-agent",
            AGENT_SA,
            "update-agent",
            "/usr/local/bin/update-agent",
        ),
    ] {
        assert_eq!(
            w["spec"]["selector"],
            serde_json::json!({"matchLabels": {"app": app}})
        );
        assert_eq!(w["spec"]["template"]["metadata"]["labels"]["app"], app);
        assert_eq!(w["spec"]["template"]["spec"]["serviceAccountName"], sa);
        let c = container(w);
        assert_eq!(c["name"], cname);
        assert_eq!(c["image"], IMAGE);
        assert_eq!(c["command"], serde_json::json!([bin]));
        assert_eq!(
            env_field_ref(c, "POD_NAMESPACE").as_deref(),
            Some("metadata.namespace")
        );
    }
    assert_eq!(
        env_field_ref(container(agent), "UPDATE_AGENT_NODE").as_deref(),
        Some("spec.nodeName")
    );
    assert_eq!(
        agent["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );

    // The agent runs on every node, whatever its taints.
    let tolerations = agent["spec"]["template"]["spec"]["tolerations"]
        .as_array()
        .unwrap();
    assert!(
        tolerations.iter().any(|t| t["operator"] == "Exists"
            && t.get("key").is_none()
            && t.get("effect").is_none()),
        "{tolerations:?}"
    );

    // The agent's host paths: read-only except the D-Bus socket's directory.
    let pod = &agent["spec"]["template"]["spec"];
    let volumes: BTreeMap<&str, &str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["hostPath"]["path"].as_str().expect("a hostPath volume"),
            )
        })
        .collect();
    let mounts: BTreeMap<&str, (&str, bool)> = container(agent)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let path = volumes[m["name"].as_str().unwrap()];
            (
                path,
                (
                    m["mountPath"].as_str().unwrap(),
                    m["readOnly"].as_bool().unwrap_or(false),
                ),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        BTreeMap::from([
            ("/var/run/dbus", ("/var/run/dbus", false)),
            ("/etc/flatcar", ("/etc/flatcar", true)),
            ("/usr/share/flatcar", ("/usr/share/flatcar", true)),
            ("/etc/os-release", ("/etc/os-release", true)),
        ])
    );
    assert!(
        op["spec"]["template"]["spec"].get("volumes").is_none(),
        "the operator mounts nothing"
    );

    // Security contexts: operator non-root; agent uid 0 (D-Bus) but nothing else.
    for w in [op, agent] {
        let sc = &container(w)["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
        assert_eq!(
            sc["capabilities"],
            serde_json::json!({"drop": ["ALL"]}),
            "{sc}"
        );
        assert_ne!(sc["privileged"], true, "{sc}");
        assert_eq!(
            w["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let pod = &w["spec"]["template"]["spec"];
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            assert_ne!(pod[host], true, "{host}");
        }
    }
    let op_pod = &op["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(op_pod["runAsNonRoot"], true);
    assert_ne!(op_pod["runAsUser"], 0);
    assert_eq!(container(agent)["securityContext"]["runAsUser"], 0);
}

/// (apiGroup, resource, verb) triples a role grants; resourceNames are appended to the resource.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let names: Vec<&str> = rule["resourceNames"]
            .as_array()
            .map(|a| a.iter().map(|n| n.as_str().unwrap()).collect())
            .unwrap_or_default();
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    let r = r.as_str().unwrap();
                    let r = if names.is_empty() {
                        r.to_string()
                    } else {
                        format!("{r}/{}", names.join(","))
                    };
                    out.insert((g.as_str().unwrap().into(), r, v.as_str().unwrap().into()));
                }
            }
        }
    }
    out
}

fn triples(spec: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    spec.iter()
        .flat_map(|(g, r, vs)| {
            vs.iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn rbac_is_least_privilege_and_every_binding_resolves() {
    let objs = render();
    let events: &[(&str, &str, &[&str])] = &[
        ("", "events", &["create", "patch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ];
    let mut operator = triples(&[("", "nodes", &["get", "list", "watch", "patch"])]);
    operator.extend(triples(events));
    assert_eq!(
        grants(find(&objs, "ClusterRole", "flatcar-linux-update-operator")),
        operator
    );
    assert_eq!(
        grants(find(&objs, "Role", "flatcar-linux-update-operator")),
        triples(&[
            ("coordination.k8s.io", "leases", &["create"]),
            (
                "coordination.k8s.io",
                "leases/flatcar-linux-update-operator-lock",
                &["get", "update", "list", "watch"]
            ),
            ("", "configmaps", &["create"]),
            (
                "",
                "configmaps/flatcar-linux-update-operator-lock",
                &["get", "update"]
            ),
        ])
    );
    let mut agent = triples(&[
        ("", "nodes", &["get", "list", "watch", "patch"]),
        ("", "pods", &["list", "watch", "delete"]),
        ("", "pods/eviction", &["create"]),
        ("storage.k8s.io", "volumeattachments", &["list", "watch"]),
    ]);
    agent.extend(triples(events));
    assert_eq!(
        grants(find(&objs, "ClusterRole", "flatcar-linux-update-agent")),
        agent
    );

    // No binding dangles (FLUO's RoleBinding flatcar-linux-update-agent named a Role that
    // does not exist), and every subject is one of our service accounts.
    for b in objs
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        let role = &b["roleRef"];
        let role_obj = objs.iter().find(|o| {
            o["kind"] == role["kind"]
                && o["metadata"]["name"] == role["name"]
                && (role["kind"] == "ClusterRole"
                    || o["metadata"]["namespace"] == b["metadata"]["namespace"])
        });
        assert!(
            role_obj.is_some(),
            "{} names a missing role: {role}",
            b["metadata"]["name"]
        );
        for s in b["subjects"].as_array().unwrap() {
            assert_eq!(s["kind"], "ServiceAccount");
            assert_eq!(s["namespace"], NS);
            let name = s["name"].as_str().unwrap();
            assert!(
                objs.iter()
                    .any(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == name),
                "subject {name} exists"
            );
        }
    }
    let bound = |sa: &str, role: &str| {
        objs.iter().any(|b| {
            b["roleRef"]["name"] == role
                && b["subjects"]
                    .as_array()
                    .is_some_and(|ss| ss.iter().any(|s| s["name"] == sa))
        })
    };
    assert!(bound(OPERATOR_SA, "flatcar-linux-update-operator"));
    assert!(bound(AGENT_SA, "flatcar-linux-update-agent"));
}

#[test]
fn admission_policy_is_bound_to_the_agent_and_our_keys() {
    let objs = render();
    let policy = find(
        &objs,
        "ValidatingAdmissionPolicy",
        "flatcar-linux-update-agent-own-node",
    );
    let binding = find(
        &objs,
        "ValidatingAdmissionPolicyBinding",
        "flatcar-linux-update-agent-own-node",
    );
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"])
    );
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    let rules = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .unwrap();
    assert!(rules.iter().any(|r| {
        r["apiGroups"] == serde_json::json!([""])
            && r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "nodes")
            && r["operations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "UPDATE")
    }));
    // It applies to the agent's service account, as rendered.
    let conditions = spec["matchConditions"].to_string();
    assert!(
        conditions.contains(&format!("system:serviceaccount:{NS}:{AGENT_SA}")),
        "{conditions}"
    );
    let all = spec.to_string();
    for needle in [
        "authentication.kubernetes.io/node-name",
        "request.userInfo.extra",
        PREFIX,
        "unschedulable",
        "oldObject",
    ] {
        assert!(all.contains(needle), "the policy mentions {needle}");
    }
    // Every validation denies with a reason and a message.
    for v in spec["validations"].as_array().unwrap() {
        assert_eq!(v["reason"], "Forbidden", "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
}

fn rules_file_groups() -> Value {
    let text = std::fs::read_to_string(deploy_dir().join("prometheus/rules.yaml")).unwrap();
    let v: Value = serde_yaml::from_str(&text).unwrap();
    v["groups"].clone()
}

#[test]
fn prometheus_rule_carries_exactly_the_rules_file() {
    let objs = render();
    let rule = find(&objs, "PrometheusRule", "reboot-coordinator");
    let groups = rules_file_groups();
    assert_eq!(rule["spec"]["groups"], groups);
    // Also the file as written, not only as kustomize renders it.
    let text =
        std::fs::read_to_string(deploy_dir().join("monitoring/prometheusrule.yaml")).unwrap();
    let raw: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(raw["spec"]["groups"], groups);
    let alerts: BTreeSet<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        alerts,
        BTreeSet::from([
            "RebootCoordinatorNodeStuck",
            "RebootCoordinatorRolloutStalled",
            "RebootCoordinatorNoLeader",
        ])
    );
}

/// Every PromQL expression of the dashboard, with Grafana's variables filled in.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("grafana/dashboard.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(
                t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "5m")
                    .replace("$namespace", ".*"),
            );
        }
    }
    out
}

#[test]
fn grafana_dashboard_covers_the_metrics() {
    let text = std::fs::read_to_string(deploy_dir().join("grafana/dashboard.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = d["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let exprs = dashboard_exprs().join("\n");
    for metric in [
        "fluo_nodes",
        "fluo_reboots_completed_total",
        "fluo_grants_total",
        "fluo_drain_duration_seconds_bucket",
        "fluo_reboot_duration_seconds_bucket",
        "fluo_grants_blocked_total",
        "fluo_operator_leader",
        "fluo_reboot_window_open",
    ] {
        assert!(exprs.contains(metric), "a panel shows {metric}");
    }
    assert!(exprs.contains("histogram_quantile(0.99"), "drain quantiles");
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    assert!(
        on_path("promtool"),
        "promtool is not installed: apt-get install prometheus (scripts/setup installs every tool the tests need)"
    );
    let dir = deploy_dir();
    let rules = dir.join("prometheus/rules.yaml");
    let tests = dir.join("prometheus/rules_test.yaml");
    let (ok, out, err) = run("promtool", &["check", "rules", rules.to_str().unwrap()]);
    assert!(ok && out.contains("SUCCESS: 3 rules found"), "{out}{err}");
    let (ok, out, err) = run("promtool", &["test", "rules", tests.to_str().unwrap()]);
    assert!(ok && out.contains("SUCCESS"), "{out}{err}");

    // The dashboard's queries parse: check them as recording rules.
    let tmp = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = dashboard_exprs()
        .into_iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:query:{i}"), "expr": e}))
        .collect();
    let n = rules.len();
    let file = tmp.path().join("dashboard_rules.yaml");
    std::fs::write(
        &file,
        serde_yaml::to_string(
            &serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}),
        )
        .unwrap(),
    )
    .unwrap();
    let (ok, out, err) = run("promtool", &["check", "rules", file.to_str().unwrap()]);
    assert!(
        ok && out.contains(&format!("SUCCESS: {n} rules found")),
        "{out}{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_k_installs_everything_into_the_sandbox() {
    let sb = sandbox::Sandbox::start(sandbox::Options {
        pod_start: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    for n in ["node-1", "node-2"] {
        sb.add_node(n, &[]).expect("node");
    }
    let k = Kubectl::new(&sb);
    let dir = deploy_dir();
    let dir = dir.to_str().unwrap();

    let (ok, out, err) = k.run(&["apply", "-k", dir]).await;
    assert!(ok, "kubectl apply -k deploy/ failed:\n{err}\n{out}");
    assert!(!err.to_lowercase().contains("error"), "{err}");
    let created = out.lines().filter(|l| l.ends_with(" created")).count();
    assert_eq!(created, EXPECTED.len(), "every object created:\n{out}");

    // Every rendered object is there, as rendered.
    for obj in render() {
        let (api_version, kind, name, ns) = key(&obj);
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let resource = if group.is_empty() {
            kind.to_lowercase()
        } else {
            format!("{}.{group}", kind.to_lowercase())
        };
        let mut args = vec!["get", resource.as_str(), name.as_str(), "-o", "json"];
        if let Some(ns) = ns.as_deref() {
            args.extend(["-n", ns]);
        }
        let (ok, out, err) = k.run(&args).await;
        assert!(ok, "kubectl get {resource} {name}: {err}");
        let live: Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(live["kind"], kind.as_str());
        if let Err(diff) = contained(&obj, &live, &format!("{kind}/{name}")) {
            panic!("stored object differs from the rendered one: {diff}");
        }
    }

    // The DaemonSet puts an agent on every node, with the node's name in its environment.
    let mut pods = Value::Null;
    for _ in 0..200 {
        let (ok, out, _) = k
            .run(&[
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                "app=flatcar-linux-update-agent",
                "-o",
                "json",
            ])
            .await;
        if ok {
            pods = serde_json::from_str(&out).unwrap();
            if pods["items"].as_array().is_some_and(|i| i.len() == 2) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let items = pods["items"].as_array().expect("agent pods");
    let nodes: BTreeSet<&str> = items
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(nodes, BTreeSet::from(["node-1", "node-2"]), "{pods}");
    for p in items {
        assert_eq!(p["spec"]["serviceAccountName"], AGENT_SA);
        assert_eq!(
            env_field_ref(&p["spec"]["containers"][0], "UPDATE_AGENT_NODE").as_deref(),
            Some("spec.nodeName")
        );
    }

    // Applying again changes nothing and fails nothing.
    let (ok, out, err) = k.run(&["apply", "-k", dir]).await;
    assert!(ok, "second kubectl apply -k deploy/ failed:\n{err}\n{out}");
    assert!(!err.to_lowercase().contains("error"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), EXPECTED.len(), "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with(" unchanged") || l.ends_with(" configured")),
        "{out}"
    );
}

/// A cluster running FLUO v0.10 as its examples/deploy installed it, in outline: the
/// objects and fields that our install must take over (names, selectors, container
/// names), FLUO's broader RBAC (configmaps, `update` on nodes, daemonsets) and its
/// RoleBinding to a Role that does not exist.
fn fluo_install() -> Value {
    use serde_json::json;
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
    let fluo_cluster_rules = |agent: bool| {
        let mut rules = vec![
            rule(&[""], &["nodes"], &["get", "list", "watch", "update"]),
            rule(
                &[""],
                &["configmaps"],
                &["create", "get", "update", "list", "watch"],
            ),
            rule(&[""], &["events"], &["create", "watch"]),
            rule(&[""], &["pods"], &["get", "list", "delete"]),
            rule(&["apps"], &["daemonsets"], &["get"]),
        ];
        if agent {
            rules.push(rule(&[""], &["pods/eviction"], &["create"]));
        }
        rules
    };
    let binding = |kind: &str, name: &str, role_kind: &str, sa: &str| {
        let mut b = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NS}],
        });
        if kind == "RoleBinding" {
            b["metadata"]["namespace"] = json!(NS);
        }
        b
    };
    let image = "ghcr.io/flatcar/flatcar-linux-update-operator:v0.10.0";
    let host = |name: &str, path: &str| json!({"name": name, "hostPath": {"path": path}});
    let mount = |name: &str, path: &str| json!({"name": name, "mountPath": path});
    json!({"items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA, "namespace": NS}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": AGENT_SA, "namespace": NS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "flatcar-linux-update-operator"}, "rules": fluo_cluster_rules(false)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "flatcar-linux-update-agent"}, "rules": fluo_cluster_rules(true)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "flatcar-linux-update-operator", "namespace": NS},
         "rules": [
            rule(&[""], &["configmaps"], &["create"]),
            rule(&["coordination.k8s.io"], &["leases"], &["create"]),
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["flatcar-linux-update-operator-lock"], "verbs": ["get", "update"]},
         ]},
        binding("ClusterRoleBinding", "flatcar-linux-update-operator", "ClusterRole", OPERATOR_SA),
        binding("ClusterRoleBinding", "flatcar-linux-update-agent", "ClusterRole", AGENT_SA),
        binding("RoleBinding", "flatcar-linux-update-operator", "Role", OPERATOR_SA),
        // FLUO's dangling binding: there is no Role flatcar-linux-update-agent.
        binding("RoleBinding", "flatcar-linux-update-agent", "Role", AGENT_SA),
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "flatcar-linux-update-operator", "namespace": NS},
         "spec": {"replicas": 1,
            "selector": {"matchLabels": {"app": "flatcar-linux-update-operator"}},
            "template": {"metadata": {"labels": {"app": "flatcar-linux-update-operator"}},
              "spec": {"serviceAccountName": OPERATOR_SA, "containers": [{
                "name": "update-operator", "image": image, "command": ["/bin/update-operator"],
                "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]}]}}}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "flatcar-linux-update-agent", "namespace": NS},
         "spec": {
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "selector": {"matchLabels": {"app": "flatcar-linux-update-agent"}},
            "template": {"metadata": {"labels": {"app": "flatcar-linux-update-agent"}},
              "spec": {"serviceAccountName": AGENT_SA, "containers": [{
                "name": "update-agent", "image": image, "command": ["/bin/update-agent"],
                "securityContext": {"runAsUser": 0},
                "env": [
                    {"name": "UPDATE_AGENT_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                "volumeMounts": [
                    mount("var-run-dbus", "/var/run/dbus"), mount("etc-flatcar", "/etc/flatcar"),
                    mount("usr-share-flatcar", "/usr/share/flatcar"), mount("etc-os-release", "/etc/os-release")]}],
                "tolerations": [{"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"}],
                "volumes": [
                    host("var-run-dbus", "/var/run/dbus"), host("etc-flatcar", "/etc/flatcar"),
                    host("usr-share-flatcar", "/usr/share/flatcar"), host("etc-os-release", "/etc/os-release")]}}}},
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_k_takes_over_a_fluo_install() {
    let sb = sandbox::Sandbox::start(sandbox::Options {
        pod_start: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    let k = Kubectl::new(&sb);
    let tmp = tempfile::tempdir().unwrap();
    // One JSON document per object (JSON is YAML); kubectl validates each against the
    // server's OpenAPI, where a v1 List has no schema.
    let fluo = tmp.path().join("fluo.yaml");
    let docs: Vec<String> = fluo_install()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect();
    std::fs::write(&fluo, docs.join("\n---\n")).unwrap();
    let (ok, out, err) = k.run(&["apply", "-f", fluo.to_str().unwrap()]).await;
    assert!(ok, "installing FLUO's outline failed:\n{err}\n{out}");

    let dir = deploy_dir();
    let (ok, out, err) = k.run(&["apply", "-k", dir.to_str().unwrap()]).await;
    assert!(
        ok,
        "kubectl apply -k deploy/ over FLUO failed:\n{err}\n{out}"
    );
    assert!(!err.to_lowercase().contains("error"), "{err}");
    for taken_over in [
        "clusterrole.rbac.authorization.k8s.io/flatcar-linux-update-operator configured",
        "clusterrole.rbac.authorization.k8s.io/flatcar-linux-update-agent configured",
        "role.rbac.authorization.k8s.io/flatcar-linux-update-operator configured",
        "deployment.apps/flatcar-linux-update-operator configured",
        "daemonset.apps/flatcar-linux-update-agent configured",
    ] {
        assert!(
            out.lines().any(|l| l == taken_over),
            "{taken_over} in:\n{out}"
        );
    }

    // The live objects are ours: RBAC rules replaced whole, FLUO's command and image gone.
    let rendered = render();
    let get = |kind: &'static str, name: &'static str, ns: Option<&'static str>| {
        let k = &k;
        async move {
            let mut args = vec!["get", kind, name, "-o", "json"];
            if let Some(ns) = ns {
                args.extend(["-n", ns]);
            }
            let (ok, out, err) = k.run(&args).await;
            assert!(ok, "kubectl get {kind} {name}: {err}");
            serde_json::from_str::<Value>(&out).unwrap()
        }
    };
    for (kind, name) in [
        ("ClusterRole", "flatcar-linux-update-operator"),
        ("ClusterRole", "flatcar-linux-update-agent"),
    ] {
        let live = get("clusterrole.rbac.authorization.k8s.io", name, None).await;
        assert_eq!(
            live["rules"],
            find(&rendered, kind, name)["rules"],
            "{name}"
        );
    }
    let live = get(
        "role.rbac.authorization.k8s.io",
        "flatcar-linux-update-operator",
        Some(NS),
    )
    .await;
    assert_eq!(
        live["rules"],
        find(&rendered, "Role", "flatcar-linux-update-operator")["rules"]
    );
    for (kind, resource, name) in [
        (
            "Deployment",
            "deployment.apps",
            "flatcar-linux-update-operator",
        ),
        ("DaemonSet", "daemonset.apps", "flatcar-linux-update-agent"),
    ] {
        let live = get(resource, name, Some(NS)).await;
        let want = find(&rendered, kind, name);
        let c = container(&live);
        assert_eq!(c["image"], IMAGE);
        assert_eq!(c["command"], container(want)["command"]);
        assert_eq!(c["securityContext"], container(want)["securityContext"]);
        assert_eq!(c["volumeMounts"], container(want)["volumeMounts"]);
        assert_eq!(
            live["spec"]["template"]["spec"]["tolerations"],
            want["spec"]["template"]["spec"]["tolerations"]
        );
    }

    // What apply cannot know about stays: FLUO's dangling RoleBinding. docs/deploy.md
    // says to delete it; that works.
    let (ok, _, err) = k
        .run(&["get", "rolebinding", "flatcar-linux-update-agent", "-n", NS])
        .await;
    assert!(ok, "{err}");
    let (ok, out, err) = k
        .run(&[
            "delete",
            "rolebinding",
            "flatcar-linux-update-agent",
            "-n",
            NS,
            "--ignore-not-found",
        ])
        .await;
    assert!(ok && out.contains("deleted"), "{err}{out}");
}
