//! One SIP call's life: in the meeting as a source participant from the moment it is dialled,
//! placed (calling, ringing), answered, its media into the meeting while it lasts, and its
//! end, whichever side hangs up.

use super::failure::CallFailure;
use super::grid::Composed;
use super::media::{IntoMeeting, VIDEO_PAYLOAD_TYPE, keyframe_request};
use super::metrics::Direction;
use super::mix::Mixer;
use super::outgoing::Outgoing;
use super::sdp::{self, Agreement, LocalMedia, OfferedProtection};
use super::sockets::{Arrived, LegSockets};
use super::ua::{Call, CallEvent, Reply, Step};
use super::{Callee, LegCommand, Placement, Registered, SipGateway, Teller, Wanted};
use crate::media::core::JoinRequest;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::ingest::Delivery;
use crate::media::participant::CallNote;
use crate::media::transport::Publication;
use crate::node::{NodeHandle, SESSION_QUEUE, SessionEvent};
use crate::signaling::protocol::{
    ClientMessage, ErrorCode, ServerMessage, Source, SourceKind, SourceState,
};
use crate::transcode;
use bytes::BytesMut;
use rand::Rng;
use rsipstack::sip::StatusCode;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::shared::marshal::Marshal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// The least time between two SIP INFO keyframe requests (RTCP ones go every time).
const INFO_INTERVAL: Duration = Duration::from_secs(1);
/// The far end hears up to this many other participants (a full room of ten), and its
/// picture shows one of as many.
const HEARD: usize = 9;
/// A packet of the meeting's sound goes to the far end this often.
const AUDIO_FRAME: Duration = Duration::from_millis(20);

/// Calls whom `wanted` names into `meeting` for `caller` and runs the call until it ends.
pub(super) async fn run(
    gateway: Arc<SipGateway>,
    node: NodeHandle,
    (meeting, caller): (String, String),
    wanted: Wanted,
    tell: Teller,
) {
    let callee = match wanted {
        Wanted::Dial(request) => gateway.dialplan.callee(&request).await,
        Wanted::Phone { number, name } => gateway.dialplan.phone(&number, &name),
    };
    let callee = match callee {
        Ok(callee) => callee,
        Err((code, why)) => {
            tell.say(ServerMessage::error(code, why)).await;
            return;
        }
    };
    let uri = callee.uri.clone();
    let joined = match LegSockets::bind(&gateway).await {
        Ok(sockets) => Leg::join(&gateway, node, (meeting, &caller), &callee, sockets).await,
        Err(e) => Err(e.to_string()),
    };
    let mut leg = match joined {
        Ok(leg) => leg,
        Err(why) => {
            let message = format!("{uri}: {why}");
            tell.say(ServerMessage::error(ErrorCode::CallFailed, message))
                .await;
            return;
        }
    };
    info!(participant = %leg.id, %uri, "dialling");
    leg.note(&caller, "calling").await;
    tell.say(ServerMessage::Dialling {
        id: leg.id,
        uri: uri.clone(),
    })
    .await;
    let placed = leg.place(&gateway, &callee).await;
    let result = match &placed {
        Placed::Answered(_) => "answered",
        Placed::Failed(failure) => failure.reason.as_str(),
        Placed::HungUp => "cancelled",
    };
    gateway.metrics.outcome(Direction::Out, result);
    match placed {
        Placed::Answered(answered) => {
            let (call, agreement) = *answered;
            gateway.metrics.answered(&agreement);
            leg.note(&caller, "answered").await;
            if let Some(ended) = leg.converse(call, agreement, gateway.policy.media).await {
                leg.note(&caller, ended).await;
            }
        }
        Placed::Failed(failure) => {
            info!(participant = %leg.id, %uri, "call failed: {failure}");
            leg.note(&caller, &failure.to_string()).await;
            let message = format!("{uri}: {failure}");
            tell.say(ServerMessage::error(ErrorCode::CallFailed, message))
                .await;
        }
        Placed::HungUp => {
            info!(participant = %leg.id, %uri, "hung up while ringing");
            leg.note(&caller, "cancelled").await;
        }
    }
    leg.leave().await;
}

/// What a SIP leg publishes: the far end's H.264 and its audio as Opus. Room systems answer
/// keyframe requests, so no group of pictures is cached.
fn publication() -> Publication {
    Publication {
        payload_kinds: vec![
            (VIDEO_PAYLOAD_TYPE, MediaKind::Video),
            (transcode::PAYLOAD_TYPE, MediaKind::Audio),
        ],
        audio_level_ext: Some(transcode::AUDIO_LEVEL_EXT),
        cache_gop: false,
    }
}

/// How placing a call ended.
enum Placed {
    /// Answered, with what was agreed.
    Answered(Box<(Call, Agreement)>),
    /// Failed, and why.
    Failed(CallFailure),
    /// Removed from the meeting (hung up) while it rang.
    HungUp,
}

/// One call in the meeting.
pub(super) struct Leg {
    node: NodeHandle,
    id: ParticipantId,
    events: mpsc::Receiver<SessionEvent>,
    commands: mpsc::Receiver<LegCommand>,
    _registered: Registered,
    sockets: LegSockets,
    local: LocalMedia,
    session_id: u64,
    sdp_version: u64,
    /// kaskade's last session description (its offer, or its answer to a re-offer), offered
    /// again unchanged to a re-INVITE that brings no offer (a session refresh).
    described: Option<String>,
    /// The SSRC of what kaskade sends (its RTCP, the Opus it transcodes).
    ssrc: u32,
    fir_seq: u8,
    last_info: Option<Instant>,
    /// The meeting's sound and picture for the far end.
    outgoing: Outgoing,
}

impl Leg {
    /// Joins the meeting as a source that is being called (or, dialling in, answered), with the
    /// call's `sockets`.
    pub(super) async fn join(
        gateway: &Arc<SipGateway>,
        node: NodeHandle,
        (meeting, caller): (String, &str),
        callee: &Callee,
        sockets: LegSockets,
    ) -> Result<Self, String> {
        let local = sockets.local_media(gateway, callee.phone);
        let (events_tx, events) = mpsc::channel(SESSION_QUEUE);
        let uri = &callee.uri;
        let (kind, record_kind) = if callee.phone {
            (SourceKind::Phone, "phone")
        } else {
            (SourceKind::Sip, "sip")
        };
        let join = JoinRequest::source(
            meeting.clone(),
            uri.clone(),
            callee.name.clone(),
            record_kind,
        );
        let source = Source {
            kind,
            state: SourceState::Calling,
            detail: Some(uri.clone()),
        };
        let (ssrc, ssrc_base, session_id): (u32, u32, u64) = {
            let mut rng = rand::rng();
            (rng.random(), rng.random(), rng.random_range(1..1 << 48))
        };
        let delivery = Delivery {
            to: sockets.meeting_addr().map_err(|e| e.to_string())?,
            audio_slots: HEARD,
            video_slots: HEARD,
            ssrc_base,
        };
        let admitted = node
            .join_source(join, source, (publication(), Some(delivery)), events_tx)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|(_, why)| why)?;
        let placed = Placement {
            meeting,
            caller: caller.into(),
            phone: callee.phone,
        };
        let (registered, commands) = gateway.register(admitted.id, placed);
        // who is there already, and who speaks
        let picture = (gateway.policy.picture, gateway.grids.clone());
        let mut outgoing = Outgoing::new(delivery, ssrc.wrapping_add(2), picture);
        outgoing.observe(&admitted.welcome);
        Ok(Self {
            node,
            id: admitted.id,
            events,
            commands,
            _registered: registered,
            sockets,
            local,
            session_id,
            sdp_version: 1,
            described: None,
            ssrc,
            fir_seq: 0,
            last_info: None,
            outgoing,
        })
    }

    /// Leaves the meeting (the call is over).
    pub(super) async fn leave(self) {
        let _ = self.node.leave(self.id).await;
    }

    /// Goes on with the session kaskade answered a call dialling in with: its `o=` session
    /// id, and the answer it described it with.
    pub(super) fn continue_session(&mut self, session_id: u64, answer: String) {
        self.session_id = session_id;
        self.described = Some(answer);
    }

    /// Sends what the call's far end hears from `mixer` on (the voice menu's stream goes on).
    pub(super) fn continue_sound(&mut self, mixer: Mixer) {
        self.outgoing.adopt(mixer);
    }

    /// Sends the INVITE and follows it until it is answered, fails, rings too long or the
    /// participant is removed: each offer the SRTP policy makes in turn, the next when the far
    /// end finds nothing it takes in the one before (best-effort SRTP, then `RTP/SAVP`).
    async fn place(&mut self, gateway: &SipGateway, callee: &Callee) -> Placed {
        let give_up = tokio::time::sleep(gateway.policy.ring);
        tokio::pin!(give_up);
        let mut placed = Placed::Failed(CallFailure::local("no offer to make"));
        for &protection in gateway.policy.srtp.offers() {
            placed = self
                .offer(gateway, callee, protection, give_up.as_mut())
                .await;
            match &placed {
                Placed::Failed(failure) if failure.is_no_common_codec() => {
                    debug!(participant = %self.id, ?protection, "offer refused: {failure}");
                    self.sdp_version += 1;
                }
                _ => break,
            }
        }
        placed
    }

    /// One INVITE with an offer protected as `protection`, followed as [`Leg::place`] says.
    async fn offer(
        &mut self,
        gateway: &SipGateway,
        callee: &Callee,
        protection: OfferedProtection,
        mut give_up: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Placed {
        let offer = sdp::offer(&self.local, self.session_id, self.sdp_version, protection);
        self.described = Some(offer.clone());
        let credential = callee.credential.as_ref();
        let dialled = gateway.ua.dial(&callee.uri, "kaskade", offer, credential);
        let mut dialling = match dialled.await {
            Ok(dialling) => dialling,
            Err(failure) => return Placed::Failed(failure),
        };
        loop {
            tokio::select! {
                step = dialling.next() => match step {
                    Step::Ringing => self.set_state(SourceState::Ringing).await,
                    Step::Answered(answer) => {
                        let call = dialling.established();
                        return match sdp::read_answer(&answer, &self.local, protection) {
                            Ok(agreement) => Placed::Answered(Box::new((call, agreement))),
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
                    if let Some(SessionEvent::Message(message)) = event {
                        self.outgoing.observe(&message);
                    }
                }
                _ = give_up.as_mut() => {
                    dialling.cancel().await;
                    return Placed::Failed(CallFailure::no_answer());
                }
            }
        }
    }

    /// The answered call: the far end's media into the meeting and the meeting's sound to it,
    /// keyframe requests to it, its re-offers answered, until either side hangs up, or the far
    /// end sends nothing for `media_timeout` while it should. Returns the call's result when
    /// it is not a plain `answered`.
    pub(super) async fn converse(
        &mut self,
        mut call: Call,
        mut agreement: Agreement,
        media_timeout: Duration,
    ) -> Option<&'static str> {
        let mut into = match self.agree(&agreement, 0) {
            Ok(into) => into,
            Err(e) => {
                warn!(participant = %self.id, "SIP leg media: {e}");
                call.hang_up().await;
                return Some("answered; its media could not be set up");
            }
        };
        let mut heard_at = Instant::now();
        self.set_state(SourceState::Live).await;
        self.report_viewing().await;
        let mut packets = Vec::new();
        // a stalled task catches up in a burst: the far end's timestamps stay with the wall clock
        let mut frames = tokio::time::interval(AUDIO_FRAME);
        frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                arrived = self.sockets.receive(&mut into, &mut packets) => {
                    if arrived == Arrived::FromFarEnd {
                        heard_at = Instant::now();
                    }
                    if !self.arrived(arrived, &agreement, &mut packets).await {
                        call.hang_up().await;
                        return None;
                    }
                }
                _ = frames.tick() => {
                    if expects_media(&agreement) && heard_at.elapsed() > media_timeout {
                        warn!(participant = %self.id, "no media from the far end: hanging up");
                        call.hang_up().await;
                        return Some("answered; no media from the far end");
                    }
                    self.send_sound(&agreement).await;
                }
                composed = self.outgoing.composed() => match composed {
                    Composed::Packets(packets) => {
                        if let Some(video) = &agreement.video {
                            for packet in &packets {
                                self.sockets.send_video(packet, video.remote).await;
                            }
                        }
                    }
                    Composed::AskKeyframe(ssrc) => self.ask_meeting_keyframe(Some(ssrc)).await,
                },
                Some(LegCommand::Dtmf(digits)) = self.commands.recv() => {
                    if !self.outgoing.schedule_keys(Instant::now(), &digits) {
                        call.dtmf_info(digits);
                    }
                }
                event = self.events.recv() => match event {
                    Some(SessionEvent::KeyframeWanted) => {
                        self.ask_keyframe(&call, &into, &agreement).await;
                    }
                    Some(SessionEvent::Message(message)) => {
                        let wanted = self.outgoing.observe(&message);
                        self.ask_meeting_keyframe(wanted).await;
                        self.report_viewing().await;
                    }
                    Some(SessionEvent::Close) | None => {
                        call.hang_up().await;
                        return None;
                    }
                },
                event = call.next() => match event {
                    CallEvent::Ended(why) => {
                        info!(participant = %self.id, "SIP call ended: {why}");
                        return None;
                    }
                    CallEvent::Lost(why) => {
                        warn!(participant = %self.id, "SIP call lost: {why}");
                        return Some("answered; the far end lost the call");
                    }
                    CallEvent::KeyframeWanted => {
                        self.ask_meeting_keyframe(self.outgoing.far_end_wants_keyframe()).await;
                    }
                    // keys pressed in the meeting steer nothing
                    CallEvent::Key(_) => {}
                    CallEvent::Reoffer(offer, reply) => {
                        if let Some(agreed) = self.reoffer(&offer, reply, &mut into).await {
                            agreement = agreed;
                        }
                    }
                },
            }
        }
    }

    /// Handles what one socket brought: the far end's media into the meeting, the meeting's
    /// video to the far end, the far end's keyframe requests to the shown participant. False
    /// when the node is gone.
    async fn arrived(
        &mut self,
        arrived: Arrived,
        agreement: &Agreement,
        packets: &mut Vec<BytesMut>,
    ) -> bool {
        match arrived {
            Arrived::FromFarEnd => {
                if !packets.is_empty()
                    && self
                        .node
                        .ingest(self.id, std::mem::take(packets))
                        .await
                        .is_err()
                {
                    return false;
                }
            }
            Arrived::FromMeeting(n) => {
                let datagram = self.sockets.meeting_datagram(n);
                let mut shown = Vec::new();
                self.outgoing.deliver(Instant::now(), datagram, &mut shown);
                if let Some(video) = &agreement.video {
                    for packet in shown {
                        self.sockets.send_video(&packet, video.remote).await;
                    }
                }
                let wanted = self.outgoing.ask();
                self.ask_meeting_keyframe(wanted).await;
            }
            Arrived::KeyframeAsked => {
                debug!(participant = %self.id, "the far end asks for a keyframe (RTCP)");
                self.ask_meeting_keyframe(self.outgoing.far_end_wants_keyframe())
                    .await;
            }
            Arrived::Nothing => {}
        }
        true
    }

    /// Asks the node for a keyframe of the delivered stream `ssrc` (for the far end's
    /// picture), as any subscriber would: an RTCP PLI through the call's transport.
    /// Tells the node how tall the far end's grid shows everyone, when that changed.
    async fn report_viewing(&mut self) {
        if let Some(tiles) = self.outgoing.viewing_changed() {
            let _ = self
                .node
                .message(self.id, ClientMessage::Viewing { tiles })
                .await;
        }
    }

    async fn ask_meeting_keyframe(&self, ssrc: Option<u32>) {
        let Some(ssrc) = ssrc else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: self.ssrc,
            media_ssrc: ssrc,
        };
        if let Ok(bytes) = pli.marshal() {
            let _ = self
                .node
                .ingest(self.id, vec![BytesMut::from(&bytes[..])])
                .await;
        }
    }

    /// What the far end's packets become in the meeting (transcoded audio numbered from
    /// `seq`), and what it gets of the meeting (continuing the streams sent before, if any),
    /// for `agreement`.
    fn agree(&mut self, agreement: &Agreement, seq: u16) -> Result<IntoMeeting, String> {
        let into = IntoMeeting::new(agreement, self.ssrc, seq)?;
        self.sockets.protect(agreement).map_err(|e| e.to_string())?;
        self.local.keys.keep(agreement);
        self.outgoing.agree(agreement)?;
        Ok(into)
    }

    /// Answers a re-offer (hold, resume, a new codec): the new agreement, or `None` when it
    /// was refused or brought no offer (the call goes on as agreed before). A re-INVITE
    /// without an offer (a session refresh) gets kaskade's last description, unchanged and of
    /// the same version, so the answer in its ACK can only keep the session as it is.
    async fn reoffer(
        &mut self,
        offer: &str,
        reply: Reply,
        into: &mut IntoMeeting,
    ) -> Option<Agreement> {
        if offer.trim().is_empty() {
            match &self.described {
                Some(described) => reply.sdp(described.clone()).await,
                None => reply.refuse(StatusCode::NotAcceptableHere).await,
            }
            return None;
        }
        self.sdp_version += 1;
        let answered = sdp::answer(offer, &self.local, self.session_id, self.sdp_version);
        // the meeting's view of the call's audio goes on where it was
        let seq = into.next_seq().unwrap_or(0);
        match answered
            .map_err(|e| e.to_string())
            .and_then(|(answer, agreed)| {
                let media = self.agree(&agreed, seq)?;
                Ok((answer, agreed, media))
            }) {
            Ok((answer, agreed, media)) => {
                self.described = Some(answer.clone());
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
        let Some(line) = agreement.audio.as_ref() else {
            return;
        };
        let mut out = Vec::new();
        self.outgoing.tick(Instant::now(), &mut out);
        for packet in out {
            self.sockets.send_audio(&packet, line.remote).await;
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
        if let Err(e) = self.sockets.send_video_rtcp(&request, rtcp).await {
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

    /// Notes who dialled the call and how it goes, for its call record.
    pub(super) async fn note(&self, caller: &str, result: &str) {
        let note = CallNote {
            caller: Some(caller.to_string()),
            result: Some(result.to_string()),
        };
        let _ = self.node.note_call(self.id, note).await;
    }

    async fn set_state(&self, state: SourceState) {
        let _ = self.node.set_source_state(self.id, state, None).await;
    }
}

/// Whether the far end should be sending: some agreed line flows towards kaskade (a call on
/// hold, `inactive` or `sendonly` from kaskade's side, may rightly be silent).
fn expects_media(agreement: &Agreement) -> bool {
    let audio = agreement.audio.as_ref().is_some_and(|l| l.flow.receive);
    let video = agreement.video.as_ref().is_some_and(|l| l.flow.receive);
    audio || video
}

/// Whether an event from the core leaves the call in the meeting.
fn still_wanted(event: Option<&SessionEvent>) -> bool {
    !matches!(event, None | Some(SessionEvent::Close))
}
