//! An in-process Kubernetes API server over real HTTP, with simulated kubelets, control-plane
//! controllers and hosts. Our kube-rs code and the real `kubectl` use it as they would a cluster.
//!
//! It knows nothing about the reboot protocol's annotations: it is a Kubernetes, not a helper.

pub mod api;
pub mod audit;
pub mod controllers;
pub mod error;
pub mod events;
pub mod eviction;
pub mod faults;
pub mod identity;
pub mod logs;
pub mod openapi;
pub mod protobuf;
pub mod resources;
pub mod scale;
pub mod selector;
pub mod sim;
pub mod store;
pub mod strategic;
pub mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::{ErrorRule, FaultPlan};
pub use sim::{NodeLifecycle, SimHost};
pub use store::Store;

/// How the sandbox is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Seed for fault injection and simulated randomness.
    pub seed: u64,
    /// Watch events kept per resource; a watch from further back gets 410 Gone.
    pub watch_history: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// From a pod bound to a Ready node to it running Ready.
    pub pod_start: Duration,
    /// How long a simulated reboot keeps a node NotReady.
    pub reboot_duration: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(1),
            pod_start: Duration::from_millis(300),
            reboot_duration: Duration::from_secs(1),
        }
    }
}

/// A running sandbox. Dropping it stops the server and the simulation.
pub struct Sandbox {
    addr: SocketAddr,
    state: api::Shared,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    pub(crate) sim: Arc<sim::Sim>,
    kubeconfig: tempfile::TempDir,
}

impl Sandbox {
    /// Starts the API server and the simulated control plane, with the usual namespaces.
    pub async fn start(opts: Options) -> anyhow::Result<Sandbox> {
        let store = Store::new(opts.watch_history);
        {
            let mut st = store.lock();
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                st.create(
                    store::ns_resource(),
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )
                .map_err(|e| anyhow::anyhow!(e.message))?;
            }
        }
        let state = Arc::new(api::ApiState {
            store: store.clone(),
            faults: faults::Faults::new(opts.seed),
            bookmark_interval: opts.bookmark_interval,
            audit: audit::Audit::default(),
        });
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let app = api::router(state.clone());
        let c = cancel.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await;
        });
        let ctrl = tokio::spawn(controllers::run(
            store.clone(),
            controllers::SimTiming {
                pod_start: opts.pod_start,
            },
        ));
        let sim = Arc::new(sim::Sim::new(store.clone(), opts.reboot_duration));
        let kubeconfig = tempfile::tempdir()?;
        std::fs::write(
            kubeconfig.path().join("config"),
            kubeconfig_yaml(&format!("http://{addr}")),
        )?;
        Ok(Sandbox {
            addr,
            state,
            cancel,
            tasks: vec![server, ctrl],
            sim,
            kubeconfig,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API server's URL, for `kubectl --server`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file pointing at this sandbox.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig.path().join("config")
    }

    /// A kube client for this sandbox. `user` shows in the audit record (X-Sandbox-User), so
    /// tests can tell the operator's requests from an agent's.
    pub fn client_as(&self, user: &str) -> anyhow::Result<kube::Client> {
        let mut config = kube::Config::new(self.url().parse()?);
        config.headers.push((
            axum::http::header::HeaderName::from_static("x-sandbox-user"),
            axum::http::HeaderValue::from_str(user)?,
        ));
        config.read_timeout = Some(Duration::from_secs(330));
        Ok(kube::Client::try_from(config)?)
    }

    pub fn client(&self) -> kube::Client {
        self.client_as("test").expect("client for a local sandbox")
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn faults(&self) -> &faults::Faults {
        &self.state.faults
    }

    pub fn audit(&self) -> &audit::Audit {
        &self.state.audit
    }

    /// Adds a Ready node with a kubelet and a simulated host; returns the host.
    pub fn add_node(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<SimHost> {
        self.sim.add_node(name, labels)
    }

    /// The simulated host of a node added with [`Sandbox::add_node`].
    pub fn host(&self, node: &str) -> Option<SimHost> {
        self.sim.host(node)
    }

    /// Reboots, disconnects and reconnects of simulated nodes, as they happen.
    pub fn lifecycle(&self) -> tokio::sync::broadcast::Receiver<NodeLifecycle> {
        self.sim.lifecycle()
    }

    /// A Deployment of `replicas` pods with a PodDisruptionBudget allowing `max_unavailable`.
    pub fn add_workload(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
        max_unavailable: Option<u32>,
        grace_seconds: u32,
    ) -> anyhow::Result<()> {
        let r = |p| resources::find("apps", "v1", p).expect("known");
        let mut st = self.store().lock();
        if st.get(store::ns_resource(), "", ns).is_none() {
            st.create(
                store::ns_resource(),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .map_err(|e| anyhow::anyhow!(e.message))?;
        }
        let labels = json!({"app": name});
        st.create(
            r("deployments"),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"terminationGracePeriodSeconds": grace_seconds, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
                    },
                },
            }),
        )
        .map_err(|e| anyhow::anyhow!(e.message))?;
        if let Some(max) = max_unavailable {
            st.create(
                eviction::pdbs(),
                json!({
                    "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"maxUnavailable": max, "selector": {"matchLabels": labels}},
                }),
            )
            .map_err(|e| anyhow::anyhow!(e.message))?;
        }
        Ok(())
    }

    /// Applies an object (JSON) directly to the store, as if created by a client.
    pub fn create(&self, obj: Value) -> anyhow::Result<Value> {
        let api_version = obj["apiVersion"].as_str().unwrap_or("");
        let kind = obj["kind"].as_str().unwrap_or("");
        let r = resources::by_kind(api_version, kind)
            .with_context(|| format!("unknown kind {api_version}/{kind}"))?;
        let created = self
            .store()
            .lock()
            .create(r, obj)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        Ok((*created).clone())
    }

    /// Waits until every workload has all its pods and every pod runs Ready, or the timeout passes.
    pub async fn wait_pods_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let r = |p| resources::find("apps", "v1", p).expect("known");
        let full = |o: &Value, want: &str, have: &str| {
            o.pointer(want).and_then(Value::as_i64).unwrap_or(1)
                == o.pointer(have).and_then(Value::as_i64).unwrap_or(-1)
        };
        loop {
            let ok = {
                let st = self.store().lock();
                st.iter(eviction::pods(), None)
                    .all(|(_, p)| eviction::is_ready(p))
                    && st
                        .iter(r("deployments"), None)
                        .all(|(_, d)| full(d, "/spec/replicas", "/status/readyReplicas"))
                    && st
                        .iter(r("replicasets"), None)
                        .all(|(_, d)| full(d, "/spec/replicas", "/status/readyReplicas"))
                    && st.iter(r("daemonsets"), None).all(|(_, d)| {
                        full(d, "/status/desiredNumberScheduled", "/status/numberReady")
                    })
            };
            if ok {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server and the simulation.
    pub fn shutdown(&mut self) {
        self.cancel.cancel();
        self.sim.shutdown();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A kubeconfig for a plain-HTTP server with no credentials.
pub fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {server}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\n    namespace: default\ncurrent-context: sandbox\nusers:\n- name: sandbox\n  user: {{}}\n"
    )
}

/// Writes a kubeconfig for `server` to `path`.
pub fn write_kubeconfig(path: &Path, server: &str) -> std::io::Result<()> {
    std::fs::write(path, kubeconfig_yaml(server))
}
