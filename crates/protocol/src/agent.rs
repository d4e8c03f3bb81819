//! The update-agent's decisions: what to do next on this node.
//!
//! The shell calls [`next_step`] whenever its Node or update_engine's status
//! changes (and after each patch it wrote), and does what it says:
//! [`AgentStep::Patch`] -> write it and evaluate again; [`AgentStep::Drain`]
//! -> run the drain, then evaluate again with `drained = true` (or call
//! [`drain_failed`]); [`AgentStep::Reboot`] -> call logind (on error write
//! [`reboot_failed`] and retry with backoff); [`AgentStep::Wait`] -> nothing
//! until the Node or the host status changes.
//!
//! If a drain is running and `next_step` returns anything but `Drain` (for
//! example the grant was withdrawn by hand), the shell should cancel the
//! drain and follow the new step.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

use crate::evicted::{self, EvictedPods, PodRecovery, WorkloadPods};
use crate::hostinfo::{HostInfo, sanitize_label_value};
use crate::keys;
use crate::node::{NodeState, NodeView, format_time, format_timestamped};
use crate::patch::NodePatch;
use crate::update_engine::UpdateStatus;

mod marks;

pub use marks::{BY_SENTINEL, BY_UPDATE_ENGINE, NodeOptions, needed_by, sentinel_outlived_reboot};

/// The flag's name.
pub const DRAIN_TIMEOUT_ACTION_FLAG: &str = "--drain-timeout-action";

/// What to do when a drain fails or times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrainTimeoutAction {
    /// Do not reboot an undrained node: uncordon what we cordoned, stop the
    /// reboot, record why; the operator withdraws the grant and retries later.
    #[default]
    Uncordon,
    /// FLUO's behaviour: reboot anyway.
    Reboot,
}

/// A bad `--drain-timeout-action` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--drain-timeout-action: invalid value {0:?}: expected \"uncordon\" or \"reboot\"")]
pub struct DrainTimeoutActionError(pub String);

impl FromStr for DrainTimeoutAction {
    type Err = DrainTimeoutActionError;
    /// `uncordon` or `reboot`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uncordon" => Ok(DrainTimeoutAction::Uncordon),
            "reboot" => Ok(DrainTimeoutAction::Reboot),
            _ => Err(DrainTimeoutActionError(s.to_string())),
        }
    }
}

impl fmt::Display for DrainTimeoutAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DrainTimeoutAction::Uncordon => "uncordon",
            DrainTimeoutAction::Reboot => "reboot",
        })
    }
}

/// Everything the agent decides on.
#[derive(Debug, Clone, Copy)]
pub struct AgentInput<'a> {
    /// This agent's Node.
    pub node: &'a NodeView,
    /// update_engine's status; `None` until `GetStatus` answered.
    pub host: Option<&'a UpdateStatus>,
    /// The labels' values.
    pub info: &'a HostInfo,
    /// Shell memory: a drain finished since this process started.
    pub drained: bool,
    /// The current time.
    pub now: DateTime<Utc>,
    /// The pods now of the workloads recorded in `evicted-pods`, by controller UID
    /// (`None`: not looked at). Only read after the reboot, while the record is there.
    pub pods: Option<&'a WorkloadPods>,
    /// `--pod-recovery-timeout`: how long after the reboot to wait for them.
    pub pod_recovery_timeout: TimeDelta,
    /// The taint and load-balancer flags.
    pub options: NodeOptions,
    /// `--reboot-sentinel`: `None` when not set, otherwise whether the file exists.
    pub sentinel: Option<bool>,
}

/// What the agent does next.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentStep {
    /// Write this patch, then evaluate again.
    Patch(NodePatch),
    /// The node is cordoned and the reboot in progress: run the drain now.
    Drain,
    /// Drained (or allowed to skip it): ask logind to reboot.
    Reboot,
    /// Nothing to do until the node or host changes; the reason.
    Wait(String),
}

/// The safety guard for rebooting: `reboot-ok=true`, `reboot-in-progress=true`,
/// the recorded `reboot-boot-id` equal to the node's current (non-empty) boot
/// ID, and `drained`. Malformed annotations: false. [`next_step`] returns
/// [`AgentStep::Reboot`] only when this holds; shells may call it again on a
/// fresh view right before calling logind.
pub fn may_reboot(node: &NodeView, drained: bool) -> bool {
    let Ok(s) = NodeState::parse(node) else {
        return false;
    };
    drained
        && s.reboot_ok
        && s.reboot_in_progress
        && !s.boot_id.is_empty()
        && s.reboot_boot_id.as_deref() == Some(s.boot_id.as_str())
}

/// The agent's next step (see the module docs and docs/protocol.md).
pub fn next_step(input: &AgentInput) -> AgentStep {
    let node = input.node;
    let mut pending = host_facts(input);
    let state = match NodeState::parse(node) {
        Ok(s) => s,
        Err(e) => {
            pending.minimize(node);
            if !pending.is_empty() {
                return AgentStep::Patch(pending);
            }
            return AgentStep::Wait(format!("not acting on this node: {e}"));
        }
    };
    pending.merge(bookkeeping(&state, input));
    let step = transition(&state, input);
    let with_taint = |mut pending: NodePatch| {
        let mut projected = node.clone();
        pending.apply(&mut projected);
        if let Some(t) = marks::taint(&projected, input.options) {
            pending.set_taints(t);
        }
        pending
    };
    match step {
        AgentStep::Patch(t) => {
            pending.merge(t);
            let mut pending = with_taint(pending);
            pending.minimize(node);
            if pending.is_empty() {
                // Cannot happen (every transition changes something); never loop.
                AgentStep::Wait("nothing to change".into())
            } else {
                AgentStep::Patch(pending)
            }
        }
        other => {
            let mut pending = with_taint(pending);
            pending.minimize(node);
            if pending.is_empty() {
                if other == AgentStep::Reboot {
                    debug_assert!(may_reboot(node, input.drained));
                }
                other
            } else {
                AgentStep::Patch(pending)
            }
        }
    }
}

/// Labels from HostInfo and the status annotations from update_engine.
fn host_facts(input: &AgentInput) -> NodePatch {
    let node = input.node;
    let mut p = NodePatch::new(&node.name);
    for (key, want) in [
        (keys::LABEL_ID, &input.info.id),
        (keys::LABEL_GROUP, &input.info.group),
        (keys::LABEL_VERSION, &input.info.version),
    ] {
        // HostInfo::from_files already sanitizes; a hand-built HostInfo is
        // sanitized here too, so the API server never rejects the patch.
        match want.as_deref().and_then(sanitize_label_value) {
            Some(v) => p.set_label(key, v),
            None => p.remove_label(key),
        };
    }
    if let Some(h) = input.host {
        let values = h.annotation_values();
        if values
            .iter()
            .any(|(k, v)| node.annotation(k) != Some(v.as_str()))
        {
            for (k, v) in values {
                p.set_annotation(k, v);
            }
        }
    }
    p
}

/// Explicit defaults, the reboot-needed label, stale keys, and who asks for a reboot
/// (update_engine's NEED_REBOOT, the sentinel) -> reboot-needed.
fn bookkeeping(s: &NodeState, input: &AgentInput) -> NodePatch {
    let node = input.node;
    let mut p = NodePatch::new(&node.name);
    // FLUO always has these two; write explicit "false" when absent.
    for k in [keys::REBOOT_NEEDED, keys::REBOOT_IN_PROGRESS] {
        if node.annotation(k).is_none() {
            p.set_annotation(k, keys::FALSE);
        }
    }
    p.set_label(keys::REBOOT_NEEDED, bool_str(s.reboot_needed));
    if !s.reboot_in_progress && node.annotation(keys::REBOOT_BOOT_ID).is_some() {
        p.remove_annotation(keys::REBOOT_BOOT_ID);
    }
    // A record without `back` on a node not in progress belongs to a drain that did not
    // end in a reboot: no slot waits for it.
    if !s.reboot_in_progress && s.evicted_pods.as_ref().is_some_and(|r| r.back.is_none()) {
        p.remove_annotation(keys::EVICTED_PODS);
    }
    if !s.reboot_needed && node.annotation(keys::REBOOT_NEEDED_BY).is_some() {
        p.remove_annotation(keys::REBOOT_NEEDED_BY);
    }
    // Our load-balancer exclusion left from a cycle that ended without us (restart).
    if !s.reboot_in_progress {
        marks::include_in_lb(&mut p, node);
    }
    p.merge(marks::requests(s, input));
    p
}

fn bool_str(b: bool) -> &'static str {
    if b { keys::TRUE } else { keys::FALSE }
}

fn set_needed(p: &mut NodePatch, v: bool) {
    p.set_annotation(keys::REBOOT_NEEDED, bool_str(v));
    p.set_label(keys::REBOOT_NEEDED, bool_str(v));
}

/// Undo our cordon, if it is ours.
fn uncordon_if_ours(p: &mut NodePatch, agent_made: bool) {
    if agent_made {
        p.set_unschedulable(false);
        p.set_annotation(keys::AGENT_MADE_UNSCHEDULABLE, keys::FALSE);
    }
}

/// The node rebooted (or, handed over by FLUO, is taken as rebooted). The record of
/// evicted pods gets `back`: the pod-recovery timeout counts from now.
fn rebooted_patch(s: &NodeState, node: &NodeView, now: DateTime<Utc>) -> NodePatch {
    let mut p = NodePatch::new(&s.name);
    if let Some(rec) = s.evicted_pods.as_ref().filter(|r| r.back.is_none()) {
        let mut rec = rec.clone();
        rec.back = Some(now);
        p.set_annotation(keys::EVICTED_PODS, rec.to_value());
    }
    uncordon_if_ours(&mut p, s.agent_made_unschedulable);
    marks::include_in_lb(&mut p, node);
    p.set_annotation(keys::REBOOT_IN_PROGRESS, keys::FALSE);
    set_needed(&mut p, false);
    p.remove_annotation(keys::REBOOT_NEEDED_BY)
        .remove_annotation(keys::REBOOT_BOOT_ID)
        .remove_annotation(keys::REBOOT_ERROR)
        .remove_annotation(keys::DRAIN_FAILURE);
    p
}

/// Stop a reboot that has not happened: not in progress, our cordon undone, the record
/// of evicted pods dropped (no slot waits for them without a reboot).
fn stop_patch(node: &NodeView, agent_made: bool) -> NodePatch {
    let mut p = NodePatch::new(&node.name);
    uncordon_if_ours(&mut p, agent_made);
    marks::include_in_lb(&mut p, node);
    p.set_annotation(keys::REBOOT_IN_PROGRESS, keys::FALSE);
    p.remove_annotation(keys::REBOOT_BOOT_ID);
    if node.annotation(keys::EVICTED_PODS).is_some() {
        p.remove_annotation(keys::EVICTED_PODS);
    }
    p
}

fn transition(s: &NodeState, input: &AgentInput) -> AgentStep {
    use AgentStep::*;
    let no_boot_id = || Wait("the node reports no boot ID (status.nodeInfo.bootID)".into());
    if s.reboot_in_progress {
        let recorded = match &s.reboot_boot_id {
            Some(b) => b,
            None => {
                // Handed over mid-reboot (by FLUO, which records no boot ID) or
                // set by hand. update_engine tells: still waiting for a reboot
                // -> not rebooted, resume; otherwise take it as rebooted
                // (never reboot twice).
                let Some(h) = input.host else {
                    return Wait(
                        "reboot in progress without a recorded boot ID: waiting for \
                         update_engine's status to tell whether the node rebooted"
                            .into(),
                    );
                };
                if !h.needs_reboot() {
                    return Patch(rebooted_patch(s, input.node, input.now));
                }
                if s.boot_id.is_empty() {
                    return no_boot_id();
                }
                let mut p = NodePatch::new(&s.name);
                p.set_annotation(keys::REBOOT_BOOT_ID, s.boot_id.clone());
                return Patch(p);
            }
        };
        if s.boot_id.is_empty() {
            return no_boot_id();
        }
        if *recorded != s.boot_id {
            return Patch(rebooted_patch(s, input.node, input.now));
        }
        // Not rebooted yet.
        if !s.reboot_ok {
            // The grant was withdrawn before the reboot (only a person does
            // that; the operator never withdraws from a node in progress):
            // stop, undo our cordon, keep reboot-needed so it is picked again.
            return Patch(stop_patch(input.node, s.agent_made_unschedulable));
        }
        if !s.unschedulable {
            // Re-cordon after a restart, or someone uncordoned mid-drain.
            // If it was never ours, it becomes ours now that we cordon it.
            let mut p = NodePatch::new(&s.name);
            p.set_unschedulable(true);
            p.set_annotation(keys::AGENT_MADE_UNSCHEDULABLE, keys::TRUE);
            return Patch(p);
        }
        if !input.drained {
            if let Some(p) = marks::exclude_from_lb(s, input.node, input.options) {
                return Patch(p);
            }
            return Drain;
        }
        return Reboot;
    }

    // Not in progress.
    if s.agent_made_unschedulable {
        // Our cordon from a finished or abandoned cycle (e.g. FLUO's agent
        // keeps it until reboot-ok is withdrawn): undo it.
        let mut p = NodePatch::new(&s.name);
        uncordon_if_ours(&mut p, true);
        return Patch(p);
    }
    // The health gate: the slot stays held (and no new reboot starts) until the evicted
    // workloads run Ready again or the timeout passed.
    match evicted::evaluate(
        s.evicted_pods.as_ref(),
        input.pods,
        input.pod_recovery_timeout,
        input.now,
    ) {
        PodRecovery::NotApplicable => {}
        PodRecovery::Recovered | PodRecovery::TimedOut { .. } => {
            let mut p = NodePatch::new(&s.name);
            p.remove_annotation(keys::EVICTED_PODS);
            return Patch(p);
        }
        PodRecovery::Unknown { .. } => {
            return Wait("rebooted: looking whether the evicted pods run Ready again".into());
        }
        PodRecovery::Waiting { pending, deadline } => {
            return Wait(format!(
                "rebooted: waiting until the evicted pods run Ready again (at the latest until {}): {}",
                format_time(deadline),
                evicted::describe(pending.iter().map(|(w, c)| (w, Some(*c))))
            ));
        }
    }
    if !s.reboot_ok {
        return Wait(if s.reboot_needed {
            "reboot needed: waiting for the operator's reboot-ok".into()
        } else {
            "no reboot needed".into()
        });
    }
    if !s.reboot_needed {
        return Wait("rebooted: waiting for the operator to withdraw reboot-ok".into());
    }
    if s.after_reboot {
        return Wait(
            "waiting for the after-reboot hooks and the operator to withdraw reboot-ok".into(),
        );
    }
    if s.reboot_paused {
        return Wait("reboot-paused is set: not starting a reboot".into());
    }
    if s.grant_spoiled() {
        let at = s
            .drain_failure
            .as_ref()
            .map(|f| format_time(f.at))
            .unwrap_or_default();
        return Wait(format!(
            "the drain failed at {at}: waiting for the operator to withdraw this grant"
        ));
    }
    if let Some(exp) = s.grant_expires
        && input.now >= exp
    {
        return Wait(format!(
            "the grant expired at {}: waiting for the operator to withdraw or renew it",
            format_time(exp)
        ));
    }
    if s.boot_id.is_empty() {
        return no_boot_id();
    }
    let mut p = NodePatch::new(&s.name);
    p.set_annotation(keys::REBOOT_IN_PROGRESS, keys::TRUE);
    p.set_annotation(keys::REBOOT_BOOT_ID, s.boot_id.clone());
    if !s.unschedulable {
        p.set_annotation(keys::AGENT_MADE_UNSCHEDULABLE, keys::TRUE);
        p.set_unschedulable(true);
    }
    Patch(p)
}

/// The drain failed or timed out. `Uncordon`: a patch that stops the reboot
/// (`reboot-in-progress=false`, uncordon only if `agent-made-unschedulable=true`,
/// `reboot-boot-id` removed) and records `drain-failure`; the operator then
/// withdraws the grant and retries later. `Reboot`: [`AgentStep::Reboot`] if
/// the grant still holds (see [`may_reboot`] with `drained = true`),
/// otherwise a `Wait`.
pub fn drain_failed(
    node: &NodeView,
    reason: &str,
    action: DrainTimeoutAction,
    now: DateTime<Utc>,
) -> AgentStep {
    match action {
        DrainTimeoutAction::Reboot => {
            if may_reboot(node, true) {
                AgentStep::Reboot
            } else {
                AgentStep::Wait(format!(
                    "drain failed ({reason}) and the reboot is no longer allowed"
                ))
            }
        }
        DrainTimeoutAction::Uncordon => {
            let agent_made = node.annotation(keys::AGENT_MADE_UNSCHEDULABLE) == Some(keys::TRUE);
            let mut p = stop_patch(node, agent_made);
            p.set_annotation(keys::DRAIN_FAILURE, format_timestamped(now, reason));
            AgentStep::Patch(p)
        }
    }
}

/// Before the drain's first eviction: record the workloads it will evict
/// ([`keys::EVICTED_PODS`]), merged with a record already there from an earlier drain of
/// the same reboot (the agent restarted mid-drain). `None` when there is nothing new to
/// write, or the node is not rebooting (no drain should run then).
pub fn record_evictions(node: &NodeView, plan: &EvictedPods) -> Option<NodePatch> {
    let s = NodeState::parse(node).ok()?;
    if !s.reboot_in_progress {
        return None;
    }
    let rec = match &s.evicted_pods {
        Some(old) => old.merge(plan),
        None if plan.workloads.is_empty() && plan.omitted == 0 => return None,
        None => plan.clone(),
    };
    if s.evicted_pods.as_ref() == Some(&rec) {
        return None;
    }
    let mut p = NodePatch::new(&node.name);
    p.set_annotation(keys::EVICTED_PODS, rec.to_value());
    Some(p)
}

/// logind's Reboot failed: record it (`reboot-error`); the shell retries with
/// backoff.
pub fn reboot_failed(node: &NodeView, error: &str, now: DateTime<Utc>) -> NodePatch {
    let mut p = NodePatch::new(&node.name);
    p.set_annotation(keys::REBOOT_ERROR, format_timestamped(now, error));
    p
}

#[cfg(test)]
mod tests;
