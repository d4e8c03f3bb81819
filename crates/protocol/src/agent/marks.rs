//! What the agent asks of its node beyond the reboot itself: who asked for the reboot
//! (update_engine, the reboot sentinel), the `PreferNoSchedule` taint while the node waits
//! for a reboot, and the load-balancer exclusion label during it.

use crate::keys;
use crate::node::{NodeState, NodeView, PREFER_NO_SCHEDULE, Taint};
use crate::patch::NodePatch;
use crate::update_engine::UpdateStatus;

use super::{AgentInput, set_needed};

/// What the agent's flags ask of the node besides the reboot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeOptions {
    /// `--prefer-no-schedule-taint`: taint the node `PreferNoSchedule` while it waits for
    /// or goes through a reboot, so pods evicted elsewhere prefer other nodes.
    pub prefer_no_schedule_taint: bool,
    /// `--exclude-from-load-balancers`: label the node out of external load balancers
    /// from the drain's start until the reboot is done.
    pub exclude_from_load_balancers: bool,
}

/// The `reboot-needed-by` value of update_engine.
pub const BY_UPDATE_ENGINE: &str = "update_engine";
/// The `reboot-needed-by` value of `--reboot-sentinel`.
pub const BY_SENTINEL: &str = "sentinel";

/// The sources in `reboot-needed-by`, in order.
pub fn needed_by(node: &NodeView) -> Vec<&str> {
    node.annotation(keys::REBOOT_NEEDED_BY)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Marks `reboot-needed` (if it is not yet) and adds `source` to `reboot-needed-by`.
fn ask(p: &mut NodePatch, node: &NodeView, source: &str) {
    set_needed(p, true);
    let mut by = needed_by(node);
    if let Some(Some(pending)) = p.annotations.get(keys::REBOOT_NEEDED_BY) {
        by = pending.split(',').collect();
    }
    if !by.contains(&source) {
        by.push(source);
    }
    let value = by.join(",");
    p.set_annotation(keys::REBOOT_NEEDED_BY, value);
}

/// Who asks for a reboot now, marked on the node. A source asks only while no grant is
/// held and no reboot runs: a `reboot-ok` still "true" is the previous cycle's (asking
/// again then would reboot without a new grant).
///
/// The sentinel (`input.sentinel`) is obeyed once per appearance: the boot ID it asked in
/// is recorded (`sentinel-boot-id`). A sentinel still there in a later boot outlived the
/// reboot it asked for (it should live on tmpfs) and is not obeyed again until it has been
/// seen gone (see [`sentinel_outlived_reboot`]), so it can never reboot the node in a loop.
pub(super) fn requests(s: &NodeState, input: &AgentInput) -> NodePatch {
    let node = input.node;
    let mut p = NodePatch::new(&node.name);
    let can_ask = !s.reboot_ok && !s.reboot_in_progress;
    if can_ask && input.host.is_some_and(UpdateStatus::needs_reboot) {
        ask(&mut p, node, BY_UPDATE_ENGINE);
    }
    let recorded = node.annotation(keys::SENTINEL_BOOT_ID);
    match (input.sentinel, recorded) {
        // The flag is off, or the sentinel is gone after the reboot: forget it.
        (None, Some(_)) => {
            p.remove_annotation(keys::SENTINEL_BOOT_ID);
        }
        (Some(false), Some(b)) if b != s.boot_id => {
            p.remove_annotation(keys::SENTINEL_BOOT_ID);
        }
        (Some(true), None) if !s.boot_id.is_empty() => {
            if can_ask {
                ask(&mut p, node, BY_SENTINEL);
                p.set_annotation(keys::SENTINEL_BOOT_ID, s.boot_id.clone());
            } else if s.reboot_in_progress && s.reboot_boot_id.as_deref() == Some(&s.boot_id) {
                // The reboot about to happen satisfies it.
                p.set_annotation(keys::SENTINEL_BOOT_ID, s.boot_id.clone());
            }
        }
        _ => {}
    }
    p
}

/// The sentinel is there in a later boot than the one it asked for a reboot in: it
/// outlived that reboot and is not obeyed. Returns the boot ID it asked in.
pub fn sentinel_outlived_reboot(node: &NodeView, sentinel: Option<bool>) -> Option<&str> {
    let recorded = node.annotation(keys::SENTINEL_BOOT_ID)?;
    (sentinel == Some(true) && !node.boot_id.is_empty() && recorded != node.boot_id)
        .then_some(recorded)
}

/// The node waits for or goes through a reboot (by the raw values, so it can be judged on
/// the node as a patch will leave it).
fn waits_for_reboot(node: &NodeView) -> bool {
    node.annotation(keys::REBOOT_NEEDED) == Some(keys::TRUE)
        || node.annotation(keys::REBOOT_IN_PROGRESS) == Some(keys::TRUE)
}

/// Our `PreferNoSchedule` taint on `projected` (the node as the pending patch leaves it):
/// there while it waits for a reboot and `--prefer-no-schedule-taint` is on, gone
/// otherwise. Every other taint is kept as it is, in its place.
pub(super) fn taint(projected: &NodeView, options: NodeOptions) -> Option<Vec<Taint>> {
    let want = options.prefer_no_schedule_taint && waits_for_reboot(projected);
    let has = projected.taints.iter().any(|t| t.key == keys::REBOOT_TAINT);
    match (want, has) {
        (true, false) => {
            let mut taints = projected.taints.clone();
            taints.push(Taint {
                key: keys::REBOOT_TAINT.into(),
                value: None,
                effect: PREFER_NO_SCHEDULE.into(),
                time_added: None,
            });
            Some(taints)
        }
        (false, true) => Some(
            projected
                .taints
                .iter()
                .filter(|t| t.key != keys::REBOOT_TAINT)
                .cloned()
                .collect(),
        ),
        _ => None,
    }
}

/// At the drain's start: take the node out of external load balancers, unless the label
/// is already there (someone else's: then it is theirs to remove).
pub(super) fn exclude_from_lb(
    s: &NodeState,
    node: &NodeView,
    options: NodeOptions,
) -> Option<NodePatch> {
    if !options.exclude_from_load_balancers
        || s.agent_excluded_from_lb
        || node.label(keys::EXCLUDE_FROM_LB_LABEL).is_some()
    {
        return None;
    }
    let mut p = NodePatch::new(&node.name);
    p.set_label(keys::EXCLUDE_FROM_LB_LABEL, keys::TRUE);
    p.set_annotation(keys::AGENT_EXCLUDED_FROM_LB, keys::TRUE);
    Some(p)
}

/// After the reboot, or when it is called off: remove the exclusion label if we set it.
pub(super) fn include_in_lb(p: &mut NodePatch, node: &NodeView) {
    if node.annotation(keys::AGENT_EXCLUDED_FROM_LB).is_some() {
        if node.annotation(keys::AGENT_EXCLUDED_FROM_LB) == Some(keys::TRUE) {
            p.remove_label(keys::EXCLUDE_FROM_LB_LABEL);
        }
        p.remove_annotation(keys::AGENT_EXCLUDED_FROM_LB);
    }
}
