//! Changes to one Node, as a JSON merge patch.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::keys;
use crate::node::{NodeView, Taint};

/// Changes to one Node's annotations, labels, `spec.unschedulable` and `spec.taints`.
/// A `None` value removes the key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodePatch {
    /// The Node's name.
    pub node: String,
    /// Annotation key -> new value (`None` = remove).
    pub annotations: BTreeMap<String, Option<String>>,
    /// Label key -> new value (`None` = remove).
    pub labels: BTreeMap<String, Option<String>>,
    /// New `spec.unschedulable`, if it changes.
    pub unschedulable: Option<bool>,
    /// The whole new `spec.taints`, if it changes (a merge patch replaces lists whole,
    /// so only write it with the resourceVersion it was computed from).
    pub taints: Option<Vec<Taint>>,
}

impl NodePatch {
    /// An empty patch for `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            ..Default::default()
        }
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.annotations.is_empty()
            && self.labels.is_empty()
            && self.unschedulable.is_none()
            && self.taints.is_none()
    }

    /// Sets annotation `key` to `value`.
    pub fn set_annotation(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.annotations.insert(key.to_string(), Some(value.into()));
        self
    }

    /// Removes annotation `key`.
    pub fn remove_annotation(&mut self, key: &str) -> &mut Self {
        self.annotations.insert(key.to_string(), None);
        self
    }

    /// Sets label `key` to `value`.
    pub fn set_label(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.labels.insert(key.to_string(), Some(value.into()));
        self
    }

    /// Removes label `key`.
    pub fn remove_label(&mut self, key: &str) -> &mut Self {
        self.labels.insert(key.to_string(), None);
        self
    }

    /// Sets `spec.unschedulable`.
    pub fn set_unschedulable(&mut self, v: bool) -> &mut Self {
        self.unschedulable = Some(v);
        self
    }

    /// Sets the whole `spec.taints`.
    pub fn set_taints(&mut self, taints: Vec<Taint>) -> &mut Self {
        self.taints = Some(taints);
        self
    }

    /// Adds `other`'s changes; where both touch a key, `other` wins.
    pub fn merge(&mut self, other: NodePatch) {
        self.annotations.extend(other.annotations);
        self.labels.extend(other.labels);
        if other.unschedulable.is_some() {
            self.unschedulable = other.unschedulable;
        }
        if other.taints.is_some() {
            self.taints = other.taints;
        }
    }

    /// Drops the changes that `view` already has (setting a value it already
    /// has, removing a key it does not have, cordoning a cordoned node).
    pub fn minimize(&mut self, view: &NodeView) {
        self.annotations
            .retain(|k, v| view.annotations.get(k) != v.as_ref());
        self.labels.retain(|k, v| view.labels.get(k) != v.as_ref());
        if self.unschedulable == Some(view.unschedulable) {
            self.unschedulable = None;
        }
        if self.taints.as_ref() == Some(&view.taints) {
            self.taints = None;
        }
    }

    /// The JSON merge patch body (RFC 7386) for the Node:
    /// `{"metadata":{"annotations":{..},"labels":{..}},"spec":{"unschedulable":..}}`,
    /// with `null` for removals. Empty sections are left out; an empty patch
    /// is `{}`.
    pub fn merge_patch(&self) -> Value {
        fn section(m: &BTreeMap<String, Option<String>>) -> Value {
            Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_ref().map_or(Value::Null, |s| Value::String(s.clone())),
                        )
                    })
                    .collect(),
            )
        }
        let mut root = Map::new();
        let mut meta = Map::new();
        if !self.annotations.is_empty() {
            meta.insert("annotations".into(), section(&self.annotations));
        }
        if !self.labels.is_empty() {
            meta.insert("labels".into(), section(&self.labels));
        }
        if !meta.is_empty() {
            root.insert("metadata".into(), Value::Object(meta));
        }
        let mut spec = Map::new();
        if let Some(u) = self.unschedulable {
            spec.insert("unschedulable".into(), json!(u));
        }
        if let Some(t) = &self.taints {
            // An empty list is removed, as the API server would store it.
            let list = if t.is_empty() { Value::Null } else { json!(t) };
            spec.insert("taints".into(), list);
        }
        if !spec.is_empty() {
            root.insert("spec".into(), Value::Object(spec));
        }
        Value::Object(root)
    }

    /// [`merge_patch`](Self::merge_patch) carrying `resource_version` as a precondition:
    /// the API server refuses it with 409 Conflict if the Node changed since.
    pub fn merge_patch_at(&self, resource_version: Option<&str>) -> Value {
        let mut body = self.merge_patch();
        if let Some(rv) = resource_version {
            body["metadata"]["resourceVersion"] = json!(rv);
        }
        body
    }

    /// Whether a node that holds no reboot slot holds one once this patch is applied: the
    /// patch sets one of the keys [`NodeView::holds_slot`] reads to a value other than
    /// `false`. As `apply` then `holds_slot` on such a node, without copying it.
    pub fn takes_slot(&self) -> bool {
        let set = |v: Option<&Option<String>>| matches!(v, Some(Some(v)) if v != keys::FALSE);
        set(self.labels.get(keys::BEFORE_REBOOT))
            || set(self.labels.get(keys::AFTER_REBOOT))
            || set(self.annotations.get(keys::REBOOT_OK))
            || set(self.annotations.get(keys::REBOOT_IN_PROGRESS))
            || set(self.annotations.get(keys::AGENT_MADE_UNSCHEDULABLE))
    }

    /// Applies the patch to a view (what the API server would do). Ignores
    /// the node name. Useful for tests and simulations.
    pub fn apply(&self, view: &mut NodeView) {
        for (k, v) in &self.annotations {
            match v {
                Some(v) => view.annotations.insert(k.clone(), v.clone()),
                None => view.annotations.remove(k),
            };
        }
        for (k, v) in &self.labels {
            match v {
                Some(v) => view.labels.insert(k.clone(), v.clone()),
                None => view.labels.remove(k),
            };
        }
        if let Some(u) = self.unschedulable {
            view.unschedulable = u;
        }
        if let Some(t) = &self.taints {
            view.taints = t.clone();
        }
    }
}

/// Applies each patch to the view of the same name (patches for unknown
/// nodes are ignored).
pub fn apply_all(views: &mut [NodeView], patches: &[NodePatch]) {
    for p in patches {
        if let Some(v) = views.iter_mut().find(|v| v.name == p.node) {
            p.apply(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use proptest::prelude::*;

    /// Values of the keys `holds_slot` reads, and one it does not.
    fn any_changes() -> impl Strategy<Value = Vec<(usize, Option<&'static str>)>> {
        let value = prop::option::of(prop::sample::select(vec!["true", "false", "", "x"]));
        prop::collection::vec((0..6usize, value), 0..6)
    }

    const SLOT_KEYS: [(bool, &str); 6] = [
        (true, keys::BEFORE_REBOOT),
        (true, keys::AFTER_REBOOT),
        (false, keys::REBOOT_OK),
        (false, keys::REBOOT_IN_PROGRESS),
        (false, keys::AGENT_MADE_UNSCHEDULABLE),
        (false, keys::REBOOT_NEEDED),
    ];

    fn build(changes: &[(usize, Option<&str>)]) -> NodePatch {
        let mut p = NodePatch::new("n");
        for (i, v) in changes {
            let (label, key) = SLOT_KEYS[*i];
            let map = if label {
                &mut p.labels
            } else {
                &mut p.annotations
            };
            map.insert(key.to_string(), v.map(str::to_string));
        }
        p
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// `takes_slot` is `apply` then `holds_slot`, on any node holding no slot.
        #[test]
        fn takes_slot_is_apply_then_holds_slot(before in any_changes(), patch in any_changes()) {
            let mut view = NodeView { name: "n".into(), ..Default::default() };
            build(&before).apply(&mut view);
            prop_assume!(!view.holds_slot());
            let patch = build(&patch);
            let mut after = view.clone();
            patch.apply(&mut after);
            prop_assert_eq!(patch.takes_slot(), after.holds_slot());
        }

        /// `counts_against_max_after` is `apply` then `counts_against_max`, on any node
        /// (well-formed or not), under either `--stuck-node-action`.
        #[test]
        fn counts_against_max_after_is_apply_then_count(
            view in crate::testutil::any_node("n".into(), crate::testutil::t0()),
            patch in any_changes(),
            release_stuck: bool,
        ) {
            let cfg = crate::operator::OperatorConfig {
                stuck_node_action: if release_stuck {
                    crate::operator::StuckNodeAction::Release
                } else {
                    crate::operator::StuckNodeAction::default()
                },
                ..Default::default()
            };
            let patch = build(&patch);
            let state = crate::node::NodeState::parse(&view).ok();
            let mut after = view.clone();
            patch.apply(&mut after);
            prop_assert_eq!(
                cfg.counts_against_max_after(&view, state.as_ref(), &patch),
                cfg.counts_against_max(&after)
            );
        }
    }

    #[test]
    fn empty_patch() {
        let p = NodePatch::new("n");
        assert!(p.is_empty());
        assert_eq!(p.merge_patch(), json!({}));
    }

    #[test]
    fn patch_body_carries_the_resource_version() {
        let mut p = NodePatch::new("a");
        p.set_annotation(keys::REBOOT_OK, keys::TRUE);
        assert_eq!(
            p.merge_patch_at(Some("42")),
            json!({"metadata": {"resourceVersion": "42", "annotations": {keys::REBOOT_OK: "true"}}})
        );
        let mut u = NodePatch::new("a");
        u.set_unschedulable(false);
        assert_eq!(
            u.merge_patch_at(Some("7")),
            json!({"metadata": {"resourceVersion": "7"}, "spec": {"unschedulable": false}})
        );
        assert_eq!(u.merge_patch_at(None), u.merge_patch());
    }

    #[test]
    fn merge_patch_body() {
        let mut p = NodePatch::new("n");
        p.set_annotation(keys::REBOOT_OK, "true")
            .remove_annotation(keys::GRANT_EXPIRES)
            .remove_label(keys::BEFORE_REBOOT)
            .set_unschedulable(false);
        assert!(!p.is_empty());
        assert_eq!(
            p.merge_patch(),
            json!({
                "metadata": {
                    "annotations": {
                        keys::GRANT_EXPIRES: null,
                        keys::REBOOT_OK: "true",
                    },
                    "labels": { keys::BEFORE_REBOOT: null },
                },
                "spec": { "unschedulable": false },
            })
        );
        let mut only_labels = NodePatch::new("n");
        only_labels.set_label(keys::LABEL_ID, "flatcar");
        assert_eq!(
            only_labels.merge_patch(),
            json!({"metadata": {"labels": {keys::LABEL_ID: "flatcar"}}})
        );
        let mut only_spec = NodePatch::new("n");
        only_spec.set_unschedulable(true);
        assert_eq!(
            only_spec.merge_patch(),
            json!({"spec": {"unschedulable": true}})
        );
    }

    #[test]
    fn apply_merge_minimize() {
        let mut v = NodeView {
            name: "n".into(),
            ..Default::default()
        };
        v.annotations.insert("a".into(), "1".into());
        v.labels.insert("l".into(), "x".into());
        let mut p = NodePatch::new("n");
        p.set_annotation("a", "1")
            .remove_annotation("zz")
            .set_label("l", "y");
        p.set_unschedulable(false);
        let mut q = NodePatch::new("n");
        q.remove_label("l").set_annotation("b", "2");
        p.merge(q);
        assert_eq!(p.labels.get("l"), Some(&None));
        let mut m = p.clone();
        m.minimize(&v);
        assert_eq!(m.annotations.len(), 1); // only b
        assert_eq!(m.labels.len(), 1);
        assert_eq!(m.unschedulable, None);
        p.apply(&mut v);
        assert_eq!(v.annotations.get("b").map(String::as_str), Some("2"));
        assert!(!v.labels.contains_key("l"));
        let mut vs = vec![v.clone()];
        let mut r = NodePatch::new("n");
        r.set_unschedulable(true);
        apply_all(&mut vs, &[r, NodePatch::new("other")]);
        assert!(vs[0].unschedulable);
    }

    #[test]
    fn taints_are_written_whole() {
        let theirs = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let ours = Taint {
            key: keys::REBOOT_TAINT.into(),
            value: None,
            effect: crate::node::PREFER_NO_SCHEDULE.into(),
            time_added: None,
        };
        let mut p = NodePatch::new("n");
        p.set_taints(vec![theirs.clone(), ours.clone()]);
        assert_eq!(
            p.merge_patch(),
            json!({"spec": {"taints": [
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                {"key": keys::REBOOT_TAINT, "effect": "PreferNoSchedule"},
            ]}})
        );
        let mut v = NodeView::default();
        p.apply(&mut v);
        assert_eq!(v.taints, vec![theirs, ours]);
        let mut same = p.clone();
        same.minimize(&v);
        assert!(same.is_empty());
        let mut none = NodePatch::new("n");
        none.set_taints(vec![]);
        assert_eq!(none.merge_patch(), json!({"spec": {"taints": null}}));
    }
}
