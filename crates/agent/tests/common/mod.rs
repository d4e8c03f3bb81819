//! Shared harness for the agent's integration tests: waits with timeouts, the test acting
//! as the operator, and a simulated machine that stops its agent when it reboots and starts
//! a fresh one when it is back (as a DaemonSet pod would be).

#![allow(dead_code)]

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use sandbox::testing::{annotation, boot_id, label, patch_node, unschedulable};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::{AgentConfig, HostInfo};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::{Client, ResourceExt};
use protocol::keys;
use sandbox::{NodeLifecycle, Options, Sandbox, SimHost, UserInfo};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bounds every single wait, so a bug fails the test instead of hanging it.
pub const STEP: Duration = Duration::from_secs(15);

/// A captured log, for asserting on what the agent says.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs to the test's output (and into the returned buffer). Each nextest test is its own
/// process, so the global subscriber is per test.
pub fn init_logging() -> Log {
    let log = Log::default();
    let writer = log.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,tower=warn,hyper=warn".into()),
        )
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    log
}

/// A sandbox with fast pods and reboots.
pub async fn sandbox() -> Sandbox {
    Sandbox::start(Options {
        pod_start: Duration::from_millis(100),
        reboot_duration: Duration::from_millis(500),
        ..Options::default()
    })
    .await
    .expect("sandbox")
}

/// The labels' values as the agent on `host` would read them.
pub fn host_info(host: &SimHost) -> HostInfo {
    HostInfo::from_files(Some(&host.os_release()), None, Some("GROUP=stable\n"))
}

/// A config for tests: short backoffs.
pub fn config(node: &str, grace_period: Duration) -> AgentConfig {
    let mut cfg = AgentConfig::new(node);
    cfg.grace_period = grace_period;
    cfg.api_backoff_max = Duration::from_secs(2);
    cfg.reboot_backoff_max = Duration::from_secs(2);
    cfg.pod_delete_margin = Duration::from_secs(5);
    cfg
}

fn describe(n: &Node) -> String {
    let ours = |m: Option<&std::collections::BTreeMap<String, String>>| {
        m.map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with(keys::PREFIX))
                .map(|(k, v)| format!("{}={v}", &k[keys::PREFIX.len()..]))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
    };
    format!(
        "annotations [{}] labels [{}] unschedulable={} bootID={}",
        ours(n.metadata.annotations.as_ref()),
        ours(n.metadata.labels.as_ref()),
        unschedulable(n),
        boot_id(n)
    )
}

/// Waits (by watching) until `node` satisfies `cond`; panics after [`STEP`].
pub async fn wait_node(
    client: &Client,
    node: &str,
    what: &str,
    cond: impl Fn(&Node) -> bool,
) -> Node {
    let api: Api<Node> = Api::all(client.clone());
    let fut = kube::runtime::wait::await_condition(api.clone(), node, move |n: Option<&Node>| {
        n.is_some_and(&cond)
    });
    match tokio::time::timeout(STEP, fut).await {
        Ok(Ok(Some(n))) => n,
        Ok(Ok(None)) => panic!("{node} disappeared while waiting for {what}"),
        Ok(Err(e)) => panic!("watching {node} for {what}: {e}"),
        Err(_) => {
            let now = api
                .get(node)
                .await
                .map(|n| describe(&n))
                .unwrap_or_default();
            panic!("timed out after {STEP:?} waiting for {what} on {node}; now: {now}")
        }
    }
}

pub async fn set_annotations(client: &Client, node: &str, anns: &[(&str, &str)]) {
    let m: serde_json::Map<String, Value> = anns
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    patch_node(client, node, json!({"metadata": {"annotations": m}})).await;
}

/// The operator's grant.
pub async fn grant(client: &Client, node: &str) {
    set_annotations(client, node, &[(keys::REBOOT_OK, "true")]).await;
}

/// The operator withdraws the grant.
pub async fn withdraw(client: &Client, node: &str) {
    set_annotations(client, node, &[(keys::REBOOT_OK, "false")]).await;
}

/// Waits for a lifecycle event of `node`.
pub async fn wait_lifecycle(
    rx: &mut tokio::sync::broadcast::Receiver<NodeLifecycle>,
    want: NodeLifecycle,
) {
    let fut = async {
        loop {
            match rx.recv().await {
                Ok(ev) if ev == want => return,
                Ok(_) => {}
                Err(e) => panic!("lifecycle: {e}"),
            }
        }
    };
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {want:?}"));
}

struct MachineState {
    agent: Option<(JoinHandle<()>, CancellationToken)>,
    starts: u32,
}

/// A simulated machine running an agent: the agent task is aborted when the machine goes
/// down and a new one (reading the new os-release) starts when it is back up.
pub struct Machine {
    node: String,
    client: Client,
    host: SimHost,
    cfg: AgentConfig,
    state: Arc<Mutex<MachineState>>,
    supervisor: JoinHandle<()>,
}

fn spawn_agent(
    client: &Client,
    host: &SimHost,
    cfg: &AgentConfig,
) -> (JoinHandle<()>, CancellationToken) {
    let mut cfg = cfg.clone();
    cfg.host_info = host_info(host);
    let token = CancellationToken::new();
    let handle = tokio::spawn({
        let (client, host, token) = (client.clone(), host.clone(), token.clone());
        async move {
            if let Err(e) = agent::run(client, host, cfg, token).await {
                panic!("agent::run failed: {e:#}");
            }
        }
    });
    (handle, token)
}

impl Machine {
    /// Starts the agent of `node` (added to `sb` before).
    pub fn start(sb: &Sandbox, node: &str, cfg: AgentConfig) -> Machine {
        Machine::start_as(sb, node, cfg, &UserInfo::masters(&format!("agent-{node}")))
    }

    /// [`Machine::start`] with the agent authenticated as `user`, e.g. its own service
    /// account's projected token ([`UserInfo::agent`]).
    pub fn start_as(sb: &Sandbox, node: &str, cfg: AgentConfig, user: &UserInfo) -> Machine {
        // On the agent's clock, as update-agent builds its client.
        let client =
            shell::clock::client(sb.config_for(user).expect("config"), &cfg.clock).expect("client");
        let host = sb.host(node).expect("a simulated node");
        let state = Arc::new(Mutex::new(MachineState {
            agent: Some(spawn_agent(&client, &host, &cfg)),
            starts: 1,
        }));
        let mut lifecycle = sb.lifecycle();
        let supervisor = tokio::spawn({
            let (node, client, host, cfg, state) = (
                node.to_string(),
                client.clone(),
                host.clone(),
                cfg.clone(),
                state.clone(),
            );
            async move {
                while let Ok(ev) = lifecycle.recv().await {
                    let mut st = state.lock().unwrap();
                    match ev {
                        NodeLifecycle::RebootStarted(n) if n == node => {
                            if let Some((h, _)) = st.agent.take() {
                                h.abort();
                            }
                        }
                        NodeLifecycle::Up(n) if n == node => {
                            if let Some((h, _)) = st.agent.take() {
                                h.abort();
                            }
                            st.agent = Some(spawn_agent(&client, &host, &cfg));
                            st.starts += 1;
                        }
                        _ => {}
                    }
                }
            }
        });
        Machine {
            node: node.to_string(),
            client,
            host,
            cfg,
            state,
            supervisor,
        }
    }

    /// Kills the agent (as `kubectl delete pod` would, without a graceful stop).
    pub fn kill_agent(&self) {
        if let Some((h, _)) = self.state.lock().unwrap().agent.take() {
            h.abort();
        }
    }

    /// Starts a fresh agent (the DaemonSet recreating its pod).
    pub fn start_agent(&self) {
        let mut st = self.state.lock().unwrap();
        if let Some((h, _)) = st.agent.take() {
            h.abort();
        }
        st.agent = Some(spawn_agent(&self.client, &self.host, &self.cfg));
        st.starts += 1;
    }

    /// How many agents were started on this machine.
    pub fn starts(&self) -> u32 {
        self.state.lock().unwrap().starts
    }

    /// Stops the agent gracefully and waits for it to return.
    pub async fn stop(&self) {
        let agent = self.state.lock().unwrap().agent.take();
        if let Some((h, token)) = agent {
            token.cancel();
            tokio::time::timeout(STEP, h)
                .await
                .expect("the agent did not stop")
                .expect("the agent task failed");
        }
    }

    pub fn host(&self) -> &SimHost {
        &self.host
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.supervisor.abort();
        if let Some((h, _)) = self.state.lock().unwrap().agent.take() {
            h.abort();
        }
    }
}

/// Polls a plain predicate (for state the API does not show, such as a SimHost's reboot
/// count) until it holds; panics after [`STEP`].
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    let fut = async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// `namespace/name` of the pods bound to `node`, not counting DaemonSet pods.
pub async fn pods_on(client: &Client, node: &str) -> Vec<String> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client.clone());
    let list = pods
        .list(&kube::api::ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .expect("list pods");
    list.items
        .iter()
        .filter(|p| !p.owner_references().iter().any(|o| o.kind == "DaemonSet"))
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .collect()
}

/// Waits until exactly `n` pods matching `selector` (all namespaces) exist, all Ready and
/// none terminating. (The sandbox's `wait_pods_ready` is true while a new workload has no
/// pods yet.)
pub async fn wait_ready_pods(client: &Client, selector: &str, n: usize) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client.clone());
    let lp = kube::api::ListParams::default().labels(selector);
    let fut = async {
        loop {
            if let Ok(list) = pods.list(&lp).await {
                let ready = list
                    .items
                    .iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                    })
                    .count();
                if ready == n && list.items.len() == n {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {n} ready pods ({selector:?})"));
}
