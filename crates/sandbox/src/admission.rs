//! kube-apiserver's ValidatingAdmissionPolicy plugin: every create, update, patch and delete,
//! and every subresource write a policy's rules name (`nodes/status`, `pods/eviction`), is
//! checked against the ValidatingAdmissionPolicies and bindings stored in the sandbox, with the
//! `admission` crate's CEL evaluator. Denials and warnings are worded as the API server words
//! them; policies are checked when written, so a policy the evaluator cannot run faithfully is
//! refused at `kubectl apply` rather than half-enforced.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

use admission::{Decision, FailurePolicy, Policy, Request};
use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::{Value, json};

use crate::api::Req;
use crate::error::{ApiError, ApiResult};
use crate::resources::{self, Resource};
use crate::store::{Inner, meta};

const GROUP: &str = "admissionregistration.k8s.io";

tokio::task_local! {
    /// The warnings admission gives the request being served. The handlers are synchronous
    /// and run inside [`collect_warnings`], as kube-apiserver's admission adds warnings to the
    /// request's context.
    static WARNINGS: RefCell<Vec<String>>;
}

/// Runs `f` (one request's handler); returns its result and admission's warnings.
pub fn collect_warnings<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    WARNINGS.sync_scope(RefCell::new(Vec::new()), || {
        let out = f();
        (out, WARNINGS.with(RefCell::take))
    })
}

/// Adds `warnings` as kube-apiserver sends them: one `Warning: 299 - "TEXT"` header each,
/// which kubectl prints as `Warning: TEXT`.
pub fn add_warning_headers(resp: &mut Response, warnings: &[String]) {
    for w in warnings {
        let mut quoted = String::with_capacity(w.len() + 2);
        quoted.push('"');
        for c in w.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            // Header values cannot hold control characters.
            if !c.is_control() {
                quoted.push(c);
            }
        }
        quoted.push('"');
        if let Ok(v) = HeaderValue::from_bytes(format!("299 - {quoted}").as_bytes()) {
            resp.headers_mut().append("Warning", v);
        }
    }
}

/// Compiled policies, by binding name, kept while neither object changes.
#[derive(Default)]
pub struct Policies {
    compiled: Mutex<HashMap<String, Compiled>>,
}

struct Compiled {
    /// uid and resourceVersion of the policy, then of the binding.
    versions: [String; 4],
    policy: Result<Policy, String>,
    failure_policy: FailurePolicy,
}

/// The write being admitted.
pub struct Write<'a> {
    /// `CREATE`, `UPDATE` (PUT and PATCH) or `DELETE`.
    pub operation: &'static str,
    pub req: &'a Req,
    /// The object's name (the pod's for `pods/eviction`); empty for a create without one.
    pub name: &'a str,
    /// After the write (for CREATE and UPDATE); for an eviction, the Eviction.
    pub object: Option<&'a Value>,
    /// What is stored (for UPDATE and DELETE).
    pub old_object: Option<&'a Value>,
    pub dry_run: bool,
}

impl Policies {
    /// Admits `w` or refuses it as the API server's ValidatingAdmissionPolicy plugin does. Also
    /// refuses a policy or binding that the evaluator cannot enforce, naming the field.
    pub fn admit(&self, store: &Inner, w: &Write) -> ApiResult<()> {
        check_definition(w)?;
        // As in kube-apiserver, writes to admission configuration are never subject to
        // policies, so a broken policy can always be fixed or deleted.
        if w.req.res.group == GROUP {
            return Ok(());
        }
        let bindings =
            resources::find(GROUP, "v1", "validatingadmissionpolicybindings").expect("served");
        let policies = resources::find(GROUP, "v1", "validatingadmissionpolicies").expect("served");
        if store.iter(bindings, None).next().is_none() {
            return Ok(());
        }
        // The objects are copied in only once a policy's rules match: most writes (pods,
        // events, leases) match none.
        let mut request = request(w);
        let mut with_objects = false;
        let mut warnings = Vec::new();
        let mut live = Vec::new();
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        for (_, binding) in store.iter(bindings, None) {
            let binding_name = meta(binding, "name").unwrap_or("").to_string();
            let policy_name = binding
                .pointer("/spec/policyName")
                .and_then(Value::as_str)
                .unwrap_or("");
            // A binding to a policy that does not exist (yet) does nothing.
            let Some(policy) = store.get(policies, "", policy_name) else {
                continue;
            };
            let versions = [
                meta(&policy, "uid").unwrap_or("").to_string(),
                meta(&policy, "resourceVersion").unwrap_or("").to_string(),
                meta(binding, "uid").unwrap_or("").to_string(),
                meta(binding, "resourceVersion").unwrap_or("").to_string(),
            ];
            live.push(binding_name.clone());
            let entry = compiled
                .entry(binding_name.clone())
                .or_insert_with(|| compile(&policy, binding, versions.clone()));
            if entry.versions != versions {
                *entry = compile(&policy, binding, versions);
            }
            if let Ok(p) = entry.policy.as_ref() {
                if p.matches_on_objects() && !with_objects {
                    add_objects(&mut request, store, w);
                    with_objects = true;
                }
                if !p.matches(&request) {
                    continue;
                }
            }
            if !with_objects {
                add_objects(&mut request, store, w);
                with_objects = true;
            }
            let decision = match entry.policy.as_ref() {
                Ok(p) => p.evaluate(&request),
                // Stored without going through the API (the API refuses it): the API server
                // treats a policy it cannot compile as failing to evaluate.
                Err(e) if entry.failure_policy == FailurePolicy::Fail => {
                    Decision::Denied(admission::denial(
                        policy_name,
                        &binding_name,
                        &request,
                        "Invalid",
                        &format!("the policy cannot be evaluated: {e}"),
                    ))
                }
                Err(_) => Decision::NotMatched,
            };
            match decision {
                Decision::NotMatched => {}
                Decision::Admitted { warnings: w } => warnings.extend(w),
                Decision::Denied(d) => {
                    add_warnings(warnings);
                    let r = w.req.res;
                    let code = d.code;
                    let reason = match d.reason.as_str() {
                        "Forbidden" => "Forbidden",
                        "Unauthorized" => "Unauthorized",
                        "RequestEntityTooLarge" => "RequestEntityTooLarge",
                        _ => "Invalid",
                    };
                    return Err(ApiError::new(code, reason, d.message).with_details(json!({
                        "name": d.name, "group": r.group, "kind": r.plural,
                        "causes": [{"message": d.cause}],
                    })));
                }
            }
        }
        compiled.retain(|name, _| live.contains(name));
        add_warnings(warnings);
        Ok(())
    }
}

fn add_warnings(warnings: Vec<String>) {
    if warnings.is_empty() {
        return;
    }
    let _ = WARNINGS.try_with(|w| w.borrow_mut().extend(warnings));
}

fn compile(policy: &Value, binding: &Value, versions: [String; 4]) -> Compiled {
    let failure_policy = match policy
        .pointer("/spec/failurePolicy")
        .and_then(Value::as_str)
    {
        Some("Ignore") => FailurePolicy::Ignore,
        _ => FailurePolicy::Fail,
    };
    Compiled {
        versions,
        policy: Policy::new(policy, binding).map_err(|e| e.to_string()),
        failure_policy,
    }
}

/// Policies and bindings are refused when written if the evaluator cannot enforce them.
fn check_definition(w: &Write) -> ApiResult<()> {
    let r = w.req.res;
    if r.group != GROUP || w.req.sub.is_some() || w.operation == "DELETE" {
        return Ok(());
    }
    let Some(obj) = w.object else { return Ok(()) };
    let checked = match r.kind {
        "ValidatingAdmissionPolicy" => admission::validate_policy(obj),
        "ValidatingAdmissionPolicyBinding" => admission::validate_binding(obj),
        _ => Ok(()),
    };
    checked.map_err(|e| {
        ApiError::invalid(
            &format!("{}.{GROUP}", r.kind),
            meta(obj, "name").unwrap_or(w.name),
            e.to_string(),
        )
    })
}

/// The request without its objects (see [`add_objects`]).
fn request(w: &Write) -> Request {
    let r: &Resource = w.req.res;
    let user = w.req.user.clone();
    Request {
        operation: w.operation.to_string(),
        resource: admission::Resource {
            group: r.group.to_string(),
            version: r.version.to_string(),
            resource: r.plural.to_string(),
            sub_resource: w.req.sub.clone().unwrap_or_default(),
            // The kind sent to pods/eviction (its group, policy, is not modelled).
            kind: if w.req.sub.as_deref() == Some("eviction") {
                "Eviction".into()
            } else {
                r.kind.to_string()
            },
        },
        name: w.name.to_string(),
        namespace: w.req.ns.clone().unwrap_or_default(),
        user: admission::UserInfo {
            username: user.username,
            uid: user.uid,
            groups: user.groups,
            extra: user.extra,
        },
        object: None,
        old_object: None,
        dry_run: w.dry_run,
        namespace_object: None,
    }
}

/// `object`, `oldObject` and `namespaceObject`.
fn add_objects(request: &mut Request, store: &Inner, w: &Write) {
    request.object = w.object.cloned();
    request.old_object = w.old_object.cloned();
    // As kube-apiserver's BeforeUpdate does before admission (the store does it when
    // writing): an update cannot change these, so a PUT that leaves them out keeps them.
    if let (Some(new), Some(old)) = (request.object.as_mut(), w.old_object)
        && w.operation == "UPDATE"
        && new.get("metadata").is_some_and(Value::is_object)
    {
        crate::store::keep_unchangeable_metadata(new, old);
    }
    request.namespace_object = w
        .req
        .ns
        .as_deref()
        .and_then(|ns| store.get(crate::store::ns_resource(), "", ns))
        .map(|o| (*o).clone());
}

#[cfg(test)]
mod tests {
    //! The shipped policy (deploy/admission/) on the sandbox's write path, with the users
    //! authentication would hand it.
    use super::*;
    use crate::identity::{AGENT_SA, NAMESPACE, UserInfo};
    use crate::store::Store;

    const POLICY: &str = "flatcar-linux-update-agent-own-node";
    const PREFIX: &str = "flatcar-linux-update.v1.flatcar-linux.net/";

    fn shipped(store: &Store) {
        let text = include_str!("../../../deploy/admission/node-policy.yaml");
        let mut st = store.lock();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
            let r = resources::by_kind(
                "admissionregistration.k8s.io/v1",
                v["kind"].as_str().unwrap(),
            )
            .expect("served");
            st.create(r, v).expect("stored");
        }
    }

    fn node(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": "10.0.0.0/24"}})
    }

    /// `user` merge-patching `node` with `patch`, through [`Policies::admit`].
    fn patch_as(store: &Store, user: UserInfo, node: &str, patch: Value) -> ApiResult<()> {
        let policies = Policies::default();
        let r = resources::find("", "v1", "nodes").expect("served");
        let st = store.lock();
        let old = st.get(r, "", node).expect("node");
        let mut new = (*old).clone();
        json_patch::merge(&mut new, &patch);
        // JSON merge patch's null removes a field: how a PUT body that leaves it out looks.
        let req = Req {
            res: r,
            ns: None,
            name: Some(node.into()),
            sub: None,
            user,
        };
        let w = Write {
            operation: "UPDATE",
            req: &req,
            name: node,
            object: Some(&new),
            old_object: Some(&old),
            dry_run: false,
        };
        policies.admit(&st, &w)
    }

    fn cluster() -> Store {
        let store = Store::new(100);
        shipped(&store);
        let r = resources::find("", "v1", "nodes").expect("served");
        for n in ["node-a", "node-b"] {
            store.lock().create(r, node(n)).expect("node");
        }
        store
    }

    fn annotate(key: &str) -> Value {
        json!({"metadata": {"annotations": {key: "true"}}})
    }

    #[test]
    fn the_agent_may_annotate_only_its_own_node_with_our_keys() {
        let store = cluster();
        let ours = format!("{PREFIX}reboot-needed");
        patch_as(&store, UserInfo::agent("node-a"), "node-a", annotate(&ours))
            .expect("its own node, our key");
        let e = patch_as(&store, UserInfo::agent("node-a"), "node-b", annotate(&ours))
            .expect_err("another node");
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.message,
            format!(
                "nodes \"node-b\" is forbidden: ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: the update-agent of node \"node-a\" may not modify node \"node-b\""
            )
        );
        let details = e.details.expect("details");
        assert_eq!(details["name"], "node-b");
        assert_eq!(details["kind"], "nodes");
        assert!(
            details["causes"][0]["message"]
                .as_str()
                .is_some_and(|c| c.starts_with("ValidatingAdmissionPolicy '")),
            "{details}"
        );
        let e = patch_as(
            &store,
            UserInfo::agent("node-a"),
            "node-a",
            json!({"metadata": {"labels": {"team": "x"}}}),
        )
        .expect_err("a foreign label");
        assert!(
            e.message.ends_with(
                "denied request: the update-agent may change only flatcar-linux-update.v1.flatcar-linux.net/ labels and node.kubernetes.io/exclude-from-external-load-balancers"
            ),
            "{}",
            e.message
        );
        let e = patch_as(
            &store,
            UserInfo::service_account(NAMESPACE, AGENT_SA),
            "node-a",
            annotate(&ours),
        )
        .expect_err("a token without the node claim");
        assert!(
            e.message
                .contains("has no authentication.kubernetes.io/node-name claim"),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_update_that_leaves_out_what_it_cannot_change_keeps_it() {
        let store = cluster();
        let ours = format!("{PREFIX}reboot-needed");
        let put = json!({"metadata": {"uid": null, "creationTimestamp": null,
            "annotations": {ours: "true"}}});
        patch_as(&store, UserInfo::agent("node-a"), "node-a", put)
            .expect("uid and creationTimestamp are kept, as kube-apiserver's BeforeUpdate does");
        let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Node",
            "name": "node-b", "uid": "x"}]}});
        let e = patch_as(&store, UserInfo::agent("node-a"), "node-a", owner)
            .expect_err("other metadata is still checked");
        assert!(
            e.message
                .ends_with("the update-agent may not change a Node's metadata other than labels and annotations"),
            "{}",
            e.message
        );
    }

    #[test]
    fn others_are_not_matched() {
        let store = cluster();
        patch_as(&store, UserInfo::operator(), "node-b", annotate("anything"))
            .expect("the operator");
        let admin = UserInfo::admin();
        patch_as(
            &store,
            admin,
            "node-b",
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        )
        .expect("an admin");
    }
}
