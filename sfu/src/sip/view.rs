//! The picture a SIP call's far end sees: one participant's video at a time, the meeting's
//! active speaker (the first participant with video until someone speaks), forwarded as it is
//! (no transcoding) on one outgoing stream of the call.
//!
//! The node delivers every other participant's video on its own consumer SSRC; the view shows
//! one of them. A switch waits for the wanted stream's next keyframe (which the leg asks for),
//! then numbers on from where the last source stopped (a loss stays a gap), so the far end's
//! decoder sees one stream. A far end that only takes packetization mode 0 gets one whole NAL
//! unit per packet: the browsers' aggregates split, their fragments put back together.

use crate::sip::h264::{Depacketizer, rtp_header, rtp_parts};
use crate::sip::sdp::VideoLine;
use kaskade_media::media::ingest::DELIVERED_VIDEO;
use kaskade_media::media::keyframe::h264_keyframe_start;

/// 90 kHz ticks between the last frame of one source and the first of the next.
const SWITCH_GAP: u32 = 3_000;
/// The widest gap in the shown stream's numbering kept as a gap (more is a jump, not loss).
const MAX_GAP: u16 = 1_000;

/// One outgoing video stream showing one delivered stream at a time.
#[derive(Debug)]
pub struct SpeakerView {
    ssrc: u32,
    payload_type: u8,
    /// Mode 0 only: whole NAL units, one per packet.
    single_nal: Option<Depacketizer>,
    current: Option<u32>,
    wanted: Option<u32>,
    /// The next outgoing sequence number and the timestamp of the last packet sent.
    seq: u16,
    last_timestamp: u32,
    /// The shown stream's last sequence number.
    last_in: Option<u16>,
    /// Added to the shown stream's timestamps.
    timestamp_offset: u32,
}

impl SpeakerView {
    /// A view for the agreed `line`, sending as `ssrc` from `seq` and `timestamp`.
    pub fn new(line: &VideoLine, ssrc: u32, seq: u16, timestamp: u32) -> Self {
        Self {
            ssrc,
            payload_type: line.send_payload_type,
            single_nal: (line.packetization_mode == 0).then(Depacketizer::default),
            current: None,
            wanted: None,
            seq,
            last_timestamp: timestamp.wrapping_sub(SWITCH_GAP),
            last_in: None,
            timestamp_offset: 0,
        }
    }

    /// The delivered stream (consumer SSRC) shown now.
    pub fn current(&self) -> Option<u32> {
        self.current
    }

    /// Shows the delivered stream `ssrc` from its next keyframe; true when the view changes
    /// (ask that stream for a keyframe), false when it is already shown or wanted.
    pub fn show(&mut self, ssrc: u32) -> bool {
        if self.current == Some(ssrc) {
            self.wanted = None;
            return false;
        }
        if self.wanted == Some(ssrc) {
            return false;
        }
        self.wanted = Some(ssrc);
        true
    }

    /// The stream waited for, if a switch is pending.
    pub fn wanted(&self) -> Option<u32> {
        self.wanted
    }

    /// A datagram the node delivered: the packets for the far end, appended to `out`, when it
    /// belongs to the shown stream (switching to the wanted one at its keyframe).
    pub fn packet(&mut self, datagram: &[u8], out: &mut Vec<Vec<u8>>) {
        let Some(parts) = rtp_parts(datagram).filter(|p| p.payload_type == DELIVERED_VIDEO) else {
            return;
        };
        if self.wanted == Some(parts.ssrc) && h264_keyframe_start(parts.payload) {
            self.current = self.wanted.take();
            self.last_in = None;
            self.timestamp_offset = self
                .last_timestamp
                .wrapping_add(SWITCH_GAP)
                .wrapping_sub(parts.timestamp);
        }
        if self.current != Some(parts.ssrc) {
            return;
        }
        // a loss in the shown stream stays a gap in what the far end gets
        if let Some(last) = self.last_in {
            let gap = parts.seq.wrapping_sub(last).wrapping_sub(1);
            if gap != 0 && gap < MAX_GAP {
                self.seq = self.seq.wrapping_add(gap);
                if let Some(depacketizer) = &mut self.single_nal {
                    depacketizer.lost();
                }
            }
        }
        self.last_in = Some(parts.seq);
        let timestamp = parts.timestamp.wrapping_add(self.timestamp_offset);
        self.last_timestamp = timestamp;
        let (ssrc, payload_type) = (self.ssrc, self.payload_type);
        let seq = &mut self.seq;
        let mut send = |payload: &[u8], marker: bool| {
            let mut packet = Vec::with_capacity(12 + payload.len());
            packet.extend_from_slice(&rtp_header((marker, payload_type), *seq, timestamp, ssrc));
            packet.extend_from_slice(payload);
            *seq = seq.wrapping_add(1);
            out.push(packet);
        };
        match &mut self.single_nal {
            None => send(parts.payload, parts.marker),
            Some(depacketizer) => {
                // the frame's marker goes on the last unit this packet completes (mode 0 is a
                // room system's rare path: a copy per unit is fine)
                let mut units = Vec::new();
                depacketizer.push(parts.payload, |unit| units.push(unit.to_vec()));
                let count = units.len();
                for (n, unit) in units.iter().enumerate() {
                    send(unit, parts.marker && n + 1 == count);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
