//! One participant's signaling session over a WebSocket: authenticate the join, relay the
//! offer and answer, pass requests to the core and the core's frames back.

use crate::media::core::JoinRequest;
use crate::media::demux::ParticipantId;
use crate::node::{NodeHandle, SessionEvent};
use crate::signaling::protocol::{
    ClientMessage, ErrorCode, ServerMessage, display_name, valid_meeting,
};
use crate::token::{Claims, Role, TokenKey, unix_now};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info};

/// Largest frame accepted (an offer with 2 x 19 slots is ~30 KB).
pub const MAX_FRAME: usize = 256 * 1024;
/// Time a client has to send its `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the reconnect token handed out in `welcome`.
const RECONNECT_TOKEN_LIFETIME: u64 = 3600;

/// How joins are authenticated.
pub struct Auth {
    /// Key that signs and verifies tokens.
    pub key: TokenKey,
    /// Joins without a token are allowed (no operator secret configured).
    pub open: bool,
}

/// Serves one WebSocket until it closes or the participant leaves.
pub async fn run(mut socket: WebSocket, node: NodeHandle, auth: Arc<Auth>) {
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
    let request = match authenticate(&auth, join) {
        Ok(request) => request,
        Err((code, message)) => return refuse(socket, code, &message).await,
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let admitted = match node.join(request.clone(), events_tx).await {
        Ok(Ok(admitted)) => admitted,
        Ok(Err((code, message))) => return refuse(socket, code, &message).await,
        Err(_) => return,
    };
    let id = admitted.id;
    let mut welcome = admitted.welcome;
    if let ServerMessage::Welcome(welcome) = &mut welcome {
        welcome.token = auth.key.sign(&Claims {
            meeting: request.meeting.clone(),
            sub: request.identity.clone(),
            name: request.name.clone(),
            role: admitted.role,
            exp: unix_now() + RECONNECT_TOKEN_LIFETIME,
            rejoin: true,
        });
    }
    if send(&mut socket, &welcome).await {
        serve(&mut socket, &node, id, &mut events).await;
    }
    let _ = node.leave(id).await;
    let _ = socket.send(Message::Close(None)).await;
    debug!(participant = id, "signaling closed");
}

async fn serve(
    socket: &mut WebSocket,
    node: &NodeHandle,
    id: ParticipantId,
    events: &mut mpsc::UnboundedReceiver<SessionEvent>,
) {
    loop {
        tokio::select! {
            incoming = next_message(socket) => {
                let message = match incoming {
                    None => return,
                    Some(Ok(message)) => message,
                    Some(Err((code, text))) => {
                        if !send(socket, &ServerMessage::error(code, text)).await {
                            return;
                        }
                        continue;
                    }
                };
                let reply = match message {
                    ClientMessage::Offer { sdp } => match node.offer(id, sdp).await {
                        Ok(Ok(sdp)) => ServerMessage::Answer { sdp },
                        Ok(Err(reason)) => ServerMessage::error(ErrorCode::BadRequest, reason),
                        Err(_) => return,
                    },
                    other => {
                        if node.message(id, other).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                if !send(socket, &reply).await {
                    return;
                }
            }
            event = events.recv() => match event {
                Some(SessionEvent::Message(message)) => {
                    if !send(socket, &message).await {
                        return;
                    }
                }
                Some(SessionEvent::Close) | None => return,
            },
        }
    }
}

/// Turns a join frame into an authenticated request, or the reason it is refused.
fn authenticate(
    auth: &Auth,
    (meeting, name, token, client): (String, String, Option<String>, Option<String>),
) -> Result<JoinRequest, (ErrorCode, String)> {
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
            Ok(JoinRequest {
                meeting,
                identity: claims.sub,
                name: display_name(&claims.name),
                role: claims.role,
                rejoin: claims.rejoin,
                kind,
            })
        }
        None if auth.open => Ok(JoinRequest {
            meeting,
            identity: format!("guest-{:08x}", rand::random::<u32>()),
            name: display_name(&name),
            role: Role::Participant,
            rejoin: false,
            kind,
        }),
        None => Err((ErrorCode::BadToken, "this node requires a token".into())),
    }
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

const KNOWN_TYPES: &[&str] = &["join", "offer", "mute", "moderate", "lock", "leave"];

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

/// Sends one frame; false when the socket is gone.
async fn send(socket: &mut WebSocket, message: &ServerMessage) -> bool {
    let Ok(text) = serde_json::to_string(message) else {
        return false;
    };
    socket
        .send(Message::Text(Utf8Bytes::from(text)))
        .await
        .is_ok()
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
        let open = Auth {
            key: TokenKey::from_secret(b"k"),
            open: true,
        };
        let closed = Auth {
            key: TokenKey::from_secret(b"k"),
            open: false,
        };
        let join = |meeting: &str, token: Option<String>| {
            (
                meeting.to_string(),
                " Ann ".to_string(),
                token,
                Some("browser".to_string()),
            )
        };
        let guest = authenticate(&open, join("m1", None)).unwrap();
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
        });
        let admitted = authenticate(&closed, join("m1", Some(token.clone()))).unwrap();
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
}
