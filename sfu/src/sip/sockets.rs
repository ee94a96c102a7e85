//! A SIP leg's sockets: RTP and RTCP with the far end for audio and video (each RTP socket
//! with the far end's latched address), and the socket the node delivers the meeting's media
//! to; one wait over all of them.

use super::SipGateway;
use super::media::{IntoMeeting, Latch, RtpPair};
use crate::media::keyframe::keyframes_asked;
use bytes::BytesMut;
use std::net::SocketAddr;
use tokio::net::UdpSocket;
use tracing::debug;

/// Receive buffer of one socket: a datagram over this is not RTP kaskade takes.
const DATAGRAM: usize = 2_048;

/// What one wait brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrived {
    /// The far end's media (the meeting's packets, if any, are in the caller's list).
    FromFarEnd,
    /// A datagram of the meeting's media, `n` bytes ([`LegSockets::meeting_datagram`]).
    FromMeeting(usize),
    /// The far end asked for a keyframe of what it is shown (RTCP PLI or FIR).
    KeyframeAsked,
    /// Something else (RTCP kaskade reads and leaves, a failed read).
    Nothing,
}

/// A leg's sockets.
pub struct LegSockets {
    /// Audio with the far end.
    pub audio: RtpPair,
    /// Video with the far end.
    pub video: RtpPair,
    meeting: UdpSocket,
    latches: [Latch; 2],
    buffers: [Vec<u8>; 5],
}

impl LegSockets {
    /// Binds the far end's pairs on the gateway's media address and the meeting socket on the
    /// node's.
    pub async fn bind(gateway: &SipGateway) -> std::io::Result<Self> {
        Ok(Self {
            audio: RtpPair::bind(gateway.media_ip).await?,
            video: RtpPair::bind(gateway.media_ip).await?,
            meeting: UdpSocket::bind(SocketAddr::new(gateway.meeting_ip, 0)).await?,
            latches: Default::default(),
            buffers: std::array::from_fn(|_| vec![0; DATAGRAM]),
        })
    }

    /// Where the node delivers the meeting's media.
    pub fn meeting_addr(&self) -> std::io::Result<SocketAddr> {
        self.meeting.local_addr()
    }

    /// The meeting datagram the last wait brought ([`Arrived::FromMeeting`]).
    pub fn meeting_datagram(&self, n: usize) -> &[u8] {
        &self.buffers[4][..n.min(DATAGRAM)]
    }

    /// Waits for the next datagram on any socket: RTP from the far end becomes the meeting's
    /// packets in `out`.
    pub async fn receive(&mut self, into: &mut IntoMeeting, out: &mut Vec<BytesMut>) -> Arrived {
        let [audio_buf, video_buf, audio_rtcp, video_rtcp, meeting_buf] = &mut self.buffers;
        let [audio_latch, video_latch] = &mut self.latches;
        tokio::select! {
            Ok(n) = self.meeting.recv(meeting_buf) => Arrived::FromMeeting(n),
            Ok((n, from)) = self.audio.rtp.recv_from(audio_buf) => {
                if audio_latch.admits(from) {
                    into.audio(&audio_buf[..n], out);
                }
                Arrived::FromFarEnd
            }
            Ok((n, from)) = self.video.rtp.recv_from(video_buf) => {
                if video_latch.admits(from) {
                    into.video(&video_buf[..n], out);
                }
                Arrived::FromFarEnd
            }
            _ = self.audio.rtcp.recv_from(audio_rtcp) => Arrived::Nothing,
            received = self.video.rtcp.recv_from(video_rtcp) => match received {
                Ok((n, _)) if asks_keyframe(&video_rtcp[..n]) => Arrived::KeyframeAsked,
                _ => Arrived::Nothing,
            },
        }
    }

    /// Sends one audio packet to the far end.
    pub async fn send_audio(&self, packet: &[u8], to: SocketAddr) {
        if let Err(e) = self.audio.rtp.send_to(packet, to).await {
            debug!("audio to the far end: {e}");
        }
    }

    /// Sends one video packet to the far end.
    pub async fn send_video(&self, packet: &[u8], to: SocketAddr) {
        if let Err(e) = self.video.rtp.send_to(packet, to).await {
            debug!("video to the far end: {e}");
        }
    }

    /// Sends an RTCP packet about video to the far end.
    pub async fn send_video_rtcp(&self, packet: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        self.video.rtcp.send_to(packet, to).await
    }
}

/// Whether an RTCP compound packet carries a PLI or a FIR.
fn asks_keyframe(datagram: &[u8]) -> bool {
    keyframes_asked(datagram).is_ok_and(|ssrcs| !ssrcs.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Marshal;

    #[test]
    fn a_pli_or_a_fir_asks_for_a_keyframe_and_a_report_does_not() {
        let request = super::super::media::keyframe_request(1, 2, 3);
        assert!(asks_keyframe(&request));
        let report = rtc::rtcp::receiver_report::ReceiverReport {
            ssrc: 1,
            ..Default::default()
        };
        assert!(!asks_keyframe(&report.marshal().unwrap()));
        assert!(!asks_keyframe(&[0x80, 200, 0]));
    }
}
