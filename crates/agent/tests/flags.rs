//! The real `update-agent` binary rejects bad flag values at startup, naming the flag.

use std::time::Duration;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_update-agent");

/// Arguments, environment, and the flag the error must name.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

/// Runs the binary with a clean `UPDATE_AGENT_*` environment; returns (success, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("UPDATE_AGENT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("update-agent {args:?} {env:?} did not exit"))
        .expect("run update-agent");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.success(), text)
}

#[tokio::test]
async fn bad_flags_are_startup_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_str().unwrap().to_string();
    let missing_kubeconfig = format!("--kubeconfig={dir_path}/no-such-kubeconfig");
    let os_release_is_a_dir = format!("--os-release-path={dir_path}");
    let cases: Vec<Case> = vec![
        (vec![], vec![], "--node"),
        (vec!["--node="], vec![], "--node"),
        (
            vec!["--node=n1", "--grace-period=soon"],
            vec![],
            "--grace-period",
        ),
        (
            vec!["--node=n1", "--grace-period=-10s"],
            vec![],
            "--grace-period",
        ),
        (
            vec!["--node=n1", "-grace-period=0"],
            vec![],
            "--grace-period",
        ),
        (
            vec!["--node=n1", "--force-drain=maybe"],
            vec![],
            "--force-drain",
        ),
        (
            vec!["--node=n1", "--drain-timeout-action=later"],
            vec![],
            "--drain-timeout-action",
        ),
        (
            vec!["--node=n1", "--dbus-address=nonsense"],
            vec![],
            "--dbus-address",
        ),
        (
            vec!["--node=n1", "--log-format=xml"],
            vec![],
            "--log-format",
        ),
        (
            vec!["--node=n1", "--no-such-flag"],
            vec![],
            "--no-such-flag",
        ),
        (
            vec!["--node=n1", &missing_kubeconfig],
            vec![],
            "--kubeconfig",
        ),
        (
            vec!["--node=n1", &os_release_is_a_dir],
            vec![],
            "--os-release-path",
        ),
        // The same values from FLUO's environment variables.
        (vec![], vec![("UPDATE_AGENT_NODE", "")], "--node"),
        (
            vec![],
            vec![
                ("UPDATE_AGENT_NODE", "n1"),
                ("UPDATE_AGENT_GRACE_PERIOD", "ten"),
            ],
            "--grace-period",
        ),
        (
            vec![],
            vec![
                ("UPDATE_AGENT_NODE", "n1"),
                ("UPDATE_AGENT_FORCE_DRAIN", "yes"),
            ],
            "--force-drain",
        ),
    ];
    for (args, env, flag) in cases {
        let (ok, text) = run(&args, &env).await;
        assert!(!ok, "update-agent {args:?} {env:?} succeeded:\n{text}");
        assert!(
            text.contains(flag),
            "update-agent {args:?} {env:?}: the error does not name {flag}:\n{text}"
        );
        // A bad value from a variable names the variable too.
        if let Some((var, _)) = env
            .iter()
            .find(|(k, v)| *k != "UPDATE_AGENT_NODE" && !v.is_empty())
        {
            assert!(
                text.contains(var),
                "{env:?}: the error does not name {var}:\n{text}"
            );
        }
    }
    // An empty variable is ignored, as FLUO's SetFlagsFromEnv does: the default applies.
    let (ok, text) = run(
        &["--node=n1", &missing_kubeconfig],
        &[
            ("UPDATE_AGENT_GRACE_PERIOD", ""),
            ("UPDATE_AGENT_FORCE_DRAIN", ""),
        ],
    )
    .await;
    assert!(
        !ok && text.contains("--kubeconfig") && !text.contains("--grace-period"),
        "{text}"
    );
}

#[tokio::test]
async fn help_and_version() {
    let (ok, text) = run(&["--help"], &[]).await;
    assert!(ok, "{text}");
    for flag in [
        "--node",
        "--grace-period",
        "--force-drain",
        "--dbus-address",
        "--drain-timeout-action",
        "--os-release-path",
        "--update-conf-paths",
        "--kubeconfig",
        "--log-format",
        "UPDATE_AGENT_NODE",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let (ok, text) = run(&["-version"], &[]).await;
    assert!(ok && text.contains("update-agent"), "{text}");
}
