//! Builders and generators shared by the tests.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

use crate::keys;
use crate::node::{NodeView, format_time};
use crate::update_engine::{self, UpdateStatus};

/// 2024-05-01T12:00:00Z, a Wednesday.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

pub fn mins(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

/// A ready, schedulable node with boot ID "b1" and no annotations.
pub fn node(name: &str) -> NodeView {
    NodeView {
        name: name.into(),
        boot_id: "b1".into(),
        ready: true,
        ..Default::default()
    }
}

pub trait ViewExt {
    fn ann(self, k: &str, v: &str) -> Self;
    fn lbl(self, k: &str, v: &str) -> Self;
    fn time(self, k: &str, t: DateTime<Utc>) -> Self;
    fn cordoned(self) -> Self;
    fn boot(self, b: &str) -> Self;
}

impl ViewExt for NodeView {
    fn ann(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }
    fn lbl(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    fn time(self, k: &str, t: DateTime<Utc>) -> Self {
        self.ann(k, &format_time(t))
    }
    fn cordoned(mut self) -> Self {
        self.unschedulable = true;
        self
    }
    fn boot(mut self, b: &str) -> Self {
        self.boot_id = b.into();
        self
    }
}

pub fn status(op: &str) -> UpdateStatus {
    UpdateStatus {
        last_checked_time: 1_714_564_800,
        progress: 0.0,
        current_operation: op.into(),
        new_version: "4081.2.0".into(),
        new_size: 1,
    }
}

pub fn idle() -> UpdateStatus {
    status(update_engine::UPDATE_STATUS_IDLE)
}

pub fn need_reboot() -> UpdateStatus {
    status(update_engine::UPDATE_STATUS_UPDATED_NEED_REBOOT)
}

/// Values for a boolean key: absent, true, false, and malformed ones
/// (weighted towards the well-formed).
pub fn bool_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        4 => Just(Some("true".to_string())),
        3 => Just(Some("false".to_string())),
        1 => prop::sample::select(vec!["yes", "True", "", "1", "on"]).prop_map(|s| Some(s.to_string())),
    ]
}

/// Values for a time key relative to `now`: absent, around now, malformed.
pub fn time_value(now: DateTime<Utc>) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(None),
        4 => (-180i64..180).prop_map(move |m| Some(format_time(now + TimeDelta::minutes(m)))),
        1 => Just(Some("tomorrow".to_string())),
    ]
}

pub fn drain_failure_value(now: DateTime<Utc>) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(None),
        4 => (-180i64..180).prop_map(move |m| Some(format!("{} pdb blocks", format_time(now + TimeDelta::minutes(m))))),
        1 => Just(Some("failed".to_string())),
    ]
}

pub fn boot_value() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["b1", "b2", ""]).prop_map(str::to_string))
}

/// A node with a random mix of every protocol key, hook annotations
/// `hook-a`/`hook-b` and random values, including malformed ones.
pub fn any_node(name: String, now: DateTime<Utc>) -> impl Strategy<Value = NodeView> {
    let bools = prop::collection::vec(bool_value(), 8);
    let times = (time_value(now), time_value(now), drain_failure_value(now));
    let misc = (
        boot_value(),
        prop::sample::select(vec!["b1", "b2", ""]),
        any::<bool>(),
        prop::bits::u8::ANY.prop_map(|b| b % 4 != 0), // ready, mostly
        prop::option::of(Just("2024-05-01T00:00:00Z logind says no".to_string())),
        bool_value(),
    );
    (bools, times, misc).prop_map(
        move |(b, (ga, ge, df), (rb, boot, unsched, ready, rerr, lbl_needed))| {
            let mut v = NodeView {
                name: name.clone(),
                boot_id: boot.to_string(),
                unschedulable: unsched,
                ready,
                ..Default::default()
            };
            let anns = [
                keys::REBOOT_NEEDED,
                keys::REBOOT_IN_PROGRESS,
                keys::REBOOT_OK,
                keys::REBOOT_PAUSED,
                keys::AGENT_MADE_UNSCHEDULABLE,
                "hook-a",
            ];
            for (k, val) in anns.iter().zip(&b) {
                if let Some(val) = val {
                    v.annotations.insert(k.to_string(), val.clone());
                }
            }
            for (k, val) in [
                (keys::BEFORE_REBOOT, &b[6]),
                (keys::AFTER_REBOOT, &b[7]),
                (keys::REBOOT_NEEDED, &lbl_needed),
            ] {
                if let Some(val) = val {
                    v.labels.insert(k.to_string(), val.clone());
                }
            }
            for (k, val) in [
                (keys::GRANTED_AT, ga),
                (keys::GRANT_EXPIRES, ge),
                (keys::DRAIN_FAILURE, df),
                (keys::REBOOT_BOOT_ID, rb),
                (keys::REBOOT_ERROR, rerr),
            ] {
                if let Some(val) = val {
                    v.annotations.insert(k.to_string(), val);
                }
            }
            if b[5].as_deref() == Some("true") {
                v.annotations.insert("hook-b".into(), "true".into());
            }
            v
        },
    )
}
