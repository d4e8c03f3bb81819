//! The workloads a drain evicted ([`crate::keys::EVICTED_PODS`]) and the health gate after the
//! reboot: every recorded workload runs Ready again somewhere, or `--pod-recovery-timeout`
//! has passed since the node came back.
//!
//! The agent records the controllers of the pods it is about to evict (before the first
//! eviction, so the record is on the node before the reboot), stamps `back` when it sees
//! the node rebooted, and removes the record once the gate passes. The operator does not
//! release the node's slot while the record is there.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// At most this many workloads are recorded (the ones with the most evicted pods); the
/// rest are counted in [`EvictedPods::omitted`] and not waited for. Keeps the annotation
/// a few KiB at most.
pub const MAX_WORKLOADS: usize = 32;

/// The agent's flag for the gate's timeout.
pub const POD_RECOVERY_TIMEOUT_FLAG: &str = "--pod-recovery-timeout";

/// `--pod-recovery-timeout`'s default.
pub const DEFAULT_POD_RECOVERY_TIMEOUT: TimeDelta = TimeDelta::minutes(10);

/// One controller whose pods were evicted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    /// The pods' namespace.
    pub namespace: String,
    /// The controller's kind (`ReplicaSet`, `StatefulSet`, ...).
    pub kind: String,
    /// The controller's name.
    pub name: String,
    /// The controller's UID: pods are matched by their controller ownerReference's UID.
    pub uid: String,
    /// How many of its pods were evicted.
    pub count: u32,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.namespace, self.kind, self.name)
    }
}

/// The value of [`crate::keys::EVICTED_PODS`]: compact JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EvictedPods {
    /// When the agent saw the node back from the reboot (the timeout counts from here);
    /// absent before the reboot.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "seconds")]
    pub back: Option<DateTime<Utc>>,
    /// The recorded workloads, most evicted pods first (at most [`MAX_WORKLOADS`]).
    pub workloads: Vec<Workload>,
    /// How many further workloads had pods evicted but were not recorded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u32,
}

/// Times as every annotation of ours writes them: RFC3339, UTC, seconds.
mod seconds {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::node::{format_time, parse_time};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_time(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(v) => parse_time(&v)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("{v:?} is not an RFC3339 time"))),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl EvictedPods {
    /// Parses the annotation's value; the error says what is wrong.
    pub fn parse(s: &str) -> Result<EvictedPods, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    /// The annotation's value.
    pub fn to_value(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    /// A record of `workloads` (one entry per evicted pod or per workload with its count;
    /// entries with the same UID are added up), capped at [`MAX_WORKLOADS`].
    pub fn of(workloads: impl IntoIterator<Item = Workload>) -> EvictedPods {
        let mut by_uid: BTreeMap<String, Workload> = BTreeMap::new();
        for w in workloads {
            by_uid
                .entry(w.uid.clone())
                .and_modify(|e| e.count = e.count.saturating_add(w.count))
                .or_insert(w);
        }
        capped(by_uid.into_values().collect(), 0, None)
    }

    /// This record and a later drain's plan of the same reboot (the agent restarted
    /// mid-drain): per workload the larger count, since the later plan sees only the pods
    /// the first one had not evicted yet.
    pub fn merge(&self, later: &EvictedPods) -> EvictedPods {
        let mut by_uid: BTreeMap<String, Workload> = BTreeMap::new();
        for w in self.workloads.iter().chain(&later.workloads) {
            by_uid
                .entry(w.uid.clone())
                .and_modify(|e| e.count = e.count.max(w.count))
                .or_insert_with(|| w.clone());
        }
        capped(
            by_uid.into_values().collect(),
            self.omitted.max(later.omitted),
            self.back,
        )
    }
}

fn capped(mut ws: Vec<Workload>, omitted: u32, back: Option<DateTime<Utc>>) -> EvictedPods {
    ws.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cmp(b)));
    let dropped = ws.len().saturating_sub(MAX_WORKLOADS);
    ws.truncate(MAX_WORKLOADS);
    EvictedPods {
        back,
        workloads: ws,
        omitted: omitted.saturating_add(dropped as u32),
    }
}

/// The pods of one controller as they are now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodCount {
    /// Pods not being deleted.
    pub existing: u32,
    /// Of those, Ready.
    pub ready: u32,
}

/// Per controller UID, its pods now; a UID without an entry has no pods.
pub type WorkloadPods = BTreeMap<String, PodCount>;

/// Whether a workload is Ready again: at least `count` Ready pods, or as many as exist
/// if fewer do (it was scaled down, replaced by a rollout, or deleted: nothing more will
/// come back).
pub fn recovered(w: &Workload, pods: &WorkloadPods) -> bool {
    let now = pods.get(&w.uid).copied().unwrap_or_default();
    now.ready >= w.count.min(now.existing)
}

/// Where the gate stands for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRecovery {
    /// Nothing to wait for: no record, or the node has not come back yet.
    NotApplicable,
    /// The pods have not been looked at yet.
    Unknown {
        /// When the gate gives up.
        deadline: DateTime<Utc>,
    },
    /// Some workloads are not Ready again yet.
    Waiting {
        /// Those workloads with their pods now.
        pending: Vec<(Workload, PodCount)>,
        /// When the gate gives up.
        deadline: DateTime<Utc>,
    },
    /// Every recorded workload is Ready again.
    Recovered,
    /// The timeout passed; these were not Ready again (pod counts unknown if not looked at).
    TimedOut {
        /// The workloads not recovered.
        pending: Vec<(Workload, Option<PodCount>)>,
    },
}

/// The gate for a record, given the pods now (`None`: not looked at yet).
pub fn evaluate(
    rec: Option<&EvictedPods>,
    pods: Option<&WorkloadPods>,
    timeout: TimeDelta,
    now: DateTime<Utc>,
) -> PodRecovery {
    let Some((rec, back)) = rec.and_then(|r| r.back.map(|b| (r, b))) else {
        return PodRecovery::NotApplicable;
    };
    // An absurdly long timeout never ends (rather than overflowing into "now").
    let deadline = back
        .checked_add_signed(timeout)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let pending: Vec<(Workload, Option<PodCount>)> = rec
        .workloads
        .iter()
        .filter(|w| pods.is_none_or(|p| !recovered(w, p)))
        .map(|w| {
            let count = pods.map(|p| p.get(&w.uid).copied().unwrap_or_default());
            (w.clone(), count)
        })
        .collect();
    if pending.is_empty() {
        return PodRecovery::Recovered;
    }
    if now >= deadline {
        return PodRecovery::TimedOut { pending };
    }
    match pods {
        None => PodRecovery::Unknown { deadline },
        Some(_) => PodRecovery::Waiting {
            pending: pending
                .into_iter()
                .map(|(w, c)| (w, c.unwrap_or_default()))
                .collect(),
            deadline,
        },
    }
}

/// `default/ReplicaSet web-7d9 (1/3 Ready), ...` for logs, Events and wait reasons.
pub fn describe<'a>(pending: impl IntoIterator<Item = (&'a Workload, Option<PodCount>)>) -> String {
    pending
        .into_iter()
        .map(|(w, c)| match c {
            Some(c) => format!("{w} ({}/{} Ready)", c.ready, w.count.min(c.existing)),
            None => format!("{w} ({} evicted)", w.count),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::t0;

    fn w(name: &str, count: u32) -> Workload {
        Workload {
            namespace: "default".into(),
            kind: "ReplicaSet".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            count,
        }
    }

    fn pods(entries: &[(&str, u32, u32)]) -> WorkloadPods {
        entries
            .iter()
            .map(|(n, existing, ready)| {
                (
                    format!("uid-{n}"),
                    PodCount {
                        existing: *existing,
                        ready: *ready,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn value_round_trips_and_is_compact() {
        let mut r = EvictedPods::of([w("web", 1), w("db", 1), w("web", 1)]);
        assert_eq!(r.workloads, vec![w("web", 2), w("db", 1)]);
        assert_eq!(
            r.to_value(),
            r#"{"workloads":[{"namespace":"default","kind":"ReplicaSet","name":"web","uid":"uid-web","count":2},{"namespace":"default","kind":"ReplicaSet","name":"db","uid":"uid-db","count":1}]}"#
        );
        r.back = Some(t0());
        assert_eq!(EvictedPods::parse(&r.to_value()), Ok(r.clone()));
        assert!(
            r.to_value()
                .starts_with(r#"{"back":"2024-05-01T12:00:00Z""#)
        );
        // Written in seconds, as every time of ours; any RFC3339 is read.
        r.back = Some(t0() + TimeDelta::milliseconds(700));
        assert!(
            r.to_value()
                .starts_with(r#"{"back":"2024-05-01T12:00:00Z""#)
        );
        let read = EvictedPods::parse(r#"{"back":"2024-05-01T14:00:00+02:00","workloads":[]}"#);
        assert_eq!(read.unwrap().back, Some(t0()));
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"workloads":[{"name":"x"}]}"#,
            "true",
            r#"{"back":"noon","workloads":[]}"#,
        ] {
            assert!(EvictedPods::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capped_keeps_the_largest() {
        let many = (0..MAX_WORKLOADS as u32 + 5).map(|i| w(&format!("w{i:02}"), i + 1));
        let r = EvictedPods::of(many);
        assert_eq!(r.workloads.len(), MAX_WORKLOADS);
        assert_eq!(r.omitted, 5);
        assert_eq!(r.workloads[0].count, MAX_WORKLOADS as u32 + 5);
        assert!(r.workloads.iter().all(|w| w.count > 5));
    }

    #[test]
    fn merge_takes_the_larger_count() {
        let mut first = EvictedPods::of([w("web", 3), w("db", 1)]);
        first.back = Some(t0());
        let later = EvictedPods::of([w("web", 1), w("cache", 2)]);
        let m = first.merge(&later);
        assert_eq!(m.workloads, vec![w("web", 3), w("cache", 2), w("db", 1)]);
        assert_eq!(m.back, Some(t0()));
    }

    #[test]
    fn recovered_counts_ready_pods_up_to_what_exists() {
        let web = w("web", 2);
        assert!(!recovered(&web, &pods(&[("web", 2, 1)])));
        assert!(recovered(&web, &pods(&[("web", 3, 2)])));
        // Scaled down to one, or replaced by a rollout, or deleted.
        assert!(recovered(&web, &pods(&[("web", 1, 1)])));
        assert!(!recovered(&web, &pods(&[("web", 1, 0)])));
        assert!(recovered(&web, &pods(&[])));
    }

    #[test]
    fn gate() {
        let timeout = TimeDelta::minutes(10);
        let mut r = EvictedPods::of([w("web", 2), w("db", 1)]);
        let p = pods(&[("web", 2, 0), ("db", 1, 1)]);
        // Not back yet: the gate does not apply.
        assert_eq!(
            evaluate(Some(&r), Some(&p), timeout, t0()),
            PodRecovery::NotApplicable
        );
        assert_eq!(
            evaluate(None, None, timeout, t0()),
            PodRecovery::NotApplicable
        );
        r.back = Some(t0());
        let deadline = t0() + timeout;
        assert_eq!(
            evaluate(Some(&r), None, timeout, t0()),
            PodRecovery::Unknown { deadline }
        );
        let waiting = evaluate(Some(&r), Some(&p), timeout, t0() + TimeDelta::minutes(9));
        assert_eq!(
            waiting,
            PodRecovery::Waiting {
                pending: vec![(
                    w("web", 2),
                    PodCount {
                        existing: 2,
                        ready: 0
                    }
                )],
                deadline
            }
        );
        let PodRecovery::TimedOut { pending } = evaluate(Some(&r), Some(&p), timeout, deadline)
        else {
            panic!("expected a timeout")
        };
        assert_eq!(
            describe(pending.iter().map(|(w, c)| (w, *c))),
            "default/ReplicaSet web (0/2 Ready)"
        );
        let PodRecovery::TimedOut { pending } = evaluate(Some(&r), None, timeout, deadline) else {
            panic!("expected a timeout")
        };
        assert_eq!(
            describe(pending.iter().map(|(w, c)| (w, *c))),
            "default/ReplicaSet web (2 evicted), default/ReplicaSet db (1 evicted)"
        );
        let ok = pods(&[("web", 2, 2), ("db", 1, 1)]);
        assert_eq!(
            evaluate(Some(&r), Some(&ok), timeout, deadline),
            PodRecovery::Recovered
        );
        assert!(matches!(
            evaluate(Some(&r), Some(&p), TimeDelta::MAX, deadline),
            PodRecovery::Waiting { .. }
        ));
        // An empty record (nothing evicted) passes at once.
        let empty = EvictedPods {
            back: Some(t0()),
            ..Default::default()
        };
        assert_eq!(
            evaluate(Some(&empty), None, timeout, t0()),
            PodRecovery::Recovered
        );
    }
}
