//! The control messages of a cascade link, exchanged in order over its WebSocket, each one
//! sealed with the link key: which meetings the two nodes share, who is in them on each side,
//! which streams each side wants, and moderator actions that must reach another node.

use super::cipher::{LinkCipher, OpenError, TAG_LEN};
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::simulcast::LayerSet;
use bytes::BytesMut;
use kaskade_protocol::signaling::{LeaveReason, ModerateAction, ParticipantInfo};
use serde::{Deserialize, Serialize};

/// Bytes before the sealed JSON: the counter.
const COUNTER_LEN: usize = 8;

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LinkMessage {
    /// First message each way: who is speaking (proves the key).
    Hello {
        /// Sender's node name.
        node: String,
        /// Sender's node index.
        index: u16,
    },
    /// The sender hosts this meeting too: exchange participants (answered with `attach` once).
    Attach {
        /// Meeting name.
        meeting: String,
        /// Whether the sender has it locked.
        locked: bool,
    },
    /// The sender no longer hosts the meeting.
    Detach {
        /// Meeting name.
        meeting: String,
    },
    /// A participant on the sender's node joined or changed.
    Participant {
        /// Meeting name.
        meeting: String,
        /// How others see it.
        participant: ParticipantInfo,
        /// The payload type and kind of each stream it publishes (its relayed packets keep
        /// their payload types).
        payload_kinds: Vec<(u8, MediaKind)>,
        /// Its video cannot be asked for keyframes (a camera): the receiver keeps its group of
        /// pictures for new viewers, as the sender does.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cache_gop: bool,
    },
    /// A participant on the sender's node left.
    Left {
        /// Meeting name.
        meeting: String,
        /// Who.
        id: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// The complete set of the receiver's streams the sender wants relayed.
    Subscribe {
        /// Meeting name.
        meeting: String,
        /// Wanted streams.
        streams: Vec<StreamRef>,
    },
    /// A moderator on the sender's node acts on a participant of the receiver's node.
    Moderate {
        /// Meeting name.
        meeting: String,
        /// The moderator.
        by: ParticipantId,
        /// What to do.
        action: ModerateAction,
        /// To whom.
        target: ParticipantId,
    },
    /// A recorder of the meeting joined or left the sender's node.
    Recording {
        /// Meeting name.
        meeting: String,
        /// Whether the sender has a recorder in the meeting now.
        active: bool,
    },
    /// A moderator locked or unlocked the meeting.
    Lock {
        /// Meeting name.
        meeting: String,
        /// New state.
        locked: bool,
        /// The moderator.
        by: ParticipantId,
    },
}

impl LinkMessage {
    /// The meeting the message is about (`hello` is about none).
    pub fn meeting(&self) -> Option<&str> {
        match self {
            LinkMessage::Hello { .. } => None,
            LinkMessage::Attach { meeting, .. }
            | LinkMessage::Detach { meeting }
            | LinkMessage::Participant { meeting, .. }
            | LinkMessage::Left { meeting, .. }
            | LinkMessage::Subscribe { meeting, .. }
            | LinkMessage::Moderate { meeting, .. }
            | LinkMessage::Recording { meeting, .. }
            | LinkMessage::Lock { meeting, .. } => Some(meeting),
        }
    }
}

/// One stream of a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamRef {
    /// The publisher.
    pub publisher: ParticipantId,
    /// Which of its streams.
    pub kind: MediaKind,
    /// Of a video, the simulcast layers wanted (every layer when absent); the link carries
    /// each as its own stream.
    #[serde(default)]
    pub layers: LayerSet,
}

/// Why a control frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Shorter than a counter and a tag.
    #[error("control frame too short")]
    Short,
    /// Not sealed with the link key, or replayed.
    #[error("control frame refused: {0}")]
    Open(#[from] OpenError),
    /// Not a control message.
    #[error("control frame is not a message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Seals `message` into one binary WebSocket frame.
pub fn seal(cipher: &mut LinkCipher, message: &LinkMessage) -> Vec<u8> {
    let json = serde_json::to_vec(message).unwrap_or_default();
    let mut buf = BytesMut::with_capacity(COUNTER_LEN + json.len() + TAG_LEN);
    buf.extend_from_slice(&[0; COUNTER_LEN]);
    buf.extend_from_slice(&json);
    cipher.seal(&mut buf, COUNTER_LEN, 0);
    buf.to_vec()
}

/// Opens one binary WebSocket frame sealed by the peer.
pub fn open(cipher: &mut LinkCipher, frame: &[u8]) -> Result<LinkMessage, ControlError> {
    if frame.len() < COUNTER_LEN + TAG_LEN {
        return Err(ControlError::Short);
    }
    let mut buf = frame.to_vec();
    let mut counter = [0u8; COUNTER_LEN];
    counter.copy_from_slice(&buf[..COUNTER_LEN]);
    let len = cipher.open(&mut buf, COUNTER_LEN, u64::from_be_bytes(counter))?;
    Ok(serde_json::from_slice(
        &buf[COUNTER_LEN..COUNTER_LEN + len],
    )?)
}

#[cfg(test)]
mod tests {
    use super::super::cipher::Channel;
    use super::*;

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn messages_round_trip_sealed_and_refuse_replays_and_strangers() {
        let mut a = LinkCipher::new(&key(1), 1, 2, Channel::Control).unwrap();
        let mut b = LinkCipher::new(&key(1), 2, 1, Channel::Control).unwrap();
        let message = LinkMessage::Attach {
            meeting: "standup".into(),
            locked: true,
        };
        let frame = seal(&mut a, &message);
        assert_eq!(open(&mut b, &frame).unwrap(), message);
        assert!(matches!(
            open(&mut b, &frame),
            Err(ControlError::Open(OpenError::Replayed))
        ));
        let mut stranger = LinkCipher::new(&key(2), 2, 1, Channel::Control).unwrap();
        let frame = seal(&mut a, &message);
        assert!(matches!(
            open(&mut stranger, &frame),
            Err(ControlError::Open(OpenError::Forged))
        ));
        assert!(matches!(open(&mut b, &[0; 10]), Err(ControlError::Short)));
    }
}
