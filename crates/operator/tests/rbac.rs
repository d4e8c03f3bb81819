//! The RBAC in deploy/core/rbac.yaml against what the operator and the agents really call during
//! a rollout on the sandbox, which records (user, verb, group, resource, namespace) per request.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use fleet::{Fleet, LEASE_NAMESPACE, agent_config};
use serde::Deserialize;
use serde_yaml::Value;

/// (group, resource, verb) a role allows, and the namespace it is limited to (None: cluster-wide).
type Grant = (String, String, String, Option<String>);

fn grants(docs: &[Value], binding_subject: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    // Roles bound to the service account, by kind and name.
    let mut roles = BTreeSet::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let subjects = d["subjects"].as_sequence().cloned().unwrap_or_default();
        if subjects
            .iter()
            .any(|s| s["name"].as_str() == Some(binding_subject))
        {
            roles.insert((
                d["roleRef"]["kind"].as_str().unwrap().to_string(),
                d["roleRef"]["name"].as_str().unwrap().to_string(),
            ));
        }
    }
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        let key = (
            d["kind"].as_str().unwrap().to_string(),
            d["metadata"]["name"].as_str().unwrap().to_string(),
        );
        if !roles.contains(&key) {
            continue;
        }
        let ns =
            (d["kind"] == "Role").then(|| d["metadata"]["namespace"].as_str().unwrap().to_string());
        for rule in d["rules"].as_sequence().unwrap() {
            let strs = |k: &str| {
                rule[k]
                    .as_sequence()
                    .map(|s| {
                        s.iter()
                            .map(|v| v.as_str().unwrap().to_string())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            };
            for g in strs("apiGroups") {
                for r in strs("resources") {
                    for v in strs("verbs") {
                        out.insert((g.clone(), r.clone(), v, ns.clone()));
                    }
                }
            }
        }
    }
    out
}

fn allowed(
    grants: &BTreeSet<Grant>,
    e: &sandbox::audit::AuditEntry,
    role_namespace_as: &str,
) -> bool {
    grants.iter().any(|(g, r, v, ns)| {
        *g == e.group
            && *r == e.resource
            && *v == e.verb
            && ns.as_ref().is_none_or(|_| e.namespace == role_namespace_as)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_roles_cover_exactly_what_a_rollout_calls() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/core/rbac.yaml"
    ))
    .unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .collect();
    let operator_grants = grants(&docs, "flatcar-linux-update-operator-sa");
    let agent_grants = grants(&docs, "flatcar-linux-update-agent");
    assert!(
        !operator_grants.is_empty() && !agent_grants.is_empty(),
        "both service accounts are bound"
    );

    let sb = sandbox().await;
    let names = ["n1", "n2", "n3"];
    for n in names {
        sb.add_node(n, &[]).unwrap();
    }
    sb.add_workload("default", "web", 4, Some(1), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(30)).await);
    // A finished pod on n1: the agent deletes it (finished pods need no eviction).
    sb.create(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "job-done", "namespace": "default", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": true}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Succeeded"},
    }))
    .unwrap();
    let fleet = Fleet::start(&sb, &names, agent_config);
    let op = Replica::start(&sb, "operator", op_config(1));
    for n in names {
        sb.host(n).unwrap().offer_update("4152.2.0").await;
    }
    wait_for(
        "every node rebooted once",
        Duration::from_secs(120),
        || async {
            names
                .iter()
                .all(|n| sb.host(n).unwrap().reboots() == 1)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    op.stop().await.unwrap();
    fleet.stop().await;

    let audit = sb.audit().entries();
    let mut used_by_operator = BTreeSet::new();
    let mut used_by_agents = BTreeSet::new();
    for e in &audit {
        if e.user == "operator" {
            assert!(
                allowed(&operator_grants, e, LEASE_NAMESPACE),
                "the operator's roles do not allow {e:?}"
            );
            used_by_operator.insert((e.group.clone(), e.resource.clone(), e.verb.clone()));
        } else if e.user == sandbox::UserInfo::agent("n1").username {
            assert!(
                allowed(&agent_grants, e, LEASE_NAMESPACE),
                "the agent's role does not allow {e:?}"
            );
            used_by_agents.insert((e.group.clone(), e.resource.clone(), e.verb.clone()));
        }
    }
    // Nothing more: every permission is used, except those only needed off the happy path,
    // each with the reason it is kept.
    let rare: &[(&str, &str, &str, &str)] = &[
        (
            "events.k8s.io",
            "events",
            "patch",
            "an Event that repeats becomes a series update",
        ),
        (
            "",
            "events",
            "create",
            "kube-runtime's Recorder falls back to core/v1 on clusters without events.k8s.io",
        ),
        ("", "events", "patch", "same fallback, for repeats"),
        (
            "coordination.k8s.io",
            "leases",
            "create",
            "only when the Lease does not exist yet (the test creates it on first start too, but a standby never does)",
        ),
        (
            "",
            "nodes",
            "get",
            "re-reading a node after an unanswered write",
        ),
        (
            "storage.k8s.io",
            "volumeattachments",
            "watch",
            "the wait for volumes to detach watches only while something is still attached after its first list",
        ),
    ];
    for (who, grants, used) in [
        ("operator", &operator_grants, &used_by_operator),
        ("agent", &agent_grants, &used_by_agents),
    ] {
        for (g, r, v, _) in grants.iter() {
            let key = (g.clone(), r.clone(), v.clone());
            let excused = rare
                .iter()
                .any(|(rg, rr, rv, _)| rg == g && rr == r && rv == v);
            assert!(
                used.contains(&key) || excused,
                "the {who}'s roles allow {key:?}, which a rollout never uses: drop it or say why it is kept"
            );
        }
    }
    println!("operator used: {used_by_operator:?}\nagents used: {used_by_agents:?}");
}
