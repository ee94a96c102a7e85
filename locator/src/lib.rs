//! kaskade locator: the cluster's front door. It places each participant of a meeting on an SFU
//! node, cascades a meeting over several nodes as load or regions demand, keeps meeting state
//! (lock, moderators) that outlives a node, and keeps the call detail records.
//!
//! Layout: [`placement`] chooses nodes (pure: no I/O, no clock); [`state`] keeps the node
//! registry, meeting state and link keys in-process or in Redis; [`api`] is the HTTP surface
//! (joins, the node protocol, the operator's endpoints, recordings); [`recorders`] lists the
//! live recorders; [`cdr`] stores call records in SQLite; [`directory`] keeps the SIP rooms of
//! the dialpad and [`dial_in`] meetings' dial-in numbers, both where [`persist`] says; [`metrics`] counts; [`config`] is the
//! command line; [`server`] puts them together; [`tools`] are the operator's `token`, `cdr` and
//! `directory`.
//! It needs neither the node nor the recorder: the all-in-one (`kaskade`) brings both and
//! serves them beside a locator.

pub mod api;
pub mod cdr;
pub mod config;
pub mod dial_in;
pub mod directory;
pub mod metrics;
pub mod persist;
pub mod placement;
pub mod recorders;
pub mod server;
pub mod state;
pub mod tools;
