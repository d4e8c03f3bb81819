//! Who a request comes from, as kube-apiserver's authenticators hand it to authorization and
//! admission (`user.Info`: name, uid, groups, extra).
//!
//! Authentication is by bearer token, one per identity, issued by the sandbox (opaque, as in a
//! static token file: the sandbox is the only party that must read them). A request without
//! an `Authorization` header is `system:anonymous` in `system:unauthenticated`, as with
//! kube-apiserver's `--anonymous-auth=true`; an unknown token is refused with 401.
//! Impersonation (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-*`) is honoured when the
//! authorizer allows the `impersonate` verb, as kube-apiserver's impersonation filter does.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use axum::http::HeaderMap;

use crate::error::ApiError;

/// The namespace deploy/ installs into; the service accounts below live there.
pub const NAMESPACE: &str = "reboot-coordinator";
pub const OPERATOR_SA: &str = "flatcar-linux-update-operator-sa";
pub const AGENT_SA: &str = "flatcar-linux-update-agent";
/// The extra a projected service-account token of a pod carries: the node it runs on.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// E.g. `authentication.kubernetes.io/node-name` for a projected service-account token.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The cluster admin of a kubeadm cluster's admin.conf.
    pub fn admin() -> UserInfo {
        UserInfo::masters("kubernetes-admin")
    }

    /// A user named `name` in `system:masters` (every permission, no RBAC needed): what tests
    /// use to set up a cluster, with a name of their own so the audit record tells them apart.
    pub fn masters(name: &str) -> UserInfo {
        UserInfo {
            username: name.to_string(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    /// A service account's identity with the groups kube-apiserver gives every one.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: stable_uid(&format!("{namespace}/{name}")),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// `update-operator`'s service account (deploy/core/update-operator-sa.yaml).
    pub fn operator() -> UserInfo {
        UserInfo::service_account(NAMESPACE, OPERATOR_SA)
    }

    /// `update-agent`'s service account as the projected token of its pod on `node` carries
    /// it: with the node's and the pod's name as extras.
    pub fn agent(node: &str) -> UserInfo {
        let mut u = UserInfo::service_account(NAMESPACE, AGENT_SA);
        u.extra
            .insert(NODE_NAME_EXTRA.into(), vec![node.to_string()]);
        u.extra.insert(
            POD_NAME_EXTRA.into(),
            vec![format!("flatcar-linux-update-agent-{node}")],
        );
        u
    }

    pub fn anonymous() -> UserInfo {
        UserInfo {
            username: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// `(namespace, name)` when this is a service account.
    pub fn service_account_name(&self) -> Option<(&str, &str)> {
        self.username
            .strip_prefix("system:serviceaccount:")?
            .split_once(':')
    }
}

/// A uid that stays the same for the same service account across sandbox runs.
fn stable_uid(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    let a = h.finish();
    "uid".hash(&mut h);
    let b = h.finish();
    let x = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The bearer tokens the sandbox has issued.
#[derive(Default)]
pub struct Tokens {
    by_token: RwLock<HashMap<String, UserInfo>>,
}

impl Tokens {
    /// The token of `user`, issued on first use: the same identity always gets the same token.
    pub fn issue(&self, user: &UserInfo) -> String {
        let mut map = self.by_token.write().unwrap_or_else(|e| e.into_inner());
        if let Some((t, _)) = map.iter().find(|(_, u)| *u == user) {
            return t.clone();
        }
        let token = format!("{:032x}", rand::random::<u128>());
        map.insert(token.clone(), user.clone());
        token
    }

    pub fn lookup(&self, token: &str) -> Option<UserInfo> {
        self.by_token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

/// kube-apiserver's answer to a credential it does not accept.
pub fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// The user a request's credentials name, before impersonation.
pub fn authenticate(tokens: &Tokens, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(UserInfo::anonymous());
    };
    let auth = auth.to_str().map_err(|_| unauthorized())?;
    let (scheme, token) = auth.trim().split_once(' ').ok_or_else(unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized());
    }
    tokens.lookup(token.trim()).ok_or_else(unauthorized)
}

/// What the impersonation headers ask for, if any; each piece is to be authorized with the
/// `impersonate` verb before [`Impersonation::user`] replaces the requester.
#[derive(Debug, Default)]
pub struct Impersonation {
    pub user: Option<String>,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Impersonation {
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Impersonation>, ApiError> {
        let mut imp = Impersonation::default();
        let mut any = false;
        for (name, value) in headers {
            let n = name.as_str();
            let value = || {
                value.to_str().map(str::to_string).map_err(|_| {
                    ApiError::bad_request(format!("header {n}: the value is not valid text"))
                })
            };
            if n == "impersonate-user" {
                imp.user = Some(value()?);
            } else if n == "impersonate-uid" {
                imp.uid = Some(value()?);
            } else if n == "impersonate-group" {
                imp.groups.push(value()?);
            } else if let Some(key) = n.strip_prefix("impersonate-extra-") {
                // Header names cannot hold '/', so clients percent-encode the key.
                let key = url::form_urlencoded::parse(format!("k={key}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                imp.extra.entry(key).or_default().push(value()?);
            } else {
                continue;
            }
            any = true;
        }
        if !any {
            return Ok(None);
        }
        if imp.user.is_none() {
            // kube-apiserver's wording for groups or extras without a user.
            return Err(ApiError::new(
                500,
                "InternalError",
                "Internal error occurred: requested [Impersonate-Group/Impersonate-Extra] without impersonating a user",
            ));
        }
        Ok(Some(imp))
    }

    /// The identity the request runs as once every piece was allowed, with the implicit
    /// groups kube-apiserver adds.
    pub fn user(&self) -> UserInfo {
        let username = self.user.clone().unwrap_or_default();
        let mut groups = self.groups.clone();
        if let Some((ns, _)) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|s| s.split_once(':'))
            && groups.is_empty()
        {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        if username != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        UserInfo {
            username,
            uid: self.uid.clone().unwrap_or_default(),
            groups,
            extra: self.extra.clone(),
        }
    }
}
