//! The agent's Prometheus metrics (docs/metrics.md), in a registry of its own: no global
//! state, so one agent per simulated node can run in one process. [`Metrics`] is cheap to
//! clone; the clone in [`crate::AgentConfig::metrics`] is the one `run` fills and serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use telemetry::api::ApiMetrics;

/// Buckets of `fluo_drain_duration_seconds`: 1 s to 1 h.
pub const DRAIN_DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0,
];

/// The `reason` values of `fluo_drain_failures_total` (each exposed from the start, at 0):
/// see [`crate::drain::DrainError::reason`].
pub const DRAIN_FAILURE_REASONS: [&str; 4] =
    ["timeout", "pod_not_gone", "unmanaged_pods", "refused"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The agent's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    exposition: telemetry::Exposition,
    pub(crate) api: ApiMetrics,
    drain_duration: Histogram,
    drain_failures: Family<ReasonLabels, Counter>,
    eviction_retries: Counter,
    synced: Arc<AtomicBool>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let drain_duration = Histogram::new(DRAIN_DURATION_BUCKETS);
        r.register_with_unit(
            "fluo_drain_duration",
            "Time a successful drain took, from cordon to the last pod gone",
            Unit::Seconds,
            drain_duration.clone(),
        );
        let drain_failures = Family::<ReasonLabels, Counter>::default();
        for reason in DRAIN_FAILURE_REASONS {
            let _ = drain_failures.get_or_create(&ReasonLabels { reason });
        }
        r.register(
            "fluo_drain_failures",
            "Drains that failed, by reason: timeout (--grace-period), pod_not_gone, unmanaged_pods (pods without a controller, no --force-drain), refused (the API refused an eviction or deletion)",
            drain_failures.clone(),
        );
        let eviction_retries = Counter::default();
        r.register(
            "fluo_eviction_retries",
            "Pod evictions retried: refused for now by a PodDisruptionBudget (429) or failed transiently",
            eviction_retries.clone(),
        );
        let api = ApiMetrics::register(&mut r);
        Metrics {
            exposition: telemetry::Exposition::new(r),
            api,
            drain_duration,
            drain_failures,
            eviction_retries,
            synced: Arc::default(),
        }
    }

    /// Whether the agent's node watch has synced (`/readyz`).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub(crate) fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Relaxed);
    }

    /// `fluo_drain_failures_total{reason}`.
    pub fn drain_failures(&self, reason: &'static str) -> u64 {
        self.drain_failures
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    /// `fluo_eviction_retries_total`.
    pub fn eviction_retries(&self) -> u64 {
        self.eviction_retries.get()
    }

    /// `fluo_api_errors_total{verb}`.
    pub fn api_errors(&self, verb: &'static str) -> u64 {
        self.api.errors(verb)
    }

    pub(crate) fn drained(&self, took: Duration) {
        self.drain_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn drain_failed(&self, reason: &'static str) {
        self.drain_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn eviction_retried(&self) {
        self.eviction_retries.inc();
    }
}

impl std::ops::Deref for Metrics {
    type Target = telemetry::Exposition;

    fn deref(&self) -> &telemetry::Exposition {
        &self.exposition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_deploy() {
        let m = Metrics::new();
        m.drained(Duration::from_secs(7));
        m.drain_failed("timeout");
        m.eviction_retried();
        m.api.error("create");
        let text = m.encode();
        for needle in [
            "# TYPE fluo_drain_duration_seconds histogram",
            "fluo_drain_duration_seconds_bucket{le=\"10.0\"} 1",
            "fluo_drain_duration_seconds_sum 7.0",
            "fluo_drain_failures_total{reason=\"timeout\"} 1",
            "fluo_eviction_retries_total 1",
            "fluo_api_errors_total{verb=\"create\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
    }
}
