//! The core's admission and moderation rules, driven without any network.

use super::*;
use crate::signaling::protocol::ModerateAction;

fn core(max_room_size: usize, max_participants: usize) -> MediaCore {
    MediaCore::new(
        CoreConfig {
            max_room_size,
            max_participants,
            first_is_moderator: true,
            peer: Arc::new(PeerSettings {
                udp_candidates: vec!["127.0.0.1:10000".parse().unwrap()],
                tcp_candidates: vec![],
                legacy_srtp: false,
                max_slots: 31,
            }),
        },
        Arc::new(Metrics::new()),
    )
}

fn request(meeting: &str, name: &str, role: Role) -> JoinRequest {
    JoinRequest {
        meeting: meeting.into(),
        identity: name.into(),
        name: name.into(),
        role,
        kind: "synthetic".into(),
    }
}

fn join(
    core: &mut MediaCore,
    meeting: &str,
    name: &str,
    role: Role,
) -> Result<Admitted, ErrorCode> {
    core.join(Instant::now(), request(meeting, name, role))
        .map_err(|(code, _)| code)
}

fn outputs(core: &mut MediaCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn sent_to(outputs: &[Output], who: ParticipantId) -> Vec<&ServerMessage> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(id, m) if *id == who => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_participant_moderates_and_a_full_room_refuses() {
    let mut c = core(2, 100);
    let first = join(&mut c, "m", "ann", Role::Participant).unwrap();
    assert_eq!(first.role, Role::Moderator);
    let second = join(&mut c, "m", "bob", Role::Participant).unwrap();
    assert_eq!(second.role, Role::Participant);
    assert_eq!(
        join(&mut c, "m", "cy", Role::Participant).unwrap_err(),
        ErrorCode::MeetingFull
    );
    // another meeting on the same node is unaffected
    assert_eq!(
        join(&mut c, "n", "cy", Role::Participant).unwrap().role,
        Role::Moderator
    );
    let out = outputs(&mut c);
    assert!(
        sent_to(&out, first.id).iter().any(
            |m| matches!(m, ServerMessage::Joined { participant } if participant.id == second.id)
        ),
        "ann hears that bob joined"
    );
}

#[test]
fn recorders_are_hidden_and_not_counted() {
    let mut c = core(1, 100);
    let ann = join(&mut c, "m", "ann", Role::Participant).unwrap();
    let rec = join(&mut c, "m", "rec", Role::Recorder).unwrap();
    assert_eq!(rec.role, Role::Recorder);
    let ServerMessage::Welcome(welcome) = &rec.welcome else {
        panic!("welcome");
    };
    assert_eq!(welcome.participants.len(), 1);
    assert!(
        sent_to(&outputs(&mut c), ann.id).is_empty(),
        "nobody is told about a recorder"
    );
    assert_eq!(
        join(&mut c, "m", "bob", Role::Participant).unwrap_err(),
        ErrorCode::MeetingFull
    );
}

#[test]
fn only_moderators_lock_and_a_locked_meeting_refuses() {
    let mut c = core(10, 100);
    let ann = join(&mut c, "m", "ann", Role::Participant).unwrap();
    let bob = join(&mut c, "m", "bob", Role::Participant).unwrap();
    outputs(&mut c);
    let now = Instant::now();
    c.client_message(now, bob.id, ClientMessage::Lock { locked: true });
    let out = outputs(&mut c);
    assert!(matches!(
        sent_to(&out, bob.id)[..],
        [ServerMessage::Error {
            code: ErrorCode::Forbidden,
            ..
        }]
    ));
    c.client_message(now, ann.id, ClientMessage::Lock { locked: true });
    assert_eq!(
        join(&mut c, "m", "cy", Role::Participant).unwrap_err(),
        ErrorCode::MeetingLocked
    );
    c.client_message(now, ann.id, ClientMessage::Lock { locked: false });
    assert!(join(&mut c, "m", "cy", Role::Participant).is_ok());
}

#[test]
fn removal_tells_everyone_and_closes_the_removed() {
    let mut c = core(10, 100);
    let ann = join(&mut c, "m", "ann", Role::Participant).unwrap();
    let bob = join(&mut c, "m", "bob", Role::Participant).unwrap();
    outputs(&mut c);
    c.client_message(
        Instant::now(),
        ann.id,
        ClientMessage::Moderate {
            action: ModerateAction::Remove,
            target: bob.id,
        },
    );
    let out = outputs(&mut c);
    assert!(matches!(sent_to(&out, bob.id)[..], [ServerMessage::Removed { by }] if *by == ann.id));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Close(id) if *id == bob.id))
    );
    assert!(sent_to(&out, ann.id).iter().any(|m| matches!(
        m,
        ServerMessage::Left { id, reason: LeaveReason::Removed } if *id == bob.id
    )));
    assert_eq!(c.participant_count(), 1);
}

#[test]
fn a_full_node_refuses_and_empty_rooms_disappear() {
    let mut c = core(10, 2);
    let ann = join(&mut c, "m", "ann", Role::Participant).unwrap();
    join(&mut c, "n", "bob", Role::Participant).unwrap();
    assert_eq!(
        join(&mut c, "o", "cy", Role::Participant).unwrap_err(),
        ErrorCode::NodeFull
    );
    c.leave(Instant::now(), ann.id, LeaveReason::Left);
    assert_eq!(c.rooms.len(), 1);
    assert!(!c.room_names.contains_key("m"));
    assert!(join(&mut c, "m", "cy", Role::Participant).is_ok());
}
