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
use crate::node::{NodeState, NodeView, Parsed, format_time, format_timestamped};
use crate::patch::NodePatch;
use crate::schedule::Schedule;
use crate::selector::LabelSelector;
use crate::window::{RebootWindow, format_go_duration};

/// The flag's name.
pub const MAX_REBOOTING_FLAG: &str = "--max-rebooting-nodes";
/// The per-zone maximum's flag.
pub const MAX_PER_ZONE_FLAG: &str = "--max-rebooting-nodes-per-zone";
/// The label that names a node's zone, unless `--zone-label` says otherwise.
pub const DEFAULT_ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// `--reboot-timeout`'s default.
pub const DEFAULT_REBOOT_TIMEOUT: TimeDelta = TimeDelta::minutes(30);

/// A node whose drain failed is not picked again before this much time has
/// passed since the failure, doubled for every further failure in a row
/// ([`failure_backoff`]); nodes without failures go first.
pub const DRAIN_RETRY_BACKOFF: TimeDelta = TimeDelta::minutes(10);
/// The longest backoff after failures.
pub const MAX_RETRY_BACKOFF: TimeDelta = TimeDelta::hours(6);

/// How long a node waits after its `failures`-th failed drain in a row:
/// 10 min, 20 min, 40 min, ... at most 6 h (0 failures counts as 1).
pub fn failure_backoff(failures: u32) -> TimeDelta {
    let doublings = failures.max(1) - 1;
    if doublings >= 6 {
        return MAX_RETRY_BACKOFF;
    }
    (DRAIN_RETRY_BACKOFF * (1i32 << doublings)).min(MAX_RETRY_BACKOFF)
}

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

/// A bad `--max-rebooting-nodes` (or `--max-rebooting-nodes-per-zone`) value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: invalid value {value:?}: {reason}")]
pub struct MaxRebootingError {
    /// The flag.
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl FromStr for MaxRebooting {
    type Err = MaxRebootingError;
    /// `"2"` or `"25%"`; zero is rejected, and percentages above 100.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MaxRebooting::parse_flag(s, MAX_REBOOTING_FLAG)
    }
}

impl MaxRebooting {
    /// Parses `"2"` or `"25%"` as the value of `flag` (named in errors).
    pub fn parse_flag(s: &str, flag: &'static str) -> Result<Self, MaxRebootingError> {
        let err = |reason| MaxRebootingError {
            flag,
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

/// `--stuck-node-action`: what becomes of the slot of a node stuck past
/// `--reboot-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StuckNodeAction {
    /// It keeps its slot until it comes back and is released (if its Node is deleted, see
    /// [`DepartedSlot`]).
    #[default]
    Hold,
    /// Once it is down or rebooted ([`slot_released`]) its slot no longer
    /// counts against the maximums, so the next node may go: one more node
    /// may be down while the stuck one stays down.
    Release,
}

impl fmt::Display for StuckNodeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StuckNodeAction::Hold => "hold",
            StuckNodeAction::Release => "release",
        })
    }
}

/// The operator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorConfig {
    /// `--max-rebooting-nodes`.
    pub max_rebooting: MaxRebooting,
    /// `--reboot-window-start` / `--reboot-window-length` (FLUO's, UTC).
    pub window: Option<RebootWindow>,
    /// `--before-reboot-annotations`.
    pub before_reboot_annotations: Vec<String>,
    /// `--after-reboot-annotations`.
    pub after_reboot_annotations: Vec<String>,
    /// `--reboot-window` / `--reboot-window-timezone`. With `window` as well
    /// (the command line forbids it) both must be open. Neither = always open.
    pub windows: Option<Schedule>,
    /// `--max-rebooting-nodes-per-zone`, on top of the global maximum.
    pub max_rebooting_per_zone: Option<MaxRebooting>,
    /// `--zone-label`: the node label naming its zone; nodes without it
    /// form one zone of their own.
    pub zone_label: String,
    /// `--node-selector`: only matching nodes are managed (and counted).
    pub node_selector: Option<LabelSelector>,
    /// `--min-reboot-interval`: between two picks, and after a release.
    pub min_reboot_interval: TimeDelta,
    /// `--reboot-timeout`: a granted node not back and released by then is
    /// marked stuck.
    pub reboot_timeout: TimeDelta,
    /// `--stuck-node-action`: whether a stuck node's slot still counts.
    pub stuck_node_action: StuckNodeAction,
}

impl Default for OperatorConfig {
    /// FLUO's behaviour plus our defaults: one node, no window, no hooks,
    /// zones by `topology.kubernetes.io/zone` (no per-zone maximum), every
    /// node, no interval, 30 min reboot timeout.
    fn default() -> Self {
        OperatorConfig {
            max_rebooting: MaxRebooting::default(),
            window: None,
            before_reboot_annotations: Vec::new(),
            after_reboot_annotations: Vec::new(),
            windows: None,
            max_rebooting_per_zone: None,
            zone_label: DEFAULT_ZONE_LABEL.to_string(),
            node_selector: None,
            min_reboot_interval: TimeDelta::zero(),
            reboot_timeout: DEFAULT_REBOOT_TIMEOUT,
            stuck_node_action: StuckNodeAction::Hold,
        }
    }
}

impl OperatorConfig {
    /// Whether any reboot window is configured.
    pub fn has_window(&self) -> bool {
        self.window.is_some() || self.windows.is_some()
    }

    /// Whether new turns may start at `now` as far as windows go.
    pub fn window_open(&self, now: DateTime<Utc>) -> bool {
        self.window.is_none_or(|w| w.contains(now))
            && self.windows.as_ref().is_none_or(|s| s.contains(now))
    }

    /// The end of the open window containing `now`: `None` if closed, or if
    /// no window is configured, or open with no end in sight.
    pub fn window_end(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.window_open(now) {
            return None;
        }
        let a = self.window.and_then(|w| w.current_end(now));
        let b = self.windows.as_ref().and_then(|s| s.current_end(now));
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next instant a window opens or closes.
    pub fn window_next_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let a = self.window.map(|w| w.next_change(now));
        let b = self.windows.as_ref().and_then(|s| s.next_change(now));
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the operator manages this node (`--node-selector`).
    pub fn manages(&self, view: &NodeView) -> bool {
        self.node_selector
            .as_ref()
            .is_none_or(|s| s.matches(&view.labels))
    }

    /// Whether `view` counts against `--max-rebooting-nodes` and the per-zone
    /// maximum: it holds a slot, and `--stuck-node-action=release` has not
    /// given that slot back ([`slot_released`]). A malformed node that holds
    /// a slot always counts.
    pub fn counts_against_max(&self, view: &NodeView) -> bool {
        self.counts_against_max_parsed(view, NodeState::parse(view).ok().as_ref())
    }

    /// [`counts_against_max`](Self::counts_against_max) with the node's state already
    /// parsed: `state` is `NodeState::parse(view).ok()`. A well-formed node's slot is read
    /// from its state (the same answer as the view's, without five lookups of long keys:
    /// this runs for every node in every round).
    pub fn counts_against_max_parsed(&self, view: &NodeView, state: Option<&NodeState>) -> bool {
        match state {
            Some(s) => {
                s.holds_slot()
                    && !(self.stuck_node_action == StuckNodeAction::Release && slot_released(s))
            }
            None => view.holds_slot(),
        }
    }

    /// Whether `view` (parsed as `state`, see
    /// [`counts_against_max_parsed`](Self::counts_against_max_parsed)) counts against the
    /// maximum once `patch` is applied. The view is copied only when the patch can change
    /// that: on a node that holds a slot, or one the patch gives a slot; bookkeeping on the
    /// thousands of nodes that wait is read from the state as it is.
    pub fn counts_against_max_after(
        &self,
        view: &NodeView,
        state: Option<&NodeState>,
        patch: &NodePatch,
    ) -> bool {
        let holds = state.map_or_else(|| view.holds_slot(), NodeState::holds_slot);
        if holds || patch.takes_slot() {
            let mut after = view.clone();
            patch.apply(&mut after);
            self.counts_against_max(&after)
        } else {
            self.counts_against_max_parsed(view, state)
        }
    }

    /// The node's zone (`None`: the zone of nodes without the label).
    pub fn zone_of<'a>(&self, view: &'a NodeView) -> Option<&'a str> {
        view.label(&self.zone_label)
    }

    /// The zone `--max-rebooting-nodes-per-zone` counts the node in: without that flag every
    /// node is in one (a label lookup per node in every round saved; at 5,000 nodes it was a
    /// tenth of the operator's CPU).
    pub fn limit_zone_of<'a>(&self, view: &'a NodeView) -> Option<&'a str> {
        if self.max_rebooting_per_zone.is_some() {
            self.zone_of(view)
        } else {
            None
        }
    }
}

/// Whether `--stuck-node-action=release` gives back the slot of this node:
/// it is marked `stuck-since` and can neither be draining nor start a drain
/// without a new grant:
/// - down mid-reboot: in progress and NotReady, or on a boot ID other than
///   the one its reboot started with (it rebooted; the agent has not said so
///   yet); in progress, Ready and on the same boot (or one the operator
///   cannot tell) it drains;
/// - rebooted: granted with `reboot-needed` cleared, or labelled
///   `after-reboot`, waiting for Ready, its evicted pods or its hooks.
///
/// Granted and not started, its agent may start a drain any moment: never.
/// The node keeps every mark; once released it stays so until its normal
/// release, unless it drains again (back on the boot it started with, the
/// agent resumes the drain), and then counts again.
pub fn slot_released(s: &NodeState) -> bool {
    let new_boot = !s.boot_id.is_empty()
        && s.reboot_boot_id
            .as_deref()
            .is_some_and(|b| !b.is_empty() && b != s.boot_id);
    let down_or_rebooted = if s.reboot_in_progress {
        !s.ready || new_boot
    } else {
        s.reboot_ok && (!s.reboot_needed || s.after_reboot)
    };
    s.stuck_since.is_some() && s.holds_slot() && !s.before_reboot && down_or_rebooted
}

/// What the operator's shell observes besides the Nodes: changes to these
/// come from the Lease, Pods and monitoring, and call for a new decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterInputs {
    /// Cluster-wide pause (`paused` annotation on the operator's Lease): no
    /// new picks or grants, grants not started are withdrawn, reboots in
    /// progress finish.
    pub paused: bool,
    /// Reasons that block every new grant (e.g. firing alerts); empty = none.
    /// Acts like `paused`.
    pub blockers: Vec<String>,
    /// Per node name: why it must not get a grant now (e.g. blocking pods).
    /// Such a node is not picked, loses a `before-reboot` label and a grant
    /// it has not started.
    pub node_blockers: BTreeMap<String, Vec<String>>,
    /// Reboot slots of Nodes deleted while they held one ([`DepartedSlot`]), by node name:
    /// each counts against the maximums while [`decide`] keeps it in
    /// [`Decision::departed`].
    pub departed: BTreeMap<String, DepartedSlot>,
}

/// The reboot slot of a Node deleted while it held one (a cloud controller removing the
/// Node of a machine that is down, an admin's `kubectl delete node`). Its machine may still
/// be draining, going down or booting, and the kubelet registers a fresh Node of the same
/// name without our marks when it is back; so the slot keeps counting against the maximums
/// (in its zone too) until a Node of that name is Ready again or holds a slot itself, or
/// until `--reboot-timeout` after the deletion (a machine removed for good). Without this,
/// the deletion would free the slot at once and the next node could go down beside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DepartedSlot {
    /// When the operator saw the Node deleted.
    #[serde(with = "rfc3339")]
    pub since: DateTime<Utc>,
    /// Its zone (`--zone-label`), None without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::node::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        crate::node::parse_time(&s)
            .ok_or_else(|| D::Error::custom(format!("{s:?} is not an RFC3339 time")))
    }
}

/// The slot `view`'s deletion at `now` leaves behind: Some if the operator manages it and it
/// counts against the maximums (`state`: its parsed state, None if malformed).
pub fn departed_slot(
    view: &NodeView,
    state: Option<&NodeState>,
    cfg: &OperatorConfig,
    now: DateTime<Utc>,
) -> Option<DepartedSlot> {
    (cfg.manages(view) && cfg.counts_against_max_parsed(view, state)).then(|| DepartedSlot {
        since: now,
        zone: cfg.zone_of(view).map(str::to_string),
    })
}

/// Reads the Lease's [`keys::DEPARTED_SLOTS`] annotation (absent: none). An error names the
/// annotation and the fix; the shell then halts new grants, the safe reading.
pub fn parse_departed(value: Option<&str>) -> Result<BTreeMap<String, DepartedSlot>, String> {
    let Some(v) = value else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_str(v).map_err(|e| {
        format!(
            "annotation {} has malformed value {v:?} ({e}); expected {{\"<node>\": {{\"since\": \"<RFC3339 time>\"}}}}: \
             fix it, or remove it once those nodes' machines are back; no new grants until then",
            keys::DEPARTED_SLOTS
        )
    })
}

/// The value of [`keys::DEPARTED_SLOTS`] for `departed` (None: remove the annotation).
pub fn format_departed(departed: &BTreeMap<String, DepartedSlot>) -> Option<String> {
    (!departed.is_empty())
        .then(|| serde_json::to_string(departed).expect("departed slots serialize"))
}

/// The recorded slot holders ([`keys::SLOT_HOLDERS`]): node name -> its zone.
pub type SlotHolders = BTreeMap<String, Option<String>>;

/// Reads the Lease's [`keys::SLOT_HOLDERS`] annotation (absent: none recorded).
pub fn parse_slot_holders(value: Option<&str>) -> Result<SlotHolders, String> {
    let Some(v) = value else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_str(v).map_err(|e| {
        format!(
            "annotation {} has malformed value {v:?} ({e}); expected {{\"<node>\": \"<zone>\" or null}}: \
             fix or remove it; no new grants until then",
            keys::SLOT_HOLDERS
        )
    })
}

/// The value of [`keys::SLOT_HOLDERS`] (None: remove the annotation).
pub fn format_slot_holders(holders: &SlotHolders) -> Option<String> {
    (!holders.is_empty()).then(|| serde_json::to_string(holders).expect("slot holders serialize"))
}

/// The slots a new leader must count for recorded holders gone from the cluster: each
/// recorded holder no Node of that name exists for (`present`) and not already departed
/// was deleted while no leader watched; it departs now.
pub fn unseen_departures(
    recorded: &SlotHolders,
    departed: &BTreeMap<String, DepartedSlot>,
    present: impl Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> BTreeMap<String, DepartedSlot> {
    recorded
        .iter()
        .filter(|(n, _)| !present(n) && !departed.contains_key(*n))
        .map(|(n, zone)| {
            (
                n.clone(),
                DepartedSlot {
                    since: now,
                    zone: zone.clone(),
                },
            )
        })
        .collect()
}

/// Why a [`DepartedSlot`] stopped counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepartedEnd {
    /// A Node of that name is registered again and Ready: the machine is back.
    Back,
    /// A Node of that name holds a slot itself (re-created with its marks): it counts as itself.
    HoldsSlot,
    /// `--reboot-timeout` passed since the deletion.
    TimedOut,
}

impl fmt::Display for DepartedEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DepartedEnd::Back => "a Node of that name is registered again and Ready",
            DepartedEnd::HoldsSlot => "a Node of that name holds a reboot slot itself",
            DepartedEnd::TimedOut => "--reboot-timeout passed since the Node was deleted",
        })
    }
}

impl ClusterInputs {
    fn blocked(&self, node: &str) -> bool {
        self.node_blockers.get(node).is_some_and(|b| !b.is_empty())
    }
}

/// Reads the Lease's `paused` annotation: absent or `"false"` is not paused,
/// `"true"` is; anything else is an error (the shell then pauses, the safe
/// reading, and reports it).
pub fn parse_pause(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some(keys::FALSE) => Ok(false),
        Some(keys::TRUE) => Ok(true),
        Some(v) => Err(format!(
            "annotation {} has malformed value {v:?} (expected \"true\" or \"false\"); treated as paused",
            keys::PAUSED
        )),
    }
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

/// A node that holds a grant but did not come back Ready and get released
/// within `--reboot-timeout` of its grant. It keeps its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckNode {
    /// The node's name.
    pub node: String,
    /// Since when it is marked stuck.
    pub since: DateTime<Utc>,
    /// Why (which phase it is stuck in).
    pub reason: String,
}

/// What [`decide`] wants done.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// At most one non-empty patch per node, sorted by node name.
    pub patches: Vec<NodePatch>,
    /// Nodes left alone because of malformed values.
    pub problems: Vec<NodeProblem>,
    /// When to run `decide` again even if no Node changes (window edges,
    /// grant expiry, the end of a backoff or of `--min-reboot-interval`, a
    /// reboot timeout); always after `now`.
    pub next_check: Option<DateTime<Utc>>,
    /// Nodes stuck past `--reboot-timeout` (each also gets `stuck-since`),
    /// sorted by name.
    pub stuck: Vec<StuckNode>,
    /// Nodes holding a slot that does not count, as the patches leave them
    /// (`--stuck-node-action=release`, [`slot_released`]), sorted by name.
    pub released: Vec<String>,
    /// The input's departed slots that still count (the shell keeps these, and persists them).
    pub departed: BTreeMap<String, DepartedSlot>,
    /// The input's departed slots that no longer count, and why.
    pub departed_ended: Vec<(String, DepartedEnd)>,
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

/// Back, healthy, after-reboot hooks done (or none): release the slot; the
/// cycle succeeded, so the failure count and any stuck mark go.
fn release(p: &mut NodePatch, view: &NodeView, cfg: &OperatorConfig, now: DateTime<Utc>) {
    p.remove_label(keys::AFTER_REBOOT);
    remove_hooks(p, view, &cfg.after_reboot_annotations);
    withdraw(p);
    p.set_annotation(keys::RELEASED_AT, format_time(now))
        .remove_annotation(keys::REBOOT_FAILURES)
        .remove_annotation(keys::STUCK_SINCE);
}

struct Ctx<'a> {
    cfg: &'a OperatorConfig,
    inputs: &'a ClusterInputs,
    now: DateTime<Utc>,
    window_open: bool,
    /// End of the open window (None: no window, or closed, or no end).
    window_end: Option<DateTime<Utc>>,
    /// Paused or globally blocked: no new turns anywhere.
    halted: bool,
}

/// Steps 0-3 of docs/protocol.md ("The operator") for one parsed node: bookkeeping, the hook
/// labels and releases; the reboot timeout (step 4, [`stuck_step`]) and the cluster-wide
/// pick (step 5) come after.
fn node_steps(s: &NodeState, view: &NodeView, c: &Ctx) -> NodePatch {
    let cfg = c.cfg;
    let mut p = NodePatch::default();
    let blocked = c.inputs.blocked(&s.name);
    // A turn may start on this node now (window, pause, blockers).
    let may_start = c.window_open && !c.halted && !blocked;
    // Since when it needs a reboot (longest waiting goes first).
    if s.reboot_needed {
        if s.reboot_needed_since.is_none() {
            p.set_annotation(keys::REBOOT_NEEDED_SINCE, format_time(c.now));
        }
    } else if s.reboot_needed_since.is_some() {
        p.remove_annotation(keys::REBOOT_NEEDED_SINCE);
    }
    // Step 1: the before-reboot label (FLUO's steps 1 and 4).
    if s.before_reboot {
        if !s.rebootable() || !may_start {
            // No longer rebootable, or the window closed / a pause or a
            // blocker came while the hooks ran: drop it; it is picked afresh.
            p.remove_label(keys::BEFORE_REBOOT);
            remove_hooks(&mut p, view, &cfg.before_reboot_annotations);
        } else if hooks_done(view, &cfg.before_reboot_annotations) {
            grant(&mut p, view, cfg, c.now, c.window_end);
        }
    }
    // The health gate: Ready, and the workloads it evicted run Ready again (the agent
    // removes `evicted-pods` then, or after its --pod-recovery-timeout).
    let healthy = s.ready && s.evicted_pods.is_none();
    // Step 2: the after-reboot label whose hooks are done, on a healthy node.
    if s.after_reboot {
        if !s.reboot_in_progress && healthy && hooks_done(view, &cfg.after_reboot_annotations) {
            release(&mut p, view, cfg, c.now);
        }
    } else if s.reboot_ok && !s.reboot_in_progress {
        if s.grant_spoiled() {
            // The drain failed under this grant: withdraw, retry after a
            // backoff that doubles with every failure in a row.
            withdraw(&mut p);
            p.set_annotation(
                keys::REBOOT_FAILURES,
                s.reboot_failures.saturating_add(1).to_string(),
            );
        } else if !s.reboot_needed {
            // Step 3: it came back.
            if cfg.after_reboot_annotations.is_empty() {
                if healthy {
                    release(&mut p, view, cfg, c.now);
                }
            } else {
                remove_hooks(&mut p, view, &cfg.after_reboot_annotations);
                p.set_label(keys::AFTER_REBOOT, keys::TRUE);
            }
        } else if s.reboot_paused || blocked || c.halted {
            // Granted, not started, then paused or blocked: give the slot back.
            withdraw(&mut p);
        } else if s.grant_expires.is_some_and(|e| c.now >= e) {
            withdraw(&mut p);
        } else if cfg.has_window() && !c.window_open {
            // A grant without (or with a later) expiry, e.g. handed over from
            // FLUO, must not start a drain outside the window.
            withdraw(&mut p);
        } else if s.grant_expires.is_none()
            && let Some(end) = c.window_end
        {
            p.set_annotation(keys::GRANT_EXPIRES, format_time(end));
        }
    }
    p
}

/// Why a node past its reboot timeout is not released yet.
fn stuck_reason(s: &NodeState, view: &NodeView, cfg: &OperatorConfig) -> String {
    let phase = if s.reboot_in_progress {
        if s.ready {
            "the reboot has not finished (no new boot ID reported)".to_string()
        } else {
            "the reboot has not finished and the node is not Ready".to_string()
        }
    } else if s.reboot_needed && !s.after_reboot {
        "granted, but the reboot has not started (is the agent running?)".to_string()
    } else if !s.ready {
        "rebooted, but the node is not Ready".to_string()
    } else if let Some(rec) = &s.evicted_pods {
        format!(
            "rebooted; the agent has not seen the evicted pods run Ready again ({}): {}",
            keys::EVICTED_PODS,
            rec.workloads
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else if s.after_reboot {
        let missing: Vec<&str> = cfg
            .after_reboot_annotations
            .iter()
            .filter(|h| view.annotation(h) != Some(keys::TRUE))
            .map(String::as_str)
            .collect();
        format!("after-reboot hooks not done: {}", missing.join(", "))
    } else {
        "not released".to_string()
    };
    format!(
        "not back within --reboot-timeout={}: {phase}",
        format_go_duration(cfg.reboot_timeout)
    )
}

/// The reboot timeout of a node holding a grant (or rebooting): starts the
/// clock (`granted-at`) where it is missing, marks and reports the node once
/// past it, clears the mark once it is no longer stuck.
fn stuck_step(
    s: &NodeState,
    view: &NodeView,
    c: &Ctx,
    wake: &mut Vec<DateTime<Utc>>,
) -> (NodePatch, Option<StuckNode>) {
    let mut p = NodePatch::default();
    if !(s.reboot_ok || s.reboot_in_progress) {
        if s.stuck_since.is_some() {
            p.remove_annotation(keys::STUCK_SINCE);
        }
        return (p, None);
    }
    let Some(granted_at) = s.granted_at else {
        // Handed over from FLUO, or set by hand: the clock starts now.
        p.set_annotation(keys::GRANTED_AT, format_time(c.now));
        wake.push(
            c.now
                .checked_add_signed(c.cfg.reboot_timeout)
                .unwrap_or(c.now),
        );
        return (p, None);
    };
    let deadline = granted_at
        .checked_add_signed(c.cfg.reboot_timeout)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if c.now < deadline {
        if s.stuck_since.is_some() {
            p.remove_annotation(keys::STUCK_SINCE);
        }
        wake.push(deadline);
        return (p, None);
    }
    let reason = stuck_reason(s, view, c.cfg);
    let since = match &s.stuck_since {
        Some(st) if st.reason == reason => st.at,
        Some(st) => {
            p.set_annotation(keys::STUCK_SINCE, format_timestamped(st.at, &reason));
            st.at
        }
        None => {
            p.set_annotation(keys::STUCK_SINCE, format_timestamped(c.now, &reason));
            c.now
        }
    };
    let stuck = StuckNode {
        node: s.name.clone(),
        since,
        reason,
    };
    (p, Some(stuck))
}

fn in_backoff(s: &NodeState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let f = s.drain_failure.as_ref()?;
    let until =
        f.at.checked_add_signed(failure_backoff(s.reboot_failures))?;
    (now < until).then_some(until)
}

/// The merged patches of a round, by the node's position among the managed nodes: the few
/// patched nodes are found without a lookup per node.
type Patches = BTreeMap<usize, NodePatch>;

/// Adds `p` (from [`node_steps`] or [`stuck_step`], which leave its node name empty so that
/// a node with nothing to do costs no allocation) to the merged patch of node `i`, `name`.
fn add_patch(patches: &mut Patches, i: usize, name: &str, p: NodePatch) {
    if !p.is_empty() {
        patches
            .entry(i)
            .or_insert_with(|| NodePatch::new(name))
            .merge(p);
    }
}

/// A node's view or state as a round's patches leave it: the one given until a patch changes
/// it. A changed one is boxed so that the round's per-node vectors stay a pointer per node:
/// with copies inline they were megabytes at 5,000 nodes, which malloc mapped, faulted in and
/// unmapped again in every round (a tenth of the operator's CPU).
enum Working<'a, T> {
    Given(&'a T),
    Changed(Box<T>),
}

impl<T: Clone> Working<'_, T> {
    fn to_mut(&mut self) -> &mut T {
        if let Working::Given(t) = *self {
            *self = Working::Changed(Box::new(t.clone()));
        }
        match self {
            Working::Changed(t) => t,
            Working::Given(_) => unreachable!("just replaced"),
        }
    }
}

impl<T> std::ops::Deref for Working<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Working::Given(t) => t,
            Working::Changed(t) => t,
        }
    }
}

/// Applies `p` to the node's working copy (copying it only then) and returns the node's state
/// afterwards: `s` itself when `p` changes nothing; None if the result does not parse.
fn patched<'a>(
    s: Working<'a, NodeState>,
    p: NodePatch,
    i: usize,
    after: &mut Working<'a, NodeView>,
    patches: &mut Patches,
) -> Option<Working<'a, NodeState>> {
    if p.is_empty() {
        return Some(s);
    }
    p.apply(after.to_mut());
    add_patch(patches, i, &after.name, p);
    NodeState::parse(after)
        .ok()
        .map(|s| Working::Changed(Box::new(s)))
}

/// [`decide_with`] without Lease, Pod or monitoring inputs.
pub fn decide(nodes: &[NodeView], cfg: &OperatorConfig, now: DateTime<Utc>) -> Decision {
    decide_with(nodes, cfg, &ClusterInputs::default(), now)
}

/// The operator's decision (see docs/protocol.md and docs/operator.md).
/// Never panics; never adds slot holders beyond the global maximum or a
/// zone's maximum (counting every managed node that holds a slot, however it
/// got there, but for those `--stuck-node-action=release` gave back: see
/// [`OperatorConfig::counts_against_max`]); never grants or labels
/// `before-reboot` outside the window, while paused or blocked; never patches
/// a node outside `--node-selector`.
///
/// Parses every node; [`decide_parsed`] is the same decision on nodes parsed already.
pub fn decide_with(
    nodes: &[NodeView],
    cfg: &OperatorConfig,
    inputs: &ClusterInputs,
    now: DateTime<Utc>,
) -> Decision {
    let states: Vec<_> = nodes.iter().map(NodeState::parse).collect();
    let parsed: Vec<Parsed<'_>> = nodes
        .iter()
        .zip(&states)
        .map(|(v, s)| Parsed::of(v, s))
        .collect();
    decide_parsed(&parsed, cfg, inputs, now)
}

/// [`decide_with`] on nodes whose states are parsed already (each [`Parsed::state`] must be
/// `NodeState::parse` of its view; property-tested to decide exactly as parsing them here).
///
/// Its cost: a node that needs no operator ([`busy_parsed`] false) and has no stale
/// `reboot-needed-since` gets no patch and is neither copied nor parsed again; only
/// patched nodes are. The protocol still looks at every managed node each round, without
/// allocating per node: `--max-rebooting-nodes` as a percentage and the per-zone
/// maximums count the managed nodes, every slot holder counts, `--min-reboot-interval`
/// runs from the latest `picked-at`/`released-at`/`granted-at` of any node (quiet ones
/// included), and grants, stuck marks and backoffs expire with time, not with events.
pub fn decide_parsed(
    nodes: &[Parsed<'_>],
    cfg: &OperatorConfig,
    inputs: &ClusterInputs,
    now: DateTime<Utc>,
) -> Decision {
    let all = nodes;
    // Borrowed, not cloned: at 5,000 nodes every copy of the views is megabytes per round.
    let nodes: Vec<Parsed<'_>> = nodes
        .iter()
        .copied()
        .filter(|p| cfg.manages(p.view))
        .collect();
    let ctx = Ctx {
        cfg,
        inputs,
        now,
        window_open: cfg.window_open(now),
        window_end: cfg.window_end(now),
        halted: inputs.paused || !inputs.blockers.is_empty(),
    };
    // The nodes as the patches so far leave them; only a patched node is copied.
    let mut after: Vec<Working<'_, NodeView>> =
        nodes.iter().map(|p| Working::Given(p.view)).collect();
    // Their states as the patches leave them (None: malformed, before or after its own
    // steps); only a patched node is parsed again.
    let mut after_states: Vec<Option<Working<'_, NodeState>>> = Vec::with_capacity(nodes.len());
    let mut patches = Patches::new();
    let mut problems = Vec::new();
    let mut stuck = Vec::new();
    let mut wake: Vec<DateTime<Utc>> = Vec::new();

    for (i, node) in nodes.iter().enumerate() {
        let s = match node.state {
            Err(e) => {
                problems.push(NodeProblem {
                    node: node.view.name.clone(),
                    message: e.to_string(),
                });
                after_states.push(None);
                continue;
            }
            Ok(s) => s,
        };
        let p = node_steps(s, node.view, &ctx);
        let Some(s) = patched(Working::Given(s), p, i, &mut after[i], &mut patches) else {
            after_states.push(None);
            continue;
        };
        let (p, st) = stuck_step(&s, &after[i], &ctx, &mut wake);
        stuck.extend(st);
        after_states.push(patched(s, p, i, &mut after[i], &mut patches));
    }
    // The well-formed nodes' states after their own steps (what step 5 picks from).
    let states = || {
        after_states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_deref().map(|s| (i, s)))
    };

    // 5: pick rebootable nodes up to the free capacity, globally and per
    // zone, inside the window, unless paused or blocked, and not sooner than
    // --min-reboot-interval after the last pick or release.
    let max = cfg.max_rebooting.resolve(nodes.len());
    let mut zone_nodes: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    let mut zone_held: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    let mut released = Vec::new();
    for ((node, a), s) in nodes.iter().zip(&after).zip(&after_states) {
        // Zones from the nodes as given: decisions never change labels but ours.
        let z = cfg.limit_zone_of(node.view);
        *zone_nodes.entry(z).or_default() += 1;
        if cfg.counts_against_max_parsed(a, s.as_deref()) {
            *zone_held.entry(z).or_default() += 1;
        } else if s
            .as_deref()
            .map_or_else(|| a.holds_slot(), NodeState::holds_slot)
        {
            released.push(a.name.clone());
        }
    }
    // Slots of deleted Nodes count until their machine is back (see DepartedSlot).
    let mut departed = BTreeMap::new();
    let mut departed_ended = Vec::new();
    for (name, d) in &inputs.departed {
        let deadline = d
            .since
            .checked_add_signed(cfg.reboot_timeout)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        // Any Node of that name, managed or not.
        let present = all.iter().find(|p| p.view.name == *name);
        let end = if now >= deadline {
            Some(DepartedEnd::TimedOut)
        } else {
            present.and_then(|p| match p.state {
                Ok(s) if s.holds_slot() => Some(DepartedEnd::HoldsSlot),
                Err(_) if p.view.holds_slot() => Some(DepartedEnd::HoldsSlot),
                _ if p.view.ready => Some(DepartedEnd::Back),
                _ => None,
            })
        };
        match end {
            Some(end) => departed_ended.push((name.clone(), end)),
            None => {
                wake.push(deadline);
                *zone_held.entry(d.zone.as_deref()).or_default() += 1;
                departed.insert(name.clone(), d.clone());
            }
        }
    }
    let held: usize = zone_held.values().sum();
    let mut free = max.saturating_sub(held);
    let interval = cfg.min_reboot_interval;
    let last_turn = states()
        .flat_map(|(_, s)| [s.picked_at, s.released_at, s.granted_at])
        .flatten()
        .max();
    let interval_until = last_turn
        .filter(|_| interval > TimeDelta::zero())
        .and_then(|t| t.checked_add_signed(interval))
        .filter(|until| now < *until);
    let mut picks = Vec::new();
    if ctx.window_open && !ctx.halted {
        let mut candidates = Vec::new();
        let mut any_candidate = false;
        for (i, s) in states() {
            if !s.rebootable() || s.holds_slot() || !s.ready || inputs.blocked(&s.name) {
                continue;
            }
            if let Some(until) = in_backoff(s, now) {
                wake.push(until);
                continue;
            }
            any_candidate = true;
            // With every slot taken (most rounds of a large rollout) none can be picked:
            // thousands of waiting nodes are not listed and sorted for nothing.
            if free > 0 {
                let since = s.reboot_needed_since.unwrap_or(now);
                candidates.push((s.reboot_failures, since, s.name.as_str(), i));
            }
        }
        if let Some(until) = interval_until {
            if any_candidate {
                wake.push(until);
            }
            candidates.clear();
        }
        let limit = if interval > TimeDelta::zero() {
            1
        } else {
            usize::MAX
        };
        // Without zone limits the first `free` (or one) in order are the picks, so only they
        // are put in order; candidates are distinct (by name), so this is the full sort's
        // prefix.
        let want = free.min(limit);
        if cfg.max_rebooting_per_zone.is_none() && want < candidates.len() {
            candidates.select_nth_unstable(want);
            candidates.truncate(want);
        }
        candidates.sort();
        for (_, _, _, i) in candidates {
            if free == 0 || picks.len() >= limit {
                break;
            }
            let zone = cfg.limit_zone_of(nodes[i].view);
            if let Some(m) = cfg.max_rebooting_per_zone {
                let zone_max = m.resolve(zone_nodes.get(&zone).copied().unwrap_or(0));
                if zone_held.get(&zone).copied().unwrap_or(0) >= zone_max {
                    continue;
                }
            }
            picks.push(i);
            free -= 1;
            *zone_held.entry(zone).or_default() += 1;
        }
    }
    for (_, s) in states() {
        if s.reboot_ok
            && !s.reboot_in_progress
            && let Some(e) = s.grant_expires
        {
            wake.push(e);
        }
    }
    for i in picks {
        let view = &after[i];
        let mut p = NodePatch::default();
        if cfg.before_reboot_annotations.is_empty() {
            grant(&mut p, view, cfg, now, ctx.window_end);
        } else {
            remove_hooks(&mut p, view, &cfg.before_reboot_annotations);
            p.set_label(keys::BEFORE_REBOOT, keys::TRUE);
        }
        p.set_annotation(keys::PICKED_AT, format_time(now));
        add_patch(&mut patches, i, &view.name, p);
    }

    // Minimize each merged patch against the node as it was.
    let mut out = Vec::new();
    for (i, mut p) in patches {
        p.minimize(nodes[i].view);
        if !p.is_empty() {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));

    if let Some(t) = cfg.window_next_change(now) {
        wake.push(t);
    }
    stuck.sort_by(|a, b| a.node.cmp(&b.node));
    released.sort();
    Decision {
        patches: out,
        problems,
        next_check: wake.into_iter().filter(|t| *t > now).min(),
        stuck,
        released,
        departed,
        departed_ended,
    }
}

/// Whether `view` needs an operator to lead: it is [`busy`], or a decision
/// about it alone would change it. A node that does not is never patched by
/// [`decide_with`], whatever the other nodes and inputs (property-tested), so
/// when no node needs one the operator gives up the Lease and stays silent.
pub fn needs_operator(view: &NodeView, cfg: &OperatorConfig, now: DateTime<Utc>) -> bool {
    busy(view, cfg) || {
        let d = decide(std::slice::from_ref(view), cfg, now);
        !d.patches.is_empty() || !d.stuck.is_empty()
    }
}

/// The cheap part of [`needs_operator`]: a managed node that asks for a
/// reboot, holds a slot, carries a record only a leader clears
/// (`stuck-since`, `evicted-pods`), or is malformed (the leader reports it).
/// A decision with no patches, stuck nodes or problems over nodes none of
/// which is busy means no node needs an operator (property-tested), which
/// spares the leader a decision per node.
pub fn busy(view: &NodeView, cfg: &OperatorConfig) -> bool {
    busy_parsed(Parsed::of(view, &NodeState::parse(view)), cfg)
}

/// [`busy`] on a node parsed already.
pub fn busy_parsed(node: Parsed<'_>, cfg: &OperatorConfig) -> bool {
    cfg.manages(node.view)
        && match node.state {
            Err(_) => true,
            Ok(s) => {
                s.reboot_needed
                    || s.holds_slot()
                    || s.evicted_pods.is_some()
                    || s.stuck_since.is_some()
            }
        }
}

#[cfg(test)]
mod tests;
