//! The `--timeline` chart: one row per node with its grant, drain, reboot and
//! return as bars over time, and below it the number of nodes unavailable at
//! once against the limit. Plain SVG 1.1, no scripts.

use std::fmt::Write;

use fleet::Report;

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 70.0;
const ROW: f64 = 16.0;
const BAR: f64 = 10.0;
const PANEL: f64 = 120.0;

const GRANTED: &str = "#b0b7c3";
const DRAIN: &str = "#f0a030";
const REBOOT: &str = "#d9483b";
const RETURN: &str = "#5aa469";

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A tick step giving at most about 12 ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 14] = [
        0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
    ];
    STEPS
        .into_iter()
        .find(|s| span / s <= 12.0)
        .unwrap_or_else(|| (span / 12.0 / 3600.0).ceil() * 3600.0)
}

fn fmt_t(t: f64) -> String {
    if t.fract().abs() < 1e-9 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

/// The chart for `report`.
pub fn render(report: &Report) -> String {
    let s = &report.summary;
    let times = report
        .nodes
        .iter()
        .flat_map(|n| n.cycles.iter())
        .flat_map(|c| {
            [
                c.needed,
                c.granted,
                c.drain_start,
                c.reboot_start,
                c.back,
                c.released,
            ]
        })
        .flatten()
        .chain(report.concurrency.iter().map(|c| c.0));
    let end = times.fold(s.wall_seconds, f64::max).max(1.0);
    let step = tick_step(end);
    let t_max = (end / step).ceil() * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + t.clamp(0.0, t_max) / t_max * plot_w;
    let rows_h = report.nodes.len() as f64 * ROW;
    let axis_y = TOP + rows_h + 4.0;
    let panel_top = axis_y + 40.0;
    let panel_bottom = panel_top + PANEL;
    let height = panel_bottom + 50.0;

    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let ratio = s
        .ratio
        .map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
    let _ = writeln!(
        o,
        r#"<title>Rollout of {} nodes, at most {} at a time</title>"#,
        s.nodes, s.max_rebooting
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">Rollout of {} nodes, at most {} at a time: {:.1} s, physical limit {:.1} s, ratio {ratio}, most unavailable {}, violations {}</text>"#,
        s.nodes,
        s.max_rebooting,
        s.wall_seconds,
        s.physical_limit_seconds,
        s.max_unavailable,
        s.violations.len()
    );
    // Legend.
    let mut lx = LEFT;
    for (color, label) in [
        (GRANTED, "granted, agent starting"),
        (DRAIN, "cordoned, draining"),
        (REBOOT, "rebooting"),
        (RETURN, "back, until released"),
    ] {
        let _ = writeln!(
            o,
            r#"<rect x="{lx}" y="34" width="14" height="{BAR}" fill="{color}"/><text x="{}" y="43">{}</text>"#,
            lx + 18.0,
            esc(label)
        );
        lx += 40.0 + label.len() as f64 * 6.0;
    }
    // Grid and time axis.
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let gx = x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{panel_bottom}" stroke="#e6e6e6"/>"##
        );
        for ty in [axis_y + 14.0, panel_bottom + 14.0] {
            let _ = writeln!(
                o,
                r#"<text x="{gx:.1}" y="{ty}" text-anchor="middle">{}</text>"#,
                fmt_t(t)
            );
        }
        t += step;
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="end">seconds since the rollout started</text>"#,
        WIDTH - RIGHT,
        panel_bottom + 32.0
    );
    // One row per node.
    for (i, n) in report.nodes.iter().enumerate() {
        let y = TOP + i as f64 * ROW;
        let name = esc(&n.name);
        let zone = n
            .zone
            .as_deref()
            .map(|z| format!(" ({})", esc(z)))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{name}</text>"#,
            LEFT - 8.0,
            y + BAR
        );
        for c in &n.cycles {
            let spans = [
                (
                    c.granted,
                    c.drain_start.or(c.released),
                    GRANTED,
                    "granted",
                    4.0,
                ),
                (
                    c.drain_start,
                    c.reboot_start.or(c.released),
                    DRAIN,
                    "draining",
                    BAR,
                ),
                (
                    c.reboot_start,
                    c.back.or(c.released),
                    REBOOT,
                    "rebooting",
                    BAR,
                ),
                (c.back, c.released, RETURN, "back", 4.0),
            ];
            for (from, to, color, what, h) in spans {
                let Some(from) = from else { continue };
                let to = to.unwrap_or(t_max);
                let (x1, x2) = (x(from), x(to));
                let _ = writeln!(
                    o,
                    r#"<rect x="{x1:.1}" y="{:.1}" width="{:.1}" height="{h}" fill="{color}"><title>{name}{zone} {what} {from:.2}-{to:.2} s</title></rect>"#,
                    y + (BAR - h) / 2.0 + 1.0,
                    (x2 - x1).max(1.0)
                );
            }
        }
    }
    // Concurrency panel.
    let peak = report
        .concurrency
        .iter()
        .map(|c| c.1)
        .max()
        .unwrap_or(0)
        .max(s.max_rebooting)
        .max(1) as f64
        + 1.0;
    let y = |n: f64| panel_bottom - n / peak * PANEL;
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="{}">nodes unavailable at once (cordoned, draining or rebooting)</text>"#,
        panel_top - 8.0
    );
    let _ = writeln!(
        o,
        r##"<line x1="{LEFT}" y1="{panel_bottom}" x2="{}" y2="{panel_bottom}" stroke="#888"/>"##,
        WIDTH - RIGHT
    );
    for n in 0..=(peak as usize) {
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{n}</text>"#,
            LEFT - 8.0,
            y(n as f64) + 4.0
        );
    }
    let ky = y(s.max_rebooting as f64);
    let _ = writeln!(
        o,
        r##"<line x1="{LEFT}" y1="{ky:.1}" x2="{}" y2="{ky:.1}" stroke="#d9483b" stroke-dasharray="6,4"/><text x="{}" y="{:.1}" text-anchor="end" fill="#d9483b">limit {}</text>"##,
        WIDTH - RIGHT,
        WIDTH - RIGHT,
        ky - 3.0,
        s.max_rebooting
    );
    let mut d = String::new();
    let mut last = 0usize;
    for (i, &(t, n)) in report.concurrency.iter().enumerate() {
        if i == 0 {
            let _ = write!(d, "M{:.1},{:.1}", x(t), y(n as f64));
        } else {
            let _ = write!(d, " H{:.1} V{:.1}", x(t), y(n as f64));
        }
        last = n;
    }
    if !d.is_empty() {
        let _ = write!(d, " H{:.1}", x(end));
        let _ = writeln!(
            o,
            r##"<path d="{d}" fill="none" stroke="#3366cc" stroke-width="2"><title>nodes unavailable at once (now {last})</title></path>"##
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(esc(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }

    #[test]
    fn ticks() {
        assert_eq!(tick_step(10.0), 1.0);
        assert_eq!(tick_step(100.0), 10.0);
        assert_eq!(tick_step(5.0), 0.5);
    }
}
