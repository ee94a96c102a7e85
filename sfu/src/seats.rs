//! A bounded number of things a node runs at once (cameras, SIP calls, the grids composed for
//! SIP calls): a request beyond the bound is refused, so moderators' requests cannot grow the
//! node's threads, sockets and CPU without limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A bounded number of seats, taken and given back by [`Seat`].
pub struct Seats {
    taken: AtomicUsize,
    max: usize,
}

/// One taken seat, given back when dropped.
pub struct Seat<'a>(&'a Seats);

impl Seats {
    /// Seats for at most `max` at once.
    pub const fn new(max: usize) -> Self {
        Self {
            taken: AtomicUsize::new(0),
            max,
        }
    }

    /// Seats taken now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }

    /// A seat, unless all are taken.
    pub fn take(&self) -> Option<Seat<'_>> {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Seat(self))
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One taken seat of seats shared by `Arc` (held by what outlives a borrow), given back when
/// dropped.
pub struct SharedSeat(Arc<Seats>);

impl Seats {
    /// A seat of `seats` held by the caller, unless all are taken.
    pub fn take_shared(seats: &Arc<Seats>) -> Option<SharedSeat> {
        let seat = seats.take()?;
        // the count stays taken until the shared seat is dropped
        std::mem::forget(seat);
        Some(SharedSeat(seats.clone()))
    }
}

impl Drop for SharedSeat {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_bounded_and_given_back_when_dropped() {
        let seats = Seats::new(2);
        let first = seats.take().expect("a seat");
        let second = seats.take().expect("a seat");
        assert!(seats.take().is_none(), "all taken");
        drop(first);
        let third = seats.take().expect("one given back");
        assert_eq!(seats.taken(), 2);
        drop((second, third));
        assert_eq!(seats.taken(), 0);
    }

    #[test]
    fn shared_seats_count_with_the_others() {
        let seats = Arc::new(Seats::new(2));
        let shared = Seats::take_shared(&seats).expect("a seat");
        let borrowed = seats.take().expect("a seat");
        assert!(Seats::take_shared(&seats).is_none(), "all taken");
        drop(shared);
        assert_eq!(seats.taken(), 1);
        drop(borrowed);
        assert_eq!(seats.taken(), 0);
    }
}
