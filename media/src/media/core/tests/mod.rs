//! The core's admission and moderation rules, driven without any network.

use super::*;
use crate::cascade::control::LinkMessage;
use kaskade_protocol::signaling::ModerateAction;

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
            node_name: "test".into(),
        },
        Arc::new(Metrics::new()),
        Surroundings::seeded(Instant::now(), 1_700_000_000_000, 7),
    )
}

fn request(meeting: &str, name: &str, role: Role) -> JoinRequest {
    JoinRequest {
        meeting: meeting.into(),
        identity: name.into(),
        name: name.into(),
        role,
        rejoin: false,
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
    assert_eq!(
        sent_to(&outputs(&mut c), ann.id),
        [&ServerMessage::Recording { active: true }],
        "nobody is told who the recorder is, only that the meeting is recorded"
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

#[test]
fn every_map_is_empty_again_once_everyone_has_left() {
    let mut c = core(10, 100);
    let ids: Vec<ParticipantId> = [("m", "ann"), ("m", "bob"), ("n", "cy")]
        .into_iter()
        .map(|(meeting, name)| join(&mut c, meeting, name, Role::Participant).unwrap().id)
        .collect();
    c.handle_timeout(Instant::now());
    let sizes = c.map_sizes();
    let size = |name: &str| sizes.iter().find(|(n, _)| *n == name).map(|(_, n)| *n);
    assert_eq!(size("participants"), Some(3));
    assert_eq!(size("rooms"), Some(2));
    assert_eq!(size("room_names"), Some(2));
    assert_eq!(size("room_members"), Some(3));
    for id in ids {
        c.leave(Instant::now(), id, LeaveReason::Left);
    }
    outputs(&mut c);
    let left: Vec<_> = c.map_sizes().into_iter().filter(|(_, n)| *n != 0).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn an_offer_with_nothing_to_negotiate_is_refused_not_answered() {
    // found by fuzz/fuzz_targets/sdp_offer.rs (this is the minimized input): an m-line whose
    // only payload type has no rtpmap was rejected in an answer without ICE credentials,
    // which the node handed out as if a connection could follow
    let offer = "v=0\r\no=- 1 2 IN IP4 01\r\ns=-\r\nt=0 0\r\nm=audio 9 P 102\r\n\
                 a=ice-ufrag:fuzz\na=ice-pwd:z\na=fingerprint: CC:\na=mid:1\r\na=sendonly\r\r\n\
                 a=rtcp-fb:102 f";
    let mut c = core(4, 10);
    let ann = join(&mut c, "m", "ann", Role::Participant).unwrap();
    let now = Instant::now();
    let refused = c.offer(now, ann.id, offer.into()).unwrap_err();
    assert!(refused.contains("no m-line"), "{refused}");
    assert!(
        c.offer(now, ann.id, offer.into()).is_err(),
        "negotiated once"
    );
}

mod cascade;

#[test]
fn call_records_carry_the_wall_clock_the_shell_gave() {
    let t0 = Instant::now();
    let mut c = MediaCore::new(
        core(10, 10).config.clone(),
        Arc::new(Metrics::new()),
        Surroundings::seeded(t0, 1_700_000_000_000, 7),
    );
    let ann = c
        .join(
            t0 + Duration::from_secs(1),
            request("m", "ann", Role::Participant),
        )
        .unwrap();
    c.leave(t0 + Duration::from_millis(3_500), ann.id, LeaveReason::Left);
    let record = outputs(&mut c)
        .into_iter()
        .find_map(|o| match o {
            Output::CallRecord(r) => Some(r),
            _ => None,
        })
        .expect("a call record");
    assert_eq!(record.joined_at_ms, 1_700_000_001_000);
    assert_eq!(record.left_at_ms, 1_700_000_003_500);
}
