//! The shell's half of the post-reboot health gate ([`protocol::evicted`]): which workload
//! a pod belongs to, and how many pods of the recorded workloads exist and are Ready now.
//!
//! Pods are matched by their controller ownerReference's UID, so only the agent's existing
//! permission to list pods is needed (no reads of ReplicaSets or StatefulSets).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use protocol::evicted::{EvictedPods, PodCount, Workload, WorkloadPods};

/// The workload a pod belongs to (its controller), counted once.
pub fn workload_of(pod: &Pod) -> Option<Workload> {
    let c = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))?;
    Some(Workload {
        namespace: pod.namespace().unwrap_or_default(),
        kind: c.kind.clone(),
        name: c.name.clone(),
        uid: c.uid.clone(),
        count: 1,
    })
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Per recorded workload, its pods among `pods`: not being deleted and not finished, and of
/// those the Ready ones.
pub fn pod_counts<'a>(pods: impl IntoIterator<Item = &'a Pod>, rec: &EvictedPods) -> WorkloadPods {
    let wanted: BTreeSet<&str> = rec.workloads.iter().map(|w| w.uid.as_str()).collect();
    let mut out = WorkloadPods::new();
    for pod in pods {
        let Some(w) = workload_of(pod).filter(|w| wanted.contains(w.uid.as_str())) else {
            continue;
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if pod.metadata.deletion_timestamp.is_some()
            || matches!(phase, Some("Succeeded" | "Failed"))
        {
            continue;
        }
        let c: &mut PodCount = out.entry(w.uid).or_default();
        c.existing += 1;
        if ready(pod) {
            c.ready += 1;
        }
    }
    out
}

/// Lists the pods of the record's namespaces (one request each) and counts them.
pub async fn look(client: &Client, rec: &EvictedPods) -> Result<WorkloadPods, kube::Error> {
    let namespaces: BTreeSet<&str> = rec.workloads.iter().map(|w| w.namespace.as_str()).collect();
    let mut pods = Vec::new();
    for ns in namespaces {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        pods.extend(api.list(&ListParams::default()).await?.items);
    }
    Ok(pod_counts(&pods, rec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(owner_uid: Option<&str>, phase: &str, ready: bool, deleting: bool) -> Pod {
        let mut p = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if let Some(uid) = owner_uid {
            p["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": uid, "controller": true,
            }]);
        }
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2024-05-01T12:00:00Z");
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn counts_live_and_ready_pods_of_recorded_workloads_only() {
        let w = workload_of(&pod(Some("u-web"), "Running", true, false)).unwrap();
        assert_eq!(
            (
                w.namespace.as_str(),
                w.kind.as_str(),
                w.name.as_str(),
                w.count
            ),
            ("default", "ReplicaSet", "web-1", 1)
        );
        assert_eq!(workload_of(&pod(None, "Running", true, false)), None);
        let rec = EvictedPods::of([w]);
        let pods = [
            pod(Some("u-web"), "Running", true, false),
            pod(Some("u-web"), "Pending", false, false),
            pod(Some("u-web"), "Running", true, true),
            pod(Some("u-web"), "Succeeded", false, false),
            pod(Some("u-other"), "Running", true, false),
            pod(None, "Running", true, false),
        ];
        let counts = pod_counts(&pods, &rec);
        assert_eq!(counts.len(), 1);
        assert_eq!(
            counts["u-web"],
            PodCount {
                existing: 2,
                ready: 1
            }
        );
    }
}
