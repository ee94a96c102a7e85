//! Redundant audio (RED, RFC 2198) through a node, both ways: a publisher's RED makes good what
//! its uplink loses, and everyone gets plain Opus from it; a subscriber whose path loses
//! packets (its receiver reports say so) gets RED and makes good what it loses, while one on a
//! clean path gets plain Opus. Deterministic (seeded).

use kaskade_media::media::red::{RED_PAYLOAD_TYPE, RedEncoder};
use kaskade_protocol::signaling::MediaKind;
use kaskade_simnet::{Impairment, Sim};
use std::collections::BTreeSet;
use std::time::Duration;

/// 20 ms of Opus at 48 kHz.
const PACKET: Duration = Duration::from_millis(20);
const TICKS_PER_PACKET: u32 = 960;
/// Packets each test sends: 8 s of audio.
const PACKETS: u16 = 400;

/// Sends `PACKETS` audio packets from `client` (as RED when `red` is given), 20 ms apart; the
/// payload names the packet.
fn speak(sim: &mut Sim, client: usize, ssrc: u32, mut red: Option<RedEncoder>) {
    let opus = sim.clients[client]
        .publish_payload_type(MediaKind::Audio)
        .expect("the node takes our audio");
    if let Some(encoder) = &mut red {
        // the publisher's own estimate of its uplink: lossy
        encoder.observe_loss(sim.now, 0.1);
    }
    for n in 0..PACKETS {
        let mut packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: opus,
                sequence_number: 20_000 + n,
                timestamp: 500_000 + u32::from(n) * TICKS_PER_PACKET,
                ssrc,
                ..Default::default()
            },
            payload: format!("opus frame {n:05}").into_bytes().into(),
        };
        if let Some(encoder) = &mut red {
            let wrapped = encoder.encode(sim.now, &mut packet);
            assert!(wrapped || n == 0, "sent as RED after the first");
        }
        sim.send_rtp(client, &packet).expect("connected");
        sim.run_for(PACKET);
    }
    sim.run_for(Duration::from_millis(500));
}

/// The distinct frames `n` received on its slot for `publisher`'s audio, and the payload types
/// they came with.
fn heard(sim: &Sim, n: usize, publisher: usize) -> (BTreeSet<String>, BTreeSet<u8>) {
    let slot = sim.consumer_of(n, publisher, MediaKind::Audio).unwrap();
    let on_slot = sim.clients[n].received.iter().filter(|p| p.ssrc == slot);
    let frames = on_slot
        .clone()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    (frames, on_slot.map(|p| p.payload_type).collect())
}

#[test]
fn red_from_a_publisher_makes_good_its_uplink_losses_and_subscribers_get_plain_opus() {
    let mut sim = Sim::new(21, 1);
    let alice = sim.join(0, "m", "alice", Some((0xa1, 0xa2))).unwrap();
    let bob = sim.join(0, "m", "bob", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    // Alice's uplink loses one packet in ten
    sim.impair(
        alice,
        Impairment {
            loss: 0.1,
            ..Impairment::default()
        },
    );
    let red = sim.clients[alice]
        .answer
        .publish_section(MediaKind::Audio)
        .and_then(|s| {
            s.payload_types
                .iter()
                .copied()
                .find(|&pt| pt == RED_PAYLOAD_TYPE)
        })
        .expect("the node accepts RED");
    speak(&mut sim, alice, 0xa1, Some(RedEncoder::new(red)));

    let (frames, payload_types) = heard(&sim, bob, alice);
    let recovered = sim.metrics(0).red_recovered.get();
    println!(
        "AUDIO_RED uplink_loss=10% heard={}/{PACKETS} recovered_by_node={recovered}",
        frames.len()
    );
    assert!(
        recovered >= 20,
        "about 40 of 400 lost on the way in were made good: {recovered}"
    );
    assert!(
        frames.len() >= usize::from(PACKETS) * 99 / 100,
        "Bob heard {} of {PACKETS} frames",
        frames.len()
    );
    assert!(frames.iter().all(|f| f.starts_with("opus frame ")));
    let opus = sim.clients[bob].answer.sections[0].payload_types[0];
    assert_eq!(payload_types, BTreeSet::from([opus]), "plain Opus");
    assert_eq!(sim.clients[bob].red_received, 0, "Bob's path is clean");
}

#[test]
fn a_subscriber_whose_path_loses_gets_red_and_one_on_a_clean_path_plain_opus() {
    let mut sim = Sim::new(22, 1);
    let alice = sim.join(0, "m", "alice", Some((0xa1, 0xa2))).unwrap();
    let bob = sim.join(0, "m", "bob", None).unwrap();
    let carol = sim.join(0, "m", "carol", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    sim.impair(
        bob,
        Impairment {
            loss: 0.1,
            ..Impairment::default()
        },
    );
    speak(&mut sim, alice, 0xa1, None);

    // Bob's first receiver report shows his loss; from then on his audio comes as RED
    let bob_client = &sim.clients[bob];
    assert!(bob_client.red_received > 300, "{}", bob_client.red_received);
    assert!(
        bob_client.red_recovered >= 20,
        "{}",
        bob_client.red_recovered
    );
    let (frames, _) = heard(&sim, bob, alice);
    println!(
        "AUDIO_RED downlink_loss=10% heard={}/{PACKETS} red_received={} recovered_by_client={}",
        frames.len(),
        bob_client.red_received,
        bob_client.red_recovered
    );
    let from_the_second_second = frames
        .iter()
        .filter(|f| f.as_str() >= "opus frame 00100")
        .count();
    assert!(
        from_the_second_second >= 297,
        "with RED Bob heard {from_the_second_second} of the last 300 frames"
    );
    assert!(sim.metrics(0).red_sent.get() > 300);

    let (frames, payload_types) = heard(&sim, carol, alice);
    assert_eq!(
        frames.len(),
        usize::from(PACKETS),
        "Carol heard every frame"
    );
    assert_eq!(
        sim.clients[carol].red_received, 0,
        "a clean path pays nothing"
    );
    assert_eq!(payload_types.len(), 1);
}
