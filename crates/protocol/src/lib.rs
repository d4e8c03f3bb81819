//! The FLUO-compatible reboot protocol, as pure functions.
//!
//! Everything the update-agent and update-operator shells decide lives here:
//! the annotation/label keys ([`keys`]), the typed view of a Node
//! ([`node`]), the patches to write ([`patch`]), reboot windows ([`window`]),
//! host facts ([`hostinfo`], [`update_engine`]), a node's [`phase`] and the two decision
//! functions: [`operator::decide`] and [`agent::next_step`].
//!
//! No I/O happens in this crate: the shells read the world, call these
//! functions and write what they return. See `docs/protocol.md` for the
//! protocol and the state machine.

pub mod agent;
pub mod blockers;
pub mod evicted;
pub mod hostinfo;
#[cfg(feature = "k8s")]
pub mod k8s;
pub mod keys;
pub mod names;
pub mod node;
pub mod operator;
pub mod patch;
pub mod phase;
pub mod schedule;
pub mod selector;
pub mod settings;
pub mod update_engine;
pub mod window;

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod testutil;
