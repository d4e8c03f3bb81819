//! The decision as it was before nodes were parsed once (commit dbca587): every round
//! parsed every node, and every slot holder again to count it. Kept as the oracle that
//! [`decide_parsed`] decides exactly as this did. Only the driver is kept; the per-node steps
//! are the ones in use (which now leave a patch's node name to the driver).

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::keys;
use crate::node::{NodeState, NodeView, format_time};
use crate::operator::*;
use crate::patch::NodePatch;

/// `OperatorConfig::counts_against_max` as it was: it parsed the node.
pub(super) fn counts_against_max(cfg: &OperatorConfig, view: &NodeView) -> bool {
    view.holds_slot()
        && !(cfg.stuck_node_action == StuckNodeAction::Release
            && NodeState::parse(view).is_ok_and(|s| slot_released(&s)))
}

/// `busy` as it was.
pub(super) fn busy(view: &NodeView, cfg: &OperatorConfig) -> bool {
    cfg.manages(view)
        && match NodeState::parse(view) {
            Err(_) => true,
            Ok(s) => {
                s.reboot_needed
                    || s.holds_slot()
                    || s.evicted_pods.is_some()
                    || s.stuck_since.is_some()
            }
        }
}

fn add_patch(patches: &mut BTreeMap<String, NodePatch>, mut p: NodePatch, name: &str) {
    if !p.is_empty() {
        p.node = name.to_string();
        patches
            .entry(name.to_string())
            .or_insert_with(|| NodePatch::new(name))
            .merge(p);
    }
}

fn patched(
    s: NodeState,
    p: NodePatch,
    after: &mut Cow<'_, NodeView>,
    patches: &mut BTreeMap<String, NodePatch>,
) -> Option<NodeState> {
    if p.is_empty() {
        return Some(s);
    }
    p.apply(after.to_mut());
    add_patch(patches, p, &s.name);
    NodeState::parse(after).ok()
}

pub(super) fn decide_with(
    nodes: &[NodeView],
    cfg: &OperatorConfig,
    inputs: &ClusterInputs,
    now: DateTime<Utc>,
) -> Decision {
    let nodes: Vec<&NodeView> = nodes.iter().filter(|v| cfg.manages(v)).collect();
    let ctx = Ctx {
        cfg,
        inputs,
        now,
        window_open: cfg.window_open(now),
        window_end: cfg.window_end(now),
        halted: inputs.paused || !inputs.blockers.is_empty(),
    };
    let mut after: Vec<Cow<'_, NodeView>> = nodes.iter().map(|v| Cow::Borrowed(*v)).collect();
    let mut patches: BTreeMap<String, NodePatch> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut stuck = Vec::new();
    let mut states: Vec<(usize, NodeState)> = Vec::new();
    let mut wake: Vec<DateTime<Utc>> = Vec::new();

    for (i, view) in nodes.iter().enumerate() {
        match NodeState::parse(view) {
            Err(e) => problems.push(NodeProblem {
                node: view.name.clone(),
                message: e.to_string(),
            }),
            Ok(s) => {
                let p = node_steps(&s, view, &ctx);
                let Some(s) = patched(s, p, &mut after[i], &mut patches) else {
                    continue;
                };
                let (p, st) = stuck_step(&s, &after[i], &ctx, &mut wake);
                stuck.extend(st);
                states.extend(patched(s, p, &mut after[i], &mut patches).map(|s| (i, s)));
            }
        }
    }

    let max = cfg.max_rebooting.resolve(nodes.len());
    let mut zone_nodes: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    let mut zone_held: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    let mut released = Vec::new();
    for (v, a) in nodes.iter().zip(&after) {
        let z = cfg.zone_of(v);
        *zone_nodes.entry(z).or_default() += 1;
        if counts_against_max(cfg, a) {
            *zone_held.entry(z).or_default() += 1;
        } else if a.holds_slot() {
            released.push(a.name.clone());
        }
    }
    let held: usize = zone_held.values().sum();
    let mut free = max.saturating_sub(held);
    let interval = cfg.min_reboot_interval;
    let last_turn = states
        .iter()
        .flat_map(|(_, s)| [s.picked_at, s.released_at, s.granted_at])
        .flatten()
        .max();
    let interval_until = last_turn
        .filter(|_| interval > TimeDelta::zero())
        .and_then(|t| t.checked_add_signed(interval))
        .filter(|until| now < *until);
    if ctx.window_open && !ctx.halted {
        let mut candidates = Vec::new();
        for (i, s) in &states {
            if !s.rebootable() || s.holds_slot() || !s.ready || inputs.blocked(&s.name) {
                continue;
            }
            if let Some(until) = in_backoff(s, now) {
                wake.push(until);
                continue;
            }
            let since = s.reboot_needed_since.unwrap_or(now);
            candidates.push((s.reboot_failures, since, s.name.clone(), *i));
        }
        candidates.sort();
        if let Some(until) = interval_until {
            if !candidates.is_empty() {
                wake.push(until);
            }
            candidates.clear();
        }
        let limit = if interval > TimeDelta::zero() {
            1
        } else {
            usize::MAX
        };
        let mut picked = 0;
        for (_, _, name, i) in candidates {
            if free == 0 || picked >= limit {
                break;
            }
            let zone = cfg.zone_of(nodes[i]);
            if let Some(m) = cfg.max_rebooting_per_zone {
                let zone_max = m.resolve(zone_nodes.get(&zone).copied().unwrap_or(0));
                if zone_held.get(&zone).copied().unwrap_or(0) >= zone_max {
                    continue;
                }
            }
            let view = &after[i];
            let mut p = NodePatch::new(&name);
            if cfg.before_reboot_annotations.is_empty() {
                grant(&mut p, view, cfg, now, ctx.window_end);
            } else {
                remove_hooks(&mut p, view, &cfg.before_reboot_annotations);
                p.set_label(keys::BEFORE_REBOOT, keys::TRUE);
            }
            p.set_annotation(keys::PICKED_AT, format_time(now));
            p.apply(after[i].to_mut());
            add_patch(&mut patches, p, &name);
            free -= 1;
            picked += 1;
            *zone_held.entry(zone).or_default() += 1;
        }
    }

    let mut out = Vec::new();
    for view in &nodes {
        if let Some(mut p) = patches.remove(&view.name) {
            p.minimize(view);
            if !p.is_empty() {
                out.push(p);
            }
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));

    if let Some(t) = cfg.window_next_change(now) {
        wake.push(t);
    }
    for (_, s) in &states {
        if s.reboot_ok
            && !s.reboot_in_progress
            && let Some(e) = s.grant_expires
        {
            wake.push(e);
        }
    }
    stuck.sort_by(|a, b| a.node.cmp(&b.node));
    released.sort();
    Decision {
        patches: out,
        problems,
        next_check: wake.into_iter().filter(|t| *t > now).min(),
        stuck,
        released,
        departed: BTreeMap::new(),
        departed_ended: Vec::new(),
    }
}
