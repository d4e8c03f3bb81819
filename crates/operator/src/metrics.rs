//! The operator's Prometheus metrics (docs/metrics.md), in a registry of its own: no global
//! state, so several replicas can run in one process. [`Metrics`] is cheap to clone; the
//! clone in [`crate::Config::metrics`] is the one `run` fills and serves.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use protocol::phase::Phase;
use telemetry::api::ApiMetrics;

/// The phases counted by `fluo_nodes`: every one but `idle` (a node that needs nothing is in
/// no series), each node in exactly one ([`Phase::of`]).
pub const NODE_PHASES: [Phase; 9] = [
    Phase::NeedsReboot,
    Phase::Paused,
    Phase::WaitingForBeforeHooks,
    Phase::Granted,
    Phase::Draining,
    Phase::Rebooting,
    Phase::WaitingForPods,
    Phase::WaitingForAfterHooks,
    Phase::Stuck,
];

/// The `state` values of `fluo_nodes`: [`NODE_PHASES`]' words.
pub const NODE_STATES: [&str; 9] = {
    let mut words = [""; 9];
    let mut i = 0;
    while i < NODE_PHASES.len() {
        words[i] = NODE_PHASES[i].as_str();
        i += 1;
    }
    words
};

/// The `blocker` values of `fluo_grants_blocked_total` (each exposed from the start, at 0).
pub const BLOCKERS: [&str; 10] = [
    "paused",
    "cluster_paused",
    "alerts",
    "pods",
    "window",
    "not_ready",
    "backoff",
    "interval",
    "capacity",
    "zone_capacity",
];

/// The `reason` values of `fluo_notifications_dropped_total`.
pub const NOTIFICATION_DROP_REASONS: [&str; 2] = ["queue_full", "undeliverable"];

/// Buckets of `fluo_reboot_duration_seconds`: 30 s to 4 h.
pub const REBOOT_DURATION_BUCKETS: [f64; 11] = [
    30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 14400.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlockerLabels {
    blocker: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The operator's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    exposition: telemetry::Exposition,
    pub(crate) api: ApiMetrics,
    nodes: Family<StateLabels, Gauge>,
    grants: Counter,
    reboots_completed: Counter,
    grants_blocked: Family<BlockerLabels, Counter>,
    reboot_duration: Histogram,
    leader: Gauge,
    window_open: Gauge,
    notifications_dropped: Family<ReasonLabels, Counter>,
}

/// Metrics are not configuration: two [`crate::Config`]s that differ only in their
/// metrics handles are equal.
impl PartialEq for Metrics {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Metrics {}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (all node states at 0).
    pub fn new() -> Self {
        let mut r = Registry::default();
        let nodes = Family::<StateLabels, Gauge>::default();
        r.register(
            "fluo_nodes",
            "Managed nodes by reboot state, as the leading operator sees them (0 on a standby)",
            nodes.clone(),
        );
        for state in NODE_STATES {
            let _ = nodes.get_or_create(&StateLabels { state });
        }
        let grants = Counter::default();
        r.register(
            "fluo_grants",
            "Reboots granted (reboot-ok set to true) seen by this operator while leading",
            grants.clone(),
        );
        let reboots_completed = Counter::default();
        r.register(
            "fluo_reboots_completed",
            "Reboots completed: the node came back and its slot was released",
            reboots_completed.clone(),
        );
        let grants_blocked = Family::<BlockerLabels, Counter>::default();
        for blocker in BLOCKERS {
            let _ = grants_blocked.get_or_create(&BlockerLabels { blocker });
        }
        r.register(
            "fluo_grants_blocked",
            "Times a node that needs a reboot was found unable to get a grant, by what blocks it (counted when the blocker changes)",
            grants_blocked.clone(),
        );
        let reboot_duration = Histogram::new(REBOOT_DURATION_BUCKETS);
        r.register_with_unit(
            "fluo_reboot_duration",
            "Time from the grant to the release of the slot after the reboot",
            Unit::Seconds,
            reboot_duration.clone(),
        );
        let leader = Gauge::default();
        r.register(
            "fluo_operator_leader",
            "1 while this replica holds the leader Lease and acts, else 0",
            leader.clone(),
        );
        let window_open = Gauge::default();
        r.register(
            "fluo_reboot_window_open",
            "1 while the reboot window is open (always without a window); set by the leader",
            window_open.clone(),
        );
        let notifications_dropped = Family::<ReasonLabels, Counter>::default();
        for reason in NOTIFICATION_DROP_REASONS {
            let _ = notifications_dropped.get_or_create(&ReasonLabels { reason });
        }
        r.register(
            "fluo_notifications_dropped",
            "--notify-url notifications given up: queue_full (the oldest was dropped) or undeliverable (every attempt failed)",
            notifications_dropped.clone(),
        );
        let api = ApiMetrics::register(&mut r);
        Metrics {
            exposition: telemetry::Exposition::new(r),
            api,
            nodes,
            grants,
            reboots_completed,
            grants_blocked,
            reboot_duration,
            leader,
            window_open,
            notifications_dropped,
        }
    }

    /// `fluo_grants_total`.
    pub fn grants(&self) -> u64 {
        self.grants.get()
    }

    /// `fluo_reboots_completed_total`.
    pub fn reboots_completed(&self) -> u64 {
        self.reboots_completed.get()
    }

    /// `fluo_nodes{state}`.
    pub fn nodes_in(&self, state: &'static str) -> i64 {
        self.nodes.get_or_create(&StateLabels { state }).get()
    }

    /// `fluo_grants_blocked_total{blocker}`.
    pub fn grants_blocked(&self, blocker: &'static str) -> u64 {
        self.grants_blocked
            .get_or_create(&BlockerLabels { blocker })
            .get()
    }

    /// `fluo_operator_leader`.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// `fluo_notifications_dropped_total{reason}`.
    pub fn notifications_dropped(&self, reason: &'static str) -> u64 {
        self.notifications_dropped
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    /// `fluo_api_errors_total{verb}`.
    pub fn api_errors(&self, verb: &'static str) -> u64 {
        self.api.errors(verb)
    }

    /// Sets `fluo_nodes` from the number of nodes per phase (absent: 0; `idle` is not exposed).
    pub(crate) fn set_nodes(&self, counts: &[(Phase, i64)]) {
        for phase in NODE_PHASES {
            let n = counts
                .iter()
                .find(|(p, _)| *p == phase)
                .map_or(0, |(_, n)| *n);
            self.nodes
                .get_or_create(&StateLabels {
                    state: phase.as_str(),
                })
                .set(n);
        }
    }

    pub(crate) fn granted(&self) {
        self.grants.inc();
    }

    pub(crate) fn completed(&self, took: Option<Duration>) {
        self.reboots_completed.inc();
        if let Some(d) = took {
            self.reboot_duration.observe(d.as_secs_f64());
        }
    }

    pub(crate) fn blocked(&self, blocker: &'static str) {
        self.grants_blocked
            .get_or_create(&BlockerLabels { blocker })
            .inc();
    }

    pub(crate) fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub(crate) fn set_window_open(&self, open: bool) {
        self.window_open.set(i64::from(open));
    }

    pub(crate) fn notification_dropped(&self, reason: &'static str) {
        self.notifications_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// When the leader's term ends: node states and the window are the leader's view.
    pub(crate) fn reset_leader_view(&self) {
        self.set_nodes(&[]);
        self.set_window_open(false);
        self.set_leader(false);
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
        m.granted();
        m.completed(Some(Duration::from_secs(90)));
        m.blocked("window");
        m.api.error("patch");
        m.notification_dropped("queue_full");
        let text = m.encode();
        for needle in [
            "fluo_nodes{state=\"stuck\"} 0",
            "fluo_nodes{state=\"needs_reboot\"} 0",
            "fluo_nodes{state=\"waiting_for_before_hooks\"} 0",
            "fluo_nodes{state=\"waiting_for_after_hooks\"} 0",
            "fluo_nodes{state=\"waiting_for_pods\"} 0",
            "fluo_grants_total 1",
            "fluo_reboots_completed_total 1",
            "fluo_grants_blocked_total{blocker=\"window\"} 1",
            "fluo_reboot_duration_seconds_bucket{le=\"120.0\"} 1",
            "fluo_reboot_duration_seconds_count 1",
            "fluo_api_errors_total{verb=\"patch\"} 1",
            "fluo_operator_leader 0",
            "fluo_reboot_window_open 0",
            "fluo_notifications_dropped_total{reason=\"queue_full\"} 1",
            "# TYPE fluo_reboot_duration_seconds histogram",
            "# UNIT fluo_reboot_duration_seconds seconds",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("state=\"idle\""), "{text}");
    }

    #[test]
    fn node_states_are_every_phase_but_idle() {
        let all: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|p| *p != Phase::Idle)
            .collect();
        assert_eq!(NODE_PHASES.to_vec(), all);
        let words: Vec<&str> = all.iter().map(|p| p.as_str()).collect();
        assert_eq!(NODE_STATES.to_vec(), words);
    }
}
