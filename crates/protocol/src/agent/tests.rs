use super::*;
use crate::evicted::{DEFAULT_POD_RECOVERY_TIMEOUT, PodCount, Workload};
use crate::node::{NodeView, PREFER_NO_SCHEDULE, Taint, format_time};
use crate::testutil::*;
use crate::update_engine::UPDATE_STATUS_DOWNLOADING;
use proptest::prelude::*;

fn info() -> HostInfo {
    HostInfo {
        id: Some("flatcar".into()),
        version: Some("4081.2.0".into()),
        group: Some("stable".into()),
    }
}

/// A node the agent has already brought up to date with `info()` and `idle()`.
fn settled(name: &str) -> NodeView {
    let mut v = node(name)
        .lbl(keys::LABEL_ID, "flatcar")
        .lbl(keys::LABEL_VERSION, "4081.2.0")
        .lbl(keys::LABEL_GROUP, "stable")
        .ann(keys::REBOOT_NEEDED, "false")
        .ann(keys::REBOOT_IN_PROGRESS, "false")
        .lbl(keys::REBOOT_NEEDED, "false");
    for (k, val) in idle().annotation_values() {
        v.annotations.insert(k.into(), val);
    }
    v
}

fn step(v: &NodeView, host: Option<&UpdateStatus>, drained: bool) -> AgentStep {
    let info = info();
    next_step(&AgentInput {
        node: v,
        host,
        info: &info,
        drained,
        now: t0(),
        pods: None,
        pod_recovery_timeout: DEFAULT_POD_RECOVERY_TIMEOUT,
        options: Default::default(),
        sentinel: None,
    })
}

fn patch_of(s: AgentStep) -> NodePatch {
    match s {
        AgentStep::Patch(p) => p,
        other => panic!("expected a patch, got {other:?}"),
    }
}

fn wait_of(s: AgentStep) -> String {
    match s {
        AgentStep::Wait(r) => r,
        other => panic!("expected a wait, got {other:?}"),
    }
}

fn a(k: &str, v: &str) -> (String, Option<String>) {
    (k.to_string(), Some(v.to_string()))
}

fn rm(k: &str) -> (String, Option<String>) {
    (k.to_string(), None)
}

/// Applies patches until the agent does something else; returns it.
fn settle(v: &mut NodeView, host: Option<&UpdateStatus>, drained: bool) -> AgentStep {
    for _ in 0..8 {
        match step(v, host, drained) {
            AgentStep::Patch(p) => p.apply(v),
            other => return other,
        }
    }
    panic!("agent did not settle: {v:?}");
}

#[test]
fn drain_timeout_action_flag() {
    assert_eq!("uncordon".parse(), Ok(DrainTimeoutAction::Uncordon));
    assert_eq!(" Reboot ".parse(), Ok(DrainTimeoutAction::Reboot));
    assert_eq!(DrainTimeoutAction::default(), DrainTimeoutAction::Uncordon);
    let e = "drain".parse::<DrainTimeoutAction>().unwrap_err();
    assert!(e.to_string().starts_with("--drain-timeout-action: "), "{e}");
    assert_eq!(DrainTimeoutAction::Reboot.to_string(), "reboot");
}

#[test]
fn fresh_node_gets_labels_defaults_and_status() {
    let v = node("n");
    let p = patch_of(step(&v, Some(&idle()), false));
    assert_eq!(p.labels.get(keys::LABEL_ID), Some(&Some("flatcar".into())));
    assert_eq!(
        p.labels.get(keys::LABEL_GROUP),
        Some(&Some("stable".into()))
    );
    assert_eq!(
        p.labels.get(keys::LABEL_VERSION),
        Some(&Some("4081.2.0".into()))
    );
    assert_eq!(
        p.labels.get(keys::REBOOT_NEEDED),
        Some(&Some("false".into()))
    );
    assert_eq!(
        p.annotations.get(keys::REBOOT_NEEDED),
        Some(&Some("false".into()))
    );
    assert_eq!(
        p.annotations.get(keys::REBOOT_IN_PROGRESS),
        Some(&Some("false".into()))
    );
    assert_eq!(
        p.annotations.get(keys::STATUS),
        Some(&Some("UPDATE_STATUS_IDLE".into()))
    );
    assert_eq!(
        p.annotations.get(keys::LAST_CHECKED_TIME),
        Some(&Some("1714564800".into()))
    );
    assert_eq!(
        p.annotations.get(keys::NEW_VERSION),
        Some(&Some("4081.2.0".into()))
    );
    assert_eq!(p.unschedulable, None);
    let mut v = v;
    p.apply(&mut v);
    assert_eq!(v, settled("n"));
    assert_eq!(
        step(&v, Some(&idle()), false),
        AgentStep::Wait("no reboot needed".into())
    );
}

#[test]
fn labels_follow_host_info_and_missing_values_remove_them() {
    let v = settled("n").lbl(keys::LABEL_VERSION, "old");
    let p = patch_of(step(&v, Some(&idle()), false));
    assert_eq!(
        p.labels.clone().into_iter().collect::<Vec<_>>(),
        vec![a(keys::LABEL_VERSION, "4081.2.0")]
    );
    let none = HostInfo::default();
    let p = patch_of(next_step(&AgentInput {
        node: &v,
        host: None,
        info: &none,
        drained: false,
        now: t0(),
        pods: None,
        pod_recovery_timeout: DEFAULT_POD_RECOVERY_TIMEOUT,
        options: Default::default(),
        sentinel: None,
    }));
    assert_eq!(
        p.labels.into_iter().collect::<Vec<_>>(),
        vec![
            rm(keys::LABEL_GROUP),
            rm(keys::LABEL_ID),
            rm(keys::LABEL_VERSION)
        ]
    );
}

#[test]
fn status_written_whenever_any_field_differs() {
    let v = settled("n");
    // Same operation, newer check time: FLUO would not write; we do.
    let mut s = idle();
    s.last_checked_time += 3600;
    let p = patch_of(step(&v, Some(&s), false));
    assert_eq!(
        p.annotations.into_iter().collect::<Vec<_>>(),
        vec![a(keys::LAST_CHECKED_TIME, "1714568400")]
    );
    let mut s = idle();
    s.new_version = "4081.3.0".into();
    let p = patch_of(step(&v, Some(&s), false));
    assert_eq!(
        p.annotations.into_iter().collect::<Vec<_>>(),
        vec![a(keys::NEW_VERSION, "4081.3.0")]
    );
    let p = patch_of(step(&v, Some(&status(UPDATE_STATUS_DOWNLOADING)), false));
    assert_eq!(
        p.annotations.into_iter().collect::<Vec<_>>(),
        vec![a(keys::STATUS, UPDATE_STATUS_DOWNLOADING)]
    );
    // Unknown host status: nothing about the status is written.
    assert_eq!(
        step(&v, None, false),
        AgentStep::Wait("no reboot needed".into())
    );
}

#[test]
fn need_reboot_sets_reboot_needed_annotation_and_label() {
    let v = settled("n");
    let p = patch_of(step(&v, Some(&need_reboot()), false));
    assert_eq!(
        p.annotations.get(keys::REBOOT_NEEDED),
        Some(&Some("true".into()))
    );
    assert_eq!(
        p.labels.get(keys::REBOOT_NEEDED),
        Some(&Some("true".into()))
    );
    assert_eq!(
        p.annotations.get(keys::STATUS),
        Some(&Some(
            crate::update_engine::UPDATE_STATUS_UPDATED_NEED_REBOOT.into()
        ))
    );
    let mut v = v;
    p.apply(&mut v);
    assert!(
        wait_of(step(&v, Some(&need_reboot()), false))
            .contains("waiting for the operator's reboot-ok")
    );
}

#[test]
fn need_reboot_is_not_raised_while_previous_reboot_ok_is_still_true() {
    let mut v = settled("n").ann(keys::REBOOT_OK, "true");
    let mut host = need_reboot();
    // status is written, but reboot-needed stays false
    let p = patch_of(step(&v, Some(&host), false));
    assert_eq!(p.annotations.get(keys::REBOOT_NEEDED), None);
    p.apply(&mut v);
    assert!(wait_of(step(&v, Some(&host), false)).contains("withdraw reboot-ok"));
    // once the operator withdraws it, the new cycle starts
    v = v.ann(keys::REBOOT_OK, "false");
    let p = patch_of(step(&v, Some(&host), false));
    assert_eq!(
        p.annotations.get(keys::REBOOT_NEEDED),
        Some(&Some("true".into()))
    );
    host.last_checked_time += 1;
    let _ = host;
}

#[test]
fn manual_reboot_needed_is_honoured() {
    // A person annotates reboot-needed=true; the label follows.
    let v = settled("n").ann(keys::REBOOT_NEEDED, "true");
    let p = patch_of(step(&v, Some(&idle()), false));
    assert_eq!(
        p.labels.clone().into_iter().collect::<Vec<_>>(),
        vec![a(keys::REBOOT_NEEDED, "true")]
    );
    assert!(p.annotations.is_empty());
    let mut v = v;
    p.apply(&mut v);
    // granted -> starts, drains, reboots, although update_engine is idle
    v = v.ann(keys::REBOOT_OK, "true");
    assert!(matches!(
        step(&v, Some(&idle()), false),
        AgentStep::Patch(_)
    ));
    assert_eq!(settle(&mut v, Some(&idle()), false), AgentStep::Drain);
    assert_eq!(settle(&mut v, Some(&idle()), true), AgentStep::Reboot);
}

#[test]
fn granted_node_starts_reboot_in_one_patch() {
    let v = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true");
    let p = patch_of(step(&v, Some(&need_reboot()), false));
    let mut want = NodePatch::new("n");
    want.set_annotation(keys::REBOOT_IN_PROGRESS, "true")
        .set_annotation(keys::REBOOT_BOOT_ID, "b1")
        .set_annotation(keys::AGENT_MADE_UNSCHEDULABLE, "true")
        .set_unschedulable(true);
    // status differs (settled() has idle) and is written in the same patch
    let mut p2 = p.clone();
    p2.annotations.remove(keys::STATUS);
    assert_eq!(p2, want);
    let mut v = v;
    p.apply(&mut v);
    assert_eq!(step(&v, Some(&need_reboot()), false), AgentStep::Drain);
    assert_eq!(step(&v, Some(&need_reboot()), true), AgentStep::Reboot);
    assert!(may_reboot(&v, true));
    assert!(!may_reboot(&v, false));
}

#[test]
fn admin_cordoned_node_is_not_marked_as_ours() {
    let mut v = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true")
        .cordoned();
    let p = patch_of(step(&v, None, false));
    assert_eq!(p.unschedulable, None);
    assert_eq!(p.annotations.get(keys::AGENT_MADE_UNSCHEDULABLE), None);
    assert_eq!(
        p.annotations.get(keys::REBOOT_IN_PROGRESS),
        Some(&Some("true".into()))
    );
    p.apply(&mut v);
    assert_eq!(step(&v, None, true), AgentStep::Reboot);
    // it reboots; afterwards it stays cordoned
    v = v.boot("b2");
    let p = patch_of(step(&v, Some(&idle()), false));
    assert_eq!(p.unschedulable, None);
    p.apply(&mut v);
    assert!(v.unschedulable);
    assert_eq!(v.annotation(keys::REBOOT_IN_PROGRESS), Some("false"));
}

#[test]
fn expired_grant_is_not_started() {
    let v = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true")
        .time(keys::GRANT_EXPIRES, t0());
    assert!(wait_of(step(&v, None, false)).contains("expired"));
    let v = v.time(keys::GRANT_EXPIRES, t0() + mins(1));
    assert!(matches!(step(&v, None, false), AgentStep::Patch(_)));
}

#[test]
fn paused_spoiled_or_after_reboot_grants_are_not_started() {
    let g = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true");
    assert!(
        wait_of(step(
            &g.clone().ann(keys::REBOOT_PAUSED, "true"),
            None,
            false
        ))
        .contains("paused")
    );
    assert!(
        wait_of(step(
            &g.clone().lbl(keys::AFTER_REBOOT, "true"),
            None,
            false
        ))
        .contains("after-reboot")
    );
    let failed = g.clone().ann(
        keys::DRAIN_FAILURE,
        &format!("{} timeout", format_time(t0() - mins(5))),
    );
    assert!(wait_of(step(&failed, None, false)).contains("drain failed"));
    // spoiled: failure at/after granted-at
    assert!(
        wait_of(step(
            &failed.clone().time(keys::GRANTED_AT, t0() - mins(6)),
            None,
            false
        ))
        .contains("drain failed")
    );
    // a new grant after the failure is used
    assert!(matches!(
        step(&failed.time(keys::GRANTED_AT, t0() - mins(4)), None, false),
        AgentStep::Patch(_)
    ));
    // no boot ID: cannot start safely
    assert!(wait_of(step(&g.boot(""), None, false)).contains("boot ID"));
}

#[test]
fn in_progress_same_boot_resumes_recordons_drains_reboots() {
    // Agent restarted mid-drain: same boot ID, our cordon was undone by someone.
    let mut v = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1")
        .ann(keys::AGENT_MADE_UNSCHEDULABLE, "true");
    let p = patch_of(step(&v, Some(&idle()), false));
    assert_eq!(p.unschedulable, Some(true));
    assert_eq!(p.annotations.get(keys::REBOOT_IN_PROGRESS), None); // not released
    p.apply(&mut v);
    assert_eq!(step(&v, Some(&idle()), false), AgentStep::Drain);
    assert_eq!(step(&v, Some(&idle()), true), AgentStep::Reboot);
    // an expired grant does not stop a reboot already in progress
    let v2 = v.clone().time(keys::GRANT_EXPIRES, t0() - mins(1));
    assert_eq!(step(&v2, Some(&idle()), true), AgentStep::Reboot);
}

#[test]
fn in_progress_schedulable_node_not_ours_is_cordoned_and_becomes_ours() {
    let v = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1");
    let p = patch_of(step(&v, None, false));
    assert_eq!(p.unschedulable, Some(true));
    assert_eq!(
        p.annotations.get(keys::AGENT_MADE_UNSCHEDULABLE),
        Some(&Some("true".into()))
    );
}

#[test]
fn grant_withdrawn_before_reboot_stops_and_uncordons_ours() {
    let v = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "false")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1")
        .ann(keys::AGENT_MADE_UNSCHEDULABLE, "true")
        .cordoned();
    for drained in [false, true] {
        let p = patch_of(step(&v, None, drained));
        assert_eq!(p.unschedulable, Some(false));
        assert_eq!(
            p.annotations.clone().into_iter().collect::<Vec<_>>(),
            vec![
                a(keys::AGENT_MADE_UNSCHEDULABLE, "false"),
                rm(keys::REBOOT_BOOT_ID),
                a(keys::REBOOT_IN_PROGRESS, "false")
            ]
        );
        let mut w = v.clone();
        p.apply(&mut w);
        assert_eq!(w.annotation(keys::REBOOT_NEEDED), Some("true")); // picked again later
        assert!(wait_of(step(&w, None, drained)).contains("waiting for the operator's reboot-ok"));
    }
    // not ours: stays cordoned
    let v = v.ann(keys::AGENT_MADE_UNSCHEDULABLE, "false");
    let p = patch_of(step(&v, None, true));
    assert_eq!(p.unschedulable, None);
}

#[test]
fn rebooted_node_is_uncordoned_and_cleared() {
    let v = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_BOOT_ID, "b0")
        .ann(keys::AGENT_MADE_UNSCHEDULABLE, "true")
        .ann(keys::REBOOT_ERROR, "x")
        .ann(keys::DRAIN_FAILURE, &format!("{} y", format_time(t0())))
        .cordoned();
    let p = patch_of(step(&v, Some(&idle()), false));
    assert_eq!(p.unschedulable, Some(false));
    assert_eq!(
        p.labels.clone().into_iter().collect::<Vec<_>>(),
        vec![a(keys::REBOOT_NEEDED, "false")]
    );
    assert_eq!(
        p.annotations.clone().into_iter().collect::<Vec<_>>(),
        vec![
            a(keys::AGENT_MADE_UNSCHEDULABLE, "false"),
            rm(keys::DRAIN_FAILURE),
            rm(keys::REBOOT_BOOT_ID),
            rm(keys::REBOOT_ERROR),
            a(keys::REBOOT_IN_PROGRESS, "false"),
            a(keys::REBOOT_NEEDED, "false"),
        ]
    );
    let mut v = v;
    p.apply(&mut v);
    // reboot-ok is still true: wait for the operator; never ask again meanwhile
    assert!(wait_of(settle(&mut v, Some(&need_reboot()), false)).contains("withdraw reboot-ok"));
    assert_eq!(v.annotation(keys::REBOOT_NEEDED), Some("false"));
    assert_eq!(
        v.annotation(keys::STATUS),
        Some(crate::update_engine::UPDATE_STATUS_UPDATED_NEED_REBOOT)
    );
}

#[test]
fn handed_over_in_progress_without_boot_id() {
    // FLUO drained and was replaced before rebooting: update_engine still waits.
    let mut v = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::AGENT_MADE_UNSCHEDULABLE, "true")
        .ann(
            keys::STATUS,
            crate::update_engine::UPDATE_STATUS_UPDATED_NEED_REBOOT,
        )
        .cordoned();
    assert!(wait_of(step(&v, None, false)).contains("update_engine"));
    let p = patch_of(step(&v, Some(&need_reboot()), false));
    assert_eq!(
        p.annotations.clone().into_iter().collect::<Vec<_>>(),
        vec![a(keys::REBOOT_BOOT_ID, "b1")]
    );
    p.apply(&mut v);
    assert_eq!(step(&v, Some(&need_reboot()), false), AgentStep::Drain);

    // FLUO rebooted it and our agent is the first after the reboot: idle -> rebooted.
    let v = settled("m")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::AGENT_MADE_UNSCHEDULABLE, "true")
        .cordoned();
    let p = patch_of(step(&v, Some(&idle()), false));
    assert_eq!(p.unschedulable, Some(false));
    assert_eq!(
        p.annotations.get(keys::REBOOT_IN_PROGRESS),
        Some(&Some("false".into()))
    );
    assert_eq!(
        p.annotations.get(keys::REBOOT_NEEDED),
        Some(&Some("false".into()))
    );
}

#[test]
fn leftover_cordon_and_boot_id_are_cleaned_when_not_in_progress() {
    // FLUO's post-reboot state: it keeps the cordon until reboot-ok is withdrawn.
    let v = settled("n")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::AGENT_MADE_UNSCHEDULABLE, "true")
        .cordoned();
    let p = patch_of(step(&v, None, false));
    assert_eq!(p.unschedulable, Some(false));
    assert_eq!(
        p.annotations.clone().into_iter().collect::<Vec<_>>(),
        vec![a(keys::AGENT_MADE_UNSCHEDULABLE, "false")]
    );
    let v = settled("n").ann(keys::REBOOT_BOOT_ID, "b1");
    let p = patch_of(step(&v, None, false));
    assert_eq!(
        p.annotations.into_iter().collect::<Vec<_>>(),
        vec![rm(keys::REBOOT_BOOT_ID)]
    );
}

#[test]
fn malformed_values_mean_no_action_but_facts_are_kept_fresh() {
    let v = settled("n")
        .ann(keys::REBOOT_OK, "yes")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1")
        .cordoned();
    let mut s = idle();
    s.last_checked_time += 10;
    let p = patch_of(step(&v, Some(&s), true));
    assert_eq!(
        p.annotations.keys().collect::<Vec<_>>(),
        vec![keys::LAST_CHECKED_TIME]
    );
    let r = wait_of(step(&v, Some(&idle()), true));
    assert!(r.contains(keys::REBOOT_OK) && r.contains("\"yes\""), "{r}");
    assert!(!may_reboot(&v, true));
}

#[test]
fn in_progress_needs_a_boot_id() {
    let v = settled("n")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1")
        .boot("");
    assert!(wait_of(step(&v, None, true)).contains("boot ID"));
    assert!(!may_reboot(&v, true));
}

fn in_progress_node() -> NodeView {
    settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_OK, "true")
        .time(keys::GRANTED_AT, t0() - mins(10))
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1")
        .ann(keys::AGENT_MADE_UNSCHEDULABLE, "true")
        .cordoned()
}

#[test]
fn drain_failure_with_uncordon_stops_and_records() {
    let v = in_progress_node();
    let p = patch_of(drain_failed(
        &v,
        "timed out after 600s: pod a/b",
        DrainTimeoutAction::Uncordon,
        t0(),
    ));
    assert_eq!(p.unschedulable, Some(false));
    assert_eq!(
        p.annotations.clone().into_iter().collect::<Vec<_>>(),
        vec![
            a(keys::AGENT_MADE_UNSCHEDULABLE, "false"),
            a(
                keys::DRAIN_FAILURE,
                "2024-05-01T12:00:00Z timed out after 600s: pod a/b"
            ),
            rm(keys::REBOOT_BOOT_ID),
            a(keys::REBOOT_IN_PROGRESS, "false"),
        ]
    );
    let mut w = v.clone();
    p.apply(&mut w);
    // The grant is spent: the agent waits for the operator to withdraw it.
    assert!(wait_of(step(&w, None, false)).contains("drain failed"));
    // Not ours: not uncordoned.
    let v2 = v.clone().ann(keys::AGENT_MADE_UNSCHEDULABLE, "false");
    let p = patch_of(drain_failed(&v2, "x", DrainTimeoutAction::Uncordon, t0()));
    assert_eq!(p.unschedulable, None);
    assert_eq!(p.annotations.get(keys::AGENT_MADE_UNSCHEDULABLE), None);
}

#[test]
fn drain_failure_with_reboot_reboots_only_if_allowed() {
    let v = in_progress_node();
    assert_eq!(
        drain_failed(&v, "x", DrainTimeoutAction::Reboot, t0()),
        AgentStep::Reboot
    );
    let v = v.ann(keys::REBOOT_OK, "false");
    assert!(matches!(
        drain_failed(&v, "x", DrainTimeoutAction::Reboot, t0()),
        AgentStep::Wait(_)
    ));
}

#[test]
fn reboot_error_is_recorded_and_retried() {
    let mut v = in_progress_node();
    let p = reboot_failed(&v, "Access denied", t0());
    assert_eq!(
        p.annotations.clone().into_iter().collect::<Vec<_>>(),
        vec![a(keys::REBOOT_ERROR, "2024-05-01T12:00:00Z Access denied")]
    );
    p.apply(&mut v);
    assert_eq!(step(&v, None, true), AgentStep::Reboot);
}

#[test]
fn full_cycle() {
    let mut v = node("n");
    let mut host = idle();
    assert_eq!(
        settle(&mut v, Some(&host), false),
        AgentStep::Wait("no reboot needed".into())
    );
    host = need_reboot();
    assert!(matches!(
        settle(&mut v, Some(&host), false),
        AgentStep::Wait(_)
    ));
    assert_eq!(v.label(keys::REBOOT_NEEDED), Some("true"));
    v = v.ann(keys::REBOOT_OK, "true"); // operator
    assert_eq!(settle(&mut v, Some(&host), false), AgentStep::Drain);
    assert!(v.unschedulable);
    assert_eq!(settle(&mut v, Some(&host), true), AgentStep::Reboot);
    // reboot
    v = v.boot("b2");
    host = idle();
    host.new_version = "4081.3.0".into();
    assert!(matches!(
        settle(&mut v, Some(&host), false),
        AgentStep::Wait(_)
    ));
    assert!(!v.unschedulable);
    assert_eq!(v.annotation(keys::REBOOT_IN_PROGRESS), Some("false"));
    assert_eq!(v.annotation(keys::REBOOT_NEEDED), Some("false"));
    assert_eq!(v.annotation(keys::AGENT_MADE_UNSCHEDULABLE), Some("false"));
    assert_eq!(v.annotation(keys::NEW_VERSION), Some("4081.3.0"));
    assert_eq!(v.annotation(keys::REBOOT_BOOT_ID), None);
    v = v.ann(keys::REBOOT_OK, "false"); // operator releases
    assert_eq!(
        settle(&mut v, Some(&host), false),
        AgentStep::Wait("no reboot needed".into())
    );
}

fn any_host() -> impl Strategy<Value = Option<UpdateStatus>> {
    prop::option::of(
        (
            prop::sample::select(crate::update_engine::ALL_OPERATIONS.to_vec()),
            0i64..3,
        )
            .prop_map(|(op, t)| {
                let mut s = status(op);
                s.last_checked_time += t;
                s
            }),
    )
}

fn any_info() -> impl Strategy<Value = HostInfo> {
    prop_oneof![Just(info()), Just(HostInfo::default())]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Never reboots unless reboot-ok=true, reboot-in-progress=true, the
    /// recorded boot ID is the current one, and drained; never writes the
    /// operator's keys; never uncordons a node it did not cordon; settles.
    #[test]
    fn agent_safety(
        v in any_node("n".into(), t0()),
        host in any_host(),
        info in any_info(),
        drained in any::<bool>(),
        dt in -200i64..200,
        (taint, lb) in (any::<bool>(), any::<bool>()),
        sentinel in prop::option::of(any::<bool>()),
        sentinel_boot in prop::option::of(prop::sample::select(vec!["b1", "b2"])),
        (their_taint, their_lb, our_lb) in (any::<bool>(), any::<bool>(), any::<bool>()),
    ) {
        let now = t0() + mins(dt);
        let mut v = v;
        if let Some(b) = sentinel_boot {
            v = v.ann(keys::SENTINEL_BOOT_ID, b);
        }
        let theirs = Taint { key: "dedicated".into(), value: Some("x".into()), effect: "NoSchedule".into(), time_added: Some("2024-05-01T00:00:00Z".into()) };
        if their_taint {
            v.taints.push(theirs.clone());
        }
        if their_lb || our_lb {
            v = v.lbl(keys::EXCLUDE_FROM_LB_LABEL, "true");
        }
        if our_lb {
            v = v.ann(keys::AGENT_EXCLUDED_FROM_LB, "true");
        }
        let options = NodeOptions { prefer_no_schedule_taint: taint, exclude_from_load_balancers: lb };
        for _ in 0..8 {
            let input = AgentInput {
                node: &v, host: host.as_ref(), info: &info, drained, now,
                pods: None, pod_recovery_timeout: DEFAULT_POD_RECOVERY_TIMEOUT, options, sentinel,
            };
            match next_step(&input) {
                AgentStep::Reboot => {
                    prop_assert!(drained);
                    prop_assert_eq!(v.annotation(keys::REBOOT_OK), Some("true"));
                    prop_assert_eq!(v.annotation(keys::REBOOT_IN_PROGRESS), Some("true"));
                    prop_assert!(!v.boot_id.is_empty());
                    prop_assert_eq!(v.annotation(keys::REBOOT_BOOT_ID), Some(v.boot_id.as_str()));
                    prop_assert!(may_reboot(&v, drained));
                    return Ok(());
                }
                AgentStep::Drain => {
                    prop_assert_eq!(v.annotation(keys::REBOOT_OK), Some("true"));
                    prop_assert_eq!(v.annotation(keys::REBOOT_IN_PROGRESS), Some("true"));
                    prop_assert!(v.unschedulable);
                    return Ok(());
                }
                AgentStep::Wait(_) => return Ok(()),
                AgentStep::Patch(p) => {
                    prop_assert!(!p.is_empty());
                    for k in [keys::REBOOT_OK, keys::GRANT_EXPIRES, keys::GRANTED_AT, keys::REBOOT_PAUSED] {
                        prop_assert!(!p.annotations.contains_key(k), "agent wrote {}", k);
                    }
                    for k in [keys::BEFORE_REBOOT, keys::AFTER_REBOOT] {
                        prop_assert!(!p.labels.contains_key(k), "agent wrote label {}", k);
                    }
                    if p.unschedulable == Some(false) {
                        prop_assert_eq!(v.annotation(keys::AGENT_MADE_UNSCHEDULABLE), Some("true"));
                    }
                    if p.annotations.get(keys::REBOOT_IN_PROGRESS) == Some(&Some("true".into())) {
                        // starting needs a live, unexpired grant
                        prop_assert_eq!(v.annotation(keys::REBOOT_OK), Some("true"));
                        let s = NodeState::parse(&v).unwrap();
                        prop_assert!(s.grant_expires.is_none_or(|e| now < e));
                        prop_assert!(!s.grant_spoiled());
                    }
                    if p.annotations.get(keys::REBOOT_NEEDED) == Some(&Some("true".into())) {
                        prop_assert_ne!(v.annotation(keys::REBOOT_OK), Some("true"));
                    }
                    // Others' taints are kept; ours only with the flag.
                    if let Some(t) = &p.taints {
                        prop_assert_eq!(their_taint, t.contains(&theirs));
                        prop_assert!(t.iter().all(|t| t.key == theirs.key || (taint && t.key == keys::REBOOT_TAINT)));
                    }
                    // The load-balancer label is removed only by whoever set it.
                    if p.labels.get(keys::EXCLUDE_FROM_LB_LABEL) == Some(&None) {
                        prop_assert_eq!(v.annotation(keys::AGENT_EXCLUDED_FROM_LB), Some("true"));
                    }
                    if p.labels.get(keys::EXCLUDE_FROM_LB_LABEL) == Some(&Some("true".into())) {
                        prop_assert!(lb && v.label(keys::EXCLUDE_FROM_LB_LABEL).is_none());
                    }
                    p.apply(&mut v);
                }
            }
        }
        prop_assert!(false, "agent did not settle within 8 steps: {:?}", v);
    }

    #[test]
    fn drain_failed_never_panics_and_reboot_is_guarded(
        v in any_node("n".into(), t0()),
        reason in "\\PC{0,40}",
        reboot in any::<bool>(),
    ) {
        let action = if reboot { DrainTimeoutAction::Reboot } else { DrainTimeoutAction::Uncordon };
        match drain_failed(&v, &reason, action, t0()) {
            AgentStep::Reboot => prop_assert!(reboot && may_reboot(&v, true)),
            AgentStep::Patch(p) => {
                prop_assert!(!reboot);
                if p.unschedulable == Some(false) {
                    prop_assert_eq!(v.annotation(keys::AGENT_MADE_UNSCHEDULABLE), Some("true"));
                }
                let mut w = v.clone();
                p.apply(&mut w);
                prop_assert_eq!(w.annotation(keys::REBOOT_IN_PROGRESS), Some("false"));
            }
            _ => prop_assert!(reboot),
        }
    }
}

fn web(count: u32) -> Workload {
    Workload {
        namespace: "default".into(),
        kind: "ReplicaSet".into(),
        name: "web-1".into(),
        uid: "u-web".into(),
        count,
    }
}

fn web_pods(existing: u32, ready: u32) -> WorkloadPods {
    [("u-web".to_string(), PodCount { existing, ready })].into()
}

fn step_with(v: &NodeView, pods: Option<&WorkloadPods>, now: DateTime<Utc>) -> AgentStep {
    let info = info();
    next_step(&AgentInput {
        node: v,
        host: Some(&idle()),
        info: &info,
        drained: false,
        now,
        pods,
        pod_recovery_timeout: DEFAULT_POD_RECOVERY_TIMEOUT,
        options: Default::default(),
        sentinel: None,
    })
}

/// A node that went through a reboot after its drain recorded `web(2)`: `back` stamped.
fn back_with_record() -> NodeView {
    let mut v = node("n");
    let host = need_reboot();
    settle(&mut v, Some(&host), false);
    v = v.ann(keys::REBOOT_OK, "true");
    assert_eq!(settle(&mut v, Some(&host), false), AgentStep::Drain);
    let p = record_evictions(&v, &EvictedPods::of([web(2)])).expect("a record");
    p.apply(&mut v);
    assert_eq!(settle(&mut v, Some(&host), true), AgentStep::Reboot);
    v = v.boot("b2");
    assert!(matches!(step_with(&v, None, t0()), AgentStep::Patch(_)));
    let p = patch_of(step_with(&v, None, t0()));
    p.apply(&mut v);
    v
}

#[test]
fn evicted_pods_are_recorded_before_the_reboot_and_stamped_after() {
    let v = back_with_record();
    assert_eq!(v.annotation(keys::REBOOT_IN_PROGRESS), Some("false"));
    assert!(
        !v.unschedulable,
        "uncordoned, so the pods may come back here"
    );
    let rec = EvictedPods::parse(v.annotation(keys::EVICTED_PODS).unwrap()).unwrap();
    assert_eq!(rec.back, Some(t0()));
    assert_eq!(rec.workloads, vec![web(2)]);
}

#[test]
fn the_record_stays_until_the_pods_are_ready_again() {
    let v = back_with_record();
    let later = t0() + mins(3);
    assert_eq!(
        wait_of(step_with(&v, None, later)),
        "rebooted: looking whether the evicted pods run Ready again"
    );
    let w = wait_of(step_with(&v, Some(&web_pods(2, 1)), later));
    assert!(
        w.contains("default/ReplicaSet web-1 (1/2 Ready)") && w.contains("2024-05-01T12:10:00Z"),
        "{w}"
    );
    // Recovered: the record goes (and with it the operator's hold on the slot).
    let p = patch_of(step_with(&v, Some(&web_pods(3, 2)), later));
    assert_eq!(
        p.annotations.into_iter().collect::<Vec<_>>(),
        vec![rm(keys::EVICTED_PODS)]
    );
    // Scaled down to one, which is Ready: recovered too.
    assert!(matches!(
        step_with(&v, Some(&web_pods(1, 1)), later),
        AgentStep::Patch(_)
    ));
}

#[test]
fn the_record_goes_after_the_timeout_even_if_pods_are_not_ready() {
    let v = back_with_record();
    let at = t0() + DEFAULT_POD_RECOVERY_TIMEOUT;
    for pods in [None, Some(web_pods(2, 0))] {
        let p = patch_of(step_with(&v, pods.as_ref(), at));
        assert_eq!(
            p.annotations.into_iter().collect::<Vec<_>>(),
            vec![rm(keys::EVICTED_PODS)]
        );
        assert!(matches!(
            evicted::evaluate(
                NodeState::parse(&v).unwrap().evicted_pods.as_ref(),
                pods.as_ref(),
                DEFAULT_POD_RECOVERY_TIMEOUT,
                at
            ),
            PodRecovery::TimedOut { .. }
        ));
    }
}

#[test]
fn no_new_reboot_starts_while_the_gate_is_open() {
    // FLUO's operator ignores the record and may grant again at once.
    let v = back_with_record()
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .time(keys::GRANTED_AT, t0());
    let w = wait_of(step_with(&v, Some(&web_pods(2, 0)), t0() + mins(1)));
    assert!(w.contains("web-1"), "{w}");
}

#[test]
fn record_evictions_merges_and_only_while_rebooting() {
    let mut v = settled("n");
    assert_eq!(record_evictions(&v, &EvictedPods::of([web(2)])), None);
    v = v
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1");
    assert_eq!(record_evictions(&v, &EvictedPods::default()), None);
    record_evictions(&v, &EvictedPods::of([web(3)]))
        .unwrap()
        .apply(&mut v);
    // The agent restarted mid-drain: one pod of web was left, plus another workload.
    let mut db = web(1);
    db.name = "db-1".into();
    db.uid = "u-db".into();
    let p = record_evictions(&v, &EvictedPods::of([web(1), db.clone()])).unwrap();
    p.apply(&mut v);
    let rec = EvictedPods::parse(v.annotation(keys::EVICTED_PODS).unwrap()).unwrap();
    assert_eq!(rec.workloads, vec![web(3), db]);
    assert_eq!(record_evictions(&v, &EvictedPods::of([web(1)])), None);
}

#[test]
fn a_drain_that_ends_without_a_reboot_drops_the_record() {
    let mut v = settled("n")
        .ann(keys::REBOOT_NEEDED, "true")
        .lbl(keys::REBOOT_NEEDED, "true")
        .ann(keys::REBOOT_IN_PROGRESS, "true")
        .ann(keys::REBOOT_OK, "true")
        .ann(keys::REBOOT_BOOT_ID, "b1")
        .ann(keys::AGENT_MADE_UNSCHEDULABLE, "true");
    v.unschedulable = true;
    record_evictions(&v, &EvictedPods::of([web(2)]))
        .unwrap()
        .apply(&mut v);
    let p = patch_of(drain_failed(&v, "pdb", DrainTimeoutAction::Uncordon, t0()));
    assert_eq!(p.annotations.get(keys::EVICTED_PODS), Some(&None));
    // Left over by an older agent on a node not rebooting: removed as bookkeeping.
    let stale = settled("n").ann(keys::EVICTED_PODS, &EvictedPods::of([web(2)]).to_value());
    let p = patch_of(step_with(&stale, None, t0()));
    assert_eq!(p.annotations.get(keys::EVICTED_PODS), Some(&None));
}

fn any_pods() -> impl Strategy<Value = Option<WorkloadPods>> {
    prop::option::of((0u32..4, 0u32..4).prop_map(|(e, r)| web_pods(e, r.min(e))))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The record of evicted pods is removed after the reboot only when they are Ready
    /// again or the timeout passed, and no reboot starts while it waits.
    #[test]
    fn pod_gate(
        v in any_node("n".into(), t0()),
        back in prop::option::of(-20i64..5),
        pods in any_pods(),
        dt in 0i64..15,
    ) {
        let mut rec = EvictedPods::of([web(2)]);
        rec.back = back.map(|m| t0() + mins(m));
        let v = v.ann(keys::EVICTED_PODS, &rec.to_value());
        let now = t0() + mins(dt);
        let info = info();
        let input = AgentInput {
            node: &v, host: Some(&need_reboot()), info: &info, drained: false, now,
            pods: pods.as_ref(), pod_recovery_timeout: DEFAULT_POD_RECOVERY_TIMEOUT, options: Default::default(), sentinel: None,
        };
        let Ok(s) = NodeState::parse(&v) else { return Ok(()) };
        let gate = evicted::evaluate(Some(&rec), pods.as_ref(), DEFAULT_POD_RECOVERY_TIMEOUT, now);
        if let AgentStep::Patch(p) = next_step(&input) {
            if p.annotations.get(keys::EVICTED_PODS) == Some(&None) && back.is_some() && !s.reboot_in_progress {
                prop_assert!(
                    matches!(gate, PodRecovery::Recovered | PodRecovery::TimedOut { .. }),
                    "removed while {:?}", gate
                );
            }
            if p.annotations.get(keys::REBOOT_IN_PROGRESS) == Some(&Some("true".into())) {
                prop_assert!(
                    back.is_none() || matches!(gate, PodRecovery::Recovered | PodRecovery::TimedOut { .. }),
                    "started a reboot while {:?}", gate
                );
            }
        }
    }
}

// ---- The reboot sentinel, the taint and the load-balancer label ----

fn step_opts(
    v: &NodeView,
    host: &UpdateStatus,
    drained: bool,
    options: NodeOptions,
    sentinel: Option<bool>,
) -> AgentStep {
    let info = info();
    next_step(&AgentInput {
        node: v,
        host: Some(host),
        info: &info,
        drained,
        now: t0(),
        pods: None,
        pod_recovery_timeout: DEFAULT_POD_RECOVERY_TIMEOUT,
        options,
        sentinel,
    })
}

fn settle_opts(
    v: &mut NodeView,
    host: &UpdateStatus,
    drained: bool,
    options: NodeOptions,
    sentinel: Option<bool>,
) -> AgentStep {
    for _ in 0..8 {
        match step_opts(v, host, drained, options, sentinel) {
            AgentStep::Patch(p) => p.apply(v),
            other => return other,
        }
    }
    panic!("agent did not settle: {v:?}");
}

/// Grant, drain and reboot `v` (into boot `to`) as the operator and the host would; returns
/// the step after the reboot.
fn reboot_cycle(
    v: &mut NodeView,
    host: &UpdateStatus,
    options: NodeOptions,
    sentinel: Option<bool>,
    to: &str,
) -> AgentStep {
    *v = v.clone().ann(keys::REBOOT_OK, "true");
    assert_eq!(
        settle_opts(v, host, false, options, sentinel),
        AgentStep::Drain
    );
    assert_eq!(
        settle_opts(v, host, true, options, sentinel),
        AgentStep::Reboot
    );
    *v = v.clone().boot(to);
    let after = settle_opts(v, &idle(), false, options, sentinel);
    *v = v.clone().ann(keys::REBOOT_OK, "false");
    after
}

#[test]
fn the_sentinel_asks_for_one_reboot_and_says_so() {
    let none = NodeOptions::default();
    let mut v = settled("n");
    let p = patch_of(step_opts(&v, &idle(), false, none, Some(true)));
    assert_eq!(
        p.annotations.get(keys::REBOOT_NEEDED),
        Some(&Some("true".into()))
    );
    assert_eq!(
        p.labels.get(keys::REBOOT_NEEDED),
        Some(&Some("true".into()))
    );
    assert_eq!(
        p.annotations.get(keys::REBOOT_NEEDED_BY),
        Some(&Some("sentinel".into()))
    );
    assert_eq!(
        p.annotations.get(keys::SENTINEL_BOOT_ID),
        Some(&Some("b1".into()))
    );
    p.apply(&mut v);
    assert!(wait_of(step_opts(&v, &idle(), false, none, Some(true))).contains("reboot-ok"));
    reboot_cycle(&mut v, &idle(), none, Some(false), "b2");
    // Gone after the reboot (tmpfs): everything about it is forgotten.
    assert_eq!(v.annotation(keys::REBOOT_NEEDED), Some("false"));
    assert_eq!(v.annotation(keys::REBOOT_NEEDED_BY), None);
    assert_eq!(v.annotation(keys::SENTINEL_BOOT_ID), None);
    assert_eq!(
        step_opts(&v, &idle(), false, none, Some(false)),
        AgentStep::Wait("no reboot needed".into())
    );
    // A new one in this boot asks again.
    assert!(matches!(
        step_opts(&v, &idle(), false, none, Some(true)),
        AgentStep::Patch(_)
    ));
}

#[test]
fn a_sentinel_that_outlives_its_reboot_is_not_obeyed_again() {
    let none = NodeOptions::default();
    let mut v = settled("n");
    settle_opts(&mut v, &idle(), false, none, Some(true));
    assert_eq!(sentinel_outlived_reboot(&v, Some(true)), None);
    reboot_cycle(&mut v, &idle(), none, Some(true), "b2");
    assert_eq!(v.annotation(keys::REBOOT_NEEDED), Some("false"));
    assert_eq!(v.annotation(keys::SENTINEL_BOOT_ID), Some("b1"));
    assert_eq!(sentinel_outlived_reboot(&v, Some(true)), Some("b1"));
    // Still there, boot after boot: no new request.
    for boot in ["b2", "b3"] {
        v = v.boot(boot);
        assert_eq!(
            settle_opts(&mut v, &idle(), false, none, Some(true)),
            AgentStep::Wait("no reboot needed".into())
        );
    }
    // Seen gone once, then back: a new request.
    settle_opts(&mut v, &idle(), false, none, Some(false));
    assert_eq!(v.annotation(keys::SENTINEL_BOOT_ID), None);
    assert_eq!(sentinel_outlived_reboot(&v, Some(true)), None);
    settle_opts(&mut v, &idle(), false, none, Some(true));
    assert_eq!(v.annotation(keys::REBOOT_NEEDED), Some("true"));
    assert_eq!(v.annotation(keys::SENTINEL_BOOT_ID), Some("b3"));
    // Turning the flag off forgets it (the request stands).
    settle_opts(&mut v, &idle(), false, none, None);
    assert_eq!(v.annotation(keys::SENTINEL_BOOT_ID), None);
    assert_eq!(v.annotation(keys::REBOOT_NEEDED), Some("true"));
}

#[test]
fn both_sources_are_named_and_a_running_reboot_satisfies_the_sentinel() {
    let none = NodeOptions::default();
    let mut v = settled("n");
    settle_opts(&mut v, &need_reboot(), false, none, Some(false));
    assert_eq!(v.annotation(keys::REBOOT_NEEDED_BY), Some("update_engine"));
    settle_opts(&mut v, &need_reboot(), false, none, Some(true));
    assert_eq!(
        v.annotation(keys::REBOOT_NEEDED_BY),
        Some("update_engine,sentinel")
    );
    assert_eq!(needed_by(&v), vec!["update_engine", "sentinel"]);
    // A sentinel that appears while the reboot runs is satisfied by it.
    let mut w = settled("w");
    settle_opts(&mut w, &need_reboot(), false, none, Some(false));
    w = w.ann(keys::REBOOT_OK, "true");
    assert_eq!(
        settle_opts(&mut w, &need_reboot(), false, none, Some(true)),
        AgentStep::Drain
    );
    assert_eq!(w.annotation(keys::SENTINEL_BOOT_ID), Some("b1"));
    assert_eq!(
        settle_opts(&mut w, &need_reboot(), true, none, Some(true)),
        AgentStep::Reboot
    );
    w = w.boot("b2");
    settle_opts(&mut w, &idle(), false, none, Some(false));
    assert_eq!(w.annotation(keys::SENTINEL_BOOT_ID), None);
    assert_eq!(w.annotation(keys::REBOOT_NEEDED), Some("false"));
    // No boot ID: the sentinel cannot be recorded, so it is not acted on.
    let nb = settled("x").boot("");
    let p = step_opts(&nb, &idle(), false, none, Some(true));
    assert!(
        !matches!(p, AgentStep::Patch(ref p) if p.annotations.contains_key(keys::REBOOT_NEEDED)),
        "{p:?}"
    );
}

#[test]
fn the_prefer_no_schedule_taint_covers_the_wait_and_the_reboot_only() {
    let on = NodeOptions {
        prefer_no_schedule_taint: true,
        ..Default::default()
    };
    let theirs = Taint {
        key: "dedicated".into(),
        value: Some("gpu".into()),
        effect: "NoSchedule".into(),
        time_added: Some("2024-05-01T00:00:00Z".into()),
    };
    let ours = Taint {
        key: keys::REBOOT_TAINT.into(),
        value: None,
        effect: PREFER_NO_SCHEDULE.into(),
        time_added: None,
    };
    let mut v = settled("n");
    v.taints.push(theirs.clone());
    assert_eq!(
        step_opts(&v, &idle(), false, on, None),
        AgentStep::Wait("no reboot needed".into())
    );
    // Tainted in the same write that marks the node.
    let p = patch_of(step_opts(&v, &need_reboot(), false, on, None));
    assert_eq!(
        p.annotations.get(keys::REBOOT_NEEDED),
        Some(&Some("true".into()))
    );
    assert_eq!(p.taints, Some(vec![theirs.clone(), ours.clone()]));
    p.apply(&mut v);
    assert_eq!(
        reboot_cycle(&mut v, &need_reboot(), on, None, "b2"),
        AgentStep::Wait("rebooted: waiting for the operator to withdraw reboot-ok".into())
    );
    // Untainted in the write that ends the cycle.
    assert_eq!(v.taints, vec![theirs.clone()]);
    // The flag off: ours goes, theirs stays.
    v.taints.push(ours);
    let p = patch_of(step_opts(&v, &idle(), false, NodeOptions::default(), None));
    assert_eq!(p.taints, Some(vec![theirs]));
}

#[test]
fn the_load_balancer_label_is_ours_only_if_we_set_it() {
    let on = NodeOptions {
        exclude_from_load_balancers: true,
        ..Default::default()
    };
    let mut v = settled("n");
    settle_opts(&mut v, &need_reboot(), false, on, None);
    assert_eq!(
        v.label(keys::EXCLUDE_FROM_LB_LABEL),
        None,
        "not before the drain"
    );
    v = v.ann(keys::REBOOT_OK, "true");
    assert_eq!(
        settle_opts(&mut v, &need_reboot(), false, on, None),
        AgentStep::Drain
    );
    assert_eq!(v.label(keys::EXCLUDE_FROM_LB_LABEL), Some("true"));
    assert_eq!(v.annotation(keys::AGENT_EXCLUDED_FROM_LB), Some("true"));
    assert_eq!(
        settle_opts(&mut v, &need_reboot(), true, on, None),
        AgentStep::Reboot
    );
    v = v.boot("b2");
    settle_opts(&mut v, &idle(), false, on, None);
    assert_eq!(v.label(keys::EXCLUDE_FROM_LB_LABEL), None);
    assert_eq!(v.annotation(keys::AGENT_EXCLUDED_FROM_LB), None);

    // Someone else's label is left as it is, through the whole cycle.
    let mut w = settled("w").lbl(keys::EXCLUDE_FROM_LB_LABEL, "");
    settle_opts(&mut w, &need_reboot(), false, on, None);
    reboot_cycle(&mut w, &need_reboot(), on, None, "b2");
    assert_eq!(w.label(keys::EXCLUDE_FROM_LB_LABEL), Some(""));
    assert_eq!(w.annotation(keys::AGENT_EXCLUDED_FROM_LB), None);

    // A reboot called off (grant withdrawn) puts the node back too.
    let mut x = settled("x");
    settle_opts(&mut x, &need_reboot(), false, on, None);
    x = x.ann(keys::REBOOT_OK, "true");
    assert_eq!(
        settle_opts(&mut x, &need_reboot(), false, on, None),
        AgentStep::Drain
    );
    x = x.ann(keys::REBOOT_OK, "false");
    settle_opts(&mut x, &need_reboot(), false, on, None);
    assert_eq!(x.label(keys::EXCLUDE_FROM_LB_LABEL), None);
    // And so does a failed drain.
    let mut y = settled("y");
    settle_opts(&mut y, &need_reboot(), false, on, None);
    y = y.ann(keys::REBOOT_OK, "true");
    assert_eq!(
        settle_opts(&mut y, &need_reboot(), false, on, None),
        AgentStep::Drain
    );
    let p = patch_of(drain_failed(&y, "x", DrainTimeoutAction::Uncordon, t0()));
    p.apply(&mut y);
    assert_eq!(y.label(keys::EXCLUDE_FROM_LB_LABEL), None);
}

proptest! {
    /// A sentinel that never goes away reboots the node once, whatever the boots.
    #[test]
    fn a_permanent_sentinel_reboots_once(cycles in 1usize..6) {
        let none = NodeOptions::default();
        let mut v = settled("n");
        let mut reboots = 0;
        for i in 0..cycles {
            settle_opts(&mut v, &idle(), false, none, Some(true));
            if v.annotation(keys::REBOOT_NEEDED) == Some("true") {
                reboot_cycle(&mut v, &idle(), none, Some(true), &format!("boot-{i}"));
                reboots += 1;
            }
        }
        prop_assert_eq!(reboots, 1);
    }
}
