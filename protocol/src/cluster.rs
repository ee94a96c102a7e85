//! The cluster's wire types: what clients ask the locator, what SFU nodes report to it and
//! fetch from it, and how a node proves it belongs to the cluster.
//!
//! Every body is JSON. docs/CLUSTER.md describes the endpoints; the locator serves their
//! OpenAPI description at `/api/openapi.json`.

use crate::signaling::Role;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

pub use crate::ids::MAX_NODE_INDEX;
/// How far a node credential's timestamp may be from the verifier's clock.
pub const CREDENTIAL_SKEW_SECS: u64 = 300;
/// The HTTP authorization scheme of node credentials.
pub const NODE_AUTH_SCHEME: &str = "Kaskade-Node";

/// `POST /api/meetings/{meeting}/join`: a client asks where to join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Display name (open meetings; a token's name wins).
    #[serde(default)]
    pub name: String,
    /// A token for the meeting (also accepted as `Authorization: Bearer`); required when the
    /// locator runs with a secret. A reconnect token keeps identity and role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Preferred region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The node the client was on and lost: the locator checks its health and avoids it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avoid_node: Option<String>,
    /// Pin the join to one node (operators, tests); an unknown node is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The locator's answer to a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The meeting.
    pub meeting: String,
    /// The chosen node's name.
    pub node: String,
    /// Where to open the signaling WebSocket (`ws://` or `wss://`).
    pub signaling_url: String,
    /// The token to present in the `join` frame.
    pub token: String,
    /// The role the token grants.
    pub role: Role,
}

/// Every error body of the locator's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable code: `bad_request`, `bad_token`, `unauthorized`, `bad_node_credentials`,
    /// `not_found`, `unknown_node`, `meeting_locked`, `meeting_full`, `no_capacity`, `internal`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// `POST /api/nodes/report`, every second from every node (the first one registers it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's unique, stable name.
    pub node: String,
    /// The index the node already holds, so ids stay unique across a locator restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u16>,
    /// Where clients open signaling (`ws://host:port/ws`).
    pub signaling_url: String,
    /// The node's HTTP base URL (cascade links, health).
    pub http_url: String,
    /// The node's UDP media address (cascade media).
    pub media_addr: SocketAddr,
    /// The node's region, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Participants the node carries at most.
    pub capacity: u32,
    /// Outbound bitrate the node carries at most, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate_out_bps: Option<u64>,
    /// Participants on the node now (relayed ones excluded).
    pub participants: u32,
    /// The node's meetings.
    pub meetings: Vec<MeetingLoad>,
    /// Media streams received from local publishers and from cascade links.
    pub streams_in: u32,
    /// Media streams sent to local subscribers and to cascade links.
    pub streams_out: u32,
    /// Bits per second received over the last report interval.
    pub bitrate_in_bps: u64,
    /// Bits per second sent over the last report interval.
    pub bitrate_out_bps: u64,
    /// CPU used by the node process over the last interval, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    /// The node wants no new participants.
    pub overloaded: bool,
}

/// One meeting on a reporting node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingLoad {
    /// Meeting name.
    pub meeting: String,
    /// Visible participants on this node (relayed ones and recorders excluded).
    pub participants: u32,
    /// Whether the meeting is locked.
    pub locked: bool,
    /// Identities of the moderators on this node.
    #[serde(default)]
    pub moderators: Vec<String>,
}

/// The locator's answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// The node's index in the cluster (`1..=MAX_NODE_INDEX`).
    pub index: u16,
    /// A node whose reports stop for this long is dropped.
    pub node_timeout_ms: u64,
}

/// `GET /api/nodes/{node}/meetings/{meeting}`: what a node needs to host a meeting; the call
/// also records that the node hosts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingInfo {
    /// Meeting name.
    pub meeting: String,
    /// Whether the meeting is locked.
    pub locked: bool,
    /// The other live nodes hosting the meeting, to link with.
    pub peers: Vec<LinkInfo>,
}

/// `GET /api/nodes/{node}/links/{peer}`: how to reach a peer node and the key of the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The peer's name.
    pub node: String,
    /// The peer's index.
    pub index: u16,
    /// The peer's HTTP base URL (the link's control channel is `{http_url}/cascade`).
    pub http_url: String,
    /// The peer's UDP media address.
    pub media_addr: SocketAddr,
    /// The AES-256-GCM key of this node pair, 64 hex digits; the same for both ends.
    pub key: String,
}

/// `POST /api/nodes/{node}/cdr`: finished participant sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Unique id of the session (`{node}/{participant id}/{joined_at_ms}`).
    pub session: String,
    /// Meeting name.
    pub meeting: String,
    /// Identity from the token.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// The node that carried the session.
    pub node: String,
    /// `browser`, `synthetic`, `sip`, `recorder`, ...
    pub kind: String,
    /// Role in the meeting.
    pub role: Role,
    /// Join time, Unix milliseconds.
    pub joined_at_ms: u64,
    /// Leave time, Unix milliseconds.
    pub left_at_ms: u64,
    /// Bytes the node sent to the participant.
    pub bytes_sent: u64,
    /// Bytes the node received from the participant.
    pub bytes_received: u64,
    /// Why the session ended (`left`, `disconnected`, `removed`).
    pub reason: String,
    /// For a call the node placed (a SIP call): the identity of the participant who dialled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// For a call the node placed: how it went (`answered`, `busy (486 Busy Here)`, `no
    /// answer`, `cancelled`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// Why a node credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not `Kaskade-Node name:unix:hex`.
    #[error("node credential is malformed")]
    Malformed,
    /// The timestamp is too far from now.
    #[error("node credential is stale")]
    Stale,
    /// The HMAC does not verify under the cluster secret.
    #[error("node credential does not verify (wrong secret?)")]
    BadSignature,
}

/// The `Authorization` header value by which `node` proves it knows the cluster secret.
pub fn node_credential(secret: &[u8], node: &str, now_secs: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, credential_message(node, now_secs).as_bytes());
    format!("{NODE_AUTH_SCHEME} {node}:{now_secs}:{}", hex(tag.as_ref()))
}

/// Checks an `Authorization` header value; returns the node's name.
pub fn verify_node_credential(
    secret: &[u8],
    header: &str,
    now_secs: u64,
) -> Result<String, CredentialError> {
    let value = header
        .strip_prefix(NODE_AUTH_SCHEME)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or(CredentialError::Malformed)?;
    let mut parts = value.rsplitn(3, ':');
    let (Some(tag), Some(at), Some(node)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(CredentialError::Malformed);
    };
    let at: u64 = at.parse().map_err(|_| CredentialError::Malformed)?;
    let tag = unhex(tag).ok_or(CredentialError::Malformed)?;
    if node.is_empty() {
        return Err(CredentialError::Malformed);
    }
    if at.abs_diff(now_secs) > CREDENTIAL_SKEW_SECS {
        return Err(CredentialError::Stale);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, credential_message(node, at).as_bytes(), &tag)
        .map_err(|_| CredentialError::BadSignature)?;
    Ok(node.to_string())
}

fn credential_message(node: &str, at: u64) -> String {
    format!("kaskade-node\n{node}\n{at}")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string, if it is one (hex digits only: `from_str_radix` alone would take a
/// sign, so `+f` would pass for `0f` and one tag would have two spellings).
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_verify_and_refuse() {
        let header = node_credential(b"cluster", "node-a", 1_000);
        assert_eq!(
            verify_node_credential(b"cluster", &header, 1_010),
            Ok("node-a".into())
        );
        assert_eq!(
            verify_node_credential(b"other", &header, 1_010),
            Err(CredentialError::BadSignature)
        );
        assert_eq!(
            verify_node_credential(b"cluster", &header, 1_000 + CREDENTIAL_SKEW_SECS + 1),
            Err(CredentialError::Stale)
        );
        let forged = header.replace("node-a", "node-b");
        assert_eq!(
            verify_node_credential(b"cluster", &forged, 1_010),
            Err(CredentialError::BadSignature)
        );
        for bad in [
            "",
            "Bearer x",
            "Kaskade-Node ",
            "Kaskade-Node a:b:c",
            "Kaskade-Node :1:00",
        ] {
            assert_eq!(
                verify_node_credential(b"cluster", bad, 1_000),
                Err(CredentialError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn node_names_may_hold_colons() {
        let header = node_credential(b"s", "10.0.0.1:8080", 5);
        assert_eq!(
            verify_node_credential(b"s", &header, 5),
            Ok("10.0.0.1:8080".into())
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        // found by the locator_node_report fuzz target: a sign is not a hex digit
        assert_eq!(unhex("+f"), None);
        assert_eq!(unhex("0f-1"), None);
        assert_eq!(unhex("0F"), Some(vec![15]));
    }
}
