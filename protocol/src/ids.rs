//! Identifiers that cross process boundaries, as types rather than bare integers.
//!
//! A [`ParticipantId`] is unique across a cluster: it names the node that admitted the
//! participant (the index the locator handed that node, 0 for a node without a locator) and
//! that node's counter. A relayed participant keeps its id on every node, and a node tells its
//! own participants from relayed ones by the node part. On the wire (JSON, the cascade link)
//! it is one number, `node << 20 | counter`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Node indexes the locator hands out are `1..=MAX_NODE_INDEX`; 0 is a node without a locator.
pub const MAX_NODE_INDEX: u16 = (1 << (32 - ParticipantId::COUNTER_BITS)) - 1;

/// A participant of a meeting, unique across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "u32", into = "u32")]
pub struct ParticipantId {
    node: u16,
    counter: u32,
}

impl ParticipantId {
    /// Bits of the wire number below the node index.
    pub const COUNTER_BITS: u32 = 20;
    /// The largest counter a node gives out.
    pub const MAX_COUNTER: u32 = (1 << Self::COUNTER_BITS) - 1;
    /// Counter 0 of no node: nobody (for instance the author of a lock made on another node).
    pub const NOBODY: Self = Self {
        node: 0,
        counter: 0,
    };

    /// The id of participant `counter` of node `node`; `None` past [`MAX_NODE_INDEX`] or
    /// [`Self::MAX_COUNTER`].
    pub fn new(node: u16, counter: u32) -> Option<Self> {
        (node <= MAX_NODE_INDEX && counter <= Self::MAX_COUNTER).then_some(Self { node, counter })
    }

    /// The index of the node that admitted it.
    pub fn node(self) -> u16 {
        self.node
    }

    /// Its number among that node's participants (never 0 for an admitted participant).
    pub fn counter(self) -> u32 {
        self.counter
    }

    /// The id a wire number names. Every number is some node's counter: the node part has
    /// exactly the bits left above the counter.
    pub const fn from_wire(wire: u32) -> Self {
        Self {
            node: (wire >> Self::COUNTER_BITS) as u16,
            counter: wire & Self::MAX_COUNTER,
        }
    }

    /// Its wire number, `node << 20 | counter`.
    pub const fn to_wire(self) -> u32 {
        (self.node as u32) << Self::COUNTER_BITS | self.counter
    }
}

impl From<u32> for ParticipantId {
    fn from(wire: u32) -> Self {
        Self::from_wire(wire)
    }
}

impl From<ParticipantId> for u32 {
    fn from(id: ParticipantId) -> Self {
        id.to_wire()
    }
}

impl std::str::FromStr for ParticipantId {
    type Err = std::num::ParseIntError;

    /// The wire number in decimal, as [`fmt::Display`] writes it (file names, URLs).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<u32>().map(Self::from)
    }
}

impl fmt::Display for ParticipantId {
    /// The wire number, as logs, metrics and the web client show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", u32::from(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_number_is_node_above_twenty_bits_of_counter() {
        let id = ParticipantId::new(3, 1).unwrap();
        assert_eq!(u32::from(id), 3 << 20 | 1);
        assert_eq!(ParticipantId::from(3 << 20 | 1), id);
        assert_eq!((id.node(), id.counter()), (3, 1));
        assert_eq!(serde_json::to_string(&id).unwrap(), "3145729");
        assert_eq!(
            serde_json::from_str::<ParticipantId>("3145729").unwrap(),
            id
        );
        assert_eq!(id.to_string(), "3145729");
        assert_eq!("3145729".parse::<ParticipantId>(), Ok(id));
        assert!("3.5".parse::<ParticipantId>().is_err());
    }

    #[test]
    fn every_wire_number_round_trips_and_limits_hold() {
        for wire in [0, 1, ParticipantId::MAX_COUNTER, 1 << 20, u32::MAX] {
            assert_eq!(u32::from(ParticipantId::from(wire)), wire);
        }
        assert_eq!(ParticipantId::from(u32::MAX).node(), MAX_NODE_INDEX);
        assert_eq!(MAX_NODE_INDEX, 4095);
        assert!(ParticipantId::new(MAX_NODE_INDEX + 1, 1).is_none());
        assert!(ParticipantId::new(1, ParticipantId::MAX_COUNTER + 1).is_none());
        assert!(serde_json::from_str::<ParticipantId>("-1").is_err());
        assert!(serde_json::from_str::<ParticipantId>("\"7\"").is_err());
    }
}
