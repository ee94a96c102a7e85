//! What the core takes from outside besides the `now` of each call: the wall clock, read once
//! by the shell at start (call records carry Unix times), and a random generator seeded by the
//! shell (ICE credentials, slot SSRCs, the first sequence numbers and timestamps of streams).
//! The core reads no clock and draws no global randomness, so a test that seeds it and steps
//! its instants replays exactly.

use rand::SeedableRng;
use rand::rngs::StdRng;
use std::time::Instant;

/// The wall clock at one instant, so the core turns any later instant into Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    origin: Instant,
    origin_unix_ms: u64,
}

impl WallClock {
    /// `origin` was Unix time `origin_unix_ms`.
    pub fn new(origin: Instant, origin_unix_ms: u64) -> Self {
        Self {
            origin,
            origin_unix_ms,
        }
    }

    /// Unix microseconds at `now` (the origin's for instants before it).
    pub fn unix_micros(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        (self.origin_unix_ms.saturating_mul(1_000))
            .saturating_add(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }

    /// Unix milliseconds at `now` (the origin's for instants before it).
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        self.origin_unix_ms
            .saturating_add(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The core's inputs from outside: the wall clock and the random generator.
#[derive(Debug, Clone)]
pub struct Surroundings {
    /// Unix time for call records.
    pub clock: WallClock,
    /// Every random draw of the core.
    pub rng: StdRng,
}

impl Surroundings {
    /// The wall clock at `origin` and a generator from `seed`, as tests want them.
    pub fn seeded(origin: Instant, origin_unix_ms: u64, seed: u64) -> Self {
        Self {
            clock: WallClock::new(origin, origin_unix_ms),
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn later_instants_add_their_milliseconds_and_earlier_ones_do_not_go_back() {
        let origin = Instant::now();
        let clock = WallClock::new(origin + Duration::from_secs(1), 1_700_000_000_000);
        assert_eq!(
            clock.unix_ms(origin + Duration::from_millis(3_500)),
            1_700_000_002_500
        );
        assert_eq!(clock.unix_ms(origin), 1_700_000_000_000);
    }
}
