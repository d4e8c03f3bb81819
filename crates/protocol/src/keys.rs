//! Every annotation and label key of the protocol, as full strings.
//!
//! FLUO's keys (`reboot-needed` ... `version`) are used exactly as FLUO
//! v0.10.0 writes them. The keys below "Our own keys" are additions of this
//! project; FLUO ignores them, so a cluster can switch back and forth.
//! Boolean values are the strings [`TRUE`] and [`FALSE`].

macro_rules! key {
    ($(#[$doc:meta])* $name:ident = $suffix:literal) => {
        $(#[$doc])*
        pub const $name: &str = concat!("flatcar-linux-update.v1.flatcar-linux.net/", $suffix);
    };
}

/// Prefix shared by every key.
pub const PREFIX: &str = "flatcar-linux-update.v1.flatcar-linux.net/";

/// The string value meaning true.
pub const TRUE: &str = "true";
/// The string value meaning false.
pub const FALSE: &str = "false";

key!(
    /// Annotation and label, written by the agent (or by hand): the node wants a reboot.
    REBOOT_NEEDED = "reboot-needed"
);
key!(
    /// Annotation, agent: drain and reboot have started.
    REBOOT_IN_PROGRESS = "reboot-in-progress"
);
key!(
    /// Annotation, operator: permission to drain and reboot.
    REBOOT_OK = "reboot-ok"
);
key!(
    /// Annotation, admin: the operator leaves this node alone (never picks it).
    REBOOT_PAUSED = "reboot-paused"
);
key!(
    /// Annotation, agent: update_engine's CurrentOperation.
    STATUS = "status"
);
key!(
    /// Annotation, agent: update_engine's last check, unix seconds.
    LAST_CHECKED_TIME = "last-checked-time"
);
key!(
    /// Annotation, agent: the version update_engine downloaded.
    NEW_VERSION = "new-version"
);
key!(
    /// Annotation, agent: the agent cordoned the node, so it may uncordon it.
    AGENT_MADE_UNSCHEDULABLE = "agent-made-unschedulable"
);
key!(
    /// Label, operator: the node waits for its before-reboot hook annotations.
    BEFORE_REBOOT = "before-reboot"
);
key!(
    /// Label, operator: the node waits for its after-reboot hook annotations.
    AFTER_REBOOT = "after-reboot"
);
key!(
    /// Label, agent: `ID` from /etc/os-release.
    LABEL_ID = "id"
);
key!(
    /// Label, agent: `GROUP` from update.conf.
    LABEL_GROUP = "group"
);
key!(
    /// Label, agent: `VERSION` from /etc/os-release.
    LABEL_VERSION = "version"
);

// ---- Our own keys ----

key!(
    /// Annotation, agent (ours): the node's boot ID (`status.nodeInfo.bootID`)
    /// when the reboot started. A different boot ID later means it rebooted.
    REBOOT_BOOT_ID = "reboot-boot-id"
);
key!(
    /// Annotation, agent (ours): why the last drain failed, as
    /// `<RFC3339 time> <reason>`. Cleared after a successful reboot.
    DRAIN_FAILURE = "drain-failure"
);
key!(
    /// Annotation, agent (ours): the last error of logind's Reboot call, as
    /// `<RFC3339 time> <error>`. Cleared after a successful reboot.
    REBOOT_ERROR = "reboot-error"
);
key!(
    /// Annotation, operator (ours): RFC3339 instant after which a granted node
    /// must not start draining (the end of the reboot window it was granted in).
    GRANT_EXPIRES = "grant-expires"
);
key!(
    /// Annotation, operator (ours): RFC3339 instant at which `reboot-ok=true`
    /// was set. A `drain-failure` at or after it spoils the grant.
    GRANTED_AT = "granted-at"
);

key!(
    /// Annotation, operator (ours): RFC3339 instant at which the operator first
    /// saw `reboot-needed=true` on the node; nodes waiting longest go first.
    /// Removed when `reboot-needed` is no longer true.
    REBOOT_NEEDED_SINCE = "reboot-needed-since"
);
key!(
    /// Annotation, operator (ours): how many grants in a row ended in a failed
    /// drain (decimal). Sets the exponential backoff; removed after a
    /// successful reboot.
    REBOOT_FAILURES = "reboot-failures"
);
key!(
    /// Annotation, operator (ours): `<RFC3339 time> <reason>`: the node holds a
    /// grant but did not come back Ready within `--reboot-timeout`. Removed
    /// when it comes back.
    STUCK_SINCE = "stuck-since"
);
key!(
    /// Annotation, operator (ours): RFC3339 instant at which the node was last
    /// picked (labelled `before-reboot`, or granted directly). Kept as
    /// history: `--min-reboot-interval` counts from the latest one.
    PICKED_AT = "picked-at"
);
key!(
    /// Annotation, operator (ours): RFC3339 instant at which the node's slot
    /// was last released after a reboot. Kept as history:
    /// `--min-reboot-interval` counts from the latest one.
    RELEASED_AT = "released-at"
);
key!(
    /// Annotation, agent (ours): compact JSON of the workloads whose pods the drain
    /// evicted (see [`crate::evicted`]), written before the first eviction. The operator
    /// does not release the slot while it is there; the agent removes it once those
    /// workloads run Ready again or `--pod-recovery-timeout` passed after the reboot.
    EVICTED_PODS = "evicted-pods"
);
key!(
    /// Annotation on the operator's Lease, set by an admin (ours): `"true"`
    /// stops every new pick and grant in the cluster.
    PAUSED = "paused"
);
key!(
    /// Annotation on the operator's Lease, written by the leader (ours): its effective
    /// scheduling settings as JSON ([`crate::settings`]), for `fluoctl status` and `plan`.
    OPERATOR_SETTINGS = "operator-settings"
);
key!(
    /// Annotation on the operator's Lease, written by the leader (ours): the reboot slots of
    /// Nodes deleted while they held one, as JSON `{"<node>": {"since": "<RFC3339>", "zone":
    /// "<zone>"}}` ([`crate::operator::DepartedSlot`]): their machines may still be going
    /// down or booting, so each still counts until a Node of that name is back and Ready, or
    /// `--reboot-timeout` after the deletion. Kept here so the next leader counts them too.
    DEPARTED_SLOTS = "departed-slots"
);
key!(
    /// Annotation on the operator's Lease, written by the leader (ours): the nodes that hold
    /// or are about to hold a reboot slot, as JSON `{"<node>": "<zone>" or null}`, written
    /// before their grants. A new leader that finds one of them gone from the cluster counts
    /// its slot as departed ([`DEPARTED_SLOTS`]): it was deleted while no leader watched.
    SLOT_HOLDERS = "slot-holders"
);

key!(
    /// Annotation, agent (ours): what asked for the reboot, comma-separated in the order
    /// they asked: `update_engine` and/or `sentinel` (`--reboot-sentinel`). Removed with
    /// `reboot-needed` after the reboot.
    REBOOT_NEEDED_BY = "reboot-needed-by"
);
key!(
    /// Annotation, agent (ours): the boot ID in which `--reboot-sentinel` asked for the
    /// reboot. Removed once the sentinel is seen gone in a later boot; while it is there
    /// and the boot ID differs, the sentinel outlived the reboot and is not obeyed again.
    SENTINEL_BOOT_ID = "sentinel-boot-id"
);
key!(
    /// Annotation, agent (ours): the agent set [`EXCLUDE_FROM_LB_LABEL`] for this reboot
    /// (`--exclude-from-load-balancers`), so it removes it afterwards.
    AGENT_EXCLUDED_FROM_LB = "agent-excluded-from-load-balancers"
);
key!(
    /// Taint key, agent (ours): `PreferNoSchedule` while the node waits for or goes
    /// through a reboot (`--prefer-no-schedule-taint`).
    REBOOT_TAINT = "reboot-pending"
);

/// Kubernetes' well-known label that takes a node out of external load balancers.
pub const EXCLUDE_FROM_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// FLUO's keys, in the table order of PROTOCOL.md.
pub const FLUO_KEYS: [&str; 13] = [
    REBOOT_NEEDED,
    REBOOT_IN_PROGRESS,
    REBOOT_OK,
    REBOOT_PAUSED,
    STATUS,
    LAST_CHECKED_TIME,
    NEW_VERSION,
    AGENT_MADE_UNSCHEDULABLE,
    BEFORE_REBOOT,
    AFTER_REBOOT,
    LABEL_ID,
    LABEL_GROUP,
    LABEL_VERSION,
];

/// The keys this project adds.
pub const OUR_KEYS: [&str; 19] = [
    REBOOT_BOOT_ID,
    DRAIN_FAILURE,
    REBOOT_ERROR,
    GRANT_EXPIRES,
    GRANTED_AT,
    REBOOT_NEEDED_SINCE,
    REBOOT_FAILURES,
    STUCK_SINCE,
    PICKED_AT,
    RELEASED_AT,
    EVICTED_PODS,
    PAUSED,
    OPERATOR_SETTINGS,
    DEPARTED_SLOTS,
    SLOT_HOLDERS,
    REBOOT_NEEDED_BY,
    SENTINEL_BOOT_ID,
    AGENT_EXCLUDED_FROM_LB,
    REBOOT_TAINT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_full_strings() {
        assert_eq!(
            REBOOT_OK,
            "flatcar-linux-update.v1.flatcar-linux.net/reboot-ok"
        );
        assert_eq!(LABEL_ID, "flatcar-linux-update.v1.flatcar-linux.net/id");
        for k in FLUO_KEYS.iter().chain(OUR_KEYS.iter()) {
            assert!(k.starts_with(PREFIX), "{k}");
            // A valid k8s qualified name: prefix + name of at most 63 chars.
            let name = &k[PREFIX.len()..];
            assert!(!name.is_empty() && name.len() <= 63, "{k}");
        }
        let mut all: Vec<_> = FLUO_KEYS.iter().chain(OUR_KEYS.iter()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), FLUO_KEYS.len() + OUR_KEYS.len());
    }
}
