//! k8s Node -> [`protocol::node::NodeView`].

pub use protocol::k8s::node_view;
