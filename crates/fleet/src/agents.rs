//! Runs the real agent (`agent::run`) once per simulated node, like a
//! DaemonSet: when the sandbox says a node's reboot started, that node's agent
//! is aborted (the machine went down); when the node is Up again, a new agent
//! starts. A test can also kill and restart one agent by hand.
//!
//! Use: `let fleet = Fleet::start(&sb, &["n1", "n2"], agent_config);` (before
//! anything can reboot), then `fleet.stop().await` at the end.

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

/// A client of the sandbox authenticated as `user` (its bearer token), configured
/// as `update-agent` configures its own: kube's built-in retry of 429/503 is off,
/// the agent's loops retry with backoff themselves.
pub fn agent_client(sb: &Sandbox, user: &sandbox::UserInfo) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(agent_client_config(sb, user)?)?)
}

/// The settings of [`agent_client`].
pub fn agent_client_config(sb: &Sandbox, user: &sandbox::UserInfo) -> anyhow::Result<kube::Config> {
    let mut config = sb.config_for(user)?;
    config.default_retry = false;
    Ok(config)
}

type MakeConfig = Arc<dyn Fn(&str, &SimHost) -> AgentConfig + Send + Sync>;

struct Member {
    /// The agent's client settings: a client is built per start, on that agent's clock.
    config: kube::Config,
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
    let client = match shell::clock::client(m.config.clone(), &cfg.clock) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(node = name, error = %e, "cannot build the agent's client");
            return;
        }
    };
    let handle = tokio::spawn(agent::run(client, m.host.clone(), cfg, token.clone()));
    m.running = Some((token, handle));
    m.starts += 1;
}

impl Fleet {
    /// Starts an agent on each of `nodes` (added with `Sandbox::add_node`), each
    /// authenticated as the agent's service account with its node's name
    /// ([`sandbox::UserInfo::agent`]), as its pod's projected token carries it. Panics on a node the sandbox
    /// does not simulate; see [`Fleet::try_start`].
    pub fn start<S: AsRef<str>>(
        sb: &Sandbox,
        nodes: &[S],
        make_config: impl Fn(&str, &SimHost) -> AgentConfig + Send + Sync + 'static,
    ) -> Fleet {
        Fleet::try_start(sb, nodes, make_config).expect("agents start")
    }

    /// [`Fleet::start`], with an error for a node the sandbox does not simulate.
    pub fn try_start<S: AsRef<str>>(
        sb: &Sandbox,
        nodes: &[S],
        make_config: impl Fn(&str, &SimHost) -> AgentConfig + Send + Sync + 'static,
    ) -> anyhow::Result<Fleet> {
        let make_config: MakeConfig = Arc::new(make_config);
        let mut lifecycle = sb.lifecycle();
        let members: Members = Arc::default();
        {
            let mut ms = members.lock().unwrap();
            for n in nodes {
                let n = n.as_ref();
                let host = sb
                    .host(n)
                    .ok_or_else(|| anyhow::anyhow!("node {n} was not added with add_node"))?;
                let mut m = Member {
                    config: agent_client_config(sb, &sandbox::UserInfo::agent(n))?,
                    host,
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
        Ok(Fleet {
            members,
            make_config,
            follower,
        })
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

    /// Agents that ended on their own (they should not).
    pub fn crashed(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .members
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.running.as_ref().is_some_and(|(_, h)| h.is_finished()))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
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
        for (token, _) in &running {
            token.cancel();
        }
        for (_, handle) in running {
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
