//! Authorization as kube-apiserver's authorizers decide it: the request's attributes, the
//! decision, and the 403 Status it answers a denial with.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::identity::UserInfo;
use crate::resources::{self, Resource};
use crate::store::{Store, meta};

/// Which authorizer the sandbox runs (kube-apiserver's `--authorization-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Everything is allowed, as `--authorization-mode=AlwaysAllow`. The default of a bare
    /// [`crate::Sandbox::start`]: tests that do not load RBAC keep working unchanged.
    #[default]
    AlwaysAllow,
    /// `--authorization-mode=RBAC`: the Roles, ClusterRoles and bindings stored in the
    /// sandbox decide; `system:masters` is allowed everything. The bootstrap roles clients
    /// rely on (discovery, health, version, OpenAPI, self reviews, cluster-admin) are created
    /// at start.
    Rbac,
}

/// What a request asks to do (kube-apiserver's `authorizer.Attributes`).
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    /// Set for a resource request; `None` for a non-resource path such as `/version`.
    pub resource: Option<ResourceAttributes>,
    /// The URL path of a non-resource request.
    pub path: String,
}

#[derive(Debug, Clone, Default)]
pub struct ResourceAttributes {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

/// The name a field selector requires exactly (`metadata.name=X` or `==X` among its terms).
pub fn exact_name(field_selector: &str) -> Option<String> {
    field_selector.split(',').find_map(|term| {
        let v = term.trim().strip_prefix("metadata.name")?.trim_start();
        let v = v.strip_prefix("==").or_else(|| v.strip_prefix('='))?;
        let v = v.trim();
        (!v.is_empty() && !v.contains('/') && v != "." && v != "..").then(|| v.to_string())
    })
}

/// Whether `user` may do what `attrs` describe.
pub fn allowed(mode: Mode, store: &Store, user: &UserInfo, attrs: &Attributes) -> bool {
    decide(mode, store, user, attrs).is_some()
}

/// `Some(reason)` when allowed, with the reason a SubjectAccessReview reports.
pub fn decide(mode: Mode, store: &Store, user: &UserInfo, attrs: &Attributes) -> Option<String> {
    match mode {
        Mode::AlwaysAllow => Some(String::new()),
        Mode::Rbac if user.in_group("system:masters") => Some(String::new()),
        Mode::Rbac => {
            let ns = attrs
                .resource
                .as_ref()
                .map(|r| r.namespace.as_str())
                .unwrap_or("");
            applicable_rules(store, user, ns)
                .into_iter()
                .find(|(_, rule)| rule_allows(rule, attrs))
                .map(|(by, _)| format!("RBAC: allowed by {by}"))
        }
    }
}

fn rbac(plural: &str) -> &'static Resource {
    resources::find("rbac.authorization.k8s.io", "v1", plural).expect("rbac resources are served")
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn subject_matches(subject: &Value, binding_ns: &str, user: &UserInfo) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str().unwrap_or("") {
        "User" => user.username == name,
        "Group" => user.in_group(name),
        "ServiceAccount" => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.username == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Every rule that applies to `user` in `namespace` ("" for cluster-scoped requests), each
/// with a description of the binding that grants it, as kube-apiserver's RBAC authorizer
/// resolves them: ClusterRoleBindings everywhere, RoleBindings in their namespace.
pub fn applicable_rules(store: &Store, user: &UserInfo, namespace: &str) -> Vec<(String, Value)> {
    let st = store.lock();
    let mut bindings: Vec<Arc<Value>> = st
        .iter(rbac("clusterrolebindings"), None)
        .map(|(_, b)| b.clone())
        .collect();
    if !namespace.is_empty() {
        bindings.extend(
            st.iter(rbac("rolebindings"), Some(namespace))
                .map(|(_, b)| b.clone()),
        );
    }
    let mut out = Vec::new();
    for b in bindings {
        let binding_ns = meta(&b, "namespace").unwrap_or("");
        let Some(subject) = b["subjects"]
            .as_array()
            .and_then(|ss| ss.iter().find(|s| subject_matches(s, binding_ns, user)))
        else {
            continue;
        };
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or("");
        let role_name = b["roleRef"]["name"].as_str().unwrap_or("");
        let role = match role_kind {
            "ClusterRole" => st.get(rbac("clusterroles"), "", role_name),
            "Role" => st.get(rbac("roles"), binding_ns, role_name),
            _ => None,
        };
        let Some(role) = role else { continue };
        let binding_kind = if binding_ns.is_empty() {
            "ClusterRoleBinding".to_string()
        } else {
            format!(
                "RoleBinding \"{}/{binding_ns}\"",
                meta(&b, "name").unwrap_or("")
            )
        };
        let by = if binding_ns.is_empty() {
            format!(
                "{binding_kind} {:?} of {role_kind} {role_name:?} to {} {:?}",
                meta(&b, "name").unwrap_or(""),
                subject["kind"].as_str().unwrap_or(""),
                subject["name"].as_str().unwrap_or("")
            )
        } else {
            format!(
                "{binding_kind} of {role_kind} {role_name:?} to {} {:?}",
                subject["kind"].as_str().unwrap_or(""),
                subject["name"].as_str().unwrap_or("")
            )
        };
        for rule in role["rules"].as_array().into_iter().flatten() {
            out.push((by.clone(), rule.clone()));
        }
    }
    out
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// kube-apiserver's `RuleAllows`.
pub fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    if !has(&strs(rule, "verbs"), &attrs.verb) {
        return false;
    }
    match &attrs.resource {
        Some(r) => {
            let resources = strs(rule, "resources");
            let combined = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let resource_ok = resources.iter().any(|x| {
                x == "*"
                    || *x == combined
                    || (!r.subresource.is_empty() && *x == format!("*/{}", r.subresource))
            });
            let names = strs(rule, "resourceNames");
            has(&strs(rule, "apiGroups"), &r.group)
                && resource_ok
                && (names.is_empty() || names.contains(&r.name))
        }
        None => strs(rule, "nonResourceURLs").iter().any(|u| {
            u == "*"
                || *u == attrs.path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| attrs.path.starts_with(prefix))
        }),
    }
}

/// The ClusterRoles and ClusterRoleBindings of a fresh kube-apiserver that clients rely on:
/// discovery, health and version for everyone, self reviews for authenticated users, and
/// cluster-admin for `system:masters`.
pub fn bootstrap(store: &Store) -> ApiResult<()> {
    let public = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let discovery = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ];
    let roles = [
        json!({"metadata": {"name": "cluster-admin"}, "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
        json!({"metadata": {"name": "system:public-info-viewer"}, "rules": [
            {"nonResourceURLs": public, "verbs": ["get"]}]}),
        json!({"metadata": {"name": "system:discovery"}, "rules": [
            {"nonResourceURLs": discovery, "verbs": ["get"]}]}),
        json!({"metadata": {"name": "system:basic-user"}, "rules": [
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]}),
    ];
    let group =
        |g: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g});
    let bindings = [
        ("cluster-admin", vec![group("system:masters")]),
        (
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        ("system:discovery", vec![group("system:authenticated")]),
        ("system:basic-user", vec![group("system:authenticated")]),
    ];
    let mut st = store.lock();
    for mut r in roles {
        r["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        r["kind"] = json!("ClusterRole");
        r["metadata"]["labels"] = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        st.create(rbac("clusterroles"), r)?;
    }
    for (name, subjects) in bindings {
        st.create(
            rbac("clusterrolebindings"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": subjects,
            }),
        )?;
    }
    Ok(())
}

/// kube-apiserver's 403 for a denied request, word for word.
pub fn forbidden(user: &UserInfo, attrs: &Attributes) -> ApiError {
    let Some(r) = &attrs.resource else {
        return ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User {:?} cannot {} path {:?}",
                user.username, attrs.verb, attrs.path
            ),
        )
        .with_details(json!({}));
    };
    let qualified = if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    };
    let what = if r.name.is_empty() {
        qualified
    } else {
        format!("{qualified} {:?}", r.name)
    };
    let resource = if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    let scope = if r.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", r.namespace)
    };
    let mut details = json!({"group": r.group, "kind": r.resource});
    if !r.name.is_empty() {
        details["name"] = json!(r.name);
    }
    ApiError::new(
        403,
        "Forbidden",
        format!(
            "{what} is forbidden: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            user.username, attrs.verb, r.group
        ),
    )
    .with_details(details)
}

#[cfg(test)]
mod field_selector_name {
    use super::exact_name;

    #[test]
    fn only_an_exact_metadata_name_term_names_the_request() {
        let name = |s| exact_name(s);
        assert_eq!(name("metadata.name=lock").as_deref(), Some("lock"));
        assert_eq!(
            name("metadata.namespace=x,metadata.name==lock").as_deref(),
            Some("lock")
        );
        assert_eq!(name("metadata.name!=lock"), None);
        assert_eq!(name("spec.nodeName=n1"), None);
        assert_eq!(name("metadata.name="), None);
        assert_eq!(name("metadata.name=.."), None);
        assert_eq!(name(""), None);
    }
}
