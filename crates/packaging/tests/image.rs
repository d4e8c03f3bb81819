//! The OCI image, built by scripts/image-oci from this build's binaries, and run in runc:
//! the update-operator and an update-agent per node, each configured exactly as
//! `kubectl kustomize deploy/` configures its container, roll an update out over the
//! sandbox. The agents talk real D-Bus to update_engine and logind on their node's bus.

use sandbox::testing::{annotation, label};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use packaging::cluster::{Cluster, Runtime, rolled_out, yaml_docs};
use packaging::{binary, repo_root, run, tool};
use protocol::keys;
use serde_json::Value;

const VERSION: &str = "4152.0.0";
const BINARIES: [&str; 3] = ["update-operator", "update-agent", "fluoctl"];

/// Builds the image from the binaries of this build into `out`; returns the layout path.
fn build_image(out: &Path) -> std::path::PathBuf {
    for t in [
        ("umoci", "umoci"),
        ("jq", "jq"),
        ("file", "file"),
        ("strip", "binutils"),
    ] {
        tool(t.0, t.1);
    }
    let bin_dir = binary("update-operator").parent().unwrap().to_path_buf();
    let (ok, stdout, stderr) = run(Command::new(repo_root().join("scripts/image-oci"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg(out));
    assert!(ok, "scripts/image-oci failed:\n{stdout}\n{stderr}");
    out.join("layout")
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs").join(digest.replacen(':', "/", 1))).expect("blob")
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).expect("JSON blob")
}

fn unpack(layout: &Path, bundle: &Path) {
    let (ok, out, err) = run(Command::new(tool("umoci", "umoci"))
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(bundle));
    assert!(ok, "umoci unpack failed:\n{out}\n{err}");
}

fn kustomize() -> Vec<Value> {
    let (ok, out, err) = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join("deploy")));
    assert!(ok, "kubectl kustomize deploy/: {err}");
    yaml_docs(&out)
}

#[test]
fn the_image_is_one_layer_of_static_binaries_run_as_nonroot() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_image(&dir.path().join("oci"));
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let manifest = json_blob(&layout, manifests[0]["digest"].as_str().unwrap());
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer on an empty base: {manifest}");
    let config = json_blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/update-operator"])
    );

    // What is in the layer: the three binaries, static, and the few files they need.
    let bundle = dir.path().join("bundle");
    unpack(&layout, &bundle);
    let root = bundle.join("rootfs");
    for b in BINARIES {
        let path = root.join("usr/local/bin").join(b);
        let (ok, out, _) = run(Command::new("file").arg("-b").arg(&path));
        assert!(ok);
        assert!(
            out.contains("static-pie linked") || out.contains("statically linked"),
            "{b}: {out}"
        );
        assert!(
            out.contains("stripped") && !out.contains("not stripped"),
            "{b}: {out}"
        );
    }
    for f in [
        "etc/passwd",
        "etc/group",
        "etc/ssl/certs/ca-certificates.crt",
        "tmp",
    ] {
        assert!(root.join(f).exists(), "{f} missing from the image");
    }
    let mut top: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["etc", "home", "tmp", "usr"],
        "nothing else in the image"
    );
    let sizes = std::fs::read_to_string(dir.path().join("oci/sizes.txt")).unwrap();
    assert!(sizes.contains("layer blob (gzip)"), "{sizes}");
}

async fn node(api: &Api<Node>, name: &str) -> Node {
    api.get(name).await.expect("get node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_agents_from_the_image_roll_an_update_out_in_runc() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_image(&dir.path().join("oci"));
    let bundle = dir.path().join("bundle");
    unpack(&layout, &bundle);
    let nodes = ["node-1", "node-2"];
    let mut cluster = Cluster::start(Runtime::Runc { bundle }, &kustomize(), &nodes).await;
    let api: Api<Node> = Api::all(cluster.sandbox.client());

    // The agents from the image label their nodes from the mounted os-release and
    // update.conf, through D-Bus reach update_engine, and report its status.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = true;
        for n in nodes {
            let n = node(&api, n).await;
            ready &= label(&n, keys::LABEL_ID) == Some("flatcar")
                && label(&n, keys::LABEL_GROUP) == Some("stable")
                && annotation(&n, keys::STATUS) == Some("UPDATE_STATUS_IDLE");
        }
        if ready {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents never reported:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for n in nodes {
        cluster.sandbox.host(n).unwrap().offer_update(VERSION).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = true;
        for n in nodes {
            done &= rolled_out(&node(&api, n).await, VERSION);
        }
        if done {
            break;
        }
        assert!(
            cluster.all_running(),
            "a container exited:\n{}",
            cluster.logs()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout did not finish:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in nodes {
        // One reboot through logind each, and an agent started again after it.
        assert_eq!(cluster.reboot_calls(n), 1, "{n}:\n{}", cluster.logs());
        assert_eq!(cluster.sandbox.host(n).unwrap().reboots(), 1, "{n}");
        assert_eq!(cluster.agent_starts(n), 2, "{n}");
    }
}
