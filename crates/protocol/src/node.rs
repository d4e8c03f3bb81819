//! A Node as the protocol sees it ([`NodeView`], filled by the shells from a
//! k8s Node) and its typed, validated state ([`NodeState`]).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::evicted::EvictedPods;
use crate::keys;

/// The parts of a k8s Node the protocol reads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.unschedulable` (absent = false).
    pub unschedulable: bool,
    /// `status.nodeInfo.bootID` (empty if unknown).
    pub boot_id: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.taints`, as read (written back whole, so others' taints are kept verbatim).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

/// One entry of `spec.taints`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Taint {
    /// `key`.
    pub key: String,
    /// `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `effect`: `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    /// `timeAdded` as the API server wrote it.
    #[serde(rename = "timeAdded", default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<String>,
}

/// The effect of [`keys::REBOOT_TAINT`].
pub const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";

impl NodeView {
    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Whether this node holds one of the operator's reboot slots: labelled
    /// `before-reboot` or `after-reboot`, or annotated `reboot-ok`,
    /// `reboot-in-progress` or `agent-made-unschedulable`. Works on the raw
    /// values and is conservative: any value other than `"false"` (absent
    /// counts as false), even a malformed one, holds a slot. So nodes
    /// annotated by hand, and nodes the operator cannot parse, are counted.
    pub fn holds_slot(&self) -> bool {
        let set = |v: Option<&str>| v.is_some_and(|v| v != keys::FALSE);
        set(self.label(keys::BEFORE_REBOOT))
            || set(self.label(keys::AFTER_REBOOT))
            || set(self.annotation(keys::REBOOT_OK))
            || set(self.annotation(keys::REBOOT_IN_PROGRESS))
            || set(self.annotation(keys::AGENT_MADE_UNSCHEDULABLE))
    }
}

/// Where a malformed value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// In `metadata.annotations`.
    Annotation,
    /// In `metadata.labels`.
    Label,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Annotation => "annotation",
            KeyKind::Label => "label",
        })
    }
}

/// A protocol key on a node has a value the protocol does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node}: {kind} {key} has malformed value {value:?} (expected {expected})")]
pub struct ParseError {
    /// The node's name.
    pub node: String,
    /// Annotation or label.
    pub kind: KeyKind,
    /// The full key.
    pub key: String,
    /// The offending value.
    pub value: String,
    /// What was expected, e.g. `"true" or "false"`.
    pub expected: &'static str,
}

/// A reason and when it was recorded: the agent's last drain failure ([`keys::DRAIN_FAILURE`])
/// and the operator's stuck mark ([`keys::STUCK_SINCE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatedReason {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Why (free text).
    pub reason: String,
}

/// Formats an instant as our annotations store it: RFC3339, UTC, seconds.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC3339 instant.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Longest free text we put in an annotation value.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// `<RFC3339 time> <text>`, the format of [`keys::DRAIN_FAILURE`] and
/// [`keys::REBOOT_ERROR`]. The text is cut to [`MAX_MESSAGE_LEN`] bytes.
pub fn format_timestamped(at: DateTime<Utc>, text: &str) -> String {
    let mut end = text.len().min(MAX_MESSAGE_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} {}", format_time(at), &text[..end])
}

/// The typed state of a node. Only the keys the decisions depend on are
/// validated; the status annotations and hook annotations are free text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The node's name.
    pub name: String,
    /// Annotation `reboot-needed`.
    pub reboot_needed: bool,
    /// Annotation `reboot-in-progress`.
    pub reboot_in_progress: bool,
    /// Annotation `reboot-ok`.
    pub reboot_ok: bool,
    /// Annotation `reboot-paused`.
    pub reboot_paused: bool,
    /// Annotation `agent-made-unschedulable`.
    pub agent_made_unschedulable: bool,
    /// Annotation `agent-excluded-from-load-balancers`.
    pub agent_excluded_from_lb: bool,
    /// Label `before-reboot`.
    pub before_reboot: bool,
    /// Label `after-reboot`.
    pub after_reboot: bool,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Ready condition.
    pub ready: bool,
    /// Current boot ID (may be empty).
    pub boot_id: String,
    /// Annotation `reboot-boot-id` (empty = absent).
    pub reboot_boot_id: Option<String>,
    /// Annotation `granted-at`.
    pub granted_at: Option<DateTime<Utc>>,
    /// Annotation `grant-expires`.
    pub grant_expires: Option<DateTime<Utc>>,
    /// Annotation `drain-failure`.
    pub drain_failure: Option<DatedReason>,
    /// Annotation `reboot-error` (free text).
    pub reboot_error: Option<String>,
    /// Annotation `reboot-needed-since`.
    pub reboot_needed_since: Option<DateTime<Utc>>,
    /// Annotation `reboot-failures` (absent = 0).
    pub reboot_failures: u32,
    /// Annotation `stuck-since` (time and reason).
    pub stuck_since: Option<DatedReason>,
    /// Annotation `picked-at`.
    pub picked_at: Option<DateTime<Utc>>,
    /// Annotation `released-at`.
    pub released_at: Option<DateTime<Utc>>,
    /// Annotation `evicted-pods`: the workloads the drain evicted.
    pub evicted_pods: Option<EvictedPods>,
}

/// A node's view with its state parsed once ([`NodeState::parse`]): what a shell keeps per
/// node so that each Node is parsed once per change, not once per decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedNode {
    /// The view.
    pub view: NodeView,
    /// `NodeState::parse(&view)`.
    pub state: Result<NodeState, ParseError>,
}

impl ParsedNode {
    /// Parses `view`.
    pub fn new(view: NodeView) -> Self {
        let state = NodeState::parse(&view);
        ParsedNode { view, state }
    }

    /// The borrowed pair the decisions take.
    pub fn as_parsed(&self) -> Parsed<'_> {
        Parsed::of(&self.view, &self.state)
    }
}

/// A view and its parsed state, borrowed: what `protocol::operator`'s `*_parsed`
/// functions take. `state` must be `NodeState::parse(view)`.
#[derive(Debug, Clone, Copy)]
pub struct Parsed<'a> {
    /// The view.
    pub view: &'a NodeView,
    /// Its parsed state.
    pub state: Result<&'a NodeState, &'a ParseError>,
}

impl<'a> Parsed<'a> {
    /// Pairs `view` with `state`, which must be `NodeState::parse(view)`.
    pub fn of(view: &'a NodeView, state: &'a Result<NodeState, ParseError>) -> Self {
        Parsed {
            view,
            state: state.as_ref(),
        }
    }

    /// [`NodeView::holds_slot`], read from the parsed state when the node is well-formed
    /// (no lookups of long keys: this runs for every node in every round).
    pub fn holds_slot(&self) -> bool {
        self.state
            .map_or_else(|_| self.view.holds_slot(), NodeState::holds_slot)
    }
}

fn parse_bool(view: &NodeView, kind: KeyKind, key: &'static str) -> Result<bool, ParseError> {
    let v = match kind {
        KeyKind::Annotation => view.annotation(key),
        KeyKind::Label => view.label(key),
    };
    match v {
        None | Some(keys::FALSE) => Ok(false),
        Some(keys::TRUE) => Ok(true),
        Some(other) => Err(ParseError {
            node: view.name.clone(),
            kind,
            key: key.to_string(),
            value: other.to_string(),
            expected: "\"true\" or \"false\"",
        }),
    }
}

fn parse_time_key(view: &NodeView, key: &'static str) -> Result<Option<DateTime<Utc>>, ParseError> {
    match view.annotation(key) {
        None => Ok(None),
        Some(v) => parse_time(v).map(Some).ok_or_else(|| ParseError {
            node: view.name.clone(),
            kind: KeyKind::Annotation,
            key: key.to_string(),
            value: v.to_string(),
            expected: "an RFC3339 time",
        }),
    }
}

impl NodeState {
    /// Validates and types a node's protocol keys. Booleans must be exactly
    /// `"true"` or `"false"` (absent = false); anything else is an error
    /// naming the key and value, never taken as true. `granted-at` and
    /// `grant-expires` must be RFC3339; `drain-failure` must start with an
    /// RFC3339 time; so must `stuck-since`. `reboot-needed-since`,
    /// `picked-at` and `released-at` must be RFC3339, `reboot-failures` a
    /// decimal count, `evicted-pods` the agent's JSON record.
    pub fn parse(view: &NodeView) -> Result<NodeState, ParseError> {
        use KeyKind::{Annotation as A, Label as L};
        let timestamped = |key: &'static str| match view.annotation(key) {
            None => Ok(None),
            Some(v) => {
                let (t, reason) = v.split_once(' ').unwrap_or((v, ""));
                match parse_time(t) {
                    Some(at) => Ok(Some(DatedReason {
                        at,
                        reason: reason.to_string(),
                    })),
                    None => Err(ParseError {
                        node: view.name.clone(),
                        kind: A,
                        key: key.to_string(),
                        value: v.to_string(),
                        expected: "\"<RFC3339 time> <reason>\"",
                    }),
                }
            }
        };
        let drain_failure = timestamped(keys::DRAIN_FAILURE)?;
        let stuck_since = timestamped(keys::STUCK_SINCE)?;
        let reboot_failures = match view.annotation(keys::REBOOT_FAILURES) {
            None => 0,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|_| !v.starts_with('+'))
                .ok_or_else(|| ParseError {
                    node: view.name.clone(),
                    kind: A,
                    key: keys::REBOOT_FAILURES.to_string(),
                    value: v.to_string(),
                    expected: "a decimal count",
                })?,
        };
        let evicted_pods = match view.annotation(keys::EVICTED_PODS) {
            None => None,
            Some(v) => Some(EvictedPods::parse(v).map_err(|_| ParseError {
                node: view.name.clone(),
                kind: A,
                key: keys::EVICTED_PODS.to_string(),
                value: v.to_string(),
                expected: "the agent's JSON record {\"workloads\":[...]}; remove the annotation to skip waiting for the evicted pods",
            })?),
        };
        Ok(NodeState {
            name: view.name.clone(),
            reboot_needed: parse_bool(view, A, keys::REBOOT_NEEDED)?,
            reboot_in_progress: parse_bool(view, A, keys::REBOOT_IN_PROGRESS)?,
            reboot_ok: parse_bool(view, A, keys::REBOOT_OK)?,
            reboot_paused: parse_bool(view, A, keys::REBOOT_PAUSED)?,
            agent_made_unschedulable: parse_bool(view, A, keys::AGENT_MADE_UNSCHEDULABLE)?,
            agent_excluded_from_lb: parse_bool(view, A, keys::AGENT_EXCLUDED_FROM_LB)?,
            before_reboot: parse_bool(view, L, keys::BEFORE_REBOOT)?,
            after_reboot: parse_bool(view, L, keys::AFTER_REBOOT)?,
            unschedulable: view.unschedulable,
            ready: view.ready,
            boot_id: view.boot_id.clone(),
            reboot_boot_id: view
                .annotation(keys::REBOOT_BOOT_ID)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            granted_at: parse_time_key(view, keys::GRANTED_AT)?,
            grant_expires: parse_time_key(view, keys::GRANT_EXPIRES)?,
            drain_failure,
            reboot_error: view.annotation(keys::REBOOT_ERROR).map(str::to_string),
            reboot_needed_since: parse_time_key(view, keys::REBOOT_NEEDED_SINCE)?,
            reboot_failures,
            stuck_since,
            picked_at: parse_time_key(view, keys::PICKED_AT)?,
            released_at: parse_time_key(view, keys::RELEASED_AT)?,
            evicted_pods,
        })
    }

    /// Holds an operator slot (see [`NodeView::holds_slot`]; for a parsed
    /// node both agree).
    pub fn holds_slot(&self) -> bool {
        self.before_reboot
            || self.after_reboot
            || self.reboot_ok
            || self.reboot_in_progress
            || self.agent_made_unschedulable
    }

    /// FLUO's "rebootable": wants a reboot, not paused, not granted, not
    /// already rebooting.
    pub fn rebootable(&self) -> bool {
        self.reboot_needed && !self.reboot_paused && !self.reboot_ok && !self.reboot_in_progress
    }

    /// Granted (`reboot-ok=true`) but the drain failed since (a
    /// `drain-failure` at or after `granted-at`, or any `drain-failure` if
    /// `granted-at` is missing): the grant is spent and must be withdrawn.
    pub fn grant_spoiled(&self) -> bool {
        match (&self.drain_failure, self.granted_at) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(f), Some(g)) => f.at >= g,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The parsed node's slot is the view's, well-formed or not.
        #[test]
        fn a_parsed_node_holds_the_views_slot(
            v in crate::testutil::any_node("n".into(), crate::testutil::t0()),
        ) {
            let p = ParsedNode::new(v.clone());
            prop_assert_eq!(p.as_parsed().holds_slot(), v.holds_slot());
        }
    }

    fn view(anns: &[(&str, &str)], labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: "n1".into(),
            annotations: anns
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            unschedulable: false,
            taints: vec![],
            boot_id: "b1".into(),
            ready: true,
        }
    }

    #[test]
    fn absent_is_false() {
        let s = NodeState::parse(&view(&[], &[])).unwrap();
        assert!(!s.reboot_needed && !s.reboot_ok && !s.reboot_in_progress && !s.reboot_paused);
        assert!(!s.before_reboot && !s.after_reboot && !s.agent_made_unschedulable);
        assert!(!s.holds_slot());
        assert_eq!(s.boot_id, "b1");
        assert_eq!(s.reboot_boot_id, None);
    }

    #[test]
    fn booleans() {
        let s = NodeState::parse(&view(
            &[
                (keys::REBOOT_NEEDED, "true"),
                (keys::REBOOT_OK, "false"),
                (keys::REBOOT_IN_PROGRESS, "true"),
                (keys::REBOOT_PAUSED, "true"),
                (keys::AGENT_MADE_UNSCHEDULABLE, "true"),
                (keys::REBOOT_BOOT_ID, "b0"),
            ],
            &[(keys::BEFORE_REBOOT, "true"), (keys::AFTER_REBOOT, "false")],
        ))
        .unwrap();
        assert!(s.reboot_needed && !s.reboot_ok && s.reboot_in_progress && s.reboot_paused);
        assert!(s.agent_made_unschedulable && s.before_reboot && !s.after_reboot);
        assert_eq!(s.reboot_boot_id.as_deref(), Some("b0"));
    }

    #[test]
    fn malformed_boolean_is_an_error_naming_key_and_value() {
        for bad in ["yes", "True", "TRUE", "1", "", " true"] {
            let e = NodeState::parse(&view(&[(keys::REBOOT_OK, bad)], &[])).unwrap_err();
            assert_eq!(e.key, keys::REBOOT_OK);
            assert_eq!(e.value, bad);
            assert_eq!(e.kind, KeyKind::Annotation);
            let msg = e.to_string();
            assert!(
                msg.contains(keys::REBOOT_OK) && msg.contains(&format!("{bad:?}")),
                "{msg}"
            );
            assert!(msg.contains("n1"));
        }
        let e = NodeState::parse(&view(&[], &[(keys::AFTER_REBOOT, "yes")])).unwrap_err();
        assert_eq!(e.kind, KeyKind::Label);
        assert!(e.to_string().contains("label"));
        // ... but a malformed node still holds a slot, conservatively
        assert!(view(&[(keys::REBOOT_OK, "yes")], &[]).holds_slot());
        assert!(view(&[(keys::REBOOT_IN_PROGRESS, "")], &[]).holds_slot());
        assert!(!view(&[(keys::REBOOT_OK, "false")], &[]).holds_slot());
        assert!(!view(&[(keys::REBOOT_NEEDED, "true")], &[]).holds_slot());
    }

    #[test]
    fn times_and_drain_failure() {
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
        assert_eq!(format_time(t), "2024-05-01T10:00:00Z");
        assert_eq!(parse_time("2024-05-01T12:00:00+02:00"), Some(t));
        let s = NodeState::parse(&view(
            &[
                (keys::GRANTED_AT, "2024-05-01T10:00:00Z"),
                (keys::GRANT_EXPIRES, "2024-05-01T11:00:00Z"),
                (
                    keys::DRAIN_FAILURE,
                    "2024-05-01T10:00:00Z pod x: PDB says no",
                ),
            ],
            &[],
        ))
        .unwrap();
        assert_eq!(s.granted_at, Some(t));
        assert_eq!(s.grant_expires, Some(t + chrono::TimeDelta::hours(1)));
        let f = s.drain_failure.as_ref().unwrap();
        assert_eq!((f.at, f.reason.as_str()), (t, "pod x: PDB says no"));
        assert!(s.grant_spoiled()); // same second: the failure belongs to this grant
        for (k, v) in [
            (keys::GRANTED_AT, "yesterday"),
            (keys::GRANT_EXPIRES, "1714557600"),
            (keys::DRAIN_FAILURE, "drain failed"),
            (keys::EVICTED_PODS, "web"),
        ] {
            let e = NodeState::parse(&view(&[(k, v)], &[])).unwrap_err();
            assert_eq!((e.key.as_str(), e.value.as_str()), (k, v));
        }
        assert_eq!(format_timestamped(t, "boom"), "2024-05-01T10:00:00Z boom");
        let long = "é".repeat(MAX_MESSAGE_LEN);
        assert!(format_timestamped(t, &long).len() <= MAX_MESSAGE_LEN + 21);
    }

    #[test]
    fn grant_spoiled() {
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
        let mut s = NodeState::parse(&view(&[], &[])).unwrap();
        assert!(!s.grant_spoiled());
        s.drain_failure = Some(DatedReason {
            at: t,
            reason: String::new(),
        });
        assert!(s.grant_spoiled()); // no granted-at: spoiled
        s.granted_at = Some(t + chrono::TimeDelta::seconds(1));
        assert!(!s.grant_spoiled()); // granted after the failure
        s.granted_at = Some(t - chrono::TimeDelta::seconds(1));
        assert!(s.grant_spoiled());
    }
}
