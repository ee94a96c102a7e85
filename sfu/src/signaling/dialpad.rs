//! The dialpad's requests: what a participant who may place SIP calls (a moderator, or the
//! holder of a token with the `dial` right) asks of the node's SIP gateway: the directory of
//! rooms, a call, DTMF keys to a call, and hanging a call up; and what anyone may ask: that the
//! meeting call their phone (call-me), and hang it up. Each is refused at once, or answered
//! later on the session's own queue.

use super::session::Session;
use crate::media::demux::ParticipantId;
use crate::node::SessionEvent;
use crate::signaling::protocol::{DialRequest, ErrorCode, ServerMessage};
use crate::sip::{SipGateway, Wanted};
use crate::token::Role;
use std::sync::Arc;

/// A refusal to send back at once.
pub(super) type Refusal = Box<ServerMessage>;

fn refusal(code: ErrorCode, why: impl Into<String>) -> Refusal {
    Box::new(ServerMessage::error(code, why))
}

/// The node's gateway, when the node has one.
fn any_gateway(session: &Session) -> Result<&Arc<SipGateway>, Refusal> {
    session.sip.as_ref().ok_or_else(|| {
        refusal(
            ErrorCode::CallFailed,
            "this node has no SIP gateway (start it with --sip-listen)",
        )
    })
}

/// The node's gateway, when the participant may dial and the node has one.
fn gateway(session: &Session) -> Result<&Arc<SipGateway>, Refusal> {
    if !session.may_dial {
        return Err(refusal(
            ErrorCode::Forbidden,
            "placing SIP calls needs the moderator role or a token with the dial right",
        ));
    }
    any_gateway(session)
}

/// Hands `wanted` to the gateway (its answer, `dialling` or an error, comes later).
fn place(gateway: &Arc<SipGateway>, session: &Session, wanted: Wanted) {
    gateway.dial(
        session.node.clone(),
        (session.meeting.clone(), session.identity.clone()),
        wanted,
        session.replies.clone(),
    );
}

/// Hands a call to the gateway.
pub(super) fn dial(session: &Session, request: DialRequest) -> Result<(), Refusal> {
    place(gateway(session)?, session, Wanted::Dial(request));
    Ok(())
}

/// Has the gateway call the participant's phone `number` (one at a time).
pub(super) fn call_me(session: &Session, number: String) -> Result<(), Refusal> {
    let gateway = any_gateway(session)?;
    if session.role == Role::Recorder {
        return Err(refusal(ErrorCode::Forbidden, "recorders have no phone"));
    }
    if !gateway.calls_phones() {
        return Err(refusal(
            ErrorCode::CallFailed,
            "this node calls no phones (start it with --sip-phone-uri)",
        ));
    }
    if gateway.calls_phone_of(&session.meeting, &session.identity) {
        return Err(refusal(
            ErrorCode::BadRequest,
            "your phone is already called: hang that call up first",
        ));
    }
    let name = session.name.clone();
    place(gateway, session, Wanted::Phone { number, name });
    Ok(())
}

/// Reads the directory from the locator in the background and answers with `directory`.
pub(super) fn directory(session: &Session) -> Result<(), Refusal> {
    let gateway = gateway(session)?.clone();
    let reply = session.replies.clone();
    tokio::spawn(async move {
        let answer = match gateway.directory().await {
            Ok(entries) => ServerMessage::Directory { entries },
            Err((code, why)) => ServerMessage::error(code, why),
        };
        if let Some(session) = reply.upgrade() {
            let _ = session.send(SessionEvent::Message(answer)).await;
        }
    });
    Ok(())
}

/// Reads (and with `pin`, first sets) the meeting's dial-in in the background and answers
/// with `dial_in` (moderators).
pub(super) fn dial_in(session: &Session, pin: Option<Option<String>>) -> Result<(), Refusal> {
    if session.role != Role::Moderator {
        return Err(refusal(
            ErrorCode::Forbidden,
            "only moderators see and set the dial-in PIN",
        ));
    }
    let gateway = any_gateway(session)?.clone();
    let (meeting, reply) = (session.meeting.clone(), session.replies.clone());
    tokio::spawn(async move {
        let dialplan = gateway.dialplan();
        let read = match pin {
            Some(pin) => dialplan.set_pin(&meeting, pin).await,
            None => dialplan.dial_in_of(&meeting).await,
        };
        let answer = match read {
            Ok(dial_in) => ServerMessage::DialIn {
                number: dial_in.number,
                pin: dial_in.pin,
                phone: dialplan.dial_in_phone().map(str::to_string),
            },
            Err((code, why)) => ServerMessage::error(code, why),
        };
        if let Some(session) = reply.upgrade() {
            let _ = session.send(SessionEvent::Message(answer)).await;
        }
    });
    Ok(())
}

/// Sends DTMF `digits` to the call `target` of the session's meeting.
pub(super) fn dtmf(session: &Session, target: ParticipantId, digits: &str) -> Result<(), Refusal> {
    gateway(session)?
        .send_dtmf(&session.meeting, target, digits)
        .map_err(|(code, why)| refusal(code, why))
}

/// Hangs up the call `target` of the session's meeting (what removing it does for a
/// moderator), for whoever may dial or asked for that call: it leaves the meeting, and its leg
/// sends CANCEL or BYE.
pub(super) async fn hang_up(session: &Session, target: ParticipantId) -> Result<(), Refusal> {
    let caller = session
        .sip
        .as_ref()
        .and_then(|gateway| gateway.placed_by(&session.meeting, target));
    let allowed = caller.is_some_and(|caller| session.may_dial || caller == session.identity);
    if !allowed {
        return Err(refusal(
            ErrorCode::Forbidden,
            "only moderators remove participants; others hang up the SIP calls they may",
        ));
    }
    // a core that stopped has dropped the call already
    let _ = session.node.leave(target).await;
    Ok(())
}
