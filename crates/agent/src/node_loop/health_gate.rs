//! The shell's side of the post-reboot health gate ([`protocol::evicted`]): while the node
//! carries the record of the pods its drain evicted, the pods of those workloads are listed
//! (at most every `--pod-recovery-poll`) for `next_step`, which removes the record once they
//! run Ready again or `--pod-recovery-timeout` passed.

use std::time::Duration;

use chrono::TimeDelta;
use protocol::evicted::{self, PodRecovery, WorkloadPods};
use protocol::node::NodeState;
use tokio::time::Instant;
use tracing::warn;

use super::Agent;
use crate::events::AgentEvent;
use crate::recovery;

/// The gate as this agent last looked at it.
pub(super) struct HealthGate {
    /// The pods of the workloads the drain evicted, when last listed (after the reboot).
    pods: Option<(Instant, WorkloadPods)>,
    /// List them again (and decide) at this instant.
    pub(super) recheck_at: Option<Instant>,
    /// Where the gate stood at the last decision, for the Event when it passes.
    pub(super) status: PodRecovery,
}

impl Default for HealthGate {
    fn default() -> Self {
        Self {
            pods: None,
            recheck_at: None,
            status: PodRecovery::NotApplicable,
        }
    }
}

impl HealthGate {
    /// The recheck time came: the next decision lists the pods again.
    pub(super) fn recheck_due(&mut self) {
        self.recheck_at = None;
        self.pods = None;
    }
}

impl Agent {
    /// After the reboot, while the node's record of evicted pods is there: their pods now,
    /// listed again at most every `pod_recovery_poll` (`None` if the list failed).
    pub(super) async fn gather_pods(&mut self, state: Option<&NodeState>) -> Option<WorkloadPods> {
        let rec = state
            .filter(|s| !s.reboot_in_progress)
            .and_then(|s| s.evicted_pods.as_ref())
            .filter(|r| r.back.is_some());
        let Some(rec) = rec else {
            self.gate.pods = None;
            self.gate.recheck_at = None;
            return None;
        };
        let poll = self.cfg.pod_recovery_poll;
        if self
            .gate
            .pods
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= poll)
        {
            self.gate.pods = match recovery::look(&self.client, rec).await {
                Ok(p) => Some((Instant::now(), p)),
                Err(e) => {
                    warn!(error = %e, "cannot list the evicted workloads' pods; retrying");
                    None
                }
            };
            // Again after the poll interval, or at the timeout if that comes first.
            let timeout =
                TimeDelta::from_std(self.cfg.pod_recovery_timeout).unwrap_or(TimeDelta::MAX);
            let left = match rec.back.and_then(|b| b.checked_add_signed(timeout)) {
                Some(deadline) => (deadline - self.cfg.clock.now())
                    .to_std()
                    .unwrap_or(Duration::ZERO),
                None => poll,
            };
            self.gate.recheck_at =
                Some(Instant::now() + poll.min(left + Duration::from_millis(10)));
        }
        self.gate.pods.as_ref().map(|(_, p)| p.clone())
    }

    /// The health gate passed (the record of evicted pods was removed after the reboot).
    pub(super) fn report_gate(&self) {
        match &self.gate.status {
            PodRecovery::Recovered => self.event(AgentEvent::EvictedPodsReady),
            PodRecovery::TimedOut { pending } => {
                let what = evicted::describe(pending.iter().map(|(w, c)| (w, *c)));
                warn!(workloads = %what, "evicted pods not Ready again within --pod-recovery-timeout; releasing the slot anyway");
                self.event(AgentEvent::EvictedPodsNotReady {
                    timeout: self.cfg.pod_recovery_timeout,
                    workloads: &what,
                });
            }
            _ => {}
        }
    }
}
