//! Writes of the agent's own Node, and the Events the changes they made call for.
//!
//! A decided patch carries the resourceVersion it was decided on: a 409 means the decision
//! was made on a stale node, so the node is read again and the decision made again.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use protocol::agent::needed_by;
use protocol::keys;
use protocol::node::NodeView;
use protocol::patch::NodePatch;
use tracing::{debug, info};

use super::{Agent, Flow};
use crate::events::AgentEvent;
use crate::node_view;

impl Agent {
    /// Writes a decided patch with the resourceVersion it was decided on.
    pub(super) async fn write_decided(&mut self, p: &NodePatch, node: &Node) -> Flow {
        match self.write(p, node.resource_version().as_deref()).await {
            Ok(n) => {
                self.api_backoff.reset();
                self.report_write(&node_view(node), &n);
                self.node = Some(n);
                Flow::Again
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                debug!("the node changed since; reading it again");
                self.reread().await
            }
            Err(e) => {
                self.back_off("writing the node", &e);
                Flow::Done
            }
        }
    }

    /// One patch, with the resourceVersion precondition if `rv` is given.
    pub(super) async fn write(&self, p: &NodePatch, rv: Option<&str>) -> Result<Node, kube::Error> {
        info!(patch = %p.merge_patch(), "patching the node");
        self.nodes.patch(p, rv).await
    }

    /// Reads the node again (after a 409); `Again` if that worked.
    pub(super) async fn reread(&mut self) -> Flow {
        match self.nodes.api().get_opt(&self.cfg.node).await {
            Ok(n) => {
                self.api_backoff.reset();
                self.node = n;
                Flow::Again
            }
            Err(e) => {
                self.back_off("reading the node", &e);
                Flow::Done
            }
        }
    }

    /// Events for what a write we made changed: the end of a cycle (with or without the
    /// reboot) and the health gate passing. Judged on our own writes, so each is reported
    /// once, by the agent that made the change.
    fn report_write(&self, before: &NodeView, after: &Node) {
        let after = node_view(after);
        if before.annotation(keys::EVICTED_PODS).is_some()
            && after.annotation(keys::EVICTED_PODS).is_none()
        {
            self.report_gate();
        }
        let before_by = needed_by(before);
        let after_by = needed_by(&after);
        if after.annotation(keys::REBOOT_NEEDED) == Some(keys::TRUE)
            && after_by.iter().any(|b| !before_by.contains(b))
        {
            self.event(AgentEvent::RebootRequested {
                by: &after_by.join(", "),
            });
        }
        let in_progress = |v: &NodeView| v.annotation(keys::REBOOT_IN_PROGRESS) == Some(keys::TRUE);
        if in_progress(before) && !in_progress(&after) {
            if after.annotation(keys::REBOOT_NEEDED) != Some(keys::TRUE) {
                self.event(AgentEvent::BackFromReboot {
                    old_boot_id: before.annotation(keys::REBOOT_BOOT_ID),
                    new_boot_id: &after.boot_id,
                });
            } else {
                self.event(AgentEvent::RebootStopped);
            }
        }
    }
}
