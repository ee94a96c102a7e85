//! The picture a SIP call's far end sees: one participant's video at a time, the meeting's
//! active speaker (the first participant with video until someone speaks), forwarded as it is
//! (no transcoding) on one outgoing stream of the call.
//!
//! The node delivers every other participant's video on its own consumer SSRC; the view shows
//! one of them. A switch waits for the wanted stream's next keyframe (which the leg asks for),
//! then continues the outgoing sequence numbers and timestamps from where the last source
//! stopped, so the far end's decoder sees one stream. A far end that only takes packetization
//! mode 0 gets single NAL unit packets only (fragmented or aggregated ones are left out; the
//! browsers' H.264 is mostly small enough at the call's rates).

use crate::sip::media::rtp_payload_type;
use crate::sip::sdp::VideoLine;
use kaskade_media::media::ingest::DELIVERED_VIDEO;
use kaskade_media::media::keyframe::h264_keyframe_start;
use rtc::shared::marshal::{Marshal, Unmarshal};

/// 90 kHz ticks between the last frame of one source and the first of the next.
const SWITCH_GAP: u32 = 3_000;
/// NAL unit types that packetization mode 0 does not allow (STAP-A, STAP-B, MTAP, FU-A, FU-B).
const MODE_1_ONLY: [u8; 6] = [24, 25, 26, 27, 28, 29];

/// One outgoing video stream showing one delivered stream at a time.
#[derive(Debug)]
pub struct SpeakerView {
    ssrc: u32,
    payload_type: u8,
    single_nal_only: bool,
    current: Option<u32>,
    wanted: Option<u32>,
    /// The next outgoing sequence number and the timestamp of the last packet sent.
    seq: u16,
    last_timestamp: u32,
    /// Added to the shown stream's sequence numbers and timestamps.
    seq_offset: u16,
    timestamp_offset: u32,
    /// Packets left out because the far end takes mode 0 only.
    pub left_out: u64,
}

impl SpeakerView {
    /// A view for the agreed `line`, sending as `ssrc` from `seq` and `timestamp`.
    pub fn new(line: &VideoLine, ssrc: u32, seq: u16, timestamp: u32) -> Self {
        Self {
            ssrc,
            payload_type: line.send_payload_type,
            single_nal_only: line.packetization_mode == 0,
            current: None,
            wanted: None,
            seq,
            last_timestamp: timestamp.wrapping_sub(SWITCH_GAP),
            seq_offset: 0,
            timestamp_offset: 0,
            left_out: 0,
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

    /// A datagram the node delivered: the packet for the far end when it belongs to the shown
    /// stream (switching to the wanted one at its keyframe).
    pub fn packet(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        if rtp_payload_type(datagram) != Some(DELIVERED_VIDEO) {
            return None;
        }
        let packet = rtc::rtp::Packet::unmarshal(&mut &datagram[..]).ok()?;
        let header = &packet.header;
        if self.wanted == Some(header.ssrc) && h264_keyframe_start(&packet.payload) {
            self.current = self.wanted.take();
            self.seq_offset = self.seq.wrapping_sub(header.sequence_number);
            self.timestamp_offset = self
                .last_timestamp
                .wrapping_add(SWITCH_GAP)
                .wrapping_sub(header.timestamp);
        }
        if self.current != Some(header.ssrc) {
            return None;
        }
        let nal_type = packet.payload.first().map_or(0, |b| b & 0x1f);
        if self.single_nal_only && MODE_1_ONLY.contains(&nal_type) {
            self.left_out += 1;
            return None;
        }
        let timestamp = header.timestamp.wrapping_add(self.timestamp_offset);
        let out = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: header.marker,
                payload_type: self.payload_type,
                sequence_number: header.sequence_number.wrapping_add(self.seq_offset),
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: packet.payload,
        };
        self.seq = out.header.sequence_number.wrapping_add(1);
        self.last_timestamp = timestamp;
        out.marshal().ok().map(|bytes| bytes.to_vec())
    }
}

#[cfg(test)]
mod tests;
