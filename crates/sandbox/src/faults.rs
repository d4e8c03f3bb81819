//! Seeded, deterministic fault injection for the API server: errors by verb and resource,
//! latency, cut watch streams and whole-API outages.

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
}

pub struct Faults {
    plan: Mutex<FaultPlan>,
    rng: Mutex<StdRng>,
    counts: Mutex<InjectedCounts>,
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
        }
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
