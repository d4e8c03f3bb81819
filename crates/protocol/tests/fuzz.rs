//! Fuzzing (proptest) of everything in `protocol` that parses text from
//! outside: Node annotations and labels, FLUO's window flags, our
//! `--reboot-window`s and time zones, label selectors, os-release and
//! update.conf, `--max-rebooting-nodes`, Go durations, the Lease's pause
//! annotation, `--drain-timeout-action`, the `evicted-pods` record.
//!
//! Nothing may panic; an error must be non-empty and name the offending
//! key or flag; a value that is valid must round-trip through its printer;
//! the decisions must not panic on Nodes built from garbage. Bounded for CI;
//! `PROPTEST_CASES=100000 cargo nextest run -p protocol --test fuzz` runs
//! longer (see docs/fuzzing.md).

use std::collections::BTreeMap;

use chrono::{TimeDelta, Utc};
use proptest::prelude::*;
// `testutil` (the unit tests' generators) names these as `crate::...`.
use protocol::{keys, node, update_engine};

#[path = "../src/testutil.rs"]
#[allow(dead_code)]
mod testutil;

use protocol::agent::{AgentInput, AgentStep, DrainTimeoutAction, NodeOptions, next_step};
use protocol::evicted::{DEFAULT_POD_RECOVERY_TIMEOUT, EvictedPods};
use protocol::hostinfo::{HostInfo, is_valid_label_value, parse_env_file};
use protocol::node::{NodeState, NodeView};
use protocol::operator::{
    ClusterInputs, MaxRebooting, OperatorConfig, decide_with, parse_annotation_list, parse_pause,
};
use protocol::schedule::{LocalWindow, Schedule};
use protocol::selector::LabelSelector;
use protocol::window::{RebootWindow, format_go_duration, parse_go_duration};
use testutil::{any_node, t0};

/// At least `n` cases; `PROPTEST_CASES` raises it.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n.max(ProptestConfig::default().cases),
        ..ProptestConfig::default()
    }
}

/// Every key the protocol reads or writes, FLUO's and ours.
fn protocol_key() -> impl Strategy<Value = String> {
    prop::sample::select(
        keys::FLUO_KEYS
            .iter()
            .chain(keys::OUR_KEYS.iter())
            .map(|k| k.to_string())
            .collect::<Vec<_>>(),
    )
}

/// Values close to valid ones, and garbage: unicode, control characters,
/// huge strings.
fn nasty_value() -> impl Strategy<Value = String> {
    let near = prop::sample::select(vec![
        "true",
        "false",
        "true ",
        " true",
        "TRUE",
        "True",
        "false\n",
        "1",
        "0",
        "-1",
        "+1",
        "yes",
        "",
        "4294967295",
        "4294967296",
        "99999999999999999999999",
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00+14:00",
        "2024-05-01T12:00:00-23:59",
        "2024-05-01 12:00:00Z",
        "2024-05-01t12:00:00z",
        "2024-05-01T12:00:00.999999999Z",
        "2024-05-01T12:00:00",
        "2024-02-30T12:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T23:59:60Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-23:59",
        "9999-12-31T23:59:59Z pdb blocks",
        "2024-05-01T12:00:00Z",
        "{\"workloads\":[]}",
        "{\"workloads\":[{\"uid\":\"u\",\"kind\":\"ReplicaSet\",\"namespace\":\"d\",\"name\":\"w\",\"count\":4294967295}]}",
        "{\"workloads\":null}",
        "[]",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        6 => near,
        3 => any::<String>(),
        1 => "[\\PC\\t\\n ]{0,40}",
        1 => (any::<char>(), 0usize..70_000).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

/// A Node of random protocol keys (and random other keys) with nasty values.
fn garbage_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key =
        prop_oneof![3 => protocol_key(), 1 => any::<String>(), 1 => Just("hook-a".to_string())];
    prop::collection::btree_map(key, nasty_value(), 0..8)
}

/// Random taints, ours among them, with nasty values.
fn garbage_taints() -> impl Strategy<Value = Vec<node::Taint>> {
    let key = prop_oneof![Just(keys::REBOOT_TAINT.to_string()), any::<String>()];
    let effect = prop_oneof![Just("PreferNoSchedule".to_string()), any::<String>()];
    let taint = (
        key,
        prop::option::of(nasty_value()),
        effect,
        prop::option::of(any::<String>()),
    )
        .prop_map(|(key, value, effect, time_added)| node::Taint {
            key,
            value,
            effect,
            time_added,
        });
    prop::collection::vec(taint, 0..4)
}

/// A Node of random protocol keys (and random other keys) with nasty values.
fn garbage_node(name: String) -> impl Strategy<Value = NodeView> {
    (
        garbage_map(),
        garbage_map(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just("b1".to_string()), Just(String::new()), any::<String>()],
        garbage_taints(),
    )
        .prop_map(
            move |(annotations, labels, unschedulable, ready, boot_id, taints)| NodeView {
                name: name.clone(),
                annotations,
                labels,
                unschedulable,
                ready,
                boot_id,
                taints,
            },
        )
}

/// The well-formed structured nodes of the unit tests, with a few values
/// replaced by garbage.
fn mangled_node(name: String) -> impl Strategy<Value = NodeView> {
    (
        any_node(name, t0()),
        prop::collection::vec((any::<bool>(), protocol_key(), nasty_value()), 0..3),
    )
        .prop_map(|(mut v, edits)| {
            for (label, k, val) in edits {
                let m = if label {
                    &mut v.labels
                } else {
                    &mut v.annotations
                };
                m.insert(k, val);
            }
            v
        })
}

fn any_view(name: String) -> impl Strategy<Value = NodeView> {
    prop_oneof![garbage_node(name.clone()), mangled_node(name)]
}

const BOOLEAN_ANNOTATIONS: [&str; 5] = [
    keys::REBOOT_NEEDED,
    keys::REBOOT_IN_PROGRESS,
    keys::REBOOT_OK,
    keys::REBOOT_PAUSED,
    keys::AGENT_MADE_UNSCHEDULABLE,
];
const BOOLEAN_LABELS: [&str; 2] = [keys::BEFORE_REBOOT, keys::AFTER_REBOOT];

fn any_host() -> impl Strategy<Value = Option<update_engine::UpdateStatus>> {
    let op = prop_oneof![
        prop::sample::select(update_engine::ALL_OPERATIONS.to_vec()).prop_map(str::to_string),
        any::<String>(),
    ];
    prop::option::of(
        (
            any::<i64>(),
            any::<f64>(),
            op,
            any::<String>(),
            any::<i64>(),
        )
            .prop_map(update_engine::UpdateStatus::from_tuple),
    )
}

proptest! {
    #![proptest_config(cases(2000))]

    /// A node's protocol keys parse or fail with an error naming the node,
    /// the key and its exact value; a boolean key is never read as true
    /// unless it is exactly "true".
    #[test]
    fn node_state_parse(v in any_view("node-ü".into())) {
        match NodeState::parse(&v) {
            Ok(s) => {
                for k in BOOLEAN_ANNOTATIONS {
                    let raw = v.annotation(k);
                    prop_assert!(raw.is_none() || raw == Some("true") || raw == Some("false"), "{k}={raw:?} accepted");
                }
                for k in BOOLEAN_LABELS {
                    let raw = v.label(k);
                    prop_assert!(raw.is_none() || raw == Some("true") || raw == Some("false"), "{k}={raw:?} accepted");
                }
                prop_assert_eq!(s.reboot_ok, v.annotation(keys::REBOOT_OK) == Some("true"));
                prop_assert_eq!(s.reboot_in_progress, v.annotation(keys::REBOOT_IN_PROGRESS) == Some("true"));
                prop_assert_eq!(s.holds_slot(), v.holds_slot());
            }
            Err(e) => {
                let found = match e.kind {
                    node::KeyKind::Annotation => v.annotation(&e.key),
                    node::KeyKind::Label => v.label(&e.key),
                };
                prop_assert_eq!(found, Some(e.value.as_str()), "the error names a key and value that are there");
                prop_assert!(e.key.starts_with(keys::PREFIX));
                prop_assert_eq!(&e.node, &v.name);
                let msg = e.to_string();
                prop_assert!(msg.contains(&e.key) && msg.contains("node-ü") && !e.expected.is_empty(), "{msg}");
            }
        }
    }

    /// FLUO's window flags: any text parses or fails with an error that starts
    /// with the flag's name.
    #[test]
    fn window_flags_garbage(
        start in prop::option::of(prop_oneof![any::<String>(), window_start_near()]),
        length in prop::option::of(prop_oneof![any::<String>(), duration_near()]),
    ) {
        if let Err(e) = RebootWindow::from_flags(start.as_deref(), length.as_deref()) {
            let msg = e.to_string();
            prop_assert!(msg.starts_with(e.flag()), "{msg}");
            prop_assert!(msg.len() > e.flag().len() + 2, "{msg}");
        }
    }

    /// Valid FLUO windows round-trip through the printer.
    #[test]
    fn window_round_trip(
        day in prop::option::of(prop::sample::select(vec!["Mon", "tue", "WEDNESDAY", "Thursday", "fri", "Sat", "sUn"])),
        h in 0u32..24,
        m in 0u32..60,
        len_secs in 1i64..(7 * 24 * 3600),
    ) {
        let start = match day {
            Some(d) => format!("{d} {h}:{m:02}"),
            None => format!("{h:02}:{m:02}"),
        };
        let length = format_go_duration(TimeDelta::seconds(len_secs));
        match RebootWindow::parse(&start, &length) {
            Ok(w) => {
                let printed = w.to_string();
                let (s, l) = printed.split_once(" +").expect("start +length");
                prop_assert_eq!(RebootWindow::parse(s, l), Ok(w));
                prop_assert_eq!(w.length(), TimeDelta::seconds(len_secs));
            }
            Err(e) => {
                // Only too long: a daily window of a day or more.
                prop_assert!(day.is_none() && len_secs >= 24 * 3600, "{e}");
                prop_assert_eq!(e.flag(), "--reboot-window-length");
            }
        }
    }

    /// `--reboot-window` and `--reboot-window-timezone`: any text parses or
    /// fails naming its flag; valid schedules round-trip.
    #[test]
    fn schedule_garbage(
        values in prop::collection::vec(prop_oneof![any::<String>(), local_window_near()], 0..4),
        tz in prop_oneof![Just("UTC".to_string()), Just("Europe/Berlin".to_string()), Just(" America/New_York ".to_string()), any::<String>()],
    ) {
        match Schedule::from_flags(&values, &tz) {
            Ok(Some(s)) => {
                for w in s.windows() {
                    prop_assert_eq!(LocalWindow::parse(&w.to_string()), Ok(*w));
                }
                let printed = s.to_string();
                prop_assert!(printed.ends_with(&format!("({})", s.timezone().name())), "{printed}");
                // Every instant can be asked about.
                let now = t0();
                let _ = (s.contains(now), s.next_change(now), s.current_end(now));
            }
            Ok(None) => {}
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with(e.flag()), "{msg}");
            }
        }
    }

    /// Label selectors: garbage parses or fails quoting the selector; what
    /// parses prints to an equal selector.
    #[test]
    fn selector_garbage(s in prop_oneof![any::<String>(), selector_near()]) {
        match LabelSelector::parse(&s) {
            Ok(sel) => {
                let printed = sel.to_string();
                prop_assert_eq!(LabelSelector::parse(&printed), Ok(sel.clone()), "{:?} printed as {:?}", s, printed);
                let _ = sel.matches(&BTreeMap::from([("zone".to_string(), "a".to_string())]));
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&format!("{s:?}")) && !e.reason.is_empty(), "{msg}");
            }
        }
    }

    /// os-release and update.conf: any text gives valid label values or none.
    #[test]
    fn hostinfo_garbage(
        os in prop::option::of(prop_oneof![any::<String>(), env_file_near()]),
        usr in prop::option::of(prop_oneof![any::<String>(), env_file_near()]),
        etc in prop::option::of(prop_oneof![any::<String>(), env_file_near()]),
    ) {
        let info = HostInfo::from_files(os.as_deref(), usr.as_deref(), etc.as_deref());
        for v in [&info.id, &info.version, &info.group].into_iter().flatten() {
            prop_assert!(!v.is_empty() && v.len() <= 63 && is_valid_label_value(v), "{v:?}");
        }
    }

    /// A quoted os-release value reads back as written, escapes included.
    #[test]
    fn env_file_round_trip(key in "[A-Z_][A-Z0-9_]{0,10}", value in "[^\\n\\r\\u{b}\\u{c}\\u{85}\\u{2028}\\u{2029}]{0,60}") {
        let escaped: String = value
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' | '$' | '`' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let text = format!("# comment\n{key}=\"{escaped}\"\n");
        prop_assert_eq!(parse_env_file(&text), vec![(key, value)]);
    }

    /// `--max-rebooting-nodes`: garbage fails naming the flag; valid values round-trip.
    #[test]
    fn max_rebooting_garbage(s in prop_oneof![any::<String>(), "[ ]?[+-]?[0-9]{0,12}%?[ ]?"]) {
        match MaxRebooting::parse_flag(&s, "--max-rebooting-nodes-per-zone") {
            Ok(m) => {
                prop_assert_eq!(m.to_string().parse::<MaxRebooting>(), Ok(m));
                prop_assert!(m.resolve(0) >= 1 && m.resolve(usize::MAX) >= 1);
            }
            Err(e) => prop_assert!(e.to_string().starts_with("--max-rebooting-nodes-per-zone: invalid value"), "{e}"),
        }
    }

    /// Go durations: garbage fails quoting the input; values print and parse back.
    #[test]
    fn go_duration_garbage(s in prop_oneof![any::<String>(), duration_near()]) {
        match parse_go_duration(&s) {
            Ok(d) => prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d)),
            Err(e) => prop_assert!(e.contains(&format!("{s:?}")), "{e}"),
        }
    }

    /// The remaining small parsers never panic and name what they read.
    #[test]
    fn small_parsers_garbage(s in prop_oneof![nasty_value(), "[ ]?(?i:uncordon|reboot)[ ]?"]) {
        match parse_pause(Some(&s)) {
            Ok(p) => prop_assert_eq!(p, s == "true"),
            Err(e) => prop_assert!(e.contains(keys::PAUSED) && e.contains(&format!("{s:?}")), "{e}"),
        }
        match s.parse::<DrainTimeoutAction>() {
            Ok(a) => prop_assert_eq!(a.to_string().parse::<DrainTimeoutAction>(), Ok(a)),
            Err(e) => prop_assert!(e.to_string().starts_with("--drain-timeout-action:"), "{e}"),
        }
        for a in parse_annotation_list(&s) {
            prop_assert!(!a.is_empty() && !a.contains(','));
        }
        match EvictedPods::parse(&s) {
            Ok(e) => prop_assert_eq!(EvictedPods::parse(&e.to_value()), Ok(e)),
            Err(e) => prop_assert!(!e.is_empty()),
        }
        let _ = node::parse_time(&s);
    }
}

proptest! {
    // Whole decisions over several nodes cost more per case.
    #![proptest_config(cases(400))]

    /// The operator decides on garbage without panicking: a malformed node
    /// is a problem naming it and gets no patch.
    #[test]
    fn operator_decides_on_garbage(
        nodes in (1usize..5).prop_flat_map(|n| {
            (0..n).map(|i| any_view(format!("n{i}"))).collect::<Vec<_>>()
        }),
        max in 1u32..4,
        dt in -(3 * 24 * 60i64)..(3 * 24 * 60),
    ) {
        let cfg = OperatorConfig {
            max_rebooting: MaxRebooting::Count(max),
            before_reboot_annotations: vec!["hook-a".into()],
            after_reboot_annotations: vec!["hook-a".into()],
            ..OperatorConfig::default()
        };
        let now = t0() + TimeDelta::minutes(dt);
        let d = decide_with(&nodes, &cfg, &ClusterInputs::default(), now);
        for v in &nodes {
            let malformed = NodeState::parse(v).is_err();
            let problem = d.problems.iter().find(|p| p.node == v.name);
            prop_assert_eq!(malformed, problem.is_some(), "{}", v.name);
            if let Some(p) = problem {
                prop_assert!(p.message.contains(keys::PREFIX), "{}", p.message);
                prop_assert!(d.patches.iter().all(|p| p.node != v.name), "patched malformed {}", v.name);
            }
        }
        if let Some(t) = d.next_check {
            prop_assert!(t > now);
        }
    }

    /// The agent decides on garbage without panicking, and a node it cannot
    /// parse is never rebooted or drained.
    #[test]
    fn agent_decides_on_garbage(
        v in any_view("n".into()),
        host in any_host(),
        drained in any::<bool>(),
        os_release in ".{0,200}",
        (taint, lb) in (any::<bool>(), any::<bool>()),
        sentinel in prop::option::of(any::<bool>()),
    ) {
        let info = HostInfo::from_files(Some(&os_release), None, None);
        let step = next_step(&AgentInput {
            node: &v,
            host: host.as_ref(),
            info: &info,
            drained,
            now: Utc::now(),
            pods: None,
            pod_recovery_timeout: DEFAULT_POD_RECOVERY_TIMEOUT,
            options: NodeOptions { prefer_no_schedule_taint: taint, exclude_from_load_balancers: lb },
            sentinel,
        });
        // Taints that are not ours are never dropped or changed.
        if let AgentStep::Patch(p) = &step
            && let Some(t) = &p.taints
        {
            let others = |ts: &[node::Taint]| ts.iter().filter(|t| t.key != keys::REBOOT_TAINT).cloned().collect::<Vec<_>>();
            prop_assert_eq!(others(t), others(&v.taints));
        }
        if NodeState::parse(&v).is_err() {
            prop_assert!(!matches!(step, AgentStep::Drain | AgentStep::Reboot), "{step:?}");
        }
        if let AgentStep::Wait(reason) = &step {
            prop_assert!(!reason.is_empty());
        }
    }
}

fn window_start_near() -> impl Strategy<Value = String> {
    "(?i:mon|tue|wednesday|sun|funday)?[ \\t]{0,2}[0-9]{0,3}:?[0-9]{0,3}[ ]?"
}

fn duration_near() -> impl Strategy<Value = String> {
    "[+-]?([0-9]{0,40}(\\.[0-9]{0,25})?(ns|us|µs|μs|ms|s|m|h|d|)){0,4}"
}

fn local_window_near() -> impl Strategy<Value = String> {
    "((?i:mon|tue|fri|sat|sun|xyz)([,-](?i:mon|fri|sun|))?[ ])?[0-9]{1,2}:[0-9]{2}-[0-9]{1,2}:[0-9]{2}(;[ ]?[0-9]{2}:[0-9]{2}-24:00)?"
}

fn selector_near() -> impl Strategy<Value = String> {
    let req = prop_oneof![
        "[a-z]{1,5}(\\.io/[a-z]{1,5})?(=|==|!=|>|<)[a-z0-9]{0,4}",
        "!?[a-z]{1,5}(/[a-z])?",
        "[a-z]{1,5} (in|notin) \\(([a-z0-9]{0,3}(,[a-z]{0,3}){0,2})?\\)?",
        "[-a-zA-Z0-9_./=!<>(), ]{0,12}",
    ];
    prop::collection::vec(req, 0..4).prop_map(|rs| rs.join(","))
}

fn env_file_near() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "(export )?(ID|VERSION|GROUP)=\"[^\"]{0,20}\\\\?\"?",
        "(ID|VERSION|GROUP)='[^']{0,20}'?",
        "(ID|VERSION|GROUP)=[ -~]{0,30}( #.*)?",
        "#.{0,10}",
        "[ =\\t]{0,5}",
    ];
    prop::collection::vec(line, 0..6).prop_map(|ls| ls.join("\n"))
}

/// The largest fraction that fits at each magnitude must not overflow
/// (i128 arithmetic near its end).
#[test]
fn go_duration_near_overflow() {
    for s in [
        "170141183460469231731687303715884105727ns",
        // i128::MAX / 1h, plus a fraction that crosses i128::MAX.
        "47261439850130342147690917.99h",
        "47267519840596431234567890.99999999999999999999h",
        "47267519840596431234567890h.9h",
        "-9223372036854775808ns",
        "9223372036854775808ns",
        "2562047h47m16.854775808s",
        "99999999999999999999999999999h",
        "0.00000000000000000000000000001ns",
    ] {
        match parse_go_duration(s) {
            Ok(d) => assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d), "{s}"),
            Err(e) => assert!(e.contains(s), "{s}: {e}"),
        }
    }
}
