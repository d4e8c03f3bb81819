//! A record of who did what, so tests can compare what our components actually call with the
//! RBAC rules they ship, and benchmarks can count requests per user.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::api::Req;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditEntry {
    /// The authenticated (or impersonated) username.
    pub user: String,
    /// The `authentication.kubernetes.io/node-name` extra of a projected service-account
    /// token: which node's agent it was, as the agents share their service account.
    pub node: String,
    pub verb: String,
    pub group: String,
    /// Plural, with `/subresource` when there is one.
    pub resource: String,
    pub namespace: String,
    /// A write's `fieldManager` parameter (the writer named in `managedFields` on a real
    /// server); empty when none was given.
    pub field_manager: String,
}

#[derive(Default)]
pub struct Audit {
    /// Each distinct entry with the number of requests it stands for (a watch counts once,
    /// when opened).
    entries: Mutex<BTreeMap<AuditEntry, u64>>,
}

impl Audit {
    pub fn record(
        &self,
        user: &crate::identity::UserInfo,
        verb: &str,
        req: &Req,
        field_manager: &str,
    ) {
        let resource = match &req.sub {
            Some(s) => format!("{}/{s}", req.res.plural),
            None => req.res.plural.to_string(),
        };
        let node = user
            .extra
            .get(crate::identity::NODE_NAME_EXTRA)
            .and_then(|n| n.first())
            .cloned()
            .unwrap_or_default();
        let entry = AuditEntry {
            user: user.username.clone(),
            node,
            verb: verb.to_string(),
            group: req.res.group.to_string(),
            resource,
            namespace: req.ns.clone().unwrap_or_default(),
            field_manager: field_manager.to_string(),
        };
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(entry)
            .and_modify(|n| *n += 1)
            .or_insert(1);
    }

    /// Distinct (user, node, verb, group, resource, namespace, field manager) seen so far.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Distinct entries with how many requests each stands for so far.
    pub fn counts(&self) -> Vec<(AuditEntry, u64)> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(e, n)| (e.clone(), *n))
            .collect()
    }
}
