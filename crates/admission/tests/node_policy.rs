//! deploy/admission/node-policy.yaml, evaluated: every matchCondition, variable and validation
//! of the policy runs (in the `cel` crate, in the API server's order) on UPDATE requests built
//! from real Node objects read over HTTP from the sandbox, before and after the merge patch
//! that would be sent. The agent's own patches come from the real agent logic
//! (`protocol::agent::next_step`) walking a whole reboot; the forbidden ones are what a
//! compromised agent could send. Each case checks the decision and the API server's message.

use std::collections::BTreeMap;
use std::time::Duration;

use admission::{Decision, Denial, Policy, Request, Resource, UserInfo};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use protocol::agent::{AgentInput, AgentStep, NodeOptions, next_step};
use protocol::hostinfo::HostInfo;
use protocol::keys;
use sandbox::{Options, Sandbox, SimHost};
use serde_json::{Value as Json, json};

const POLICY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/admission/node-policy.yaml"
);
const POLICY: &str = "flatcar-linux-update-agent-own-node";
const NS: &str = "reboot-coordinator";
const AGENT_SA: &str = "flatcar-linux-update-agent";
const OPERATOR_SA: &str = "flatcar-linux-update-operator-sa";
const NODE_NAME_CLAIM: &str = "authentication.kubernetes.io/node-name";

fn policy() -> Policy {
    let text = std::fs::read_to_string(POLICY_FILE).expect("deploy/admission/node-policy.yaml");
    Policy::from_yaml(&text).expect("the policy loads and every expression compiles")
}

fn service_account(name: &str) -> UserInfo {
    UserInfo {
        username: format!("system:serviceaccount:{NS}:{name}"),
        uid: "5b3c1d4e-0000-4000-8000-00000000a9e7".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{NS}"),
            "system:authenticated".into(),
        ],
        extra: BTreeMap::new(),
    }
}

/// The agent as its pod's projected token authenticates it: the token is bound to the pod,
/// and from Kubernetes 1.32 on to the pod's node, whose name the API server puts in `extra`.
fn agent_on(node: &str) -> UserInfo {
    let mut u = service_account(AGENT_SA);
    for (k, v) in [
        (
            "authentication.kubernetes.io/credential-id",
            "JTI=0c5e1c55-8a2c-4a8b-b1f4-3f1b0d0f1a11",
        ),
        (NODE_NAME_CLAIM, node),
        (
            "authentication.kubernetes.io/node-uid",
            "8f0e5a7c-31a4-4a1e-9a3c-6c4b3f2b1d00",
        ),
        (
            "authentication.kubernetes.io/pod-name",
            "flatcar-linux-update-agent-x7k2q",
        ),
        (
            "authentication.kubernetes.io/pod-uid",
            "d2b1f6a0-9c3e-4e57-8f3a-2a6d5c4b3e21",
        ),
    ] {
        u.extra.insert(k.into(), vec![v.into()]);
    }
    u
}

fn operator() -> UserInfo {
    service_account(OPERATOR_SA)
}

fn admin() -> UserInfo {
    UserInfo {
        username: "kubernetes-admin".into(),
        groups: vec![
            "kubeadm:cluster-admins".into(),
            "system:authenticated".into(),
        ],
        ..Default::default()
    }
}

struct Cluster {
    sb: Sandbox,
    nodes: Api<Node>,
    client: kube::Client,
}

impl Cluster {
    async fn start() -> Cluster {
        let sb = Sandbox::start(Options {
            reboot_duration: Duration::from_millis(200),
            ..Default::default()
        })
        .await
        .expect("sandbox starts");
        for n in ["node-1", "node-2"] {
            sb.add_node(n, &[]).expect("node");
        }
        let client = sb.client_as("update-agent").expect("client");
        Cluster {
            nodes: Api::all(client.clone()),
            client,
            sb,
        }
    }

    /// The Node as the API server stores it, read over HTTP.
    async fn node(&self, name: &str) -> Json {
        let req = http::Request::get(format!("/api/v1/nodes/{name}"))
            .body(Vec::new())
            .expect("request");
        self.client.request(req).await.expect("GET node")
    }

    /// Sends `patch` as the agent does (a JSON merge patch).
    async fn patch(&self, name: &str, patch: &Json) {
        self.nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("PATCH node");
    }

    fn host(&self, name: &str) -> SimHost {
        self.sb.host(name).expect("simulated host")
    }
}

/// What the API server hands admission for a merge patch of `old`: the patched object.
fn merged(old: &Json, patch: &Json) -> Json {
    let mut new = old.clone();
    json_patch::merge(&mut new, patch);
    new
}

/// `patch` on `old` as an UPDATE of `resource` by `user`, through the policy.
fn decide(
    policy: &Policy,
    resource: Resource,
    user: UserInfo,
    old: &Json,
    patch: &Json,
) -> Decision {
    policy.evaluate(&Request::update(
        resource,
        user,
        old.clone(),
        merged(old, patch),
    ))
}

fn forbidden(node: &str, message: &str) -> Decision {
    let cause = format!(
        "ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: {message}"
    );
    Decision::Denied(Denial {
        code: 403,
        reason: "Forbidden".into(),
        message: format!("nodes \"{node}\" is forbidden: {cause}"),
        name: node.to_string(),
        cause,
    })
}

const ADMITTED: Decision = Decision::Admitted { warnings: vec![] };
const LABELS_ONLY: &str = "the update-agent may change only flatcar-linux-update.v1.flatcar-linux.net/ labels and node.kubernetes.io/exclude-from-external-load-balancers";
const ANNOTATIONS_ONLY: &str =
    "the update-agent may change only flatcar-linux-update.v1.flatcar-linux.net/ annotations";
const SPEC_ONLY: &str =
    "the update-agent may change only spec.unschedulable and its own taint in a Node's spec";
const TAINTS: &str = "the update-agent may add or remove only its own PreferNoSchedule taint (flatcar-linux-update.v1.flatcar-linux.net/...)";
const METADATA: &str =
    "the update-agent may not change a Node's metadata other than labels and annotations";
const STATUS: &str = "the update-agent may not change a Node's status";

/// Every patch the real agent logic writes through a whole update (start-up, update_engine's
/// progress, reboot-needed, the cordon and boot-ID record after the operator's grant, and the
/// uncordon after the reboot) is admitted on its own node; the operator's grant is not the
/// policy's business.
#[tokio::test]
async fn the_agents_own_patches_through_a_reboot_are_admitted() {
    let c = Cluster::start().await;
    let policy = policy();
    let host = c.host("node-1");
    let info = HostInfo::from_files(Some(&host.os_release()), Some("GROUP=stable\n"), None);
    let mut written: Vec<Json> = Vec::new();
    let mut drained = false;
    let mut phase = 0;
    let mut boot_before = String::new();
    for _ in 0..60 {
        let raw = c.node("node-1").await;
        let view = protocol::k8s::node_view(&serde_json::from_value(raw.clone()).expect("Node"));
        let status = host.status();
        let step = next_step(&AgentInput {
            node: &view,
            host: Some(&status),
            info: &info,
            drained,
            now: chrono::Utc::now(),
            pods: None,
            pod_recovery_timeout: chrono::TimeDelta::minutes(10),
            // Every optional mark on, so their writes are checked too.
            options: NodeOptions {
                prefer_no_schedule_taint: true,
                exclude_from_load_balancers: true,
            },
            sentinel: None,
        });
        match step {
            AgentStep::Patch(p) => {
                let body = p.merge_patch();
                let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &raw, &body);
                assert_eq!(d, ADMITTED, "the agent's patch {body}");
                c.patch("node-1", &body).await;
                written.push(body);
            }
            AgentStep::Drain => drained = true,
            AgentStep::Reboot => {
                boot_before = view.boot_id.clone();
                host::Host::reboot(&host).await.expect("reboot");
                drained = false;
                for _ in 0..200 {
                    let v = c.node("node-1").await;
                    if v["status"]["nodeInfo"]["bootID"] != json!(boot_before)
                        && !host.is_rebooting()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            AgentStep::Wait(why) => {
                phase += 1;
                match phase {
                    1 => host.offer_update("9999.0.0").await,
                    2 => {
                        // The operator's grant.
                        let grant = json!({"metadata": {"annotations": {keys::REBOOT_OK: "true"}}});
                        let d = decide(&policy, Resource::nodes(), operator(), &raw, &grant);
                        assert_eq!(d, Decision::NotMatched);
                        c.patch("node-1", &grant).await;
                    }
                    _ if !boot_before.is_empty() => break,
                    _ => panic!("the agent waits before rebooting: {why}"),
                }
            }
        }
    }
    assert!(!boot_before.is_empty(), "the walk reached the reboot");
    let wrote = |pointer: &str, v: Json| written.iter().any(|b| b.pointer(pointer) == Some(&v));
    let esc = |k: &str| k.replace('/', "~1");
    assert!(wrote(
        &format!("/metadata/labels/{}", esc(keys::REBOOT_NEEDED)),
        json!("true")
    ));
    assert!(wrote(
        &format!("/metadata/annotations/{}", esc(keys::REBOOT_IN_PROGRESS)),
        json!("true")
    ));
    assert!(
        wrote("/spec/unschedulable", json!(true)),
        "cordon: {written:?}"
    );
    assert!(
        wrote("/spec/unschedulable", json!(false)),
        "uncordon: {written:?}"
    );
    assert!(
        written.iter().any(|b| b.to_string().contains(":null")),
        "a key removed: {written:?}"
    );
    assert!(
        wrote(
            &format!("/metadata/labels/{}", esc(keys::EXCLUDE_FROM_LB_LABEL)),
            json!("true")
        ) && wrote(
            &format!("/metadata/labels/{}", esc(keys::EXCLUDE_FROM_LB_LABEL)),
            Json::Null
        ),
        "the load-balancer label set and removed: {written:?}"
    );
    assert!(
        wrote("/spec/taints/0/key", json!(keys::REBOOT_TAINT)) && wrote("/spec/taints", Json::Null),
        "the taint set and removed: {written:?}"
    );
}

/// The taint and the load-balancer label as the agent writes them, next to someone else's
/// taint, are admitted; anything else about taints is not.
#[tokio::test]
async fn only_our_prefer_no_schedule_taint_may_change() {
    let c = Cluster::start().await;
    let policy = policy();
    let theirs = json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"});
    let ours = json!({"key": keys::REBOOT_TAINT, "effect": "PreferNoSchedule"});
    c.patch("node-1", &json!({"spec": {"taints": [theirs.clone()]}}))
        .await;
    let old = c.node("node-1").await;
    let lb = keys::EXCLUDE_FROM_LB_LABEL;
    for patch in [
        json!({"spec": {"taints": [theirs.clone(), ours.clone()]}}),
        json!({"spec": {"taints": [ours.clone(), theirs.clone()]}}),
        json!({"metadata": {"labels": {lb: "true"}}}),
        json!({"metadata": {"labels": {lb: null}}}),
    ] {
        let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
        assert_eq!(d, ADMITTED, "{patch}");
    }
    let tainted = merged(
        &old,
        &json!({"spec": {"taints": [theirs.clone(), ours.clone()]}}),
    );
    let d = decide(
        &policy,
        Resource::nodes(),
        agent_on("node-1"),
        &tainted,
        &json!({"spec": {"taints": [theirs.clone()]}}),
    );
    assert_eq!(d, ADMITTED, "ours removed");
    for patch in [
        // Theirs removed, changed, or all taints dropped.
        json!({"spec": {"taints": [ours.clone()]}}),
        json!({"spec": {"taints": null}}),
        json!({"spec": {"taints": [{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}]}}),
        // A foreign taint added, or ours with a harder effect.
        json!({"spec": {"taints": [theirs.clone(), {"key": "example.com/evil", "effect": "NoExecute"}]}}),
        json!({"spec": {"taints": [theirs.clone(), {"key": keys::REBOOT_TAINT, "effect": "NoExecute"}]}}),
    ] {
        let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
        assert_eq!(d, forbidden("node-1", TAINTS), "{patch}");
    }
}

/// Our keys added, changed and removed, and a cordon, on a Node the agent just read, with
/// what the API server itself changes on the way (managedFields, resourceVersion) — admitted.
#[tokio::test]
async fn our_keys_and_unschedulable_on_the_own_node_are_admitted() {
    let c = Cluster::start().await;
    let policy = policy();
    let ann = |k: &str| format!("{}{k}", keys::PREFIX);
    c.patch(
        "node-1",
        &json!({"metadata": {"annotations": {ann("x"): "1", ann("gone"): "1"}, "labels": {ann("y"): "1"}}}),
    )
    .await;
    let old = c.node("node-1").await;
    for patch in [
        json!({"metadata": {"annotations": {ann("x"): "2", ann("new"): "1", ann("gone"): null}}}),
        json!({"metadata": {"labels": {ann("y"): null, ann("z"): "true"}}}),
        json!({"spec": {"unschedulable": true}}),
        json!({}),
        json!({"metadata": {"resourceVersion": "999", "managedFields": [{"manager": "update-agent",
            "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}]},
            "spec": {"unschedulable": true}}),
    ] {
        let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
        assert_eq!(d, ADMITTED, "{patch}");
    }
    // A Node without any labels or annotations (the `{}` fallbacks).
    let mut bare = old.clone();
    let meta = bare["metadata"].as_object_mut().expect("metadata");
    meta.remove("labels");
    meta.remove("annotations");
    let patch = json!({"metadata": {"annotations": {keys::REBOOT_NEEDED: "false"}, "labels": {keys::REBOOT_NEEDED: "false"}}});
    let d = decide(
        &policy,
        Resource::nodes(),
        agent_on("node-1"),
        &bare,
        &patch,
    );
    assert_eq!(d, ADMITTED);
}

#[tokio::test]
async fn another_node_is_denied() {
    let c = Cluster::start().await;
    let policy = policy();
    let old = c.node("node-2").await;
    let patch = json!({"metadata": {"annotations": {keys::REBOOT_NEEDED: "true"}}, "spec": {"unschedulable": true}});
    let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
    assert_eq!(
        d,
        forbidden(
            "node-2",
            "the update-agent of node \"node-1\" may not modify node \"node-2\""
        )
    );
}

/// A token without the node claim: one from `kubectl create token` (bound to no pod), and one
/// with no `extra` at all (a legacy Secret token).
#[tokio::test]
async fn a_token_without_the_node_claim_is_denied() {
    let c = Cluster::start().await;
    let policy = policy();
    let old = c.node("node-1").await;
    let patch = json!({"metadata": {"annotations": {keys::REBOOT_NEEDED: "true"}}});
    let mut unbound = agent_on("node-1");
    unbound.extra.retain(|k, _| k.ends_with("/credential-id"));
    let mut legacy = agent_on("node-1");
    legacy.extra.clear();
    let want = forbidden(
        "node-1",
        "the update-agent's token has no authentication.kubernetes.io/node-name claim: \
         it must be its pod's projected service account token, on Kubernetes >= 1.32",
    );
    for user in [unbound, legacy] {
        let d = decide(&policy, Resource::nodes(), user.clone(), &old, &patch);
        assert_eq!(d, want, "{:?}", user.extra);
    }
}

#[tokio::test]
async fn foreign_labels_are_denied() {
    let c = Cluster::start().await;
    let policy = policy();
    let old = c.node("node-1").await;
    assert_eq!(
        old["metadata"]["labels"]["kubernetes.io/hostname"],
        "node-1"
    );
    for patch in [
        json!({"metadata": {"labels": {"kubernetes.io/hostname": "node-9"}}}),
        json!({"metadata": {"labels": {"kubernetes.io/hostname": null}}}),
        json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        // The prefix without its slash is not ours.
        json!({"metadata": {"labels": {"flatcar-linux-update.v1.flatcar-linux.net": "x"}}}),
        // Ours and a foreign one in one patch.
        json!({"metadata": {"labels": {keys::REBOOT_NEEDED: "true", "topology.kubernetes.io/zone": "a"}}}),
    ] {
        let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
        assert_eq!(d, forbidden("node-1", LABELS_ONLY), "{patch}");
    }
}

#[tokio::test]
async fn foreign_annotations_are_denied() {
    let c = Cluster::start().await;
    let policy = policy();
    let old = c.node("node-1").await;
    assert_eq!(
        old["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"],
        "0"
    );
    for patch in [
        json!({"metadata": {"annotations": {"node.alpha.kubernetes.io/ttl": "30"}}}),
        json!({"metadata": {"annotations": {"node.alpha.kubernetes.io/ttl": null}}}),
        json!({"metadata": {"annotations": {"example.com/owner": "me"}}}),
    ] {
        let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
        assert_eq!(d, forbidden("node-1", ANNOTATIONS_ONLY), "{patch}");
    }
}

#[tokio::test]
async fn other_spec_fields_are_denied() {
    let c = Cluster::start().await;
    let policy = policy();
    let old = c.node("node-1").await;
    for patch in [
        json!({"spec": {"podCIDR": "10.99.0.0/24"}}),
        json!({"spec": {"providerID": null}}),
        json!({"spec": {"unschedulable": true, "podCIDRs": ["10.99.0.0/24"]}}),
    ] {
        let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
        assert_eq!(d, forbidden("node-1", SPEC_ONLY), "{patch}");
    }
}

#[tokio::test]
async fn other_metadata_is_denied() {
    let c = Cluster::start().await;
    let policy = policy();
    let old = c.node("node-1").await;
    for patch in [
        // The garbage collector would delete the Node with its owner.
        json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
            "name": "x", "uid": "6f1c9a52-1111-4222-8333-444455556666"}]}}),
        json!({"metadata": {"finalizers": ["example.com/hold"]}}),
    ] {
        let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
        assert_eq!(d, forbidden("node-1", METADATA), "{patch}");
    }
}

/// Status through `nodes/status` (the agent has no RBAC for it; the policy covers it anyway).
/// Through `nodes` itself the API server drops status changes before admission.
#[tokio::test]
async fn status_changes_are_denied() {
    let c = Cluster::start().await;
    let policy = policy();
    let old = c.node("node-1").await;
    let patch = json!({"status": {"nodeInfo": {"bootID": "forged"}}});
    let d = decide(
        &policy,
        Resource::nodes().subresource("status"),
        agent_on("node-1"),
        &old,
        &patch,
    );
    assert_eq!(d, forbidden("node-1", STATUS));
}

/// Validations run in order and the first failure is the answer.
#[tokio::test]
async fn the_first_failed_validation_is_reported() {
    let c = Cluster::start().await;
    let policy = policy();
    let old = c.node("node-2").await;
    let patch = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"podCIDR": "x"}});
    let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
    assert_eq!(
        d,
        forbidden(
            "node-2",
            "the update-agent of node \"node-1\" may not modify node \"node-2\""
        )
    );
    let old = c.node("node-1").await;
    let d = decide(&policy, Resource::nodes(), agent_on("node-1"), &old, &patch);
    assert_eq!(d, forbidden("node-1", LABELS_ONLY));
}

/// The operator, people and the kubelet are not the policy's business, whatever they change;
/// nor is anything but an UPDATE of a Node.
#[tokio::test]
async fn other_users_and_requests_are_not_matched() {
    let c = Cluster::start().await;
    let policy = policy();
    let old = c.node("node-1").await;
    let patch = json!({"metadata": {"labels": {"kubernetes.io/hostname": "x"}},
        "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
    let kubelet = UserInfo {
        username: "system:node:node-1".into(),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
        ..Default::default()
    };
    for user in [operator(), admin(), kubelet] {
        let d = decide(&policy, Resource::nodes(), user.clone(), &old, &patch);
        assert_eq!(d, Decision::NotMatched, "{}", user.username);
    }
    // The agent deleting its Node (RBAC does not let it) or touching a Pod.
    let mut delete = Request::update(
        Resource::nodes(),
        agent_on("node-1"),
        old.clone(),
        old.clone(),
    );
    delete.operation = "DELETE".into();
    delete.object = None;
    assert_eq!(policy.evaluate(&delete), Decision::NotMatched);
    let pods = Resource {
        resource: "pods".into(),
        kind: "Pod".into(),
        ..Resource::nodes()
    };
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}});
    let d = policy.evaluate(&Request::update(pods, agent_on("node-1"), pod.clone(), pod));
    assert_eq!(d, Decision::NotMatched);
}
