use super::*;
use crate::node::NodeView;
use crate::patch::apply_all;
use crate::testutil::*;
use proptest::prelude::*;

fn cfg(max: u32) -> OperatorConfig {
    OperatorConfig {
        max_rebooting: MaxRebooting::Count(max),
        ..Default::default()
    }
}

fn hooks(mut c: OperatorConfig, before: &[&str], after: &[&str]) -> OperatorConfig {
    c.before_reboot_annotations = before.iter().map(|s| s.to_string()).collect();
    c.after_reboot_annotations = after.iter().map(|s| s.to_string()).collect();
    c
}

fn with_window(mut c: OperatorConfig, start: &str, len: &str) -> OperatorConfig {
    c.window = Some(RebootWindow::parse(start, len).unwrap());
    c
}

fn needs(name: &str) -> NodeView {
    node(name)
        .ann(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "false")
}

fn granted(name: &str) -> NodeView {
    needs(name)
        .ann(keys::REBOOT_OK, "true")
        .time(keys::GRANTED_AT, t0() - mins(5))
}

fn patch_for<'a>(d: &'a Decision, n: &str) -> Option<&'a NodePatch> {
    d.patches.iter().find(|p| p.node == n)
}

fn names(d: &Decision) -> Vec<&str> {
    d.patches.iter().map(|p| p.node.as_str()).collect()
}

fn ann<'a>(p: &'a NodePatch, k: &str) -> Option<Option<&'a str>> {
    p.annotations.get(k).map(|v| v.as_deref())
}

fn lbl<'a>(p: &'a NodePatch, k: &str) -> Option<Option<&'a str>> {
    p.labels.get(k).map(|v| v.as_deref())
}

#[test]
fn max_rebooting_flag() {
    assert_eq!("2".parse(), Ok(MaxRebooting::Count(2)));
    assert_eq!(" 25% ".parse(), Ok(MaxRebooting::Percent(25)));
    assert_eq!("100%".parse(), Ok(MaxRebooting::Percent(100)));
    for bad in [
        "0",
        "0%",
        "",
        "%",
        "-1",
        "1.5",
        "101%",
        "two",
        "2 %",
        "99999999999",
    ] {
        let e = bad.parse::<MaxRebooting>().unwrap_err();
        assert!(e.to_string().starts_with("--max-rebooting-nodes: "), "{e}");
    }
    assert_eq!(MaxRebooting::default(), MaxRebooting::Count(1));
    assert_eq!(MaxRebooting::Count(3).resolve(0), 3);
    assert_eq!(MaxRebooting::Percent(25).resolve(10), 2);
    assert_eq!(MaxRebooting::Percent(25).resolve(3), 1);
    assert_eq!(MaxRebooting::Percent(25).resolve(0), 1);
    assert_eq!(MaxRebooting::Percent(100).resolve(7), 7);
    assert_eq!(MaxRebooting::Percent(50).to_string(), "50%");
}

#[test]
fn annotation_list() {
    assert_eq!(parse_annotation_list(" a, b ,,c,"), vec!["a", "b", "c"]);
    assert!(parse_annotation_list("").is_empty());
}

#[test]
fn step5_labels_rebootable_nodes_up_to_capacity_by_name() {
    let c = hooks(cfg(2), &["hook-a"], &[]);
    let nodes = vec![
        needs("c"),
        needs("a").ann("hook-a", "true"), // stale hook from earlier: cleared
        needs("b"),
        node("d"),                                   // not needed
        needs("e").ann(keys::REBOOT_PAUSED, "true"), // paused
    ];
    let d = decide(&nodes, &c, t0());
    assert_eq!(names(&d), vec!["a", "b"]);
    let a = patch_for(&d, "a").unwrap();
    assert_eq!(lbl(a, keys::BEFORE_REBOOT), Some(Some("true")));
    assert_eq!(ann(a, "hook-a"), Some(None));
    assert_eq!(ann(a, keys::REBOOT_OK), None);
    assert!(d.problems.is_empty());
    assert_eq!(d.next_check, None);
}

#[test]
fn without_before_hooks_grants_directly() {
    let d = decide(&[needs("a")], &cfg(1), t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("true")));
    assert_eq!(ann(p, keys::GRANTED_AT), Some(Some("2024-05-01T12:00:00Z")));
    assert_eq!(ann(p, keys::GRANT_EXPIRES), None); // no window: no expiry, nothing to remove
    assert!(p.labels.is_empty());
    // with a window: expires at its end
    let c = with_window(cfg(1), "11:00", "2h");
    let d = decide(&[needs("a")], &c, t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(
        ann(p, keys::GRANT_EXPIRES),
        Some(Some("2024-05-01T13:00:00Z"))
    );
    assert_eq!(d.next_check, Some(t0() + mins(60)));
}

#[test]
fn step4_grants_when_before_hooks_done_and_window_open() {
    let c = with_window(hooks(cfg(1), &["hook-a", "hook-b"], &[]), "11:00", "2h");
    let n = needs("a")
        .lbl(keys::BEFORE_REBOOT, "true")
        .ann("hook-a", "true");
    let d = decide(std::slice::from_ref(&n), &c, t0());
    assert!(d.patches.is_empty(), "{d:?}"); // hook-b missing
    let n = n.ann("hook-b", "true");
    let d = decide(std::slice::from_ref(&n), &c, t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(lbl(p, keys::BEFORE_REBOOT), Some(None));
    assert_eq!(ann(p, "hook-a"), Some(None));
    assert_eq!(ann(p, "hook-b"), Some(None));
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("true")));
    assert_eq!(
        ann(p, keys::GRANT_EXPIRES),
        Some(Some("2024-05-01T13:00:00Z"))
    );
    // hooks "false" or anything but "true" do not count
    let d = decide(&[n.clone().ann("hook-b", "yes")], &c, t0());
    assert!(d.patches.is_empty());
}

#[test]
fn step4_never_grants_outside_the_window_fluo_201() {
    let c = with_window(hooks(cfg(1), &["hook-a"], &[]), "11:00", "2h");
    let n = needs("a")
        .lbl(keys::BEFORE_REBOOT, "true")
        .ann("hook-a", "true");
    let late = t0() + mins(61); // 13:01, closed
    let d = decide(std::slice::from_ref(&n), &c, late);
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(ann(p, keys::REBOOT_OK), None);
    assert_eq!(lbl(p, keys::BEFORE_REBOOT), Some(None)); // dropped: picked afresh next window
    assert_eq!(ann(p, "hook-a"), Some(None));
    assert_eq!(d.next_check, Some(t0() + TimeDelta::hours(23))); // tomorrow 11:00
    // and nothing new is picked outside the window
    let d = decide(&[needs("b")], &c, late);
    assert!(d.patches.is_empty());
}

#[test]
fn step1_drops_before_label_from_nodes_no_longer_rebootable() {
    let c = hooks(cfg(1), &["hook-a"], &[]);
    for n in [
        node("a").ann(keys::REBOOT_NEEDED, "false"),
        needs("a").ann(keys::REBOOT_PAUSED, "true"),
        needs("a").ann(keys::REBOOT_IN_PROGRESS, "true"),
    ] {
        let n = n.lbl(keys::BEFORE_REBOOT, "true").ann("hook-a", "true");
        let d = decide(&[n], &c, t0());
        let p = patch_for(&d, "a").unwrap();
        assert_eq!(lbl(p, keys::BEFORE_REBOOT), Some(None));
        assert_eq!(ann(p, "hook-a"), Some(None));
        assert_eq!(ann(p, keys::REBOOT_OK), None);
    }
}

#[test]
fn step2_releases_after_hooks_done() {
    let c = hooks(cfg(1), &[], &["hook-a"]);
    let n = node("a")
        .ann(keys::REBOOT_NEEDED, "false")
        .ann(keys::REBOOT_OK, "true")
        .time(keys::GRANTED_AT, t0() - mins(30))
        .time(keys::GRANT_EXPIRES, t0() - mins(1))
        .lbl(keys::AFTER_REBOOT, "true");
    let d = decide(std::slice::from_ref(&n), &c, t0());
    assert!(d.patches.is_empty()); // waiting for hook-a; expiry irrelevant now
    let n = n.ann("hook-a", "true");
    let d = decide(std::slice::from_ref(&n), &c, t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(lbl(p, keys::AFTER_REBOOT), Some(None));
    assert_eq!(ann(p, "hook-a"), Some(None));
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("false")));
    assert_eq!(ann(p, keys::GRANTED_AT), Some(None));
    assert_eq!(ann(p, keys::GRANT_EXPIRES), Some(None));
    // not while a reboot is in progress
    let d = decide(&[n.ann(keys::REBOOT_IN_PROGRESS, "true")], &c, t0());
    assert!(d.patches.is_empty());
}

#[test]
fn step3_labels_nodes_that_came_back() {
    let c = hooks(cfg(1), &[], &["hook-a"]);
    let n = node("a")
        .ann(keys::REBOOT_NEEDED, "false")
        .ann(keys::REBOOT_IN_PROGRESS, "false")
        .ann(keys::REBOOT_OK, "true")
        .ann("hook-a", "true"); // stale from an earlier cycle
    let d = decide(std::slice::from_ref(&n), &c, t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(lbl(p, keys::AFTER_REBOOT), Some(Some("true")));
    assert_eq!(ann(p, "hook-a"), Some(None));
    assert_eq!(ann(p, keys::REBOOT_OK), None);
    // no after hooks: release at once
    let d = decide(&[n], &cfg(1), t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("false")));
    assert!(p.labels.is_empty());
}

#[test]
fn expired_grant_is_withdrawn() {
    let n = granted("a").time(keys::GRANT_EXPIRES, t0());
    let d = decide(std::slice::from_ref(&n), &cfg(1), t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(
        ann(p, keys::REBOOT_OK),
        None,
        "re-granted in the same decision: no window"
    );
    assert_eq!(ann(p, keys::GRANT_EXPIRES), Some(None));
    assert_eq!(ann(p, keys::GRANTED_AT), Some(Some("2024-05-01T12:00:00Z")));
    // with a closed window it stays withdrawn
    let c = with_window(cfg(1), "11:00", "1h");
    let d = decide(std::slice::from_ref(&n), &c, t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("false")));
    assert_eq!(ann(p, keys::GRANT_EXPIRES), Some(None));
    assert_eq!(ann(p, keys::GRANTED_AT), Some(None));
    // not yet expired: left alone, and a wake-up at expiry
    let n = granted("a").time(keys::GRANT_EXPIRES, t0() + mins(7));
    let d = decide(&[n], &cfg(1), t0());
    assert!(d.patches.is_empty());
    assert_eq!(d.next_check, Some(t0() + mins(7)));
}

#[test]
fn grant_without_expiry_is_bounded_by_the_window() {
    let c = with_window(cfg(1), "11:00", "2h");
    let d = decide(&[granted("a")], &c, t0());
    assert_eq!(
        ann(patch_for(&d, "a").unwrap(), keys::GRANT_EXPIRES),
        Some(Some("2024-05-01T13:00:00Z"))
    );
    let d = decide(&[granted("a")], &c, t0() + mins(90));
    assert_eq!(
        ann(patch_for(&d, "a").unwrap(), keys::REBOOT_OK),
        Some(Some("false"))
    );
    // without a window, no expiry is added
    assert!(decide(&[granted("a")], &cfg(1), t0()).patches.is_empty());
}

#[test]
fn paused_grant_not_started_is_withdrawn() {
    let d = decide(
        &[granted("a").ann(keys::REBOOT_PAUSED, "true")],
        &cfg(1),
        t0(),
    );
    assert_eq!(
        ann(patch_for(&d, "a").unwrap(), keys::REBOOT_OK),
        Some(Some("false"))
    );
    // in progress: left alone
    let n = granted("a")
        .ann(keys::REBOOT_PAUSED, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true");
    assert!(decide(&[n], &cfg(1), t0()).patches.is_empty());
}

#[test]
fn drain_failure_withdraws_grant_and_backs_off() {
    let failed_at = t0() - mins(1);
    let n = granted("a").ann(
        keys::DRAIN_FAILURE,
        &format!("{} timeout", crate::node::format_time(failed_at)),
    );
    let d = decide(&[n.clone(), needs("b")], &cfg(1), t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("false")));
    assert_eq!(ann(p, keys::GRANTED_AT), Some(None));
    // the freed slot goes to b, a is in backoff
    assert_eq!(
        ann(patch_for(&d, "b").unwrap(), keys::REBOOT_OK),
        Some(Some("true"))
    );
    assert_eq!(d.next_check, Some(failed_at + DRAIN_RETRY_BACKOFF));
    // after the backoff, a competes again, but after nodes without failures
    let mut nodes = vec![n, needs("b"), needs("c")];
    apply_all(&mut nodes, &d.patches);
    nodes[1] = needs("b"); // b done meanwhile
    let later = failed_at + DRAIN_RETRY_BACKOFF;
    let d = decide(&nodes, &cfg(1), later);
    assert_eq!(names(&d), vec!["b"]);
    let d = decide(&[nodes[0].clone(), nodes[2].clone()], &cfg(1), later);
    assert_eq!(names(&d), vec!["c"]);
    let d = decide(&nodes[..1], &cfg(1), later);
    assert_eq!(names(&d), vec!["a"]);
    // a failure older than the grant is history: grant kept
    let n = granted("x").ann(
        keys::DRAIN_FAILURE,
        &format!("{} old", crate::node::format_time(t0() - mins(6))),
    );
    assert!(decide(&[n], &cfg(1), t0()).patches.is_empty());
}

#[test]
fn capacity_counts_every_slot_holder_including_hand_annotated() {
    let c = hooks(cfg(2), &[], &["hook-a"]);
    for holder in [
        node("h")
            .lbl(keys::BEFORE_REBOOT, "true")
            .ann(keys::REBOOT_NEEDED, "true"),
        node("h").lbl(keys::AFTER_REBOOT, "true"),
        node("h")
            .ann(keys::REBOOT_OK, "true")
            .ann(keys::REBOOT_NEEDED, "true"),
        node("h").ann(keys::REBOOT_IN_PROGRESS, "true"),
        node("h").ann(keys::AGENT_MADE_UNSCHEDULABLE, "true"),
        node("h").ann(keys::REBOOT_OK, "yes"), // malformed: counted, problem
    ] {
        let d = decide(&[holder.clone(), needs("a"), needs("b")], &c, t0());
        let granted: Vec<_> = d
            .patches
            .iter()
            .filter(|p| p.node != "h" && ann(p, keys::REBOOT_OK) == Some(Some("true")))
            .map(|p| p.node.as_str())
            .collect();
        assert_eq!(granted, vec!["a"], "{holder:?}");
    }
    // More holders than the max: nothing new, and no panic / negative.
    let nodes = vec![
        node("h1").ann(keys::REBOOT_IN_PROGRESS, "true"),
        node("h2").ann(keys::REBOOT_IN_PROGRESS, "true"),
        node("h3").ann(keys::REBOOT_IN_PROGRESS, "true"),
        needs("a"),
    ];
    assert!(decide(&nodes, &c, t0()).patches.is_empty());
    // An admin cordon alone does not hold a slot.
    let d = decide(&[needs("a").cordoned(), needs("b").cordoned()], &c, t0());
    assert_eq!(names(&d), vec!["a", "b"]);
}

#[test]
fn percent_capacity() {
    let c = OperatorConfig {
        max_rebooting: MaxRebooting::Percent(50),
        ..Default::default()
    };
    let nodes: Vec<_> = ["a", "b", "c", "d", "e"].iter().map(|n| needs(n)).collect();
    assert_eq!(names(&decide(&nodes, &c, t0())), vec!["a", "b"]);
}

#[test]
fn malformed_node_gets_a_problem_and_no_patch_others_continue() {
    let nodes = vec![
        needs("a").ann(keys::REBOOT_PAUSED, "maybe"),
        needs("b"),
        needs("c")
            .time(keys::GRANT_EXPIRES, t0())
            .ann(keys::GRANT_EXPIRES, "soon"),
    ];
    let d = decide(&nodes, &cfg(3), t0());
    assert_eq!(names(&d), vec!["b"]);
    assert_eq!(d.problems.len(), 2);
    assert_eq!(d.problems[0].node, "a");
    assert!(
        d.problems[0].message.contains(keys::REBOOT_PAUSED)
            && d.problems[0].message.contains("\"maybe\"")
    );
    assert!(d.problems[1].message.contains(keys::GRANT_EXPIRES));
}

#[test]
fn not_ready_nodes_are_not_picked() {
    let mut n = needs("a");
    n.ready = false;
    assert!(
        decide(&[n, needs("b")], &cfg(1), t0())
            .patches
            .iter()
            .all(|p| p.node == "b")
    );
}

#[test]
fn nodes_mid_reboot_are_left_to_their_agent() {
    // FLUO hand-over: granted and in progress, no grant bookkeeping of ours.
    let n = needs("a")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .cordoned();
    let d = decide(&[n, needs("b")], &cfg(1), t0());
    assert!(d.patches.is_empty());
}

#[test]
fn window_next_check_and_closed_window() {
    let c = with_window(cfg(1), "Thu 02:00", "1h");
    let d = decide(&[needs("a")], &c, t0()); // Wed 12:00
    assert!(d.patches.is_empty());
    assert_eq!(d.next_check, Some(t0() + TimeDelta::hours(14)));
    let d = decide(&[needs("a")], &c, t0() + TimeDelta::hours(14));
    assert_eq!(
        ann(patch_for(&d, "a").unwrap(), keys::GRANT_EXPIRES),
        Some(Some("2024-05-02T03:00:00Z"))
    );
}

fn any_config() -> impl Strategy<Value = OperatorConfig> {
    let max = prop_oneof![
        (1u32..4).prop_map(MaxRebooting::Count),
        (1u32..101).prop_map(MaxRebooting::Percent)
    ];
    let window = prop::option::of((prop::option::of(0u8..7), 0u32..24, 1u32..600).prop_map(
        |(d, h, len)| {
            let start = match d {
                Some(d) => format!("{:?} {h}:00", chrono::Weekday::try_from(d).unwrap()),
                None => format!("{h}:00"),
            };
            RebootWindow::parse(&start, &format!("{len}m")).unwrap()
        },
    ));
    let hook_sets = || {
        prop::sample::select(vec![
            vec![],
            vec!["hook-a".to_string()],
            vec!["hook-a".to_string(), "hook-b".to_string()],
        ])
    };
    (max, window, hook_sets(), hook_sets()).prop_map(|(max_rebooting, window, b, a)| {
        OperatorConfig {
            max_rebooting,
            window,
            before_reboot_annotations: b,
            after_reboot_annotations: a,
        }
    })
}

fn any_cluster(now: chrono::DateTime<chrono::Utc>) -> impl Strategy<Value = Vec<NodeView>> {
    (1usize..8).prop_flat_map(move |n| {
        (0..n)
            .map(|i| any_node(format!("n{i}"), now))
            .collect::<Vec<_>>()
    })
}

fn holders(nodes: &[NodeView]) -> usize {
    nodes.iter().filter(|v| v.holds_slot()).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn operator_invariants(
        nodes in any_cluster(t0()),
        c in any_config(),
        dt in -(7 * 24 * 60i64)..(7 * 24 * 60),
    ) {
        let now = t0() + mins(dt);
        let d = decide(&nodes, &c, now);
        let max = c.max_rebooting.resolve(nodes.len());
        let before = holders(&nodes);
        let mut after = nodes.clone();
        apply_all(&mut after, &d.patches);
        // Never adds a slot holder beyond the max.
        prop_assert!(holders(&after) <= max.max(before), "{} > max({max}, {before})", holders(&after));
        let open = c.window.is_none_or(|w| w.contains(now));
        let mut seen = std::collections::BTreeSet::new();
        for p in &d.patches {
            prop_assert!(!p.is_empty());
            prop_assert!(seen.insert(p.node.clone()), "two patches for {}", p.node);
            let orig = nodes.iter().find(|v| v.name == p.node).unwrap();
            prop_assert!(NodeState::parse(orig).is_ok(), "patched a malformed node");
            if !open {
                prop_assert_ne!(ann(p, keys::REBOOT_OK), Some(Some("true")));
                prop_assert_ne!(lbl(p, keys::BEFORE_REBOOT), Some(Some("true")));
            }
            // The operator never writes the agent's keys.
            for k in [keys::REBOOT_IN_PROGRESS, keys::REBOOT_NEEDED, keys::AGENT_MADE_UNSCHEDULABLE, keys::REBOOT_BOOT_ID, keys::DRAIN_FAILURE, keys::REBOOT_PAUSED] {
                prop_assert!(!p.annotations.contains_key(k));
            }
            prop_assert_eq!(p.unschedulable, None);
            // A new grant only on a rebootable node (or one waiting in before-reboot).
            if ann(p, keys::REBOOT_OK) == Some(Some("true")) {
                let s = NodeState::parse(orig).unwrap();
                prop_assert!(s.rebootable());
                prop_assert!(open);
            }
        }
        for pr in &d.problems {
            let v = nodes.iter().find(|v| v.name == pr.node).unwrap();
            prop_assert!(NodeState::parse(v).is_err());
        }
        prop_assert_eq!(d.problems.len(), nodes.iter().filter(|v| NodeState::parse(v).is_err()).count());
        if let Some(t) = d.next_check {
            prop_assert!(t > now);
        }
        // Deciding again at the same instant converges.
        let mut cur = after;
        let mut rounds = 0;
        loop {
            let d2 = decide(&cur, &c, now);
            if d2.patches.is_empty() { break; }
            let b2 = holders(&cur);
            apply_all(&mut cur, &d2.patches);
            prop_assert!(holders(&cur) <= max.max(b2));
            rounds += 1;
            prop_assert!(rounds < 4, "no fixpoint: {:?}", d2);
        }
    }
}
