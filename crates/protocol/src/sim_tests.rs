//! Whole-cluster simulations: the real operator and agent decisions, driven
//! in random interleavings, with hooks, drain failures and agent restarts.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use crate::agent::{self, AgentInput, AgentStep, DrainTimeoutAction};
use crate::hostinfo::HostInfo;
use crate::keys;
use crate::node::NodeView;
use crate::operator::{MaxRebooting, OperatorConfig, decide};
use crate::patch::apply_all;
use crate::testutil::*;
use crate::update_engine::UpdateStatus;

struct SimNode {
    view: NodeView,
    host: UpdateStatus,
    drained: bool,
    boots: u32,
    reboots: u32,
    drain_failures_left: u32,
    admin_cordoned: bool,
}

struct Sim {
    nodes: Vec<SimNode>,
    cfg: OperatorConfig,
    now: DateTime<Utc>,
    info: HostInfo,
    max: usize,
    max_seen: usize,
}

impl Sim {
    fn new(n: usize, cfg: OperatorConfig, failures: &[u32], cordoned: &[bool]) -> Sim {
        let nodes = (0..n)
            .map(|i| {
                let mut view = node(&format!("n{i}"));
                view.unschedulable = cordoned[i];
                SimNode {
                    view,
                    host: need_reboot(),
                    drained: false,
                    boots: 1,
                    reboots: 0,
                    drain_failures_left: failures[i],
                    admin_cordoned: cordoned[i],
                }
            })
            .collect();
        let max = cfg.max_rebooting.resolve(n);
        Sim {
            nodes,
            cfg,
            now: t0(),
            info: HostInfo::default(),
            max,
            max_seen: 0,
        }
    }

    fn views(&self) -> Vec<NodeView> {
        self.nodes.iter().map(|n| n.view.clone()).collect()
    }

    fn check(&mut self) {
        let held = self.nodes.iter().filter(|n| n.view.holds_slot()).count();
        let ours_cordoned = self
            .nodes
            .iter()
            .filter(|n| n.view.unschedulable && !n.admin_cordoned)
            .count();
        assert!(
            held <= self.max,
            "{held} nodes hold slots, max {}",
            self.max
        );
        assert!(ours_cordoned <= self.max);
        self.max_seen = self.max_seen.max(held);
    }

    fn operator(&mut self) {
        let d = decide(&self.views(), &self.cfg, self.now);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let mut views = self.views();
        apply_all(&mut views, &d.patches);
        for (n, v) in self.nodes.iter_mut().zip(views) {
            n.view = v;
        }
        self.check();
    }

    fn hooks(&mut self, i: usize) {
        let cfg = self.cfg.clone();
        let v = &mut self.nodes[i].view;
        for (label, hooks) in [
            (keys::BEFORE_REBOOT, &cfg.before_reboot_annotations),
            (keys::AFTER_REBOOT, &cfg.after_reboot_annotations),
        ] {
            if v.label(label) == Some("true") {
                for h in hooks {
                    v.annotations.insert(h.clone(), "true".into());
                }
            }
        }
    }

    /// One agent step; returns false when it waits.
    fn agent(&mut self, i: usize) -> bool {
        let now = self.now;
        let n = &mut self.nodes[i];
        let step = agent::next_step(&AgentInput {
            node: &n.view,
            host: Some(&n.host),
            info: &self.info,
            drained: n.drained,
            now,
            pods: None,
            pod_recovery_timeout: crate::evicted::DEFAULT_POD_RECOVERY_TIMEOUT,
            options: Default::default(),
            sentinel: None,
        });
        let progressed = match step {
            AgentStep::Patch(p) => {
                p.apply(&mut n.view);
                true
            }
            AgentStep::Drain => {
                if n.drain_failures_left > 0 {
                    n.drain_failures_left -= 1;
                    match agent::drain_failed(&n.view, "pdb", DrainTimeoutAction::Uncordon, now) {
                        AgentStep::Patch(p) => p.apply(&mut n.view),
                        other => panic!("{other:?}"),
                    }
                } else {
                    n.drained = true;
                }
                true
            }
            AgentStep::Reboot => {
                assert!(agent::may_reboot(&n.view, n.drained));
                assert_eq!(n.view.annotation(keys::REBOOT_OK), Some("true"));
                n.boots += 1;
                n.view.boot_id = format!("b{}", n.boots);
                n.reboots += 1;
                n.drained = false;
                n.host = idle();
                true
            }
            AgentStep::Wait(_) => false,
        };
        self.check();
        progressed
    }

    fn settled(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.reboots == 1
                && n.view.annotation(keys::REBOOT_OK) != Some("true")
                && !n.view.holds_slot()
                && n.view.unschedulable == n.admin_cordoned
        })
    }

    /// Fair round-robin until everything is done.
    fn finish(&mut self) {
        for _ in 0..400 {
            if self.settled() {
                return;
            }
            self.operator();
            for i in 0..self.nodes.len() {
                self.hooks(i);
                let mut k = 0;
                while self.agent(i) {
                    k += 1;
                    assert!(k < 20, "agent loops");
                }
            }
            self.now += TimeDelta::minutes(3);
        }
        panic!("cluster did not settle");
    }
}

#[test]
fn five_nodes_max_two_every_node_reboots_once() {
    let cfg = OperatorConfig {
        max_rebooting: MaxRebooting::Count(2),
        before_reboot_annotations: vec!["hook-a".into()],
        after_reboot_annotations: vec!["hook-b".into()],
        window: None,
        ..Default::default()
    };
    let mut sim = Sim::new(
        5,
        cfg,
        &[0, 2, 0, 0, 1],
        &[false, false, true, false, false],
    );
    sim.finish();
    assert!(sim.nodes.iter().all(|n| n.reboots == 1));
    assert_eq!(sim.max_seen, 2);
    assert!(sim.nodes[2].view.unschedulable, "admin cordon kept");
    assert!(
        sim.nodes
            .iter()
            .all(|n| n.view.annotation(keys::REBOOT_NEEDED) == Some("false"))
    );
}

#[derive(Debug, Clone)]
enum Action {
    Operator,
    Agent(usize),
    Hooks(usize),
    Restart(usize),
    Tick(i64),
}

fn action(n: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::Operator),
        6 => (0..n).prop_map(Action::Agent),
        2 => (0..n).prop_map(Action::Hooks),
        1 => (0..n).prop_map(Action::Restart),
        1 => (1i64..15).prop_map(Action::Tick),
    ]
}

type Scenario = (
    usize,
    u32,
    Vec<String>,
    Vec<String>,
    Vec<u32>,
    Vec<bool>,
    Vec<Action>,
);

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..6).prop_flat_map(|n| {
        (
            Just(n),
            1u32..4,
            prop::sample::select(vec![vec![], vec!["hook-a".to_string()]]),
            prop::sample::select(vec![vec![], vec!["hook-b".to_string()]]),
            prop::collection::vec(0u32..3, n),
            prop::collection::vec(prop::bool::weighted(0.2), n),
            prop::collection::vec(action(n), 0..250),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any interleaving of operator cycles, agent steps, hooks, agent
    /// restarts and time: never more than the max nodes hold slots (so never
    /// more than the max cordoned by us), reboots only when allowed, every
    /// node reboots exactly once, admin cordons stay, ours are undone.
    #[test]
    fn any_interleaving_is_safe_and_finishes((n, max, before, after, failures, cordoned, actions) in scenario()) {
        let cfg = OperatorConfig {
            max_rebooting: MaxRebooting::Count(max),
            before_reboot_annotations: before,
            after_reboot_annotations: after,
            window: None,
            ..Default::default()
        };
        let mut sim = Sim::new(n, cfg, &failures, &cordoned);
        for a in actions {
            match a {
                Action::Operator => sim.operator(),
                Action::Agent(i) => { sim.agent(i); }
                Action::Hooks(i) => sim.hooks(i),
                Action::Restart(i) => sim.nodes[i].drained = false,
                Action::Tick(m) => sim.now += TimeDelta::minutes(m),
            }
            prop_assert!(sim.nodes.iter().all(|n| n.reboots <= 1), "a node rebooted twice");
        }
        sim.finish();
        prop_assert!(sim.settled());
    }
}
