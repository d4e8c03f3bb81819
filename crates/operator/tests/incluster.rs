//! The `update-operator` binary with only what a pod gets (no kubeconfig): the service-account
//! folder at /var/run/secrets/kubernetes.io/serviceaccount and KUBERNETES_SERVICE_HOST/PORT,
//! over HTTPS with the sandbox's CA, as its service account under deploy/'s RBAC.
//!
//! kube-rs reads that fixed path, so the binary runs in a private mount namespace
//! (`unshare`, Debian package util-linux; needs root as in CI) with a tmpfs on /run and the
//! folder bind-mounted there.

mod common;

use std::process::Stdio;

use common::*;
use fleet::{Fleet, agent_config};
use sandbox::UserInfo;

const BIN: &str = env!("CARGO_BIN_EXE_update-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_with_the_in_cluster_configuration_over_https() {
    let (sb, admin) = sandbox_with_nodes(&["n1", "n2"]).await;
    let fleet = Fleet::start(&sb, &["n1", "n2"], agent_config);
    let dir = tempfile::tempdir().unwrap();
    let sa = dir.path().join("serviceaccount");
    let env = sb.service_account_dir(&UserInfo::operator(), &sa).unwrap();
    let script = "mount -t tmpfs tmpfs /run \
        && mkdir -p /run/secrets/kubernetes.io/serviceaccount \
        && mount --bind \"$0\" /run/secrets/kubernetes.io/serviceaccount \
        && exec \"$@\"";
    let mut command = tokio::process::Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(&sa)
        .args([BIN, "--metrics-address=off", "--log-format", "json"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("POD_NAMESPACE", sandbox::identity::NAMESPACE)
        .env("HOSTNAME", "update-operator-pod")
        // No ~/.kube/config to fall back on: only the in-cluster configuration remains.
        .env("HOME", dir.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .expect("unshare runs (Debian package util-linux)");

    // It leads: its Lease in reboot-coordinator, allowed by deploy/'s Role only for its SA.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(admin.clone(), sandbox::identity::NAMESPACE);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let holder = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut err).await;
            }
            panic!("update-operator exited with {status}: {err}");
        }
        let holder = leases
            .get_opt(operator::DEFAULT_LEASE_NAME)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity);
        if let Some(h) = holder {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the binary did not lead within {PATIENCE:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(holder.starts_with("update-operator-pod"), "{holder}");

    // And acts: n1's update asks for a reboot, which it grants; n1's agent reboots.
    sb.host("n1").unwrap().offer_update("4152.2.0").await;
    wait_for(
        "n1 rebooted",
        std::time::Duration::from_secs(60),
        || async { (sb.host("n1").unwrap().reboots() == 1).then_some(()) },
    )
    .await;
    let operator = UserInfo::operator().username;
    assert!(
        sb.audit()
            .entries()
            .iter()
            .any(|e| e.user == operator && e.verb == "patch" && e.resource == "nodes"),
        "the binary patched nodes as its service account: {:?}",
        sb.audit().entries()
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
    fleet.stop().await;
}
