//! Receivers of a participant: maps each remote track to its receive slot (SDP mid), then
//! counts, reassembles and decodes its media, attributing it to the participant the node's
//! slot map currently assigns to that mid, and asks for keyframes (PLI) after losses.

use std::sync::Arc;

use bytes::Bytes;
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;

use crate::audio::{AUDIO_LEVEL_URI, parse_audio_level};
use crate::join::ReceivedPacket;
use crate::peer::Shared;
use crate::signaling::MediaKind;
use crate::state::Event;
use kaskade_picture::receive::{H264Receiver, ReceiveOutcome, starts_keyframe};

/// Minimum interval between two PLIs for one slot.
const PLI_INTERVAL: Duration = Duration::from_millis(300);
/// How long a frame waits for a missing packet before it is given up (and a keyframe asked
/// for): over a long round trip a retransmission that is itself lost needs a second NACK, a
/// round trip later, and browsers wait for it too.
const REPAIR_WAIT: Duration = Duration::from_millis(1_000);

/// Maps each new remote track of `session` to its slot (mid) and starts its receiver task.
pub async fn dispatch_tracks(
    pc: Arc<dyn PeerConnection>,
    mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    shared: Arc<Shared>,
    session: u64,
) {
    while let Some(track) = tracks.recv().await {
        let mut mid = None;
        let mut level_ext = None;
        for transceiver in pc.get_transceivers().await {
            let Ok(Some(receiver)) = transceiver.receiver().await else {
                continue;
            };
            if Arc::as_ptr(receiver.track()).cast::<()>() != Arc::as_ptr(&track).cast::<()>() {
                continue;
            }
            mid = transceiver.mid().await.ok().flatten();
            if let Ok(params) = receiver.get_parameters().await {
                level_ext = params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == AUDIO_LEVEL_URI)
                    .map(|e| e.id as u8);
            }
            break;
        }
        let Some(mid) = mid else {
            tracing::warn!("remote track without a transceiver mid");
            continue;
        };
        let kind = match track.kind().await {
            RtpCodecKind::Video => MediaKind::Video,
            _ => MediaKind::Audio,
        };
        shared.update_session(
            session,
            Some(Event::TrackStarted {
                mid: mid.clone(),
                kind,
            }),
            |_| {},
        );
        let slot = Slot {
            mid,
            kind,
            level_ext,
            session,
        };
        tokio::spawn(receive_track(track, slot, Arc::clone(&shared)));
    }
}

/// One receive slot of one session.
struct Slot {
    mid: String,
    kind: MediaKind,
    level_ext: Option<u8>,
    session: u64,
}

/// Counts and decodes one slot's media until the track ends or its session is replaced.
async fn receive_track(track: Arc<dyn TrackRemote>, slot: Slot, shared: Arc<Shared>) {
    let Slot {
        mid,
        kind,
        level_ext,
        session,
    } = slot;
    let mut h264 =
        (kind == MediaKind::Video && shared.decode_video).then(|| H264Receiver::new(REPAIR_WAIT));
    let mut keyframes = KeyframeWant::default();
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        let now = Instant::now();
        let sequence = packet.header.sequence_number;
        let keyframe_start = kind == MediaKind::Video && starts_keyframe(&packet.payload);
        let len = packet.payload.len() as u64;
        let media_ssrc = packet.header.ssrc;
        let level = level_ext
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|p| parse_audio_level(&p));
        let sunk = shared
            .sink
            .as_ref()
            .map(|_| sink_packet(&packet.header, packet.payload.clone()));
        let outcome = h264.as_mut().map(|r| {
            r.push(
                now,
                packet.header.sequence_number,
                packet.header.timestamp,
                packet.header.marker,
                packet.payload,
            )
        });
        let counted = shared.with_session(session, |s| {
            let owner = s.slot_owner(&mid);
            let level = level.map(|(level, _voice)| level);
            s.stats
                .count_received(owner, kind, len, outcome.as_ref(), level, now);
            owner
        });
        let Some(owner) = counted else {
            break;
        };
        if let (Some(sink), Some(from), Some(packet)) = (&shared.sink, owner, sunk) {
            (sink.0)(ReceivedPacket {
                from,
                kind,
                packet,
                arrival: now,
            });
        }
        if keyframes.pli_due(now, kind, sequence, keyframe_start, outcome.as_ref()) {
            // a receive-only client has no SSRC of its own: the stream's stands in as the
            // sender, so SFUs that find a feedback packet's stream by its sender SSRC (Janus,
            // for a PLI sent without a receiver report ahead) find it
            let pli = PictureLossIndication {
                sender_ssrc: media_ssrc,
                media_ssrc,
            };
            if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                tracing::debug!("sending PLI: {e}");
            }
        }
    }
}

/// The packet a sink gets: the RTP header fields it needs (cloning the whole header would copy
/// its extension list) and the payload, shared.
pub fn sink_packet(header: &rtc::rtp::header::Header, payload: Bytes) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: header.version,
            marker: header.marker,
            payload_type: header.payload_type,
            sequence_number: header.sequence_number,
            timestamp: header.timestamp,
            ssrc: header.ssrc,
            ..Default::default()
        },
        payload,
    }
}

/// When one receive slot asks for a keyframe (PLI): a decoder knows when it needs one. Without
/// one (a recorder, the load generator) the slot waits for a keyframe from its first video
/// packet until one starts, and again after a sequence gap (the next pictures may not decode),
/// asking every [`PLI_INTERVAL`] while it waits: a request or a keyframe lost on the way (a
/// keyframe that arrived before this side's SRTP keys were in place, say) is asked for again
/// rather than awaited until the publisher's next keyframe of its own.
#[derive(Debug, Default)]
pub struct KeyframeWant {
    next_seq: Option<u16>,
    last_pli: Option<Instant>,
    keyframe_seen: bool,
}

impl KeyframeWant {
    /// Whether to send a PLI now, on the packet `sequence` of a `kind` slot (`keyframe_start`
    /// when it starts a keyframe) whose decoder (if any) made `outcome` of it.
    pub fn pli_due(
        &mut self,
        now: Instant,
        kind: MediaKind,
        sequence: u16,
        keyframe_start: bool,
        outcome: Option<&ReceiveOutcome>,
    ) -> bool {
        let gap = self.next_seq.is_some_and(|expected: u16| {
            sequence.wrapping_sub(expected) < 0x8000 && sequence != expected
        });
        self.next_seq = Some(sequence.wrapping_add(1));
        if gap {
            self.keyframe_seen = false;
        }
        self.keyframe_seen |= keyframe_start;
        let wants_keyframe = match outcome {
            Some(o) => o.want_keyframe,
            None => kind == MediaKind::Video && !self.keyframe_seen,
        };
        let due = wants_keyframe
            && self
                .last_pli
                .is_none_or(|t| now.duration_since(t) >= PLI_INTERVAL);
        if due {
            self.last_pli = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDR: &[u8] = &[0x65, 0x88];
    const SLICE: &[u8] = &[0x41, 0x9a];

    /// Feeds `packets` (sequence, payload) to a slot without a decoder, 100 ms apart; returns
    /// the sequences that asked for a keyframe.
    fn plis(kind: MediaKind, packets: &[(u16, &[u8])]) -> Vec<u16> {
        let mut want = KeyframeWant::default();
        let t0 = Instant::now();
        packets
            .iter()
            .enumerate()
            .filter(|&(i, &(seq, payload))| {
                let now = t0 + Duration::from_millis(100) * i as u32;
                want.pli_due(now, kind, seq, starts_keyframe(payload), None)
            })
            .map(|(_, &(seq, _))| seq)
            .collect()
    }

    #[test]
    fn a_slot_that_starts_without_a_keyframe_asks_until_one_comes() {
        let packets: Vec<(u16, &[u8])> = (1..=8).map(|s| (s, SLICE)).chain([(9, IDR)]).collect();
        // every 300 ms while waiting, then nothing once the keyframe started
        assert_eq!(plis(MediaKind::Video, &packets), [1, 4, 7]);
        let mut then: Vec<(u16, &[u8])> = packets.clone();
        then.extend([(10, SLICE), (11, SLICE), (12, SLICE), (13, SLICE)]);
        assert_eq!(plis(MediaKind::Video, &then), [1, 4, 7]);
    }

    #[test]
    fn a_gap_after_a_keyframe_asks_again_and_audio_never_asks() {
        let packets: [(u16, &[u8]); 5] = [(1, IDR), (2, SLICE), (5, SLICE), (6, SLICE), (7, IDR)];
        assert_eq!(plis(MediaKind::Video, &packets), [5]);
        assert!(plis(MediaKind::Audio, &[(1, SLICE), (9, SLICE)]).is_empty());
    }

    #[test]
    fn keyframes_are_found_in_every_packetization() {
        assert!(starts_keyframe(IDR));
        assert!(starts_keyframe(&[0x67, 0x42])); // SPS
        assert!(!starts_keyframe(SLICE));
        // STAP-A with an SPS after an SEI
        assert!(starts_keyframe(&[0x78, 0, 2, 0x06, 0xff, 0, 2, 0x67, 0x42]));
        assert!(!starts_keyframe(&[0x78, 0, 2, 0x06, 0xff, 0, 9, 0x67]));
        // FU-A: the start fragment of an IDR, not its middle
        assert!(starts_keyframe(&[0x7c, 0x85, 0x88]));
        assert!(!starts_keyframe(&[0x7c, 0x05, 0x88]));
        assert!(!starts_keyframe(&[]));
    }
}
