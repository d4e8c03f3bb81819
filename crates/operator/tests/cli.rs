//! The real `update-operator` binary: flag validation (every bad value is a
//! startup error naming the flag), environment variables, and a run against
//! the sandbox that leads, acts and releases the Lease on SIGTERM.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_update-operator");

/// The binary with a clean environment plus `env`.
fn cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_clear().stdin(Stdio::null());
    if let Ok(path) = std::env::var("PATH") {
        c.env("PATH", path);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = cmd(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn update-operator");
    // A startup error is immediate; never hang a test on a binary that runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("update-operator {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const NS: (&str, &str) = ("POD_NAMESPACE", "reboot-coordinator");

/// Asserts a startup failure whose message names `flag`.
fn fails_naming(args: &[&str], env: &[(&str, &str)], flag: &str) -> String {
    let out = run(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
    assert!(
        stderr.contains(flag),
        "{args:?} {env:?}: expected {flag} in: {stderr}"
    );
    stderr
}

#[test]
fn bad_flag_values_are_startup_errors_naming_the_flag() {
    let w = "--reboot-window-start";
    let l = "--reboot-window-length";
    fails_naming(&[w, "Mon 25:00", l, "1h"], &[NS], w);
    fails_naming(&[w, "Someday 10:00", l, "1h"], &[NS], w);
    fails_naming(&[w, "10am", l, "1h"], &[NS], w);
    fails_naming(&[w, "11:00"], &[NS], l);
    fails_naming(&[l, "1h"], &[NS], w);
    fails_naming(&[w, "11:00", l, "24h"], &[NS], l);
    fails_naming(&[w, "Mon 11:00", l, "168h"], &[NS], l);
    fails_naming(&[w, "11:00", l, "an hour"], &[NS], l);
    fails_naming(&[w, "11:00", l, "-1h"], &[NS], l);
    let m = "--max-rebooting-nodes";
    for bad in ["0", "abc", "101%", "-1", "1.5", "0%", ""] {
        fails_naming(&[m, bad], &[NS], m);
    }
    let b = "--before-reboot-annotations";
    fails_naming(&[b, "ok,bad key"], &[NS], b);
    fails_naming(&[b, "Example.com/x"], &[NS], b);
    let a = "--after-reboot-annotations";
    fails_naming(&[a, "x", a, "-bad"], &[NS], a);
    let s = fails_naming(
        &[a, "flatcar-linux-update.v1.flatcar-linux.net/reboot-ok"],
        &[NS],
        a,
    );
    assert!(s.contains("protocol"), "{s}");
    fails_naming(&["--log-format", "xml"], &[NS], "--log-format");
    let s = fails_naming(
        &["--stuck-node-action", "drop"],
        &[NS],
        "--stuck-node-action",
    );
    assert!(s.contains("hold") && s.contains("release"), "{s}");
    let hook = "--notify-url=http://127.0.0.1:9/hook";
    fails_naming(
        &[hook, "--notify-format", "discord"],
        &[NS],
        "--notify-format",
    );
    let s = fails_naming(
        &[
            hook,
            "--notify-format=slack",
            "--notify-message-template={{host}}",
        ],
        &[NS],
        "--notify-message-template",
    );
    assert!(s.contains("{{host}}"), "{s}");
    fails_naming(&["--notify-format=teams"], &[NS], "--notify-format");
    fails_naming(&["--lease-name", "Bad_Name"], &[NS], "--lease-name");
    fails_naming(
        &["--kubeconfig", "/nonexistent/kubeconfig"],
        &[NS],
        "--kubeconfig",
    );
    fails_naming(&[], &[], "POD_NAMESPACE");
    fails_naming(&[], &[("POD_NAMESPACE", "")], "POD_NAMESPACE");
    fails_naming(&[], &[("POD_NAMESPACE", "Not A Namespace")], "--namespace");
    fails_naming(&["--no-such-flag"], &[NS], "--no-such-flag");
    fails_naming(&[m], &[NS], m);
    // Go-style single-dash spellings (FLUO's flag package) are understood.
    fails_naming(
        &["-reboot-window-start=bogus", "-reboot-window-length", "1h"],
        &[NS],
        w,
    );
}

#[test]
fn env_vars_as_fluo_and_the_error_says_where_the_value_came_from() {
    let s = fails_naming(
        &[],
        &[
            NS,
            ("UPDATE_OPERATOR_REBOOT_WINDOW_START", "Someday 10:00"),
            ("UPDATE_OPERATOR_REBOOT_WINDOW_LENGTH", "1h"),
        ],
        "--reboot-window-start",
    );
    assert!(s.contains("UPDATE_OPERATOR_REBOOT_WINDOW_START"), "{s}");
    let s = fails_naming(
        &[],
        &[NS, ("UPDATE_OPERATOR_MAX_REBOOTING_NODES", "none")],
        "--max-rebooting-nodes",
    );
    assert!(s.contains("UPDATE_OPERATOR_MAX_REBOOTING_NODES"), "{s}");
    fails_naming(
        &[],
        &[NS, ("UPDATE_OPERATOR_BEFORE_REBOOT_ANNOTATIONS", "a,b c")],
        "--before-reboot-annotations",
    );
    fails_naming(
        &[],
        &[NS, ("UPDATE_OPERATOR_KUBECONFIG", "/nonexistent")],
        "--kubeconfig",
    );
    fails_naming(&[], &[NS, ("KUBECONFIG", "/nonexistent")], "--kubeconfig");
    let s = fails_naming(
        &[],
        &[NS, ("UPDATE_OPERATOR_STUCK_NODE_ACTION", "Release!")],
        "--stuck-node-action",
    );
    assert!(s.contains("UPDATE_OPERATOR_STUCK_NODE_ACTION"), "{s}");
    // The command line wins over the environment (FLUO's SetFlagsFromEnv).
    fails_naming(
        &["--max-rebooting-nodes", "zero"],
        &[NS, ("UPDATE_OPERATOR_MAX_REBOOTING_NODES", "2")],
        "--max-rebooting-nodes",
    );
}

#[test]
fn settings_from_flags_and_env() {
    let s = operator::cli::parse([
        "update-operator",
        "--namespace",
        "ns",
        "--reboot-window-start",
        "mon 14:00",
        "--reboot-window-length",
        "1h30m",
        "--before-reboot-annotations",
        "a.io/one, two",
        "--before-reboot-annotations=three,a.io/one",
        "--max-rebooting-nodes",
        "25%",
        "--log-format",
        "json",
    ])
    .map_err(|e| format!("{e:?}"))
    .unwrap();
    let c = &s.config;
    assert_eq!(c.namespace, "ns");
    assert_eq!(c.lease_name, operator::DEFAULT_LEASE_NAME);
    assert_eq!(
        c.operator.before_reboot_annotations,
        ["a.io/one", "two", "three"]
    );
    assert!(c.operator.after_reboot_annotations.is_empty());
    assert_eq!(
        c.operator.max_rebooting,
        protocol::operator::MaxRebooting::Percent(25)
    );
    assert_eq!(c.operator.window.unwrap().to_string(), "Mon 14:00 +1h30m0s");
    assert_eq!(s.log_format, operator::cli::LogFormat::Json);
    assert!(!c.identity.is_empty());
}

#[test]
fn help_and_version() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for f in [
        "--kubeconfig",
        "--reboot-window-start",
        "--reboot-window-length",
        "--before-reboot-annotations",
        "--after-reboot-annotations",
        "--max-rebooting-nodes",
        "--lease-name",
        "--log-format",
        "UPDATE_OPERATOR_REBOOT_WINDOW_START",
        "POD_NAMESPACE",
    ] {
        assert!(help.contains(f), "{f} missing from --help:\n{help}");
    }
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("update-operator"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_leads_acts_and_releases_on_sigterm() {
    let sb = sandbox().await;
    sb.add_node("n1", &[]).unwrap();
    let admin = sb.client_as("admin").unwrap();
    let kubeconfig = sb.kubeconfig_path();
    let mut command = tokio::process::Command::from(cmd(
        &[
            "--max-rebooting-nodes",
            "1",
            "--log-format",
            "json",
            "--metrics-address=off",
        ],
        &[
            ("POD_NAMESPACE", NAMESPACE),
            ("UPDATE_OPERATOR_KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("HOSTNAME", "operator-pod-1"),
        ],
    ));
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let holder = wait_for("the binary to lead", PATIENCE, || async {
        lease_holder(&admin).await
    })
    .await;
    assert!(holder.starts_with("operator-pod-1_"), "{holder}");
    mark_reboot_needed(&admin, "n1").await;
    wait_granted(&admin, "n1").await;
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("update-operator exits on SIGTERM")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(lease_holder(&admin).await, None, "released: {stderr}");
    // JSON log lines.
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "not JSON: {first}"
    );
}
