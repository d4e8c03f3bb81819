//! Per-node blockers from Pods: `--blocking-pod-selector`. A pod matching the
//! selector that is scheduled on a node and has not finished blocks that
//! node's grant (see [`crate::operator::ClusterInputs::node_blockers`]).

use std::collections::BTreeMap;

use crate::selector::LabelSelector;

/// The flag's name.
pub const BLOCKING_POD_SELECTOR_FLAG: &str = "--blocking-pod-selector";

/// The parts of a Pod that can block a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.nodeName` (empty: not scheduled).
    pub node: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `status.phase` (empty if unknown).
    pub phase: String,
}

/// Node name -> the pods blocking it (`pod <namespace>/<name>`, sorted).
/// Pods that are unscheduled, finished (`Succeeded`/`Failed`) or do not
/// match `selector` block nothing.
pub fn node_blockers(pods: &[PodView], selector: &LabelSelector) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in pods {
        if p.node.is_empty()
            || p.phase == "Succeeded"
            || p.phase == "Failed"
            || !selector.matches(&p.labels)
        {
            continue;
        }
        out.entry(p.node.clone())
            .or_default()
            .push(format!("pod {}/{}", p.namespace, p.name));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, app: &str) -> PodView {
        PodView {
            namespace: "default".into(),
            name: name.into(),
            node: node.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            phase: phase.into(),
        }
    }

    #[test]
    fn running_matching_scheduled_pods_block_their_node() {
        let sel = LabelSelector::parse("app=backup").unwrap();
        let pods = vec![
            pod("b2", "n1", "Running", "backup"),
            pod("b1", "n1", "Pending", "backup"),
            pod("b3", "n2", "Succeeded", "backup"),
            pod("b4", "n3", "Failed", "backup"),
            pod("b5", "", "Pending", "backup"),
            pod("web", "n4", "Running", "web"),
            pod("b6", "n5", "", "backup"),
        ];
        let b = node_blockers(&pods, &sel);
        assert_eq!(
            b,
            [
                (
                    "n1".to_string(),
                    vec!["pod default/b1".to_string(), "pod default/b2".to_string()]
                ),
                ("n5".to_string(), vec!["pod default/b6".to_string()]),
            ]
            .into()
        );
    }
}
