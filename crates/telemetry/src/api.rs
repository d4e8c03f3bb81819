//! `fluo_api_errors_total{verb}`: Kubernetes API requests that failed, counted by wrapping
//! the `kube::Client` ([`ApiMetrics::instrument`]), so every request of every component
//! (reflectors, watchers, patches, evictions, Events, the Lease) is covered.
//!
//! A request counts as failed when it got no answer (connection error, timeout) or an
//! answer that means trouble: any `5xx`, and any `4xx` except those the protocol expects
//! and handles as normal outcomes: `404 Not Found` (an absent object), `409 Conflict` (a
//! stale `resourceVersion` or UID precondition), `410 Gone` (a watch's resourceVersion too
//! old: relist) and `429` on a pod eviction (a PodDisruptionBudget says not now; counted as
//! `fluo_eviction_retries_total` instead). A `429` elsewhere (API priority and fairness) is
//! an error.
//!
//! The verb is Kubernetes' (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
//! `deletecollection`), derived from the method and path as the API server does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, StatusCode, Uri};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

/// The verbs [`verb`] tells apart (each exposed from the start, at 0).
pub const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The `verb` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// A Kubernetes verb.
    pub verb: &'static str,
}

/// API error counts, and when the API server last answered well.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    errors: Family<VerbLabels, Counter>,
    last_ok: Arc<Mutex<Option<Instant>>>,
}

impl ApiMetrics {
    /// Registers `fluo_api_errors_total` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let errors = Family::<VerbLabels, Counter>::default();
        // Known series start at 0, so the first error shows in rate() and increase().
        for verb in VERBS {
            let _ = errors.get_or_create(&VerbLabels { verb });
        }
        registry.register(
            "fluo_api_errors",
            "Kubernetes API requests that failed (no answer, 5xx, or an unexpected 4xx), by verb",
            errors.clone(),
        );
        ApiMetrics {
            errors,
            last_ok: Arc::default(),
        }
    }

    /// Counts one failed request.
    pub fn error(&self, verb: &'static str) {
        self.errors.get_or_create(&VerbLabels { verb }).inc();
    }

    /// Failed requests so far with `verb`.
    pub fn errors(&self, verb: &'static str) -> u64 {
        self.errors.get_or_create(&VerbLabels { verb }).get()
    }

    /// Whether a request was answered well (not counted as an error) within `within`.
    pub fn answered_within(&self, within: Duration) -> bool {
        self.last_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() <= within)
    }

    fn ok(&self) {
        *self.last_ok.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Records the outcome of one request.
    pub fn record(&self, verb: &'static str, eviction: bool, status: Result<StatusCode, ()>) {
        let failed = match status {
            Err(()) => true,
            Ok(s) => is_error(s, eviction),
        };
        if failed {
            self.error(verb);
        } else {
            self.ok();
        }
    }

    /// A client that sends every request through `client` and records its outcome here.
    /// Errors and responses pass through unchanged. Must be called inside a Tokio runtime.
    pub fn instrument(&self, client: kube::Client) -> kube::Client {
        let namespace = client.default_namespace().to_string();
        let this = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let client = client.clone();
            let this = this.clone();
            async move {
                let verb = verb(req.method(), req.uri());
                let eviction = req.uri().path().ends_with("/eviction");
                let res = client.send(req).await;
                this.record(
                    verb,
                    eviction,
                    res.as_ref().map(|r| r.status()).map_err(drop),
                );
                res
            }
        });
        kube::Client::new(service, namespace)
    }
}

/// Whether an answer with `status` is an API error (see the module docs).
pub fn is_error(status: StatusCode, eviction: bool) -> bool {
    match status.as_u16() {
        404 | 409 | 410 => false,
        429 => !eviction,
        s => s >= 400,
    }
}

/// The Kubernetes verb of a request.
pub fn verb(method: &Method, uri: &Uri) -> &'static str {
    let watch = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "watch=true" | "watch=1"))
    });
    let named = names_object(uri.path());
    match *method {
        Method::GET if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// Whether an API path names one object (`.../nodes/n1`, `.../pods/p/eviction`) rather
/// than a collection (`.../nodes`, `.../namespaces/ns/pods`).
fn names_object(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segs.first() {
        Some(&"api") => &segs[segs.len().min(2)..],
        Some(&"apis") => &segs[segs.len().min(3)..],
        _ => return false,
    };
    let rest = if rest.len() >= 3 && rest[0] == "namespaces" {
        &rest[2..]
    } else {
        rest
    };
    rest.len() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        let v = |m: Method, u: &str| verb(&m, &u.parse().unwrap());
        assert_eq!(v(Method::GET, "/api/v1/nodes"), "list");
        assert_eq!(v(Method::GET, "/api/v1/nodes?fieldSelector=x"), "list");
        assert_eq!(
            v(Method::GET, "/api/v1/nodes?watch=true&resourceVersion=1"),
            "watch"
        );
        assert_eq!(v(Method::GET, "/api/v1/nodes/n1"), "get");
        assert_eq!(v(Method::PATCH, "/api/v1/nodes/n1"), "patch");
        assert_eq!(v(Method::GET, "/api/v1/namespaces"), "list");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/default"), "get");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/d/pods"), "list");
        assert_eq!(
            v(Method::POST, "/api/v1/namespaces/d/pods/p/eviction"),
            "create"
        );
        assert_eq!(v(Method::DELETE, "/api/v1/namespaces/d/pods/p"), "delete");
        assert_eq!(
            v(Method::DELETE, "/api/v1/namespaces/d/pods"),
            "deletecollection"
        );
        assert_eq!(
            v(
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lock"
            ),
            "get"
        );
        assert_eq!(
            v(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lock"
            ),
            "update"
        );
        assert_eq!(
            v(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events"
            ),
            "create"
        );
    }

    #[test]
    fn errors() {
        for (s, ev, e) in [
            (200, false, false),
            (201, false, false),
            (404, false, false),
            (409, false, false),
            (410, false, false),
            (429, true, false),
            (429, false, true),
            (403, false, true),
            (422, false, true),
            (500, false, true),
            (504, true, true),
        ] {
            assert_eq!(is_error(StatusCode::from_u16(s).unwrap(), ev), e, "{s}");
        }
    }
}
