//! Keyframe requests towards a publisher: coalesced and rate-limited.
//!
//! Many subscribers losing the same packet, or several joining at once, must cost the publisher
//! one keyframe, not one each. A [`KeyframeThrottle`] sends the first request at once, folds
//! every request inside the following interval into at most one more, sent when the interval
//! ends, and forgets pending requests when the publisher sends a keyframe on its own.

use std::time::{Duration, Instant};

/// Default minimum spacing between two keyframe requests to one publisher stream.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(300);

/// Coalesces keyframe requests for one publisher stream.
#[derive(Debug)]
pub struct KeyframeThrottle {
    min_interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeThrottle {
    /// A throttle that sends at most one request per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_sent: None,
            pending: false,
        }
    }

    /// Someone wants a keyframe. Returns true when a request must be sent now; otherwise the
    /// request is folded into one sent at [`Self::poll_timeout`].
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now < last + self.min_interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// When a coalesced request falls due, if one is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(last)) => Some(last + self.min_interval),
            _ => None,
        }
    }

    /// Returns true when a coalesced request must be sent now.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.poll_timeout().is_some_and(|due| due <= now) {
            self.last_sent = Some(now);
            self.pending = false;
            return true;
        }
        false
    }

    /// The publisher sent a keyframe: requests made before it are satisfied.
    pub fn keyframe_seen(&mut self) {
        self.pending = false;
    }
}

impl Default for KeyframeThrottle {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_INTERVAL)
    }
}

/// The media SSRCs an RTCP compound packet asks keyframes of (its PLIs and FIR entries), or
/// why it is not RTCP.
pub fn keyframes_asked(datagram: &[u8]) -> Result<Vec<u32>, String> {
    use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    let packets = rtc::rtcp::packet::unmarshal(&mut &datagram[..])
        .map_err(|e| format!("not an RTCP packet: {e}"))?;
    let mut ssrcs = Vec::new();
    for packet in &packets {
        let any = packet.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            ssrcs.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            ssrcs.extend(fir.fir.iter().map(|entry| entry.ssrc));
        }
    }
    Ok(ssrcs)
}

/// Whether an H.264 RTP payload (RFC 6184, packetization mode 0 or 1) starts a keyframe: it
/// carries an SPS, or the first fragment of an IDR slice.
pub fn h264_keyframe_start(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(nal) = rest.get(2..2 + size) else {
                    return false;
                };
                if nal.first().is_some_and(|b| matches!(b & 0x1f, IDR | SPS)) {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, IDR | SPS)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_and_rate_limits() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut k = KeyframeThrottle::new(Duration::from_millis(300));
        assert!(k.request(ms(0)), "first request goes out at once");
        assert!(!k.request(ms(10)));
        assert!(!k.request(ms(20)));
        assert_eq!(k.poll_timeout(), Some(ms(300)));
        assert!(!k.handle_timeout(ms(299)));
        assert!(
            k.handle_timeout(ms(300)),
            "the coalesced request goes out once"
        );
        assert!(!k.handle_timeout(ms(301)));
        assert_eq!(k.poll_timeout(), None);
        assert!(k.request(ms(700)), "after a quiet interval, at once again");
    }

    #[test]
    fn a_keyframe_from_the_publisher_satisfies_pending_requests() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(5)));
        k.keyframe_seen();
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn detects_h264_keyframe_starts() {
        let cases: &[(&[u8], bool)] = &[
            (&[], false),
            (&[0x65, 0x88], true),                          // single IDR slice
            (&[0x67, 0x42], true),                          // single SPS
            (&[0x41, 0x9a], false),                         // non-IDR slice
            (&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68], true),  // STAP-A with SPS
            (&[0x78, 0, 1, 0x68, 0, 2, 0x41, 0x9a], false), // STAP-A with PPS + P slice
            (&[0x78, 0, 9, 0x67], false),                   // STAP-A truncated
            (&[0x7c, 0x85, 0xb8], true),                    // FU-A start of IDR
            (&[0x7c, 0x05, 0xb8], false),                   // FU-A middle of IDR
            (&[0x7c, 0x81, 0xb8], false),                   // FU-A start of P slice
        ];
        for (payload, want) in cases {
            assert_eq!(h264_keyframe_start(payload), *want, "{payload:02x?}");
        }
    }
}
