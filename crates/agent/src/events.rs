//! The Kubernetes Events the agent writes on its Node, all worded here.
//!
//! Users and tests match these reasons and notes (docs/metrics.md lists them), so each is
//! one variant with its wording next to it rather than a format string at the call site.

use std::path::Path;
use std::time::Duration;

use kube::runtime::events::EventType;
use protocol::agent::DrainTimeoutAction;
use telemetry::events::{EventSink, node_ref};

use crate::drain::DrainSummary;

/// One Event the agent reports about its node.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AgentEvent<'a> {
    /// The agent marked the node reboot-needed; `by` names what asked.
    RebootRequested { by: &'a str },
    /// `--reboot-sentinel` is still there after the reboot it asked for.
    SentinelOutlivedReboot {
        path: &'a Path,
        asked_in_boot: &'a str,
    },
    /// After the drain, the node's volumes detached.
    VolumesDetached { took: Duration },
    /// After the drain, volumes were still attached when `--volume-detach-timeout` was up
    /// (or could not be looked at); the reboot goes ahead.
    VolumesNotDetached { timeout: Duration, what: &'a str },
    /// The node is cordoned and the drain begins.
    DrainStarted { grace_period: Duration },
    /// The drain finished (`took` is unknown if it started before this agent did).
    DrainFinished {
        took: Option<Duration>,
        summary: &'a DrainSummary,
    },
    /// The drain failed; `error` is the whole reason.
    DrainFailed {
        error: &'a str,
        action: DrainTimeoutAction,
    },
    /// A running drain was abandoned because the decision changed.
    DrainStopped { why: &'a str },
    /// Drained: logind is asked to reboot.
    Rebooting { boot_id: &'a str },
    /// logind refused, or accepted and the host is still up.
    RebootFailed { error: &'a str },
    /// The cycle ended with the reboot done. `old_boot_id` is the one recorded before it.
    BackFromReboot {
        old_boot_id: Option<&'a str>,
        new_boot_id: &'a str,
    },
    /// The cycle ended without a reboot (the grant went away).
    RebootStopped,
    /// The health gate passed: the evicted workloads run Ready again.
    EvictedPodsReady,
    /// The health gate timed out; `workloads` names what did not recover.
    EvictedPodsNotReady {
        timeout: Duration,
        workloads: &'a str,
    },
}

impl AgentEvent<'_> {
    /// The Event's `reason`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            AgentEvent::RebootRequested { .. } => "RebootRequested",
            AgentEvent::SentinelOutlivedReboot { .. } => "RebootSentinelStale",
            AgentEvent::VolumesDetached { .. } => "VolumesDetached",
            AgentEvent::VolumesNotDetached { .. } => "VolumesNotDetached",
            AgentEvent::DrainStarted { .. } => "DrainStarted",
            AgentEvent::DrainFinished { .. } => "DrainFinished",
            AgentEvent::DrainFailed { .. } => "DrainFailed",
            AgentEvent::DrainStopped { .. } => "DrainStopped",
            AgentEvent::Rebooting { .. } => "Rebooting",
            AgentEvent::RebootFailed { .. } => "RebootFailed",
            AgentEvent::BackFromReboot { .. } => "BackFromReboot",
            AgentEvent::RebootStopped => "RebootStopped",
            AgentEvent::EvictedPodsReady => "EvictedPodsReady",
            AgentEvent::EvictedPodsNotReady { .. } => "EvictedPodsNotReady",
        }
    }

    /// The Event's `action`: the phase of the cycle it belongs to.
    pub(crate) fn action(&self) -> &'static str {
        match self {
            AgentEvent::RebootRequested { .. } | AgentEvent::SentinelOutlivedReboot { .. } => {
                "RebootNeeded"
            }
            AgentEvent::VolumesDetached { .. } | AgentEvent::VolumesNotDetached { .. } => "Drain",
            AgentEvent::DrainStarted { .. }
            | AgentEvent::DrainFinished { .. }
            | AgentEvent::DrainFailed { .. }
            | AgentEvent::DrainStopped { .. } => "Drain",
            AgentEvent::Rebooting { .. }
            | AgentEvent::RebootFailed { .. }
            | AgentEvent::BackFromReboot { .. }
            | AgentEvent::RebootStopped
            | AgentEvent::EvictedPodsReady
            | AgentEvent::EvictedPodsNotReady { .. } => "Reboot",
        }
    }

    /// Warning for what needs a human's look, Normal for progress.
    pub(crate) fn type_(&self) -> EventType {
        match self {
            AgentEvent::DrainFailed { .. }
            | AgentEvent::RebootFailed { .. }
            | AgentEvent::EvictedPodsNotReady { .. }
            | AgentEvent::SentinelOutlivedReboot { .. }
            | AgentEvent::VolumesNotDetached { .. } => EventType::Warning,
            _ => EventType::Normal,
        }
    }

    /// The Event's `note`.
    pub(crate) fn note(&self) -> String {
        match *self {
            AgentEvent::RebootRequested { by } => {
                format!("reboot needed (asked by {by}); waiting for the operator's reboot-ok")
            }
            AgentEvent::SentinelOutlivedReboot {
                path,
                asked_in_boot,
            } => format!(
                "the reboot sentinel {} is still there after the reboot it asked for in boot {asked_in_boot}; not rebooting again until it is removed (it should live on tmpfs)",
                path.display()
            ),
            AgentEvent::VolumesDetached { took } => format!(
                "the node's volumes are detached (waited {}s)",
                took.as_secs()
            ),
            AgentEvent::VolumesNotDetached { timeout, what } => format!(
                "volumes not detached within --volume-detach-timeout {}s, rebooting anyway: {what}",
                timeout.as_secs()
            ),
            AgentEvent::DrainStarted { grace_period } => format!(
                "cordoned; evicting the pods (--grace-period {}s)",
                grace_period.as_secs()
            ),
            AgentEvent::DrainFinished { took, summary } => format!(
                "drained{}: {} pods evicted, {} deleted, {} waited for, {} left alone",
                took.map(|d| format!(" in {}s", d.as_secs()))
                    .unwrap_or_default(),
                summary.evicted.len(),
                summary.deleted.len(),
                summary.waited.len(),
                summary.skipped.len()
            ),
            AgentEvent::DrainFailed { error, action } => {
                format!("{error} (--drain-timeout-action={action})")
            }
            AgentEvent::DrainStopped { why } => format!("drain stopped: {why}"),
            AgentEvent::Rebooting { boot_id } => {
                format!("drained; rebooting through logind (boot ID {boot_id})")
            }
            AgentEvent::RebootFailed { error } => {
                format!("the reboot did not happen: {error}; retrying")
            }
            AgentEvent::BackFromReboot {
                old_boot_id,
                new_boot_id,
            } => {
                let from = old_boot_id
                    .filter(|b| !b.is_empty())
                    .map(|b| format!(" (boot ID {b} -> {new_boot_id})"))
                    .unwrap_or_default();
                format!("back from the reboot{from}; uncordoned if the agent had cordoned it")
            }
            AgentEvent::RebootStopped => "the reboot was called off before it happened (the grant is gone); uncordoned if the agent had cordoned it".into(),
            AgentEvent::EvictedPodsReady => {
                "the workloads evicted by the drain run Ready again; the slot may be released"
                    .into()
            }
            AgentEvent::EvictedPodsNotReady { timeout, workloads } => format!(
                "not Ready again within --pod-recovery-timeout {}s, releasing the slot anyway: {workloads}",
                timeout.as_secs()
            ),
        }
    }

    /// Queues it on `node` (best effort, never waits).
    pub(crate) fn publish(&self, sink: &EventSink, node: &str, uid: Option<String>) {
        sink.publish(
            node_ref(node, uid),
            self.type_(),
            self.reason(),
            self.action(),
            self.note(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(e: AgentEvent<'_>) -> (EventType, &'static str, &'static str, String) {
        (e.type_(), e.reason(), e.action(), e.note())
    }

    /// The exact wording users and docs/metrics.md match.
    #[test]
    fn wording() {
        use EventType::{Normal, Warning};
        let summary = DrainSummary {
            evicted: vec!["a/1".into(), "a/2".into()],
            deleted: vec!["a/3".into()],
            waited: vec![],
            skipped: vec![("kube-system/x".into(), "why")],
            volumes: Default::default(),
        };
        let cases = [
            (
                AgentEvent::RebootRequested {
                    by: "update_engine, sentinel",
                },
                (
                    Normal,
                    "RebootRequested",
                    "RebootNeeded",
                    "reboot needed (asked by update_engine, sentinel); waiting for the operator's reboot-ok",
                ),
            ),
            (
                AgentEvent::SentinelOutlivedReboot {
                    path: Path::new("/host/run/reboot-required"),
                    asked_in_boot: "b1",
                },
                (
                    Warning,
                    "RebootSentinelStale",
                    "RebootNeeded",
                    "the reboot sentinel /host/run/reboot-required is still there after the reboot it asked for in boot b1; not rebooting again until it is removed (it should live on tmpfs)",
                ),
            ),
            (
                AgentEvent::VolumesDetached {
                    took: Duration::from_millis(2_500),
                },
                (
                    Normal,
                    "VolumesDetached",
                    "Drain",
                    "the node's volumes are detached (waited 2s)",
                ),
            ),
            (
                AgentEvent::VolumesNotDetached {
                    timeout: Duration::from_secs(300),
                    what: "attached: csi-1",
                },
                (
                    Warning,
                    "VolumesNotDetached",
                    "Drain",
                    "volumes not detached within --volume-detach-timeout 300s, rebooting anyway: attached: csi-1",
                ),
            ),
            (
                AgentEvent::DrainStarted {
                    grace_period: Duration::from_millis(60_500),
                },
                (
                    Normal,
                    "DrainStarted",
                    "Drain",
                    "cordoned; evicting the pods (--grace-period 60s)",
                ),
            ),
            (
                AgentEvent::DrainFinished {
                    took: Some(Duration::from_millis(1_900)),
                    summary: &summary,
                },
                (
                    Normal,
                    "DrainFinished",
                    "Drain",
                    "drained in 1s: 2 pods evicted, 1 deleted, 0 waited for, 1 left alone",
                ),
            ),
            (
                AgentEvent::DrainFinished {
                    took: None,
                    summary: &DrainSummary::default(),
                },
                (
                    Normal,
                    "DrainFinished",
                    "Drain",
                    "drained: 0 pods evicted, 0 deleted, 0 waited for, 0 left alone",
                ),
            ),
            (
                AgentEvent::DrainFailed {
                    error: "the budget",
                    action: DrainTimeoutAction::Uncordon,
                },
                (
                    Warning,
                    "DrainFailed",
                    "Drain",
                    "the budget (--drain-timeout-action=uncordon)",
                ),
            ),
            (
                AgentEvent::DrainStopped {
                    why: "the node is gone",
                },
                (
                    Normal,
                    "DrainStopped",
                    "Drain",
                    "drain stopped: the node is gone",
                ),
            ),
            (
                AgentEvent::Rebooting { boot_id: "b1" },
                (
                    Normal,
                    "Rebooting",
                    "Reboot",
                    "drained; rebooting through logind (boot ID b1)",
                ),
            ),
            (
                AgentEvent::RebootFailed { error: "denied" },
                (
                    Warning,
                    "RebootFailed",
                    "Reboot",
                    "the reboot did not happen: denied; retrying",
                ),
            ),
            (
                AgentEvent::BackFromReboot {
                    old_boot_id: Some("b1"),
                    new_boot_id: "b2",
                },
                (
                    Normal,
                    "BackFromReboot",
                    "Reboot",
                    "back from the reboot (boot ID b1 -> b2); uncordoned if the agent had cordoned it",
                ),
            ),
            (
                AgentEvent::BackFromReboot {
                    old_boot_id: Some(""),
                    new_boot_id: "b2",
                },
                (
                    Normal,
                    "BackFromReboot",
                    "Reboot",
                    "back from the reboot; uncordoned if the agent had cordoned it",
                ),
            ),
            (
                AgentEvent::RebootStopped,
                (
                    Normal,
                    "RebootStopped",
                    "Reboot",
                    "the reboot was called off before it happened (the grant is gone); uncordoned if the agent had cordoned it",
                ),
            ),
            (
                AgentEvent::EvictedPodsReady,
                (
                    Normal,
                    "EvictedPodsReady",
                    "Reboot",
                    "the workloads evicted by the drain run Ready again; the slot may be released",
                ),
            ),
            (
                AgentEvent::EvictedPodsNotReady {
                    timeout: Duration::from_secs(600),
                    workloads: "default/Deployment/db 1/3 Ready",
                },
                (
                    Warning,
                    "EvictedPodsNotReady",
                    "Reboot",
                    "not Ready again within --pod-recovery-timeout 600s, releasing the slot anyway: default/Deployment/db 1/3 Ready",
                ),
            ),
        ];
        for (event, (type_, reason, action, note)) in cases {
            assert_eq!(
                parts(event),
                (type_, reason, action, note.to_string()),
                "{event:?}"
            );
        }
    }
}
