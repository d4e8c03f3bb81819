//! Whether any node needs an operator at all, seen by every replica, leader
//! or not, through one watch of Nodes. While none does, no replica campaigns
//! for the Lease and an idle cluster costs no API requests (a watch stays
//! open); the leader gives the Lease up after `--release-lease-after-idle`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use protocol::operator::{OperatorConfig, needs_operator};
use tokio::sync::watch;
use tracing::{debug, warn};

use protocol::k8s::node_view;

/// The names of the nodes that need an operator, kept from watch events.
#[derive(Default)]
struct Wanting {
    names: BTreeSet<String>,
    /// During a (re)list: the set being rebuilt.
    relist: Option<BTreeSet<String>>,
}

impl Wanting {
    fn apply(&mut self, ev: watcher::Event<Node>, cfg: &OperatorConfig) {
        let now = chrono::Utc::now();
        let judge = |set: &mut BTreeSet<String>, node: &Node| {
            if needs_operator(&node_view(node), cfg, now) {
                set.insert(node.name_any());
            } else {
                set.remove(&node.name_any());
            }
        };
        match ev {
            watcher::Event::Init => self.relist = Some(BTreeSet::new()),
            watcher::Event::InitApply(n) => judge(self.relist.get_or_insert_default(), &n),
            watcher::Event::InitDone => {
                if let Some(set) = self.relist.take() {
                    self.names = set;
                }
            }
            watcher::Event::Apply(n) => judge(&mut self.names, &n),
            watcher::Event::Delete(n) => {
                self.names.remove(&n.name_any());
            }
        }
    }
}

/// The watch of the managed nodes only (`--node-selector`; decisions filter them again).
pub(crate) fn node_watch(cfg: &OperatorConfig) -> watcher::Config {
    match &cfg.node_selector {
        Some(sel) => watcher::Config::default().labels(&sel.to_string()),
        None => watcher::Config::default(),
    }
}

/// What the replicas' campaign loop reads: whether a leader is wanted now,
/// and whether the watch behind it is healthy (for `/readyz`).
#[derive(Clone)]
pub struct LeaderNeeded {
    pub wanted: watch::Receiver<bool>,
    healthy: Arc<AtomicBool>,
}

impl LeaderNeeded {
    /// The node watch is established (its last outcome was not an error).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Starts judging; the future runs the watch and never ends. Until the first
/// list completes a leader is wanted, so a replica that cannot list acts as
/// one that always campaigns (the safe side: the leader's own node watch
/// reports the failure).
pub fn watch_leader_needed(
    api: Api<Node>,
    cfg: Arc<OperatorConfig>,
) -> (LeaderNeeded, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = watch::channel(true);
    let healthy = Arc::new(AtomicBool::new(false));
    let signal = LeaderNeeded {
        wanted: rx,
        healthy: healthy.clone(),
    };
    let config = node_watch(&cfg);
    let run = async move {
        let mut wanting = Wanting::default();
        let mut listed = false;
        let stream = watcher(api, config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    healthy.store(true, Ordering::Relaxed);
                    listed |= matches!(ev, watcher::Event::InitDone);
                    wanting.apply(ev, &cfg);
                    if listed {
                        let want = !wanting.names.is_empty();
                        tx.send_if_modified(|w| {
                            let changed = *w != want;
                            if changed {
                                debug!(nodes = ?wanting.names, wanted = want, "nodes needing an operator changed");
                            }
                            *w = want;
                            changed
                        });
                    }
                }
                Err(e) => {
                    healthy.store(false, Ordering::Relaxed);
                    warn!(error = %e, "watching nodes (for work) failed; retrying with backoff");
                }
            }
        }
    };
    (signal, run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::keys;
    use serde_json::json;

    fn node(name: &str, needed: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {keys::REBOOT_NEEDED: needed}},
        }))
        .unwrap()
    }

    #[test]
    fn the_set_follows_events_and_relists() {
        let cfg = OperatorConfig::default();
        let mut w = Wanting::default();
        w.apply(watcher::Event::Apply(node("a", "true")), &cfg);
        w.apply(watcher::Event::Apply(node("b", "false")), &cfg);
        assert_eq!(w.names, BTreeSet::from(["a".to_string()]));
        w.apply(watcher::Event::Apply(node("a", "false")), &cfg);
        assert!(w.names.is_empty());
        w.apply(watcher::Event::Apply(node("b", "true")), &cfg);
        w.apply(watcher::Event::Delete(node("b", "true")), &cfg);
        assert!(w.names.is_empty());
        // A relist replaces the set only once it is complete.
        w.apply(watcher::Event::Apply(node("c", "true")), &cfg);
        w.apply(watcher::Event::Init, &cfg);
        w.apply(watcher::Event::InitApply(node("d", "true")), &cfg);
        assert_eq!(w.names, BTreeSet::from(["c".to_string()]));
        w.apply(watcher::Event::InitDone, &cfg);
        assert_eq!(w.names, BTreeSet::from(["d".to_string()]));
    }
}
