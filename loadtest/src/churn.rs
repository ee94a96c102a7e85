//! Churn during a load run (`kaskade-loadtest --churn-every 3s`): every interval of the
//! measurement window one participant of one room (the rooms in turn) leaves cleanly and a
//! fresh one joins the same room. This module is the pure part: when events fall due and who
//! leaves ([`ChurnSchedule`], [`oldest`]), and what the report says about them
//! ([`ChurnReport`]). The generator does the leaving and joining.
//!
//! A leaver first stops sending and stays a moment so that what it sent arrives (its
//! room-mates count no loss for packets it never sent), then leaves. Its replacement joins
//! right after; a room of `--max-room-size` members is full until the node's next report
//! tells the locator someone left, so a refused join is retried. A new participant warms up
//! like the first joins do: its latency counts once media flows both ways between it and every
//! room-mate (it is *settled*).

use std::time::Duration;

use serde::Serialize;

use crate::measure::Summary;

/// When churn events fall due, as offsets from the start of the measurement window, and in
/// which room: one event every `every`, rooms in turn, and none in the last interval of the
/// window, so that the last newcomer has an interval to settle before the window closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChurnSchedule {
    every: Duration,
    rooms: usize,
    window: Duration,
    events: u32,
}

impl ChurnSchedule {
    /// Events every `every` over a window of `window`, round-robin over `rooms` rooms.
    pub fn new(every: Duration, rooms: usize, window: Duration) -> Self {
        Self {
            every,
            rooms,
            window,
            events: 0,
        }
    }

    /// The offset of the next event, if the window still has one.
    pub fn next_at(&self) -> Option<Duration> {
        if self.rooms == 0 || self.every.is_zero() {
            return None;
        }
        let at = self.every.checked_mul(self.events.checked_add(1)?)?;
        (at.checked_add(self.every)? <= self.window).then_some(at)
    }

    /// The room of the event due at `elapsed` into the window, if one is due (one per call:
    /// call again for the next).
    pub fn due(&mut self, elapsed: Duration) -> Option<usize> {
        if self.next_at()? > elapsed {
            return None;
        }
        let room = self.events as usize % self.rooms;
        self.events += 1;
        Some(room)
    }

    /// Events handed out so far.
    pub fn events(&self) -> u32 {
        self.events
    }
}

/// The member to leave: the one who joined first (`(member, joined at)`; ties go to the
/// first listed).
pub fn oldest<T: Ord + Copy>(members: impl IntoIterator<Item = (usize, T)>) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for (member, joined) in members {
        if best.is_none_or(|(_, b)| joined < b) {
            best = Some((member, joined));
        }
    }
    best.map(|(member, _)| member)
}

/// What churn did during the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChurnReport {
    /// Seconds between events.
    pub every_s: f64,
    /// Events that fell due in the window.
    pub events: u64,
    /// Participants that left cleanly.
    pub leaves: u64,
    /// Newcomers that joined.
    pub joins: u64,
    /// Newcomers whose join failed for good.
    pub join_failures: u64,
    /// Join attempts refused and tried again (the room still looked full).
    pub join_retries: u64,
    /// Events with nobody to leave (every member of the room still joining or leaving).
    pub skipped: u64,
    /// Newcomers that did not settle (media flowing both ways with every room-mate) within
    /// the settle timeout; their latency counts from then on anyway.
    pub unsettled: u64,
    /// Join start (first attempt) to settled, milliseconds.
    pub settle_ms: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn events_fall_every_interval_round_robin_and_spare_the_last_interval() {
        let mut schedule = ChurnSchedule::new(s(2), 2, s(10));
        assert_eq!(schedule.next_at(), Some(s(2)));
        assert_eq!(schedule.due(Duration::from_millis(1999)), None);
        let mut rooms = Vec::new();
        let mut at = Duration::ZERO;
        while at <= s(20) {
            while let Some(room) = schedule.due(at) {
                rooms.push((at, room));
            }
            at += Duration::from_millis(100);
        }
        // 2, 4, 6, 8 s: 8 + 2 <= 10, while 10 + 2 > 10
        let want: Vec<(Duration, usize)> = vec![(s(2), 0), (s(4), 1), (s(6), 0), (s(8), 1)];
        let got: Vec<(Duration, usize)> = rooms
            .iter()
            .map(|(at, room)| (Duration::from_secs(at.as_secs()), *room))
            .collect();
        assert_eq!(got, want);
        assert_eq!(schedule.events(), 4);
        assert_eq!(schedule.next_at(), None);
    }

    #[test]
    fn a_late_caller_gets_every_missed_event_one_by_one() {
        let mut schedule = ChurnSchedule::new(s(3), 10, s(30 * 60));
        assert_eq!(schedule.due(s(10)), Some(0));
        assert_eq!(schedule.due(s(10)), Some(1));
        assert_eq!(schedule.due(s(10)), Some(2));
        assert_eq!(schedule.due(s(10)), None);
        assert_eq!(schedule.next_at(), Some(s(12)));
        // 30 minutes at 3 s: events at 3 .. 1797 s
        let mut n = schedule.events();
        while schedule.due(s(3600)).is_some() {
            n += 1;
        }
        assert_eq!(n, 599);
    }

    #[test]
    fn no_rooms_or_no_interval_means_no_events() {
        assert_eq!(ChurnSchedule::new(s(1), 0, s(10)).next_at(), None);
        assert_eq!(ChurnSchedule::new(Duration::ZERO, 3, s(10)).next_at(), None);
        assert_eq!(ChurnSchedule::new(s(5), 3, s(9)).next_at(), None);
    }

    #[test]
    fn the_first_to_join_leaves_first() {
        assert_eq!(oldest([(4, 30), (7, 10), (9, 10), (2, 20)]), Some(7));
        assert_eq!(oldest::<u32>([]), None);
    }
}
