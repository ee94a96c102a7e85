//! Two cores joined by a cascade link: participants on both nodes meet, moderation and
//! recording state cross the link, and what a peer may not do is refused.

use super::*;

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
    assert_eq!(ann.id.node(), 1, "ids carry the node index");
    assert_eq!(bob.id.node(), 2);
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
    assert_eq!(relayed(&pair.a), 0);
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
    let forged = kaskade_protocol::signaling::ParticipantInfo {
        id: ParticipantId::new(3, 1).unwrap(),
        identity: None,
        name: "mallory".into(),
        role: Role::Moderator,
        audio_muted: false,
        video_muted: false,
        source: None,
    };
    pair.a.link_message(
        Instant::now(),
        2,
        LinkMessage::Participant {
            meeting: "m".into(),
            participant: forged,
            payload_kinds: vec![(111, crate::media::forwarder::MediaKind::Audio)],
            cache_gop: false,
        },
    );
    let frames = outputs(&mut pair.a);
    assert!(sent_to(&frames, ann.id).is_empty());
    assert_eq!(relayed(&pair.a), 1);
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
        publisher: ParticipantId::new(2, 1).unwrap(),
        kind: crate::media::forwarder::MediaKind::Audio,
        layer: 0,
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
fn a_room_emptied_here_forgets_the_streams_its_link_tracked_for_relayed_members() {
    let mut pair = Pair::new();
    let ann = join(&mut pair.a, "m", "ann", Role::Participant).unwrap();
    let bob = join(&mut pair.b, "m", "bob", Role::Participant).unwrap();
    pair.share_meeting();
    // relayed packets of bob arrived over the link
    let (link, _) = pair.a.links.get_mut(&2).unwrap();
    use crate::media::forwarder::MediaKind;
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let stream = crate::cascade::frame::LinkStream {
            publisher: bob.id,
            kind,
            layer: 0,
        };
        let _ = link.received(Instant::now(), stream, 1);
    }
    let streams = |core: &mut MediaCore| {
        core.map_sizes()
            .into_iter()
            .find(|(name, _)| *name == "link_streams")
            .map(|(_, n)| n)
    };
    assert_eq!(streams(&mut pair.a), Some(2));
    // the last local member leaves: the room, its relayed members and their streams go
    pair.a.leave(Instant::now(), ann.id, LeaveReason::Left);
    pair.pump();
    assert!(pair.a.participants.is_empty(), "bob is gone with the room");
    assert_eq!(
        streams(&mut pair.a),
        Some(0),
        "the link keeps no state for bob"
    );
}

#[test]
fn a_relayed_participant_is_a_member_here_but_is_counted_and_recorded_on_its_own_node() {
    let mut pair = Pair::new();
    let ann = join(&mut pair.a, "m", "ann", Role::Participant).unwrap();
    let bob = join(&mut pair.b, "m", "bob", Role::Participant).unwrap();
    pair.share_meeting();

    let cy = join(&mut pair.a, "m", "cy", Role::Participant).unwrap();
    let ServerMessage::Welcome(welcome) = &cy.welcome else {
        panic!("no welcome");
    };
    let listed: Vec<_> = welcome.participants.iter().map(|p| p.id).collect();
    assert!(
        listed.contains(&ann.id) && listed.contains(&bob.id),
        "{listed:?}"
    );
    assert_eq!(pair.a.participant_count(), 2, "bob takes no seat of node A");
    assert_eq!(pair.a.load().participants, 2);
    assert_eq!(
        pair.a.load().meetings[0].participants,
        2,
        "counted on its own node"
    );
    assert_eq!(relayed(&pair.a), 1);

    let from_a = outputs(&mut pair.a);
    assert!(
        sent_to(&from_a, bob.id).is_empty(),
        "node A has no session of bob"
    );
    let announced: Vec<_> = from_a
        .iter()
        .filter_map(|o| match o {
            Output::Link(2, LinkMessage::Participant { participant, .. }) => Some(participant.id),
            _ => None,
        })
        .collect();
    assert_eq!(announced, [cy.id], "bob is not announced back to his node");

    pair.b.leave(Instant::now(), bob.id, LeaveReason::Left);
    pair.pump();
    let frames = pair.take_frames();
    let records: Vec<_> = frames
        .iter()
        .filter_map(|o| match o {
            Output::CallRecord(r) => Some(r.identity.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(records, ["bob"], "one call record, from bob's own node");
    assert_eq!(relayed(&pair.a), 0);
    assert!(sent_to(&frames, cy.id).iter().any(
        |m| matches!(m, ServerMessage::Left { id, reason: LeaveReason::Left } if *id == bob.id)
    ));
}

#[test]
fn a_peer_cannot_move_its_participant_into_another_meeting() {
    let mut pair = Pair::new();
    let _ann = join(&mut pair.a, "m", "ann", Role::Participant).unwrap();
    let _dan = join(&mut pair.a, "n", "dan", Role::Participant).unwrap();
    let bob = join(&mut pair.b, "m", "bob", Role::Participant).unwrap();
    let _eve = join(&mut pair.b, "n", "eve", Role::Participant).unwrap();
    pair.share_meeting();
    pair.a.attach(2, "n");
    pair.pump();
    pair.take_frames();
    let bob_in_m = pair.a.participants[&bob.id].room;

    let mut info = pair.b.participants[&bob.id].info();
    info.name = "bob, elsewhere".into();
    pair.a.link_message(
        Instant::now(),
        2,
        LinkMessage::Participant {
            meeting: "n".into(),
            participant: info,
            payload_kinds: Vec::new(),
            cache_gop: false,
        },
    );
    assert_eq!(pair.a.participants[&bob.id].room, bob_in_m);
    assert_eq!(pair.a.participants[&bob.id].name, "bob");
    let n = pair.a.room_names["n"];
    assert!(!pair.a.rooms[&n].members.contains(&bob.id));
}

/// Participants relayed into `core` from other nodes.
fn relayed(core: &MediaCore) -> usize {
    core.participants.values().filter(|p| !p.is_here()).count()
}
