//! A participant relayed over a cascade link is an ordinary member of the far room: its audio
//! level, which crosses the link beside the packet, makes it the active speaker there, and its
//! mute is its own node's to enforce (the far node does not hold back a packet that overtakes
//! the news of an unmute).

use kaskade_media::cascade::control::LinkMessage;
use kaskade_media::media::core::Output;
use kaskade_protocol::signaling::{ClientMessage, MediaKind, ParticipantInfo, Role, ServerMessage};
use kaskade_simnet::Sim;
use std::time::Duration;

/// 20 ms Opus frames.
const FRAME: Duration = Duration::from_millis(20);
/// The RFC 6464 extension id kaskade's clients negotiate.
const AUDIO_LEVEL_EXT_ID: u8 = 1;

/// Sends `frames` audio frames of client `n` at RFC 6464 level `level` (0 is loudest), one
/// frame interval apart; `seq` goes on from call to call.
fn talk(sim: &mut Sim, n: usize, seq: &mut u16, level: u8, frames: usize) {
    let payload_type = sim.clients[n]
        .publish_payload_type(MediaKind::Audio)
        .expect("the node takes our audio");
    for _ in 0..frames {
        let mut header = rtc::rtp::header::Header {
            version: 2,
            payload_type,
            sequence_number: *seq,
            timestamp: u32::from(*seq) * 960,
            ssrc: 0xa0d10,
            ..Default::default()
        };
        header
            .set_extension(AUDIO_LEVEL_EXT_ID, vec![0x80 | level].into())
            .expect("a one-byte extension");
        let packet = rtc::rtp::Packet {
            header,
            payload: vec![0xfc, 0xff, 0xfe].into(),
        };
        sim.send_rtp(n, &packet).expect("connected");
        *seq = seq.wrapping_add(1);
        sim.run_for(FRAME);
    }
}

/// Audio packets client `n` has received on its slot for `publisher`'s audio.
fn heard(sim: &Sim, n: usize, publisher: usize) -> usize {
    let slot = sim
        .consumer_of(n, publisher, MediaKind::Audio)
        .expect("a slot for the publisher's audio");
    sim.clients[n]
        .received
        .iter()
        .filter(|r| r.ssrc == slot)
        .count()
}

#[test]
fn a_relayed_talker_is_the_far_rooms_speaker_and_its_own_node_enforces_its_mutes() {
    let mut sim = Sim::new(11, 2);
    let ann = sim.join(0, "m", "ann", Some((0xa0d10, 0xa0d11))).unwrap();
    let bob = sim.join(1, "m", "bob", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    let mut seq = 100;

    talk(&mut sim, ann, &mut seq, 10, 50);
    let ann_id = sim.id(ann);
    let bob_id = sim.id(bob);
    let speaker_on_bobs_node = sim.outputs.iter().any(|(node, output)| {
        *node == 1
            && matches!(output, Output::Send(to, ServerMessage::Speaker { id })
                if *to == bob_id && *id == ann_id)
    });
    assert!(
        speaker_on_bobs_node,
        "Bob's node names Ann, relayed to it, the speaker"
    );
    let before = heard(&sim, bob, ann);
    assert!(before >= 45, "Bob hears Ann across the link: {before}");

    // Bob's node believes Ann muted (the news of her unmute is still on its way): her node,
    // which relays only what it forwards, decides
    let payload_kinds = [MediaKind::Audio, MediaKind::Video]
        .into_iter()
        .filter_map(|kind| Some((sim.clients[ann].publish_payload_type(kind)?, kind)))
        .collect();
    let stale = ParticipantInfo {
        id: ann_id,
        identity: Some("ann".into()),
        name: "ann".into(),
        role: Role::Participant,
        audio_muted: true,
        video_muted: false,
        source: None,
    };
    let now = sim.now;
    sim.core(1).link_message(
        now,
        1,
        LinkMessage::Participant {
            meeting: "m".into(),
            participant: stale,
            payload_kinds,
            cache_gop: false,
        },
    );
    talk(&mut sim, ann, &mut seq, 10, 25);
    let overtaking = heard(&sim, bob, ann) - before;
    assert!(
        overtaking >= 20,
        "Ann's packets still reach Bob: {overtaking}"
    );

    // Ann really mutes on her node: nothing of hers crosses the link any more
    let now = sim.now;
    sim.core(0).client_message(
        now,
        ann_id,
        ClientMessage::Mute {
            audio: Some(true),
            video: None,
        },
    );
    sim.run_for(Duration::from_millis(100));
    let muted_at = heard(&sim, bob, ann);
    talk(&mut sim, ann, &mut seq, 10, 25);
    assert_eq!(heard(&sim, bob, ann), muted_at, "a muted Ann is not heard");
}
