//! An in-process Kubernetes API server over real HTTP, with simulated kubelets, control-plane
//! controllers and hosts. Our kube-rs code and the real `kubectl` use it as they would a cluster.
//!
//! It knows nothing about the reboot protocol's annotations: it is a Kubernetes, not a helper.

pub mod admission;
pub mod api;
pub mod audit;
pub mod authz;
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
pub mod reviews;
pub mod scale;
pub mod selector;
pub mod sim;
pub mod store;
pub mod strategic;
pub mod table;
pub mod testing;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::{ErrorRule, FaultPlan};
pub use identity::UserInfo;
pub use sim::{NodeLifecycle, SimHost};
pub use store::Store;

/// deploy/core's namespace, service accounts and RBAC, compiled in so the sandbox enforces the
/// policy users install.
pub const SHIPPED_RBAC: &[&str] = &[
    include_str!("../../../deploy/core/00-namespace.yaml"),
    include_str!("../../../deploy/core/update-operator-sa.yaml"),
    include_str!("../../../deploy/core/update-agent-sa.yaml"),
    include_str!("../../../deploy/core/rbac.yaml"),
];

/// The admission policy this repository ships (deploy/admission).
pub const SHIPPED_ADMISSION: &str = include_str!("../../../deploy/admission/node-policy.yaml");

/// How the sandbox is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to serve plain HTTP on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Address to serve HTTPS on, with the sandbox's own CA; port 0 picks a free one.
    pub tls_listen: SocketAddr,
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
    /// From a VolumeAttachment created to it attached (`status.attached`).
    pub volume_attach: Duration,
    /// From the last pod using a volume on a node gone to its VolumeAttachment detached.
    pub volume_detach: Duration,
    /// The authorizer; see [`authz::Mode`].
    pub authorization: authz::Mode,
    /// The runtime the API server (its connections, requests and watches) runs on; by
    /// default the caller's, with the simulation. A runtime of its own keeps requests from
    /// queueing behind the simulated machines' work, as a real API server runs apart from
    /// the machines it serves.
    pub api_runtime: Option<tokio::runtime::Handle>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(1),
            pod_start: Duration::from_millis(300),
            reboot_duration: Duration::from_secs(1),
            volume_attach: Duration::from_secs(1),
            volume_detach: Duration::from_secs(2),
            authorization: authz::Mode::default(),
            api_runtime: None,
        }
    }
}

/// A running sandbox. Dropping it stops the server and the simulation.
pub struct Sandbox {
    addr: SocketAddr,
    tls_addr: SocketAddr,
    ca_pem: String,
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
        if opts.authorization == authz::Mode::Rbac {
            authz::bootstrap(&store).map_err(|e| anyhow::anyhow!(e.message))?;
        }
        let state = Arc::new(api::ApiState {
            store: store.clone(),
            faults: faults::Faults::new(opts.seed),
            bookmark_interval: opts.bookmark_interval,
            audit: audit::Audit::default(),
            admission: Default::default(),
            tokens: identity::Tokens::default(),
            authz: opts.authorization,
        });
        let api_runtime = opts
            .api_runtime
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        // Bound on the API's runtime: a listener belongs to the runtime that registered it.
        let bind = |at: SocketAddr| {
            let bound = api_runtime.spawn(tokio::net::TcpListener::bind(at));
            async move {
                bound
                    .await?
                    .with_context(|| format!("cannot listen on {at}"))
            }
        };
        let listener = bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let tls_listener = bind(opts.tls_listen).await?;
        let tls_addr = tls_listener.local_addr()?;
        let tls = tls::Tls::generate()?;
        let cancel = CancellationToken::new();
        let app = api::router(state.clone());
        let c = cancel.clone();
        let plain = app.clone();
        // Go's net package (kube-apiserver's) sets TCP_NODELAY on every connection: without
        // it, back-to-back watch events and small answers wait for delayed ACKs (40 ms).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = api_runtime.spawn(async move {
            let _ = axum::serve(listener, plain)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await;
        });
        let tls_server =
            api_runtime.spawn(tls::serve(tls_listener, tls.config, app, cancel.clone()));
        let ctrl = tokio::spawn(controllers::run(
            store.clone(),
            controllers::SimTiming {
                pod_start: opts.pod_start,
                volume_attach: opts.volume_attach,
                volume_detach: opts.volume_detach,
            },
        ));
        let sim = Arc::new(sim::Sim::new(store.clone(), opts.reboot_duration));
        let kubeconfig = tempfile::tempdir()?;
        let sb = Sandbox {
            addr,
            tls_addr,
            ca_pem: tls.ca_pem,
            state,
            cancel,
            tasks: vec![server, tls_server, ctrl],
            sim,
            kubeconfig,
        };
        sb.write_kubeconfig_for(&UserInfo::admin(), &sb.kubeconfig_path())?;
        Ok(sb)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The plain-HTTP URL, for `kubectl --server` (anonymous: kubectl sends credentials
    /// only over TLS).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The HTTPS endpoint's address.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// The HTTPS URL; its certificate is signed by [`Sandbox::ca_pem`].
    pub fn https_url(&self) -> String {
        format!("https://{}", self.tls_addr)
    }

    /// The sandbox's CA certificate (PEM), generated at start.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes what a pod running as `user` finds in `/var/run/secrets/kubernetes.io/serviceaccount`
    /// into `dir` (created if missing): `token`, `ca.crt` and `namespace`. Returns the
    /// environment a pod gets with it, `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`,
    /// naming this sandbox's HTTPS endpoint. With both, kube-rs's in-cluster configuration
    /// (`kube::Config::incluster`) talks to the sandbox as `user`.
    pub fn service_account_dir(
        &self,
        user: &UserInfo,
        dir: &Path,
    ) -> std::io::Result<Vec<(String, String)>> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("token"), self.token(user))?;
        std::fs::write(dir.join("ca.crt"), &self.ca_pem)?;
        let ns = user.service_account_name().map_or("default", |(ns, _)| ns);
        std::fs::write(dir.join("namespace"), ns)?;
        Ok(vec![
            (
                "KUBERNETES_SERVICE_HOST".into(),
                self.tls_addr.ip().to_string(),
            ),
            (
                "KUBERNETES_SERVICE_PORT".into(),
                self.tls_addr.port().to_string(),
            ),
        ])
    }

    /// A kubeconfig file pointing at this sandbox, as the admin ([`UserInfo::admin`]).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig.path().join("config")
    }

    /// The bearer token of `user`: the same identity always gets the same token.
    pub fn token(&self, user: &UserInfo) -> String {
        self.state.tokens.issue(user)
    }

    /// A kube client authenticated as `user` (its bearer token).
    pub fn client_for(&self, user: &UserInfo) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.config_for(user)?)?)
    }

    /// The kube config [`Sandbox::client_for`] uses, for callers that change settings: the
    /// plain-HTTP endpoint (cheaper than TLS for the many clients of a test) with the token.
    pub fn config_for(&self, user: &UserInfo) -> anyhow::Result<kube::Config> {
        let mut config = kube::Config::new(self.url().parse()?);
        config.auth_info.token = Some(self.token(user).into());
        config.read_timeout = Some(Duration::from_secs(330));
        Ok(config)
    }

    /// A kube client as a test user named `user` in `system:masters` ([`UserInfo::masters`]):
    /// allowed everything, and told apart from other clients in the audit record.
    pub fn client_as(&self, user: &str) -> anyhow::Result<kube::Client> {
        self.client_for(&UserInfo::masters(user))
    }

    /// A client as the test user `test` in `system:masters`.
    pub fn client(&self) -> kube::Client {
        self.client_as("test").expect("client for a local sandbox")
    }

    /// Writes a kubeconfig that authenticates as `user` to `path`: the HTTPS endpoint with
    /// the sandbox's CA inline, and `user`'s bearer token.
    pub fn write_kubeconfig_for(&self, user: &UserInfo, path: &Path) -> std::io::Result<()> {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let token = self.token(user);
        let server = self.https_url();
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\n    namespace: default\ncurrent-context: sandbox\nusers:\n- name: sandbox\n  user:\n    token: {token}\n"
            ),
        )
    }

    /// Writes one kubeconfig per identity into `dir` (created if missing): `admin`,
    /// `update-operator` and `update-agent-<node>` for each of `nodes`. Returns the paths.
    pub fn write_kubeconfig_dir<S: AsRef<str>>(
        &self,
        dir: &Path,
        nodes: &[S],
    ) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut ids = vec![
            ("admin".to_string(), UserInfo::admin()),
            ("update-operator".to_string(), UserInfo::operator()),
        ];
        for n in nodes {
            let n = n.as_ref();
            ids.push((format!("update-agent-{n}"), UserInfo::agent(n)));
        }
        let mut out = Vec::new();
        for (file, user) in ids {
            let p = dir.join(file);
            self.write_kubeconfig_for(&user, &p)?;
            out.push(p);
        }
        Ok(out)
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
        self.workload(ns, name, replicas, max_unavailable, grace_seconds, None)
    }

    /// [`Sandbox::add_workload`] whose pods mount the PersistentVolumeClaim `claim` (shared by
    /// all of them, as ReadWriteMany), so each node running one has the volume attached and in
    /// use (see [`controllers`]).
    pub fn add_workload_with_claim(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
        max_unavailable: Option<u32>,
        grace_seconds: u32,
        claim: &str,
    ) -> anyhow::Result<()> {
        self.workload(
            ns,
            name,
            replicas,
            max_unavailable,
            grace_seconds,
            Some(claim),
        )
    }

    fn workload(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
        max_unavailable: Option<u32>,
        grace_seconds: u32,
        claim: Option<&str>,
    ) -> anyhow::Result<()> {
        let r = |p| resources::find("apps", "v1", p).expect("known");
        let mut pod_spec = json!({
            "terminationGracePeriodSeconds": grace_seconds,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
        });
        if let Some(claim) = claim {
            pod_spec["volumes"] =
                json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
            pod_spec["containers"][0]["volumeMounts"] =
                json!([{"name": "data", "mountPath": "/data"}]);
        }
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
                        "spec": pod_spec,
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

    /// Creates every object of a multi-document YAML text that does not exist yet (same
    /// kind, namespace and name), as `kubectl create -f` would with `--save-config` skipped.
    pub fn create_yaml(&self, text: &str) -> anyhow::Result<()> {
        use serde::Deserialize;
        for doc in serde_yaml::Deserializer::from_str(text) {
            let obj = Value::deserialize(doc).context("YAML document")?;
            if obj.is_null() {
                continue;
            }
            let r = resources::by_kind(
                obj["apiVersion"].as_str().unwrap_or(""),
                obj["kind"].as_str().unwrap_or(""),
            )
            .with_context(|| format!("unknown kind in {obj}"))?;
            let m = &obj["metadata"];
            let exists = self
                .store()
                .lock()
                .get(
                    r,
                    m["namespace"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or(""),
                )
                .is_some();
            if !exists {
                self.create(obj)?;
            }
        }
        Ok(())
    }

    /// Loads the RBAC this repository ships (deploy/core: the namespace, both service
    /// accounts, the Roles, ClusterRoles and bindings), as `kubectl apply -k deploy/` would;
    /// what already exists is kept. Enforced when the sandbox runs with [`authz::Mode::Rbac`].
    pub fn load_shipped_rbac(&self) -> anyhow::Result<()> {
        for text in SHIPPED_RBAC {
            self.create_yaml(text)?;
        }
        Ok(())
    }

    /// Loads the admission policy this repository ships (deploy/admission: an agent may write
    /// only its own Node, and there only our keys and a cordon), as `kubectl apply -k
    /// deploy/admission/` would. Enforced on every write from then on (crate::admission).
    pub fn load_shipped_admission(&self) -> anyhow::Result<()> {
        self.create_yaml(SHIPPED_ADMISSION)
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

/// A kubeconfig for a plain-HTTP server with no credentials (an anonymous client).
pub fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {server}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\n    namespace: default\ncurrent-context: sandbox\nusers:\n- name: sandbox\n  user: {{}}\n"
    )
}

/// Writes a kubeconfig for `server` to `path`.
pub fn write_kubeconfig(path: &Path, server: &str) -> std::io::Result<()> {
    std::fs::write(path, kubeconfig_yaml(server))
}
