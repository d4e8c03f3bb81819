//! The drain's bookkeeping around [`drain::drain`]: start it, stop it when the decision
//! changes, and take its result (recorded on the node through
//! [`protocol::agent::drain_failed`] when it failed).
//!
//! The drain itself runs as a future the loop polls alongside the watches, so a withdrawn
//! grant stops it at once.

use kube::ResourceExt;
use protocol::agent::AgentStep;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Agent, DrainFuture, Flow};
use crate::drain::{self, DrainError, DrainSummary, Volumes};
use crate::events::AgentEvent;
use crate::node_view;

/// How many times a 409 may send the drain failure's record back to a fresh read.
const RECORD_ATTEMPTS: usize = 8;

impl Agent {
    /// The drain of this node, to be polled by the loop (nothing runs before that).
    pub(super) fn start_drain(&mut self) -> DrainFuture {
        info!(
            grace_period_s = self.cfg.grace_period.as_secs_f64(),
            "draining"
        );
        self.drain_started = Some(Instant::now());
        self.event(AgentEvent::DrainStarted {
            grace_period: self.cfg.grace_period,
        });
        let client = self.client.clone();
        let opts = self.cfg.drain_options();
        Box::pin(async move { drain::drain(client, &opts).await })
    }

    /// Drops the running drain, if any (evictions already accepted stay accepted).
    pub(super) fn stop_drain(&mut self, drain: &mut Option<DrainFuture>, why: &str) {
        if drain.take().is_some() {
            info!("drain stopped: {why}");
            self.drain_started = None;
            self.event(AgentEvent::DrainStopped { why });
        }
    }

    /// Takes the drain's result.
    pub(super) async fn drain_done(&mut self, result: Result<DrainSummary, DrainError>) {
        match result {
            Ok(summary) => self.drain_finished(&summary),
            Err(e) => self.drain_failed(&e).await,
        }
    }

    /// Success: the next decision may reboot.
    fn drain_finished(&mut self, summary: &DrainSummary) {
        info!(
            evicted = summary.evicted.len(),
            deleted = summary.deleted.len(),
            skipped = summary.skipped.len(),
            "drain finished"
        );
        let took = self.drain_started.take().map(|t| t.elapsed());
        if let Some(d) = took {
            self.cfg.metrics.drained(d);
        }
        self.event(AgentEvent::DrainFinished { took, summary });
        match &summary.volumes {
            Volumes::NotChecked => {}
            Volumes::Detached(took) => self.event(AgentEvent::VolumesDetached { took: *took }),
            Volumes::NotDetached(what) => self.event(AgentEvent::VolumesNotDetached {
                timeout: self.cfg.volume_detach_timeout,
                what,
            }),
        }
        self.drained = true;
    }

    /// Failure: reported, then handled as `--drain-timeout-action` says.
    async fn drain_failed(&mut self, e: &DrainError) {
        let reason = e.to_string();
        warn!(error = %reason, "drain failed");
        self.drain_started = None;
        self.cfg.metrics.drain_failed(e.reason());
        self.event(AgentEvent::DrainFailed {
            error: &reason,
            action: self.cfg.drain_timeout_action,
        });
        self.record_drain_failure(&reason).await;
    }

    /// Acts on [`protocol::agent::drain_failed`]'s decision: writes its patch (uncordon,
    /// `drain-failure`) on the node it was decided on, deciding again after a 409, or lets
    /// the reboot go ahead undrained.
    async fn record_drain_failure(&mut self, reason: &str) {
        for _ in 0..RECORD_ATTEMPTS {
            let Some(node) = self.node.clone() else {
                return;
            };
            let view = node_view(&node);
            match protocol::agent::drain_failed(
                &view,
                reason,
                self.cfg.drain_timeout_action,
                self.cfg.clock.now(),
            ) {
                AgentStep::Patch(mut p) => {
                    p.minimize(&view);
                    if p.is_empty() {
                        return;
                    }
                    match self.write(&p, node.resource_version().as_deref()).await {
                        Ok(n) => {
                            self.api_backoff.reset();
                            self.node = Some(n);
                            return;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            if let Flow::Done = self.reread().await {
                                return;
                            }
                        }
                        Err(e) => {
                            // Not recorded: the next decision drains again (after backoff).
                            self.back_off("recording the drain failure", &e);
                            return;
                        }
                    }
                }
                AgentStep::Reboot => {
                    warn!("rebooting without a complete drain (--drain-timeout-action=reboot)");
                    self.drained = true;
                    return;
                }
                AgentStep::Wait(r) => {
                    self.note_wait(r);
                    return;
                }
                AgentStep::Drain => return,
            }
        }
    }
}
