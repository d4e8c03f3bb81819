//! Chaos scenarios on the sandbox: a fixed set of seeds, each a small cluster
//! with the real operator replicas and agents under a seeded fault schedule,
//! refereed by the invariant checker; and the checker shown to catch a
//! deliberately misbehaving actor.

use std::collections::BTreeMap;
use std::time::Duration;

use fleet::chaos::{FaultKind, Outcome, Scenario, run_many};
use fleet::invariants::{Checker, Rules};
use fleet::{Fleet, agent_config};
use host::Host;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use protocol::keys;
use sandbox::Sandbox;
use serde_json::json;

/// The CI seeds: 5 groups of 10, so nextest runs the groups in parallel.
const GROUPS: u64 = 5;
const PER_GROUP: u64 = 10;
/// Scenarios at once within a group.
const JOBS: usize = 3;

async fn group(g: u64) -> Vec<Outcome> {
    let first = 1 + g * PER_GROUP;
    let scenarios = (first..first + PER_GROUP)
        .map(|seed| Scenario::from_seed(seed, None))
        .collect();
    let outcomes = run_many(scenarios, JOBS, |s, o| {
        eprintln!(
            "seed {}: {} faults {:?}, {} violations, {:.1} s\n{s}",
            o.seed,
            o.faults_injected(),
            o.fired,
            o.violations.len(),
            o.duration.as_secs_f64()
        );
        for v in &o.violations {
            eprintln!("  violation: {v}");
        }
    })
    .await;
    let violations: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.violations.iter().map(|v| v.to_string()))
        .collect();
    assert!(
        violations.is_empty(),
        "violations (reproduce one with `fluoctl chaos --seeds 1 --first-seed SEED`):\n{}",
        violations.join("\n")
    );
    assert!(outcomes.iter().all(|o| o.finished));
    assert!(outcomes.iter().all(|o| o.faults_injected() > 0));
    outcomes
}

/// Faults that happened, by kind, over outcomes.
fn fired(outcomes: &[Outcome]) -> BTreeMap<&'static str, u32> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        for (k, n) in &o.fired {
            *m.entry(*k).or_default() += n;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seeds_1_to_10() {
    group(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seeds_11_to_20() {
    group(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seeds_21_to_30() {
    group(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seeds_31_to_40() {
    group(3).await;
}

/// The last group also checks that every kind of fault happened across all
/// CI seeds' schedules, and that requests really failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seeds_41_to_50_and_every_fault_kind_is_scheduled() {
    let outcomes = group(4).await;
    let mut kinds: BTreeMap<&str, u32> = BTreeMap::new();
    for seed in 1..=GROUPS * PER_GROUP {
        for f in fleet::chaos::Scenario::from_seed(seed, None).faults {
            *kinds.entry(f.kind.name()).or_default() += 1;
        }
    }
    for k in FaultKind::NAMES {
        assert!(
            kinds.get(k).is_some_and(|n| *n > 0),
            "no {k} in the CI seeds: {kinds:?}"
        );
    }
    let here = fired(&outcomes);
    assert!(here.get("api-errors").is_some_and(|n| *n > 0), "{here:?}");
    let errors: u64 = outcomes
        .iter()
        .flat_map(|o| o.injected.errors.values())
        .sum();
    assert!(errors > 0, "no request failed");
    // The later kinds bit: watches were ended at once, 403s were answered.
    let all = fired(&outcomes);
    let cut: u64 = outcomes.iter().map(|o| o.injected.watches_cut).sum();
    if all.contains_key("watch-expiry") || all.contains_key("api-restart") {
        assert!(cut > 0, "no watch was ended: {all:?}");
    }
}

#[test]
fn a_seed_always_gives_the_same_scenario() {
    for seed in [1, 7, 1234, u64::MAX] {
        assert_eq!(
            fleet::chaos::Scenario::from_seed(seed, None),
            fleet::chaos::Scenario::from_seed(seed, None)
        );
    }
    assert_ne!(
        fleet::chaos::Scenario::from_seed(1, None),
        fleet::chaos::Scenario::from_seed(2, None)
    );
    assert_eq!(fleet::chaos::Scenario::from_seed(3, Some(8)).nodes, 8);
}

fn rules(max: usize) -> Rules {
    Rules {
        seed: 0,
        max,
        per_zone: None,
        zone_label: fleet::cluster::ZONE_LABEL.to_string(),
        window: None,
        window_slack: Duration::from_secs(1),
        drain_timeout_reboots: false,
        max_reboots: 1,
        foreign_prefix: fleet::chaos::BYSTANDER_PREFIX.to_string(),
    }
}

async fn patch(api: &Api<Node>, node: &str, body: serde_json::Value) {
    api.patch(node, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap();
}

async fn wait_violations(c: &Checker, n: usize) -> Vec<fleet::invariants::Violation> {
    for _ in 0..200 {
        let v = c.violations();
        if v.len() >= n {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    c.violations()
}

fn assert_clean(c: &Checker) {
    assert!(c.violations().is_empty(), "{:?}", c.violations());
}

/// Waits for the checker to report one violation, about `nodes`, and returns it.
async fn one_violation_of(c: &Checker, nodes: &[&str]) -> Vec<fleet::invariants::Violation> {
    let v = wait_violations(c, 1).await;
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].nodes, nodes, "{v:?}");
    v
}

/// A raw client grants a second node while another is being drained, with a
/// maximum of 1: the real agent of the second node drains it, and the checker
/// must report two nodes disrupted at once, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_grant_beyond_the_maximum() {
    let sb = Sandbox::start(Default::default()).await.unwrap();
    for n in ["n1", "n2"] {
        sb.add_node(n, &[]).unwrap();
    }
    let checker = Checker::start(sb.store(), rules(1));
    // n1's agent is not running, so the state written on n1 by hand stays.
    let fleet = Fleet::start(&sb, &["n2"], agent_config);
    for _ in 0..400 {
        let nodes = checker.nodes();
        if nodes["n2"].view.annotation(keys::REBOOT_NEEDED).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let api: Api<Node> = Api::all(sb.client_as("rogue").unwrap());
    let t = keys::TRUE;
    for n in ["n1", "n2"] {
        patch(
            &api,
            n,
            json!({"metadata": {"annotations": {keys::REBOOT_NEEDED: t}}}),
        )
        .await;
    }
    // n1 is cordoned and draining (by hand, as an agent would mark it) ...
    patch(
        &api,
        "n1",
        json!({"metadata": {"annotations": {keys::REBOOT_IN_PROGRESS: t, keys::AGENT_MADE_UNSCHEDULABLE: t}},
               "spec": {"unschedulable": true}}),
    )
    .await;
    assert_clean(&checker);
    // ... and the rogue grants n2: its real agent starts draining.
    patch(
        &api,
        "n2",
        json!({"metadata": {"annotations": {keys::REBOOT_OK: t}}}),
    )
    .await;
    let v = one_violation_of(&checker, &["n1", "n2"]).await;
    assert!(v[0].what.contains("more than 1"), "{v:?}");
    fleet.stop().await;
}

/// Cordoning "by us" without any reason, rebooting with a protected pod on
/// the node, twice, and dropping another writer's annotation: each is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_reboots_with_protected_pods_and_lost_annotations() {
    let sb = Sandbox::start(sandbox::Options {
        reboot_duration: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .unwrap();
    let host = sb.add_node("n1", &[]).unwrap();
    sb.add_node("n2", &[]).unwrap();
    sb.add_workload("demo", "web", 2, Some(1), 0).unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(20)).await);
    let checker = Checker::start(sb.store(), rules(0));
    let api: Api<Node> = Api::all(sb.client_as("rogue").unwrap());
    let bystander = format!("{}owner", fleet::chaos::BYSTANDER_PREFIX);
    patch(
        &api,
        "n1",
        json!({"metadata": {"annotations": {&bystander: "7"}}}),
    )
    .await;
    // With a maximum of 0, a cordon claimed by the agent is one too many.
    patch(
        &api,
        "n2",
        json!({"metadata": {"annotations": {keys::AGENT_MADE_UNSCHEDULABLE: keys::TRUE}},
               "spec": {"unschedulable": true}}),
    )
    .await;
    // An older value of the other writer's annotation, then none at all.
    patch(
        &api,
        "n1",
        json!({"metadata": {"annotations": {&bystander: "6"}}}),
    )
    .await;
    patch(
        &api,
        "n1",
        json!({"metadata": {"annotations": {&bystander: null}}}),
    )
    .await;
    // A reboot without a drain (the workload's pods are still on n1 or n2), twice.
    let on_n1 = sb
        .store()
        .lock()
        .iter(sandbox::eviction::pods(), None)
        .any(|(_, p)| p.pointer("/spec/nodeName") == Some(&json!("n1")));
    let victim = if on_n1 { host } else { sb.host("n2").unwrap() };
    for _ in 0..2 {
        victim.reboot().await.unwrap();
        for _ in 0..100 {
            if !victim.is_rebooting() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let v = wait_violations(&checker, 5).await;
    let text: Vec<String> = v.iter().map(|v| v.to_string()).collect();
    let has = |s: &str| text.iter().any(|t| t.contains(s));
    assert!(has("[n2]: 1 nodes cordoned by us"), "{text:#?}");
    assert!(has("went back from 7 to 6"), "{text:#?}");
    assert!(has("of another writer was removed"), "{text:#?}");
    assert!(has("PodDisruptionBudget protects"), "{text:#?}");
    assert!(has("rebooted 2 times"), "{text:#?}");
}

/// With the reboot window closed, a drain started anyway (a node whose clock lags, taking
/// an expired grant for a valid one, would do this) is caught, and so is the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_drain_started_after_the_window_closed() {
    use chrono::{Timelike, Utc};
    let sb = Sandbox::start(Default::default()).await.unwrap();
    sb.add_node("n1", &[]).unwrap();
    // A daily window that opens two hours from now: closed now.
    let opens = Utc::now() + chrono::TimeDelta::hours(2);
    let window = protocol::window::RebootWindow::parse(
        &format!("{:02}:{:02}", opens.hour(), opens.minute()),
        "1h",
    )
    .unwrap();
    let mut r = rules(1);
    r.window = Some(window);
    let checker = Checker::start(sb.store(), r);
    let api: Api<Node> = Api::all(sb.client_as("rogue").unwrap());
    let t = keys::TRUE;
    patch(
        &api,
        "n1",
        json!({"metadata": {"annotations": {keys::REBOOT_NEEDED: t}}}),
    )
    .await;
    assert_clean(&checker);
    patch(
        &api,
        "n1",
        json!({"metadata": {"annotations": {keys::REBOOT_OK: t}}}),
    )
    .await;
    patch(
        &api,
        "n1",
        json!({"metadata": {"annotations": {keys::REBOOT_IN_PROGRESS: t, keys::AGENT_MADE_UNSCHEDULABLE: t}},
               "spec": {"unschedulable": true}}),
    )
    .await;
    let v = wait_violations(&checker, 2).await;
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(
        v.iter()
            .all(|v| v.nodes == ["n1"] && v.what.contains("outside the reboot window")),
        "{v:?}"
    );
}

/// A node deleted while it reboots still counts until a Node of that name is registered
/// again and Ready: a second node starting its drain meanwhile is caught; once the first is
/// back, a third is not, and the machine's boot history goes on across the two Node objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_counts_a_node_deleted_mid_reboot_until_it_is_back() {
    let sb = Sandbox::start(Default::default()).await.unwrap();
    for n in ["n1", "n2", "n3"] {
        sb.add_node(n, &[]).unwrap();
    }
    let checker = Checker::start(sb.store(), rules(1));
    let api: Api<Node> = Api::all(sb.client_as("rogue").unwrap());
    let t = keys::TRUE;
    let ready =
        |status: &str| json!({"status": {"conditions": [{"type": "Ready", "status": status}]}});
    patch(
        &api,
        "n1",
        json!({"metadata": {"annotations": {keys::REBOOT_IN_PROGRESS: t}}}),
    )
    .await;
    api.patch_status("n1", &PatchParams::default(), &Patch::Merge(ready("False")))
        .await
        .unwrap();
    api.delete("n1", &Default::default()).await.unwrap();
    // Its kubelet registers it again after the reboot: a new boot ID, NotReady at first.
    let fresh: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}], "nodeInfo": {"bootID": "b-new"}},
    }))
    .unwrap();
    api.create(&Default::default(), &fresh).await.unwrap();
    assert_clean(&checker);
    patch(
        &api,
        "n2",
        json!({"metadata": {"annotations": {keys::REBOOT_IN_PROGRESS: t}}}),
    )
    .await;
    one_violation_of(&checker, &["n1", "n2"]).await;
    // n2 is done, n1 Ready: n3 may go.
    patch(
        &api,
        "n2",
        json!({"metadata": {"annotations": {keys::REBOOT_IN_PROGRESS: "false"}}}),
    )
    .await;
    api.patch_status("n1", &PatchParams::default(), &Patch::Merge(ready("True")))
        .await
        .unwrap();
    patch(
        &api,
        "n3",
        json!({"metadata": {"annotations": {keys::REBOOT_IN_PROGRESS: t}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(checker.violations().len(), 1, "{:?}", checker.violations());
    assert_eq!(checker.nodes()["n1"].reboots(), 1);
}
