//! A record of who did what, so tests can compare what our components actually call with the
//! RBAC rules they ship.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::api::Req;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditEntry {
    /// The `X-Sandbox-User` header, else the User-Agent.
    pub user: String,
    pub verb: String,
    pub group: String,
    /// Plural, with `/subresource` when there is one.
    pub resource: String,
    pub namespace: String,
}

#[derive(Default)]
pub struct Audit {
    entries: Mutex<BTreeSet<AuditEntry>>,
}

impl Audit {
    pub fn record(&self, user: &str, verb: &str, req: &Req) {
        let resource = match &req.sub {
            Some(s) => format!("{}/{s}", req.res.plural),
            None => req.res.plural.to_string(),
        };
        let entry = AuditEntry {
            user: user.to_string(),
            verb: verb.to_string(),
            group: req.res.group.to_string(),
            resource,
            namespace: req.ns.clone().unwrap_or_default(),
        };
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry);
    }

    /// Distinct (user, verb, group, resource, namespace) seen so far.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
