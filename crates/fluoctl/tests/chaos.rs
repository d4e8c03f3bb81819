//! The real `fluoctl chaos` binary: its per-scenario lines, the closing
//! `N scenarios, F faults, V violations` line and exit status, and bad flags.

use std::process::Output;
use std::time::Duration;

const FLUOCTL: &str = env!("CARGO_BIN_EXE_fluoctl");

async fn fluoctl(args: &[&str], patience: Duration) -> Output {
    let out = tokio::time::timeout(
        patience,
        tokio::process::Command::new(FLUOCTL)
            .args(args)
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("fluoctl chaos finished in time")
    .expect("spawn fluoctl");
    eprintln!(
        "$ fluoctl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn three_seeds_end_with_the_summary_line() {
    let out = fluoctl(
        &["chaos", "--seeds", "3", "--first-seed", "101"],
        Duration::from_secs(240),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    for seed in 101..=103 {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("seed {seed}: "))
                    && l.contains(" faults, ")
                    && l.contains(" violations, ")),
            "no line for seed {seed}:\n{stdout}"
        );
    }
    let last = lines.last().copied().unwrap_or_default();
    let words: Vec<&str> = last.split(' ').collect();
    assert!(
        matches!(
            words.as_slice(),
            ["3", "scenarios,", f, "faults,", "0", "violations"] if f.parse::<u32>().is_ok_and(|f| f > 0)
        ),
        "last line: {last:?}"
    );
    assert!(out.status.success(), "{:?}", out.status);
}

#[tokio::test]
async fn bad_flags_name_the_flag() {
    let out = fluoctl(&["chaos", "--seeds", "0"], Duration::from_secs(30)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seeds"));
    let out = fluoctl(
        &[
            "chaos",
            "--seeds",
            "2",
            "--first-seed",
            &u64::MAX.to_string(),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--first-seed") && err.contains("--seeds"),
        "{err}"
    );
}
