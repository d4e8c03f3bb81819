//! Who a request comes from, as kube-apiserver's authenticators hand it to authorization and
//! admission (`user.Info`: name, uid, groups, extra).

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// E.g. `authentication.kubernetes.io/node-name` for a projected service-account token.
    pub extra: BTreeMap<String, Vec<String>>,
}
