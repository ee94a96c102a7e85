//! Failed dial-in attempts, counted per caller and per meeting, and the lockouts they lead to,
//! so that a meeting's PIN cannot be guessed by calling again and again: a caller with too many
//! wrong PINs or unknown meeting numbers is refused for a while, and a meeting whose PIN was
//! entered wrong too often (by anyone: callers may hide behind many numbers) takes no PIN for a
//! while. Time is an input; nothing here does I/O.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failures a caller may have in a [`WINDOW`] before it is locked out.
pub const CALLER_FAILURES: u32 = 6;
/// Wrong PINs a meeting may take in a [`WINDOW`] before its PIN entry is locked.
pub const MEETING_FAILURES: u32 = 10;
/// How long failures are counted, and how long a lockout lasts.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Callers and meetings remembered at most each; past it, the oldest are forgotten first
/// (a flood of made-up callers cannot grow the node's memory).
const MAX_KEYS: usize = 10_000;

/// Failed attempts by callers and against meetings.
#[derive(Debug, Default)]
pub struct Attempts {
    callers: Counter,
    meetings: Counter,
}

/// One caller's or meeting's failures in the current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Counter {
    entries: HashMap<String, Failures>,
}

impl Counter {
    fn is_locked(&self, key: &str, now: Instant) -> bool {
        self.entries
            .get(key)
            .and_then(|f| f.locked_until)
            .is_some_and(|until| now < until)
    }

    fn fail(&mut self, key: &str, limit: u32, now: Instant) {
        if !self.entries.contains_key(key) && self.entries.len() >= MAX_KEYS {
            self.forget_oldest(now);
        }
        let failures = self.entries.entry(key.to_string()).or_insert(Failures {
            count: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(failures.since) >= WINDOW {
            *failures = Failures {
                count: 0,
                since: now,
                locked_until: failures.locked_until.filter(|until| now < *until),
            };
        }
        failures.count += 1;
        if failures.count >= limit {
            failures.locked_until = Some(now + WINDOW);
        }
    }

    /// Drops what expired, and when nothing did, the entry whose window began first, a
    /// locked one only when all are locked (a flood must not free the guesser it locked).
    fn forget_oldest(&mut self, now: Instant) {
        let locked = |f: &Failures| f.locked_until.is_some_and(|until| now < until);
        self.entries
            .retain(|_, f| now.duration_since(f.since) < WINDOW || locked(f));
        if self.entries.len() >= MAX_KEYS
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, f)| (locked(f), f.since))
                .map(|(key, _)| key.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

impl Attempts {
    /// Whether `caller` (its From address) is locked out now.
    pub fn caller_locked(&self, caller: &str, now: Instant) -> bool {
        self.callers.is_locked(caller, now)
    }

    /// Whether `meeting` takes no PIN now.
    pub fn meeting_locked(&self, meeting: &str, now: Instant) -> bool {
        self.meetings.is_locked(meeting, now)
    }

    /// `caller` entered a number no meeting has.
    pub fn unknown_number(&mut self, caller: &str, now: Instant) {
        self.callers.fail(caller, CALLER_FAILURES, now);
    }

    /// `caller` entered a wrong PIN for `meeting`.
    pub fn wrong_pin(&mut self, caller: &str, meeting: &str, now: Instant) {
        self.callers.fail(caller, CALLER_FAILURES, now);
        self.meetings.fail(meeting, MEETING_FAILURES, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_with_too_many_failures_is_locked_out_for_a_window() {
        let mut attempts = Attempts::default();
        let start = Instant::now();
        let caller = "sip:+4722001234@trunk";
        for n in 0..CALLER_FAILURES {
            assert!(!attempts.caller_locked(caller, start), "after {n}");
            attempts.unknown_number(caller, start + Duration::from_secs(u64::from(n)));
        }
        let later = start + Duration::from_secs(10);
        assert!(attempts.caller_locked(caller, later));
        assert!(
            !attempts.caller_locked("sip:other@trunk", later),
            "others may call"
        );
        assert!(!attempts.meeting_locked("board", later), "no PIN was wrong");
        assert!(
            !attempts.caller_locked(caller, later + WINDOW),
            "the lockout ends"
        );
    }

    #[test]
    fn failures_spread_over_more_than_a_window_never_lock() {
        let mut attempts = Attempts::default();
        let mut now = Instant::now();
        for _ in 0..3 * CALLER_FAILURES {
            attempts.wrong_pin("sip:slow@x", "board", now);
            assert!(!attempts.caller_locked("sip:slow@x", now));
            now += WINDOW / (CALLER_FAILURES - 1);
        }
    }

    #[test]
    fn a_meeting_guessed_at_from_many_numbers_takes_no_pin_for_a_window() {
        let mut attempts = Attempts::default();
        let now = Instant::now();
        for n in 0..MEETING_FAILURES {
            assert!(!attempts.meeting_locked("board", now));
            attempts.wrong_pin(&format!("sip:{n}@x"), "board", now);
        }
        assert!(attempts.meeting_locked("board", now));
        assert!(!attempts.meeting_locked("other", now));
        assert!(
            !attempts.caller_locked("sip:0@x", now),
            "no one caller failed enough"
        );
        assert!(!attempts.meeting_locked("board", now + WINDOW));
    }

    #[test]
    fn a_flood_of_callers_is_bounded_and_keeps_the_locked_ones() {
        let mut attempts = Attempts::default();
        let now = Instant::now();
        for _ in 0..CALLER_FAILURES {
            attempts.unknown_number("sip:guesser@x", now);
        }
        let later = now + Duration::from_secs(1);
        for n in 0..MAX_KEYS + 100 {
            attempts.unknown_number(&format!("sip:{n}@x"), later);
        }
        assert_eq!(attempts.callers.entries.len(), MAX_KEYS);
        let after = later + Duration::from_secs(1);
        assert!(
            attempts.caller_locked("sip:guesser@x", after),
            "the oldest unlocked callers went, not the locked one"
        );
        assert!(
            attempts
                .callers
                .entries
                .contains_key(&format!("sip:{}@x", MAX_KEYS + 99))
        );
    }
}
