//! The update-operator's decision: from all managed Nodes, the config and
//! the time, the patches to write.
//!
//! [`decide`] is FLUO's operator loop as one pure function, run on every Node
//! change and again at [`Decision::next_check`]. Every node is handled on
//! its own: a node with a malformed protocol value gets a [`NodeProblem`]
//! and no patch, and never stops the others.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

use crate::keys;
use crate::node::{NodeState, NodeView, format_time};
use crate::patch::NodePatch;
use crate::window::RebootWindow;

/// The flag's name.
pub const MAX_REBOOTING_FLAG: &str = "--max-rebooting-nodes";

/// A node whose drain failed is not picked again before this much time has
/// passed since the failure (and nodes without failures go first).
pub const DRAIN_RETRY_BACKOFF: TimeDelta = TimeDelta::minutes(10);

/// How many nodes may hold a reboot slot at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxRebooting {
    /// At most this many nodes (>= 1).
    Count(u32),
    /// At most this percentage (1-100) of the managed nodes, rounded down but
    /// at least 1.
    Percent(u32),
}

impl Default for MaxRebooting {
    /// FLUO's fixed concurrency: one node.
    fn default() -> Self {
        MaxRebooting::Count(1)
    }
}

/// A bad `--max-rebooting-nodes` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--max-rebooting-nodes: invalid value {value:?}: {reason}")]
pub struct MaxRebootingError {
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl FromStr for MaxRebooting {
    type Err = MaxRebootingError;
    /// `"2"` or `"25%"`; zero is rejected, and percentages above 100.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| MaxRebootingError {
            value: s.to_string(),
            reason,
        };
        let t = s.trim();
        let (digits, percent) = match t.strip_suffix('%') {
            Some(d) => (d, true),
            None => (t, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                "expected a node count like \"2\" or a percentage like \"25%\"",
            ));
        }
        let n: u32 = digits.parse().map_err(|_| err("number too large"))?;
        if n == 0 {
            return Err(err("must be at least 1"));
        }
        if percent {
            if n > 100 {
                return Err(err("a percentage must be at most 100%"));
            }
            Ok(MaxRebooting::Percent(n))
        } else {
            Ok(MaxRebooting::Count(n))
        }
    }
}

impl fmt::Display for MaxRebooting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxRebooting::Count(n) => write!(f, "{n}"),
            MaxRebooting::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl MaxRebooting {
    /// The maximum for this many managed nodes.
    pub fn resolve(&self, managed_nodes: usize) -> usize {
        match *self {
            MaxRebooting::Count(n) => n as usize,
            MaxRebooting::Percent(p) => (managed_nodes.saturating_mul(p as usize) / 100).max(1),
        }
    }
}

/// The operator's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorConfig {
    /// `--max-rebooting-nodes`.
    pub max_rebooting: MaxRebooting,
    /// `--reboot-window-start` / `--reboot-window-length`; `None` = always open.
    pub window: Option<RebootWindow>,
    /// `--before-reboot-annotations`.
    pub before_reboot_annotations: Vec<String>,
    /// `--after-reboot-annotations`.
    pub after_reboot_annotations: Vec<String>,
}

/// Splits a comma-separated hook annotation flag value (FLUO's format):
/// items trimmed, empty items dropped.
pub fn parse_annotation_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// A node the operator cannot act on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProblem {
    /// The node's name.
    pub node: String,
    /// A message for logs and Events (names the key and value).
    pub message: String,
}

/// What [`decide`] wants done.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// At most one non-empty patch per node, sorted by node name.
    pub patches: Vec<NodePatch>,
    /// Nodes left alone because of malformed values.
    pub problems: Vec<NodeProblem>,
    /// When to run `decide` again even if no Node changes (window edges,
    /// grant expiry, the end of a drain-failure backoff); always after `now`.
    pub next_check: Option<DateTime<Utc>>,
}

fn hooks_done(view: &NodeView, hooks: &[String]) -> bool {
    hooks.iter().all(|h| view.annotation(h) == Some(keys::TRUE))
}

fn remove_hooks(p: &mut NodePatch, view: &NodeView, hooks: &[String]) {
    for h in hooks {
        if view.annotations.contains_key(h) {
            p.remove_annotation(h);
        }
    }
}

/// `reboot-ok=false` and the grant's bookkeeping removed.
fn withdraw(p: &mut NodePatch) {
    p.set_annotation(keys::REBOOT_OK, keys::FALSE)
        .remove_annotation(keys::GRANTED_AT)
        .remove_annotation(keys::GRANT_EXPIRES);
}

/// `reboot-ok=true` now, until the end of the current window (if any).
fn grant(
    p: &mut NodePatch,
    view: &NodeView,
    cfg: &OperatorConfig,
    now: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
) {
    p.remove_label(keys::BEFORE_REBOOT);
    remove_hooks(p, view, &cfg.before_reboot_annotations);
    p.set_annotation(keys::REBOOT_OK, keys::TRUE);
    p.set_annotation(keys::GRANTED_AT, format_time(now));
    match end {
        Some(end) => p.set_annotation(keys::GRANT_EXPIRES, format_time(end)),
        None => p.remove_annotation(keys::GRANT_EXPIRES),
    };
}

/// After-reboot hooks done (or none): release the slot.
fn release(p: &mut NodePatch, view: &NodeView, cfg: &OperatorConfig) {
    p.remove_label(keys::AFTER_REBOOT);
    remove_hooks(p, view, &cfg.after_reboot_annotations);
    withdraw(p);
}

struct Ctx<'a> {
    cfg: &'a OperatorConfig,
    now: DateTime<Utc>,
    window_open: bool,
    /// End of the open window (None: no window, or closed).
    window_end: Option<DateTime<Utc>>,
}

/// FLUO's steps 1-4 plus our grant upkeep, for one parsed node.
fn node_steps(s: &NodeState, view: &NodeView, c: &Ctx) -> NodePatch {
    let cfg = c.cfg;
    let mut p = NodePatch::new(&s.name);
    // 1 + 4: before-reboot label.
    if s.before_reboot {
        if !s.rebootable() || !c.window_open {
            // No longer rebootable, or the window closed while the hooks
            // ran: drop it; it is picked afresh in a later window.
            p.remove_label(keys::BEFORE_REBOOT);
            remove_hooks(&mut p, view, &cfg.before_reboot_annotations);
        } else if hooks_done(view, &cfg.before_reboot_annotations) {
            grant(&mut p, view, cfg, c.now, c.window_end);
        }
    }
    // 2: after-reboot label whose hooks are done.
    if s.after_reboot {
        if !s.reboot_in_progress && hooks_done(view, &cfg.after_reboot_annotations) {
            release(&mut p, view, cfg);
        }
    } else if s.reboot_ok && !s.reboot_in_progress {
        if s.grant_spoiled() {
            // The drain failed under this grant: withdraw, retry later.
            withdraw(&mut p);
        } else if !s.reboot_needed {
            // 3: it came back.
            if cfg.after_reboot_annotations.is_empty() {
                release(&mut p, view, cfg);
            } else {
                remove_hooks(&mut p, view, &cfg.after_reboot_annotations);
                p.set_label(keys::AFTER_REBOOT, keys::TRUE);
            }
        } else if s.reboot_paused {
            // Granted, not started, then paused: give the slot back.
            withdraw(&mut p);
        } else if s.grant_expires.is_some_and(|e| c.now >= e) {
            withdraw(&mut p);
        } else if cfg.window.is_some() && !c.window_open {
            // A grant without (or with a later) expiry, e.g. handed over from
            // FLUO, must not start a drain outside the window.
            withdraw(&mut p);
        } else if s.grant_expires.is_none()
            && let Some(end) = c.window_end
        {
            p.set_annotation(keys::GRANT_EXPIRES, format_time(end));
        }
    }
    p.minimize(view);
    p
}

fn in_backoff(s: &NodeState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let f = s.drain_failure.as_ref()?;
    let until = f.at.checked_add_signed(DRAIN_RETRY_BACKOFF)?;
    (now < until).then_some(until)
}

/// The operator's decision (see docs/protocol.md). Never panics; never adds
/// slot holders beyond the maximum (counting every node that holds a slot,
/// however it got there); never grants or labels `before-reboot` outside the
/// window.
pub fn decide(nodes: &[NodeView], cfg: &OperatorConfig, now: DateTime<Utc>) -> Decision {
    let ctx = Ctx {
        cfg,
        now,
        window_open: cfg.window.is_none_or(|w| w.contains(now)),
        window_end: cfg.window.and_then(|w| w.current_end(now)),
    };
    let mut after: Vec<NodeView> = nodes.to_vec();
    let mut patches: BTreeMap<String, NodePatch> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut well_formed = Vec::new();

    for (i, view) in nodes.iter().enumerate() {
        match NodeState::parse(view) {
            Err(e) => problems.push(NodeProblem {
                node: view.name.clone(),
                message: e.to_string(),
            }),
            Ok(s) => {
                let p = node_steps(&s, view, &ctx);
                p.apply(&mut after[i]);
                if !p.is_empty() {
                    patches
                        .entry(view.name.clone())
                        .or_insert_with(|| NodePatch::new(&view.name))
                        .merge(p);
                }
                well_formed.push(i);
            }
        }
    }

    // 5: pick rebootable nodes up to the free capacity, inside the window.
    let max = cfg.max_rebooting.resolve(nodes.len());
    let held = after.iter().filter(|v| v.holds_slot()).count();
    let free = max.saturating_sub(held);
    let mut wake: Vec<DateTime<Utc>> = Vec::new();
    if ctx.window_open {
        let mut candidates = Vec::new();
        for &i in &well_formed {
            let Ok(s) = NodeState::parse(&after[i]) else {
                continue;
            };
            if !s.rebootable() || s.holds_slot() || !s.ready {
                continue;
            }
            if let Some(until) = in_backoff(&s, now) {
                wake.push(until);
                continue;
            }
            candidates.push((s.drain_failure.as_ref().map(|f| f.at), s.name.clone(), i));
        }
        candidates.sort();
        for (_, name, i) in candidates.into_iter().take(free) {
            let view = &after[i];
            let mut p = NodePatch::new(&name);
            if cfg.before_reboot_annotations.is_empty() {
                grant(&mut p, view, cfg, now, ctx.window_end);
            } else {
                remove_hooks(&mut p, view, &cfg.before_reboot_annotations);
                p.set_label(keys::BEFORE_REBOOT, keys::TRUE);
            }
            p.apply(&mut after[i]);
            patches
                .entry(name.clone())
                .or_insert_with(|| NodePatch::new(&name))
                .merge(p);
        }
    }

    // Minimize each merged patch against the node as it was.
    let mut out = Vec::new();
    for view in nodes {
        if let Some(mut p) = patches.remove(&view.name) {
            p.minimize(view);
            if !p.is_empty() {
                out.push(p);
            }
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));

    if let Some(w) = cfg.window {
        wake.push(w.next_change(now));
    }
    for &i in &well_formed {
        if let Ok(s) = NodeState::parse(&after[i])
            && s.reboot_ok
            && !s.reboot_in_progress
            && let Some(e) = s.grant_expires
        {
            wake.push(e);
        }
    }
    Decision {
        patches: out,
        problems,
        next_check: wake.into_iter().filter(|t| *t > now).min(),
    }
}

#[cfg(test)]
mod tests;
