//! The real binaries as child processes, and what /proc says about them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

/// Finds `name` in `dir`, with the command that builds it in the error.
pub fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    anyhow::ensure!(
        p.is_file(),
        "--bin-dir: {} not found; build it first (cargo build --release -p operator -p agent), \
         or point --bin-dir at the folder that has update-operator and update-agent",
        p.display()
    );
    Ok(p)
}

/// A child process, killed when dropped; its stderr goes to a log file.
pub struct ChildProc {
    child: std::process::Child,
    pub log: PathBuf,
}

/// Memory and CPU of a process, from /proc.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Usage {
    /// VmRSS, MiB.
    pub rss_mib: f64,
    /// VmHWM (peak RSS), MiB.
    pub peak_rss_mib: f64,
    /// RssAnon (heap, stacks), MiB: the part of VmRSS the program allocated.
    pub anon_rss_mib: f64,
    /// RssFile, MiB: pages of the executable and libraries (shared, reclaimable).
    pub file_rss_mib: f64,
    /// utime + stime, seconds (all threads).
    pub cpu_seconds: f64,
}

impl ChildProc {
    pub fn spawn(bin: &Path, args: &[String], log: PathBuf) -> anyhow::Result<ChildProc> {
        ChildProc::spawn_with_env(bin, args, &[], log)
    }

    /// [`ChildProc::spawn`] with these environment variables added.
    pub fn spawn_with_env(
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> anyhow::Result<ChildProc> {
        // For a diagnosis (docs/bench.md): the children's log level, and a folder that keeps
        // their logs after the run.
        let level = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into());
        let log = match std::env::var_os("BENCH_LOG_DIR") {
            Some(dir) => Path::new(&dir).join(log.file_name().unwrap_or_default()),
            None => log,
        };
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(ChildProc { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the tail of its log if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            anyhow::bail!(
                "the child process exited ({status}); last lines of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    pub fn usage(&mut self) -> anyhow::Result<Usage> {
        self.check_running()?;
        usage(self.pid())
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second of /proc/PID/stat's times (USER_HZ, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Usage {
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
        anon_rss_mib: kib("RssAnon:") / 1024.0,
        file_rss_mib: kib("RssFile:") / 1024.0,
        cpu_seconds: (tick(11) + tick(12)) / USER_HZ,
    })
}
