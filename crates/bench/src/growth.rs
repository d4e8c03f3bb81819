//! `bench --only growth`: the operator scenario at several cluster sizes (by default 1,000,
//! 5,000 and 15,000 nodes, Kubernetes' tested upper range), so memory and CPU per reboot
//! read as a curve. Writes bench/GROWTH.md, growth.json and growth.svg; never RESULTS.md.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::scenarios::{self, Env};

pub struct GrowthConfig {
    pub nodes: Vec<u32>,
    pub pods_per_node: u32,
    pub max_rebooting: u32,
}

/// One cluster size.
#[derive(Debug, Serialize)]
pub struct GrowthPoint {
    pub nodes: u32,
    pub pods: u32,
    pub peak_rss_mib: f64,
    pub rss_before_mib: f64,
    pub anon_before_mib: f64,
    pub anon_after_mib: f64,
    pub cpu_ms_per_reboot: f64,
    pub wall_seconds: f64,
    pub slot_latency_p99_ms: f64,
    pub requests_per_reboot: f64,
    pub scale: scenarios::OperatorScale,
}

pub async fn growth(
    env: &Env,
    cfg: &GrowthConfig,
    step: impl Fn(&str),
) -> anyhow::Result<Vec<GrowthPoint>> {
    let mut out = Vec::new();
    for &nodes in &cfg.nodes {
        let pods = nodes * cfg.pods_per_node;
        step(&format!(
            "growth: {nodes} nodes, {pods} pods, {} at a time",
            cfg.max_rebooting
        ));
        let o = scenarios::operator_scale(
            env,
            nodes,
            pods,
            cfg.max_rebooting,
            Duration::from_secs(1),
            Duration::from_secs(5),
            false,
        )
        .await?;
        out.push(GrowthPoint {
            nodes,
            pods,
            peak_rss_mib: o.end.peak_rss_mib,
            rss_before_mib: o.idle.rss_mib,
            anon_before_mib: o.idle.anon_rss_mib,
            anon_after_mib: o.end.anon_rss_mib,
            cpu_ms_per_reboot: o.cpu_seconds_per_node_reboot * 1000.0,
            wall_seconds: o.wall_seconds,
            slot_latency_p99_ms: o.slot_latency.p99_ms,
            requests_per_reboot: o.requests.total as f64 / f64::from(nodes.max(1)),
            scale: o,
        });
    }
    Ok(out)
}

/// The growth between consecutive sizes, per 1,000 nodes.
fn slopes(points: &[GrowthPoint], f: impl Fn(&GrowthPoint) -> f64) -> Vec<String> {
    points
        .windows(2)
        .map(|w| {
            let per_k = (f(&w[1]) - f(&w[0])) / (f64::from(w[1].nodes - w[0].nodes) / 1000.0);
            format!("{}→{}: {per_k:+.2}", w[0].nodes, w[1].nodes)
        })
        .collect()
}

pub fn markdown(points: &[GrowthPoint], machine: &str, cfg: &GrowthConfig) -> String {
    let mut md = String::from("# Operator growth with the cluster's size\n\n");
    let _ = writeln!(md, "{machine}\n");
    let _ = writeln!(
        md,
        "The operator scenario of RESULTS.md at each size: the `update-operator` binary as a \
         child process with `--max-rebooting-nodes {}`, against a sandbox in the bench process \
         with {} Running pods per node and simulated agents (the real agent's decisions), \
         reboots of 1 s; a whole rollout, every node once. Memory (VmHWM, VmRSS, RssAnon) and \
         CPU (utime + stime) from /proc of the operator alone. Command: `bench --only growth`.\n",
        cfg.max_rebooting, cfg.pods_per_node
    );
    md.push_str(
        "| nodes | pods | peak RSS MiB | RSS before the rollout MiB (anonymous) | anonymous after \
         MiB | CPU per node reboot ms | rollout s | freed slot -> next grant p99 ms | \
         requests per reboot |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} ({:.1}) | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} |",
            p.nodes,
            p.pods,
            p.peak_rss_mib,
            p.rss_before_mib,
            p.anon_before_mib,
            p.anon_after_mib,
            p.cpu_ms_per_reboot,
            p.wall_seconds,
            p.slot_latency_p99_ms,
            p.requests_per_reboot
        );
    }
    let _ = writeln!(
        md,
        "\n![peak RSS and CPU per reboot against nodes](growth.svg)\n\nGrowth per 1,000 more \
         nodes: peak RSS (MiB) {}; anonymous memory before the rollout (MiB) {}; CPU per node \
         reboot (ms) {}.\n",
        slopes(points, |p| p.peak_rss_mib).join(", "),
        slopes(points, |p| p.anon_before_mib).join(", "),
        slopes(points, |p| p.cpu_ms_per_reboot).join(", ")
    );
    md.push_str("Raw numbers: `growth.json` next to this file.\n");
    md
}

/// What a chart plots of each size.
type Measure = fn(&GrowthPoint) -> f64;

/// Two small line charts side by side: peak RSS and CPU per reboot against nodes.
pub fn svg(points: &[GrowthPoint]) -> String {
    let (w, h, pad) = (320.0, 220.0, 44.0);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}" font-family="sans-serif" font-size="11">"#,
        2.0 * w
    );
    let max_nodes = points.iter().map(|p| p.nodes).max().unwrap_or(1) as f64;
    let charts: [(&str, Measure); 2] = [
        ("operator peak RSS, MiB", |p| p.peak_rss_mib),
        ("operator CPU per node reboot, ms", |p| p.cpu_ms_per_reboot),
    ];
    for (i, (title, f)) in charts.iter().enumerate() {
        let x0 = i as f64 * w;
        let top = points.iter().map(f).fold(0.0, f64::max).max(1e-9) * 1.15;
        let x = |n: f64| x0 + pad + n / max_nodes * (w - 1.5 * pad);
        let y = |v: f64| h - pad - v / top * (h - 1.8 * pad);
        let _ = write!(
            s,
            r#"<text x="{}" y="16" text-anchor="middle">{title}</text><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            x0 + w / 2.0,
            x(0.0),
            y(0.0),
            x(max_nodes),
            y(0.0),
            x(0.0),
            y(0.0),
            x(0.0),
            y(top)
        );
        let line: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(f64::from(p.nodes)), y(f(p))))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="steelblue" stroke-width="2"/>"#,
            line.join(" ")
        );
        for p in points {
            let (px, py) = (x(f64::from(p.nodes)), y(f(p)));
            let _ = write!(
                s,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="steelblue"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{:.1}</text><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                py - 7.0,
                f(p),
                h - pad + 14.0,
                p.nodes
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">nodes</text>"#,
            x0 + w / 2.0,
            h - 8.0
        );
    }
    s.push_str("</svg>\n");
    s
}
