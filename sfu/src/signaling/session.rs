//! One participant's signaling session over a WebSocket: authenticate the join, relay the
//! offer and answer, pass requests to the core and the core's frames back.

use super::dialpad;
use crate::camera;
use crate::media::core::JoinRequest;
use crate::media::demux::ParticipantId;
use crate::node::{NodeHandle, SESSION_QUEUE, SessionEvent};
use crate::signaling::protocol::{
    ClientMessage, ErrorCode, ModerateAction, ServerMessage, display_name, valid_meeting,
};
use crate::sip::SipGateway;
use crate::token::{Claims, Role, SpentTokens, TokenKey, unix_now};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info};

/// Largest frame accepted (an offer with 2 x 19 slots is ~30 KB).
pub const MAX_FRAME: usize = 256 * 1024;
/// Time a client has to send its `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one frame may take to go out: a client that reads nothing for this long is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the reconnect token handed out in `welcome`.
const RECONNECT_TOKEN_LIFETIME: u64 = 3600;

/// How joins are authenticated.
pub struct Auth {
    /// Key that signs and verifies tokens.
    pub key: TokenKey,
    /// Joins without a token are allowed (no operator secret configured).
    pub open: bool,
    /// This node's name: a token with an `aud` admits only on the node it names.
    node: String,
    /// A node without a locator spends one-time tokens itself; under a locator it takes only
    /// the one-time tokens the locator handed out for it (the locator spent the user's).
    standalone: bool,
    /// The one-time tokens used here.
    spent: Mutex<SpentTokens>,
}

impl Auth {
    /// Joins checked with `key` on the node `node` (`open`: joins without a token allowed).
    pub fn new(key: TokenKey, open: bool, node: String, standalone: bool) -> Self {
        Self {
            key,
            open,
            node,
            standalone,
            spent: Mutex::default(),
        }
    }

    /// Takes the one-time token `jti` (of a token expiring at `exp`); false when it was used.
    fn spend(&self, jti: &str, exp: u64) -> bool {
        self.spent_tokens().spend(jti, exp, unix_now())
    }

    /// Gives back a one-time token whose join the core refused: nobody was admitted with it.
    fn give_back(&self, jti: &str) {
        self.spent_tokens().forget(jti);
    }

    fn spent_tokens(&self) -> std::sync::MutexGuard<'_, SpentTokens> {
        self.spent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An authenticated join: the core's request, the one-time token it spent, if any, and
/// whether the token grants the dial right.
#[derive(Debug)]
struct Authenticated {
    request: JoinRequest,
    one_time: Option<String>,
    dial: bool,
}

/// Serves one WebSocket until it closes or the participant leaves.
pub async fn run(
    mut socket: WebSocket,
    node: NodeHandle,
    auth: Arc<Auth>,
    sip: Option<Arc<SipGateway>>,
) {
    let join = match tokio::time::timeout(JOIN_TIMEOUT, next_message(&mut socket)).await {
        Ok(Some(Ok(ClientMessage::Join {
            meeting,
            name,
            token,
            client,
        }))) => (meeting, name, token, client),
        Ok(Some(Ok(_))) => {
            return refuse(
                socket,
                ErrorCode::BadRequest,
                "the first frame must be a join",
            )
            .await;
        }
        Ok(Some(Err((code, message)))) => return refuse(socket, code, &message).await,
        Ok(None) => return,
        Err(_) => return refuse(socket, ErrorCode::BadRequest, "no join received in time").await,
    };
    let Authenticated {
        request,
        one_time,
        dial,
    } = match authenticate(&auth, join) {
        Ok(authenticated) => authenticated,
        Err((code, message)) => return refuse(socket, code, &message).await,
    };
    let (events_tx, mut events) = mpsc::channel(SESSION_QUEUE);
    let admitted = match node.join(request.clone(), events_tx.clone()).await {
        Ok(Ok(admitted)) => admitted,
        refused => {
            if let Some(jti) = &one_time {
                auth.give_back(jti);
            }
            if let Ok(Err((code, message))) = refused {
                refuse(socket, code, &message).await;
            }
            return;
        }
    };
    let id = admitted.id;
    let may_dial = dial || admitted.role == Role::Moderator;
    let mut welcome = admitted.welcome;
    if let ServerMessage::Welcome(welcome) = &mut welcome {
        welcome.may_dial = may_dial && sip.is_some();
        welcome.call_me = admitted.role != Role::Recorder
            && sip.as_ref().is_some_and(|gateway| gateway.calls_phones());
        welcome.dial_in = sip
            .as_ref()
            .is_some_and(|gateway| gateway.dialplan().takes_dial_in());
        welcome.token = auth.key.sign(&Claims {
            meeting: request.meeting.clone(),
            sub: request.identity.clone(),
            name: request.name.clone(),
            role: admitted.role,
            exp: unix_now() + RECONNECT_TOKEN_LIFETIME,
            rejoin: true,
            // a one-time join's reconnect token is one-time too (each welcome brings the next)
            jti: one_time.as_ref().map(|_| Claims::new_jti()),
            aud: None,
            dial,
        });
    }
    let session = Session {
        node: node.clone(),
        id,
        role: admitted.role,
        name: request.name.clone(),
        may_dial,
        meeting: request.meeting.clone(),
        identity: request.identity.clone(),
        replies: events_tx.downgrade(),
        sip,
    };
    let ended = match send(&mut socket, &welcome).await {
        Ok(()) => serve(&mut socket, &session, &mut events).await,
        Err(ended) => ended,
    };
    let _ = match ended {
        Ended::Stalled => node.disconnect_slow_reader(id).await,
        Ended::Closed => node.leave(id).await,
    };
    let _ = socket.send(Message::Close(None)).await;
    debug!(participant = %id, ?ended, "signaling closed");
}

/// How a session ended.
#[derive(Debug, Clone, Copy)]
enum Ended {
    /// The socket closed, the participant left, or the core is gone.
    Closed,
    /// The client took no frame for [`SEND_TIMEOUT`]: it stopped reading.
    Stalled,
}

/// What a session knows of its participant once admitted.
pub(super) struct Session {
    pub(super) node: NodeHandle,
    id: ParticipantId,
    pub(super) role: Role,
    /// The participant's display name (their phone's tile is named after it).
    pub(super) name: String,
    /// The participant may place SIP calls (a moderator, or a token with the dial right).
    pub(super) may_dial: bool,
    pub(super) meeting: String,
    /// The participant's identity (who dialled, in a SIP call's record).
    pub(super) identity: String,
    /// The session's own queue, for answers that come later (a camera that is connecting).
    /// Weak: only the core's sender keeps the queue open, so the core dropping it (a slow
    /// reader cut off) still ends the session.
    pub(super) replies: mpsc::WeakSender<SessionEvent>,
    /// The node's SIP gateway, when it has one.
    pub(super) sip: Option<Arc<SipGateway>>,
}

async fn serve(
    socket: &mut WebSocket,
    session: &Session,
    events: &mut mpsc::Receiver<SessionEvent>,
) -> Ended {
    let (node, id) = (&session.node, session.id);
    loop {
        let reply = tokio::select! {
            incoming = next_message(socket) => match incoming {
                None => return Ended::Closed,
                Some(Ok(ClientMessage::Offer { sdp })) => match node.offer(id, sdp).await {
                    Ok(Ok(sdp)) => ServerMessage::Answer { sdp },
                    Ok(Err(reason)) => ServerMessage::error(ErrorCode::BadRequest, reason),
                    Err(_) => return Ended::Closed,
                },
                Some(Ok(ClientMessage::AddCamera(request))) => {
                    if session.role != Role::Moderator {
                        ServerMessage::error(ErrorCode::Forbidden, "only moderators add cameras")
                    } else {
                        camera::spawn_add(
                            node.clone(),
                            session.meeting.clone(),
                            request,
                            session.replies.clone(),
                        );
                        continue;
                    }
                }
                Some(Ok(ClientMessage::Dial(request))) => {
                    match dialpad::dial(session, request) {
                        Ok(()) => continue,
                        Err(refusal) => *refusal,
                    }
                }
                Some(Ok(ClientMessage::CallMe { number })) => {
                    match dialpad::call_me(session, number) {
                        Ok(()) => continue,
                        Err(refusal) => *refusal,
                    }
                }
                Some(Ok(ClientMessage::DialIn)) => match dialpad::dial_in(session, None) {
                    Ok(()) => continue,
                    Err(refusal) => *refusal,
                },
                Some(Ok(ClientMessage::SetPin { pin })) => {
                    match dialpad::dial_in(session, Some(pin)) {
                        Ok(()) => continue,
                        Err(refusal) => *refusal,
                    }
                }
                Some(Ok(ClientMessage::Directory)) => match dialpad::directory(session) {
                    Ok(()) => continue,
                    Err(refusal) => *refusal,
                },
                Some(Ok(ClientMessage::Dtmf { target, digits })) => {
                    match dialpad::dtmf(session, target, &digits) {
                        Ok(()) => continue,
                        Err(refusal) => *refusal,
                    }
                }
                Some(Ok(ClientMessage::Moderate { action: ModerateAction::Remove, target }))
                    if session.role != Role::Moderator =>
                {
                    match dialpad::hang_up(session, target).await {
                        Ok(()) => continue,
                        Err(refusal) => *refusal,
                    }
                }
                Some(Ok(other)) => {
                    if node.message(id, other).await.is_err() {
                        return Ended::Closed;
                    }
                    continue;
                }
                Some(Err((code, text))) => ServerMessage::error(code, text),
            },
            event = events.recv() => match event {
                Some(SessionEvent::Message(message)) => message,
                Some(SessionEvent::KeyframeWanted) => continue,
                Some(SessionEvent::Close) | None => return Ended::Closed,
            },
        };
        if let Err(ended) = send(socket, &reply).await {
            return ended;
        }
    }
}

/// Turns a join frame into an authenticated request (spending a one-time token), or the
/// reason it is refused.
fn authenticate(
    auth: &Auth,
    (meeting, name, token, client): (String, String, Option<String>, Option<String>),
) -> Result<Authenticated, (ErrorCode, String)> {
    let kind = client_kind(client.as_deref());
    if !valid_meeting(&meeting) {
        return Err((
            ErrorCode::BadRequest,
            "meeting names are 1 to 64 characters of A-Z a-z 0-9 _ . -".into(),
        ));
    }
    match token {
        Some(token) => {
            let claims = auth.key.verify(&token, &meeting, unix_now()).map_err(|e| {
                info!(meeting, "token refused: {e}");
                (ErrorCode::BadToken, "the token was refused".to_string())
            })?;
            let one_time = check_one_time(auth, &claims)?;
            Ok(Authenticated {
                request: JoinRequest {
                    meeting,
                    identity: claims.sub,
                    name: display_name(&claims.name),
                    role: claims.role,
                    rejoin: claims.rejoin,
                    kind,
                },
                one_time,
                dial: claims.dial,
            })
        }
        None if auth.open => Ok(Authenticated {
            request: JoinRequest {
                meeting,
                identity: format!("guest-{:08x}", rand::random::<u32>()),
                name: display_name(&name),
                role: Role::Participant,
                rejoin: false,
                kind,
            },
            one_time: None,
            dial: false,
        }),
        None => Err((ErrorCode::BadToken, "this node requires a token".into())),
    }
}

/// Checks a token's audience and spends it when it is a one-time token (returning its id).
fn check_one_time(auth: &Auth, claims: &Claims) -> Result<Option<String>, (ErrorCode, String)> {
    let refused = |why: &str| {
        info!(meeting = claims.meeting, "token refused: {why}");
        Err((ErrorCode::BadToken, format!("the token was refused: {why}")))
    };
    if claims.aud.as_ref().is_some_and(|aud| *aud != auth.node) {
        return refused("it is for another node");
    }
    let Some(jti) = &claims.jti else {
        return Ok(None);
    };
    if claims.aud.is_none() && !auth.standalone {
        return refused("one-time tokens join through the locator");
    }
    if !auth.spend(jti, claims.exp) {
        return refused("this one-time token was already used");
    }
    Ok(Some(jti.clone()))
}

/// The client kind recorded in call records: what the client says, if it is a plain word.
fn client_kind(client: Option<&str>) -> String {
    match client {
        Some(kind)
            if (1..=16).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_lowercase()) =>
        {
            kind.to_string()
        }
        _ => "unknown".to_string(),
    }
}

/// The next client frame: `None` when the socket closed, `Err` for a frame that is not a
/// valid request (with the code to answer).
async fn next_message(
    socket: &mut WebSocket,
) -> Option<Result<ClientMessage, (ErrorCode, String)>> {
    loop {
        let text = match socket.recv().await? {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(_)) => {
                return Some(Err((
                    ErrorCode::BadRequest,
                    "frames must be JSON text".into(),
                )));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        };
        return Some(parse(&text));
    }
}

/// Parses a client frame, telling unknown types apart from malformed frames.
pub fn parse(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    serde_json::from_str::<ClientMessage>(text).map_err(|e| {
        let kind = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
        match kind {
            Some(kind) if !KNOWN_TYPES.contains(&kind.as_str()) => (
                ErrorCode::UnknownType,
                format!("unknown message type {:?}", truncate(&kind, 32)),
            ),
            _ => (ErrorCode::BadRequest, format!("malformed frame: {e}")),
        }
    })
}

const KNOWN_TYPES: &[&str] = &[
    "join",
    "offer",
    "mute",
    "moderate",
    "lock",
    "add_camera",
    "dial",
    "call_me",
    "dial_in",
    "set_pin",
    "directory",
    "dtmf",
    "leave",
];

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

async fn refuse(mut socket: WebSocket, code: ErrorCode, message: &str) {
    let _ = send(&mut socket, &ServerMessage::error(code, message)).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// Sends one frame: `Closed` when the socket is gone, `Stalled` when the client has not taken
/// it within [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, message: &ServerMessage) -> Result<(), Ended> {
    let Ok(text) = serde_json::to_string(message) else {
        return Err(Ended::Closed);
    };
    let sent = tokio::time::timeout(
        SEND_TIMEOUT,
        socket.send(Message::Text(Utf8Bytes::from(text))),
    )
    .await;
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::Closed),
        Err(_) => Err(Ended::Stalled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_names_what_is_wrong() {
        assert_eq!(
            parse(r#"{"type":"mute","audio":true}"#),
            Ok(ClientMessage::Mute {
                audio: Some(true),
                video: None
            })
        );
        let code = |text: &str| parse(text).map_err(|(code, _)| code).err();
        assert_eq!(code(r#"{"type":"dance"}"#), Some(ErrorCode::UnknownType));
        assert_eq!(
            code(r#"{"type":"moderate","action":"explode","target":1}"#),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(code(r#"{"type":"offer"}"#), Some(ErrorCode::BadRequest));
        assert_eq!(code("not json"), Some(ErrorCode::BadRequest));
        assert_eq!(code("[1,2]"), Some(ErrorCode::BadRequest));
    }

    #[test]
    fn authenticates_open_and_token_joins() {
        let open = Auth::new(TokenKey::from_secret(b"k"), true, "n1".into(), true);
        let closed = Auth::new(TokenKey::from_secret(b"k"), false, "n1".into(), true);
        let join = |meeting: &str, token: Option<String>| {
            (
                meeting.to_string(),
                " Ann ".to_string(),
                token,
                Some("browser".to_string()),
            )
        };
        let guest = authenticate(&open, join("m1", None)).unwrap().request;
        assert_eq!(
            (guest.name.as_str(), guest.role, guest.kind.as_str()),
            ("Ann", Role::Participant, "browser")
        );
        assert_eq!(
            authenticate(&closed, join("m1", None)).unwrap_err().0,
            ErrorCode::BadToken
        );
        assert_eq!(
            authenticate(&open, join("bad name!", None)).unwrap_err().0,
            ErrorCode::BadRequest
        );
        let token = closed.key.sign(&Claims {
            meeting: "m1".into(),
            sub: "ann@example.com".into(),
            name: "Ann A.".into(),
            role: Role::Moderator,
            exp: unix_now() + 60,
            rejoin: false,
            jti: None,
            aud: None,
            dial: false,
        });
        let admitted = authenticate(&closed, join("m1", Some(token.clone())))
            .unwrap()
            .request;
        assert_eq!(
            (admitted.identity.as_str(), admitted.role),
            ("ann@example.com", Role::Moderator)
        );
        assert_eq!(
            authenticate(&closed, join("m2", Some(token)))
                .unwrap_err()
                .0,
            ErrorCode::BadToken
        );
    }

    fn one_time_token(key: &TokenKey, aud: Option<&str>) -> String {
        key.sign(&Claims {
            meeting: "m1".into(),
            sub: "ann@example.com".into(),
            name: "Ann".into(),
            role: Role::Participant,
            exp: unix_now() + 60,
            rejoin: false,
            jti: Some(Claims::new_jti()),
            aud: aud.map(str::to_string),
            dial: false,
        })
    }

    fn join_with(token: &str) -> (String, String, Option<String>, Option<String>) {
        ("m1".into(), "Ann".into(), Some(token.into()), None)
    }

    #[test]
    fn a_one_time_token_admits_once_unless_the_core_refused_its_join() {
        let standalone = Auth::new(TokenKey::from_secret(b"k"), false, "n1".into(), true);
        let token = one_time_token(&standalone.key, None);
        let first = authenticate(&standalone, join_with(&token)).expect("first use");
        let jti = first.one_time.expect("spent");
        let again = authenticate(&standalone, join_with(&token)).unwrap_err();
        assert!(again.1.contains("already used"), "{}", again.1);
        standalone.give_back(&jti);
        authenticate(&standalone, join_with(&token)).expect("given back: usable again");
    }

    #[test]
    fn under_a_locator_a_one_time_token_must_be_the_one_issued_for_this_node() {
        let node = Auth::new(TokenKey::from_secret(b"k"), false, "n1".into(), false);
        let unbound = one_time_token(&node.key, None);
        let refused = authenticate(&node, join_with(&unbound)).unwrap_err();
        assert!(refused.1.contains("through the locator"), "{}", refused.1);
        let elsewhere = one_time_token(&node.key, Some("n2"));
        let refused = authenticate(&node, join_with(&elsewhere)).unwrap_err();
        assert!(refused.1.contains("another node"), "{}", refused.1);
        let bound = one_time_token(&node.key, Some("n1"));
        authenticate(&node, join_with(&bound)).expect("issued for this node");
        assert!(authenticate(&node, join_with(&bound)).is_err(), "once only");
    }
}
