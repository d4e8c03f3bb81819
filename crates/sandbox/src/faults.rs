//! Seeded, deterministic fault injection for the API server: errors by verb and resource,
//! latency, cut watch streams, whole-API outages, and every open watch ended at once (an
//! API server restart, or with [`crate::store::Store::compact`] an etcd compaction).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct ErrorRule {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`; None = any.
    pub verb: Option<String>,
    /// Plural, optionally with a subresource (`pods/eviction`); None = any.
    pub resource: Option<String>,
    /// Probability in 0..=1.
    pub rate: f64,
    /// 500, 503, 429 or 409.
    pub code: u16,
}

#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    pub errors: Vec<ErrorRule>,
    /// Added to a request with probability `latency_rate`.
    pub latency: Duration,
    pub latency_rate: f64,
    /// A watch stream ends after this many events.
    pub watch_cut_after_events: Option<usize>,
    /// A watch stream ends after this long.
    pub watch_cut_after: Option<Duration>,
    /// Every request fails with 503 until then.
    pub outage_until: Option<Instant>,
    /// One node's agent cut off from the API while the others are not.
    pub partition: Option<Partition>,
}

/// The requests of one node's agent (its token's `authentication.kubernetes.io/node-name`)
/// get no answer until `until`, then a 504 Timeout, as when a client times out across a
/// network partition. Some writes are applied before their answer is lost: the client
/// cannot tell which.
#[derive(Debug, Clone)]
pub struct Partition {
    pub node: String,
    pub until: Instant,
    /// Probability in 0..=1 that a request is carried out although its answer is lost.
    pub applied_rate: f64,
}

/// What was injected so far, for harnesses that must show their faults happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InjectedCounts {
    /// Errors answered, by status code (outage answers not included).
    pub errors: BTreeMap<u16, u64>,
    /// Requests delayed by `latency`.
    pub delayed: u64,
    /// Requests refused during an outage.
    pub outage: u64,
    /// Times every open watch was ended at once ([`Faults::cut_all_watches`]).
    pub all_watches_cut: u64,
    /// Watch streams ended by those cuts.
    pub watches_cut: u64,
    /// Requests of a partitioned agent answered only by a timeout, and how many of those
    /// were carried out all the same.
    pub partitioned: u64,
    pub partitioned_applied: u64,
    /// Requests refused by RBAC (403). Not injected: counted so a harness that revokes a
    /// permission can show that the revocation bit.
    pub forbidden: u64,
}

pub struct Faults {
    plan: Mutex<FaultPlan>,
    rng: Mutex<StdRng>,
    counts: Mutex<InjectedCounts>,
    /// Bumped to end every open watch stream.
    cuts: tokio::sync::watch::Sender<u64>,
}

pub enum Injected {
    None,
    Error(ApiError),
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Faults {
            plan: Mutex::new(FaultPlan::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            counts: Mutex::default(),
            cuts: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Ends every open watch stream now, as an API server restart does. Clients resume from
    /// their last resourceVersion (after a compaction: 410 Gone, and they relist).
    pub fn cut_all_watches(&self) {
        self.cuts.send_modify(|n| *n += 1);
        self.count(|c| c.all_watches_cut += 1);
    }

    /// For a watch stream: changes when [`Faults::cut_all_watches`] is called.
    pub fn watch_cuts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cuts.subscribe()
    }

    pub(crate) fn count_watch_cut(&self) {
        self.count(|c| c.watches_cut += 1);
    }

    pub(crate) fn count_forbidden(&self) {
        self.count(|c| c.forbidden += 1);
    }

    pub fn set(&self, plan: FaultPlan) {
        *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = plan;
    }

    pub fn update(&self, f: impl FnOnce(&mut FaultPlan)) {
        f(&mut self.plan.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn reseed(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = StdRng::seed_from_u64(seed);
    }

    pub fn plan(&self) -> FaultPlan {
        self.plan.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Faults injected since the start.
    pub fn injected(&self) -> InjectedCounts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn count(&self, f: impl FnOnce(&mut InjectedCounts)) {
        f(&mut self.counts.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// For a request of `node`'s agent: None when it is not partitioned; otherwise until when
    /// to hold it and whether to carry it out before answering 504.
    pub fn partitioned(&self, node: &str) -> Option<(Instant, bool)> {
        if node.is_empty() {
            return None;
        }
        let plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let p = plan.partition.as_ref()?;
        if p.node != node || Instant::now() >= p.until {
            return None;
        }
        let applied = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_bool(p.applied_rate.clamp(0.0, 1.0));
        self.count(|c| {
            c.partitioned += 1;
            c.partitioned_applied += u64::from(applied);
        });
        Some((p.until, applied))
    }

    /// Decides, for one request, the latency to add and whether it fails.
    pub fn for_request(&self, verb: &str, resource: &str) -> (Duration, Injected) {
        let plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if plan.outage_until.is_some_and(|t| Instant::now() < t) {
            self.count(|c| c.outage += 1);
            return (
                Duration::ZERO,
                Injected::Error(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "the API server is unavailable (injected outage)",
                )),
            );
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let delay = if plan.latency_rate > 0.0 && rng.random_bool(plan.latency_rate.clamp(0.0, 1.0))
        {
            plan.latency
        } else {
            Duration::ZERO
        };
        if !delay.is_zero() {
            self.count(|c| c.delayed += 1);
        }
        for rule in &plan.errors {
            let verb_ok = rule.verb.as_deref().is_none_or(|v| v == verb);
            let res_ok = rule
                .resource
                .as_deref()
                .is_none_or(|r| r == resource || resource.split('/').next() == Some(r));
            if verb_ok && res_ok && rng.random_bool(rule.rate.clamp(0.0, 1.0)) {
                let err = match rule.code {
                    409 => ApiError::new(
                        409,
                        "Conflict",
                        "Operation cannot be fulfilled: the object has been modified (injected)",
                    ),
                    429 => ApiError::new(429, "TooManyRequests", "too many requests (injected)"),
                    503 => {
                        ApiError::new(503, "ServiceUnavailable", "service unavailable (injected)")
                    }
                    code => ApiError::new(code, "InternalError", "internal error (injected)"),
                };
                self.count(|c| *c.errors.entry(rule.code).or_default() += 1);
                return (delay, Injected::Error(err));
            }
        }
        (delay, Injected::None)
    }
}
