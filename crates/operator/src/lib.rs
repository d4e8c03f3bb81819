//! update-operator: decides which Flatcar nodes may reboot, leader-elected
//! through a Lease; a drop-in replacement for FLUO's update-operator.
//!
//! [`run`] is the whole operator, usable in-process (several replicas in one
//! process, no globals): it campaigns for the Lease ([`lease`]) and, while it
//! leads, keeps a reflector of Nodes, runs [`protocol::operator::decide`] on
//! every change and at the next window edge, and writes the resulting patches
//! ([`reconcile`]). [`cli`] turns FLUO's flags into a [`Config`].

pub mod cli;
pub mod convert;
pub mod lease;
mod reconcile;

use std::sync::Arc;

use protocol::operator::OperatorConfig;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use lease::{Leadership, LeaseTiming};

/// FLUO's leader election lock name (`leaderElectionResourceName`).
pub const DEFAULT_LEASE_NAME: &str = "flatcar-linux-update-operator-lock";

/// The field manager our writes are recorded under.
pub const FIELD_MANAGER: &str = "update-operator";

/// Everything the operator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// What to decide: max rebooting nodes, window, hook annotations.
    pub operator: OperatorConfig,
    /// Namespace of the Lease (`POD_NAMESPACE`).
    pub namespace: String,
    /// Name of the Lease (`--lease-name`).
    pub lease_name: String,
    /// This replica's holder identity; must be unique per replica.
    pub identity: String,
    /// Leader election timings.
    pub lease: LeaseTiming,
    /// Field manager of our patches and Lease writes.
    pub field_manager: String,
}

impl Config {
    /// A config with FLUO's lease name, default timings and a fresh identity
    /// ([`default_identity`]).
    pub fn new(namespace: impl Into<String>, operator: OperatorConfig) -> Config {
        Config {
            operator,
            namespace: namespace.into(),
            lease_name: DEFAULT_LEASE_NAME.to_string(),
            identity: default_identity(),
            lease: LeaseTiming::default(),
            field_manager: FIELD_MANAGER.to_string(),
        }
    }

    /// Checks what [`run`] relies on.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.namespace.is_empty() {
            anyhow::bail!("the Lease namespace (POD_NAMESPACE) must not be empty");
        }
        if self.lease_name.is_empty() {
            anyhow::bail!("--lease-name must not be empty");
        }
        if self.identity.is_empty() {
            anyhow::bail!("the holder identity must not be empty");
        }
        self.lease
            .validate()
            .map_err(|e| anyhow::anyhow!("leader election timing: {e}"))?;
        Ok(())
    }
}

/// This machine's host name (the pod name in a cluster, as FLUO's lock ID)
/// plus a random suffix, so two replicas in one pod or process never share it.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "update-operator".to_string());
    let suffix: u32 = rand::rng().random();
    format!("{host}_{suffix:08x}")
}

/// Runs the operator until `shutdown` is cancelled: campaigns for the Lease,
/// acts only while it leads, and releases the Lease on shutdown so a standby
/// takes over within seconds. Returns an error for an invalid `cfg` or if the
/// leader's work fails.
pub async fn run(
    client: kube::Client,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    cfg.validate()?;
    info!(
        identity = %cfg.identity,
        lease = %format!("{}/{}", cfg.namespace, cfg.lease_name),
        max_rebooting_nodes = %cfg.operator.max_rebooting,
        reboot_window = %cfg.operator.window.map_or_else(|| "always open".to_string(), |w| w.to_string()),
        before_reboot_annotations = ?cfg.operator.before_reboot_annotations,
        after_reboot_annotations = ?cfg.operator.after_reboot_annotations,
        "update-operator starting"
    );
    let elector = lease::Elector::new(
        client.clone(),
        &cfg.namespace,
        &cfg.lease_name,
        &cfg.identity,
        cfg.lease,
        &cfg.field_manager,
    );
    let cfg = Arc::new(cfg);
    lease::run_elected(elector, shutdown, move |leadership| {
        reconcile::lead(client.clone(), cfg.clone(), leadership)
    })
    .await
}
