//! DTMF keys to the far end, to steer a room system's or an MCU's menu: RFC 4733 telephone
//! events on the call's audio RTP when the far end took them in the SDP, else SIP INFO
//! `application/dtmf-relay` (see `ua::Call::dtmf_info`). And keys from the far end (a phone
//! at the voice menu): its events, each taken once ([`KeyReceiver`]), or its SIP INFO
//! ([`relayed_key`]).
//!
//! Each key is a 160 ms event: a packet every 20 ms with the duration so far (the first with
//! the marker bit), then the end packet sent three times, and 80 ms of silence before the next
//! key.

use crate::sip::sdp::TelephoneEvent;
use std::time::Duration;

/// The most keys one request sends.
pub const MAX_DIGITS: usize = 32;
/// How long each key sounds.
pub const TONE: Duration = Duration::from_millis(160);
/// The pause after each key.
pub const GAP: Duration = Duration::from_millis(80);
/// Packets come every this often while a key sounds.
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// The event's volume, -10 dBm0 (RFC 4733 2.3.4: the power level, as a positive number).
const VOLUME: u8 = 10;
/// Times the end packet is sent (RFC 4733 2.5.1.4: it is sent three times).
const END_REPEATS: usize = 3;

/// Checks a request's keys: 1 to [`MAX_DIGITS`] of `0-9 * # A-D`.
pub fn check(digits: &str) -> Result<(), String> {
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return Err(format!("send 1 to {MAX_DIGITS} keys at a time"));
    }
    match digits.chars().find(|c| event_code(*c).is_none()) {
        Some(bad) => Err(format!("{bad:?} is not a DTMF key (0-9, *, #, A-D)")),
        None => Ok(()),
    }
}

/// The RFC 4733 event code of a key.
fn event_code(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(key as u8 - b'A' + 12),
        _ => None,
    }
}

/// The key of an RFC 4733 event code.
fn key_of(code: u8) -> Option<char> {
    match code {
        0..=9 => Some(char::from(b'0' + code)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + code - 12)),
        _ => None,
    }
}

/// Keys the far end presses, from its telephone events: an event is one key however many
/// packets it takes (they share its RTP timestamp).
#[derive(Debug, Default)]
pub struct KeyReceiver {
    /// The timestamp of the last event taken.
    last: Option<u32>,
}

impl KeyReceiver {
    /// The key of the event packet with RTP timestamp `timestamp` and `payload`, the first time
    /// that event is seen.
    pub fn push(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let key = key_of(*payload.first()?)?;
        if payload.len() < 4 || self.last == Some(timestamp) {
            return None;
        }
        self.last = Some(timestamp);
        Some(key)
    }
}

/// The key of a SIP INFO `application/dtmf-relay` body (`Signal=5`), if it holds one.
pub fn relayed_key(body: &str) -> Option<char> {
    let signal = body
        .lines()
        .find_map(|line| line.trim().strip_prefix("Signal="))?
        .trim();
    let mut chars = signal.chars();
    let key = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && event_code(key).is_some()).then_some(key)
}

/// Where the next telephone event goes in the call's outgoing audio stream.
#[derive(Debug, Clone, Copy)]
pub struct EventStream {
    /// The SSRC of kaskade's audio to the far end.
    pub ssrc: u32,
    /// The next sequence number.
    pub seq: u16,
    /// The RTP timestamp of the next event's start.
    pub timestamp: u32,
    /// The negotiated payload type and clock.
    pub events: TelephoneEvent,
}

/// One packet to send, `at` after the keys' start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    /// When to send it, from the start.
    pub at: Duration,
    /// The RTP packet.
    pub packet: Vec<u8>,
}

impl EventStream {
    /// The packets of `digits` (already [`check`]ed; anything else is skipped), advancing the
    /// stream's sequence numbers and timestamp past them.
    pub fn packets(&mut self, digits: &str) -> Vec<Timed> {
        let rate = u128::from(self.events.clock_rate);
        let ticks = |d: Duration| (d.as_micros() * rate / 1_000_000) as u32;
        let per_key = (TONE + GAP).as_millis() as u32;
        let mut out = Vec::new();
        for (n, code) in digits.chars().filter_map(event_code).enumerate() {
            let start = Duration::from_millis(u64::from(per_key) * n as u64);
            let steps = (TONE.as_millis() / PACKET_INTERVAL.as_millis()) as u32;
            for step in 0..steps {
                let duration = ticks(PACKET_INTERVAL * (step + 1));
                out.push(self.timed(
                    start + PACKET_INTERVAL * step,
                    code,
                    duration,
                    step == 0,
                    false,
                ));
            }
            for _ in 0..END_REPEATS {
                out.push(self.timed(start + TONE, code, ticks(TONE), false, true));
            }
            self.timestamp = self.timestamp.wrapping_add(ticks(TONE + GAP));
        }
        out
    }

    fn timed(&mut self, at: Duration, code: u8, duration: u32, marker: bool, end: bool) -> Timed {
        let mut packet = Vec::with_capacity(16);
        packet.push(0x80);
        packet.push(u8::from(marker) << 7 | self.events.payload_type);
        packet.extend_from_slice(&self.seq.to_be_bytes());
        packet.extend_from_slice(&self.timestamp.to_be_bytes());
        packet.extend_from_slice(&self.ssrc.to_be_bytes());
        packet.push(code);
        packet.push(u8::from(end) << 7 | VOLUME);
        packet.extend_from_slice(&(duration.min(u32::from(u16::MAX)) as u16).to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        Timed { at, packet }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_one_key_and_sent_events_read_back() {
        let events = TelephoneEvent {
            payload_type: 101,
            clock_rate: 8_000,
        };
        let mut stream = EventStream {
            ssrc: 1,
            seq: 0,
            timestamp: 1_000,
            events,
        };
        let mut keys = KeyReceiver::default();
        let heard: String = stream
            .packets("12#*9D")
            .iter()
            .filter_map(|t| {
                let timestamp = u32::from_be_bytes(t.packet[4..8].try_into().unwrap());
                keys.push(timestamp, &t.packet[12..])
            })
            .collect();
        assert_eq!(heard, "12#*9D");
        assert_eq!(keys.push(5, &[16, 0, 0, 0]), None, "not a key");
        assert_eq!(keys.push(6, &[1]), None, "too short");
    }

    #[test]
    fn relayed_keys_are_read_from_info_bodies() {
        assert_eq!(relayed_key("Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(relayed_key("Signal= #\r\n"), Some('#'));
        assert_eq!(relayed_key("Signal=d"), Some('D'));
        for bad in ["", "Duration=160", "Signal=", "Signal=12", "Signal=x"] {
            assert_eq!(relayed_key(bad), None, "{bad}");
        }
    }

    fn stream() -> EventStream {
        EventStream {
            ssrc: 0xabcd,
            seq: 65_530,
            timestamp: 1_000,
            events: TelephoneEvent {
                payload_type: 101,
                clock_rate: 8_000,
            },
        }
    }

    #[test]
    fn keys_are_checked() {
        assert!(check("0123456789*#ABCD").is_ok());
        assert!(check("").is_err());
        assert!(check(&"1".repeat(33)).is_err());
        let bad = check("12x").unwrap_err();
        assert!(bad.contains("'x'"), "{bad}");
    }

    #[test]
    fn one_key_is_a_marked_start_growing_durations_and_three_end_packets() {
        let mut s = stream();
        let packets = s.packets("#");
        assert_eq!(packets.len(), 8 + 3);
        let first = &packets[0].packet;
        assert_eq!(first[1], 0x80 | 101, "marker and payload type");
        assert_eq!(&first[2..4], &65_530u16.to_be_bytes());
        assert_eq!(&first[4..8], &1_000u32.to_be_bytes());
        assert_eq!(&first[8..12], &0xabcdu32.to_be_bytes());
        assert_eq!(
            first[12..16],
            [11, VOLUME, 0, 160],
            "#, volume, 20 ms at 8 kHz"
        );
        let last_growing = &packets[7].packet;
        assert_eq!(last_growing[1], 101, "no marker after the first");
        assert_eq!(&last_growing[14..16], &1_280u16.to_be_bytes(), "160 ms");
        for end in &packets[8..] {
            assert_eq!(end.packet[13], 0x80 | VOLUME, "the E bit");
            assert_eq!(&end.packet[14..16], &1_280u16.to_be_bytes());
            assert_eq!(end.at, TONE);
            assert_eq!(
                &end.packet[4..8],
                &1_000u32.to_be_bytes(),
                "one event, one timestamp"
            );
        }
        let seqs: Vec<u16> = packets
            .iter()
            .map(|p| u16::from_be_bytes([p.packet[2], p.packet[3]]))
            .collect();
        assert_eq!(
            seqs[..7],
            [65_530, 65_531, 65_532, 65_533, 65_534, 65_535, 0],
            "wraps"
        );
        assert_eq!(s.seq, 65_530u16.wrapping_add(11));
        assert_eq!(s.timestamp, 1_000 + 1_920, "past the tone and the gap");
    }

    #[test]
    fn keys_follow_each_other_with_a_gap_on_the_events_clock() {
        let mut s = stream();
        s.events.clock_rate = 48_000;
        let packets = s.packets("1A");
        assert_eq!(packets.len(), 22);
        let second = &packets[11];
        assert_eq!(second.packet[12], 12, "A");
        assert_eq!(second.packet[1] & 0x80, 0x80, "a new event is marked");
        assert_eq!(second.at, TONE + GAP);
        let start = u32::from_be_bytes(second.packet[4..8].try_into().unwrap());
        assert_eq!(start, 1_000 + 11_520, "240 ms at 48 kHz later");
        assert_eq!(
            &second.packet[14..16],
            &960u16.to_be_bytes(),
            "20 ms at 48 kHz"
        );
    }
}
