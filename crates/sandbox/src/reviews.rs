//! The self reviews: `SelfSubjectAccessReview` and `SelfSubjectRulesReview`
//! (authorization.k8s.io/v1, what `kubectl auth can-i` and `can-i --list` ask) and
//! `SelfSubjectReview` (authentication.k8s.io/v1, `kubectl auth whoami`). Create-only and
//! never stored, as in kube-apiserver.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::authz::{self, Attributes, Mode, ResourceAttributes};
use crate::error::{ApiError, ApiResult};
use crate::identity::UserInfo;

pub const GROUPS: &[(&str, &str)] = &[
    ("authorization.k8s.io", "v1"),
    ("authentication.k8s.io", "v1"),
];

/// (group, plural, kind) of each review.
const REVIEWS: &[(&str, &str, &str)] = &[
    (
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
    ),
    (
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
    ),
    (
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
    ),
];

/// Discovery's APIResourceList of a review group.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !GROUPS.contains(&(group, version)) {
        return None;
    }
    let resources: Vec<Value> = REVIEWS
        .iter()
        .filter(|(g, _, _)| *g == group)
        .map(|(_, plural, kind)| {
            json!({"name": plural, "singularName": "", "namespaced": false, "kind": kind, "verbs": ["create"]})
        })
        .collect();
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources}),
    )
}

/// The review a path names: `(group, plural, kind)`.
pub fn route(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ["apis", g, "v1", plural] = segs.as_slice() else {
        return None;
    };
    REVIEWS
        .iter()
        .copied()
        .find(|(rg, p, _)| rg == g && p == plural)
}

/// The review as JSON, from a JSON body or the protobuf one kubectl's typed client sends.
fn decode(kind: &str, content_type: &str, body: &[u8]) -> ApiResult<Value> {
    if !content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the {kind} is not valid JSON: {e}")));
    }
    use k8s_rs_pb::api::authorization::v1 as pb;
    use protobuf::Message;
    let bad = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!("the {kind} is not a valid protobuf message: {e}"))
    };
    // kube-apiserver's envelope: the magic "k8s\0", then a runtime.Unknown holding the message.
    let envelope = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad(&"no k8s protobuf envelope"))?;
    let unknown = k8s_rs_pb::apimachinery::pkg::runtime::Unknown::parse_from_bytes(envelope)
        .map_err(|e| bad(&e))?;
    let raw = unknown.raw.unwrap_or_default();
    let o = |x: &Option<String>| json!(x.clone().unwrap_or_default());
    let spec = match kind {
        "SelfSubjectAccessReview" => {
            let r = pb::SelfSubjectAccessReview::parse_from_bytes(&raw).map_err(|e| bad(&e))?;
            let mut spec = json!({});
            if let Some(a) = r.spec.resourceAttributes.as_ref() {
                spec["resourceAttributes"] = json!({
                    "namespace": o(&a.namespace), "verb": o(&a.verb), "group": o(&a.group),
                    "version": o(&a.version), "resource": o(&a.resource),
                    "subresource": o(&a.subresource), "name": o(&a.name),
                });
            }
            if let Some(a) = r.spec.nonResourceAttributes.as_ref() {
                spec["nonResourceAttributes"] = json!({"path": o(&a.path), "verb": o(&a.verb)});
            }
            spec
        }
        "SelfSubjectRulesReview" => {
            let r = pb::SelfSubjectRulesReview::parse_from_bytes(&raw).map_err(|e| bad(&e))?;
            json!({"namespace": o(&r.spec.namespace)})
        }
        _ => json!({}),
    };
    let (group, _, _) = REVIEWS
        .iter()
        .find(|(_, _, k)| *k == kind)
        .copied()
        .unwrap_or_default();
    Ok(json!({"apiVersion": format!("{group}/v1"), "kind": kind, "metadata": {}, "spec": spec}))
}

/// Answers a review `user` posted.
pub fn create(
    st: &ApiState,
    user: &UserInfo,
    kind: &str,
    content_type: &str,
    body: &[u8],
) -> ApiResult<(StatusCode, Value)> {
    let mut review = decode(kind, content_type, body)?;
    let spec = review["spec"].clone();
    let status = match kind {
        "SelfSubjectAccessReview" => access(st, user, &spec)?,
        "SelfSubjectRulesReview" => rules(st, user, &spec),
        _ => {
            json!({"userInfo": {"username": user.username, "uid": user.uid, "groups": user.groups, "extra": user.extra}})
        }
    };
    review["status"] = status;
    if review["metadata"].is_null() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok((StatusCode::CREATED, review))
}

fn access(st: &ApiState, user: &UserInfo, spec: &Value) -> ApiResult<Value> {
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let attrs = if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        Attributes {
            verb: s(r, "verb"),
            resource: Some(ResourceAttributes {
                group: s(r, "group"),
                resource: s(r, "resource"),
                subresource: s(r, "subresource"),
                namespace: s(r, "namespace"),
                name: s(r, "name"),
            }),
            path: String::new(),
        }
    } else if let Some(n) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        Attributes {
            verb: s(n, "verb"),
            resource: None,
            path: s(n, "path"),
        }
    } else {
        return Err(ApiError::invalid(
            "SelfSubjectAccessReview",
            "",
            "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    };
    Ok(match authz::decide(st.authz, &st.store, user, &attrs) {
        Some(reason) if reason.is_empty() => json!({"allowed": true}),
        Some(reason) => json!({"allowed": true, "reason": reason}),
        None => json!({"allowed": false}),
    })
}

fn rules(st: &ApiState, user: &UserInfo, spec: &Value) -> Value {
    if st.authz == Mode::AlwaysAllow {
        return json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        });
    }
    let ns = spec["namespace"].as_str().unwrap_or("");
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for (_, rule) in authz::applicable_rules(&st.store, user, ns) {
        let pick = |keys: &[&str]| {
            let mut o = serde_json::Map::new();
            for k in keys {
                if let Some(v) = rule.get(*k).filter(|v| !v.is_null()) {
                    o.insert((*k).to_string(), v.clone());
                }
            }
            Value::Object(o)
        };
        if rule.get("nonResourceURLs").is_some_and(|v| !v.is_null()) {
            non_resource_rules.push(pick(&["verbs", "nonResourceURLs"]));
        } else {
            resource_rules.push(pick(&["verbs", "apiGroups", "resources", "resourceNames"]));
        }
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}
