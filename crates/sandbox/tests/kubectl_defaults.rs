//! What kubectl does by default, against the sandbox: protobuf bodies from `kubectl create`,
//! the scale subresource, `kubectl logs` and `kubectl explain` (issue 13, item 6).

mod common;

use std::time::Duration;

use common::{Kubectl, eventually, sandbox};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_sends_protobuf_and_it_is_stored_as_json() {
    let sb = sandbox(2).await;
    let k = Kubectl::new(&sb);
    // -v=7 prints the request headers: this is the protobuf path, not a JSON fallback.
    let (ok, out, err) = k.run(&["create", "namespace", "foo", "-v=7"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("namespace/foo created"), "{out}");
    assert!(
        err.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl sent protobuf:\n{err}"
    );
    let ns: Api<Namespace> = Api::all(sb.client());
    let foo = ns.get("foo").await.unwrap();
    assert!(foo.metadata.uid.is_some());

    let out = k
        .ok(&[
            "create",
            "configmap",
            "x",
            "-n",
            "foo",
            "--from-literal=a=b",
            "--from-literal=empty=",
        ])
        .await;
    assert!(out.contains("configmap/x created"), "{out}");
    let cm = Api::<ConfigMap>::namespaced(sb.client(), "foo")
        .get("x")
        .await
        .unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data["a"], "b");
    // An empty value in a map is a value, not an omitted field.
    assert_eq!(data["empty"], "");

    let out = k
        .ok(&[
            "create",
            "deployment",
            "d2",
            "-n",
            "foo",
            "--image=registry.example/app:1",
            "--replicas=3",
            "--port=8080",
        ])
        .await;
    assert!(out.contains("deployment.apps/d2 created"), "{out}");
    let d = Api::<Deployment>::namespaced(sb.client(), "foo")
        .get("d2")
        .await
        .unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let c = &spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.example/app:1"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
    // The simulated controllers run what the protobuf body asked for.
    let pods: Api<Pod> = Api::namespaced(sb.client(), "foo");
    let mut running = 0;
    for _ in 0..200 {
        running = pods
            .list(&ListParams::default().labels("app=d2"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running, 3);

    // A secret's bytes and a service's IntOrString target port go through protobuf too.
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "foo",
        "--from-literal=password=hunter2",
    ])
    .await;
    let s = k.json(&["get", "secret", "s", "-n", "foo"]).await;
    assert_eq!(s["data"]["password"], "aHVudGVyMg==");
    k.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        "foo",
        "--tcp=80:http",
    ])
    .await;
    let svc = k.json(&["get", "service", "web", "-n", "foo"]).await;
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");

    // `kubectl run` sends a protobuf Pod, which the simulated kubelet starts.
    k.ok(&[
        "run",
        "p",
        "-n",
        "foo",
        "--image=x",
        "--labels=role=one-off",
    ])
    .await;
    assert!(
        eventually(10, || {
            sb.store()
                .lock()
                .get(
                    sandbox::resources::find("", "v1", "pods").unwrap(),
                    "foo",
                    "p",
                )
                .is_some_and(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["labels"]["role"] == "one-off"
                })
        })
        .await
    );

    // `kubectl expose` reads the Deployment's selector and sends a protobuf Service.
    let out = k
        .ok(&[
            "expose",
            "deployment",
            "d2",
            "-n",
            "foo",
            "--port=80",
            "--target-port=8080",
        ])
        .await;
    assert!(out.contains("service/d2 exposed"), "{out}");
    let svc = k.json(&["get", "service", "d2", "-n", "foo"]).await;
    assert_eq!(svc["spec"]["selector"], json!({"app": "d2"}));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);

    // Existing names are refused as the real server words it, whatever the body's encoding.
    let (ok, _, err) = k.run(&["create", "namespace", "foo"]).await;
    assert!(
        !ok && err.contains("AlreadyExists") && err.contains("namespaces \"foo\" already exists"),
        "{err}"
    );
    let out = k.ok(&["delete", "namespace", "foo"]).await;
    assert!(out.contains("namespace \"foo\" deleted"), "{out}");
}

/// Sends one request with a binary body and an Accept header; returns (status, content type, body).
async fn raw_bytes(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    accept: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: sandbox\r\nContent-Type: {content_type}\r\nAccept: {accept}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let headers = String::from_utf8_lossy(&out[..split]).to_string();
    let code = headers
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let ct = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    let mut body = out[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (code, ct, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + n]);
        b = &b[end + 2 + n + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_responses_errors_and_unsupported_types() {
    use k8s_rs_pb::api::core::v1::Node as PbNode;
    use k8s_rs_pb::apimachinery::pkg::apis::meta::v1::Status as PbStatus;
    use k8s_rs_pb::apimachinery::pkg::runtime::Unknown;
    use protobuf::Message;
    let sb = sandbox(1).await;
    let addr = sb.addr();
    const PB: &str = "application/vnd.kubernetes.protobuf";

    // A client that takes only protobuf gets the object in protobuf, decodable by the
    // generated message types.
    let (code, ct, body) = raw_bytes(addr, "GET", "/api/v1/nodes/node-1", "", PB, b"").await;
    assert_eq!(code, 200);
    assert_eq!(ct, PB);
    assert_eq!(&body[..4], b"k8s\0");
    let unknown = Unknown::parse_from_bytes(&body[4..]).unwrap();
    assert_eq!(unknown.typeMeta.kind(), "Node");
    assert_eq!(unknown.typeMeta.apiVersion(), "v1");
    let node = PbNode::parse_from_bytes(unknown.raw()).unwrap();
    assert_eq!(node.metadata.name(), "node-1");
    let stored = sb
        .store()
        .lock()
        .get(
            sandbox::resources::find("", "v1", "nodes").unwrap(),
            "",
            "node-1",
        )
        .unwrap();
    assert_eq!(
        node.metadata
            .labels
            .get("kubernetes.io/hostname")
            .map(String::as_str),
        Some("node-1")
    );
    let created = chrono::DateTime::parse_from_rfc3339(
        stored["metadata"]["creationTimestamp"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        node.metadata.creationTimestamp.seconds(),
        created.timestamp()
    );
    assert!(!node.status.nodeInfo.osImage().is_empty());

    // Errors come as a protobuf Status with kube-apiserver's reason and code.
    let (code, ct, body) = raw_bytes(addr, "GET", "/api/v1/nodes/nope", "", PB, b"").await;
    assert_eq!((code, ct.as_str()), (404, PB));
    let unknown = Unknown::parse_from_bytes(&body[4..]).unwrap();
    let status = PbStatus::parse_from_bytes(unknown.raw()).unwrap();
    assert_eq!(status.reason(), "NotFound");
    assert_eq!(status.code(), 404);
    assert_eq!(status.message(), "nodes \"nope\" not found");

    // A body that is not protobuf is a clear 400, not a misread object.
    let (code, _, body) = raw_bytes(
        addr,
        "POST",
        "/api/v1/namespaces",
        PB,
        "application/json",
        b"{\"kind\":\"Namespace\"}",
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("does not appear to be a protobuf message"),
        "{body}"
    );

    // Custom resources have no protobuf form: 415 for a body, 406 for an Accept, as
    // kube-apiserver answers them.
    let mut rule = Unknown::new();
    rule.typeMeta
        .mut_or_insert_default()
        .set_apiVersion("monitoring.coreos.com/v1".into());
    rule.typeMeta
        .mut_or_insert_default()
        .set_kind("PrometheusRule".into());
    rule.set_raw(Vec::new());
    let mut pb = b"k8s\0".to_vec();
    pb.extend(rule.write_to_bytes().unwrap());
    let (code, _, body) = raw_bytes(
        addr,
        "POST",
        "/apis/monitoring.coreos.com/v1/namespaces/default/prometheusrules",
        PB,
        "application/json",
        &pb,
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 415, "{body}");
    assert!(
        body.contains("accepted media types include: application/json, application/yaml;"),
        "{body}"
    );
    let (code, _, body) = raw_bytes(
        addr,
        "GET",
        "/apis/monitoring.coreos.com/v1/prometheusrules",
        "",
        PB,
        b"",
    )
    .await;
    assert_eq!(code, 406, "{}", String::from_utf8_lossy(&body));

    // A protobuf DeleteOptions is honoured: grace 0 removes a running pod at once.
    sb.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "a", "image": "x"}]},
        "status": {"phase": "Pending"},
    }))
    .unwrap();
    let pods = sandbox::resources::find("", "v1", "pods").unwrap();
    assert!(
        eventually(10, || sb
            .store()
            .lock()
            .get(pods, "default", "p")
            .is_some_and(|p| p["status"]["phase"] == "Running"))
        .await
    );
    let mut opts = k8s_rs_pb::apimachinery::pkg::apis::meta::v1::DeleteOptions::new();
    opts.set_gracePeriodSeconds(0);
    let mut env = Unknown::new();
    env.typeMeta
        .mut_or_insert_default()
        .set_apiVersion("v1".into());
    env.typeMeta
        .mut_or_insert_default()
        .set_kind("DeleteOptions".into());
    env.set_raw(opts.write_to_bytes().unwrap());
    let mut pb = b"k8s\0".to_vec();
    pb.extend(env.write_to_bytes().unwrap());
    let (code, _, body) = raw_bytes(
        addr,
        "DELETE",
        "/api/v1/namespaces/default/pods/p",
        PB,
        "application/json",
        &pb,
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(sb.store().lock().get(pods, "default", "p").is_none());

    // A protobuf watch: length-prefixed frames of WatchEvents wrapping enveloped objects.
    let (code, ct, body) = raw_bytes(
        addr,
        "GET",
        "/api/v1/nodes?watch=true&timeoutSeconds=1",
        "",
        PB,
        b"",
    )
    .await;
    assert_eq!(code, 200);
    assert!(ct.starts_with(PB), "{ct}");
    let len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    let frame = &body[4..4 + len];
    let unknown = Unknown::parse_from_bytes(&frame[4..]).unwrap();
    assert_eq!(unknown.typeMeta.kind(), "WatchEvent");
    let ev =
        k8s_rs_pb::apimachinery::pkg::apis::meta::v1::WatchEvent::parse_from_bytes(unknown.raw())
            .unwrap();
    assert_eq!(ev.type_(), "ADDED");
    let inner = Unknown::parse_from_bytes(&ev.object.raw()[4..]).unwrap();
    assert_eq!(
        PbNode::parse_from_bytes(inner.raw())
            .unwrap()
            .metadata
            .name(),
        "node-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_deployments_and_replicasets() {
    let sb = sandbox(2).await;
    sb.add_workload("shop", "web", 2, None, 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let k = Kubectl::new(&sb);
    let out = k
        .ok(&["scale", "deploy", "web", "-n", "shop", "--replicas=4"])
        .await;
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let pods: Api<Pod> = Api::namespaced(sb.client(), "shop");
    let running = || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .count()
    };
    let mut n = 0;
    for _ in 0..200 {
        n = running().await;
        if n == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n, 4);
    let scale: serde_json::Value = serde_json::from_str(
        &k.ok(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/shop/deployments/web/scale",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=web");

    // kube-rs' scale calls (a merge patch of the Scale, then a read).
    let deploys: Api<Deployment> = Api::namespaced(sb.client(), "shop");
    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(
        deploys
            .get_scale("web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(1)
    );
    assert_eq!(
        deploys.get("web").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
    let mut n = 0;
    for _ in 0..200 {
        n = running().await;
        if n == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n, 1);

    // A ReplicaSet scales too; a precondition on the current size is honoured.
    let rs = k.json(&["get", "rs", "-n", "shop"]).await;
    let rs_name = rs["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, _, err) = k
        .run(&[
            "scale",
            "rs",
            &rs_name,
            "-n",
            "shop",
            "--current-replicas=7",
            "--replicas=2",
        ])
        .await;
    assert!(
        !ok && err.contains("Expected replicas to be 7, was 1"),
        "{err}"
    );
    let out = k
        .ok(&["scale", "rs", &rs_name, "-n", "shop", "--replicas=2"])
        .await;
    assert!(out.contains("scaled"), "{out}");

    // A stale resourceVersion is a conflict, as for any write (kubectl checks its
    // --resource-version itself, so this goes over raw HTTP).
    let (code, body) = common::raw(
        sb.addr(),
        "PUT",
        "/apis/apps/v1/namespaces/shop/deployments/web/scale",
        "application/json",
        r#"{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"web","namespace":"shop","resourceVersion":"1"},"spec":{"replicas":3}}"#,
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("Operation cannot be fulfilled on deployments.apps")
            && body.contains(r#""reason":"Conflict""#),
        "{body}"
    );

    // Invalid sizes are refused with the field named (kubectl refuses them before asking).
    let (code, body) = common::raw(
        sb.addr(),
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/web/scale",
        "application/merge-patch+json",
        r#"{"spec":{"replicas":-3}}"#,
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("spec.replicas: Invalid value: -3: must be greater than or equal to 0"),
        "{body}"
    );
    // Only workloads have the subresource.
    let (ok, _, err) = k
        .run(&["get", "--raw", "/api/v1/namespaces/shop/pods/x/scale"])
        .await;
    assert!(!ok && err.contains("NotFound"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_of_simulated_pods() {
    let sb = sandbox(1).await;
    sb.add_workload("shop", "web", 1, None, 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let k = Kubectl::new(&sb);
    let out = k.ok(&["logs", "deploy/web", "-n", "shop"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("pulled image") && lines[0].contains("node-1"),
        "{out}"
    );
    assert!(lines[1].contains("started container"), "{out}");
    assert!(lines[2].contains("is ready"), "{out}");
    let tail = k
        .ok(&["logs", "deploy/web", "-n", "shop", "--tail=1"])
        .await;
    assert_eq!(tail.lines().collect::<Vec<_>>(), vec![lines[2]]);
    let stamped = k
        .ok(&["logs", "deploy/web", "-n", "shop", "--timestamps", "-f"])
        .await;
    let first = stamped.lines().next().unwrap();
    let (ts, rest) = first.split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{first}");
    assert_eq!(rest, lines[0]);

    let pod = k.json(&["get", "pods", "-n", "shop"]).await["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // Lines are as old as the container: a window that starts later holds none.
    let since = (chrono::Utc::now() + chrono::Duration::seconds(5)).to_rfc3339();
    let out = k
        .ok(&["logs", &pod, "-n", "shop", &format!("--since-time={since}")])
        .await;
    assert_eq!(out, "");
    let out = k.ok(&["logs", &pod, "-n", "shop", "--since=1h"]).await;
    assert_eq!(out.lines().count(), 3, "{out}");

    // kube-rs' log call.
    let pods: Api<Pod> = Api::namespaced(sb.client(), "shop");
    let text = pods
        .logs(
            &pod,
            &kube::api::LogParams {
                container: Some("app".into()),
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(text.lines().collect::<Vec<_>>(), lines[1..].to_vec());
    let (ok, _, err) = k.run(&["logs", &pod, "-n", "shop", "-c", "nope"]).await;
    assert!(
        !ok && err.contains(&format!("container nope is not valid for pod {pod}")),
        "{err}"
    );
    let (ok, _, err) = k.run(&["logs", "missing", "-n", "shop"]).await;
    assert!(!ok && err.contains("pods \"missing\" not found"), "{err}");

    // Two containers: kubectl picks the first (and says so); the API needs one named.
    sb.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "two", "namespace": "shop"},
        "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
        "status": {"phase": "Pending"},
    }))
    .unwrap();
    assert!(
        eventually(10, || {
            sb.store()
                .lock()
                .get(
                    sandbox::resources::find("", "v1", "pods").unwrap(),
                    "shop",
                    "two",
                )
                .is_some_and(|p| p["status"]["phase"] == "Running")
        })
        .await
    );
    let out = k.ok(&["logs", "two", "-n", "shop", "-c", "b"]).await;
    assert!(out.contains("pulled image \"y\""), "{out}");
    let (code, body) = common::raw(
        sb.addr(),
        "GET",
        "/api/v1/namespaces/shop/pods/two/log",
        "",
        "",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{body}"
    );

    // A pod no node can take has no host yet, and so no log.
    sb.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "waiting", "namespace": "shop"},
        "spec": {"nodeSelector": {"pool": "none"}, "containers": [{"name": "a", "image": "x"}]},
    }))
    .unwrap();
    let (ok, _, err) = k.run(&["logs", "waiting", "-n", "shop"]).await;
    assert!(
        !ok && err.contains("pod waiting does not have a host assigned"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_and_strict_apply() {
    let sb = sandbox(1).await;
    let k = Kubectl::new(&sb);
    let out = k.ok(&["explain", "node.spec"]).await;
    assert!(out.contains("KIND:       Node"), "{out}");
    assert!(
        out.contains("NodeSpec describes the attributes that a node is created with"),
        "{out}"
    );
    assert!(out.contains("unschedulable\t<boolean>"), "{out}");
    let out = k.ok(&["explain", "deployments.spec.replicas"]).await;
    assert!(
        out.contains("GROUP:      apps") && out.contains("<integer>"),
        "{out}"
    );
    for kind in [
        "pods",
        "leases",
        "poddisruptionbudgets",
        "clusterroles",
        "validatingadmissionpolicies",
    ] {
        let out = k.ok(&["explain", kind]).await;
        assert!(out.contains("metadata\t<ObjectMeta>"), "{kind}: {out}");
    }
    // Documents are addressed by a hash of their content, which kubectl's cache keys on.
    let index: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/openapi/v3"]).await).unwrap();
    let url = index["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    let hash = url.split_once("?hash=").unwrap().1;
    assert_eq!(hash.len(), 16, "{url}");
    let doc: serde_json::Value = serde_json::from_str(&k.ok(&["get", "--raw", url]).await).unwrap();
    assert_eq!(
        doc["components"]["schemas"]["io.k8s.api.core.v1.Node"]["x-kubernetes-group-version-kind"],
        json!([{"group": "", "version": "v1", "kind": "Node"}])
    );
    let (ok, _, err) = k.run(&["explain", "node.spec.nope"]).await;
    assert!(
        !ok && err.contains("field \"nope\" does not exist"),
        "{err}"
    );

    // Strict validation still lets a valid manifest through, twice (create, then change).
    let manifest = k.cache.path().join("d.yaml");
    let deploy = |replicas: u32, containers: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: default\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: api}}\n  template:\n    metadata:\n      labels: {{app: api}}\n    spec:\n      containers:\n{containers}"
        )
    };
    let two = "      - name: api\n        image: x\n        ports:\n        - containerPort: 80\n      - name: side\n        image: s:1\n";
    let one = "      - name: side\n        image: s:2\n        env:\n        - {name: MODE, value: fast}\n";
    std::fs::write(&manifest, deploy(1, two)).unwrap();
    let path = manifest.to_str().unwrap();
    let out = k.ok(&["apply", "--validate=strict", "-f", path]).await;
    assert!(out.contains("deployment.apps/api created"), "{out}");
    // The next apply drops one container and changes the other: the list is merged by name.
    std::fs::write(&manifest, deploy(2, one)).unwrap();
    let out = k.ok(&["apply", "--validate=strict", "-f", path]).await;
    assert!(out.contains("deployment.apps/api configured"), "{out}");
    let d = Api::<Deployment>::namespaced(sb.client(), "default")
        .get("api")
        .await
        .unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let containers = spec.template.spec.unwrap().containers;
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].name, "side");
    assert_eq!(containers[0].image.as_deref(), Some("s:2"));
    assert_eq!(
        containers[0].env.as_ref().unwrap()[0].value.as_deref(),
        Some("fast")
    );
}
