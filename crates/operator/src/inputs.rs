//! What the leader watches besides Nodes, turned into
//! [`protocol::operator::ClusterInputs`]: the cluster-wide pause (the
//! `paused` annotation on the operator's own Lease), the pods matching
//! `--blocking-pod-selector` (both watches, reflectors) and the Prometheus
//! alerts of `--prometheus-url` (polled, see [`crate::alerts`]); a change that
//! alters the inputs wakes the decision loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio_util::task::AbortOnDropHandle;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use protocol::blockers::{PodView, node_blockers};
use protocol::keys;
use protocol::operator::{
    ClusterInputs, DepartedSlot, SlotHolders, parse_departed, parse_pause, parse_slot_holders,
};
use protocol::selector::LabelSelector;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::Config;

/// The parts of a Pod that can block a node.
pub fn pod_view(pod: &Pod) -> PodView {
    let meta = &pod.metadata;
    PodView {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        phase: pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
    }
}

/// What was last logged: the pause (once known) and the blocked nodes.
#[derive(Default)]
struct Logged {
    paused: Option<bool>,
    blocked: BTreeMap<String, Vec<String>>,
}

/// The Lease and Pod reflectors of one leadership term.
pub(crate) struct Inputs {
    lease: Store<Lease>,
    lease_name: String,
    pods: Option<(Store<Pod>, LabelSelector)>,
    alerts: Option<watch::Receiver<Option<Vec<String>>>>,
    logged: Mutex<Logged>,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

fn lease_annotation(store: &Store<Lease>, name: &str, key: &str) -> Option<String> {
    store
        .state()
        .iter()
        .find(|l| l.metadata.name.as_deref() == Some(name))
        .and_then(|l| l.metadata.annotations.as_ref())
        .and_then(|a| a.get(key).cloned())
}

fn pause_value(store: &Store<Lease>, name: &str) -> Option<String> {
    lease_annotation(store, name, keys::PAUSED)
}

fn blockers_of(store: &Store<Pod>, sel: &LabelSelector) -> BTreeMap<String, Vec<String>> {
    let pods: Vec<PodView> = store.state().iter().map(|p| pod_view(p)).collect();
    node_blockers(&pods, sel)
}

impl Inputs {
    /// Starts the watches; `changed` is notified whenever the inputs change.
    pub(crate) fn start(client: &kube::Client, cfg: &Config, changed: Arc<Notify>) -> Inputs {
        let mut tasks = Vec::new();
        let (lease, writer) = reflector::store::<Lease>();
        {
            let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
            let wc =
                watcher::Config::default().fields(&format!("metadata.name={}", cfg.lease_name));
            let stream = reflector(writer, watcher(api, wc)).default_backoff();
            let store = lease.clone();
            let name = cfg.lease_name.clone();
            let changed = changed.clone();
            tasks.push(AbortOnDropHandle::new(tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                let mut last: Option<Option<String>> = None;
                while let Some(ev) = stream.next().await {
                    match ev {
                        // The Lease changes at every renewal: wake the
                        // decisions only when the pause does.
                        Ok(_) => {
                            let v = pause_value(&store, &name);
                            if last.as_ref() != Some(&v) {
                                last = Some(v);
                                changed.notify_one();
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "watching the operator's Lease failed; retrying with backoff")
                        }
                    }
                }
            })));
        }
        let pods = cfg.blocking_pod_selector.clone().map(|sel| {
            let (store, writer) = reflector::store::<Pod>();
            let api: Api<Pod> = Api::all(client.clone());
            let wc = watcher::Config::default().labels(&sel.to_string());
            let stream = reflector(writer, watcher(api, wc)).default_backoff();
            let s = store.clone();
            let sel2 = sel.clone();
            let changed = changed.clone();
            tasks.push(AbortOnDropHandle::new(tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                let mut last: Option<BTreeMap<String, Vec<String>>> = None;
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(_) => {
                            let b = blockers_of(&s, &sel2);
                            if last.as_ref() != Some(&b) {
                                last = Some(b);
                                changed.notify_one();
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "watching blocking pods failed; retrying with backoff")
                        }
                    }
                }
            })));
            (store, sel)
        });
        let alerts = cfg.alerts.clone().map(|a| {
            let (rx, task) = crate::alerts::spawn(a, changed.clone());
            tasks.push(AbortOnDropHandle::new(task));
            rx
        });
        Inputs {
            lease,
            lease_name: cfg.lease_name.clone(),
            pods,
            alerts,
            logged: Mutex::new(Logged::default()),
            _tasks: tasks,
        }
    }

    /// Waits until the watches have listed once and alerts were checked once
    /// (no decision is made on inputs not yet known: a pause, a blocking pod
    /// or a firing alert would be missed).
    pub(crate) async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.lease
            .wait_until_ready()
            .await
            .map_err(|e| anyhow::anyhow!("Lease reflector stopped: {e}"))?;
        if let Some((pods, _)) = &self.pods {
            pods.wait_until_ready()
                .await
                .map_err(|e| anyhow::anyhow!("pod reflector stopped: {e}"))?;
        }
        if let Some(rx) = &self.alerts {
            crate::alerts::wait_until_ready(rx).await?;
        }
        Ok(())
    }

    /// The departed slots and the slot holders the Lease records ([`keys::DEPARTED_SLOTS`],
    /// [`keys::SLOT_HOLDERS`]).
    pub(crate) fn departed_on_lease(
        &self,
    ) -> Result<(BTreeMap<String, DepartedSlot>, SlotHolders), String> {
        let get = |key| lease_annotation(&self.lease, &self.lease_name, key);
        Ok((
            parse_departed(get(keys::DEPARTED_SLOTS).as_deref())?,
            parse_slot_holders(get(keys::SLOT_HOLDERS).as_deref())?,
        ))
    }

    /// The inputs now (without departed slots: the leader keeps those); logs changes of the
    /// pause and of blocked nodes.
    pub(crate) fn current(&self) -> ClusterInputs {
        let raw = pause_value(&self.lease, &self.lease_name);
        let (paused, malformed) = match parse_pause(raw.as_deref()) {
            Ok(p) => (p, None),
            Err(e) => (true, Some(e)),
        };
        let node_blockers = self
            .pods
            .as_ref()
            .map(|(s, sel)| blockers_of(s, sel))
            .unwrap_or_default();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.paused != Some(paused) {
            match (&malformed, paused) {
                (Some(e), _) => warn!(lease = %self.lease_name, problem = %e, "cluster-wide pause"),
                (None, true) => {
                    info!(lease = %self.lease_name, "cluster-wide pause: no new reboots until the annotation {} is removed", keys::PAUSED)
                }
                (None, false) if logged.paused.is_some() => {
                    info!(lease = %self.lease_name, "cluster-wide pause lifted")
                }
                (None, false) => {}
            }
            logged.paused = Some(paused);
        }
        for (node, pods) in &node_blockers {
            if logged.blocked.get(node) != Some(pods) {
                info!(node = %node, blockers = ?pods, "reboot blocked by pods");
            }
        }
        for node in logged.blocked.keys() {
            if !node_blockers.contains_key(node) {
                info!(node = %node, "no longer blocked by pods");
            }
        }
        logged.blocked = node_blockers.clone();
        ClusterInputs {
            paused,
            blockers: self
                .alerts
                .as_ref()
                .map(crate::alerts::current)
                .unwrap_or_default(),
            node_blockers,
            departed: BTreeMap::new(),
        }
    }
}
