//! In-process `update-operator` replicas (`operator::run`).

use std::time::Duration;

use operator::{Config, LeaseTiming};
use protocol::operator::OperatorConfig;
use sandbox::{Sandbox, UserInfo};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The namespace of the operator's Lease for [`Replica::start`].
pub const LEASE_NAMESPACE: &str = "kube-system";

/// Fast leader election for tests: 3 s lease, 2 s renew deadline, 250 ms retry.
pub fn fast_lease() -> LeaseTiming {
    LeaseTiming {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(250),
    }
}

/// An operator config with `max` nodes at once, no window, no hooks.
/// Who holds the operator's Lease in `namespace` (read from the store: no request); None
/// when no one does or it was released.
pub fn lease_holder(sb: &Sandbox, namespace: &str) -> Option<String> {
    let leases = sandbox::resources::find("coordination.k8s.io", "v1", "leases")?;
    let lease = sb
        .store()
        .lock()
        .get(leases, namespace, operator::DEFAULT_LEASE_NAME)?;
    lease
        .pointer("/spec/holderIdentity")
        .and_then(|v| v.as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

pub fn op_config(max: u32) -> OperatorConfig {
    OperatorConfig {
        max_rebooting: protocol::operator::MaxRebooting::Count(max),
        ..Default::default()
    }
}

/// One in-process operator replica.
pub struct Replica {
    pub identity: String,
    pub token: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    /// Starts `operator::run` as `user` (also its identity and audit name), with
    /// its Lease in [`LEASE_NAMESPACE`] and [`fast_lease`] timings.
    pub fn start(sb: &Sandbox, user: &str, op: OperatorConfig) -> Replica {
        let mut cfg = Config::new(LEASE_NAMESPACE, op);
        cfg.identity = user.to_string();
        cfg.lease = fast_lease();
        Replica::start_with(sb, user, cfg).expect("operator starts")
    }

    /// Starts `operator::run` with `cfg`, as the test user `user` (in
    /// `system:masters`, named so in the audit record). The client is configured
    /// as `update-operator`'s own (kube's defaults).
    pub fn start_with(sb: &Sandbox, user: &str, cfg: Config) -> anyhow::Result<Replica> {
        Replica::start_as(sb, &UserInfo::masters(user), cfg)
    }

    /// Starts `operator::run` with `cfg`, authenticated as `user`, e.g.
    /// [`UserInfo::operator`], the service account deploy/ grants.
    pub fn start_as(sb: &Sandbox, user: &UserInfo, cfg: Config) -> anyhow::Result<Replica> {
        let client = sb.client_for(user)?;
        let token = CancellationToken::new();
        let identity = cfg.identity.clone();
        let handle = tokio::spawn(operator::run(client, cfg, token.clone()));
        Ok(Replica {
            identity,
            token,
            handle,
        })
    }

    /// Whether `operator::run` has returned (it should not before `stop`).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Graceful shutdown (releases the Lease); returns run()'s result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        match tokio::time::timeout(Duration::from_secs(20), self.handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(anyhow::anyhow!("the operator task failed: {e}")),
            Err(_) => Err(anyhow::anyhow!("the operator did not stop within 20 s")),
        }
    }

    /// Abrupt death: the task is aborted, nothing is released.
    pub fn kill(self) {
        self.handle.abort();
    }
}
