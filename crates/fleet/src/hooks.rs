//! Simulated reboot hooks: what a before-reboot or after-reboot hook DaemonSet
//! does in a cluster. When the operator labels a node `before-reboot=true`
//! (or `after-reboot=true`), the hook sets each of its annotations on that
//! node to `"true"` after a delay.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use protocol::keys;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The hooks of one operator configuration, running until dropped.
pub struct Hooks {
    task: JoinHandle<()>,
}

impl Hooks {
    /// Approves `before` annotations on nodes labelled `before-reboot=true`
    /// and `after` annotations on nodes labelled `after-reboot=true`, each
    /// `delay` after the label appeared.
    pub fn start(
        client: kube::Client,
        before: Vec<String>,
        after: Vec<String>,
        delay: Duration,
    ) -> Hooks {
        let task = tokio::spawn(async move {
            let api = Api::<Node>::all(client);
            let pending: Arc<Mutex<BTreeSet<(String, &'static str)>>> = Arc::default();
            let hooks: [(&'static str, Arc<Vec<String>>); 2] = [
                (keys::BEFORE_REBOOT, Arc::new(before)),
                (keys::AFTER_REBOOT, Arc::new(after)),
            ];
            let stream = watcher(api.clone(), watcher::Config::default())
                .default_backoff()
                .applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let Ok(node) = ev else { continue };
                for (label, annotations) in &hooks {
                    if annotations.is_empty() || !wants(&node, label, annotations) {
                        continue;
                    }
                    let key = (node.name_any(), *label);
                    if !pending.lock().unwrap().insert(key.clone()) {
                        continue;
                    }
                    let (api, pending, annotations, label) =
                        (api.clone(), pending.clone(), annotations.clone(), *label);
                    tokio::spawn(async move {
                        let mut wait = delay;
                        loop {
                            tokio::time::sleep(wait).await;
                            wait = Duration::from_secs(1);
                            // Only while the node still waits for this hook.
                            let n = match api.get(&key.0).await {
                                Ok(n) => n,
                                Err(kube::Error::Api(e)) if e.code == 404 => break,
                                Err(_) => continue,
                            };
                            if !wants(&n, label, &annotations) {
                                break;
                            }
                            let anns: serde_json::Map<String, Value> = annotations
                                .iter()
                                .map(|a| (a.clone(), json!(keys::TRUE)))
                                .collect();
                            let body = json!({"metadata": {"annotations": anns}});
                            if api
                                .patch(&key.0, &PatchParams::default(), &Patch::Merge(&body))
                                .await
                                .is_ok()
                            {
                                break;
                            }
                        }
                        pending.lock().unwrap().remove(&key);
                    });
                }
            }
        });
        Hooks { task }
    }
}

/// Labelled `label=true` with some of `annotations` not `"true"` yet.
fn wants(node: &Node, label: &str, annotations: &[String]) -> bool {
    node.labels().get(label).map(String::as_str) == Some(keys::TRUE)
        && annotations
            .iter()
            .any(|a| node.annotations().get(a).map(String::as_str) != Some(keys::TRUE))
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}
