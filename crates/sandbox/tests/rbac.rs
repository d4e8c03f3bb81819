//! RBAC enforced from the shipped Roles and bindings, as kube-apiserver's RBAC authorizer does,
//! checked with the real kubectl and the per-identity kubeconfigs.

mod common;

use std::time::Duration;

use common::{Kubectl, raw_with};
use sandbox::{Options, Sandbox, authz::Mode};
use serde_json::{Value, json};

const AGENT: &str = "system:serviceaccount:reboot-coordinator:flatcar-linux-update-agent";
const OPERATOR: &str = "system:serviceaccount:reboot-coordinator:flatcar-linux-update-operator-sa";

struct Env {
    sb: Sandbox,
    dir: tempfile::TempDir,
}

impl Env {
    fn kubectl(&self, identity: &str) -> Kubectl {
        Kubectl::with_kubeconfig(&self.dir.path().join(identity))
    }
}

async fn shipped() -> Env {
    let sb = Sandbox::start(Options {
        authorization: Mode::Rbac,
        pod_start: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap();
    sb.load_shipped_rbac().unwrap();
    for n in ["node-1", "node-2"] {
        sb.add_node(n, &[]).unwrap();
    }
    sb.add_workload("shop", "web", 2, Some(1), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let dir = tempfile::tempdir().unwrap();
    sb.write_kubeconfig_dir(dir.path(), &["node-1", "node-2"])
        .unwrap();
    Env { sb, dir }
}

fn a_pod(sb: &Sandbox) -> String {
    let st = sb.store().lock();
    let pods = sandbox::resources::find("", "v1", "pods").unwrap();
    let (_, p) = st.iter(pods, Some("shop")).next().expect("a pod");
    p["metadata"]["name"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_read_secrets() {
    let env = shipped().await;
    let (ok, _, err) = env
        .kubectl("update-agent-node-1")
        .run(&["get", "secrets", "-n", "reboot-coordinator"])
        .await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "Error from server (Forbidden): secrets is forbidden: User \"{AGENT}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"reboot-coordinator\""
        )
    );
    // What it may do, it does: read and patch nodes, list pods.
    env.kubectl("update-agent-node-1")
        .ok(&["annotate", "node", "node-1", "example.com/x=y"])
        .await;
    env.kubectl("update-agent-node-1")
        .ok(&["get", "pods", "-A"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cannot_evict_or_delete_pods() {
    let env = shipped().await;
    let pod = a_pod(&env.sb);
    let eviction = env.dir.path().join("eviction.json");
    std::fs::write(
        &eviction,
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": "shop"}})
            .to_string(),
    )
    .unwrap();
    let k = env.kubectl("update-operator");
    let (ok, _, err) = k
        .run(&[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/shop/pods/{pod}/eviction"),
            "-f",
            eviction.to_str().unwrap(),
        ])
        .await;
    assert!(!ok);
    assert!(
        err.contains("Error from server (Forbidden)"),
        "kubectl shows the 403: {err}"
    );
    // The Status body, word for word, through raw HTTP with the operator's token.
    let token = env.sb.token(&sandbox::UserInfo::operator());
    let (code, body) = raw_with(
        env.sb.addr(),
        "POST",
        &format!("/api/v1/namespaces/shop/pods/{pod}/eviction"),
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/json"),
        ],
        &std::fs::read_to_string(&eviction).unwrap(),
    )
    .await;
    assert_eq!(code, 403);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("pods \"{pod}\" is forbidden: User \"{OPERATOR}\" cannot create resource \"pods/eviction\" in API group \"\" in the namespace \"shop\""),
            "reason": "Forbidden",
            "details": {"name": pod, "group": "", "kind": "pods"},
            "code": 403,
        })
    );
    let (ok, _, err) = k.run(&["delete", "pod", "-n", "shop", &pod]).await;
    assert!(!ok);
    assert!(
        err.contains(&format!("pods \"{pod}\" is forbidden: User \"{OPERATOR}\" cannot delete resource \"pods\" in API group \"\" in the namespace \"shop\"")),
        "{err}"
    );
    // The Lease is limited to its name (resourceNames).
    let (ok, _, err) = k
        .run(&["get", "lease", "other", "-n", "reboot-coordinator"])
        .await;
    assert!(!ok);
    assert!(
        err.contains(&format!("leases.coordination.k8s.io \"other\" is forbidden: User \"{OPERATOR}\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"reboot-coordinator\"")),
        "{err}"
    );
    // A list of one name (fieldSelector metadata.name=X) is authorized as that name, as
    // kube-apiserver does: the operator watches its own Lease so.
    let auth = format!("Bearer {token}");
    let leases = "/apis/coordination.k8s.io/v1/namespaces/reboot-coordinator/leases";
    for (query, want) in [
        (
            "?fieldSelector=metadata.name%3Dflatcar-linux-update-operator-lock",
            200,
        ),
        (
            "?fieldSelector=metadata.name%3D%3Dflatcar-linux-update-operator-lock&watch=true&timeoutSeconds=1",
            200,
        ),
        ("?fieldSelector=metadata.name%3Dother", 403),
        ("", 403),
    ] {
        let (code, body) = raw_with(
            env.sb.addr(),
            "GET",
            &format!("{leases}{query}"),
            &[("Authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(code, want, "{query}: {body}");
    }
    // Cluster-scoped wording.
    let (ok, _, err) = k.run(&["delete", "node", "node-2"]).await;
    assert!(!ok);
    assert!(
        err.contains(&format!("nodes \"node-2\" is forbidden: User \"{OPERATOR}\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_answers_for_each_identity() {
    let env = shipped().await;
    let cases = [
        ("admin", &["delete", "nodes"][..], true),
        ("admin", &["*", "*"], true),
        ("update-operator", &["patch", "nodes"], true),
        (
            "update-operator",
            &["create", "pods", "--subresource", "eviction", "-n", "shop"],
            false,
        ),
        ("update-operator", &["list", "pods"], false),
        (
            "update-operator",
            &[
                "get",
                "leases/flatcar-linux-update-operator-lock",
                "-n",
                "reboot-coordinator",
            ],
            true,
        ),
        (
            "update-operator",
            &["create", "leases", "-n", "reboot-coordinator"],
            true,
        ),
        (
            "update-operator",
            &["create", "leases", "-n", "default"],
            false,
        ),
        ("update-agent-node-1", &["patch", "nodes"], true),
        (
            "update-agent-node-1",
            &["create", "pods", "--subresource", "eviction", "-n", "shop"],
            true,
        ),
        ("update-agent-node-1", &["get", "secrets"], false),
        ("update-agent-node-1", &["update", "nodes"], false),
    ];
    for (who, args, want) in cases {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        let (ok, out, err) = env.kubectl(who).run(&a).await;
        let expected = if want { "yes" } else { "no" };
        assert_eq!(out.trim(), expected, "{who} can-i {args:?}: {err}");
        assert_eq!(ok, want, "kubectl auth can-i exits 0 only for yes");
    }

    let list = env
        .kubectl("update-agent-node-1")
        .ok(&["auth", "can-i", "--list"])
        .await;
    let row = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let rows: Vec<String> = list.lines().map(row).collect();
    for want in [
        "nodes [] [] [get list watch patch]",
        "pods [] [] [list watch delete]",
        "pods/eviction [] [] [create]",
        "events.events.k8s.io [] [] [create patch]",
        "selfsubjectaccessreviews.authorization.k8s.io [] [] [create]",
        "[/api/*] [] [get]",
    ] {
        assert!(rows.iter().any(|r| r == want), "{want:?} in:\n{list}");
    }
    assert!(!list.contains("secrets"), "{list}");

    let list = env
        .kubectl("update-operator")
        .ok(&["auth", "can-i", "--list", "-n", "reboot-coordinator"])
        .await;
    let rows: Vec<String> = list.lines().map(row).collect();
    for want in [
        "leases.coordination.k8s.io [] [] [create]",
        "leases.coordination.k8s.io [] [flatcar-linux-update-operator-lock] [get update list watch]",
        "configmaps [] [] [create]",
        "configmaps [] [flatcar-linux-update-operator-lock] [get update]",
        "nodes [] [] [get list watch patch]",
    ] {
        assert!(rows.iter().any(|r| r == want), "{want:?} in:\n{list}");
    }
    assert!(!list.contains("pods"), "{list}");

    let list = env.kubectl("admin").ok(&["auth", "can-i", "--list"]).await;
    assert!(
        list.lines().map(row).any(|r| r == "*.* [] [] [*]"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_shows_the_projected_token_extras() {
    let env = shipped().await;
    let out = env
        .kubectl("update-agent-node-2")
        .ok(&["auth", "whoami"])
        .await;
    assert!(out.contains(AGENT), "{out}");
    assert!(
        out.contains("authentication.kubernetes.io/node-name") && out.contains("[node-2]"),
        "{out}"
    );
    assert!(
        out.contains("system:serviceaccounts:reboot-coordinator"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_gets_only_public_info() {
    let env = shipped().await;
    let addr = env.sb.addr();
    for path in ["/version", "/healthz", "/readyz", "/livez"] {
        let (code, body) = raw_with(addr, "GET", path, &[], "").await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, body) = raw_with(addr, "GET", "/api", &[], "").await;
    assert_eq!(code, 403);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "forbidden: User \"system:anonymous\" cannot get path \"/api\"",
               "reason": "Forbidden", "details": {}, "code": 403})
    );
    let (code, body) = raw_with(addr, "GET", "/api/v1/nodes", &[], "").await;
    assert_eq!(code, 403);
    assert!(
        body.contains("nodes is forbidden: User \\\"system:anonymous\\\" cannot list resource \\\"nodes\\\" in API group \\\"\\\" at the cluster scope"),
        "{body}"
    );
    // Authenticated identities get discovery through system:discovery.
    let token = env.sb.token(&sandbox::UserInfo::agent("node-1"));
    let (code, _) = raw_with(
        addr,
        "GET",
        "/apis",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_who_may_impersonate_does() {
    let env = shipped().await;
    let (ok, _, err) = env
        .kubectl("update-agent-node-1")
        .run(&["--as", "kubernetes-admin", "get", "secrets"])
        .await;
    assert!(!ok);
    // kubectl's discovery prints a 403 without its message, as against a real cluster.
    assert!(err.contains("Error from server (Forbidden)"), "{err}");
    let token = env.sb.token(&sandbox::UserInfo::agent("node-1"));
    let (code, body) = raw_with(
        env.sb.addr(),
        "GET",
        "/api/v1/nodes",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Impersonate-User", "kubernetes-admin"),
        ],
        "",
    )
    .await;
    assert_eq!(code, 403);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["message"],
        format!(
            "users \"kubernetes-admin\" is forbidden: User \"{AGENT}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        )
    );
    // The admin impersonating the agent gets the agent's rights, not its own.
    let (ok, _, err) = env
        .kubectl("admin")
        .run(&["--as", AGENT, "get", "secrets", "-n", "default"])
        .await;
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "User \"{AGENT}\" cannot list resource \"secrets\""
        )),
        "{err}"
    );
    env.kubectl("admin")
        .ok(&["--as", AGENT, "get", "nodes"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_objects_applied_later_take_effect() {
    let env = shipped().await;
    let k = env.kubectl("update-agent-node-1");
    let (ok, _, _) = k.run(&["get", "configmaps", "-n", "shop"]).await;
    assert!(!ok);
    let binding = env.dir.path().join("binding.yaml");
    std::fs::write(
        &binding,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: agent-reads-config, namespace: shop}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view-config}\nsubjects:\n- {kind: ServiceAccount, name: flatcar-linux-update-agent, namespace: reboot-coordinator}\n",
    )
    .unwrap();
    env.kubectl("admin")
        .ok(&["apply", "-f", binding.to_str().unwrap()])
        .await;
    let (ok, _, _) = k.run(&["get", "configmaps", "-n", "shop"]).await;
    assert!(!ok, "a binding to a missing ClusterRole grants nothing");
    env.sb
        .create(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "view-config"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        }))
        .unwrap();
    k.ok(&["get", "configmaps", "-n", "shop"]).await;
    let (ok, _, _) = k.run(&["get", "configmaps", "-n", "default"]).await;
    assert!(!ok, "a RoleBinding grants only in its namespace");
}
