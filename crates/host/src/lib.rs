//! What the update-agent needs from its host: update_engine's status and a way
//! to reboot. [`Host`] is implemented over D-Bus here ([`DbusHost`]) and by the
//! sandbox's simulated host, so the agent's logic is the same in both.

mod dbus;
#[cfg(feature = "testing")]
pub mod testing;

use futures::stream::BoxStream;

pub use dbus::DbusHost;
pub use protocol::update_engine::UpdateStatus;

/// Host-side operations of the update-agent.
pub trait Host: Send + Sync + 'static {
    /// update_engine's current status (GetStatus), then every later status
    /// (StatusUpdate signals), in order. The stream ends only if the host
    /// connection is lost (the agent then reconnects with backoff).
    fn status_updates(
        &self,
    ) -> impl Future<Output = Result<BoxStream<'static, UpdateStatus>, HostError>> + Send;

    /// Ask the host to reboot (logind `Reboot(false)`). Returns once the
    /// request was accepted; the error is surfaced, never dropped.
    fn reboot(&self) -> impl Future<Output = Result<(), HostError>> + Send;
}

/// Why a host operation failed. Messages are complete on their own (they
/// include the underlying error) because the agent writes them on the Node.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot connect to D-Bus at {address}: {error}")]
    Connect { address: String, error: zbus::Error },
    #[error("cannot subscribe to update_engine signals: {0}")]
    Subscribe(zbus::Error),
    #[error("update_engine GetStatus failed: {0}")]
    GetStatus(zbus::Error),
    #[error("logind Reboot failed: {0}")]
    Reboot(zbus::Error),
    /// For hosts that are not D-Bus, e.g. the sandbox's simulated host.
    #[error("{0}")]
    Other(String),
}
