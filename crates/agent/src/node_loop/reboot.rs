//! The reboot: confirmed on a fresh read of the node, then asked of logind; a failure is
//! written on the node and retried with backoff, never dropped.

use std::time::Duration;

use host::Host;
use kube::ResourceExt;
use protocol::agent::{may_reboot, reboot_failed};
use protocol::node::NodeView;
use shell::Backoff;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Agent, Flow};
use crate::events::AgentEvent;
use crate::node_view;

/// The attempts at rebooting in this cycle.
pub(super) struct Reboots {
    backoff: Backoff,
    /// No attempt before this (after a failure, or while the accepted one happens).
    pub(super) not_before: Option<Instant>,
    /// When logind last accepted one: if the agent is still running after
    /// `--reboot-timeout`, it did not happen.
    accepted_at: Option<Instant>,
}

impl Reboots {
    pub(super) fn new(backoff_max: Duration) -> Self {
        Self {
            backoff: Backoff::new(Duration::from_millis(500), backoff_max),
            not_before: None,
            accepted_at: None,
        }
    }
}

impl Agent {
    /// Reboots if a fresh read of the node still allows it.
    pub(super) async fn reboot<H: Host>(&mut self, host: &H) -> Flow {
        if self.reboot.not_before.is_some_and(|t| Instant::now() < t) {
            return Flow::Done;
        }
        let view = match self.confirm_reboot().await {
            Ok(view) => view,
            Err(flow) => return flow,
        };
        if let Some(at) = self.reboot.accepted_at {
            let msg = format!(
                "logind accepted the reboot {}s ago but the host is still up; asking again",
                at.elapsed().as_secs()
            );
            warn!("{msg}");
            self.record_reboot_error(&view, &msg).await;
        }
        info!(boot_id = %view.boot_id, "rebooting");
        self.event(AgentEvent::Rebooting {
            boot_id: &view.boot_id,
        });
        // Give the Events so far a moment to be written before the machine goes down.
        self.events.flush(Duration::from_secs(2)).await;
        match host.reboot().await {
            Ok(()) => {
                info!("logind accepted the reboot; waiting to go down");
                self.reboot.backoff.reset();
                self.reboot.accepted_at = Some(Instant::now());
                self.reboot.not_before = Some(Instant::now() + self.cfg.reboot_timeout);
            }
            Err(e) => {
                let wait = self.reboot.backoff.next_delay();
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "reboot failed; retrying");
                self.record_reboot_error(&view, &e.to_string()).await;
                self.reboot.not_before = Some(Instant::now() + wait);
            }
        }
        Flow::Done
    }

    /// Reads the node again and checks [`may_reboot`] on it, so a stale view or an API
    /// outage never reboots. `Err`: no reboot now, and whether to decide again (the node
    /// changed) or wait.
    async fn confirm_reboot(&mut self) -> Result<NodeView, Flow> {
        let fresh = match self.nodes.api().get(&self.cfg.node).await {
            Ok(n) => n,
            Err(e) => {
                self.back_off("reading the node before rebooting", &e);
                return Err(Flow::Done);
            }
        };
        self.api_backoff.reset();
        let view = node_view(&fresh);
        let same =
            fresh.resource_version() == self.node.as_ref().and_then(|n| n.resource_version());
        self.node = Some(fresh);
        if !may_reboot(&view, self.drained) {
            return Err(if same { Flow::Done } else { Flow::Again });
        }
        Ok(view)
    }

    /// Writes `reboot-error` (informational: no resourceVersion precondition).
    async fn record_reboot_error(&mut self, view: &NodeView, error: &str) {
        self.event(AgentEvent::RebootFailed { error });
        let p = reboot_failed(view, error, self.cfg.clock.now());
        match self.write(&p, None).await {
            Ok(n) => self.node = Some(n),
            Err(e) => warn!(error = %e, "cannot record the reboot error on the node"),
        }
    }
}
