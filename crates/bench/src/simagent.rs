//! Simulated agents for thousands of nodes: one watch of all Nodes in this process and, per
//! node, a task that runs the real agent's decision function
//! ([`protocol::agent::next_step`]) on the node's view and its [`SimHost`]'s update_engine
//! status, and does what it says: patches (with the resourceVersion decided on, as the agent
//! does), reboots through the `SimHost`. The drain is not simulated: the node has no pods
//! that need evicting for the operator's sake, and the machine's reboot removes them.
//!
//! Cheaper than 5,000 real agents (each with its own watch, which the sandbox would fan
//! every node event out to), and the operator cannot tell the difference on the wire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use host::Host;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use protocol::agent::{AgentInput, AgentStep, next_step};
use protocol::hostinfo::HostInfo;
use protocol::k8s::node_view;
use protocol::keys;
use sandbox::{Sandbox, SimHost};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn rv_of(n: &Node) -> u64 {
    n.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A moment of a simulated agent's reboot cycle, on this process's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A view of its node with `reboot-ok=true` arrived while the agent had not started.
    GrantSeen,
    /// Its patch setting `reboot-in-progress=true` returned.
    MarkedInProgress,
    /// The host's reboot call returned (the machine is going down).
    RebootAsked,
    /// A view of its node Ready with a new boot ID arrived.
    BackSeen,
    /// Its patch setting `reboot-in-progress=false` after the reboot returned.
    MarkedDone,
}

/// What every simulated agent did when: (node, step, instant).
pub type Stamps = Arc<Mutex<Vec<(String, Step, Instant)>>>;

/// The simulated agents of a set of nodes. Dropping it stops them.
pub struct SimAgents {
    tasks: Vec<JoinHandle<()>>,
    stamps: Stamps,
}

impl SimAgents {
    /// Starts an agent for each of `nodes` (added with `Sandbox::add_node`), writing as
    /// `user` in the sandbox's audit record.
    pub fn start(sb: &Sandbox, nodes: &[String], user: &str) -> anyhow::Result<SimAgents> {
        let client = sb.client_as(user)?;
        let stamps = Stamps::default();
        let mut senders = HashMap::new();
        let mut tasks = Vec::new();
        for name in nodes {
            let host = sb
                .host(name)
                .ok_or_else(|| anyhow::anyhow!("node {name} was not added with add_node"))?;
            let (tx, rx) = watch::channel::<Option<Arc<Node>>>(None);
            senders.insert(name.clone(), tx);
            tasks.push(tokio::spawn(node_agent(
                Api::all(client.clone()),
                host,
                rx,
                stamps.clone(),
            )));
        }
        let api: Api<Node> = Api::all(client);
        tasks.push(tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) = ev
                    && let Some(tx) = n.metadata.name.as_ref().and_then(|m| senders.get(m))
                {
                    tx.send_replace(Some(Arc::new(n)));
                }
            }
        }));
        Ok(SimAgents { tasks, stamps })
    }

    /// Every step taken so far.
    pub fn stamps(&self) -> Vec<(String, Step, Instant)> {
        self.stamps.lock().expect("stamps").clone()
    }
}

impl Drop for SimAgents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One node's agent: evaluates on every newer view of its node and every host status.
async fn node_agent(
    api: Api<Node>,
    host: SimHost,
    mut views: watch::Receiver<Option<Arc<Node>>>,
    stamps: Stamps,
) {
    let Ok(mut statuses) = host.status_updates().await else {
        return;
    };
    let stamp = |node: &str, step| {
        stamps
            .lock()
            .expect("stamps")
            .push((node.to_string(), step, Instant::now()));
    };
    // A grant is new once `reboot-ok` was seen not "true" (the previous one withdrawn).
    let (mut awaiting_grant, mut marked_in_progress) = (false, false);
    let mut node: Option<Arc<Node>> = None;
    let mut drained = false;
    // The boot ID the machine went down with: nothing runs until it is back with another.
    let mut down_with: Option<String> = None;
    let mut info = HostInfo::from_files(Some(&host.os_release()), None, None);
    // A write that failed (not a 409) is tried again, as the agent's backoff does: no
    // further event may come for this node (15,000 nodes asking at once made some fail).
    let mut retry = false;
    loop {
        if std::mem::take(&mut retry) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            tokio::select! {
            r = views.changed() => {
                if r.is_err() {
                    return;
                }
                let seen = views.borrow_and_update().clone();
                if let Some(n) = seen
                    && node.as_ref().is_none_or(|have| rv_of(&n) > rv_of(have))
                {
                    node = Some(n);
                }
            }
            s = statuses.next() => {
                if s.is_none() {
                    return;
                }
            }
            }
        }
        let Some(current) = node.clone() else {
            continue;
        };
        if let Some(b) = &down_with {
            let v = node_view(&current);
            if !v.ready || &v.boot_id == b {
                continue;
            }
            // Back up: a new agent process starts, with the new os-release.
            stamp(&v.name, Step::BackSeen);
            down_with = None;
            drained = false;
            info = HostInfo::from_files(Some(&host.os_release()), None, None);
        }
        let v = node_view(&current);
        let ok = v.annotation(keys::REBOOT_OK) == Some(keys::TRUE);
        if awaiting_grant && ok {
            stamp(&v.name, Step::GrantSeen);
        }
        awaiting_grant = !ok;
        // Act until the decision is to wait, as the agent's shell does.
        let mut current = current;
        for _ in 0..20 {
            let view = node_view(&current);
            let status = host.status();
            let step = next_step(&AgentInput {
                node: &view,
                host: Some(&status),
                info: &info,
                drained,
                now: chrono::Utc::now(),
                // The drain evicts nothing, so no evicted-pods record waits for its pods.
                pods: None,
                pod_recovery_timeout: chrono::TimeDelta::zero(),
                options: Default::default(),
                sentinel: None,
            });
            match step {
                AgentStep::Patch(p) => {
                    let mut body = p.merge_patch();
                    body["metadata"]["resourceVersion"] = json!(
                        current
                            .metadata
                            .resource_version
                            .clone()
                            .unwrap_or_default()
                    );
                    let written = api
                        .patch(&view.name, &PatchParams::default(), &Patch::Merge(&body))
                        .await;
                    let applied = written.is_ok();
                    let fresh = match written {
                        Ok(n) => Ok(n),
                        // Changed since: decide again on a fresh read.
                        Err(kube::Error::Api(s)) if s.code == 409 => api.get(&view.name).await,
                        Err(e) => Err(e),
                    };
                    let in_progress = p.annotations.get(keys::REBOOT_IN_PROGRESS);
                    if applied && in_progress == Some(&Some(keys::TRUE.to_string())) {
                        marked_in_progress = true;
                        stamp(&view.name, Step::MarkedInProgress);
                    } else if applied
                        && marked_in_progress
                        && in_progress == Some(&Some(keys::FALSE.to_string()))
                    {
                        marked_in_progress = false;
                        stamp(&view.name, Step::MarkedDone);
                    }
                    match fresh {
                        Ok(n) => {
                            let n = Arc::new(n);
                            node = Some(n.clone());
                            current = n;
                        }
                        Err(_) => {
                            retry = true;
                            break;
                        }
                    }
                }
                AgentStep::Drain => drained = true,
                AgentStep::Reboot => {
                    if host.reboot().await.is_ok() {
                        stamp(&view.name, Step::RebootAsked);
                        down_with = Some(view.boot_id.clone());
                    }
                    break;
                }
                AgentStep::Wait(_) => break,
            }
        }
    }
}
