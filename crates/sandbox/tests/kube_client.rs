//! The sandbox through kube-rs, as our agent and operator use it.

mod common;

use std::time::Duration;

use common::{eventually, raw, sandbox, sandbox_with};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use sandbox::{FaultPlan, Options, Sandbox};
use serde_json::json;

#[tokio::test]
async fn reflector_survives_cut_watches_and_410_gone() {
    let sb = sandbox_with(
        3,
        Options {
            bookmark_interval: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await;
    // Every watch stream is cut after two events, so the watcher must resume from its resourceVersion.
    sb.faults().set(FaultPlan {
        watch_cut_after_events: Some(2),
        ..Default::default()
    });
    let nodes: Api<Node> = Api::all(sb.client());
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(nodes.clone(), watcher::Config::default()).default_backoff(),
    );
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.expect("initial list");
    assert_eq!(reader.state().len(), 3);
    for i in 4..=9 {
        sb.add_node(&format!("node-{i}"), &[]).unwrap();
    }
    for i in 1..=9 {
        let p = json!({"metadata": {"labels": {"round": "one"}}});
        nodes
            .patch(
                &format!("node-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&p),
            )
            .await
            .unwrap();
    }
    assert!(
        eventually(10, || reader.state().len() == 9
            && reader.state().iter().all(|n| n
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .get("round")
                .map(String::as_str)
                == Some("one")))
        .await,
        "reflector caught up through cut watches"
    );
    // Forget all history: the next resume gets 410 Gone and the watcher must relist.
    sb.store().lock().compact();
    for i in 1..=9 {
        let p = json!({"metadata": {"labels": {"round": "two"}}});
        nodes
            .patch(
                &format!("node-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&p),
            )
            .await
            .unwrap();
    }
    sb.store().lock().compact();
    assert!(
        eventually(10, || reader.state().iter().all(|n| n
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("round")
            .map(String::as_str)
            == Some("two")))
        .await,
        "reflector relisted after 410 Gone"
    );
    task.abort();
}

#[tokio::test]
async fn a_restart_ends_every_open_watch_and_after_a_compaction_the_watcher_relists() {
    let sb = sandbox(3).await;
    let nodes: Api<Node> = Api::all(sb.client());
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(nodes.clone(), watcher::Config::default()).default_backoff(),
    );
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.expect("initial list");
    // A change the watcher sees, so its resourceVersion is behind the compaction below.
    let label = |v: &str| json!({"metadata": {"labels": {"round": v}}});
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(&label("one")),
        )
        .await
        .unwrap();
    assert!(
        eventually(10, || reader
            .get(&kube::runtime::reflector::ObjectRef::new("node-1"))
            .is_some_and(
                |n| n.metadata.labels.as_ref().unwrap().get("round") == Some(&"one".to_string())
            ))
        .await
    );
    // As an API server restart after an etcd compaction: every stream ends at once and
    // resuming from the old resourceVersion is 410 Gone.
    for i in 1..=3 {
        nodes
            .patch(
                &format!("node-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&label("two")),
            )
            .await
            .unwrap();
    }
    {
        let mut store = sb.store().lock();
        store.compact();
        sb.faults().cut_all_watches();
    }
    let injected = sb.faults().injected();
    assert_eq!(injected.all_watches_cut, 1);
    assert!(
        eventually(5, || sb.faults().injected().watches_cut >= 1).await,
        "the open watch was ended: {:?}",
        sb.faults().injected()
    );
    assert!(
        eventually(10, || reader.state().iter().all(|n| n
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("round")
            .map(String::as_str)
            == Some("two")))
        .await,
        "the watcher relisted after the restart and has every change"
    );
    task.abort();
}

#[tokio::test]
async fn a_continue_token_from_before_a_compaction_is_410_gone() {
    let sb = sandbox(3).await;
    let nodes: Api<Node> = Api::all(sb.client());
    let page = nodes.list(&ListParams::default().limit(1)).await.unwrap();
    let token = page.metadata.continue_.clone().expect("a continue token");
    // Without a compaction the token goes on where the first page ended.
    let next = nodes
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(next.items[0].metadata.name.as_deref(), Some("node-2"));
    nodes
        .patch(
            "node-3",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    sb.store().lock().compact();
    match nodes
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
            assert!(e.message.contains("continue parameter is too old"), "{e:?}");
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // A new list without the token works.
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
}

#[tokio::test]
async fn a_partitioned_agent_gets_timeouts_while_others_are_answered() {
    use sandbox::faults::Partition;
    let sb = sandbox(2).await;
    // As the agent configures its client: kube's own retry of 5xx off.
    let mut config = sb.config_for(&sandbox::UserInfo::agent("node-1")).unwrap();
    config.default_retry = false;
    let cut_off: Api<Node> = Api::all(kube::Client::try_from(config).unwrap());
    let other: Api<Node> = Api::all(sb.client_for(&sandbox::UserInfo::agent("node-2")).unwrap());
    let admin: Api<Node> = Api::all(sb.client());
    let label = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"p": v}}}));
    for (applied_rate, value) in [(0.0, "lost"), (1.0, "applied")] {
        let until = std::time::Instant::now() + Duration::from_millis(700);
        sb.faults().set(FaultPlan {
            partition: Some(Partition {
                node: "node-1".into(),
                until,
                applied_rate,
            }),
            ..Default::default()
        });
        let write = tokio::spawn({
            let cut_off = cut_off.clone();
            async move {
                cut_off
                    .patch("node-1", &PatchParams::default(), &label(value))
                    .await
            }
        });
        // Meanwhile another node's agent is answered at once.
        other
            .patch("node-2", &PatchParams::default(), &label(value))
            .await
            .unwrap();
        assert!(!write.is_finished(), "the partitioned request is held");
        match write.await.unwrap() {
            Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (504, "Timeout")),
            other => panic!("expected a 504 Timeout, got {other:?}"),
        }
        assert!(std::time::Instant::now() >= until);
        let seen = admin.get("node-1").await.unwrap();
        let got = seen.metadata.labels.unwrap_or_default().get("p").cloned();
        // Carried out or not, the client could not tell: only the store knows.
        if applied_rate == 1.0 {
            assert_eq!(got.as_deref(), Some("applied"));
        } else {
            assert_eq!(got, None);
        }
    }
    let injected = sb.faults().injected();
    assert_eq!((injected.partitioned, injected.partitioned_applied), (2, 1));
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_is_410() {
    let sb = sandbox(1).await;
    let nodes: Api<Node> = Api::all(sb.client());
    let rv = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    sb.store().lock().compact();
    let (code, body) = raw(
        sb.addr(),
        "GET",
        &format!("/api/v1/nodes?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let ev: serde_json::Value = serde_json::from_str(
        body.lines()
            .find(|l| l.starts_with('{'))
            .expect("an event line"),
    )
    .unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let sb = sandbox(1).await;
    let nodes: Api<Node> = Api::all(sb.client());
    let pp = PatchParams::default();
    let n = nodes
        .patch(
            "node-1",
            &pp,
            &Patch::Merge(&json!({"metadata": {"annotations": {"a": "1", "b": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(n.metadata.annotations.as_ref().unwrap()["a"], "1");
    let n = nodes
        .patch(
            "node-1",
            &pp,
            &Patch::Merge(&json!({"metadata": {"annotations": {"a": null}}})),
        )
        .await
        .unwrap();
    assert!(
        !n.metadata.annotations.as_ref().unwrap().contains_key("a"),
        "null removes a key"
    );
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/labels/c", "value": "3"},
        {"op": "test", "path": "/metadata/annotations/b", "value": "2"},
        {"op": "replace", "path": "/metadata/annotations/b", "value": "22"},
    ]))
    .unwrap();
    let n = nodes
        .patch("node-1", &pp, &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(n.metadata.labels.as_ref().unwrap()["c"], "3");
    assert_eq!(n.metadata.annotations.as_ref().unwrap()["b"], "22");
    let failing: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/metadata/annotations/b", "value": "nope"}]),
    )
    .unwrap();
    let err = nodes
        .patch("node-1", &pp, &Patch::<()>::Json(failing))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    let n = nodes
        .patch(
            "node-1",
            &pp,
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    assert_eq!(n.spec.unwrap().unschedulable, Some(true));
    // Conditions merge by type under a strategic patch: one changes, the others stay.
    let status = Api::<Node>::all(sb.client());
    let n = status
        .patch_status(
            "node-1",
            &pp,
            &Patch::Strategic(
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
        )
        .await
        .unwrap();
    let conds = n.status.unwrap().conditions.unwrap();
    assert_eq!(conds.len(), 4);
    assert_eq!(
        conds.iter().find(|c| c.type_ == "Ready").unwrap().status,
        "False"
    );
}

#[tokio::test]
async fn stale_resource_version_is_409_conflict() {
    let sb = sandbox(1).await;
    let nodes: Api<Node> = Api::all(sb.client());
    let old = nodes.get("node-1").await.unwrap();
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    let mut stale = old.clone();
    stale
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("y".into(), "2".into());
    let err = nodes
        .replace("node-1", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    let rv = old.metadata.resource_version.clone().unwrap();
    let p = json!({"metadata": {"resourceVersion": rv, "labels": {"z": "3"}}});
    let err = nodes
        .patch("node-1", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    // With the current resourceVersion both work, and resourceVersions only grow.
    let cur = nodes.get("node-1").await.unwrap();
    let p = json!({"metadata": {"resourceVersion": cur.metadata.resource_version, "labels": {"z": "3"}}});
    let after = nodes
        .patch("node-1", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    let num = |n: &Node| {
        n.metadata
            .resource_version
            .as_ref()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(num(&after) > num(&cur));
}

async fn evict_raw(sb: &sandbox::Sandbox, ns: &str, pod: &str) -> (u16, String) {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": ns}}).to_string();
    raw(
        sb.addr(),
        "POST",
        &format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction"),
        "application/json",
        &body,
    )
    .await
}

#[tokio::test]
async fn eviction_respects_pdb_until_replacement_is_ready() {
    let sb = sandbox(3).await;
    sb.add_workload("shop", "web", 3, Some(1), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let pods: Api<Pod> = Api::namespaced(sb.client(), "shop");
    let list = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 3);
    let (a, b) = (
        list[0].metadata.name.clone().unwrap(),
        list[1].metadata.name.clone().unwrap(),
    );
    // Raw HTTP for the 429s: kube's client retries them by itself.
    assert_eq!(
        evict_raw(&sb, "shop", &a).await.0,
        201,
        "first eviction is allowed"
    );
    let (code, body) = evict_raw(&sb, "shop", &b).await;
    assert_eq!(code, 429, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
    let err = pods
        .evict("no-such-pod", &EvictParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
    // The replacement becomes Ready elsewhere: the budget allows the next one (kube retries the 429s).
    tokio::time::timeout(
        Duration::from_secs(10),
        pods.evict(&b, &EvictParams::default()),
    )
    .await
    .expect("in time")
    .expect("allowed once the replacement is Ready");
    let pdb: serde_json::Value = sb
        .store()
        .lock()
        .get(sandbox::eviction::pdbs(), "shop", "web")
        .map(|p| (*p).clone())
        .unwrap();
    assert!(pdb["status"]["currentHealthy"].as_i64().unwrap() <= 3);
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let after = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        after
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count(),
        3,
        "the ReplicaSet replaced both evicted pods"
    );
    assert!(after.iter().all(|p| p.metadata.name.as_deref() != Some(&a)));
}

#[tokio::test]
async fn pods_are_evicted_concurrently_but_never_past_the_budget() {
    let sb = sandbox(2).await;
    sb.add_workload("shop", "api", 4, Some(1), 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let pods: Api<Pod> = Api::namespaced(sb.client(), "shop");
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    let results = futures::future::join_all(names.iter().map(|n| evict_raw(&sb, "shop", n))).await;
    assert_eq!(
        results.iter().filter(|r| r.0 == 201).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| r.0 == 429).count(),
        3,
        "{results:?}"
    );
}

#[tokio::test]
async fn pod_deletion_waits_out_the_grace_period() {
    let sb = sandbox(1).await;
    sb.add_workload("shop", "db", 1, None, 2).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let pods: Api<Pod> = Api::namespaced(sb.client(), "shop");
    let name = pods.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let started = std::time::Instant::now();
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let p = pods
        .get(&name)
        .await
        .expect("still there while terminating");
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pods.get_opt(&name).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod never went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "gone after {:?}",
        started.elapsed()
    );
    // With gracePeriodSeconds=0 it goes at once.
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let name = pods.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    pods.delete(
        &name,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt(&name).await.unwrap().is_none());
}

#[tokio::test]
async fn list_paging_and_selectors() {
    let sb = sandbox(0).await;
    for i in 0..25 {
        let zone = if i % 2 == 0 { "a" } else { "b" };
        sb.add_node(
            &format!("n{i:02}"),
            &[("topology.kubernetes.io/zone", zone)],
        )
        .unwrap();
    }
    let nodes: Api<Node> = Api::all(sb.client());
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(10);
    loop {
        let page = nodes.list(&lp).await.unwrap();
        assert!(page.items.len() <= 10);
        seen.extend(page.items.into_iter().map(|n| n.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    let mut expected: Vec<String> = (0..25).map(|i| format!("n{i:02}")).collect();
    expected.sort();
    assert_eq!(seen, expected);
    let a = nodes
        .list(&ListParams::default().labels("topology.kubernetes.io/zone=a"))
        .await
        .unwrap();
    assert_eq!(a.items.len(), 13);
    let not_a = nodes
        .list(&ListParams::default().labels("topology.kubernetes.io/zone notin (a)"))
        .await
        .unwrap();
    assert_eq!(not_a.items.len(), 12);
    let one = nodes
        .list(&ListParams::default().fields("metadata.name=n07"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    sb.add_workload("shop", "web", 6, None, 1).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(10)).await);
    let pods: Api<Pod> = Api::all(sb.client());
    let on = pods
        .list(&ListParams::default().fields("spec.nodeName=n00"))
        .await
        .unwrap();
    assert!(
        on.items
            .iter()
            .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some("n00"))
    );
    let total: usize = futures::future::join_all((0..25).map(|i| {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().fields(&format!("spec.nodeName=n{i:02}")))
                .await
                .unwrap()
                .items
                .len()
        }
    }))
    .await
    .into_iter()
    .sum();
    assert_eq!(total, 6);
}

#[tokio::test]
async fn server_side_apply_creates_and_updates_leases() {
    let sb = sandbox(0).await;
    let leases: Api<Lease> = Api::namespaced(sb.client(), "kube-system");
    let pp = PatchParams::apply("test-manager").force();
    let l = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lock"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    let created = leases.patch("lock", &pp, &Patch::Apply(&l)).await.unwrap();
    assert_eq!(
        created.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("a")
    );
    let l = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lock"}, "spec": {"holderIdentity": "b"}});
    let updated = leases.patch("lock", &pp, &Patch::Apply(&l)).await.unwrap();
    let spec = updated.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(updated.metadata.uid, created.metadata.uid);
}

#[tokio::test]
async fn injected_errors_and_outages() {
    let sb = sandbox(1).await;
    // Raw HTTP: kube's client retries 503s by itself, which would hide what the server said.
    let a = sb.addr();
    sb.faults().set(FaultPlan {
        errors: vec![sandbox::ErrorRule {
            verb: Some("patch".into()),
            resource: Some("nodes".into()),
            rate: 1.0,
            code: 409,
        }],
        ..Default::default()
    });
    let (code, body) = raw(
        a,
        "PATCH",
        "/api/v1/nodes/node-1",
        "application/merge-patch+json",
        "{}",
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        raw(a, "GET", "/api/v1/nodes/node-1", "application/json", "")
            .await
            .0,
        200,
        "other verbs unaffected"
    );
    // Half the requests fail, and the same seed fails the same ones.
    let rule = sandbox::ErrorRule {
        verb: Some("get".into()),
        resource: None,
        rate: 0.5,
        code: 500,
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        sb.faults().set(FaultPlan {
            errors: vec![rule.clone()],
            ..Default::default()
        });
        sb.faults().reseed(42);
        let mut codes = Vec::new();
        for _ in 0..40 {
            codes.push(
                raw(a, "GET", "/api/v1/nodes/node-1", "application/json", "")
                    .await
                    .0,
            );
        }
        runs.push(codes);
    }
    assert_eq!(runs[0], runs[1], "deterministic for a seed");
    let failed = runs[0].iter().filter(|c| **c == 500).count();
    assert!((8..=32).contains(&failed), "{failed} of 40 failed");
    sb.faults().set(FaultPlan {
        outage_until: Some(std::time::Instant::now() + Duration::from_millis(300)),
        ..Default::default()
    });
    assert_eq!(
        raw(a, "GET", "/api/v1/nodes/node-1", "application/json", "")
            .await
            .0,
        503
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        raw(a, "GET", "/api/v1/nodes/node-1", "application/json", "")
            .await
            .0,
        200,
        "outage over"
    );
    let nodes: Api<Node> = Api::all(sb.client());
    nodes.get("node-1").await.expect("kube client fine again");
}

#[tokio::test]
async fn bad_input_gets_real_status_codes() {
    let sb = sandbox(1).await;
    let a = sb.addr();
    let status = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap_or_default();
    let (code, body) = raw(
        a,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(status(&body)["kind"], "Status");
    assert_eq!(status(&body)["reason"], "BadRequest");
    let (code, _) = raw(a, "GET", "/api/v1/widgets", "application/json", "").await;
    assert_eq!(code, 404);
    let (code, _) = raw(
        a,
        "GET",
        "/apis/nope.example.com/v1/things",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 404);
    let (code, body) = raw(
        a,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "text/plain",
        "hello",
    )
    .await;
    assert_eq!(code, 415, "{body}");
    let (code, body) = raw(a, "PATCH", "/api/v1/nodes/node-1", "text/plain", "{}").await;
    assert_eq!(code, 415, "{body}");
    let (code, body) = raw(
        a,
        "PATCH",
        "/api/v1/nodes/missing",
        "application/merge-patch+json",
        "{}",
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(status(&body)["reason"], "NotFound");
    let (code, _) = raw(
        a,
        "PATCH",
        "/api/v1/nodes/node-1",
        "application/json-patch+json",
        "{\"op\":1}",
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = raw(
        a,
        "POST",
        "/api/v1/namespaces/nope/configmaps",
        "application/json",
        r#"{"metadata":{"name":"x"}}"#,
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = raw(
        a,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x"}}"#,
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = raw(
        a,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"metadata":{"name":"Bad_Name"}}"#,
    )
    .await;
    assert_eq!(code, 422);
    let cm = r#"{"metadata":{"name":"x"}}"#;
    assert_eq!(
        raw(
            a,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            cm
        )
        .await
        .0,
        201
    );
    assert_eq!(
        raw(
            a,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            cm
        )
        .await
        .0,
        409
    );
    let (code, _) = raw(
        a,
        "GET",
        "/api/v1/nodes?labelSelector=a%20in%20(",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = raw(
        a,
        "GET",
        "/api/v1/nodes?continue=zz",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 400);
    // Still serving after all that.
    assert_eq!(
        raw(a, "GET", "/api/v1/nodes/node-1", "application/json", "")
            .await
            .0,
        200
    );
}

/// With a runtime of its own, the API server answers while the runtime that started it (the
/// simulation's) is stalled.
#[test]
fn an_api_on_its_own_runtime_answers_while_the_simulation_is_stalled() {
    let api = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sb = sim
        .block_on(Sandbox::start(Options {
            api_runtime: Some(api.handle().clone()),
            ..Default::default()
        }))
        .unwrap();
    sb.add_node("n1", &[]).unwrap();
    // A kube client lives on the runtime it was made in.
    let c = client.block_on(async { sb.client_as("admin") }).unwrap();
    // The simulation's only thread is busy for 3 s; a request must not wait for it.
    let stall = std::thread::spawn(move || {
        sim.block_on(async { std::thread::sleep(Duration::from_secs(3)) });
        sim
    });
    let asked = std::time::Instant::now();
    let nodes = client
        .block_on(Api::<Node>::all(c).list(&ListParams::default()))
        .unwrap();
    assert_eq!(nodes.items.len(), 1);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        asked.elapsed()
    );
    drop(stall.join().unwrap());
    drop(sb);
}
