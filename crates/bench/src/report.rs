//! bench/RESULTS.md and bench/results.json: the machine, then one row per metric with its
//! target, then how each figure was measured.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// Where the figures were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub date: String,
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub git_commit: String,
    pub build: &'static str,
    /// /proc/loadavg's 1, 5 and 15 minute figures when the bench started and when it ended:
    /// the machine may be shared.
    pub load_average: [String; 2],
}

/// /proc/loadavg's first three fields.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_string(),
        |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

fn first_field(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Machine {
    pub fn detect(repo: &Path, load_at_start: String) -> Machine {
        let memory_kib: f64 = first_field("/proc/meminfo", "MemTotal")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let git_commit = match git(repo, &["rev-parse", "--short=12", "HEAD"]) {
            Some(c) => match git(repo, &["status", "--porcelain", "--untracked-files=no"]) {
                Some(s) if !s.is_empty() => format!("{c} (with uncommitted changes)"),
                _ => c,
            },
            None => "unknown (not a git checkout)".to_string(),
        };
        Machine {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: first_field("/proc/cpuinfo", "model name")
                .unwrap_or_else(|| "unknown".to_string()),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string()),
            git_commit,
            load_average: [load_at_start, load_average()],
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

/// One row of the table. Every target is an upper bound.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    /// None: the scenario was not run.
    pub measured: Option<f64>,
    pub unit: &'static str,
    pub target_max: Option<f64>,
    pub met: Option<bool>,
}

impl Metric {
    pub fn new(name: impl Into<String>, measured: Option<f64>, unit: &'static str) -> Metric {
        Metric {
            name: name.into(),
            measured,
            unit,
            target_max: None,
            met: None,
        }
    }

    pub fn target(mut self, max: f64) -> Metric {
        self.target_max = Some(max);
        self.met = self.measured.map(|v| v <= max);
        self
    }
}

fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn with_unit(v: f64, unit: &str) -> String {
    if unit.is_empty() {
        num(v)
    } else {
        format!("{} {unit}", num(v))
    }
}

/// [`with_unit`], but a value that rounds onto its target without being it is shown with
/// three decimals more, so a missed target never reads as met (1.021 is not "1.02").
fn shown_against(v: f64, unit: &str, target: Option<f64>) -> String {
    match target {
        Some(t) if v != t && num(v) == num(t) => {
            let precise = format!("{v:.5}");
            let precise = precise.trim_end_matches('0');
            if unit.is_empty() {
                precise.to_string()
            } else {
                format!("{precise} {unit}")
            }
        }
        _ => with_unit(v, unit),
    }
}

/// Everything written.
#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub command: String,
    pub metrics: Vec<Metric>,
    /// How each scenario was run, and its raw figures.
    pub scenarios: BTreeMap<&'static str, serde_json::Value>,
    /// Per scenario: how it was measured, for people (markdown lines).
    #[serde(skip)]
    pub notes: Vec<(String, Vec<String>)>,
}

impl Results {
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = format!(
            "# Benchmarks\n\n{date}, git {commit}, {build} build: `{cmd}`\n\n\
             Machine: {cores} cores ({cpu}), {mem} GiB memory, Linux {kernel}; load average \
             {l0} at the start, {l1} at the end.\n\n\
             | metric | measured | target | met? |\n|---|---|---|---|\n",
            date = m.date,
            commit = m.git_commit,
            build = m.build,
            cmd = self.command,
            cores = m.cores,
            cpu = m.cpu_model,
            mem = m.memory_gib,
            kernel = m.kernel,
            l0 = m.load_average[0],
            l1 = m.load_average[1],
        );
        for r in &self.metrics {
            let measured = r.measured.map_or_else(
                || "not run".to_string(),
                |v| shown_against(v, r.unit, r.target_max),
            );
            let target = r
                .target_max
                .map_or_else(|| "".to_string(), |t| format!("≤ {}", with_unit(t, r.unit)));
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            s.push_str(&format!("| {} | {measured} | {target} | {met} |\n", r.name));
        }
        for (title, lines) in &self.notes {
            s.push_str(&format!("\n## {title}\n\n"));
            for l in lines {
                s.push_str(&format!("- {l}\n"));
            }
        }
        s.push_str("\nRaw numbers: `results.json` next to this file.\n");
        s
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--out: cannot create {}: {e}", dir.display()))?;
        std::fs::write(dir.join("RESULTS.md"), self.markdown())?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_target_never_reads_as_met() {
        assert_eq!(shown_against(1.021, "", Some(1.02)), "1.021");
        assert_eq!(shown_against(64.04, "MiB", Some(64.0)), "64.04 MiB");
        assert_eq!(shown_against(1.032, "", Some(1.02)), "1.03");
        assert_eq!(shown_against(1.02, "", Some(1.02)), "1.02");
        assert_eq!(shown_against(0.0412, "s", Some(0.05)), "0.041 s");
    }
}
