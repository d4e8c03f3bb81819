//! A whole simulated cluster: a [`Sandbox`] with nodes (optionally spread over
//! zones) and Deployments guarded by PodDisruptionBudgets, one real agent per
//! node ([`Fleet`]), a real operator ([`Replica`]), simulated hooks
//! ([`Hooks`]) and a [`Monitor`].

use std::time::Duration;

use anyhow::Context;
use sandbox::{Sandbox, SimHost};
use serde_json::json;

use crate::agents::{Fleet, agent_config};
use crate::hooks::Hooks;
use crate::monitor::Monitor;
use crate::operators::Replica;

/// The namespace the operator's Lease lives in.
pub const NAMESPACE: &str = "reboot-coordinator";
/// The namespace of the workloads.
pub const WORKLOAD_NAMESPACE: &str = "demo";
/// The zone label nodes are spread over.
pub const ZONE_LABEL: &str = crate::monitor::ZONE_LABEL;
/// The version [`Cluster::offer_updates`] offers.
pub const NEW_VERSION: &str = "4152.2.0";
/// Replicas per Deployment (each with a PDB of maxUnavailable 1).
pub const REPLICAS_PER_WORKLOAD: u32 = 5;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of nodes, named `node-01`, `node-02`, ...
    pub nodes: u32,
    /// Spread the nodes round-robin over `zone-1..zone-N` (0: no zone label).
    pub zones: u32,
    /// Workload pods per node, in Deployments of [`REPLICAS_PER_WORKLOAD`]
    /// with a PodDisruptionBudget of maxUnavailable 1 each.
    pub pods_per_node: u32,
    /// The pods' terminationGracePeriodSeconds (how long an evicted pod takes to go).
    pub drain_seconds: u32,
    /// How long a reboot keeps a node NotReady (the sandbox's `reboot_duration`).
    pub reboot: Duration,
    /// Simulated hooks approve their annotations after this long (None: no
    /// simulated hooks; someone else must set them).
    pub hook_delay: Option<Duration>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            nodes: 20,
            zones: 0,
            pods_per_node: 10,
            drain_seconds: 2,
            reboot: Duration::from_secs(3),
            hook_delay: Some(Duration::from_secs(1)),
        }
    }
}

impl ClusterSpec {
    /// The sandbox options for this spec: plain HTTP on `listen`, HTTPS on a free
    /// port of the same address, RBAC enforced ([`Cluster::start`] loads deploy/'s RBAC and
    /// admission policy).
    pub fn sandbox_options(&self, listen: std::net::SocketAddr) -> sandbox::Options {
        sandbox::Options {
            listen,
            tls_listen: std::net::SocketAddr::new(listen.ip(), 0),
            reboot_duration: self.reboot,
            authorization: sandbox::authz::Mode::Rbac,
            ..Default::default()
        }
    }

    /// Node names, zero-padded to sort well.
    pub fn node_names(&self) -> Vec<String> {
        let width = self.nodes.to_string().len().max(2);
        (1..=self.nodes)
            .map(|i| format!("node-{i:0width$}"))
            .collect()
    }
}

/// A running simulated cluster. Dropping it stops everything.
pub struct Cluster {
    pub names: Vec<String>,
    pub monitor: Monitor,
    pub operator: Replica,
    pub fleet: Fleet,
    hooks: Option<Hooks>,
    // Last, so it is dropped after the clients of everything above.
    pub sandbox: Sandbox,
}

impl Cluster {
    /// Populates `sb` (started with [`ClusterSpec::sandbox_options`]) and starts
    /// everything: the operator runs with `operator` (its Lease namespace is
    /// created if missing), one agent per node as a DaemonSet would, hooks for
    /// the operator's hook annotations. Returns once every pod runs and every
    /// agent has initialised its node.
    pub async fn start(
        sb: Sandbox,
        spec: &ClusterSpec,
        operator: operator::Config,
    ) -> anyhow::Result<Cluster> {
        let grace = Duration::from_secs(600)
            .max(Duration::from_secs(3 * u64::from(spec.drain_seconds) + 60));
        Cluster::start_with(sb, spec, operator, move |node: &str, host: &SimHost| {
            let mut c = agent_config(node, host);
            c.grace_period = grace;
            c
        })
        .await
    }

    /// [`Cluster::start`] with the agents' configuration from `agent`.
    pub async fn start_with(
        sb: Sandbox,
        spec: &ClusterSpec,
        operator: operator::Config,
        agent: impl Fn(&str, &SimHost) -> agent::AgentConfig + Send + Sync + 'static,
    ) -> anyhow::Result<Cluster> {
        // The operator and the agents run with deploy/'s service accounts, RBAC and
        // admission policy: a permission the code needs and deploy/ lacks, or a write the
        // policy refuses, fails here as in a cluster.
        sb.load_shipped_rbac()
            .context("loading deploy/'s RBAC into the sandbox")?;
        sb.load_shipped_admission()
            .context("loading deploy/admission's policy into the sandbox")?;
        let ns = operator.namespace.clone();
        if sb
            .store()
            .lock()
            .get(sandbox::store::ns_resource(), "", &ns)
            .is_none()
        {
            sb.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))?;
        }
        let names = spec.node_names();
        for (i, name) in names.iter().enumerate() {
            let zone = (spec.zones > 0).then(|| format!("zone-{}", i as u32 % spec.zones + 1));
            let labels: Vec<(&str, &str)> = zone.iter().map(|z| (ZONE_LABEL, z.as_str())).collect();
            sb.add_node(name, &labels)?;
        }
        let mut left = spec.nodes * spec.pods_per_node;
        let mut n = 0;
        while left > 0 {
            let replicas = left.min(REPLICAS_PER_WORKLOAD);
            n += 1;
            sb.add_workload(
                WORKLOAD_NAMESPACE,
                &format!("web-{n}"),
                replicas,
                Some(1),
                spec.drain_seconds,
            )?;
            left -= replicas;
        }
        let patience = Duration::from_secs(30) + Duration::from_millis(20 * u64::from(spec.nodes));
        anyhow::ensure!(
            sb.wait_pods_ready(patience).await,
            "the workloads' pods did not all run within {patience:?}"
        );
        let monitor = Monitor::try_start(sb.client_as("monitor")?, &[]).await?;
        let fleet = Fleet::try_start(&sb, &names, agent)?;
        let hooks = spec.hook_delay.and_then(|delay| {
            let o = &operator.operator;
            (!o.before_reboot_annotations.is_empty() || !o.after_reboot_annotations.is_empty())
                .then(|| {
                    sb.client_as("hooks").map(|c| {
                        Hooks::start(
                            c,
                            o.before_reboot_annotations.clone(),
                            o.after_reboot_annotations.clone(),
                            delay,
                        )
                    })
                })
        });
        let hooks = hooks.transpose()?;
        let operator = Replica::start_as(&sb, &sandbox::UserInfo::operator(), operator)?;
        let cluster = Cluster {
            names,
            monitor,
            operator,
            fleet,
            hooks,
            sandbox: sb,
        };
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let s = cluster.monitor.snapshot();
            if s.nodes.len() == cluster.names.len() && s.nodes.iter().all(|n| n.agent_seen) {
                break;
            }
            anyhow::ensure!(
                !cluster.operator.is_finished(),
                "the operator stopped while starting"
            );
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the agents did not initialise their nodes within {patience:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(cluster)
    }

    /// Makes update_engine on every node download `version` and ask for a reboot.
    pub async fn offer_updates(&self, version: &str) {
        let hosts: Vec<SimHost> = self
            .names
            .iter()
            .filter_map(|n| self.sandbox.host(n))
            .collect();
        futures::future::join_all(hosts.iter().map(|h| h.offer_update(version))).await;
    }

    /// Stops the operator (releasing its Lease) and the agents, then the sandbox.
    pub async fn stop(self) -> anyhow::Result<()> {
        drop(self.hooks);
        let r = self.operator.stop().await;
        self.fleet.stop().await;
        drop(self.monitor);
        drop(self.sandbox);
        r
    }
}
