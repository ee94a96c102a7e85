//! The dialpad's requests: what a participant who may place SIP calls (a moderator, or the
//! holder of a token with the `dial` right) asks of the node's SIP gateway: the directory of
//! rooms, a call, DTMF keys to a call, and hanging a call up. Each is refused at once, or
//! answered later on the session's own queue.

use super::session::Session;
use crate::media::demux::ParticipantId;
use crate::node::SessionEvent;
use crate::signaling::protocol::{DialRequest, ErrorCode, ServerMessage};
use crate::sip::SipGateway;
use std::sync::Arc;

/// A refusal to send back at once.
pub(super) type Refusal = Box<ServerMessage>;

/// The node's gateway, when the participant may dial and the node has one.
fn gateway(session: &Session) -> Result<&Arc<SipGateway>, Refusal> {
    if !session.may_dial {
        return Err(Box::new(ServerMessage::error(
            ErrorCode::Forbidden,
            "placing SIP calls needs the moderator role or a token with the dial right",
        )));
    }
    session.sip.as_ref().ok_or_else(|| {
        Box::new(ServerMessage::error(
            ErrorCode::CallFailed,
            "this node has no SIP gateway (start it with --sip-listen)",
        ))
    })
}

/// Hands a call to the gateway (its answer, `dialling` or an error, comes later).
pub(super) fn dial(session: &Session, request: DialRequest) -> Result<(), Refusal> {
    gateway(session)?.dial(
        session.node.clone(),
        (session.meeting.clone(), session.identity.clone()),
        request,
        session.replies.clone(),
    );
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

/// Sends DTMF `digits` to the call `target` of the session's meeting.
pub(super) fn dtmf(session: &Session, target: ParticipantId, digits: &str) -> Result<(), Refusal> {
    gateway(session)?
        .send_dtmf(&session.meeting, target, digits)
        .map_err(|(code, why)| Box::new(ServerMessage::error(code, why)))
}

/// Hangs up the call `target` of the session's meeting (what removing it does for a
/// moderator): it leaves the meeting, and its leg sends CANCEL or BYE.
pub(super) async fn hang_up(session: &Session, target: ParticipantId) -> Result<(), Refusal> {
    if !gateway(session)?.has_call(&session.meeting, target) {
        return Err(Box::new(ServerMessage::error(
            ErrorCode::Forbidden,
            "only moderators remove participants; a dialler hangs up SIP calls only",
        )));
    }
    // a core that stopped has dropped the call already
    let _ = session.node.leave(target).await;
    Ok(())
}
