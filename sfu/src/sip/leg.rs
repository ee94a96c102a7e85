//! One SIP call's life: in the meeting as a source participant from the moment it is dialled,
//! placed (calling, ringing), answered, its media into the meeting while it lasts, and its
//! end, whichever side hangs up.

use super::failure::CallFailure;
use super::media::{IntoMeeting, Latch, RtpPair, VIDEO_PAYLOAD_TYPE, keyframe_request};
use super::mix::Mixer;
use super::sdp::{self, Agreement, LocalMedia};
use super::ua::{Call, CallEvent, Reply, Step};
use super::{LegCommand, Registered, SipGateway, Teller};
use crate::media::core::JoinRequest;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::ingest::Delivery;
use crate::media::transport::Publication;
use crate::node::{NodeHandle, SESSION_QUEUE, SessionEvent};
use crate::signaling::protocol::{
    DialRequest, ErrorCode, ServerMessage, Source, SourceKind, SourceState,
};
use crate::transcode;
use bytes::BytesMut;
use rand::Rng;
use rsipstack::sip::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// The longest SIP address taken.
const MAX_URI: usize = 256;
/// The least time between two SIP INFO keyframe requests (RTCP ones go every time).
const INFO_INTERVAL: Duration = Duration::from_secs(1);
/// Receive buffer of one RTP socket: a datagram over this is not RTP kaskade takes.
const DATAGRAM: usize = 2_048;
/// The far end hears up to this many other participants (a full room of ten).
const HEARD: usize = 9;
/// A packet of the meeting's sound goes to the far end this often.
const AUDIO_FRAME: Duration = Duration::from_millis(20);

/// Dials `request` into `meeting` and runs the call until it ends.
pub(super) async fn run(
    gateway: Arc<SipGateway>,
    node: NodeHandle,
    meeting: String,
    request: DialRequest,
    tell: Teller,
) {
    let uri = request.uri.trim().to_string();
    if let Err(why) = check_address(&uri) {
        tell.say(ServerMessage::error(ErrorCode::BadRequest, why))
            .await;
        return;
    }
    let mut leg = match Leg::join(&gateway, node, meeting, &uri, &request.name).await {
        Ok(leg) => leg,
        Err(why) => {
            let message = format!("{uri}: {why}");
            tell.say(ServerMessage::error(ErrorCode::CallFailed, message))
                .await;
            return;
        }
    };
    info!(participant = %leg.id, %uri, "dialling");
    tell.say(ServerMessage::Dialling {
        id: leg.id,
        uri: uri.clone(),
    })
    .await;
    match leg.place(&gateway, &uri).await {
        Placed::Answered(call, agreement) => leg.converse(call, agreement).await,
        Placed::Failed(failure) => {
            info!(participant = %leg.id, %uri, "call failed: {failure}");
            let message = format!("{uri}: {failure}");
            tell.say(ServerMessage::error(ErrorCode::CallFailed, message))
                .await;
        }
        Placed::HungUp => info!(participant = %leg.id, %uri, "hung up while ringing"),
    }
    let _ = leg.node.leave(leg.id).await;
}

/// A SIP address kaskade dials: `sip:` (TLS, `sips:`, is not there yet), something after it,
/// no spaces, not absurdly long.
fn check_address(uri: &str) -> Result<(), String> {
    let rest = uri
        .get(..4)
        .filter(|scheme| scheme.eq_ignore_ascii_case("sip:"))
        .map(|_| &uri[4..])
        .ok_or_else(|| format!("{uri:?} is not a sip: address"))?;
    if rest.is_empty() || uri.len() > MAX_URI || uri.chars().any(char::is_whitespace) {
        return Err(format!("{uri:?} is not a SIP address kaskade can dial"));
    }
    Ok(())
}

/// The tile's name: the one asked for, or the address's user part (its host when it has none).
fn display_name(uri: &str, asked: &str) -> String {
    let asked = asked.trim();
    if !asked.is_empty() {
        return asked.chars().take(64).collect();
    }
    let address = &uri[4..];
    let address = address.split([';', '?']).next().unwrap_or(address);
    match address.split_once('@') {
        Some((user, _)) if !user.is_empty() => user.into(),
        Some((_, host)) => host.into(),
        None => address.into(),
    }
}

/// What a SIP leg publishes: the far end's H.264 and its audio as Opus. Room systems answer
/// keyframe requests, so no group of pictures is cached.
fn publication() -> Publication {
    Publication {
        payload_kinds: vec![
            (VIDEO_PAYLOAD_TYPE, MediaKind::Video),
            (transcode::PAYLOAD_TYPE, MediaKind::Audio),
        ],
        audio_level_ext: None,
        cache_gop: false,
    }
}

/// How placing a call ended.
enum Placed {
    /// Answered, with what was agreed.
    Answered(Call, Agreement),
    /// Failed, and why.
    Failed(CallFailure),
    /// Removed from the meeting (hung up) while it rang.
    HungUp,
}

/// One call in the meeting.
struct Leg {
    node: NodeHandle,
    id: ParticipantId,
    events: mpsc::Receiver<SessionEvent>,
    commands: mpsc::Receiver<LegCommand>,
    _registered: Registered,
    sockets: LegSockets,
    local: LocalMedia,
    session_id: u64,
    sdp_version: u64,
    /// The SSRC of what kaskade sends (its RTCP, the Opus it transcodes).
    ssrc: u32,
    fir_seq: u8,
    last_info: Option<Instant>,
    /// The meeting's sound for the far end, once the call agreed on audio kaskade sends.
    mixer: Option<Mixer>,
}

impl Leg {
    /// Binds the call's RTP and joins the meeting as a source that is being called.
    async fn join(
        gateway: &Arc<SipGateway>,
        node: NodeHandle,
        meeting: String,
        uri: &str,
        name: &str,
    ) -> Result<Self, String> {
        let sockets = LegSockets::bind(gateway).await.map_err(|e| e.to_string())?;
        let local = LocalMedia {
            address: gateway.media_ip,
            audio_port: sockets.audio.port(),
            video_port: sockets.video.port(),
        };
        let (events_tx, events) = mpsc::channel(SESSION_QUEUE);
        let join = JoinRequest::source(meeting.clone(), uri.into(), display_name(uri, name), "sip");
        let source = Source {
            kind: SourceKind::Sip,
            state: SourceState::Calling,
            detail: Some(uri.into()),
        };
        let delivery = Delivery {
            to: sockets.meeting.local_addr().map_err(|e| e.to_string())?,
            audio_slots: HEARD,
            video_slots: 0,
        };
        let admitted = node
            .join_source(join, source, (publication(), Some(delivery)), events_tx)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|(_, why)| why)?;
        let (registered, commands) = gateway.register(admitted.id, meeting);
        let mut rng = rand::rng();
        Ok(Self {
            node,
            id: admitted.id,
            events,
            commands,
            _registered: registered,
            sockets,
            local,
            session_id: rng.random_range(1..1 << 48),
            sdp_version: 1,
            ssrc: rng.random(),
            fir_seq: 0,
            last_info: None,
            mixer: None,
        })
    }

    /// Sends the INVITE and follows it until it is answered, fails, rings too long or the
    /// participant is removed.
    async fn place(&mut self, gateway: &SipGateway, uri: &str) -> Placed {
        let offer = sdp::offer(&self.local, self.session_id, self.sdp_version);
        let mut dialling = match gateway.ua.dial(uri, "kaskade", offer) {
            Ok(dialling) => dialling,
            Err(failure) => return Placed::Failed(failure),
        };
        let give_up = tokio::time::sleep(gateway.ring_timeout);
        tokio::pin!(give_up);
        loop {
            tokio::select! {
                step = dialling.next() => match step {
                    Step::Ringing => self.set_state(SourceState::Ringing).await,
                    Step::Answered(answer) => {
                        let call = dialling.established();
                        return match sdp::read_answer(&answer) {
                            Ok(agreement) => Placed::Answered(call, agreement),
                            Err(e) => {
                                call.hang_up().await;
                                Placed::Failed(CallFailure::no_common_codec(e.to_string()))
                            }
                        };
                    }
                    Step::Failed(failure) => return Placed::Failed(failure),
                },
                event = self.events.recv() => {
                    if !still_wanted(event.as_ref()) {
                        dialling.cancel().await;
                        return Placed::HungUp;
                    }
                }
                _ = &mut give_up => {
                    dialling.cancel().await;
                    return Placed::Failed(CallFailure::no_answer());
                }
            }
        }
    }

    /// The answered call: the far end's media into the meeting and the meeting's sound to it,
    /// keyframe requests to it, its re-offers answered, until either side hangs up.
    async fn converse(&mut self, mut call: Call, mut agreement: Agreement) {
        let mut into = match self.agree(&agreement) {
            Ok(into) => into,
            Err(e) => {
                warn!(participant = %self.id, "SIP leg media: {e}");
                call.hang_up().await;
                return;
            }
        };
        self.set_state(SourceState::Live).await;
        let mut packets = Vec::new();
        let mut frames = tokio::time::interval(AUDIO_FRAME);
        frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = self.sockets.receive(&mut into, self.mixer.as_mut(), &mut packets) => {
                    if !packets.is_empty()
                        && self.node.ingest(self.id, std::mem::take(&mut packets)).await.is_err()
                    {
                        call.hang_up().await;
                        return;
                    }
                }
                _ = frames.tick() => self.send_sound(&agreement).await,
                Some(LegCommand::Dtmf(digits)) = self.commands.recv() => {
                    let scheduled = self
                        .mixer
                        .as_mut()
                        .is_some_and(|m| m.schedule_keys(Instant::now(), &digits));
                    if !scheduled {
                        call.dtmf_info(digits);
                    }
                }
                event = self.events.recv() => match event {
                    Some(SessionEvent::KeyframeWanted) => {
                        self.ask_keyframe(&call, &into, &agreement).await;
                    }
                    Some(SessionEvent::Message(_)) => {}
                    Some(SessionEvent::Close) | None => {
                        call.hang_up().await;
                        return;
                    }
                },
                event = call.next() => match event {
                    CallEvent::Ended(why) => {
                        info!(participant = %self.id, "SIP call ended: {why}");
                        return;
                    }
                    CallEvent::KeyframeWanted => {
                        debug!(participant = %self.id, "the far end asks for a keyframe");
                    }
                    CallEvent::Reoffer(offer, reply) => {
                        if let Some(agreed) = self.reoffer(&offer, reply, &mut into).await {
                            agreement = agreed;
                        }
                    }
                },
            }
        }
    }

    /// What the far end's packets become in the meeting, and the mixer of the meeting's sound
    /// for it (continuing the stream of the mixer before, if any), for `agreement`.
    fn agree(&mut self, agreement: &Agreement) -> Result<IntoMeeting, String> {
        let into = IntoMeeting::new(agreement, self.ssrc, 0)?;
        let (seq, timestamp) = match &self.mixer {
            Some(mixer) => mixer.position(),
            None => (rand::rng().random(), rand::rng().random()),
        };
        self.mixer = match agreement.audio.as_ref().filter(|line| line.flow.send) {
            Some(line) => Some(Mixer::new(line, self.ssrc, seq, timestamp)?),
            None => None,
        };
        Ok(into)
    }

    /// Answers a re-offer (hold, resume, a new codec): the new agreement, or `None` when it
    /// was refused (the call goes on as agreed before).
    async fn reoffer(
        &mut self,
        offer: &str,
        reply: Reply,
        into: &mut IntoMeeting,
    ) -> Option<Agreement> {
        self.sdp_version += 1;
        let answered = sdp::answer(offer, &self.local, self.session_id, self.sdp_version);
        match answered
            .map_err(|e| e.to_string())
            .and_then(|(answer, agreed)| {
                let media = self.agree(&agreed)?;
                Ok((answer, agreed, media))
            }) {
            Ok((answer, agreed, media)) => {
                reply.sdp(answer).await;
                *into = media;
                Some(agreed)
            }
            Err(why) => {
                debug!(participant = %self.id, "re-offer refused: {why}");
                reply.refuse(StatusCode::NotAcceptableHere).await;
                None
            }
        }
    }

    /// One 20 ms frame of the meeting's sound (or DTMF) to the far end.
    async fn send_sound(&mut self, agreement: &Agreement) {
        let (Some(mixer), Some(line)) = (self.mixer.as_mut(), agreement.audio.as_ref()) else {
            return;
        };
        let mut out = Vec::new();
        mixer.tick(Instant::now(), &mut out);
        for packet in out {
            if let Err(e) = self.sockets.audio.rtp.send_to(&packet, line.remote).await {
                debug!(participant = %self.id, "audio to the far end: {e}");
            }
        }
    }

    /// Asks the far end for a keyframe: RTCP PLI and FIR to its video's RTCP port, and SIP
    /// INFO `picture_fast_update` (at most once a second) for systems that only read that.
    async fn ask_keyframe(&mut self, call: &Call, into: &IntoMeeting, agreement: &Agreement) {
        let (Some(video), Some(media_ssrc)) = (&agreement.video, into.video_ssrc) else {
            return;
        };
        self.fir_seq = self.fir_seq.wrapping_add(1);
        let rtcp = SocketAddr::new(video.remote.ip(), video.remote.port().wrapping_add(1));
        let request = keyframe_request(self.ssrc, media_ssrc, self.fir_seq);
        if let Err(e) = self.sockets.video.rtcp.send_to(&request, rtcp).await {
            debug!(participant = %self.id, "RTCP keyframe request: {e}");
        }
        if self
            .last_info
            .is_none_or(|at| at.elapsed() >= INFO_INTERVAL)
        {
            self.last_info = Some(Instant::now());
            call.picture_fast_update();
        }
    }

    async fn set_state(&self, state: SourceState) {
        let _ = self.node.set_source_state(self.id, state, None).await;
    }
}

/// Whether an event from the core leaves the call in the meeting.
fn still_wanted(event: Option<&SessionEvent>) -> bool {
    !matches!(event, None | Some(SessionEvent::Close))
}

/// A leg's sockets: RTP and RTCP with the far end (each with its latched address), and the
/// socket the node delivers the meeting's media to.
struct LegSockets {
    audio: RtpPair,
    video: RtpPair,
    meeting: UdpSocket,
    latches: [Latch; 2],
    buffers: [Vec<u8>; 5],
}

impl LegSockets {
    async fn bind(gateway: &SipGateway) -> std::io::Result<Self> {
        Ok(Self {
            audio: RtpPair::bind(gateway.media_ip).await?,
            video: RtpPair::bind(gateway.media_ip).await?,
            meeting: UdpSocket::bind(SocketAddr::new(gateway.meeting_ip, 0)).await?,
            latches: Default::default(),
            buffers: std::array::from_fn(|_| vec![0; DATAGRAM]),
        })
    }

    /// Waits for the next datagram on any socket: RTP from the far end becomes the meeting's
    /// packets in `out`, the meeting's media goes to the `mixer`, RTCP is read and left
    /// (kaskade's own reports come later).
    async fn receive(
        &mut self,
        into: &mut IntoMeeting,
        mixer: Option<&mut Mixer>,
        out: &mut Vec<BytesMut>,
    ) {
        let [audio_buf, video_buf, audio_rtcp, video_rtcp, meeting_buf] = &mut self.buffers;
        let [audio_latch, video_latch] = &mut self.latches;
        tokio::select! {
            Ok(n) = self.meeting.recv(meeting_buf) => {
                if let Some(mixer) = mixer {
                    mixer.push(Instant::now(), &meeting_buf[..n]);
                }
            }
            Ok((n, from)) = self.audio.rtp.recv_from(audio_buf) => {
                if audio_latch.admits(from) {
                    into.audio(&audio_buf[..n], out);
                }
            }
            Ok((n, from)) = self.video.rtp.recv_from(video_buf) => {
                if video_latch.admits(from) {
                    into.video(&video_buf[..n], out);
                }
            }
            _ = self.audio.rtcp.recv_from(audio_rtcp) => {}
            _ = self.video.rtcp.recv_from(video_rtcp) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_sip_addresses_are_dialled() {
        for good in [
            "sip:room@192.0.2.1",
            "SIP:7001@mcu.example.org:5060;transport=udp",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "sip:",
            "tel:+4930123",
            "sips:room@x",
            "sip:a b@x",
            "room@x",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        assert!(check_address(&format!("sip:{}", "a".repeat(300))).is_err());
    }

    #[test]
    fn a_call_is_named_as_asked_or_after_its_address() {
        assert_eq!(
            display_name("sip:boardroom@mcu.example.org", ""),
            "boardroom"
        );
        assert_eq!(
            display_name("sip:mcu.example.org;transport=tcp", " "),
            "mcu.example.org"
        );
        assert_eq!(display_name("sip:@host", ""), "host");
        assert_eq!(display_name("sip:7001@x", "Oslo office"), "Oslo office");
    }
}
