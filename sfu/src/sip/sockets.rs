//! A SIP leg's sockets: RTP and RTCP with the far end for audio and video (each RTP socket
//! with the far end's latched address, each line with its SRTP contexts when it is sent by
//! SRTP), and the socket the node delivers the meeting's media to; one wait over all of them.
//!
//! What goes to the far end is sealed here and what comes from it opened here, so the rest of
//! the leg sees plain RTP whichever way the line was agreed.

use super::SipGateway;
use super::media::{IntoMeeting, Latch, RtpPair};
use super::sdes::{Srtp, SrtpError};
use super::sdp::{Agreement, LocalKeys, LocalMedia};
use crate::media::keyframe::keyframes_asked;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::ops::Deref;
use tokio::net::UdpSocket;
use tracing::debug;

/// Receive buffer of one socket: a datagram over this is not RTP kaskade takes.
const DATAGRAM: usize = 2_048;

/// What one wait brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrived {
    /// The far end's media, taken (the meeting's packets, if any, are in the caller's list).
    FromFarEnd,
    /// A datagram of the meeting's media, `n` bytes ([`LegSockets::meeting_datagram`]).
    FromMeeting(usize),
    /// The far end asked for a keyframe of what it is shown (RTCP PLI or FIR).
    KeyframeAsked,
    /// Something else (RTCP kaskade reads and leaves, a stranger's packet, one that did not
    /// authenticate, a failed read): it does not count as the far end being heard.
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
    /// The SRTP of the audio and the video line, when they are sent by SRTP.
    srtp: [Option<Srtp>; 2],
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
            srtp: Default::default(),
            buffers: std::array::from_fn(|_| vec![0; DATAGRAM]),
        })
    }

    /// What a leg on these sockets offers or answers with: the gateway's media address and
    /// SRTP policy, these ports (no video for a phone) and fresh keys.
    pub fn local_media(&self, gateway: &SipGateway, phone: bool) -> LocalMedia {
        LocalMedia {
            address: gateway.media_ip,
            audio_port: self.audio.port(),
            video_port: (!phone).then(|| self.video.port()),
            srtp: gateway.policy.srtp,
            keys: LocalKeys::random(&mut rand::rng()),
        }
    }

    /// Seals and opens each line as `agreement` says from now on ([`Srtp::rekey`] for a line
    /// that was SRTP before).
    pub fn protect(&mut self, agreement: &Agreement) -> Result<(), SrtpError> {
        let audio = agreement.audio.as_ref().and_then(|l| l.srtp);
        let video = agreement.video.as_ref().and_then(|l| l.srtp);
        for (slot, agreed) in self.srtp.iter_mut().zip([audio, video]) {
            match (slot.as_mut(), agreed) {
                (Some(srtp), Some(agreed)) => srtp.rekey(agreed)?,
                (None, Some(agreed)) => *slot = Some(Srtp::new(agreed)?),
                (_, None) => *slot = None,
            }
        }
        Ok(())
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
        let [audio_srtp, video_srtp] = &mut self.srtp;
        tokio::select! {
            Ok(n) = self.meeting.recv(meeting_buf) => Arrived::FromMeeting(n),
            Ok((n, from)) = self.audio.rtp.recv_from(audio_buf) => {
                match taken(audio_latch, audio_srtp, &audio_buf[..n], from) {
                    Some(packet) => {
                        into.audio(&packet, out);
                        Arrived::FromFarEnd
                    }
                    None => Arrived::Nothing,
                }
            }
            Ok((n, from)) = self.video.rtp.recv_from(video_buf) => {
                match taken(video_latch, video_srtp, &video_buf[..n], from) {
                    Some(packet) => {
                        into.video(&packet, out);
                        Arrived::FromFarEnd
                    }
                    None => Arrived::Nothing,
                }
            }
            _ = self.audio.rtcp.recv_from(audio_rtcp) => Arrived::Nothing,
            received = self.video.rtcp.recv_from(video_rtcp) => match received {
                Ok((n, _)) => match passed(video_srtp, &video_rtcp[..n], Srtp::open_rtcp) {
                    Some(rtcp) if asks_keyframe(&rtcp) => Arrived::KeyframeAsked,
                    _ => Arrived::Nothing,
                },
                Err(_) => Arrived::Nothing,
            },
        }
    }

    /// Sends one audio packet to the far end.
    pub async fn send_audio(&mut self, packet: &[u8], to: SocketAddr) {
        let Some(packet) = passed(&mut self.srtp[0], packet, Srtp::seal_rtp) else {
            return;
        };
        if let Err(e) = self.audio.rtp.send_to(&packet, to).await {
            debug!("audio to the far end: {e}");
        }
    }

    /// Sends one video packet to the far end.
    pub async fn send_video(&mut self, packet: &[u8], to: SocketAddr) {
        let Some(packet) = passed(&mut self.srtp[1], packet, Srtp::seal_rtp) else {
            return;
        };
        if let Err(e) = self.video.rtp.send_to(&packet, to).await {
            debug!("video to the far end: {e}");
        }
    }

    /// Sends an RTCP packet about video to the far end.
    pub async fn send_video_rtcp(
        &mut self,
        packet: &[u8],
        to: SocketAddr,
    ) -> std::io::Result<usize> {
        let packet = passed(&mut self.srtp[1], packet, Srtp::seal_rtcp)
            .ok_or_else(|| std::io::Error::other("SRTCP could not seal the packet"))?;
        self.video.rtcp.send_to(&packet, to).await
    }
}

/// What one SRTP operation does to a packet.
type SrtpStep = fn(&mut Srtp, &[u8]) -> Result<BytesMut, SrtpError>;

/// The far end's RTP packet from `from`, opened, when the line takes it: from the latched
/// source (or the first, which it latches) and, on an SRTP line, authenticated.
fn taken<'a>(
    latch: &mut Latch,
    srtp: &mut Option<Srtp>,
    datagram: &'a [u8],
    from: SocketAddr,
) -> Option<Passed<'a>> {
    if !latch.allows(from) {
        return None;
    }
    let packet = passed(srtp, datagram, Srtp::open_rtp)?;
    latch.take(from);
    Some(packet)
}

/// A packet as it is on a plain line, or as SRTP sealed or opened it.
enum Passed<'a> {
    Plain(&'a [u8]),
    Srtp(BytesMut),
}

impl Deref for Passed<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Passed::Plain(packet) => packet,
            Passed::Srtp(packet) => packet,
        }
    }
}

/// A packet through the line's SRTP `step` (as it is on a plain line); `None` when the step
/// fails: the far end's packet that does not authenticate or replays an earlier one is
/// dropped, as noise is.
fn passed<'a>(srtp: &mut Option<Srtp>, packet: &'a [u8], step: SrtpStep) -> Option<Passed<'a>> {
    match srtp {
        None => Some(Passed::Plain(packet)),
        Some(srtp) => match step(srtp, packet) {
            Ok(packet) => Some(Passed::Srtp(packet)),
            Err(e) => {
                debug!("{e}");
                None
            }
        },
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
