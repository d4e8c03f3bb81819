//! Runs the real agent (`agent::run`) once per simulated node, like a
//! DaemonSet: when the sandbox says a node's reboot started, that node's agent
//! is aborted (the machine went down); when the node is Up again, a new agent
//! starts. Tests can also kill and restart one agent by hand.
//!
//! Use: `let fleet = Fleet::start(&sb, &["n1", "n2"], agent_config);` (before
//! anything can reboot), then `fleet.stop().await` at the end.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::AgentConfig;
use protocol::hostinfo::HostInfo;
use sandbox::{NodeLifecycle, Sandbox, SimHost};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An agent config suited to the sandbox: short grace period and margins.
pub fn agent_config(node: &str, host: &SimHost) -> AgentConfig {
    let mut c = AgentConfig::new(node);
    c.grace_period = Duration::from_secs(60);
    c.pod_delete_margin = Duration::from_secs(2);
    c.api_backoff_max = Duration::from_secs(2);
    c.reboot_backoff_max = Duration::from_secs(2);
    c.reboot_timeout = Duration::from_secs(30);
    c.host_info = HostInfo::from_files(Some(&host.os_release()), None, None);
    c
}

type MakeConfig = Arc<dyn Fn(&str, &SimHost) -> AgentConfig + Send + Sync>;

struct Member {
    client: kube::Client,
    host: SimHost,
    running: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    starts: u32,
}

type Members = Arc<Mutex<HashMap<String, Member>>>;

/// One agent per node, following the nodes' reboots.
pub struct Fleet {
    members: Members,
    make_config: MakeConfig,
    follower: JoinHandle<()>,
}

fn start_member(name: &str, m: &mut Member, make_config: &MakeConfig) {
    if let Some((_, h)) = m.running.take() {
        h.abort();
    }
    let token = CancellationToken::new();
    let cfg = make_config(name, &m.host);
    let handle = tokio::spawn(agent::run(
        m.client.clone(),
        m.host.clone(),
        cfg,
        token.clone(),
    ));
    m.running = Some((token, handle));
    m.starts += 1;
}

impl Fleet {
    /// Starts an agent on each of `nodes` (added with `Sandbox::add_node`),
    /// as user `agent-<node>` in the audit record.
    pub fn start(
        sb: &Sandbox,
        nodes: &[&str],
        make_config: impl Fn(&str, &SimHost) -> AgentConfig + Send + Sync + 'static,
    ) -> Fleet {
        let make_config: MakeConfig = Arc::new(make_config);
        let mut lifecycle = sb.lifecycle();
        let members: Members = Arc::default();
        {
            let mut ms = members.lock().unwrap();
            for &n in nodes {
                let mut m = Member {
                    client: sb.client_as(&format!("agent-{n}")).expect("client"),
                    host: sb.host(n).expect("node added with add_node"),
                    running: None,
                    starts: 0,
                };
                start_member(n, &mut m, &make_config);
                ms.insert(n.to_string(), m);
            }
        }
        let ms = members.clone();
        let mc = make_config.clone();
        let follower = tokio::spawn(async move {
            loop {
                let ev = match lifecycle.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let mut ms = ms.lock().unwrap();
                match ev {
                    NodeLifecycle::RebootStarted(n) => {
                        if let Some(m) = ms.get_mut(&n)
                            && let Some((_, h)) = m.running.take()
                        {
                            h.abort();
                        }
                    }
                    NodeLifecycle::Up(n) => {
                        if let Some(m) = ms.get_mut(&n) {
                            start_member(&n, m, &mc);
                        }
                    }
                }
            }
        });
        Fleet {
            members,
            make_config,
            follower,
        }
    }

    /// Kills a node's agent abruptly (a crashed pod), without restarting it.
    pub fn kill(&self, node: &str) {
        if let Some(m) = self.members.lock().unwrap().get_mut(node)
            && let Some((_, h)) = m.running.take()
        {
            h.abort();
        }
    }

    /// Starts a fresh agent on `node` (killing a running one first).
    pub fn restart(&self, node: &str) {
        if let Some(m) = self.members.lock().unwrap().get_mut(node) {
            start_member(node, m, &self.make_config);
        }
    }

    /// How many times an agent was started on `node`.
    pub fn starts(&self, node: &str) -> u32 {
        self.members
            .lock()
            .unwrap()
            .get(node)
            .map_or(0, |m| m.starts)
    }

    /// Agents that ended on their own (they should not), with their results.
    pub fn crashed(&self) -> Vec<String> {
        self.members
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.running.as_ref().is_some_and(|(_, h)| h.is_finished()))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Stops every agent gracefully.
    pub async fn stop(self) {
        self.follower.abort();
        let running: Vec<_> = self
            .members
            .lock()
            .unwrap()
            .values_mut()
            .filter_map(|m| m.running.take())
            .collect();
        for (token, handle) in running {
            token.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.follower.abort();
        if let Ok(mut ms) = self.members.lock() {
            for m in ms.values_mut() {
                if let Some((_, h)) = m.running.take() {
                    h.abort();
                }
            }
        }
    }
}
