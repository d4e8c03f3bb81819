//! Runs a whole simulated cluster in-process: the sandbox, one real
//! update-agent per node restarted across reboots, real update-operator
//! replicas, and a monitor of what happened.
//!
//! - [`Fleet`]: one `agent::run` per node, aborted when its machine goes down
//!   and started again when it is back, as a DaemonSet's pod would be.
//! - [`Replica`]: one `operator::run`.
//! - [`Monitor`]: a watch of all Nodes: peaks (slot holders, grants, nodes
//!   unavailable at once), boot IDs, and per node a timeline of reboot cycles.
//! - [`Hooks`]: simulated before/after-reboot hook DaemonSets.
//! - [`Cluster`]: all of the above on a populated sandbox, as `fluoctl sandbox`
//!   runs it; [`Summary`] and [`Report`] say what a rollout achieved.
//! - [`chaos`]: seeded fault scenarios on such a cluster, refereed by the
//!   [`invariants`] checker.

pub mod agents;
pub mod chaos;
pub mod cluster;
pub mod hooks;
pub mod invariants;
pub mod monitor;
pub mod operators;
pub mod report;

pub use agents::{Fleet, agent_client, agent_config};
pub use cluster::{Cluster, ClusterSpec};
pub use hooks::Hooks;
pub use monitor::{Counts, Cycle, Monitor, NodeTrack, Peaks, Phase, Snapshot};
pub use operators::{LEASE_NAMESPACE, Replica, fast_lease, op_config};
pub use report::{Report, Summary};
