//! Active-speaker detection from RFC 6464 audio levels.
//!
//! Each audio packet of a publisher carries its level in -dBov (0 loudest, 127 silence). The
//! detector keeps a time-decayed loudness per participant and names the loudest one above a
//! speech threshold, with hysteresis so that the highlight does not flicker between two people
//! talking at once, and a participant who stops sending (muted, gone) is silent.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Loudness (127 - level) above which a participant counts as speaking.
const SPEECH_THRESHOLD: f32 = 40.0;
/// A challenger must be this much louder than the current speaker to take over.
const SWITCH_MARGIN: f32 = 6.0;
/// Minimum time a speaker keeps the highlight unless they fall silent.
const MIN_HOLD: Duration = Duration::from_millis(800);
/// Audio older than this means silence.
const STALE_AFTER: Duration = Duration::from_millis(400);
/// Weight of a new sample in the moving average (50 packets/s: ~0.4 s memory).
const SMOOTHING: f32 = 0.05;

#[derive(Debug, Clone, Copy)]
struct Loudness {
    average: f32,
    updated: Instant,
}

/// Tracks who speaks in one room.
#[derive(Debug)]
pub struct SpeakerDetector<P> {
    loudness: HashMap<P, Loudness>,
    current: Option<P>,
    since: Option<Instant>,
}

impl<P: Copy + Eq + Hash> Default for SpeakerDetector<P> {
    fn default() -> Self {
        Self {
            loudness: HashMap::new(),
            current: None,
            since: None,
        }
    }
}

impl<P: Copy + Eq + Hash> SpeakerDetector<P> {
    /// Records the level (-dBov, 0..=127) of one audio packet from `participant`.
    pub fn record(&mut self, participant: P, level: u8, now: Instant) {
        let loudness = f32::from(127 - level.min(127));
        let entry = self.loudness.entry(participant).or_insert(Loudness {
            average: 0.0,
            updated: now,
        });
        if now.saturating_duration_since(entry.updated) > STALE_AFTER {
            entry.average = 0.0;
        }
        entry.average += SMOOTHING * (loudness - entry.average);
        entry.updated = now;
    }

    /// Participants with a loudness entry (metrics).
    pub fn tracked(&self) -> usize {
        self.loudness.len()
    }

    /// Forgets a participant who left.
    pub fn remove(&mut self, participant: P) {
        self.loudness.remove(&participant);
        if self.current == Some(participant) {
            self.current = None;
        }
    }

    /// The current active speaker.
    pub fn current(&self) -> Option<P> {
        self.current
    }

    /// Re-evaluates; returns the new speaker when it changed. Call a few times a second.
    pub fn evaluate(&mut self, now: Instant) -> Option<P> {
        let loudness_of = |l: &Loudness| {
            if now.saturating_duration_since(l.updated) > STALE_AFTER {
                0.0
            } else {
                l.average
            }
        };
        let loudest = self
            .loudness
            .iter()
            .map(|(p, l)| (*p, loudness_of(l)))
            .filter(|(_, l)| *l >= SPEECH_THRESHOLD)
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        let current = self
            .current
            .and_then(|p| self.loudness.get(&p).map(|l| (p, loudness_of(l))));
        let take_over = match current {
            None => true,
            Some((p, _)) if p == loudest.0 => false,
            Some((_, l)) if l < SPEECH_THRESHOLD => true,
            Some((_, l)) => {
                loudest.1 > l + SWITCH_MARGIN
                    && self
                        .since
                        .is_none_or(|s| now.saturating_duration_since(s) >= MIN_HOLD)
            }
        };
        if take_over {
            self.current = Some(loudest.0);
            self.since = Some(now);
            return Some(loudest.0);
        }
        None
    }
}

/// Reads the RFC 6464 level (-dBov) from a one-byte audio-level extension payload.
pub fn audio_level(extension_payload: &[u8]) -> Option<u8> {
    extension_payload.first().map(|b| b & 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(
        d: &mut SpeakerDetector<u32>,
        who: u32,
        level: u8,
        from_ms: u64,
        to_ms: u64,
        t0: Instant,
    ) {
        for ms in (from_ms..to_ms).step_by(20) {
            d.record(who, level, t0 + Duration::from_millis(ms));
        }
    }

    #[test]
    fn silence_names_nobody() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        feed(&mut d, 1, 127, 0, 1000, t0);
        feed(&mut d, 2, 110, 0, 1000, t0);
        assert_eq!(d.evaluate(t0 + Duration::from_millis(1000)), None);
        assert_eq!(d.current(), None);
    }

    #[test]
    fn loudest_speaker_wins_and_holds_against_a_close_challenger() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        feed(&mut d, 1, 30, 0, 1000, t0);
        feed(&mut d, 2, 120, 0, 1000, t0);
        assert_eq!(d.evaluate(t0 + Duration::from_millis(1000)), Some(1));
        // 2 now talks about as loud as 1: no flicker
        feed(&mut d, 1, 30, 1000, 3000, t0);
        feed(&mut d, 2, 28, 1000, 3000, t0);
        assert_eq!(d.evaluate(t0 + Duration::from_millis(3000)), None);
        assert_eq!(d.current(), Some(1));
    }

    #[test]
    fn a_speaker_who_stops_sending_loses_the_highlight() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        feed(&mut d, 1, 30, 0, 1000, t0);
        assert_eq!(d.evaluate(t0 + Duration::from_millis(1000)), Some(1));
        // 1 is muted (no packets); 2 speaks
        feed(&mut d, 2, 40, 1000, 2500, t0);
        assert_eq!(d.evaluate(t0 + Duration::from_millis(2500)), Some(2));
    }

    #[test]
    fn reads_the_level_and_ignores_the_voice_bit() {
        assert_eq!(audio_level(&[0x80 | 33]), Some(33));
        assert_eq!(audio_level(&[]), None);
    }
}
