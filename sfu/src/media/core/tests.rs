//! The core's admission and moderation rules, driven without any network.

use super::*;
use crate::cascade::control::LinkMessage;
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
            node_name: "test".into(),
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

/// Two cores joined by a link: control messages are carried between them by hand.
struct Pair {
    a: MediaCore,
    b: MediaCore,
    /// Frames for participants, from both cores.
    frames: Vec<Output>,
}

impl Pair {
    fn new() -> Self {
        let mut a = core(10, 100);
        let mut b = core(10, 100);
        a.set_node_index(1);
        b.set_node_index(2);
        // in a cluster the locator picks moderators
        a.config.first_is_moderator = false;
        b.config.first_is_moderator = false;
        let params = |index: u16| crate::cascade::link::LinkParams {
            index,
            name: format!("node-{index}"),
            media_addr: "127.0.0.1:9".parse().unwrap(),
            key: [3; 32],
        };
        a.link_up(Instant::now(), params(2));
        b.link_up(Instant::now(), params(1));
        Self {
            a,
            b,
            frames: Vec::new(),
        }
    }

    /// Delivers link messages both ways until both cores are quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for (from_a, peer_index) in [(true, 1u16), (false, 2u16)] {
                let (from, to) = if from_a {
                    (&mut self.a, &mut self.b)
                } else {
                    (&mut self.b, &mut self.a)
                };
                for output in outputs(from) {
                    match output {
                        Output::Link(_, message) => {
                            to.link_message(Instant::now(), peer_index, message);
                            moved = true;
                        }
                        other => self.frames.push(other),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn take_frames(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.frames)
    }

    /// Node A shares meeting "m" with node B; the frames of the exchange are dropped.
    fn share_meeting(&mut self) {
        self.a.attach(2, "m");
        self.pump();
        self.take_frames();
    }

    /// `by` on node A asks for `action` on `target`; returns the frames that result.
    fn moderate(
        &mut self,
        by: ParticipantId,
        action: ModerateAction,
        target: ParticipantId,
    ) -> Vec<Output> {
        self.a.client_message(
            Instant::now(),
            by,
            ClientMessage::Moderate { action, target },
        );
        self.pump();
        self.take_frames()
    }
}

#[test]
fn participants_on_two_nodes_meet_and_moderation_crosses_the_link() {
    let mut pair = Pair::new();
    let ann = join(&mut pair.a, "m", "ann", Role::Participant).unwrap();
    let bob = join(&mut pair.b, "m", "bob", Role::Participant).unwrap();
    assert_eq!(ann.id >> 20, 1, "ids carry the node index");
    assert_eq!(bob.id >> 20, 2);
    pair.pump();
    assert!(
        pair.take_frames()
            .iter()
            .any(|o| matches!(o, Output::FindPeers(m) if m == "m"))
    );
    pair.a.attach(2, "m");
    pair.pump();
    let frames = pair.take_frames();
    assert!(
        sent_to(&frames, bob.id).iter().any(
            |m| matches!(m, ServerMessage::Joined { participant } if participant.id == ann.id)
        )
    );
    assert!(
        sent_to(&frames, ann.id).iter().any(
            |m| matches!(m, ServerMessage::Joined { participant } if participant.id == bob.id)
        )
    );
    let cy = join(&mut pair.b, "m", "cy", Role::Participant).unwrap();
    let ServerMessage::Welcome(welcome) = &cy.welcome else {
        panic!("no welcome");
    };
    let mut ids: Vec<_> = welcome.participants.iter().map(|p| p.id).collect();
    ids.sort();
    assert_eq!(
        ids,
        [ann.id, bob.id],
        "a late joiner sees both nodes' participants"
    );
    pair.pump();
    pair.take_frames();

    let frames = pair.moderate(ann.id, ModerateAction::MuteAudio, bob.id);
    assert!(
        sent_to(&frames, ann.id)
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { .. })),
        "ann is not a moderator: refused on her own node"
    );
    assert!(
        !sent_to(&frames, bob.id)
            .iter()
            .any(|m| matches!(m, ServerMessage::MutedByModerator { .. }))
    );
}

#[test]
fn a_moderator_mutes_locks_and_removes_across_nodes() {
    let mut pair = Pair::new();
    let ann = join(&mut pair.a, "m", "ann", Role::Moderator).unwrap();
    let bob = join(&mut pair.b, "m", "bob", Role::Participant).unwrap();
    pair.share_meeting();

    let now = Instant::now();
    let frames = pair.moderate(ann.id, ModerateAction::MuteAudio, bob.id);
    assert!(sent_to(&frames, bob.id).iter().any(
        |m| matches!(m, ServerMessage::MutedByModerator { audio: true, by, .. } if *by == ann.id)
    ));
    assert!(sent_to(&frames, ann.id).iter().any(|m| matches!(
        m,
        ServerMessage::Updated { participant } if participant.id == bob.id && participant.audio_muted
    )), "the moderator sees the mute take effect");

    pair.a
        .client_message(now, ann.id, ClientMessage::Lock { locked: true });
    pair.pump();
    let frames = pair.take_frames();
    assert!(
        sent_to(&frames, bob.id)
            .iter()
            .any(|m| matches!(m, ServerMessage::Lock { locked: true, by } if *by == ann.id))
    );
    assert_eq!(
        join(&mut pair.b, "m", "cy", Role::Participant).unwrap_err(),
        ErrorCode::MeetingLocked,
        "the lock holds on the other node"
    );
    let mut back = request("m", "dee", Role::Participant);
    back.rejoin = true;
    assert!(
        pair.b.join(now, back).is_ok(),
        "someone coming back with a reconnect token gets in"
    );
    pair.pump();
    pair.take_frames();

    let frames = pair.moderate(ann.id, ModerateAction::Remove, bob.id);
    assert!(
        sent_to(&frames, bob.id)
            .iter()
            .any(|m| matches!(m, ServerMessage::Removed { .. }))
    );
    assert!(
        frames
            .iter()
            .any(|o| matches!(o, Output::Close(id) if *id == bob.id))
    );
    assert!(sent_to(&frames, ann.id).iter().any(
        |m| matches!(m, ServerMessage::Left { id, reason: LeaveReason::Removed } if *id == bob.id)
    ));
    assert!(frames.iter().any(
        |o| matches!(o, Output::CallRecord(r) if r.identity == "bob" && r.reason == "removed")
    ));
}

#[test]
fn an_emptied_room_detaches_and_a_lost_link_takes_its_participants_away() {
    let mut pair = Pair::new();
    let ann = join(&mut pair.a, "m", "ann", Role::Participant).unwrap();
    let bob = join(&mut pair.b, "m", "bob", Role::Participant).unwrap();
    let cy = join(&mut pair.b, "m", "cy", Role::Participant).unwrap();
    pair.share_meeting();

    pair.b.leave(Instant::now(), bob.id, LeaveReason::Left);
    pair.pump();
    let frames = pair.take_frames();
    assert!(sent_to(&frames, ann.id).iter().any(
        |m| matches!(m, ServerMessage::Left { id, reason: LeaveReason::Left } if *id == bob.id)
    ));

    pair.a.link_down(Instant::now(), 2);
    let frames = outputs(&mut pair.a);
    assert!(sent_to(&frames, ann.id).iter().any(
        |m| matches!(m, ServerMessage::Left { id, reason: LeaveReason::Disconnected } if *id == cy.id)
    ));
    assert!(pair.a.remote.is_empty());
    assert!(pair.a.rooms.values().all(|r| r.peers.is_empty()));
    assert!(
        frames
            .iter()
            .any(|o| matches!(o, Output::FindPeers(m) if m == "m")),
        "the node looks for the meeting's other nodes again"
    );
}

#[test]
fn a_peer_cannot_announce_ids_of_another_node() {
    let mut pair = Pair::new();
    let ann = join(&mut pair.a, "m", "ann", Role::Participant).unwrap();
    let _bob = join(&mut pair.b, "m", "bob", Role::Participant).unwrap();
    pair.share_meeting();
    let forged = crate::signaling::protocol::ParticipantInfo {
        id: (3 << 20) | 1,
        identity: None,
        name: "mallory".into(),
        role: Role::Moderator,
        audio_muted: false,
        video_muted: false,
    };
    pair.a.link_message(
        Instant::now(),
        2,
        LinkMessage::Participant {
            meeting: "m".into(),
            participant: forged,
            audio: true,
            video: true,
        },
    );
    let frames = outputs(&mut pair.a);
    assert!(sent_to(&frames, ann.id).is_empty());
    assert_eq!(pair.a.remote.len(), 1);
}

#[test]
fn link_datagrams_that_do_not_authenticate_are_counted_and_dropped() {
    let mut pair = Pair::new();
    let transport = TransportContext {
        local_addr: "127.0.0.1:10000".parse().unwrap(),
        peer_addr: "127.0.0.1:9".parse().unwrap(),
        ecn: None,
        transport_protocol: rtc::shared::TransportProtocol::UDP,
    };
    let mut stranger = crate::cascade::link::Link::new(
        2,
        crate::cascade::link::LinkParams {
            index: 1,
            name: "node-1".into(),
            media_addr: "127.0.0.1:10000".parse().unwrap(),
            key: [4; 32],
        },
    );
    let rtp = crate::cascade::frame::RelayedRtp {
        publisher: (2 << 20) | 1,
        kind: crate::media::forwarder::MediaKind::Audio,
        level: Some(3),
        marker: false,
        payload_type: 111,
        seq: 1,
        timestamp: 1,
        ssrc: 1,
        payload: bytes::Bytes::from_static(b"opus"),
    };
    let now = Instant::now();
    pair.a.handle_datagram(now, transport, stranger.relay(&rtp));
    let mut unknown = crate::cascade::frame::start_datagram(9, 0);
    unknown.extend_from_slice(&[0; 32]);
    pair.a.handle_datagram(now, transport, unknown);
    pair.a
        .handle_datagram(now, transport, bytes::BytesMut::from(&[0xCA, 1, 0][..]));
    let text = pair.a.metrics.render();
    for reason in [
        "cascade_forged",
        "cascade_unknown_link",
        "cascade_malformed",
    ] {
        assert!(
            text.contains(&format!(
                "kaskade_sfu_dropped_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {text}"
        );
    }
}

#[test]
fn everyone_on_every_node_learns_when_the_meeting_is_recorded() {
    let mut pair = Pair::new();
    let ann = join(&mut pair.a, "m", "ann", Role::Participant).unwrap();
    let _bob = join(&mut pair.b, "m", "bob", Role::Participant).unwrap();
    pair.share_meeting();

    let recorder = join(&mut pair.b, "m", "rec", Role::Recorder).unwrap();
    let ServerMessage::Welcome(welcome) = &recorder.welcome else {
        panic!("no welcome");
    };
    assert_eq!(welcome.recv_slots, 10, "a recorder receives all ten");
    let mut identities: Vec<_> = welcome
        .participants
        .iter()
        .filter_map(|p| p.identity.as_deref())
        .collect();
    identities.sort();
    assert_eq!(
        identities,
        ["ann", "bob"],
        "a recorder learns identities, across the link too"
    );
    pair.pump();
    let frames = pair.take_frames();
    assert!(
        sent_to(&frames, ann.id)
            .iter()
            .any(|m| matches!(m, ServerMessage::Recording { active: true })),
        "a participant on the other node sees the recording start"
    );
    let late = join(&mut pair.a, "m", "cy", Role::Participant).unwrap();
    assert!(matches!(&late.welcome, ServerMessage::Welcome(w) if w.recording));
    let ServerMessage::Welcome(seen) = &late.welcome else {
        panic!("no welcome");
    };
    assert!(
        seen.participants.iter().all(|p| p.identity.is_none()) && seen.you.identity.is_none(),
        "participants never see identities"
    );

    pair.b.leave(Instant::now(), recorder.id, LeaveReason::Left);
    pair.pump();
    let frames = pair.take_frames();
    assert!(
        sent_to(&frames, ann.id)
            .iter()
            .any(|m| matches!(m, ServerMessage::Recording { active: false }))
    );
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
fn a_room_emptied_here_forgets_the_streams_its_link_tracked_for_remote_members() {
    let mut pair = Pair::new();
    let ann = join(&mut pair.a, "m", "ann", Role::Participant).unwrap();
    let bob = join(&mut pair.b, "m", "bob", Role::Participant).unwrap();
    pair.share_meeting();
    // relayed packets of bob arrived over the link
    let (link, _) = pair.a.links.get_mut(&2).unwrap();
    use crate::media::forwarder::MediaKind;
    let _ = link.received(bob.id, MediaKind::Audio, 1);
    let _ = link.received(bob.id, MediaKind::Video, 1);
    let streams = |core: &mut MediaCore| {
        core.map_sizes()
            .into_iter()
            .find(|(name, _)| *name == "link_streams")
            .map(|(_, n)| n)
    };
    assert_eq!(streams(&mut pair.a), Some(2));
    // the last local member leaves: the room, its remote members and their streams go
    pair.a.leave(Instant::now(), ann.id, LeaveReason::Left);
    pair.pump();
    assert!(pair.a.remote.is_empty());
    assert_eq!(
        streams(&mut pair.a),
        Some(0),
        "the link keeps no state for bob"
    );
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
