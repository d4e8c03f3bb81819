//! Grant latency under load: how long a freed reboot slot stays empty while a rollout runs.
//!
//! Recorded in-process from the sandbox store's own change feed (no watch, so it costs the
//! same at 15,000 nodes as at 20): the moments a slot holder's agent says its reboot is done
//! (`reboot-needed` turning false on a granted node) and the moments a node is granted
//! (`reboot-ok` turning true), each at the instant the store committed it (not when this
//! reader got to it: the bench's own tasks can be late under load). Once every slot is
//! taken, each grant fills the slot of one such "done"; paired first-in first-out, the gap is
//! the operator's whole reaction: its watch, its decision, the release patch and the grant
//! patch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use protocol::keys;
use sandbox::store::{EventType, WatchEvent};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Seen {
    /// Per node: (reboot-ok, reboot-needed) as last seen.
    nodes: BTreeMap<String, (bool, bool)>,
    done: Vec<Instant>,
    grants: Vec<Instant>,
    lagged: u64,
}

/// Records until dropped.
pub struct SlotRecorder {
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

fn is_true(obj: &Value, key: &str) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        == Some(keys::TRUE)
}

impl SlotRecorder {
    pub fn start(store: &sandbox::Store) -> SlotRecorder {
        let mut rx = store.subscribe_all();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let nodes = sandbox::resources::find("", "v1", "nodes")
            .expect("nodes")
            .storage;
        let task = tokio::spawn(async move {
            loop {
                let ev: Arc<WatchEvent> = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(RecvError::Lagged(n)) => {
                        s.lock().unwrap().lagged += n;
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                let at = ev.at;
                if ev.storage != nodes || ev.kind == EventType::Deleted {
                    continue;
                }
                let Some(name) = ev.object.pointer("/metadata/name").and_then(Value::as_str) else {
                    continue;
                };
                let now = (
                    is_true(&ev.object, keys::REBOOT_OK),
                    is_true(&ev.object, keys::REBOOT_NEEDED),
                );
                let mut st = s.lock().unwrap();
                let before = st.nodes.insert(name.to_string(), now).unwrap_or_default();
                if now.0 && !before.0 {
                    st.grants.push(at);
                }
                if before.0 && now.0 && before.1 && !now.1 {
                    st.done.push(at);
                }
            }
        });
        SlotRecorder { seen, task }
    }

    /// The gaps so far, with `slots` the maximum (the first `slots` grants fill empty slots).
    pub fn latency(&self, slots: usize) -> SlotLatency {
        let st = self.seen.lock().unwrap();
        let mut done: VecDeque<Instant> = st.done.iter().copied().collect();
        let Some(first) = st.grants.first().copied() else {
            return SlotLatency::of(Vec::new(), st.lagged);
        };
        // (ms, seconds since the first grant)
        let mut ms = Vec::new();
        for (i, g) in st.grants.iter().enumerate() {
            if i < slots {
                continue;
            }
            // A "done" seen after the grant it would pair with cannot have caused it.
            match done.front() {
                Some(d) if d <= g => {
                    ms.push((
                        g.duration_since(*d).as_secs_f64() * 1000.0,
                        d.duration_since(first).as_secs_f64(),
                    ));
                    done.pop_front();
                }
                _ => {}
            }
        }
        if let Some(dir) = std::env::var_os("BENCH_LOG_DIR") {
            // For a diagnosis: every sample, as (seconds after the first grant, ms).
            let csv: String = ms
                .iter()
                .map(|(m, at)| format!("{at:.3},{m:.3}\n"))
                .collect();
            let path = std::path::Path::new(&dir).join(format!("slot-latency-{slots}.csv"));
            if let Err(e) = std::fs::write(&path, csv) {
                eprintln!("bench: cannot write {}: {e}", path.display());
            }
        }
        SlotLatency::of(ms, st.lagged)
    }
}

impl Drop for SlotRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Freed slot -> next grant, over a rollout.
#[derive(Debug, Clone, Serialize)]
pub struct SlotLatency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Store changes the recorder missed (it fell behind): 0 for a valid figure.
    pub lagged: u64,
    /// The ten longest: (ms, seconds after the first grant the slot was freed).
    pub worst: Vec<(f64, f64)>,
}

impl SlotLatency {
    pub(crate) fn of(samples: Vec<(f64, f64)>, lagged: u64) -> SlotLatency {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        let mut worst: Vec<(f64, f64)> = samples.iter().map(|(m, at)| (r(*m), r(*at))).collect();
        worst.sort_by(|a, b| b.0.total_cmp(&a.0));
        worst.truncate(10);
        let mut ms: Vec<f64> = samples.into_iter().map(|(m, _)| m).collect();
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if ms.is_empty() {
                0.0
            } else {
                ms[((ms.len() - 1) as f64 * p).round() as usize]
            }
        };
        SlotLatency {
            samples: ms.len(),
            p50_ms: r(pct(0.5)),
            p99_ms: r(pct(0.99)),
            max_ms: r(ms.last().copied().unwrap_or(0.0)),
            mean_ms: r(if ms.is_empty() {
                0.0
            } else {
                ms.iter().sum::<f64>() / ms.len() as f64
            }),
            lagged,
            worst,
        }
    }

    /// "N `what`: p50 .. ms, p99 .. ms, max .. ms, mean .. ms".
    pub fn summary(&self, what: &str) -> String {
        format!(
            "{} {what}: p50 {} ms, p99 {} ms, max {} ms, mean {} ms",
            self.samples, self.p50_ms, self.p99_ms, self.max_ms, self.mean_ms
        )
    }

    pub fn describe(&self) -> String {
        let worst: Vec<String> = self
            .worst
            .iter()
            .take(5)
            .map(|(ms, at)| format!("{ms} ms at {at:.1} s"))
            .collect();
        format!(
            "{} (longest: {}){}",
            self.summary("freed slots"),
            worst.join(", "),
            if self.lagged > 0 {
                format!(" (the recorder missed {} changes: not valid)", self.lagged)
            } else {
                String::new()
            }
        )
    }
}
