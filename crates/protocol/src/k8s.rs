//! k8s Node -> [`crate::node::NodeView`], for the shells (feature `k8s`).

use crate::node::{NodeView, Taint};
use k8s_openapi::api::core::v1::Node;

/// The parts of `node` the protocol reads.
pub fn node_view(node: &Node) -> NodeView {
    let meta = &node.metadata;
    NodeView {
        name: meta.name.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        ..view_but_metadata(node)
    }
}

/// [`node_view`] of a Node no longer needed: its name, annotations and labels are moved,
/// not copied.
pub fn into_node_view(mut node: Node) -> NodeView {
    let meta = std::mem::take(&mut node.metadata);
    NodeView {
        name: meta.name.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        labels: meta.labels.unwrap_or_default(),
        ..view_but_metadata(&node)
    }
}

/// The view's fields from `spec` and `status`.
fn view_but_metadata(node: &Node) -> NodeView {
    let status = node.status.as_ref();
    NodeView {
        name: String::new(),
        annotations: Default::default(),
        labels: Default::default(),
        unschedulable: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        boot_id: status
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.boot_id.clone())
            .unwrap_or_default(),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        taints: node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|ts| {
                ts.iter()
                    .map(|t| Taint {
                        key: t.key.clone(),
                        value: t.value.clone(),
                        effect: t.effect.clone(),
                        // As it is sent back: the API server's own format.
                        time_added: t
                            .time_added
                            .as_ref()
                            .and_then(|at| serde_json::to_value(at).ok())
                            .and_then(|v| v.as_str().map(str::to_string)),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_a_node() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "annotations": {"a": "1"}, "labels": {"l": "x"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "nodeInfo": {"bootID": "b1", "machineID": "", "systemUUID": "", "kernelVersion": "",
                    "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "",
                    "kubeProxyVersion": "", "operatingSystem": "", "architecture": ""}
            }
        }))
        .unwrap();
        let v = node_view(&node);
        assert_eq!(into_node_view(node.clone()), v);
        assert_eq!(v.name, "n1");
        assert_eq!(v.annotation("a"), Some("1"));
        assert_eq!(v.label("l"), Some("x"));
        assert!(v.unschedulable);
        assert!(v.ready);
        assert_eq!(v.boot_id, "b1");

        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n2"}})).unwrap();
        let v = node_view(&bare);
        assert!(!v.unschedulable && !v.ready && v.boot_id.is_empty());
        let not_ready: Node = serde_json::from_value(json!({
            "metadata": {"name": "n3"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        }))
        .unwrap();
        assert!(!node_view(&not_ready).ready);
    }
}
