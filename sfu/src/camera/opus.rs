//! A camera's Opus audio, published as it is: Opus is what every subscriber decodes, so its
//! packets are only given the camera's audio SSRC, sequence numbers and payload type.
//!
//! retina depacketizes the codecs it knows into frames, Opus not among them, and its demuxer
//! refuses a session with a stream it cannot depacketize. The Opus stream therefore plays in a
//! second RTSP session of its own, read as plain RTP packets (one Opus packet each, RFC 7587),
//! beside the session whose H.264 the demuxer takes.

use super::rtsp::{CameraError, CameraSpec, first_line};
use crate::transcode::OpusHeader;
use bytes::BytesMut;
use futures_util::StreamExt;
use retina::client::{Described, PacketItem, Playing, Session};

/// The Opus stream of a camera, playing in its own RTSP session.
pub struct OpusSession {
    session: Session<Playing>,
    rewriter: OpusRewriter,
}

impl OpusSession {
    /// Opens a second session with the camera of `spec` and sets up its stream `index` alone
    /// (before the first session plays: a server that shares one pipeline among its sessions
    /// takes a stream only while its pipeline is not playing yet).
    pub async fn setup(spec: &CameraSpec, index: usize) -> Result<Session<Described>, CameraError> {
        let mut session = spec.describe().await?;
        session
            .setup(index, spec.setup_options())
            .await
            .map_err(CameraError::from_retina)?;
        Ok(session)
    }

    /// Plays a session [`Self::setup`] made; its packets get SSRC `ssrc`, numbered from `seq`.
    pub async fn play(
        session: Session<Described>,
        ssrc: u32,
        seq: u16,
    ) -> Result<Self, CameraError> {
        let session = session
            .play(retina::client::PlayOptions::default())
            .await
            .map_err(CameraError::from_retina)?;
        Ok(Self {
            session,
            rewriter: OpusRewriter { ssrc, seq },
        })
    }

    /// Waits for the camera's next Opus packet and appends it, as published, to `out`.
    pub async fn next(&mut self, out: &mut Vec<BytesMut>) -> Result<(), CameraError> {
        match self.session.next().await {
            None => Err(CameraError::Dropped(
                "the camera closed the audio session".into(),
            )),
            Some(Err(e)) => Err(CameraError::Dropped(first_line(&e.to_string()))),
            Some(Ok(PacketItem::Rtp(packet))) => {
                let timestamp = packet.timestamp().timestamp() as u32;
                out.extend(self.rewriter.packet(timestamp, packet.payload()));
                Ok(())
            }
            Some(Ok(_)) => Ok(()),
        }
    }
}

/// Numbers a camera's Opus packets as its audio stream: its own SSRC, consecutive sequence
/// numbers, the camera's 48 kHz timestamps.
#[derive(Debug)]
struct OpusRewriter {
    ssrc: u32,
    seq: u16,
}

impl OpusRewriter {
    /// The RTP packet publishing the Opus packet `payload` of 48 kHz timestamp `timestamp`;
    /// none for an empty payload (nothing to decode).
    fn packet(&mut self, timestamp: u32, payload: &[u8]) -> Option<BytesMut> {
        if payload.is_empty() {
            return None;
        }
        let header = OpusHeader {
            ssrc: self.ssrc,
            seq: self.seq,
            timestamp,
            level: None,
        };
        self.seq = self.seq.wrapping_add(1);
        header.packet(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::PAYLOAD_TYPE;
    use rtc::shared::marshal::Unmarshal;

    #[test]
    fn opus_packets_keep_their_payload_and_timestamps_and_take_the_cameras_numbering() {
        let mut encoder =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let tone: Vec<i16> = (0..960)
            .map(|i| ((i as f32 * 0.06).sin() * 8_000.0) as i16)
            .collect();
        let mut encoded = vec![0; 400];
        let len = encoder.encode(&tone, &mut encoded).unwrap();

        let mut rewriter = OpusRewriter {
            ssrc: 0xCAFE,
            seq: u16::MAX,
        };
        let packets: Vec<_> = [960u32, 1_920, 4_800]
            .into_iter()
            .filter_map(|ts| rewriter.packet(ts, &encoded[..len]))
            .map(|b| rtc::rtp::Packet::unmarshal(&mut &b[..]).unwrap())
            .collect();
        assert_eq!(packets.len(), 3);
        let seqs: Vec<_> = packets.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(seqs, [u16::MAX, 0, 1], "consecutive across the wrap");
        let stamps: Vec<_> = packets.iter().map(|p| p.header.timestamp).collect();
        assert_eq!(
            stamps,
            [960, 1_920, 4_800],
            "a gap in the camera's audio stays a gap"
        );
        let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        for p in &packets {
            assert_eq!(
                (p.header.ssrc, p.header.payload_type),
                (0xCAFE, PAYLOAD_TYPE)
            );
            assert_eq!(&p.payload[..], &encoded[..len]);
            let mut pcm = vec![0i16; 960];
            assert_eq!(decoder.decode(&p.payload, &mut pcm, false).unwrap(), 960);
        }
        assert!(rewriter.packet(5_760, &[]).is_none());
        assert_eq!(rewriter.seq, 2, "an empty payload takes no number");
    }
}
