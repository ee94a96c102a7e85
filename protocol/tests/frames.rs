//! Typed frames parse the examples of docs/SIGNALING.md and serialize to its wire format.

use kaskade_protocol::signaling::{
    ClientMessage, ErrorCode, LeaveReason, MediaKind, ModerateAction, ParticipantId, Role,
    ServerMessage, SlotAssignment,
};
use serde_json::json;

fn parse(v: serde_json::Value) -> ServerMessage {
    serde_json::from_value(v).expect("parses")
}

#[test]
fn server_frames_from_the_spec_parse() {
    let ServerMessage::Welcome(w) = parse(json!({"type": "welcome",
        "you": {"id": 7, "name": "Alice", "role": "moderator", "audio_muted": false, "video_muted": false},
        "meeting": "standup", "locked": false, "max_room_size": 10, "recv_slots": 9,
        "participants": [{"id": 3, "name": "Bob", "role": "participant", "audio_muted": false, "video_muted": true}],
        "speaker": 3, "token": "eyJ"}))
    else {
        panic!()
    };
    assert_eq!(
        (w.you.id, w.you.role, w.recv_slots, w.speaker),
        (
            ParticipantId::from(7),
            Role::Moderator,
            9,
            Some(ParticipantId::from(3))
        )
    );
    assert!(w.participants[0].video_muted);
    assert_eq!(
        parse(json!({"type":"slots","slots":[{"mid":"2","kind":"audio","participant":3}]})),
        ServerMessage::Slots {
            slots: vec![SlotAssignment {
                mid: "2".into(),
                kind: MediaKind::Audio,
                participant: ParticipantId::from(3)
            }]
        }
    );
    assert_eq!(
        parse(json!({"type":"left","id":3,"reason":"removed"})),
        ServerMessage::Left {
            id: ParticipantId::from(3),
            reason: LeaveReason::Removed
        }
    );
    assert_eq!(
        parse(json!({"type":"speaker","id":3})),
        ServerMessage::Speaker {
            id: ParticipantId::from(3)
        }
    );
    assert_eq!(
        parse(json!({"type":"lock","locked":true,"by":7})),
        ServerMessage::Lock {
            locked: true,
            by: ParticipantId::from(7)
        }
    );
    assert_eq!(
        parse(json!({"type":"muted_by_moderator","audio":true,"video":false,"by":7})),
        ServerMessage::MutedByModerator {
            audio: true,
            video: false,
            by: ParticipantId::from(7)
        }
    );
    assert_eq!(
        parse(json!({"type":"removed","by":7})),
        ServerMessage::Removed {
            by: ParticipantId::from(7)
        }
    );
    assert_eq!(
        parse(json!({"type":"error","code":"meeting_full","message":"full"})),
        ServerMessage::Error {
            code: ErrorCode::MeetingFull,
            message: "full".into()
        }
    );
    assert!(
        serde_json::from_value::<ServerMessage>(
            json!({"type":"error","code":"brand_new","message":""})
        )
        .is_err(),
        "unknown codes are not silently mapped to a known one"
    );
}

#[test]
fn client_frames_serialize_like_the_spec() {
    let s = |m: &ClientMessage| serde_json::to_value(m).unwrap();
    assert_eq!(
        s(&ClientMessage::Join {
            meeting: "standup".into(),
            name: "Alice".into(),
            token: None,
            client: Some("browser".into()),
        }),
        json!({"type":"join","meeting":"standup","name":"Alice","client":"browser"})
    );
    assert_eq!(
        s(&ClientMessage::Mute {
            audio: Some(true),
            video: None
        }),
        json!({"type":"mute","audio":true})
    );
    assert_eq!(
        s(&ClientMessage::Moderate {
            action: ModerateAction::MuteAudio,
            target: ParticipantId::from(3)
        }),
        json!({"type":"moderate","action":"mute_audio","target":3})
    );
    assert_eq!(
        s(&ClientMessage::Lock { locked: true }),
        json!({"type":"lock","locked":true})
    );
    assert_eq!(s(&ClientMessage::Leave), json!({"type":"leave"}));
}
