//! Authentication (bearer tokens, anonymous requests, impersonation) as kube-apiserver does it,
//! through raw HTTP, kube-rs and the real kubectl.

mod common;

use common::{Kubectl, raw_with, sandbox};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use sandbox::UserInfo;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_gets_401_as_kube_apiserver_words_it() {
    let sb = sandbox(1).await;
    for auth in ["Bearer not-a-token", "Basic YWRtaW46YWRtaW4=", "Bearer"] {
        let (code, body) = raw_with(
            sb.addr(),
            "GET",
            "/api/v1/nodes",
            &[("Authorization", auth)],
            "",
        )
        .await;
        assert_eq!(code, 401, "{auth}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
            "{auth}"
        );
    }
    // Also on the discovery paths, which come before routing.
    let (code, _) = raw_with(
        sb.addr(),
        "GET",
        "/version",
        &[("Authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(code, 401);

    // kubectl sends credentials only over TLS: the admin kubeconfig's HTTPS endpoint.
    let dir = tempfile::tempdir().unwrap();
    sb.write_kubeconfig_dir(dir.path(), &[] as &[&str]).unwrap();
    let k = Kubectl::with_kubeconfig(&dir.path().join("admin"));
    let (ok, _, err) = k.run(&["--token", "nope", "get", "nodes"]).await;
    assert!(!ok);
    assert!(
        err.contains("error: You must be logged in to the server (the server has asked for the client to provide credentials)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_records_the_authenticated_user() {
    let sb = sandbox(1).await;
    Api::<Node>::all(sb.client_for(&UserInfo::operator()).unwrap())
        .get("node-1")
        .await
        .unwrap();
    Api::<Node>::all(sb.client_for(&UserInfo::agent("node-1")).unwrap())
        .list(&Default::default())
        .await
        .unwrap();
    Api::<Node>::all(sb.client_as("setup").unwrap())
        .list(&Default::default())
        .await
        .unwrap();
    let (code, _) = raw_with(sb.addr(), "GET", "/api/v1/pods", &[], "").await;
    assert_eq!(code, 200, "a bare sandbox allows everything (AlwaysAllow)");
    let who = |verb: &str, res: &str| -> Vec<String> {
        sb.audit()
            .entries()
            .into_iter()
            .filter(|e| e.verb == verb && e.resource == res)
            .map(|e| e.user)
            .collect()
    };
    assert_eq!(
        who("get", "nodes"),
        ["system:serviceaccount:reboot-coordinator:flatcar-linux-update-operator-sa"]
    );
    let mut list = who("list", "nodes");
    list.sort();
    assert_eq!(
        list,
        [
            "setup",
            "system:serviceaccount:reboot-coordinator:flatcar-linux-update-agent"
        ]
    );
    assert_eq!(who("list", "pods"), ["system:anonymous"]);
    // The agent's projected-token extra names its node in the record.
    let agent_nodes: Vec<String> = sb
        .audit()
        .entries()
        .into_iter()
        .filter(|e| e.user.ends_with(":flatcar-linux-update-agent"))
        .map(|e| e.node)
        .collect();
    assert_eq!(agent_nodes, ["node-1"]);
    // One token per identity, the same on every ask; distinct identities, distinct tokens.
    assert_eq!(
        sb.token(&UserInfo::agent("node-1")),
        sb.token(&UserInfo::agent("node-1"))
    );
    assert_ne!(
        sb.token(&UserInfo::agent("node-1")),
        sb.token(&UserInfo::agent("node-2"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_dir_has_one_working_kubeconfig_per_identity() {
    let sb = sandbox(2).await;
    let dir = tempfile::tempdir().unwrap();
    let written = sb
        .write_kubeconfig_dir(dir.path(), &["node-1", "node-2"])
        .unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "admin",
            "update-operator",
            "update-agent-node-1",
            "update-agent-node-2"
        ]
    );
    for (file, user) in [
        ("admin", "kubernetes-admin"),
        (
            "update-operator",
            "system:serviceaccount:reboot-coordinator:flatcar-linux-update-operator-sa",
        ),
        (
            "update-agent-node-2",
            "system:serviceaccount:reboot-coordinator:flatcar-linux-update-agent",
        ),
    ] {
        let k = Kubectl::with_kubeconfig(&dir.path().join(file));
        let out = k.ok(&["get", "node", "node-2", "-o", "name"]).await;
        assert_eq!(out.trim(), "node/node-2", "{file}");
        assert!(
            sb.audit()
                .entries()
                .iter()
                .any(|e| e.user == user && e.verb == "get" && e.resource == "nodes"),
            "{file} authenticates as {user}: {:?}",
            sb.audit().entries()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_impersonates_with_kubectl_as() {
    let sb = sandbox(1).await;
    let dir = tempfile::tempdir().unwrap();
    sb.write_kubeconfig_dir(dir.path(), &["node-1"]).unwrap();
    let k = Kubectl::with_kubeconfig(&dir.path().join("admin"));
    k.ok(&[
        "--as",
        "jane",
        "--as-group",
        "devs",
        "annotate",
        "node",
        "node-1",
        "by=jane",
    ])
    .await;
    assert!(
        sb.audit()
            .entries()
            .iter()
            .any(|e| e.user == "jane" && e.verb == "patch" && e.resource == "nodes"),
        "{:?}",
        sb.audit().entries()
    );
    // Groups without a user are refused, as kube-apiserver does.
    let token = sb.token(&UserInfo::admin());
    let (code, body) = raw_with(
        sb.addr(),
        "GET",
        "/api/v1/nodes",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Impersonate-Group", "devs"),
        ],
        "",
    )
    .await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("without impersonating a user"), "{body}");
    let node = Api::<Node>::all(sb.client()).get("node-1").await.unwrap();
    assert_eq!(
        node.metadata
            .annotations
            .unwrap()
            .get("by")
            .map(String::as_str),
        Some("jane"),
        "the patch made through impersonation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_sandbox_ca_for_kube_rs_and_kubectl() {
    let sb = sandbox(1).await;
    // kube-rs given the CA and a token, as a kubeconfig or a pod would give them.
    let mut config = kube::Config::new(sb.https_url().parse().unwrap());
    config.root_cert = Some(vec![pem_der(sb.ca_pem())]);
    config.auth_info.token = Some(sb.token(&UserInfo::operator()).into());
    let client = kube::Client::try_from(config).unwrap();
    let node = Api::<Node>::all(client).get("node-1").await.unwrap();
    assert_eq!(node.metadata.name.as_deref(), Some("node-1"));
    assert!(sb.audit().entries().iter().any(|e| e.user
        == "system:serviceaccount:reboot-coordinator:flatcar-linux-update-operator-sa"
        && e.verb == "get"));

    // kubectl with --certificate-authority and --token, no kubeconfig.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, sb.ca_pem()).unwrap();
    let mut k = Kubectl::new(&sb);
    k.server = sb.https_url();
    let token = sb.token(&UserInfo::agent("node-1"));
    let out = k
        .ok(&[
            "--certificate-authority",
            ca.to_str().unwrap(),
            "--token",
            &token,
            "get",
            "nodes",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.trim(), "node/node-1");
    // Without the CA, the certificate is not trusted.
    let (ok, _, err) = k.run(&["--token", &token, "get", "nodes"]).await;
    assert!(!ok);
    assert!(
        err.contains("certificate signed by unknown authority"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_cluster_folder_has_what_a_pod_gets() {
    let sb = sandbox(1).await;
    let dir = tempfile::tempdir().unwrap();
    let env = sb
        .service_account_dir(&UserInfo::agent("node-1"), dir.path())
        .unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert_eq!(read("namespace"), "reboot-coordinator");
    assert_eq!(read("token"), sb.token(&UserInfo::agent("node-1")));
    assert_eq!(read("ca.crt"), sb.ca_pem());
    assert_eq!(
        env,
        [
            (
                "KUBERNETES_SERVICE_HOST".to_string(),
                "127.0.0.1".to_string()
            ),
            (
                "KUBERNETES_SERVICE_PORT".to_string(),
                sb.tls_addr().port().to_string()
            ),
        ]
    );
    // What kube-rs's in-cluster configuration builds from them works.
    let mut config = kube::Config::new(
        format!("https://{}:{}", env[0].1, env[1].1)
            .parse()
            .unwrap(),
    );
    config.root_cert = Some(vec![pem_der(&read("ca.crt"))]);
    config.auth_info.token = Some(read("token").into());
    let nodes = Api::<Node>::all(kube::Client::try_from(config).unwrap())
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 1);
}

/// The DER of a one-certificate PEM.
fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}
