//! ValidatingAdmissionPolicies enforced by the sandbox, over real HTTP and through the real
//! kubectl: every write verb, subresources, the denial Status as kube-apiserver gives it,
//! warnings, failurePolicy, and policies refused when written.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Kubectl, raw, sandbox};
use serde_json::{Value, json};

const VAP: &str = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies";
const VAPB: &str = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings";
const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name}, "spec": spec})
}

fn binding(name: &str, policy: &str, actions: &[&str]) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name}, "spec": {"policyName": policy, "validationActions": actions}})
}

fn rules(operations: &[&str], resources: &[&str]) -> Value {
    json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
        "operations": operations, "resources": resources}]})
}

async fn post(sb: &sandbox::Sandbox, path: &str, body: &Value) -> (u16, Value) {
    send(sb, "POST", path, "application/json", body).await
}

async fn send(
    sb: &sandbox::Sandbox,
    method: &str,
    path: &str,
    content_type: &str,
    body: &Value,
) -> (u16, Value) {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (code, body) = raw(sb.addr(), method, path, content_type, &text).await;
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (code, v)
}

/// Installs `p` bound by `b` through the API.
async fn install(sb: &sandbox::Sandbox, p: Value, b: Value) {
    let (code, body) = post(sb, VAP, &p).await;
    assert_eq!(code, 201, "policy created: {body}");
    let (code, body) = post(sb, VAPB, &b).await;
    assert_eq!(code, 201, "binding created: {body}");
}

/// The Status kube-apiserver's ValidatingAdmissionPolicy plugin answers a denial with.
fn denial(code: u16, reason: &str, resource: &str, name: &str, cause: &str) -> Value {
    let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{resource} \"{name}\" is forbidden: {cause}"),
        "reason": reason, "code": code,
        "details": {"name": name, "group": group, "kind": kind, "causes": [{"message": cause}]}})
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": labels}, "data": {"a": "b"}})
}

/// Refuses configmaps labelled `locked`, whatever the verb that would store one.
async fn locked_configmaps(sb: &sandbox::Sandbox) {
    install(
        sb,
        policy(
            "no-locked",
            json!({
                "failurePolicy": "Fail",
                "matchConstraints": rules(&["CREATE", "UPDATE"], &["configmaps"]),
                "variables": [{"name": "labels",
                    "expression": "has(object.metadata.labels) ? object.metadata.labels : {}"}],
                "validations": [{
                    "expression": "!('locked' in variables.labels)",
                    "messageExpression": "'configmap ' + object.metadata.name + ' may not be locked by ' + request.operation + ' in ' + namespaceObject.metadata.name",
                    "reason": "Forbidden",
                }],
            }),
        ),
        binding("no-locked-binding", "no-locked", &["Deny"]),
    )
    .await;
}

const LOCKED: &str = "ValidatingAdmissionPolicy 'no-locked' with binding 'no-locked-binding' denied request: configmap";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_and_every_patch_are_admitted_after_the_change() {
    let sb = sandbox(0).await;
    locked_configmaps(&sb).await;

    let (code, body) = post(&sb, CMS, &cm("x", json!({"locked": "yes"}))).await;
    let cause = format!("{LOCKED} x may not be locked by CREATE in default");
    assert_eq!(
        (code, body),
        (403, denial(403, "Forbidden", "configmaps", "x", &cause))
    );
    let (code, _) = send(&sb, "GET", &format!("{CMS}/x"), "", &Value::Null).await;
    assert_eq!(code, 404, "a denied create stores nothing");

    let (code, body) = post(&sb, CMS, &cm("x", json!({"open": "yes"}))).await;
    assert_eq!(code, 201, "{body}");

    let update_cause = format!("{LOCKED} x may not be locked by UPDATE in default");
    let refused = denial(403, "Forbidden", "configmaps", "x", &update_cause);
    let path = format!("{CMS}/x");
    let locked = cm("x", json!({"locked": "1"}));
    let put = send(&sb, "PUT", &path, "application/json", &locked).await;
    assert_eq!(put, (403, refused.clone()), "PUT");
    for (ct, patch) in [
        (
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"locked": "1"}}}),
        ),
        (
            "application/strategic-merge-patch+json",
            json!({"metadata": {"labels": {"locked": "1"}}}),
        ),
        (
            "application/json-patch+json",
            json!([{"op": "add", "path": "/metadata/labels/locked", "value": "1"}]),
        ),
    ] {
        assert_eq!(
            send(&sb, "PATCH", &path, ct, &patch).await,
            (403, refused.clone()),
            "{ct}"
        );
    }
    let apply = format!("{path}?fieldManager=test");
    let (code, body) = send(
        &sb,
        "PATCH",
        &apply,
        "application/apply-patch+yaml",
        &cm("x", json!({"locked": "1"})),
    )
    .await;
    assert_eq!((code, body), (403, refused), "server-side apply");
    // A server-side apply that would create is a CREATE.
    let apply_new = format!("{CMS}/y?fieldManager=test");
    let (code, body) = send(
        &sb,
        "PATCH",
        &apply_new,
        "application/apply-patch+yaml",
        &cm("y", json!({"locked": "1"})),
    )
    .await;
    let create_cause = format!("{LOCKED} y may not be locked by CREATE in default");
    assert_eq!(
        (code, body),
        (
            403,
            denial(403, "Forbidden", "configmaps", "y", &create_cause)
        )
    );

    let (_, stored) = send(&sb, "GET", &path, "", &Value::Null).await;
    assert_eq!(
        stored["metadata"]["labels"],
        json!({"open": "yes"}),
        "nothing stored"
    );
    // A patch whose result passes is admitted, even from an object that would not.
    let ok = json!({"metadata": {"labels": {"open": null, "other": "1"}}});
    let (code, body) = send(&sb, "PATCH", &path, "application/merge-patch+json", &ok).await;
    assert_eq!(code, 200, "{body}");
    // dryRun is admitted too (and refused the same).
    let dry = format!("{CMS}?dryRun=All");
    let (code, _) = post(&sb, &dry, &cm("z", json!({"locked": "1"}))).await;
    assert_eq!(code, 403, "a dry run is admitted like the real thing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_deletecollection_see_the_old_object() {
    let sb = sandbox(0).await;
    install(
        &sb,
        policy(
            "keep",
            json!({
                "matchConstraints": rules(&["DELETE"], &["configmaps"]),
                "validations": [{
                    "expression": "object == null && !(has(oldObject.metadata.labels) && 'keep' in oldObject.metadata.labels)",
                    "message": "kept configmaps are not deleted",
                }],
            }),
        ),
        binding("keep", "keep", &["Deny"]),
    )
    .await;
    for (name, labels) in [("kept", json!({"keep": "1"})), ("gone", json!({"x": "1"}))] {
        assert_eq!(post(&sb, CMS, &cm(name, labels)).await.0, 201);
    }
    let cause = "ValidatingAdmissionPolicy 'keep' with binding 'keep' denied request: kept configmaps are not deleted";
    // No reason: Invalid, 422, still worded "is forbidden" as kube-apiserver does.
    let refused = denial(422, "Invalid", "configmaps", "kept", cause);
    let del = send(&sb, "DELETE", &format!("{CMS}/kept"), "", &Value::Null).await;
    assert_eq!(del, (422, refused.clone()));
    // A collection with one refused object deletes none of them.
    let all = send(&sb, "DELETE", CMS, "", &Value::Null).await;
    assert_eq!(all, (422, refused));
    let (_, list) = send(&sb, "GET", CMS, "", &Value::Null).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
    let gone = send(&sb, "DELETE", &format!("{CMS}/gone"), "", &Value::Null).await;
    assert_eq!(gone.0, 200, "{}", gone.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subresources_are_matched_only_when_named() {
    let sb = sandbox(1).await;
    sb.add_workload("shop", "web", 1, None, 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    install(
        &sb,
        policy(
            "frozen",
            json!({
                "matchConstraints": {"resourceRules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes/status"]},
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods/eviction"]},
                ]},
                "validations": [{
                    "expression": "false",
                    "messageExpression": "request.resource.resource + '/' + request.subResource + ' ' + request.operation + ' ' + request.name + ' ' + (request.subResource == 'eviction' ? object.kind + ' ' + request.namespace : object.status.phase)",
                    "reason": "Forbidden",
                }],
            }),
        ),
        binding("frozen", "frozen", &["Deny"]),
    )
    .await;
    let merge = "application/merge-patch+json";
    let label = json!({"metadata": {"labels": {"a": "b"}}});
    let (code, body) = send(&sb, "PATCH", "/api/v1/nodes/node-1", merge, &label).await;
    assert_eq!(code, 200, "nodes is not nodes/status: {body}");
    let status = json!({"status": {"phase": "Running"}});
    let (code, body) = send(&sb, "PATCH", "/api/v1/nodes/node-1/status", merge, &status).await;
    let cause = "ValidatingAdmissionPolicy 'frozen' with binding 'frozen' denied request: nodes/status UPDATE node-1 Running";
    assert_eq!(
        (code, body),
        (403, denial(403, "Forbidden", "nodes", "node-1", cause))
    );

    let (_, pods) = send(&sb, "GET", "/api/v1/namespaces/shop/pods", "", &Value::Null).await;
    let pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a pod")
        .to_string();
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": "shop"}});
    let path = format!("/api/v1/namespaces/shop/pods/{pod}/eviction");
    let (code, body) = post(&sb, &path, &eviction).await;
    let cause = format!(
        "ValidatingAdmissionPolicy 'frozen' with binding 'frozen' denied request: pods/eviction CREATE {pod} Eviction shop"
    );
    assert_eq!(
        (code, body),
        (403, denial(403, "Forbidden", "pods", &pod, &cause))
    );
    let (code, _) = send(
        &sb,
        "GET",
        &format!("/api/v1/namespaces/shop/pods/{pod}"),
        "",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200, "the pod was not evicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_errors_follow_the_failure_policy() {
    let sb = sandbox(0).await;
    let spec = |failure: &str| {
        json!({
            "failurePolicy": failure,
            "matchConstraints": rules(&["CREATE"], &["configmaps"]),
            "validations": [{"expression": "object.data.missing == 'x'"}],
        })
    };
    install(
        &sb,
        policy("strict", spec("Fail")),
        binding("strict", "strict", &["Deny"]),
    )
    .await;
    install(
        &sb,
        policy("lenient", spec("Ignore")),
        binding("lenient", "lenient", &["Deny"]),
    )
    .await;
    let (code, body) = post(&sb, CMS, &cm("x", json!({}))).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("configmaps \"x\" is forbidden: ValidatingAdmissionPolicy 'strict' with binding 'strict' denied request: expression 'object.data.missing == 'x'' resulted in error: "),
        "{msg}"
    );
    // With only the Ignore policy left, the same error admits.
    let (code, _) = send(&sb, "DELETE", &format!("{VAPB}/strict"), "", &Value::Null).await;
    assert_eq!(code, 200);
    let (code, body) = post(&sb, CMS, &cm("x", json!({}))).await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_the_evaluator_cannot_enforce_are_refused_when_written() {
    let sb = sandbox(0).await;
    let params = policy(
        "params",
        json!({
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": rules(&["CREATE"], &["pods"]),
            "validations": [{"expression": "true"}],
        }),
    );
    let (code, body) = post(&sb, VAP, &params).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        "ValidatingAdmissionPolicy.admissionregistration.k8s.io \"params\" is invalid: spec.paramKind: not supported by this evaluator (see the admission crate's docs); leave it out"
    );
    let bad_cel = policy(
        "cel",
        json!({"matchConstraints": rules(&["CREATE"], &["pods"]), "validations": [{"expression": "1 +"}]}),
    );
    let (code, body) = post(&sb, VAP, &bad_cel).await;
    assert_eq!(code, 422, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("ValidatingAdmissionPolicy.admissionregistration.k8s.io \"cel\" is invalid: spec.validations[0].expression: not valid CEL"),
        "{msg}"
    );
    let (code, body) = post(&sb, VAPB, &binding("b", "p", &["Deny", "Warn"])).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.validationActions: Deny and Warn together"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_configuration_itself_is_never_denied() {
    let sb = sandbox(0).await;
    let everything = json!({"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
        "operations": ["*"], "resources": ["*", "*/*"]}]});
    install(
        &sb,
        policy("lockout", json!({"matchConstraints": everything, "validations": [{"expression": "false", "message": "no"}]})),
        binding("lockout", "lockout", &["Deny"]),
    )
    .await;
    let (code, _) = post(&sb, CMS, &cm("x", json!({}))).await;
    assert_eq!(code, 422, "everything else is denied");
    let (code, body) = send(&sb, "DELETE", &format!("{VAPB}/lockout"), "", &Value::Null).await;
    assert_eq!(code, 200, "the binding can still be deleted: {body}");
    let (code, body) = post(&sb, CMS, &cm("x", json!({}))).await;
    assert_eq!(code, 201, "{body}");
}

fn write(dir: &Path, name: &str, objects: &[Value]) -> String {
    let path = dir.join(name);
    let text: Vec<String> = objects.iter().map(Value::to_string).collect();
    std::fs::write(&path, text.join("\n---\n")).expect("write manifest");
    path.to_str().expect("utf-8 path").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_a_denial_and_a_warning() {
    let sb = sandbox(0).await;
    let k = Kubectl::new(&sb);
    let dir = tempfile::tempdir().unwrap();
    let spec = |operations: &[&str]| {
        json!({
            "matchConstraints": rules(operations, &["configmaps"]),
            "validations": [{
                "expression": "!has(object.data) || !('secret' in object.data)",
                "message": "configmaps must not hold a \"secret\" key",
            }],
        })
    };
    let manifests = write(
        dir.path(),
        "policies.yaml",
        &[
            policy("warn-secret", spec(&["CREATE", "UPDATE"])),
            binding("warn-secret", "warn-secret", &["Warn", "Audit"]),
        ],
    );
    let out = k.ok(&["apply", "-f", &manifests]).await;
    assert!(
        out.contains("validatingadmissionpolicy.admissionregistration.k8s.io/warn-secret created"),
        "{out}"
    );
    let listed = k.json(&["get", "validatingadmissionpolicybindings"]).await;
    assert_eq!(
        listed["items"][0]["spec"]["validationActions"],
        json!(["Warn", "Audit"])
    );

    let mut obj = cm("leaky", json!({}));
    obj["data"] = json!({"secret": "hunter2"});
    let leaky = write(dir.path(), "leaky.yaml", &[obj]);
    let (ok, out, err) = k.run(&["apply", "-f", &leaky]).await;
    assert!(ok, "Warn admits: {err}");
    assert!(out.contains("configmap/leaky created"), "{out}");
    assert!(
        err.lines().any(|l| l == "Warning: Validation failed for ValidatingAdmissionPolicy 'warn-secret' with binding 'warn-secret': configmaps must not hold a \"secret\" key"),
        "kubectl prints the warning:\n{err}"
    );

    let deny = write(
        dir.path(),
        "deny.yaml",
        &[binding("warn-secret", "warn-secret", &["Deny"])],
    );
    k.ok(&["apply", "-f", &deny]).await;
    let mut obj = cm("leaky2", json!({}));
    obj["data"] = json!({"secret": "hunter2"});
    let leaky2 = write(dir.path(), "leaky2.yaml", &[obj]);
    let (ok, _, err) = k.run(&["apply", "-f", &leaky2]).await;
    assert!(!ok, "Deny refuses");
    assert!(
        // kubectl's rendering of an Invalid Status with one cause without a field, as with
        // kube-apiserver.
        err.contains("The configmaps \"leaky2\" is invalid: : ValidatingAdmissionPolicy 'warn-secret' with binding 'warn-secret' denied request: configmaps must not hold a \"secret\" key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_k_installs_the_shipped_policy() {
    let sb = sandbox(1).await;
    let k = Kubectl::new(&sb);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/admission");
    let out = k.ok(&["apply", "-k", dir.to_str().unwrap()]).await;
    assert!(out.contains("validatingadmissionpolicy.admissionregistration.k8s.io/flatcar-linux-update-agent-own-node created"), "{out}");
    assert!(out.contains("validatingadmissionpolicybinding.admissionregistration.k8s.io/flatcar-linux-update-agent-own-node created"), "{out}");
    let out = k.ok(&["get", "validatingadmissionpolicies"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"],
        "{out}"
    );
    assert_eq!(lines[1][..3], [OWN_NODE, "7", "<unset>"], "{out}");
    let out = k.ok(&["get", "validatingadmissionpolicybindings"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "POLICYNAME", "PARAMREF", "AGE"], "{out}");
    assert_eq!(lines[1][..3], [OWN_NODE, OWN_NODE, "<unset>"], "{out}");
    // It loads (every expression compiles) and applies to the agent only: an anonymous
    // write is not matched.
    let out = k.ok(&["label", "node", "node-1", "team=a"]).await;
    assert!(out.contains("node/node-1 labeled"), "{out}");
}

const PREFIX: &str = "flatcar-linux-update.v1.flatcar-linux.net/";
const OWN_NODE: &str = "flatcar-linux-update-agent-own-node";

/// Acceptance of issue 13, through the real kubectl with the written kubeconfigs, under the
/// shipped RBAC and the policy applied with `kubectl apply -k deploy/admission`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_kubeconfigs_under_the_shipped_policy() {
    let sb = common::sandbox_with(
        2,
        sandbox::Options {
            authorization: sandbox::authz::Mode::Rbac,
            ..Default::default()
        },
    )
    .await;
    sb.load_shipped_rbac().expect("deploy/core RBAC");
    let dir = tempfile::tempdir().unwrap();
    sb.write_kubeconfig_dir(dir.path(), &["node-1", "node-2"])
        .expect("kubeconfigs");
    let admin = Kubectl::with_kubeconfig(&dir.path().join("admin"));
    let agent = Kubectl::with_kubeconfig(&dir.path().join("update-agent-node-1"));
    let operator = Kubectl::with_kubeconfig(&dir.path().join("update-operator"));
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/admission");
    admin.ok(&["apply", "-k", deploy.to_str().unwrap()]).await;

    // Its own node, our keys, and a cordon: admitted.
    let needed = format!("{PREFIX}reboot-needed=true");
    let out = agent.ok(&["annotate", "node", "node-1", &needed]).await;
    assert!(out.contains("node/node-1 annotated"), "{out}");
    let label = format!("{PREFIX}reboot-needed=true");
    agent.ok(&["label", "node", "node-1", &label]).await;
    let out = agent.ok(&["cordon", "node-1"]).await;
    assert!(out.contains("node/node-1 cordoned"), "{out}");

    // Another node: refused with the policy's message, as kubectl shows a Forbidden Status.
    let (ok, _, err) = agent.run(&["annotate", "node", "node-2", &needed]).await;
    assert!(!ok, "another node is refused");
    assert_eq!(
        err.trim(),
        format!(
            "Error from server (Forbidden): nodes \"node-2\" is forbidden: ValidatingAdmissionPolicy '{OWN_NODE}' with binding '{OWN_NODE}' denied request: the update-agent of node \"node-1\" may not modify node \"node-2\""
        )
    );
    // A label outside our prefix on its own node: refused.
    let (ok, _, err) = agent.run(&["label", "node", "node-1", "team=a"]).await;
    assert!(!ok, "a foreign label is refused");
    assert!(
        err.contains(&format!(
            "denied request: the update-agent may change only {PREFIX} labels and node.kubernetes.io/exclude-from-external-load-balancers"
        )),
        "{err}"
    );
    // A foreign taint is refused too, and so is ours with a harder effect; ours as
    // PreferNoSchedule (--prefer-no-schedule-taint) is admitted.
    for taint in [
        "k=v:NoSchedule",
        &format!("{PREFIX}reboot-pending:NoExecute"),
    ] {
        let (ok, _, err) = agent.run(&["taint", "node", "node-1", taint]).await;
        assert!(!ok, "{taint} is refused");
        assert!(
            err.contains(
                "denied request: the update-agent may add or remove only its own PreferNoSchedule taint"
            ),
            "{err}"
        );
    }
    let ours = format!("{PREFIX}reboot-pending:PreferNoSchedule");
    let (ok, _, err) = agent.run(&["taint", "node", "node-1", &ours]).await;
    assert!(ok, "our own taint: {err}");
    let (ok, _, err) = agent
        .run(&["taint", "node", "node-1", &format!("{ours}-")])
        .await;
    assert!(ok, "our own taint removed: {err}");

    // The operator's writes are not the policy's business.
    let ok_key = format!("{PREFIX}reboot-ok=true");
    operator.ok(&["annotate", "node", "node-2", &ok_key]).await;
    operator.ok(&["label", "node", "node-2", "team=b"]).await;

    let node1 = admin.json(&["get", "node", "node-1"]).await;
    assert_eq!(
        node1["metadata"]["annotations"][format!("{PREFIX}reboot-needed")],
        "true"
    );
    assert_eq!(node1["spec"]["unschedulable"], true);
    assert!(node1["metadata"]["labels"].get("team").is_none(), "{node1}");
    let node2 = admin.json(&["get", "node", "node-2"]).await;
    let annotations = &node2["metadata"]["annotations"];
    assert!(
        annotations.get(format!("{PREFIX}reboot-needed")).is_none(),
        "{node2}"
    );
    assert_eq!(annotations[format!("{PREFIX}reboot-ok")], "true");
    assert_eq!(node2["metadata"]["labels"]["team"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_and_object_selectors_pick_what_is_checked() {
    let sb = sandbox(0).await;
    for (ns, env) in [("prod", "prod"), ("dev", "dev")] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"env": env}}});
        assert_eq!(post(&sb, "/api/v1/namespaces", &body).await.0, 201);
    }
    let mut p = policy(
        "prod-only",
        json!({
            "matchConstraints": rules(&["CREATE"], &["configmaps"]),
            "validations": [{"expression": "false", "message": "checked"}],
        }),
    );
    p["spec"]["matchConstraints"]["namespaceSelector"] = json!({"matchLabels": {"env": "prod"}});
    let mut b = binding("prod-only", "prod-only", &["Deny"]);
    b["spec"]["matchResources"] = json!({"objectSelector": {"matchExpressions": [
        {"key": "exempt", "operator": "DoesNotExist"}]}});
    install(&sb, p, b).await;
    let create = |ns: &str, name: &str, labels: Value| {
        let mut o = cm(name, labels);
        o["metadata"]["namespace"] = json!(ns);
        o
    };
    let (code, body) = post(
        &sb,
        "/api/v1/namespaces/prod/configmaps",
        &create("prod", "a", json!({})),
    )
    .await;
    assert_eq!(code, 422, "in a prod namespace: {body}");
    let (code, body) = post(
        &sb,
        "/api/v1/namespaces/dev/configmaps",
        &create("dev", "a", json!({})),
    )
    .await;
    assert_eq!(code, 201, "not in a prod namespace: {body}");
    let exempt = create("prod", "b", json!({"exempt": "yes"}));
    let (code, body) = post(&sb, "/api/v1/namespaces/prod/configmaps", &exempt).await;
    assert_eq!(
        code, 201,
        "exempted by the binding's object selector: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_is_admitted_on_the_scale_subresource() {
    let sb = sandbox(1).await;
    sb.add_workload("shop", "web", 2, None, 1).unwrap();
    let k = Kubectl::new(&sb);
    install(
        &sb,
        policy(
            "at-most-five",
            json!({
                "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                    "operations": ["UPDATE"], "resources": ["deployments/scale"]}]},
                "validations": [{
                    "expression": "object.spec.replicas <= 5",
                    "messageExpression": "object.kind + ' of ' + request.resource.resource + '/' + request.subResource + ': ' + string(oldObject.spec.replicas) + ' -> ' + string(object.spec.replicas) + ' is more than 5'",
                    "reason": "Forbidden",
                }],
            }),
        ),
        binding("at-most-five", "at-most-five", &["Deny"]),
    )
    .await;
    let (ok, _, err) = k
        .run(&["scale", "-n", "shop", "deployment/web", "--replicas=9"])
        .await;
    assert!(!ok, "refused");
    assert!(
        err.contains("ValidatingAdmissionPolicy 'at-most-five' with binding 'at-most-five' denied request: Scale of deployments/scale: 2 -> 9 is more than 5"),
        "{err}"
    );
    let replicas = |d: Value| d["spec"]["replicas"].as_i64();
    let d = k.json(&["get", "-n", "shop", "deployment/web"]).await;
    assert_eq!(replicas(d), Some(2), "unchanged");
    // Within the limit, and the main resource is not deployments/scale.
    k.ok(&["scale", "-n", "shop", "deployment/web", "--replicas=4"])
        .await;
    let d = k.json(&["get", "-n", "shop", "deployment/web"]).await;
    assert_eq!(replicas(d), Some(4));
    k.ok(&[
        "patch",
        "-n",
        "shop",
        "deployment/web",
        "-p",
        r#"{"spec":{"replicas":7}}"#,
    ])
    .await;
}
