//! The one way both binaries write a Node: a JSON merge patch decided by the protocol,
//! under the binary's field manager, with the resourceVersion it was decided on.

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use protocol::patch::NodePatch;

/// Writes [`NodePatch`]es as one field manager.
#[derive(Clone)]
pub struct NodeWriter {
    api: Api<Node>,
    params: PatchParams,
}

impl NodeWriter {
    /// `field_manager` names the writer in each Node's `managedFields`.
    pub fn new(client: kube::Client, field_manager: &str) -> Self {
        Self {
            api: Api::all(client),
            params: PatchParams {
                field_manager: Some(field_manager.to_string()),
                ..PatchParams::default()
            },
        }
    }

    /// The Nodes API the writer uses, for reads.
    pub fn api(&self) -> &Api<Node> {
        &self.api
    }

    /// Applies `patch` to its node. With `precondition` (the resourceVersion the patch was
    /// decided on) a node changed since is refused with 409 Conflict, so nothing is decided
    /// on stale state; without it the write always applies (informational fields only).
    pub async fn patch(
        &self,
        patch: &NodePatch,
        precondition: Option<&str>,
    ) -> Result<Node, kube::Error> {
        let body = patch.merge_patch_at(precondition);
        self.api
            .patch(&patch.node, &self.params, &Patch::Merge(&body))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[tokio::test]
    async fn writes_as_the_field_manager_and_refuses_a_stale_precondition() {
        let sb = sandbox::Sandbox::start(sandbox::Options::default())
            .await
            .expect("sandbox starts");
        sb.add_node("n1", &[]).expect("node");
        let w = NodeWriter::new(sb.client(), "update-test");
        let node = w.api().get("n1").await.expect("node read");
        let stale = node.resource_version();
        let mut p = NodePatch::new("n1");
        p.annotations
            .insert("example.com/a".into(), Some("1".into()));
        let after = w.patch(&p, stale.as_deref()).await.expect("first write");
        assert_eq!(after.annotations()["example.com/a"], "1");
        let managers: Vec<String> = sb
            .audit()
            .entries()
            .into_iter()
            .filter(|e| e.verb == "patch" && e.resource == "nodes")
            .map(|e| e.field_manager)
            .collect();
        assert_eq!(managers, ["update-test"]);
        p.annotations
            .insert("example.com/a".into(), Some("2".into()));
        match w.patch(&p, stale.as_deref()).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
            other => panic!("a stale precondition must be 409 Conflict: {other:?}"),
        }
        let unconditional = w.patch(&p, None).await.expect("write without precondition");
        assert_eq!(unconditional.annotations()["example.com/a"], "2");
    }
}
