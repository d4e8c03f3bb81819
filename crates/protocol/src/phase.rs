//! Where a node is in its reboot cycle ([`Phase`]), derived from its [`NodeState`] alone.
//!
//! The one definition of the words the operator's `fluo_nodes{state}` metric, `fluoctl
//! status` and the fleet monitor use (docs/protocol.md, "Phases"), so they cannot name the
//! same node differently.

use std::fmt;

use crate::node::NodeState;

/// A node's phase: exactly one per [`NodeState`], the first that applies in the order of
/// [`Phase::of`]'s checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Needs nothing: no reboot needed, not paused, not picked or granted.
    Idle,
    /// `reboot-needed=true`, not picked yet: waits for its turn (window, capacity, blockers).
    NeedsReboot,
    /// `reboot-paused=true` and not granted: the operator leaves it alone.
    Paused,
    /// Picked (label `before-reboot`): waits for the before-reboot hook annotations.
    WaitingForBeforeHooks,
    /// `reboot-ok=true`, its agent has not started the drain yet.
    Granted,
    /// `reboot-in-progress=true`, Ready and the boot ID it started with: cordoned and drained.
    Draining,
    /// Down (`reboot-in-progress` and NotReady or a new boot ID), or back from the reboot
    /// with `reboot-ok=true` and not released yet (the operator labels it `after-reboot`
    /// next).
    Rebooting,
    /// Back, `reboot-ok=true`: its agent waits for the pods its drain evicted to run Ready
    /// again (annotation `evicted-pods` with `back`).
    WaitingForPods,
    /// Back (label `after-reboot`): waits for the after-reboot hook annotations before the
    /// operator releases its slot.
    WaitingForAfterHooks,
    /// `stuck-since` is set: not back and released within `--reboot-timeout`, whatever else
    /// the node says.
    Stuck,
}

impl Phase {
    /// Every phase, in the order of a reboot cycle.
    pub const ALL: [Phase; 10] = [
        Phase::Idle,
        Phase::NeedsReboot,
        Phase::Paused,
        Phase::WaitingForBeforeHooks,
        Phase::Granted,
        Phase::Draining,
        Phase::Rebooting,
        Phase::WaitingForPods,
        Phase::WaitingForAfterHooks,
        Phase::Stuck,
    ];

    /// The node's phase. Checks go from the latest step of the cycle back to the first, so
    /// a node with keys of several steps (by hand, or handed over from FLUO) is where its
    /// agent and the operator act on it: `reboot-in-progress` wins over the hook labels
    /// (the agent carries on), and `reboot-ok` over `before-reboot` (the agent may start;
    /// the operator removes the label).
    pub fn of(s: &NodeState) -> Phase {
        if s.stuck_since.is_some() {
            Phase::Stuck
        } else if s.reboot_in_progress {
            let rebooted = s.reboot_boot_id.as_deref().is_some_and(|b| b != s.boot_id);
            if !s.ready || rebooted {
                Phase::Rebooting
            } else {
                Phase::Draining
            }
        } else if s.reboot_ok && s.evicted_pods.as_ref().is_some_and(|r| r.back.is_some()) {
            Phase::WaitingForPods
        } else if s.after_reboot {
            Phase::WaitingForAfterHooks
        } else if s.reboot_ok && !s.reboot_needed {
            // The agent's REBOOTED patch cleared `reboot-needed`; the operator has not
            // labelled it `after-reboot` yet (e.g. not Ready again).
            Phase::Rebooting
        } else if s.reboot_ok {
            Phase::Granted
        } else if s.before_reboot {
            Phase::WaitingForBeforeHooks
        } else if s.reboot_paused {
            Phase::Paused
        } else if s.reboot_needed {
            Phase::NeedsReboot
        } else {
            Phase::Idle
        }
    }

    /// The phase's one word: the `state` label of `fluo_nodes` and `fluoctl status`' STATE.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::NeedsReboot => "needs_reboot",
            Phase::Paused => "paused",
            Phase::WaitingForBeforeHooks => "waiting_for_before_hooks",
            Phase::Granted => "granted",
            Phase::Draining => "draining",
            Phase::Rebooting => "rebooting",
            Phase::WaitingForPods => "waiting_for_pods",
            Phase::WaitingForAfterHooks => "waiting_for_after_hooks",
            Phase::Stuck => "stuck",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evicted::EvictedPods;
    use crate::keys;
    use crate::node::{DatedReason, NodeView};
    use crate::testutil::{any_node, t0};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A well-formed node: ready, boot ID "b2", nothing set.
    fn idle() -> NodeState {
        NodeState::parse(&NodeView {
            name: "n".into(),
            boot_id: "b2".into(),
            ready: true,
            ..Default::default()
        })
        .unwrap()
    }

    fn stuck() -> Option<DatedReason> {
        Some(DatedReason {
            at: t0(),
            reason: "not back within --reboot-timeout=30m".into(),
        })
    }

    fn back() -> Option<EvictedPods> {
        Some(EvictedPods {
            back: Some(t0()),
            ..Default::default()
        })
    }

    /// Each phase's defining facts, checked against any state: the phase's own keys are
    /// set, and those of every phase checked before it are not.
    fn check(s: &NodeState) {
        let p = Phase::of(s);
        let in_progress_rebooted =
            !s.ready || s.reboot_boot_id.as_deref().is_some_and(|b| b != s.boot_id);
        let pods_back = s.evicted_pods.as_ref().is_some_and(|r| r.back.is_some());
        // Stuck overrides everything, and only it.
        assert_eq!(p == Phase::Stuck, s.stuck_since.is_some(), "{s:?}");
        if s.stuck_since.is_some() {
            return;
        }
        // In progress: draining or rebooting, and nothing else is.
        assert_eq!(
            matches!(p, Phase::Draining) || (p == Phase::Rebooting && s.reboot_in_progress),
            s.reboot_in_progress,
            "{s:?}"
        );
        match p {
            Phase::Stuck => unreachable!(),
            Phase::Draining => assert!(!in_progress_rebooted),
            Phase::Rebooting => assert!(
                (s.reboot_in_progress && in_progress_rebooted)
                    || (s.reboot_ok && !s.reboot_needed && !s.after_reboot && !pods_back)
            ),
            Phase::WaitingForPods => assert!(s.reboot_ok && pods_back),
            Phase::WaitingForAfterHooks => assert!(s.after_reboot && !(s.reboot_ok && pods_back)),
            Phase::Granted => assert!(s.reboot_ok && s.reboot_needed && !s.after_reboot),
            Phase::WaitingForBeforeHooks => assert!(s.before_reboot && !s.reboot_ok),
            Phase::Paused => assert!(s.reboot_paused && !s.reboot_ok && !s.before_reboot),
            Phase::NeedsReboot => assert!(s.rebootable() && !s.before_reboot),
            Phase::Idle => assert!(
                !s.reboot_needed
                    && !s.reboot_paused
                    && !s.reboot_ok
                    && !s.before_reboot
                    && !s.after_reboot
            ),
        }
        if s.after_reboot {
            assert!(matches!(
                p,
                Phase::Draining
                    | Phase::Rebooting
                    | Phase::WaitingForPods
                    | Phase::WaitingForAfterHooks
            ));
        }
        // The slot: every phase between the pick and the release holds one; the others
        // hold one only through a left-over `agent-made-unschedulable`.
        let in_cycle = !matches!(p, Phase::Idle | Phase::NeedsReboot | Phase::Paused);
        if in_cycle {
            assert!(s.holds_slot(), "{p}: {s:?}");
        } else {
            assert_eq!(s.holds_slot(), s.agent_made_unschedulable, "{p}: {s:?}");
        }
        // Rebootable (and not picked) is exactly `needs_reboot`.
        assert_eq!(
            p == Phase::NeedsReboot,
            s.rebootable() && !s.before_reboot && !s.after_reboot,
            "{s:?}"
        );
    }

    #[test]
    fn one_example_per_phase() {
        let mut seen = BTreeSet::new();
        let mut is = |p: Phase, f: &dyn Fn(&mut NodeState)| {
            let mut s = idle();
            f(&mut s);
            assert_eq!(Phase::of(&s), p, "{s:?}");
            check(&s);
            seen.insert(p);
        };
        is(Phase::Idle, &|_| {});
        is(Phase::NeedsReboot, &|s| s.reboot_needed = true);
        is(Phase::Paused, &|s| {
            s.reboot_needed = true;
            s.reboot_paused = true;
        });
        is(Phase::WaitingForBeforeHooks, &|s| {
            s.reboot_needed = true;
            s.before_reboot = true;
        });
        is(Phase::Granted, &|s| {
            s.reboot_needed = true;
            s.reboot_ok = true;
        });
        let in_progress = |s: &mut NodeState| {
            s.reboot_needed = true;
            s.reboot_ok = true;
            s.reboot_in_progress = true;
            s.agent_made_unschedulable = true;
            s.reboot_boot_id = Some("b2".into());
        };
        is(Phase::Draining, &in_progress);
        is(Phase::Rebooting, &|s| {
            in_progress(s);
            s.ready = false;
        });
        is(Phase::Rebooting, &|s| {
            in_progress(s);
            s.reboot_boot_id = Some("b1".into()); // back with a new boot ID
        });
        is(Phase::Rebooting, &|s| s.reboot_ok = true); // back, not labelled yet
        is(Phase::WaitingForPods, &|s| {
            s.reboot_ok = true;
            s.after_reboot = true;
            s.evicted_pods = back();
        });
        is(Phase::WaitingForAfterHooks, &|s| {
            s.reboot_ok = true;
            s.after_reboot = true;
        });
        is(Phase::Stuck, &|s| {
            in_progress(s);
            s.ready = false;
            s.stuck_since = stuck();
        });
        assert_eq!(seen, Phase::ALL.into_iter().collect());
    }

    #[test]
    fn mixed_keys_go_where_the_agent_acts() {
        let mut s = idle();
        s.reboot_needed = true;
        s.before_reboot = true;
        s.reboot_ok = true;
        // The agent may start on `reboot-ok`; the operator removes the label.
        assert_eq!(Phase::of(&s), Phase::Granted);
        s.after_reboot = true;
        s.reboot_in_progress = true;
        // The agent carries on with a reboot in progress, labels or not.
        assert_eq!(Phase::of(&s), Phase::Draining);
        // Evicted pods not back yet (the drain is still running) are not waited for.
        s.reboot_in_progress = false;
        s.evicted_pods = Some(EvictedPods::default());
        assert_eq!(Phase::of(&s), Phase::WaitingForAfterHooks);
        // A paused node keeps a grant until the operator withdraws it.
        s.after_reboot = false;
        s.reboot_paused = true;
        assert_eq!(Phase::of(&s), Phase::Granted);
    }

    #[test]
    fn every_combination_of_the_keys() {
        // Every combination of what the phase may depend on: 2^12 states.
        for bits in 0u32..1 << 12 {
            let b = |i: u32| bits & (1 << i) != 0;
            let mut s = idle();
            s.reboot_needed = b(0);
            s.reboot_in_progress = b(1);
            s.reboot_ok = b(2);
            s.reboot_paused = b(3);
            s.agent_made_unschedulable = b(4);
            s.before_reboot = b(5);
            s.after_reboot = b(6);
            s.ready = b(7);
            s.reboot_boot_id = b(8).then(|| "b1".into());
            s.evicted_pods = b(9).then(back).flatten();
            s.stuck_since = b(10).then(stuck).flatten();
            s.unschedulable = b(11);
            check(&s);
        }
    }

    #[test]
    fn words() {
        let words: BTreeSet<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(words.len(), Phase::ALL.len());
        for p in Phase::ALL {
            assert_eq!(p.to_string(), p.as_str());
            // Usable as a Prometheus label value and a table cell as it is.
            assert!(
                p.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
        }
        // The words of fluo_nodes{state} before phases were shared: alert rules use them.
        for w in [
            "stuck",
            "rebooting",
            "draining",
            "waiting_for_pods",
            "granted",
        ] {
            assert!(words.contains(w), "{w}");
        }
        assert!(words.contains("paused") && words.contains("needs_reboot"));
    }

    #[test]
    fn docs_define_every_word() {
        // docs/protocol.md's table is where the words are defined for people.
        let doc = include_str!("../../../docs/protocol.md");
        for p in Phase::ALL {
            assert!(
                doc.contains(&format!("\n| `{p}` | ")),
                "{p} not in docs/protocol.md"
            );
        }
    }

    fn any_state() -> impl Strategy<Value = NodeState> {
        let flags = prop::collection::vec(any::<bool>(), 9);
        let boots = (
            prop::sample::select(vec!["b1", "b2", ""]),
            prop::option::of(prop::sample::select(vec!["b1", "b2"])),
        );
        let records = (
            prop::option::of(prop::option::of(-60i64..60)),
            prop::option::of(-60i64..60),
        );
        (flags, boots, records).prop_map(|(f, (boot, recorded), (pods, stuck_at))| {
            let at = |m: i64| t0() + chrono::TimeDelta::minutes(m);
            let mut s = idle();
            s.reboot_needed = f[0];
            s.reboot_in_progress = f[1];
            s.reboot_ok = f[2];
            s.reboot_paused = f[3];
            s.agent_made_unschedulable = f[4];
            s.before_reboot = f[5];
            s.after_reboot = f[6];
            s.ready = f[7];
            s.unschedulable = f[8];
            s.boot_id = boot.to_string();
            s.reboot_boot_id = recorded.map(str::to_string);
            s.evicted_pods = pods.map(|back| EvictedPods {
                back: back.map(at),
                ..Default::default()
            });
            s.stuck_since = stuck_at.map(|m| DatedReason {
                at: at(m),
                reason: "late".into(),
            });
            s
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn every_state_has_one_consistent_phase(s in any_state()) {
            check(&s);
        }

        #[test]
        fn every_parsed_node_has_one_consistent_phase(
            v in any_node("n".into(), t0()),
            stuck in any::<bool>(),
            pods in prop::option::of(any::<bool>()),
        ) {
            let mut v = v;
            if stuck {
                v.annotations.insert(keys::STUCK_SINCE.into(), "2024-05-01T12:00:00Z late".into());
            }
            if let Some(back) = pods {
                let record = if back {
                    r#"{"back":"2024-05-01T12:00:00Z","workloads":[]}"#
                } else {
                    r#"{"workloads":[]}"#
                };
                v.annotations.insert(keys::EVICTED_PODS.into(), record.into());
            }
            if let Ok(s) = NodeState::parse(&v) {
                check(&s);
            }
        }
    }
}
