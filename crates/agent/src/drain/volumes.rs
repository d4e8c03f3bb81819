//! After the pods are gone: wait until the node's volumes are detached, so a fast reboot
//! does not outrun the CSI detach (Multi-Attach errors where the pods start again).
//!
//! Detached means no `storage.k8s.io/v1` VolumeAttachment for the node says `attached`, and
//! the node's `status.volumesInUse` (the kubelet's mounts) is empty. Both are watched (no
//! polling). VolumeAttachments cannot be selected by node on the server, so all are
//! watched and filtered here, only while this wait runs.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{DrainOptions, Volumes};

/// What is still attached to or mounted on the node, as far as the watches have seen.
#[derive(Default)]
struct Attached {
    /// Names of the node's VolumeAttachments with `status.attached`.
    attachments: BTreeSet<String>,
    /// While a relist of the attachments runs, what it found so far.
    relisting: Option<BTreeSet<String>>,
    /// The node's `status.volumesInUse`.
    in_use: Vec<String>,
    attachments_listed: bool,
    node_listed: bool,
}

impl Attached {
    fn attached_here(va: &VolumeAttachment, node: &str) -> bool {
        va.spec.node_name == node && va.status.as_ref().is_some_and(|s| s.attached)
    }

    fn on_attachment(&mut self, ev: watcher::Event<VolumeAttachment>, node: &str) {
        match ev {
            watcher::Event::Apply(va) => {
                if Self::attached_here(&va, node) {
                    self.attachments.insert(va.name_any());
                } else {
                    self.attachments.remove(&va.name_any());
                }
            }
            watcher::Event::Delete(va) => {
                self.attachments.remove(&va.name_any());
            }
            watcher::Event::Init => self.relisting = Some(BTreeSet::new()),
            watcher::Event::InitApply(va) => {
                if let Some(found) = self.relisting.as_mut()
                    && Self::attached_here(&va, node)
                {
                    found.insert(va.name_any());
                }
            }
            watcher::Event::InitDone => {
                if let Some(found) = self.relisting.take() {
                    self.attachments = found;
                }
                self.attachments_listed = true;
            }
        }
    }

    fn on_node(&mut self, ev: watcher::Event<Node>) {
        match ev {
            watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                self.in_use = n.status.and_then(|s| s.volumes_in_use).unwrap_or_default();
            }
            watcher::Event::Delete(_) => self.in_use.clear(),
            watcher::Event::Init => {}
            watcher::Event::InitDone => self.node_listed = true,
        }
    }

    fn detached(&self) -> bool {
        self.attachments_listed
            && self.node_listed
            && self.attachments.is_empty()
            && self.in_use.is_empty()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.attachments.is_empty() {
            let names: Vec<&str> = self.attachments.iter().map(String::as_str).collect();
            parts.push(format!("attached: {}", names.join(", ")));
        }
        if !self.in_use.is_empty() {
            parts.push(format!("in use: {}", self.in_use.join(", ")));
        }
        if !self.attachments_listed || !self.node_listed {
            parts.push("not listed yet".into());
        }
        parts.join("; ")
    }
}

/// Waits up to `--volume-detach-timeout` for the node's volumes to detach. Never fails the
/// drain: past the timeout (or without the right to look) the reboot goes ahead, and the
/// result says why for the Warning Event.
pub(super) async fn wait_for_volumes(client: &Client, opts: &DrainOptions) -> Volumes {
    if opts.volume_detach_timeout.is_zero() {
        return Volumes::NotChecked;
    }
    let start = Instant::now();
    let deadline = start + opts.volume_detach_timeout;
    let attachments: Api<VolumeAttachment> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mut attachment_events = watcher(attachments, watcher::Config::default())
        .default_backoff()
        .boxed();
    let this_node = format!("metadata.name={}", opts.node);
    let mut node_events = watcher(nodes, watcher::Config::default().fields(&this_node))
        .default_backoff()
        .boxed();
    let mut seen = Attached::default();
    let mut said = false;
    loop {
        if seen.detached() {
            let took = start.elapsed();
            info!(
                took_ms = took.as_millis() as u64,
                "the node's volumes are detached"
            );
            return Volumes::Detached(took);
        }
        if !said && seen.attachments_listed && seen.node_listed {
            info!(volumes = %seen.describe(), "waiting for the node's volumes to detach");
            said = true;
        }
        tokio::select! {
            ev = attachment_events.next() => match ev {
                Some(Ok(ev)) => seen.on_attachment(ev, &opts.node),
                Some(Err(e)) => {
                    if let Some(refused) = forbidden(&e) {
                        return Volumes::NotDetached(format!("cannot watch VolumeAttachments: {refused}"));
                    }
                    warn!(error = %e, "watching VolumeAttachments");
                }
                None => unreachable!("a watcher stream never ends"),
            },
            ev = node_events.next() => match ev {
                Some(Ok(ev)) => seen.on_node(ev),
                Some(Err(e)) => warn!(error = %e, "watching the node's volumes"),
                None => unreachable!("a watcher stream never ends"),
            },
            _ = tokio::time::sleep_until(deadline) => {
                let what = seen.describe();
                warn!(volumes = %what, "volumes still attached after --volume-detach-timeout; rebooting anyway");
                return Volumes::NotDetached(what);
            }
        }
    }
}

/// A 403 (the agent's RBAC predates this wait) or a 404 (not served): waiting out the
/// timeout would not help.
fn forbidden(e: &watcher::Error) -> Option<String> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            if s.code == 403 || s.code == 404 =>
        {
            Some(s.message.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::storage::v1::{VolumeAttachmentSpec, VolumeAttachmentStatus};
    use kube::api::ObjectMeta;

    fn va(name: &str, node: &str, attached: bool) -> VolumeAttachment {
        VolumeAttachment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: VolumeAttachmentSpec {
                attacher: "a".into(),
                node_name: node.into(),
                ..Default::default()
            },
            status: Some(VolumeAttachmentStatus {
                attached,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn only_this_nodes_attached_volumes_count_and_a_relist_replaces() {
        let mut a = Attached::default();
        assert!(!a.detached(), "nothing listed yet");
        a.on_attachment(watcher::Event::Init, "n1");
        a.on_attachment(watcher::Event::InitApply(va("mine", "n1", true)), "n1");
        a.on_attachment(watcher::Event::InitApply(va("other", "n2", true)), "n1");
        a.on_attachment(watcher::Event::InitApply(va("pending", "n1", false)), "n1");
        a.on_attachment(watcher::Event::InitDone, "n1");
        a.on_node(watcher::Event::InitDone);
        assert_eq!(a.describe(), "attached: mine");
        a.on_attachment(watcher::Event::Apply(va("mine", "n1", false)), "n1");
        assert!(a.detached());
        a.on_attachment(watcher::Event::Apply(va("late", "n1", true)), "n1");
        assert!(!a.detached());
        // A relist that no longer has it (deleted while the watch was down).
        a.on_attachment(watcher::Event::Init, "n1");
        a.on_attachment(watcher::Event::InitDone, "n1");
        assert!(a.detached());
        let mut n = Node::default();
        n.status.get_or_insert_default().volumes_in_use =
            Some(vec!["kubernetes.io/csi/x^v".into()]);
        a.on_node(watcher::Event::Apply(n));
        assert_eq!(a.describe(), "in use: kubernetes.io/csi/x^v");
        a.on_node(watcher::Event::Apply(Node::default()));
        assert!(a.detached());
    }
}
