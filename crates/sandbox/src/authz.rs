//! Authorization as kube-apiserver's authorizers decide it: the request's attributes, the
//! decision, and the 403 Status it answers a denial with.

use serde_json::json;

use crate::error::ApiError;
use crate::identity::UserInfo;

/// Which authorizer the sandbox runs (kube-apiserver's `--authorization-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Everything is allowed, as `--authorization-mode=AlwaysAllow`. The default of a bare
    /// [`crate::Sandbox::start`]: tests that do not load RBAC keep working unchanged.
    #[default]
    AlwaysAllow,
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

/// Whether `user` may do what `attrs` describe.
pub fn allowed(mode: Mode, user: &UserInfo, attrs: &Attributes) -> bool {
    let _ = (user, attrs);
    match mode {
        Mode::AlwaysAllow => true,
    }
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
