//! Adopting a cluster from FLUO mid-rollout: each node starts in a state
//! FLUO's agent and operator may leave behind (written with a raw client
//! before any of our binaries runs), then our operator and one agent per node
//! take over. Per node: the number of reboots (boot ID changes) is exactly the
//! expected 0 or 1, no cordon of ours is left, an admin's cordon is kept, and
//! every mark of a reboot cycle is gone at the end; the maximum of rebooting
//! nodes holds throughout.

use std::time::Duration;

use fleet::{Fleet, Hooks, Monitor, Replica, agent_config, op_config};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use protocol::keys;
use protocol::node::NodeView;
use protocol::update_engine::UpdateStatus;
use sandbox::{Options, Sandbox};
use serde_json::{Map, Value, json};

const BEFORE_HOOK: &str = "example.com/before-check";
const AFTER_HOOK: &str = "example.com/after-check";
const NEW_VERSION: &str = "4152.2.0";
const PATIENCE: Duration = Duration::from_secs(90);

const T: &str = keys::TRUE;
const F: &str = keys::FALSE;

/// A node as FLUO left it.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    annotations: &'static [(&'static str, &'static str)],
    labels: &'static [(&'static str, &'static str)],
    /// `spec.unschedulable`.
    cordoned: bool,
    /// update_engine says UPDATED_NEED_REBOOT (the reboot has not happened);
    /// otherwise it is idle (a fresh boot).
    host_needs_reboot: bool,
    /// Reboots expected while FLUO's state is adopted.
    reboots: u32,
    /// An admin's cordon: must still be there at the end.
    admin_cordon: bool,
}

/// Every state FLUO's agent (steps 2-9) and operator (steps 1-5) can leave.
const CASES: &[Case] = &[
    Case {
        name: "needed",
        annotations: &[(keys::REBOOT_NEEDED, T), (keys::REBOOT_IN_PROGRESS, F)],
        labels: &[(keys::REBOOT_NEEDED, T)],
        cordoned: false,
        host_needs_reboot: true,
        reboots: 1,
        admin_cordon: false,
    },
    Case {
        // FLUO's operator granted it (step 4); FLUO's agent had not started.
        name: "granted",
        annotations: &[
            (keys::REBOOT_NEEDED, T),
            (keys::REBOOT_IN_PROGRESS, F),
            (keys::REBOOT_OK, T),
        ],
        labels: &[(keys::REBOOT_NEEDED, T)],
        cordoned: false,
        host_needs_reboot: true,
        reboots: 1,
        admin_cordon: false,
    },
    Case {
        // FLUO's agent step 7: in progress, its own cordon, mid-drain.
        name: "draining",
        annotations: &[
            (keys::REBOOT_NEEDED, T),
            (keys::REBOOT_IN_PROGRESS, T),
            (keys::REBOOT_OK, T),
            (keys::AGENT_MADE_UNSCHEDULABLE, T),
        ],
        labels: &[(keys::REBOOT_NEEDED, T)],
        cordoned: true,
        host_needs_reboot: true,
        reboots: 1,
        admin_cordon: false,
    },
    Case {
        // The same annotations after the reboot happened (a new boot, FLUO's
        // agent never ran again): no boot ID was recorded, update_engine is idle.
        name: "rebooted-in-progress",
        annotations: &[
            (keys::REBOOT_NEEDED, T),
            (keys::REBOOT_IN_PROGRESS, T),
            (keys::REBOOT_OK, T),
            (keys::AGENT_MADE_UNSCHEDULABLE, T),
        ],
        labels: &[(keys::REBOOT_NEEDED, T)],
        cordoned: true,
        host_needs_reboot: false,
        reboots: 0,
        admin_cordon: false,
    },
    Case {
        // FLUO's agent came back (step 2) and waits for reboot-ok to go
        // (step 3), still cordoned; the operator has not labelled it yet.
        name: "back-cordoned",
        annotations: &[
            (keys::REBOOT_NEEDED, F),
            (keys::REBOOT_IN_PROGRESS, F),
            (keys::REBOOT_OK, T),
            (keys::AGENT_MADE_UNSCHEDULABLE, T),
        ],
        labels: &[(keys::REBOOT_NEEDED, F)],
        cordoned: true,
        host_needs_reboot: false,
        reboots: 0,
        admin_cordon: false,
    },
    Case {
        // FLUO's operator step 3: labelled after-reboot, hooks not done.
        name: "after-reboot",
        annotations: &[
            (keys::REBOOT_NEEDED, F),
            (keys::REBOOT_IN_PROGRESS, F),
            (keys::REBOOT_OK, T),
            (keys::AGENT_MADE_UNSCHEDULABLE, T),
            (AFTER_HOOK, F),
        ],
        labels: &[(keys::REBOOT_NEEDED, F), (keys::AFTER_REBOOT, T)],
        cordoned: true,
        host_needs_reboot: false,
        reboots: 0,
        admin_cordon: false,
    },
    Case {
        // FLUO's operator step 5: labelled before-reboot, hooks not done.
        name: "before-reboot",
        annotations: &[
            (keys::REBOOT_NEEDED, T),
            (keys::REBOOT_IN_PROGRESS, F),
            (BEFORE_HOOK, F),
        ],
        labels: &[(keys::REBOOT_NEEDED, T), (keys::BEFORE_REBOOT, T)],
        cordoned: false,
        host_needs_reboot: true,
        reboots: 1,
        admin_cordon: false,
    },
    Case {
        // An admin paused it; it reboots once the admin resumes it.
        name: "paused",
        annotations: &[
            (keys::REBOOT_NEEDED, T),
            (keys::REBOOT_IN_PROGRESS, F),
            (keys::REBOOT_PAUSED, T),
        ],
        labels: &[(keys::REBOOT_NEEDED, T)],
        cordoned: false,
        host_needs_reboot: true,
        reboots: 1,
        admin_cordon: false,
    },
    Case {
        // Paused after FLUO granted it: the grant is withdrawn, nothing starts.
        name: "paused-granted",
        annotations: &[
            (keys::REBOOT_NEEDED, T),
            (keys::REBOOT_IN_PROGRESS, F),
            (keys::REBOOT_OK, T),
            (keys::REBOOT_PAUSED, T),
        ],
        labels: &[(keys::REBOOT_NEEDED, T)],
        cordoned: false,
        host_needs_reboot: true,
        reboots: 1,
        admin_cordon: false,
    },
    Case {
        // Cordoned by an admin, waiting for a reboot.
        name: "admin-cordoned",
        annotations: &[(keys::REBOOT_NEEDED, T), (keys::REBOOT_IN_PROGRESS, F)],
        labels: &[(keys::REBOOT_NEEDED, T)],
        cordoned: true,
        host_needs_reboot: true,
        reboots: 1,
        admin_cordon: true,
    },
    Case {
        // Cordoned by an admin, then FLUO's agent started draining: it did
        // not mark the cordon as its own.
        name: "admin-cordoned-draining",
        annotations: &[
            (keys::REBOOT_NEEDED, T),
            (keys::REBOOT_IN_PROGRESS, T),
            (keys::REBOOT_OK, T),
        ],
        labels: &[(keys::REBOOT_NEEDED, T)],
        cordoned: true,
        host_needs_reboot: true,
        reboots: 1,
        admin_cordon: true,
    },
    Case {
        // FLUO's agent died between withdrawing reboot-ok and its uncordon
        // (agent step 4): its cordon is left over on an idle node.
        name: "fluo-cordoned",
        annotations: &[
            (keys::REBOOT_NEEDED, F),
            (keys::REBOOT_IN_PROGRESS, F),
            (keys::REBOOT_OK, F),
            (keys::AGENT_MADE_UNSCHEDULABLE, T),
        ],
        labels: &[(keys::REBOOT_NEEDED, F)],
        cordoned: true,
        host_needs_reboot: false,
        reboots: 0,
        admin_cordon: false,
    },
];

/// The marks of a reboot cycle, none of which may remain at the end.
/// (`picked-at`/`released-at` are history and stay.)
const CYCLE_MARKS: &[&str] = &[
    keys::REBOOT_IN_PROGRESS,
    keys::REBOOT_OK,
    keys::REBOOT_BOOT_ID,
    keys::DRAIN_FAILURE,
    keys::REBOOT_ERROR,
    keys::GRANT_EXPIRES,
    keys::GRANTED_AT,
    keys::REBOOT_NEEDED_SINCE,
    keys::REBOOT_FAILURES,
    keys::STUCK_SINCE,
    keys::EVICTED_PODS,
    BEFORE_HOOK,
    AFTER_HOOK,
];

fn need_reboot() -> UpdateStatus {
    UpdateStatus {
        last_checked_time: chrono::Utc::now().timestamp(),
        progress: 1.0,
        current_operation: "UPDATE_STATUS_UPDATED_NEED_REBOOT".into(),
        new_version: NEW_VERSION.into(),
        new_size: 300_000_000,
    }
}

/// Writes `case`'s state on `node` as FLUO would have left it.
async fn write_fluo_state(nodes: &Api<Node>, node: &str, case: &Case) {
    let map = |kv: &[(&str, &str)]| -> Map<String, Value> {
        kv.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
    };
    let body = json!({
        "metadata": {"annotations": map(case.annotations), "labels": map(case.labels)},
        "spec": {"unschedulable": case.cordoned},
    });
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("write FLUO's state");
}

/// Whether `v` is at rest: nothing needed, no slot, no mark of a cycle, cordon
/// only if an admin's.
fn settled(v: &NodeView, admin_cordon: bool) -> Result<(), String> {
    if v.holds_slot() {
        return Err("holds a slot".into());
    }
    if v.annotation(keys::REBOOT_NEEDED) != Some(F) || v.label(keys::REBOOT_NEEDED) != Some(F) {
        return Err("reboot-needed is not false".into());
    }
    for k in CYCLE_MARKS {
        match v.annotation(k) {
            None => {}
            Some(F) if [keys::REBOOT_IN_PROGRESS, keys::REBOOT_OK].contains(k) => {}
            Some(val) => return Err(format!("{k}={val:?} is left")),
        }
    }
    if v.unschedulable != admin_cordon {
        return Err(format!("unschedulable is {}", v.unschedulable));
    }
    if !v.ready {
        return Err("not Ready".into());
    }
    Ok(())
}

struct Adoption {
    sb: Sandbox,
    nodes: Api<Node>,
    monitor: Monitor,
    fleet: Fleet,
    operator: Replica,
    _hooks: Hooks,
    /// Nodes holding a slot as FLUO handed them over.
    holders_at_start: usize,
}

/// A sandbox with one node per case (named after it) in FLUO's state plus
/// `fresh` nodes (those named `fresh*` get an ordinary update), a workload under a PDB,
/// then our monitor, agents, hooks and operator (at most `max` at once).
async fn adopt(cases: &[Case], fresh: &[&str], max: u32) -> Adoption {
    let sb = Sandbox::start(Options::default())
        .await
        .expect("sandbox starts");
    for name in cases.iter().map(|c| c.name).chain(fresh.iter().copied()) {
        sb.add_node(name, &[]).unwrap();
    }
    let total = (cases.len() + fresh.len()) as u32;
    sb.add_workload("default", "web", 2 * total, Some(1), 1)
        .unwrap();
    assert!(sb.wait_pods_ready(Duration::from_secs(30)).await);
    let nodes = Api::<Node>::all(sb.client_as("fluo").unwrap());
    for case in cases {
        write_fluo_state(&nodes, case.name, case).await;
        if case.host_needs_reboot {
            sb.host(case.name).unwrap().set_status(need_reboot());
        }
    }
    let holders_at_start = nodes
        .list(&Default::default())
        .await
        .expect("list nodes")
        .items
        .iter()
        .filter(|n| protocol::k8s::node_view(n).holds_slot())
        .count();
    let admin_cordons: Vec<&str> = cases
        .iter()
        .filter(|c| c.admin_cordon)
        .map(|c| c.name)
        .collect();
    let monitor = Monitor::start(sb.client_as("monitor").unwrap(), &admin_cordons).await;
    let names: Vec<&str> = cases
        .iter()
        .map(|c| c.name)
        .chain(fresh.iter().copied())
        .collect();
    let fleet = Fleet::start(&sb, &names, agent_config);
    let hooks = Hooks::start(
        sb.client_as("hooks").unwrap(),
        vec![BEFORE_HOOK.into()],
        vec![AFTER_HOOK.into()],
        Duration::from_millis(300),
    );
    let mut cfg = op_config(max);
    cfg.before_reboot_annotations = vec![BEFORE_HOOK.into()];
    cfg.after_reboot_annotations = vec![AFTER_HOOK.into()];
    let operator = Replica::start(&sb, "update-operator", cfg);
    for n in fresh.iter().filter(|n| n.starts_with("fresh")) {
        sb.host(n).unwrap().offer_update(NEW_VERSION).await;
    }
    Adoption {
        sb,
        nodes,
        monitor,
        fleet,
        operator,
        _hooks: hooks,
        holders_at_start,
    }
}

impl Adoption {
    async fn view(&self, node: &str) -> NodeView {
        protocol::k8s::node_view(&self.nodes.get(node).await.expect("get node"))
    }

    /// Waits until every node in `expect` (name, reboots, admin cordon) has
    /// rebooted exactly that often and is settled.
    async fn wait_settled(&self, expect: &[(&str, u32, bool)]) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let mut pending = Vec::new();
            for &(n, reboots, admin) in expect {
                let host = self.sb.host(n).unwrap();
                assert!(
                    host.reboots() <= reboots,
                    "{n} rebooted {} times, expected {reboots}",
                    host.reboots()
                );
                if host.reboots() < reboots {
                    pending.push(format!("{n}: {} of {reboots} reboots", host.reboots()));
                } else if let Err(e) = settled(&self.view(n).await, admin) {
                    pending.push(format!("{n}: {e}"));
                }
            }
            if pending.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not settled after {PATIENCE:?}: {pending:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Nothing happens any more: after a pause the same nodes are settled and
    /// nothing rebooted again; each node's boot IDs match its reboots.
    async fn assert_final(&self, expect: &[(&str, u32, bool)]) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.wait_settled(expect).await;
        let peaks = self.monitor.peaks();
        for &(n, reboots, _) in expect {
            assert_eq!(self.sb.host(n).unwrap().reboots(), reboots, "{n}");
            let ids = &peaks.boot_ids[n];
            assert_eq!(ids.len() as u32, reboots + 1, "{n}: boot IDs {ids:?}");
        }
        assert!(
            self.fleet.crashed().is_empty(),
            "agents ended: {:?}",
            self.fleet.crashed()
        );
        assert!(!self.operator.is_finished(), "the operator stopped");
    }

    async fn stop(self) {
        self.operator.stop().await.expect("operator stops");
        self.fleet.stop().await;
    }
}

/// Resumes a paused node, as an admin would.
async fn unpause(nodes: &Api<Node>, node: &str) {
    let body = json!({"metadata": {"annotations": {keys::REBOOT_PAUSED: null}}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("unpause");
}

fn is_paused(c: &Case) -> bool {
    c.annotations.contains(&(keys::REBOOT_PAUSED, T))
}

/// Paused nodes: not rebooted and still wanting one while paused; no grant left.
async fn assert_paused_untouched(a: &Adoption, paused: &[&Case]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for c in paused {
        loop {
            let v = a.view(c.name).await;
            let quiet = v.annotation(keys::REBOOT_OK) != Some(T)
                && v.annotation(keys::REBOOT_NEEDED) == Some(T)
                && !v.holds_slot()
                && !v.unschedulable;
            if quiet {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: paused but still holds {:?}",
                c.name,
                v.annotations
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            a.sb.host(c.name).unwrap().reboots(),
            0,
            "{} rebooted while paused",
            c.name
        );
    }
}

/// One FLUO state on one node, next to a fresh node that gets an ordinary
/// update, with at most one node at a time.
async fn run_case(case: &Case) {
    // "spare" never needs a reboot: where the pods of a drained node can go
    // when the other one is cordoned.
    let a = adopt(std::slice::from_ref(case), &["fresh", "spare"], 1).await;
    if is_paused(case) {
        a.wait_settled(&[("fresh", 1, false)]).await;
        assert_paused_untouched(&a, &[case]).await;
        unpause(&a.nodes, case.name).await;
    }
    let expect = [
        (case.name, case.reboots, case.admin_cordon),
        ("fresh", 1, false),
        ("spare", 0, false),
    ];
    a.wait_settled(&expect).await;
    a.assert_final(&expect).await;
    let peaks = a.monitor.peaks();
    assert!(peaks.slot_holders <= 1, "{}: {peaks:#?}", case.name);
    assert!(peaks.granted <= 1, "{}: {peaks:#?}", case.name);
    assert!(peaks.disrupted <= 1, "{}: {peaks:#?}", case.name);
    a.stop().await;
}

macro_rules! case_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let case = CASES.iter().find(|c| c.name == $name).expect("a case of that name");
                run_case(case).await;
            }
        )*

        #[test]
        fn every_case_has_a_test() {
            let tested = [$($name),*];
            for c in CASES {
                assert!(tested.contains(&c.name), "no test for case {}", c.name);
            }
        }
    };
}

case_tests! {
    adopts_reboot_needed => "needed",
    adopts_a_grant_not_started => "granted",
    adopts_a_node_mid_drain_and_reboots_it_once => "draining",
    adopts_a_rebooted_node_still_in_progress_without_rebooting_again => "rebooted-in-progress",
    adopts_a_rebooted_node_still_cordoned => "back-cordoned",
    adopts_a_node_waiting_for_after_reboot_hooks => "after-reboot",
    adopts_a_node_waiting_for_before_reboot_hooks => "before-reboot",
    adopts_a_paused_node => "paused",
    adopts_a_paused_node_with_a_grant => "paused-granted",
    adopts_an_admin_cordon => "admin-cordoned",
    adopts_an_admin_cordon_mid_drain => "admin-cordoned-draining",
    adopts_a_left_over_fluo_cordon => "fluo-cordoned",
}

/// Every state at once, with two at a time: the slot holders FLUO left are
/// counted, so no more than `max(2, holders handed over)` hold a slot at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_a_cluster_with_every_state_at_once() {
    let max = 2;
    let fresh = ["fresh-1", "fresh-2"];
    let a = adopt(CASES, &fresh, max).await;
    let paused: Vec<&Case> = CASES.iter().filter(|c| is_paused(c)).collect();
    let mut expect: Vec<(&str, u32, bool)> = CASES
        .iter()
        .filter(|c| !is_paused(c))
        .map(|c| (c.name, c.reboots, c.admin_cordon))
        .collect();
    expect.extend(fresh.iter().map(|n| (*n, 1, false)));
    a.wait_settled(&expect).await;
    assert_paused_untouched(&a, &paused).await;
    for c in &paused {
        unpause(&a.nodes, c.name).await;
        expect.push((c.name, c.reboots, c.admin_cordon));
    }
    a.assert_final(&expect).await;
    let peaks = a.monitor.peaks();
    let limit = a.holders_at_start.max(max as usize);
    assert!(
        peaks.slot_holders <= limit,
        "{} slot holders, limit {limit}: {peaks:#?}",
        peaks.slot_holders
    );
    assert!(peaks.granted <= limit, "{peaks:#?}");
    a.stop().await;
}
