//! kaskade locator: the cluster's front door.
//!
//! Layout: [`placement`] chooses nodes (pure, no I/O); [`state`] keeps the node registry,
//! meeting state and link keys in-process or in Redis.

pub mod placement;
pub mod state;
