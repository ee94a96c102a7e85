//! The next timer deadline of every participant, without scanning them all on every packet.
//!
//! A min-heap of `(deadline, participant)` with lazy deletion: a participant's current deadline
//! lives in a map, and heap entries that no longer match it are skipped when they surface.

use crate::media::demux::ParticipantId;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Per-participant deadlines, earliest first.
#[derive(Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    current: HashMap<ParticipantId, Instant>,
}

impl Deadlines {
    /// Sets (or clears) a participant's next deadline.
    pub fn set(&mut self, id: ParticipantId, deadline: Option<Instant>) {
        match deadline {
            Some(at) => {
                if self.current.insert(id, at) != Some(at) {
                    self.heap.push(Reverse((at, id)));
                }
            }
            None => {
                self.current.remove(&id);
            }
        }
    }

    /// Entries of the heap (superseded ones included until they surface) and live deadlines
    /// (metrics).
    pub fn sizes(&self) -> (usize, usize) {
        (self.heap.len(), self.current.len())
    }

    /// The earliest live deadline.
    pub fn earliest(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.current.get(&id) == Some(&at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns a participant whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<ParticipantId> {
        if self.earliest()? > now {
            return None;
        }
        let Reverse((_, id)) = self.heap.pop()?;
        self.current.remove(&id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn yields_due_participants_in_order_and_skips_superseded_entries() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        d.set(ParticipantId::from(1), Some(ms(30)));
        d.set(ParticipantId::from(2), Some(ms(10)));
        d.set(ParticipantId::from(3), Some(ms(20)));
        d.set(ParticipantId::from(2), Some(ms(50))); // superseded: 2 is no longer due at 10
        d.set(ParticipantId::from(3), None);
        assert_eq!(d.earliest(), Some(ms(30)));
        assert_eq!(d.pop_due(ms(40)), Some(ParticipantId::from(1)));
        assert_eq!(d.pop_due(ms(40)), None);
        assert_eq!(d.pop_due(ms(50)), Some(ParticipantId::from(2)));
        assert_eq!(d.earliest(), None);
    }
}
