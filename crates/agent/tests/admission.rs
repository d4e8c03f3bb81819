//! The real agent under the shipped RBAC (deploy/core) and admission policy
//! (deploy/admission), both enforced by the sandbox, authenticated as its own service
//! account's projected token: a whole update, drain and reboot goes through, while the same
//! identity cannot touch another node.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use protocol::keys;
use protocol::update_engine::UPDATE_STATUS_UPDATED_NEED_REBOOT;
use sandbox::authz::Mode;
use sandbox::{NodeLifecycle, Options, Sandbox, UserInfo};
use serde_json::json;

const POLICY: &str = "flatcar-linux-update-agent-own-node";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_reboot_passes_the_policy_and_other_nodes_are_refused() {
    init_logging();
    let sb = Sandbox::start(Options {
        pod_start: Duration::from_millis(100),
        reboot_duration: Duration::from_millis(500),
        authorization: Mode::Rbac,
        ..Options::default()
    })
    .await
    .expect("sandbox");
    for n in ["node-1", "node-2"] {
        sb.add_node(n, &[]).expect("add node");
    }
    sb.load_shipped_rbac().expect("deploy/core RBAC");
    sb.load_shipped_admission().expect("deploy/admission");
    let client = sb.client();
    sb.add_workload("default", "web", 4, Some(1), 1).unwrap();
    wait_ready_pods(&client, "app=web", 4).await;

    let agent = UserInfo::agent("node-1");
    // The policy is in force for this identity: another node is refused.
    let as_agent = sb.client_for(&agent).expect("client");
    let patch = json!({"metadata": {"annotations": {keys::REBOOT_NEEDED: "true"}}});
    let err = Api::<Node>::all(as_agent)
        .patch("node-2", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("another node is refused");
    let kube::Error::Api(status) = err else {
        panic!("an API error, not {err:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        format!(
            "nodes \"node-2\" is forbidden: ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: the update-agent of node \"node-1\" may not modify node \"node-2\""
        )
    );

    let cfg = config("node-1", Duration::from_secs(30));
    let machine = Machine::start_as(&sb, "node-1", cfg, &agent);
    let host = machine.host().clone();
    wait_node(&client, "node-1", "status annotations and labels", |n| {
        annotation(n, keys::STATUS) == Some("UPDATE_STATUS_IDLE")
            && label(n, keys::REBOOT_NEEDED) == Some("false")
    })
    .await;
    host.offer_update("4081.3.0").await;
    wait_node(&client, "node-1", "reboot-needed", |n| {
        annotation(n, keys::REBOOT_NEEDED) == Some("true")
            && annotation(n, keys::STATUS) == Some(UPDATE_STATUS_UPDATED_NEED_REBOOT)
    })
    .await;
    let mut lifecycle = sb.lifecycle();
    grant(&client, "node-1").await;
    wait_node(&client, "node-1", "cordon and reboot-in-progress", |n| {
        unschedulable(n) && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("true")
    })
    .await;
    wait_lifecycle(
        &mut lifecycle,
        NodeLifecycle::RebootStarted("node-1".into()),
    )
    .await;
    wait_lifecycle(&mut lifecycle, NodeLifecycle::Up("node-1".into())).await;
    wait_node(&client, "node-1", "uncordoned and flags cleared", |n| {
        !unschedulable(n)
            && annotation(n, keys::REBOOT_IN_PROGRESS) == Some("false")
            && annotation(n, keys::REBOOT_NEEDED) == Some("false")
            && label(n, keys::LABEL_VERSION) == Some("4081.3.0")
    })
    .await;
    assert_eq!(host.reboots(), 1);
    machine.stop().await;
}
