#![allow(dead_code)]
//! Shared by the sandbox's tests.

use std::time::Duration;

use sandbox::{Options, Sandbox};
use serde_json::Value;

pub async fn sandbox_with(nodes: usize, opts: Options) -> Sandbox {
    let sb = Sandbox::start(opts).await.expect("sandbox starts");
    for i in 1..=nodes {
        sb.add_node(&format!("node-{i}"), &[]).expect("node");
    }
    sb
}

pub async fn sandbox(nodes: usize) -> Sandbox {
    sandbox_with(
        nodes,
        Options {
            pod_start: Duration::from_millis(50),
            reboot_duration: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await
}

/// Polls `f` until it is true or `secs` pass.
pub async fn eventually<F: FnMut() -> bool>(secs: u64, mut f: F) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}

/// One raw HTTP/1.1 request; returns (status code, body).
pub async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    raw_with(addr, method, path, &[("Content-Type", content_type)], body).await
}

/// [`raw`] with the given headers.
pub async fn raw_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sandbox\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The real kubectl against a sandbox, with its own discovery cache.
pub struct Kubectl {
    pub server: String,
    pub cache: tempfile::TempDir,
    /// When set, kubectl reads server and credentials from it instead of `--server`.
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl Kubectl {
    /// kubectl with `--server` and no credentials: an anonymous client.
    pub fn new(sb: &sandbox::Sandbox) -> Kubectl {
        Kubectl {
            server: sb.url(),
            cache: tempfile::tempdir().unwrap(),
            kubeconfig: None,
        }
    }

    /// kubectl with a kubeconfig, e.g. one of `Sandbox::write_kubeconfig_dir`'s.
    pub fn with_kubeconfig(path: &std::path::Path) -> Kubectl {
        Kubectl {
            server: String::new(),
            cache: tempfile::tempdir().unwrap(),
            kubeconfig: Some(path.to_path_buf()),
        }
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(60), {
            let mut c = tokio::process::Command::new("kubectl");
            match &self.kubeconfig {
                Some(k) => c.env("KUBECONFIG", k),
                None => c
                    .arg("--server")
                    .arg(&self.server)
                    .env("KUBECONFIG", "/dev/null"),
            };
            c.arg("--cache-dir")
                .arg(self.cache.path())
                .args(args)
                .output()
        })
        .await
        .expect("kubectl finished in time")
        .expect("kubectl runs (Debian package kubectl, v1.33)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    pub async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed: {err}\n{out}");
        out
    }

    pub async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).expect("kubectl printed JSON")
    }
}
