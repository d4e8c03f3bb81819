//! The imperative shell both binaries share around the pure `protocol` core, so that
//! learning `update-agent` teaches `update-operator`: the Kubernetes client
//! ([`kube_client`]), shutdown on SIGTERM ([`signal`]), one jittered [`Backoff`], node writes
//! with a field manager and a resourceVersion precondition ([`NodeWriter`]), and Go-style
//! command lines ([`flags`]), and the API server's clock ([`ServerClock`]), so that times
//! compared with the operator's are read on one clock. Task handles that abort on drop are tokio-util's
//! `AbortOnDropHandle`.

pub mod backoff;
pub mod client;
pub mod clock;
pub mod flags;
pub mod signal;
pub mod write;

pub use backoff::Backoff;
pub use client::{kube_client, kube_client_with_clock};
pub use clock::ServerClock;
pub use write::NodeWriter;
