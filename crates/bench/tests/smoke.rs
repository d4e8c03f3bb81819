//! `bench --quick` end to end: the real binaries, a report with every metric measured.

use std::process::Command;

/// The bench runs the update-operator and update-agent binaries from its own folder. A
/// workspace test run has built them there already; rebuilding them here (with other
/// features) would rewrite them under the feet of the tests that run them.
fn binaries_beside_the_bench() {
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_bench"))
        .parent()
        .unwrap();
    if !["update-operator", "update-agent"]
        .iter()
        .all(|b| dir.join(b).exists())
    {
        let built = Command::new(env!("CARGO"))
            .args([
                "build", "--quiet", "-p", "operator", "-p", "agent", "--bins",
            ])
            .status()
            .expect("cargo build");
        assert!(
            built.success(),
            "building update-operator and update-agent failed"
        );
    }
}

#[test]
fn quick_bench_writes_every_metric() {
    binaries_beside_the_bench();
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("bench runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench --quick failed:\n{stderr}");

    let md = std::fs::read_to_string(out.path().join("RESULTS.md")).expect("RESULTS.md");
    for needle in [
        "cores",
        "memory",
        "Linux",
        "git ",
        "| metric | measured | target | met? |",
        "grant latency p99",
        "rollout ratio",
        "operator peak RSS",
        "operator CPU per node reboot",
        "API requests per node reboot, operator",
        "API requests per node reboot, agent",
        "API requests per minute idle, operator",
        "agent RSS idle",
    ] {
        assert!(md.contains(needle), "RESULTS.md lacks {needle:?}:\n{md}");
    }
    assert!(
        !md.contains("| not run |"),
        "a metric was not measured:\n{md}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let metrics = json["metrics"].as_array().unwrap();
    assert!(metrics.len() >= 12);
    for m in metrics {
        let v = m["measured"].as_f64();
        assert!(v.is_some_and(|v| v.is_finite() && v >= 0.0), "{m}");
    }
    // Every reboot happened and was counted.
    assert_eq!(json["scenarios"]["rollout"]["summary"]["rebooted"], 10);
    assert_eq!(json["scenarios"]["ratio"]["summary"]["rebooted"], 20);
    assert_eq!(
        json["scenarios"]["ratio_long_reboots"]["summary"]["rebooted"],
        20
    );
    assert!(json["scenarios"]["ratio"]["timeline"]["last_release"].as_f64() > Some(0.0));
    assert!(json["scenarios"]["ratio"]["agent_side"]["mark_done"].as_f64() > Some(0.0));
    assert_eq!(json["scenarios"]["operator_scale"]["nodes"], 50);
    assert!(
        json["scenarios"]["operator_scale"]["wall_seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(json["scenarios"]["grant_latency"]["samples"], 20);
    assert!(
        json["scenarios"]["agent_idle"]["usage"]["rss_mib"]
            .as_f64()
            .unwrap()
            > 1.0
    );
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
}

#[test]
fn a_missing_binary_names_the_flag_and_the_fix() {
    let empty = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--bin-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("--bin-dir") && stderr.contains("cargo build --release"),
        "{stderr}"
    );
}

/// `bench --only soak --quick`: a minute of versions on 20 nodes with failovers and restarts,
/// two real agents over D-Bus; every node updated once per version offered, SOAK.md written.
#[test]
fn quick_soak_updates_every_node_once_per_version() {
    binaries_beside_the_bench();
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--only", "soak", "--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("bench runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "bench --only soak --quick failed:\n{stderr}"
    );
    assert!(
        !out.path().join("RESULTS.md").exists(),
        "the soak alone must not overwrite RESULTS.md"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("soak.json")).unwrap())
            .unwrap();
    assert_eq!(r["lost"], serde_json::json!([]), "{r}");
    let (offers, reboots) = (
        r["offers"].as_u64().unwrap(),
        r["reboots"].as_u64().unwrap(),
    );
    assert_eq!(offers, reboots, "{r}");
    assert!(offers >= 40, "at least two versions on every node: {r}");
    assert!(r["failovers"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["agent_restarts"].as_u64().unwrap() >= 1, "{r}");
    let agents = r["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "both real agents sampled: {r}");
    let md = std::fs::read_to_string(out.path().join("SOAK.md")).unwrap();
    assert!(
        md.contains("Lost or doubled") && md.contains("none."),
        "{md}"
    );
}
