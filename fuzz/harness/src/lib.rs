//! What kaskade's fuzz targets and their seed generator share: the layout of inputs that are
//! sequences of operations ([`ops`]), a node's media core driven in-process with real (lean)
//! clients ([`node`]), the locator's HTTP API in-process ([`locator`]), and scratch directories on tmpfs
//! ([`scratch`]).

pub mod locator;
pub mod node;
pub mod ops;
pub mod scratch;
