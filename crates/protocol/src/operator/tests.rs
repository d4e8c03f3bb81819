use super::*;
use crate::node::NodeView;
use crate::node::format_time;
use crate::node::{Parsed, ParsedNode};
use crate::patch::apply_all;
use crate::schedule::Schedule;
use crate::selector::LabelSelector;
use crate::testutil::*;
use proptest::prelude::*;

mod reference;

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
        .time(keys::REBOOT_NEEDED_SINCE, t0() - mins(60))
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
fn which_nodes_need_an_operator() {
    let c = cfg(1);
    let now = t0();
    // A node that rebooted and was released keeps its history, and needs nothing.
    let done = node("done")
        .ann(keys::REBOOT_NEEDED, "false")
        .ann(keys::REBOOT_IN_PROGRESS, "false")
        .time(keys::RELEASED_AT, now - mins(3));
    assert!(!needs_operator(&node("fresh"), &c, now));
    assert!(!needs_operator(&done, &c, now));
    assert!(needs_operator(&needs("n"), &c, now));
    assert!(needs_operator(&granted("n"), &c, now));
    // A drain the operator must still withdraw, and a malformed value the leader reports.
    assert!(needs_operator(
        &node("a").ann(keys::AGENT_MADE_UNSCHEDULABLE, "true"),
        &c,
        now
    ));
    assert!(needs_operator(
        &node("m").ann(keys::REBOOT_NEEDED, "yes"),
        &c,
        now
    ));
    // Left-over grant bookkeeping a decision would clear.
    let stale = done.clone().time(keys::GRANTED_AT, now - mins(9));
    assert_eq!(
        needs_operator(&stale, &c, now),
        !decide(std::slice::from_ref(&stale), &c, now)
            .patches
            .is_empty()
    );
    // Outside --node-selector: never, whatever it says.
    let mut sel = c.clone();
    sel.node_selector = Some(LabelSelector::parse("pool=blue").unwrap());
    assert!(!needs_operator(&needs("n"), &sel, now));
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
        .time(keys::GRANTED_AT, t0() - mins(20))
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
    let d = decide(&nodes, &c, t0());
    assert!(patch_for(&d, "a").is_none(), "{d:?}");
    // (the holders only get their reboot-timeout clock started)
    for p in &d.patches {
        assert_eq!(p.annotations.keys().collect::<Vec<_>>(), [keys::GRANTED_AT]);
    }
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
    // Only the reboot timeout's clock is started.
    assert_eq!(names(&d), vec!["a"]);
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(p.annotations.len(), 1);
    assert_eq!(ann(p, keys::GRANTED_AT), Some(Some("2024-05-01T12:00:00Z")));
    assert!(p.labels.is_empty() && p.unschedulable.is_none());
    assert_eq!(d.next_check, Some(t0() + DEFAULT_REBOOT_TIMEOUT));
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

// ---- Scheduling beyond FLUO ----

fn schedule(ws: &[&str], tz: &str) -> Schedule {
    let ws: Vec<String> = ws.iter().map(|s| s.to_string()).collect();
    Schedule::from_flags(&ws, tz).unwrap().unwrap()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn granted_names(d: &Decision) -> Vec<&str> {
    d.patches
        .iter()
        .filter(|p| ann(p, keys::REBOOT_OK) == Some(Some("true")))
        .map(|p| p.node.as_str())
        .collect()
}

#[test]
fn several_windows_in_a_time_zone() {
    let c = OperatorConfig {
        windows: Some(schedule(
            &["Mon-Fri 02:00-05:00", "Sat,Sun 00:00-08:00"],
            "Europe/Berlin",
        )),
        ..cfg(1)
    };
    // Wed 2024-05-01 12:00 UTC = 14:00 CEST: closed; opens Thu 02:00 CEST = 00:00 UTC.
    let d = decide(&[needs("a")], &c, t0());
    assert!(granted_names(&d).is_empty());
    assert_eq!(d.next_check, Some(utc(2024, 5, 2, 0, 0)));
    let d = decide(&[needs("a")], &c, utc(2024, 5, 2, 0, 0));
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("true")));
    assert_eq!(
        ann(p, keys::GRANT_EXPIRES),
        Some(Some("2024-05-02T03:00:00Z")) // 05:00 CEST
    );
    // Saturday 07:59 CEST open, 08:00 closed.
    assert_eq!(
        granted_names(&decide(&[needs("a")], &c, utc(2024, 5, 4, 5, 59))),
        ["a"]
    );
    assert!(granted_names(&decide(&[needs("a")], &c, utc(2024, 5, 4, 6, 0))).is_empty());
}

#[test]
fn windows_across_dst_in_europe_berlin() {
    // 01:00-04:00 wall clock; on 2024-03-31 the clock skips 02:00-03:00.
    let c = OperatorConfig {
        windows: Some(schedule(&["01:00-04:00"], "Europe/Berlin")),
        ..cfg(1)
    };
    let d = decide(&[needs("a")], &c, utc(2024, 3, 31, 0, 30)); // 01:30 CET
    assert_eq!(
        ann(patch_for(&d, "a").unwrap(), keys::GRANT_EXPIRES),
        Some(Some("2024-03-31T02:00:00Z")) // 04:00 CEST
    );
    assert!(granted_names(&decide(&[needs("a")], &c, utc(2024, 3, 31, 2, 0))).is_empty());
    // On 2024-10-27 01:00-04:00 lasts four hours: 23:00 to 03:00 UTC.
    assert_eq!(
        granted_names(&decide(&[needs("a")], &c, utc(2024, 10, 27, 2, 30))),
        ["a"]
    );
    assert!(granted_names(&decide(&[needs("a")], &c, utc(2024, 10, 27, 3, 0))).is_empty());
}

#[test]
fn a_window_closing_mid_rollout_stops_new_grants_only() {
    let c = OperatorConfig {
        windows: Some(schedule(&["11:00-13:00"], "UTC")),
        ..cfg(3)
    };
    let rebooting = needs("r")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .time(keys::GRANTED_AT, t0() + mins(50));
    let waiting = granted("w").time(keys::GRANT_EXPIRES, t0() + mins(60));
    let late = t0() + mins(61);
    let d = decide(&[rebooting, waiting, needs("n")], &c, late);
    assert!(
        patch_for(&d, "r").is_none(),
        "the drain in progress finishes"
    );
    assert_eq!(
        ann(patch_for(&d, "w").unwrap(), keys::REBOOT_OK),
        Some(Some("false"))
    );
    assert!(patch_for(&d, "n").is_none());
}

#[test]
fn per_zone_maximum_on_top_of_the_global_one() {
    let c = OperatorConfig {
        max_rebooting_per_zone: Some(MaxRebooting::Count(1)),
        ..cfg(3)
    };
    let z = |n: &str, zone: &str| needs(n).lbl(ZONE, zone);
    let nodes = vec![
        z("a1", "a"),
        z("a2", "a"),
        z("b1", "b"),
        z("b2", "b"),
        needs("x1"), // no zone label: their own domain
        needs("x2"),
        z("c1", "c"),
    ];
    let d = decide(&nodes, &c, t0());
    assert_eq!(granted_names(&d), ["a1", "b1", "c1"]); // global max 3
    let d = decide(
        &nodes,
        &OperatorConfig {
            max_rebooting: MaxRebooting::Count(9),
            ..c.clone()
        },
        t0(),
    );
    assert_eq!(granted_names(&d), ["a1", "b1", "c1", "x1"]);
    // A zone whose slot is held gets nothing more.
    let held = vec![
        z("a1", "a").ann(keys::REBOOT_IN_PROGRESS, "true"),
        z("a2", "a"),
        z("b1", "b"),
    ];
    assert_eq!(granted_names(&decide(&held, &c, t0())), ["b1"]);
    // Percent of the zone's managed nodes (at least 1).
    let c = OperatorConfig {
        max_rebooting_per_zone: Some(MaxRebooting::Percent(50)),
        ..cfg(10)
    };
    let mut nodes: Vec<_> = (0..4).map(|i| z(&format!("a{i}"), "a")).collect();
    nodes.push(z("b0", "b"));
    assert_eq!(granted_names(&decide(&nodes, &c, t0())), ["a0", "a1", "b0"]);
    // A custom zone label.
    let c = OperatorConfig {
        max_rebooting_per_zone: Some(MaxRebooting::Count(1)),
        zone_label: "rack".into(),
        ..cfg(10)
    };
    let nodes = vec![
        needs("a").lbl("rack", "r1"),
        needs("b").lbl("rack", "r1"),
        needs("c").lbl("rack", "r2"),
    ];
    assert_eq!(granted_names(&decide(&nodes, &c, t0())), ["a", "c"]);
}

#[test]
fn max_per_zone_flag_names_its_flag() {
    let e = MaxRebooting::parse_flag("0", MAX_PER_ZONE_FLAG).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--max-rebooting-nodes-per-zone: invalid value \"0\""),
        "{e}"
    );
    assert_eq!(
        MaxRebooting::parse_flag("30%", MAX_PER_ZONE_FLAG),
        Ok(MaxRebooting::Percent(30))
    );
}

#[test]
fn node_selector_limits_the_managed_nodes() {
    let c = OperatorConfig {
        node_selector: Some(LabelSelector::parse("role=worker").unwrap()),
        ..cfg(1)
    };
    // An unmanaged node holding a slot does not count; an unmanaged node
    // needing a reboot is never patched, even with a malformed value.
    let nodes = vec![
        node("db1")
            .lbl("role", "db")
            .ann(keys::REBOOT_IN_PROGRESS, "true"),
        needs("db2").lbl("role", "db"),
        needs("db3").lbl("role", "db").ann(keys::REBOOT_OK, "yes"),
        needs("w1").lbl("role", "worker"),
        needs("w2").lbl("role", "worker"),
    ];
    let d = decide(&nodes, &c, t0());
    assert_eq!(names(&d), ["w1"]);
    assert!(d.problems.is_empty());
    // Percent of managed nodes only.
    let c = OperatorConfig {
        max_rebooting: MaxRebooting::Percent(50),
        ..c
    };
    let mut nodes: Vec<_> = (0..6).map(|i| needs(&format!("d{i}"))).collect();
    nodes.push(needs("w1").lbl("role", "worker"));
    nodes.push(needs("w2").lbl("role", "worker"));
    assert_eq!(granted_names(&decide(&nodes, &c, t0())), ["w1"]);
}

#[test]
fn longest_waiting_first_failed_last() {
    let since = |n: &str, m: i64| needs(n).time(keys::REBOOT_NEEDED_SINCE, t0() - mins(m));
    let failed = since("a-failed", 500).ann(keys::REBOOT_FAILURES, "1").ann(
        keys::DRAIN_FAILURE,
        &format!("{} pdb", format_time(t0() - mins(30))),
    );
    let nodes = vec![
        since("z-old", 300),
        since("m-new", 5),
        failed,
        since("b-mid", 60),
    ];
    let order = |nodes: &[NodeView], k: u32| {
        let c = cfg(k);
        granted_names(&decide(nodes, &c, t0()))
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&nodes, 1), ["z-old"]);
    assert_eq!(order(&nodes, 3), ["b-mid", "m-new", "z-old"]);
    assert_eq!(order(&nodes, 4), ["a-failed", "b-mid", "m-new", "z-old"]);
    // The first time a node needs a reboot, the operator records since when.
    let d = decide(
        &[node("n")
            .ann(keys::REBOOT_NEEDED, "true")
            .ann(keys::REBOOT_PAUSED, "true")],
        &cfg(1),
        t0(),
    );
    assert_eq!(
        ann(patch_for(&d, "n").unwrap(), keys::REBOOT_NEEDED_SINCE),
        Some(Some("2024-05-01T12:00:00Z"))
    );
    // ... and forgets it once it no longer does.
    let n = node("n")
        .ann(keys::REBOOT_NEEDED, "false")
        .time(keys::REBOOT_NEEDED_SINCE, t0());
    let d = decide(&[n], &cfg(1), t0());
    assert_eq!(
        ann(patch_for(&d, "n").unwrap(), keys::REBOOT_NEEDED_SINCE),
        Some(None)
    );
}

#[test]
fn failures_back_off_exponentially_up_to_six_hours() {
    assert_eq!(failure_backoff(0), mins(10));
    assert_eq!(failure_backoff(1), mins(10));
    assert_eq!(failure_backoff(2), mins(20));
    assert_eq!(failure_backoff(3), mins(40));
    assert_eq!(failure_backoff(6), mins(320));
    assert_eq!(failure_backoff(7), mins(360));
    assert_eq!(failure_backoff(u32::MAX), mins(360));
    // A spoiled grant is withdrawn and the failure counted.
    let f = |at: chrono::DateTime<chrono::Utc>| format!("{} pdb", format_time(at));
    let n = granted("a")
        .ann(keys::REBOOT_FAILURES, "2")
        .ann(keys::DRAIN_FAILURE, &f(t0() - mins(1)));
    let d = decide(std::slice::from_ref(&n), &cfg(1), t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("false")));
    assert_eq!(ann(p, keys::REBOOT_FAILURES), Some(Some("3")));
    assert_eq!(d.next_check, Some(t0() - mins(1) + mins(40)));
    let mut after = vec![n];
    apply_all(&mut after, &d.patches);
    assert!(granted_names(&decide(&after, &cfg(1), t0() + mins(38))).is_empty());
    assert_eq!(
        granted_names(&decide(&after, &cfg(1), t0() + mins(39))),
        ["a"]
    );
    // A successful reboot resets the count.
    let back = node("a")
        .ann(keys::REBOOT_NEEDED, "false")
        .ann(keys::REBOOT_OK, "true")
        .time(keys::GRANTED_AT, t0() - mins(5))
        .ann(keys::REBOOT_FAILURES, "3");
    let p = decide(&[back], &cfg(1), t0()).patches.remove(0);
    assert_eq!(ann(&p, keys::REBOOT_FAILURES), Some(None));
    assert_eq!(
        ann(&p, keys::RELEASED_AT),
        Some(Some("2024-05-01T12:00:00Z"))
    );
}

#[test]
fn cluster_pause_stops_new_turns_and_unstarted_grants() {
    let c = hooks(cfg(5), &["hook-a"], &[]);
    let paused = ClusterInputs {
        paused: true,
        ..Default::default()
    };
    let nodes = vec![
        needs("new"),
        needs("before")
            .lbl(keys::BEFORE_REBOOT, "true")
            .ann("hook-a", "true"),
        granted("granted"),
        needs("rebooting")
            .ann(keys::REBOOT_OK, "true")
            .ann(keys::REBOOT_IN_PROGRESS, "true")
            .time(keys::GRANTED_AT, t0() - mins(3)),
    ];
    let d = decide_with(&nodes, &c, &paused, t0());
    assert!(patch_for(&d, "new").is_none());
    let b = patch_for(&d, "before").unwrap();
    assert_eq!(lbl(b, keys::BEFORE_REBOOT), Some(None));
    assert_eq!(ann(b, keys::REBOOT_OK), None);
    assert_eq!(
        ann(patch_for(&d, "granted").unwrap(), keys::REBOOT_OK),
        Some(Some("false"))
    );
    assert!(
        patch_for(&d, "rebooting").is_none(),
        "reboots in progress finish"
    );
    // Global blockers act the same.
    let blocked = ClusterInputs {
        blockers: vec!["alert KubeNodeNotReady".into()],
        ..Default::default()
    };
    assert_eq!(decide_with(&nodes, &c, &blocked, t0()).patches, d.patches);
    // Unpaused: picks again.
    let d = decide_with(&nodes, &c, &ClusterInputs::default(), t0());
    assert_eq!(
        lbl(patch_for(&d, "new").unwrap(), keys::BEFORE_REBOOT),
        Some(Some("true"))
    );
    assert_eq!(parse_pause(None), Ok(false));
    assert_eq!(parse_pause(Some("false")), Ok(false));
    assert_eq!(parse_pause(Some("true")), Ok(true));
    let e = parse_pause(Some("yes")).unwrap_err();
    assert!(e.contains(keys::PAUSED) && e.contains("\"yes\""), "{e}");
}

#[test]
fn blocking_pods_block_their_node_only() {
    let inputs = ClusterInputs {
        node_blockers: [("a".to_string(), vec!["pod default/backup".to_string()])].into(),
        ..Default::default()
    };
    let d = decide_with(&[needs("a"), needs("b")], &cfg(2), &inputs, t0());
    assert_eq!(granted_names(&d), ["b"]);
    // A grant the node has not started is withdrawn; a before-reboot label dropped.
    let c = hooks(cfg(2), &["hook-a"], &[]);
    let d = decide_with(&[granted("a")], &c, &inputs, t0());
    assert_eq!(
        ann(patch_for(&d, "a").unwrap(), keys::REBOOT_OK),
        Some(Some("false"))
    );
    let before = needs("a")
        .lbl(keys::BEFORE_REBOOT, "true")
        .ann("hook-a", "true");
    let d = decide_with(&[before], &c, &inputs, t0());
    assert_eq!(
        lbl(patch_for(&d, "a").unwrap(), keys::BEFORE_REBOOT),
        Some(None)
    );
}

#[test]
fn min_reboot_interval_spaces_picks_and_follows_releases() {
    let c = OperatorConfig {
        min_reboot_interval: mins(15),
        ..cfg(3)
    };
    let nodes = vec![needs("a"), needs("b"), needs("c")];
    // One pick at a time, even with free capacity.
    let d = decide(&nodes, &c, t0());
    assert_eq!(granted_names(&d), ["a"]);
    assert_eq!(
        ann(patch_for(&d, "a").unwrap(), keys::PICKED_AT),
        Some(Some("2024-05-01T12:00:00Z"))
    );
    let mut cur = nodes.clone();
    apply_all(&mut cur, &d.patches);
    let d = decide(&cur, &c, t0() + mins(14));
    assert!(granted_names(&d).is_empty());
    assert_eq!(d.next_check, Some(t0() + mins(15)));
    assert_eq!(granted_names(&decide(&cur, &c, t0() + mins(15))), ["b"]);
    // After a release, the next pick waits for the interval too.
    let released = node("r")
        .ann(keys::REBOOT_NEEDED, "false")
        .ann(keys::REBOOT_OK, "true")
        .time(keys::GRANTED_AT, t0() - mins(40))
        .time(keys::PICKED_AT, t0() - mins(40));
    let d = decide(&[released.clone(), needs("b")], &c, t0());
    assert_eq!(
        ann(patch_for(&d, "r").unwrap(), keys::REBOOT_OK),
        Some(Some("false"))
    );
    assert!(patch_for(&d, "b").is_none());
    let mut cur = vec![released, needs("b")];
    apply_all(&mut cur, &d.patches);
    assert!(granted_names(&decide(&cur, &c, t0() + mins(10))).is_empty());
    assert_eq!(granted_names(&decide(&cur, &c, t0() + mins(15))), ["b"]);
}

#[test]
fn stuck_nodes_are_marked_reported_and_keep_their_slot() {
    let c = cfg(1);
    let rebooting = needs("a")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1")
        .time(keys::GRANTED_AT, t0() - mins(29));
    let d = decide(&[rebooting.clone(), needs("b")], &c, t0());
    assert!(d.patches.is_empty() && d.stuck.is_empty());
    assert_eq!(d.next_check, Some(t0() + mins(1)));
    let later = t0() + mins(1);
    let d = decide(&[rebooting.clone(), needs("b")], &c, later);
    assert_eq!(names(&d), ["a"], "b waits: a keeps its slot");
    assert_eq!(d.stuck.len(), 1);
    let st = &d.stuck[0];
    assert_eq!((st.node.as_str(), st.since), ("a", later));
    assert!(
        st.reason.contains("--reboot-timeout=30m0s"),
        "{}",
        st.reason
    );
    assert!(
        st.reason.contains("reboot has not finished"),
        "{}",
        st.reason
    );
    let mark = ann(patch_for(&d, "a").unwrap(), keys::STUCK_SINCE)
        .unwrap()
        .unwrap()
        .to_string();
    assert!(mark.starts_with("2024-05-01T12:01:00Z not back"), "{mark}");
    // Marked once: the mark is kept, still reported with its first time.
    let marked = rebooting.clone().ann(keys::STUCK_SINCE, &mark);
    let d = decide(&[marked.clone(), needs("b")], &c, later + mins(30));
    assert!(d.patches.is_empty());
    assert_eq!(d.stuck[0].since, later);
    // Not Ready: another reason.
    let mut down = marked.clone();
    down.ready = false;
    let d = decide(&[down], &c, later + mins(30));
    assert!(d.stuck[0].reason.contains("not Ready"), "{:?}", d.stuck);
    assert_eq!(patch_for(&d, "a").map(|p| p.annotations.len()), Some(1));
    // It comes back and is released: the mark goes, the slot is free.
    let back = marked
        .ann(keys::REBOOT_NEEDED, "false")
        .ann(keys::REBOOT_IN_PROGRESS, "false");
    let d = decide(&[back, needs("b")], &c, later + mins(31));
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(ann(p, keys::STUCK_SINCE), Some(None));
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("false")));
    assert!(d.stuck.is_empty());
    assert_eq!(granted_names(&d), ["b"]);
    // Granted but never started (no agent).
    let d = decide(&[granted("x")], &c, t0() + mins(26));
    assert!(
        d.stuck[0].reason.contains("has not started"),
        "{:?}",
        d.stuck
    );
}

fn release(mut c: OperatorConfig) -> OperatorConfig {
    c.stuck_node_action = StuckNodeAction::Release;
    c
}

/// A node granted 31 min before t0: past the default 30 min timeout at t0.
fn late(v: NodeView) -> NodeView {
    v.time(keys::GRANTED_AT, t0() - mins(31))
}

#[test]
fn stuck_node_action_releases_only_slots_that_cannot_drain() {
    let in_progress = |v: NodeView| {
        v.ann(keys::REBOOT_IN_PROGRESS, "true")
            .ann(keys::REBOOT_BOOT_ID, "b1")
    };
    let mut down = in_progress(late(granted("a")));
    down.ready = false;
    let mut rebooted_not_ready = late(granted("a")).ann(keys::REBOOT_NEEDED, "false");
    rebooted_not_ready.ready = false;
    let mut not_started_down = late(granted("a"));
    not_started_down.ready = false;
    // (what the stuck node is doing, whether `release` gives its slot back)
    let cases: Vec<(&str, NodeView, bool)> = vec![
        (
            "granted, not started: may drain any moment",
            late(granted("a")),
            false,
        ),
        (
            "granted, not started, NotReady: drains when back",
            not_started_down,
            false,
        ),
        (
            "draining: in progress, Ready, same boot",
            in_progress(late(granted("a"))),
            false,
        ),
        (
            "in progress, boot ID unknown",
            in_progress(late(granted("a"))).boot(""),
            false,
        ),
        ("down mid-reboot: in progress, NotReady", down.clone(), true),
        (
            "rebooted, not recorded yet: in progress on a new boot",
            in_progress(late(granted("a"))).boot("b2"),
            true,
        ),
        ("rebooted, not Ready", rebooted_not_ready, true),
        (
            "rebooted, Ready, evicted pods not back",
            late(granted("a"))
                .ann(keys::REBOOT_NEEDED, "false")
                .ann(keys::EVICTED_PODS, &evicted_record(Some(t0())).to_value()),
            true,
        ),
        (
            "rebooted, after-reboot hooks missing",
            late(granted("a"))
                .ann(keys::REBOOT_NEEDED, "false")
                .lbl(keys::AFTER_REBOOT, "true"),
            true,
        ),
    ];
    for (what, a, given_back) in cases {
        let c = if what.contains("hooks") {
            hooks(cfg(1), &[], &["hook-x"])
        } else {
            cfg(1)
        };
        // hold: never; release: exactly the nodes that cannot drain.
        let d = decide(&[a.clone(), needs("b")], &c, t0());
        assert_eq!(d.stuck.len(), 1, "{what}");
        assert!(
            granted_names(&d).is_empty() && d.released.is_empty(),
            "hold: {what}"
        );
        let d = decide(&[a.clone(), needs("b")], &release(c.clone()), t0());
        assert_eq!(d.stuck.len(), 1, "{what}");
        let expect: &[&str] = if given_back { &["b"] } else { &[] };
        assert_eq!(granted_names(&d), expect, "release: {what}");
        let expect: &[&str] = if given_back { &["a"] } else { &[] };
        assert_eq!(d.released, expect, "release: {what}");
        // The stuck node keeps every mark: only `stuck-since` is written.
        // (and drops `reboot-needed-since` once it is no longer needed).
        let p = patch_for(&d, "a").unwrap();
        assert!(ann(p, keys::STUCK_SINCE).unwrap().is_some(), "{what}");
        assert!(
            p.annotations
                .keys()
                .all(|k| k == keys::STUCK_SINCE || k == keys::REBOOT_NEEDED_SINCE),
            "{what}: {p:?}"
        );
        assert!(p.labels.is_empty() && p.unschedulable.is_none(), "{what}");
        // Not past the timeout: it counts.
        let fresh = a.time(keys::GRANTED_AT, t0() - mins(29));
        let d = decide(&[fresh, needs("b")], &release(c), t0());
        assert!(
            granted_names(&d).is_empty() && d.released.is_empty(),
            "{what}"
        );
    }
    // Per zone as well: the released slot no longer counts in its zone.
    let z = |v: NodeView| v.lbl(ZONE, "z1");
    let c = OperatorConfig {
        max_rebooting_per_zone: Some(MaxRebooting::Count(1)),
        ..cfg(3)
    };
    let nodes = [z(down), z(needs("b")), z(needs("c"))];
    assert!(granted_names(&decide(&nodes, &c, t0())).is_empty());
    assert_eq!(granted_names(&decide(&nodes, &release(c), t0())), ["b"]);
}

#[test]
fn a_released_node_that_comes_back_finishes_without_a_slot() {
    let c = release(cfg(1));
    let mark = format_timestamped(t0() - mins(60), "not back within --reboot-timeout=30m0s");
    let stuck = |v: NodeView| late(v).ann(keys::STUCK_SINCE, &mark);
    // a was given back, b took the slot since; c waits.
    let b = granted("b").ann(keys::REBOOT_IN_PROGRESS, "true");
    // a comes back rebooted: released normally, its marks go; no one else is granted.
    let mut back = stuck(granted("a")).ann(keys::REBOOT_NEEDED, "false");
    back.annotations.remove(keys::REBOOT_NEEDED_SINCE);
    let d = decide(&[back.clone(), b.clone(), needs("c")], &c, t0());
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(ann(p, keys::REBOOT_OK), Some(Some("false")));
    assert_eq!(ann(p, keys::STUCK_SINCE), Some(None));
    assert!(granted_names(&d).is_empty(), "c waits for b");
    // Not Ready yet: it waits, not counting, and c still waits for b.
    let mut not_ready = back;
    not_ready.ready = false;
    let d = decide(&[not_ready, b.clone(), needs("c")], &c, t0());
    // (its mark now names the phase it waits in)
    let p = patch_for(&d, "a").unwrap();
    assert_eq!(
        p.annotations.keys().collect::<Vec<_>>(),
        [keys::STUCK_SINCE]
    );
    assert_eq!(d.released, ["a"]);
    assert!(granted_names(&d).is_empty());
    // Back on the boot it started with: its agent resumes the drain, so it
    // counts again (2 of 1): nothing new until both are done.
    let resumed = stuck(granted("a"))
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1");
    let d = decide(&[resumed, b, needs("c")], &c, t0());
    assert!(d.released.is_empty() && granted_names(&d).is_empty());
    assert_eq!(d.stuck.len(), 1);
}

#[test]
fn a_deleted_slot_holder_keeps_its_slot_until_its_node_is_back_and_ready() {
    let c = cfg(1);
    let holder = needs("gone")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .time(keys::GRANTED_AT, t0() - mins(5));
    assert!(granted_names(&decide(&[holder.clone(), needs("b")], &c, t0())).is_empty());
    // Deleted: without the record the slot would be free at once (what FLUO does).
    assert_eq!(granted_names(&decide(&[needs("b")], &c, t0())), ["b"]);
    let slot = departed_slot(&holder, NodeState::parse(&holder).ok().as_ref(), &c, t0()).unwrap();
    assert_eq!(
        slot,
        DepartedSlot {
            since: t0(),
            zone: None
        }
    );
    let inputs = ClusterInputs {
        departed: [("gone".to_string(), slot.clone())].into(),
        ..Default::default()
    };
    let at = |m| t0() + mins(m);
    // Gone, or registered again by its kubelet (no marks) but not Ready yet: still counts.
    let mut fresh = node("gone");
    fresh.ready = false;
    for nodes in [vec![needs("b")], vec![fresh.clone(), needs("b")]] {
        let d = decide_with(&nodes, &c, &inputs, at(1));
        assert!(granted_names(&d).is_empty(), "{d:?}");
        assert_eq!(d.departed, inputs.departed);
        assert!(d.departed_ended.is_empty());
        assert!(d.next_check.is_some_and(|t| t <= t0() + c.reboot_timeout));
    }
    // Back and Ready: the slot is free.
    fresh.ready = true;
    let d = decide_with(&[fresh.clone(), needs("b")], &c, &inputs, at(1));
    assert_eq!(granted_names(&d), ["b"]);
    assert!(d.departed.is_empty());
    assert_eq!(d.departed_ended, [("gone".to_string(), DepartedEnd::Back)]);
    // Re-created with its marks (from a backup): it counts as itself, once.
    let d = decide_with(&[holder.clone(), needs("b")], &c, &inputs, at(1));
    assert!(granted_names(&d).is_empty());
    assert_eq!(
        d.departed_ended,
        [("gone".to_string(), DepartedEnd::HoldsSlot)]
    );
    // Never back: --reboot-timeout after the deletion, the slot is free.
    let d = decide_with(&[needs("b")], &c, &inputs, t0() + c.reboot_timeout);
    assert_eq!(granted_names(&d), ["b"]);
    assert_eq!(
        d.departed_ended,
        [("gone".to_string(), DepartedEnd::TimedOut)]
    );
    // A node that held no slot, or is not managed, leaves nothing behind.
    let b = needs("b");
    assert_eq!(
        departed_slot(&b, NodeState::parse(&b).ok().as_ref(), &c, t0()),
        None
    );
    let mut only_a = cfg(1);
    only_a.node_selector = Some(LabelSelector::parse("pool=a").unwrap());
    assert_eq!(departed_slot(&holder, None, &only_a, t0()), None);
    // A malformed holder counts by its raw values.
    let bad = holder.clone().ann(keys::GRANTED_AT, "yesterday");
    assert!(departed_slot(&bad, None, &c, t0()).is_some());
}

#[test]
fn a_departed_slot_counts_in_its_zone() {
    let mut c = cfg(3);
    c.max_rebooting_per_zone = Some(MaxRebooting::Count(1));
    let holder = granted("gone").lbl(ZONE, "a");
    let slot = departed_slot(&holder, NodeState::parse(&holder).ok().as_ref(), &c, t0()).unwrap();
    assert_eq!(slot.zone.as_deref(), Some("a"));
    let inputs = ClusterInputs {
        departed: [("gone".to_string(), slot)].into(),
        ..Default::default()
    };
    let nodes = [needs("a1").lbl(ZONE, "a"), needs("b1").lbl(ZONE, "b")];
    assert_eq!(
        granted_names(&decide_with(&nodes, &c, &inputs, t0())),
        ["b1"]
    );
}

#[test]
fn recorded_holders_gone_from_the_cluster_depart_when_a_leader_starts() {
    let recorded: SlotHolders = [
        ("a".to_string(), Some("z1".to_string())),
        ("b".to_string(), None),
        ("c".to_string(), None),
    ]
    .into();
    let already: BTreeMap<String, DepartedSlot> = [(
        "c".to_string(),
        DepartedSlot {
            since: t0() - mins(3),
            zone: None,
        },
    )]
    .into();
    // a is gone, b is there, c departed already (its first time is kept).
    let d = unseen_departures(&recorded, &already, |n| n == "b", t0());
    assert_eq!(
        d,
        [(
            "a".to_string(),
            DepartedSlot {
                since: t0(),
                zone: Some("z1".into())
            }
        )]
        .into()
    );
    let text = format_slot_holders(&recorded).unwrap();
    assert_eq!(text, r#"{"a":"z1","b":null,"c":null}"#);
    assert_eq!(parse_slot_holders(Some(&text)), Ok(recorded));
    assert_eq!(parse_slot_holders(None), Ok(BTreeMap::new()));
    assert_eq!(format_slot_holders(&BTreeMap::new()), None);
    let e = parse_slot_holders(Some("[1]")).unwrap_err();
    assert!(
        e.contains(keys::SLOT_HOLDERS) && e.contains("no new grants"),
        "{e}"
    );
}

#[test]
fn departed_slots_round_trip_through_the_lease_annotation() {
    assert_eq!(parse_departed(None), Ok(BTreeMap::new()));
    let m: BTreeMap<String, DepartedSlot> = [
        (
            "a".to_string(),
            DepartedSlot {
                since: t0(),
                zone: Some("z1".into()),
            },
        ),
        (
            "b".to_string(),
            DepartedSlot {
                since: t0() + mins(1),
                zone: None,
            },
        ),
    ]
    .into();
    let text = format_departed(&m).unwrap();
    assert_eq!(
        text,
        r#"{"a":{"since":"2024-05-01T12:00:00Z","zone":"z1"},"b":{"since":"2024-05-01T12:01:00Z"}}"#
    );
    assert_eq!(parse_departed(Some(&text)), Ok(m));
    assert_eq!(format_departed(&BTreeMap::new()), None);
    for bad in ["", "[]", r#"{"a":{"since":"soon"}}"#, r#"{"a":{}}"#] {
        let e = parse_departed(Some(bad)).unwrap_err();
        assert!(
            e.contains(keys::DEPARTED_SLOTS) && e.contains("no new grants"),
            "{e}"
        );
    }
}

#[test]
fn health_gate_waits_for_ready_before_release() {
    let back = |ready: bool| {
        let mut n = node("a")
            .ann(keys::REBOOT_NEEDED, "false")
            .ann(keys::REBOOT_OK, "true")
            .time(keys::GRANTED_AT, t0() - mins(5));
        n.ready = ready;
        n
    };
    assert!(
        decide(&[back(false), needs("b")], &cfg(1), t0())
            .patches
            .is_empty()
    );
    assert_eq!(
        granted_names(&decide(&[back(true), needs("b")], &cfg(1), t0())),
        ["b"]
    );
    // With after hooks: labelled, released only once Ready and the hooks say so.
    let c = hooks(cfg(1), &[], &["hook-a"]);
    let waiting = |ready| {
        let mut n = back(ready)
            .lbl(keys::AFTER_REBOOT, "true")
            .ann("hook-a", "true");
        n.ready = ready;
        n
    };
    assert!(decide(&[waiting(false)], &c, t0()).patches.is_empty());
    assert_eq!(
        ann(
            &decide(&[waiting(true)], &c, t0()).patches[0],
            keys::REBOOT_OK
        ),
        Some(Some("false"))
    );
}

#[test]
fn health_gate_waits_for_the_evicted_pods() {
    let back = node("a")
        .ann(keys::REBOOT_NEEDED, "false")
        .ann(keys::REBOOT_OK, "true")
        .time(keys::GRANTED_AT, t0() - mins(5));
    let waiting = back
        .clone()
        .ann(keys::EVICTED_PODS, &evicted_record(Some(t0())).to_value());
    // Not released, so the next node is not granted (max 1).
    assert!(
        decide(&[waiting.clone(), needs("b")], &cfg(1), t0())
            .patches
            .iter()
            .all(|p| p.node == "b" && ann(p, keys::REBOOT_OK).is_none())
    );
    // The agent removed the record: released, and the next one granted.
    assert_eq!(
        granted_names(&decide(&[back.clone(), needs("b")], &cfg(1), t0())),
        ["b"]
    );
    // With after hooks done, still held by the record.
    let c = hooks(cfg(1), &[], &["hook-a"]);
    let hooked = waiting
        .clone()
        .lbl(keys::AFTER_REBOOT, "true")
        .ann("hook-a", "true");
    assert!(
        decide(std::slice::from_ref(&hooked), &c, t0())
            .patches
            .is_empty()
    );
    // Past --reboot-timeout it is reported stuck, naming the workloads.
    let d = decide(&[hooked], &c, t0() + mins(40));
    assert_eq!(d.stuck.len(), 1);
    let reason = &d.stuck[0].reason;
    assert!(
        reason.contains(keys::EVICTED_PODS) && reason.contains("default/ReplicaSet web-1"),
        "{reason}"
    );
    // A malformed record is a problem naming the key, never taken as released.
    let bad = back.ann(keys::EVICTED_PODS, "web");
    let d = decide(&[bad], &cfg(1), t0());
    assert!(d.patches.is_empty());
    assert!(d.problems[0].message.contains(keys::EVICTED_PODS));
}

const ZONE: &str = "topology.kubernetes.io/zone";

fn any_schedule() -> impl Strategy<Value = Option<Schedule>> {
    let window = (
        prop::sample::select(vec!["", "Mon-Fri ", "Sat,Sun ", "Wed ", "Sun "]),
        0u32..48,
        1u32..40,
    )
        .prop_map(|(d, s, len)| {
            let (s, e) = (s * 30, (s * 30 + len * 30) % 1440);
            let e = if e == 0 { 1440 } else { e };
            format!("{d}{:02}:{:02}-{:02}:{:02}", s / 60, s % 60, e / 60, e % 60)
        });
    let tz = prop::sample::select(vec![
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
    ]);
    prop::option::of(
        (prop::collection::vec(window, 1..3), tz)
            .prop_map(|(ws, tz)| Schedule::from_flags(&ws, tz).unwrap().unwrap()),
    )
}

fn any_config() -> impl Strategy<Value = OperatorConfig> {
    let max = || {
        prop_oneof![
            (1u32..4).prop_map(MaxRebooting::Count),
            (1u32..101).prop_map(MaxRebooting::Percent)
        ]
    };
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
    let selector = prop::sample::select(vec![None, Some("role=worker"), Some("role notin (db)")])
        .prop_map(|s| s.map(|s| LabelSelector::parse(s).unwrap()));
    (
        (max(), window, hook_sets(), hook_sets()),
        (
            any_schedule(),
            prop::option::of(max()),
            selector,
            prop::sample::select(vec![0i64, 10, 60]),
            prop::sample::select(vec![5i64, 30, 120]),
            prop::sample::select(vec![StuckNodeAction::Hold, StuckNodeAction::Release]),
        ),
    )
        .prop_map(
            |(
                (max_rebooting, window, b, a),
                (schedule, per_zone, sel, interval, timeout, stuck),
            )| {
                OperatorConfig {
                    max_rebooting,
                    // FLUO's window or ours (the command line forbids both),
                    // sometimes both (the core then needs both open).
                    window: if schedule.is_some() && max_rebooting == MaxRebooting::Count(2) {
                        None
                    } else {
                        window
                    },
                    before_reboot_annotations: b,
                    after_reboot_annotations: a,
                    windows: schedule,
                    max_rebooting_per_zone: per_zone,
                    zone_label: ZONE.to_string(),
                    node_selector: sel,
                    min_reboot_interval: mins(interval),
                    reboot_timeout: mins(timeout),
                    stuck_node_action: stuck,
                }
            },
        )
}

fn any_inputs(n: usize) -> impl Strategy<Value = ClusterInputs> {
    (
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop::collection::vec(prop::bool::weighted(0.2), n),
    )
        .prop_map(|(paused, alert, blocked)| ClusterInputs {
            paused,
            blockers: if alert {
                vec!["alert NodeDown firing".into()]
            } else {
                vec![]
            },
            node_blockers: blocked
                .iter()
                .enumerate()
                .filter(|(_, b)| **b)
                .map(|(i, _)| (format!("n{i}"), vec![format!("pod default/p{i}")]))
                .collect(),
            departed: BTreeMap::new(),
        })
}

/// Nodes with every protocol key at random, plus zones, roles and our
/// bookkeeping keys.
fn any_cluster(now: chrono::DateTime<chrono::Utc>) -> impl Strategy<Value = Vec<NodeView>> {
    (1usize..9).prop_flat_map(move |n| {
        (0..n)
            .map(|i| {
                let extra = (
                    prop::sample::select(vec![None, Some("a"), Some("b"), Some("c")]),
                    prop::sample::select(vec![None, Some("worker"), Some("db")]),
                    prop::option::of(-300i64..10),
                    prop::sample::select(vec![None, Some("1"), Some("3"), Some("x")]),
                    prop::option::of(-200i64..0),
                    prop::option::of(-200i64..0),
                    prop::sample::select(vec![None, Some(false), Some(true)]),
                    prop::option::of(-300i64..0),
                );
                (any_node(format!("n{i}"), now), extra).prop_map(
                    move |(
                        mut v,
                        (zone, role, since, failures, picked, released, evicted, stuck),
                    )| {
                        if let Some(z) = zone {
                            v.labels.insert(ZONE.into(), z.into());
                        }
                        if let Some(r) = role {
                            v.labels.insert("role".into(), r.into());
                        }
                        let mut set = |k: &str, val: Option<String>| {
                            if let Some(val) = val {
                                v.annotations.insert(k.into(), val);
                            }
                        };
                        set(
                            keys::REBOOT_NEEDED_SINCE,
                            since.map(|m| crate::node::format_time(now + mins(m))),
                        );
                        set(keys::REBOOT_FAILURES, failures.map(str::to_string));
                        set(
                            keys::PICKED_AT,
                            picked.map(|m| crate::node::format_time(now + mins(m))),
                        );
                        set(
                            keys::RELEASED_AT,
                            released.map(|m| crate::node::format_time(now + mins(m))),
                        );
                        // The agent's record of evicted pods, before or after the reboot.
                        set(
                            keys::EVICTED_PODS,
                            evicted.map(|back| evicted_record(back.then_some(now)).to_value()),
                        );
                        // A mark from an earlier decision (a slot `release` may have given back).
                        set(
                            keys::STUCK_SINCE,
                            stuck.map(|m| {
                                crate::node::format_timestamped(now + mins(m), "not back")
                            }),
                        );
                        v
                    },
                )
            })
            .collect::<Vec<_>>()
    })
}

fn holders(nodes: &[NodeView]) -> usize {
    nodes.iter().filter(|v| v.holds_slot()).count()
}

/// The slot holders that count against the maximums.
fn counted(c: &OperatorConfig, nodes: &[NodeView]) -> usize {
    nodes.iter().filter(|v| c.counts_against_max(v)).count()
}

/// docs/operator.md's words for a slot `--stuck-node-action=release` gives
/// back: marked stuck, and down mid-reboot (in progress and NotReady or on a
/// new boot) or rebooted (granted, `reboot-needed` cleared or labelled
/// `after-reboot`) -- never a node that drains or may start a drain.
fn released_by_the_docs(v: &NodeView) -> bool {
    let t = |k| v.annotation(k) == Some("true");
    let new_boot = !v.boot_id.is_empty()
        && v.annotation(keys::REBOOT_BOOT_ID)
            .is_some_and(|b| !b.is_empty() && b != v.boot_id);
    v.annotation(keys::STUCK_SINCE).is_some()
        && v.label(keys::BEFORE_REBOOT) != Some("true")
        && if t(keys::REBOOT_IN_PROGRESS) {
            !v.ready || new_boot
        } else {
            t(keys::REBOOT_OK)
                && (!t(keys::REBOOT_NEEDED) || v.label(keys::AFTER_REBOOT) == Some("true"))
        }
}

fn zone_holders(nodes: &[NodeView]) -> BTreeMap<Option<String>, (usize, usize)> {
    let mut m: BTreeMap<Option<String>, (usize, usize)> = BTreeMap::new();
    for v in nodes {
        let e = m.entry(v.label(ZONE).map(str::to_string)).or_default();
        e.0 += 1;
        if v.holds_slot() {
            e.1 += 1;
        }
    }
    m
}

fn evicted_record(back: Option<chrono::DateTime<chrono::Utc>>) -> crate::evicted::EvictedPods {
    let mut r = crate::evicted::EvictedPods::of([crate::evicted::Workload {
        namespace: "default".into(),
        kind: "ReplicaSet".into(),
        name: "web-1".into(),
        uid: "u-web".into(),
        count: 2,
    }]);
    r.back = back;
    r
}

/// Checks one decision against the invariants; returns the managed nodes after it.
fn check_decision(
    nodes: &[NodeView],
    c: &OperatorConfig,
    inputs: &ClusterInputs,
    now: chrono::DateTime<chrono::Utc>,
    d: &Decision,
) -> Result<Vec<NodeView>, TestCaseError> {
    let managed: Vec<NodeView> = nodes.iter().filter(|v| c.manages(v)).cloned().collect();
    let max = c.max_rebooting.resolve(managed.len());
    let before = holders(&managed);
    let mut after = managed.clone();
    apply_all(&mut after, &d.patches);
    // Never adds a slot holder beyond the max, globally and per zone:
    // every holder counts (`hold`), ...
    if c.stuck_node_action == StuckNodeAction::Hold {
        prop_assert!(
            holders(&after) <= max.max(before),
            "{} > max({max}, {before})",
            holders(&after)
        );
    }
    // ... or every holder but those `release` gave back, which never drain.
    for v in managed.iter().chain(&after) {
        let well_formed = NodeState::parse(v).is_ok();
        let given_back = c.stuck_node_action == StuckNodeAction::Release
            && well_formed
            && released_by_the_docs(v);
        prop_assert_eq!(
            c.counts_against_max(v),
            v.holds_slot() && !given_back,
            "{:?}",
            v
        );
    }
    let added = after
        .iter()
        .zip(&managed)
        .any(|(a, b)| a.holds_slot() && !b.holds_slot());
    if added {
        prop_assert!(
            counted(c, &after) <= max,
            "a new holder with {} counted > {max}",
            counted(c, &after)
        );
        if let Some(m) = c.max_rebooting_per_zone {
            for (z, (n, _)) in zone_holders(&after) {
                let in_zone: Vec<NodeView> = after
                    .iter()
                    .filter(|v| v.label(ZONE).map(str::to_string) == z)
                    .cloned()
                    .collect();
                let grew = in_zone.iter().any(|a| {
                    a.holds_slot() && managed.iter().any(|b| b.name == a.name && !b.holds_slot())
                });
                if grew {
                    prop_assert!(counted(c, &in_zone) <= m.resolve(n), "zone {z:?}");
                }
            }
        }
    }
    let released: Vec<&str> = after
        .iter()
        .filter(|v| v.holds_slot() && !c.counts_against_max(v))
        .map(|v| v.name.as_str())
        .collect();
    prop_assert_eq!(
        d.released.iter().map(String::as_str).collect::<Vec<_>>(),
        released
    );
    if c.stuck_node_action == StuckNodeAction::Hold
        && let Some(m) = c.max_rebooting_per_zone
    {
        let zb = zone_holders(&managed);
        for (z, (n, h)) in zone_holders(&after) {
            let zmax = m.resolve(n);
            let hb = zb.get(&z).map_or(0, |e| e.1);
            prop_assert!(h <= zmax.max(hb), "zone {z:?}: {h} > max({zmax}, {hb})");
        }
    }
    let open = c.window_open(now);
    let halted = inputs.paused || !inputs.blockers.is_empty();
    let mut seen = std::collections::BTreeSet::new();
    for p in &d.patches {
        prop_assert!(!p.is_empty());
        prop_assert!(seen.insert(p.node.clone()), "two patches for {}", p.node);
        let orig = nodes.iter().find(|v| v.name == p.node).unwrap();
        prop_assert!(c.manages(orig), "patched an unmanaged node");
        prop_assert!(NodeState::parse(orig).is_ok(), "patched a malformed node");
        let starts = ann(p, keys::REBOOT_OK) == Some(Some("true"))
            || lbl(p, keys::BEFORE_REBOOT) == Some(Some("true"));
        if starts {
            // A new turn only inside the window (checked on the wall clock
            // of every configured window), never paused or blocked.
            prop_assert!(open);
            prop_assert!(c.window.is_none_or(|w| w.contains(now)));
            prop_assert!(c.windows.as_ref().is_none_or(|s| s.contains(now)));
            prop_assert!(!halted, "a new turn while paused or blocked");
            prop_assert!(!inputs.blocked(&p.node), "a new turn for a blocked node");
        }
        // The operator never writes the agent's keys.
        for k in [
            keys::REBOOT_IN_PROGRESS,
            keys::REBOOT_NEEDED,
            keys::AGENT_MADE_UNSCHEDULABLE,
            keys::REBOOT_BOOT_ID,
            keys::DRAIN_FAILURE,
            keys::REBOOT_PAUSED,
            keys::EVICTED_PODS,
        ] {
            prop_assert!(!p.annotations.contains_key(k));
        }
        // The slot is never released while the evicted pods are not Ready again.
        if ann(p, keys::RELEASED_AT).is_some() {
            prop_assert_eq!(orig.annotation(keys::EVICTED_PODS), None);
            prop_assert!(orig.ready);
        }
        prop_assert_eq!(p.unschedulable, None);
        // A new grant only on a rebootable node (or one waiting in before-reboot).
        if ann(p, keys::REBOOT_OK) == Some(Some("true")) {
            let s = NodeState::parse(orig).unwrap();
            prop_assert!(s.rebootable());
            // ... that expires before the window closes: every minute up to
            // the expiry is inside.
            if let Some(Some(e)) = ann(p, keys::GRANT_EXPIRES) {
                let e = crate::node::parse_time(e).unwrap();
                prop_assert!(e > now);
                let mut t = now;
                while t < e {
                    prop_assert!(c.window_open(t), "grant expires at {e}, but closed at {t}");
                    t += mins(7);
                }
            }
        }
    }
    for pr in &d.problems {
        let v = nodes.iter().find(|v| v.name == pr.node).unwrap();
        prop_assert!(NodeState::parse(v).is_err());
    }
    prop_assert_eq!(
        d.problems.len(),
        managed
            .iter()
            .filter(|v| NodeState::parse(v).is_err())
            .count()
    );
    if let Some(t) = d.next_check {
        prop_assert!(t > now);
    }
    // Stuck nodes hold a grant past the timeout and are marked.
    for st in &d.stuck {
        let v = after.iter().find(|v| v.name == st.node).unwrap();
        prop_assert!(v.annotation(keys::STUCK_SINCE).is_some());
        prop_assert!(v.holds_slot());
    }
    Ok(after)
}

/// A node holding a slot in any phase of a turn, granted up to 90 min ago,
/// Ready or not, perhaps marked stuck already, in zone a or b.
fn any_holder(name: String) -> impl Strategy<Value = NodeView> {
    (
        0u8..6,
        any::<bool>(),
        0i64..90,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(phase, ready, ago, marked, zone_a)| {
            let g = needs(&name)
                .ann(keys::REBOOT_OK, "true")
                .time(keys::GRANTED_AT, t0() - mins(ago));
            let in_progress = |v: NodeView| {
                v.ann(keys::REBOOT_IN_PROGRESS, "true")
                    .ann(keys::REBOOT_BOOT_ID, "b1")
            };
            let mut v = match phase {
                0 => g,
                1 => in_progress(g),
                2 => in_progress(g).boot("b2"),
                3 => g.ann(keys::REBOOT_NEEDED, "false"),
                4 => g
                    .ann(keys::REBOOT_NEEDED, "false")
                    .lbl(keys::AFTER_REBOOT, "true"),
                _ => needs(&name).lbl(keys::BEFORE_REBOOT, "true"),
            };
            v.ready = ready;
            if marked {
                v = v.ann(
                    keys::STUCK_SINCE,
                    &format_timestamped(t0() - mins(1), "not back"),
                );
            }
            v.lbl(ZONE, if zone_a { "a" } else { "b" })
        })
}

/// Slot holders in every phase (some stuck) and nodes waiting for a turn.
fn any_rollout() -> impl Strategy<Value = Vec<NodeView>> {
    (1usize..5, 1usize..5).prop_flat_map(|(h, w)| {
        let holders: Vec<_> = (0..h).map(|i| any_holder(format!("h{i}"))).collect();
        let waiting: Vec<_> = (0..w)
            .map(|i| {
                any::<bool>()
                    .prop_map(move |a| needs(&format!("w{i}")).lbl(ZONE, if a { "a" } else { "b" }))
            })
            .collect();
        (holders, waiting).prop_map(|(mut h, w)| {
            h.extend(w);
            h
        })
    })
}

/// Decides `nodes` through [`decide_parsed`] and checks it against the old path (each node
/// parsed in the round, [`reference::decide_with`]) and [`decide_with`]; the cheap parts
/// (`busy`, the slot count) likewise. Returns the nodes with the patches applied.
fn same_as_the_old_path(
    nodes: &[NodeView],
    c: &OperatorConfig,
    inputs: &ClusterInputs,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<NodeView>, TestCaseError> {
    let parsed: Vec<ParsedNode> = nodes.iter().cloned().map(ParsedNode::new).collect();
    let refs: Vec<Parsed<'_>> = parsed.iter().map(ParsedNode::as_parsed).collect();
    let d = decide_parsed(&refs, c, inputs, now);
    prop_assert_eq!(&d, &reference::decide_with(nodes, c, inputs, now));
    prop_assert_eq!(&d, &decide_with(nodes, c, inputs, now));
    for p in &parsed {
        prop_assert_eq!(busy_parsed(p.as_parsed(), c), reference::busy(&p.view, c));
        prop_assert_eq!(busy(&p.view, c), reference::busy(&p.view, c));
        prop_assert_eq!(
            c.counts_against_max_parsed(&p.view, p.state.as_ref().ok()),
            reference::counts_against_max(c, &p.view)
        );
    }
    let mut after = nodes.to_vec();
    apply_all(&mut after, &d.patches);
    Ok(after)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// Nodes parsed once decide exactly as nodes parsed in every round, round after round
    /// (the patches applied, the clock moving), whatever the nodes, settings and inputs.
    #[test]
    fn parsed_nodes_decide_as_the_old_path(
        (nodes, inputs) in any_cluster(t0()).prop_flat_map(|n| { let k = n.len(); (Just(n), any_inputs(k)) }),
        c in any_config(),
        dt in -(7 * 24 * 60i64)..(7 * 24 * 60),
        step in 0i64..90,
    ) {
        let mut cur = nodes;
        for round in 0..4 {
            cur = same_as_the_old_path(&cur, &c, &inputs, t0() + mins(dt + step * round))?;
        }
    }

    /// The same through rollouts with stuck slot holders in every phase, both
    /// `--stuck-node-action`s, zones and hooks.
    #[test]
    fn parsed_rollouts_decide_as_the_old_path(
        nodes in any_rollout(),
        max in 1u32..3,
        per_zone in prop::option::of(1u32..3),
        release_slots in any::<bool>(),
        hooks_after in any::<bool>(),
        dt in 0i64..60,
    ) {
        let mut c = cfg(max);
        c.max_rebooting_per_zone = per_zone.map(MaxRebooting::Count);
        if release_slots {
            c = release(c);
        }
        if hooks_after {
            c = hooks(c, &[], &["hook-a"]);
        }
        let mut cur = nodes;
        for round in 0..4 {
            cur = same_as_the_old_path(&cur, &c, &ClusterInputs::default(), t0() + mins(dt + 10 * round))?;
        }
    }

    /// Stuck nodes in every phase, both actions: a new turn never starts while
    /// the holders that count are at a maximum, a node that drains or may
    /// start one always counts, and a stuck node's marks stay (see
    /// `check_decision`), round after round as the nodes stay down.
    #[test]
    fn stuck_node_action_never_grants_beyond_the_max(
        nodes in any_rollout(),
        max in 1u32..3,
        per_zone in prop::option::of(1u32..3),
        release_slots in any::<bool>(),
        hooks_after in any::<bool>(),
        dt in 0i64..60,
    ) {
        let mut c = cfg(max);
        c.max_rebooting_per_zone = per_zone.map(MaxRebooting::Count);
        if release_slots {
            c = release(c);
        }
        if hooks_after {
            c = hooks(c, &[], &["hook-a"]);
        }
        let inputs = ClusterInputs::default();
        let mut cur = nodes;
        for round in 0..4 {
            let now = t0() + mins(dt + 10 * round);
            let d = decide_with(&cur, &c, &inputs, now);
            let after = check_decision(&cur, &c, &inputs, now, &d)?;
            // Holders keep their grant, cordon and progress: only we release them, as usual.
            for (b, a) in cur.iter().zip(&after) {
                if b.annotation(keys::STUCK_SINCE).is_some() && a.annotation(keys::REBOOT_OK) == Some("false") {
                    prop_assert!(b.ready, "released a stuck node that is not back: {:?}", b);
                }
            }
            cur = after;
        }
    }

    /// Slot holders deleted mid-rollout (some registered again, Ready or not): a new turn
    /// never starts while the holders that count plus the departed slots still counting
    /// are at the maximum, round after round; a departed slot ends only as documented.
    #[test]
    fn departed_slots_are_never_granted_beyond_the_max(
        nodes in any_rollout(),
        max in 1u32..3,
        per_zone in prop::option::of(1u32..3),
        deleted in prop::collection::vec(0u8..3, 4),
        dt in 0i64..40,
    ) {
        let mut c = cfg(max);
        c.max_rebooting_per_zone = per_zone.map(MaxRebooting::Count);
        let mut departed = BTreeMap::new();
        let mut cur = Vec::new();
        for v in nodes {
            // h0..h3: 0 stays, 1 is deleted, 2 is deleted and registered again (not Ready).
            let fate = v.name.strip_prefix('h').and_then(|i| i.parse::<usize>().ok()).map_or(0, |i| deleted[i]);
            match departed_slot(&v, NodeState::parse(&v).ok().as_ref(), &c, t0()) {
                Some(slot) if fate > 0 => {
                    departed.insert(v.name.clone(), slot);
                    if fate == 2 {
                        let mut fresh = node(&v.name);
                        fresh.ready = false;
                        cur.push(fresh.lbl(ZONE, v.label(ZONE).unwrap_or("a")));
                    }
                }
                _ => cur.push(v),
            }
        }
        cur.sort_by(|a, b| a.name.cmp(&b.name));
        let mut inputs = ClusterInputs { departed, ..Default::default() };
        for round in 0..4 {
            let now = t0() + mins(dt + 10 * round);
            let d = decide_with(&cur, &c, &inputs, now);
            let mut after = cur.clone();
            apply_all(&mut after, &d.patches);
            let added = after.iter().zip(&cur).any(|(a, b)| a.holds_slot() && !b.holds_slot());
            if added {
                prop_assert!(counted(&c, &after) + d.departed.len() <= max as usize, "{:?}", d);
                if let Some(m) = per_zone {
                    for z in ["a", "b"] {
                        let held = after.iter().filter(|v| v.label(ZONE) == Some(z) && c.counts_against_max(v)).count()
                            + d.departed.values().filter(|s| s.zone.as_deref() == Some(z)).count();
                        prop_assert!(held <= m as usize, "zone {}: {:?}", z, d);
                    }
                }
            }
            for (name, slot) in &inputs.departed {
                let present = cur.iter().find(|v| v.name == *name);
                let ends = now >= slot.since + c.reboot_timeout
                    || present.is_some_and(|v| v.ready || v.holds_slot());
                prop_assert_eq!(!d.departed.contains_key(name), ends);
                prop_assert_eq!(d.departed_ended.iter().any(|(n, _)| n == name), ends);
            }
            inputs.departed = d.departed.clone();
            cur = after;
        }
    }

    #[test]
    fn operator_invariants(
        (nodes, inputs) in any_cluster(t0()).prop_flat_map(|n| { let k = n.len(); (Just(n), any_inputs(k)) }),
        c in any_config(),
        dt in -(7 * 24 * 60i64)..(7 * 24 * 60),
        near_dst in prop::option::of(prop::sample::select(vec![
            // Europe/Berlin: last Sunday of March and October 2024, 01:00 UTC;
            // America/New_York: 2024-03-10 and 2024-11-03, 07:00 / 06:00 UTC.
            (2024, 3, 31, 1), (2024, 10, 27, 1), (2024, 3, 10, 7), (2024, 11, 3, 6),
        ])),
    ) {
        let now = match near_dst {
            Some((y, mo, d, h)) => {
                use chrono::TimeZone;
                chrono::Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap() + mins(dt % 240)
            }
            None => t0() + mins(dt),
        };
        let d = decide_with(&nodes, &c, &inputs, now);
        let after = check_decision(&nodes, &c, &inputs, now, &d)?;
        // Deciding again at the same instant converges.
        let mut cur = after;
        let mut rounds = 0;
        loop {
            let d2 = decide_with(&cur, &c, &inputs, now);
            if d2.patches.is_empty() { break; }
            cur = check_decision(&cur, &c, &inputs, now, &d2)?;
            rounds += 1;
            prop_assert!(rounds < 4, "no fixpoint: {:?}", d2);
        }
    }

    #[test]
    fn quiet_nodes_are_never_patched(
        (nodes, inputs) in any_cluster(t0()).prop_flat_map(|n| { let k = n.len(); (Just(n), any_inputs(k)) }),
        c in any_config(),
        dt in -(7 * 24 * 60i64)..(7 * 24 * 60),
    ) {
        let now = t0() + mins(dt);
        // Among busy nodes: a patch only ever goes to a node that needs an operator.
        let d = decide_with(&nodes, &c, &inputs, now);
        for p in &d.patches {
            let v = nodes.iter().find(|v| v.name == p.node).unwrap();
            prop_assert!(needs_operator(v, &c, now), "patched a quiet node: {:?} by {:?}", v, p);
        }
        for s in &d.stuck {
            let v = nodes.iter().find(|v| v.name == s.node).unwrap();
            prop_assert!(needs_operator(v, &c, now));
        }
        for pr in &d.problems {
            let v = nodes.iter().find(|v| v.name == pr.node).unwrap();
            prop_assert!(needs_operator(v, &c, now));
        }
        // The leader's cheap test: an empty decision over nodes none of which is busy.
        if d.patches.is_empty() && d.stuck.is_empty() && d.problems.is_empty()
            && nodes.iter().all(|v| !busy(v, &c))
        {
            prop_assert!(nodes.iter().all(|v| !needs_operator(v, &c, now)));
        }
        // A cluster of quiet nodes: nothing to do at all, so no leader is needed.
        let quiet: Vec<NodeView> = nodes.iter().filter(|v| !needs_operator(v, &c, now)).cloned().collect();
        let d = decide_with(&quiet, &c, &inputs, now);
        prop_assert!(d.patches.is_empty() && d.stuck.is_empty() && d.problems.is_empty(), "{:?}", d);
    }
}
