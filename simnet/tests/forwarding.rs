//! Two nodes joined by a cascade link, clients on both, one simulated clock: real SRTP from a
//! publisher on node 1 to a subscriber on node 2 through loss, jitter (reordering) and
//! keyframe requests, then a source switch on the subscriber's slot. Deterministic (seeded) and
//! faster than real time.

use kaskade_protocol::signaling::MediaKind;
use kaskade_simnet::{Impairment, Received, Sim};
use std::time::Duration;

/// 30 fps video on a 90 kHz clock.
const FRAME: Duration = Duration::from_millis(33);
const TICKS_PER_FRAME: u32 = 3_000;

/// A publisher's video: one packet per frame, a keyframe (an IDR slice) when asked or every
/// `interval` frames (not the first: a subscriber's first keyframe is one it asked for); the
/// payload names the publisher and the frame.
struct Video {
    client: usize,
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    frame: u32,
    tag: u8,
    interval: u32,
    requests_seen: usize,
}

impl Video {
    fn new(sim: &Sim, client: usize, ssrc: u32, tag: u8, interval: u32) -> Self {
        let payload_type = sim.clients[client]
            .publish_payload_type(MediaKind::Video)
            .expect("the node takes our video");
        Self {
            client,
            ssrc,
            payload_type,
            seq: 65_000,
            frame: 0,
            tag,
            interval,
            requests_seen: 0,
        }
    }

    /// Sends the next frame (a keyframe if one was asked for since the last) and lets one
    /// frame interval of simulated time pass.
    fn send_frame(&mut self, sim: &mut Sim) {
        let asked = sim.clients[self.client].keyframe_requests > self.requests_seen;
        self.requests_seen = sim.clients[self.client].keyframe_requests;
        let keyframe = asked || (self.frame + 1).is_multiple_of(self.interval);
        let mut payload = vec![if keyframe { 0x65 } else { 0x41 }, self.tag];
        payload.extend_from_slice(&self.frame.to_be_bytes());
        payload.resize(200, 0xab);
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: self.payload_type,
                sequence_number: self.seq,
                timestamp: 1_000_000 + self.frame * TICKS_PER_FRAME,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        };
        sim.send_rtp(self.client, &packet).expect("connected");
        self.seq = self.seq.wrapping_add(1);
        self.frame += 1;
        sim.run_for(FRAME);
    }
}

/// Frame `frame` of a camera that sends a keyframe every 300 frames (10 s), the first at once,
/// one packet a frame whose payload names the frame.
fn camera_frame(frame: u32) -> rtc::rtp::Packet {
    let mut payload = vec![
        if frame.is_multiple_of(300) {
            0x65
        } else {
            0x41
        },
        b'L',
    ];
    payload.extend_from_slice(&frame.to_be_bytes());
    payload.resize(300, 0xcd);
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: true,
            payload_type: 96,
            sequence_number: 1_000 + frame as u16,
            timestamp: frame * TICKS_PER_FRAME,
            ssrc: 0xca3e,
            ..Default::default()
        },
        payload: payload.into(),
    }
}

/// The (publisher tag, frame) a received packet carries, and whether it is a keyframe.
fn frame_of(packet: &Received) -> (u8, u32, bool) {
    let p = &packet.payload;
    (
        p[1],
        u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
        p[0] == 0x65,
    )
}

/// The packets received on `ssrc`, one per sequence number (retransmissions collapsed),
/// ordered by sequence number (extended from the first).
fn by_sequence(received: &[Received], ssrc: u32) -> Vec<Received> {
    let mut packets: Vec<Received> = received
        .iter()
        .filter(|p| p.ssrc == ssrc)
        .cloned()
        .collect();
    let first = packets.first().map(|p| p.seq).unwrap_or_default();
    packets.sort_by_key(|p| p.seq.wrapping_sub(first));
    packets.dedup_by_key(|p| p.seq);
    packets
}

/// `subscriber` received every one of the `frames` frames `publisher` sent, from the first
/// keyframe it got on.
fn assert_every_frame_from_the_first_keyframe(
    sim: &Sim,
    subscriber: usize,
    publisher: usize,
    frames: usize,
) {
    let slot = sim
        .consumer_of(subscriber, publisher, MediaKind::Video)
        .unwrap();
    let packets = by_sequence(&sim.clients[subscriber].received, slot);
    let (_, first_frame, _) = frame_of(&packets[0]);
    assert_eq!(
        packets.len(),
        frames - first_frame as usize,
        "every frame from the first keyframe on reached {subscriber}"
    );
}

#[test]
fn a_stream_crosses_two_nodes_through_loss_and_reordering_and_switches_source_seamlessly() {
    let mut sim = Sim::new(7, 2);
    let alice = sim.join(0, "m", "alice", Some((0xa11ce, 0xa11cf))).unwrap();
    let bob = sim.join(1, "m", "bob", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();

    // the cascade link reorders; Bob's last hop loses 3 %, reorders, and is long
    sim.link = Impairment {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(15),
        loss: 0.0,
    };
    sim.impair(
        bob,
        Impairment {
            delay: Duration::from_millis(40),
            jitter: Duration::from_millis(25),
            loss: 0.03,
        },
    );

    // keyframes only every 10 s: Bob's first picture must come from a keyframe request that
    // crossed the link to Alice
    let mut video = Video::new(&sim, alice, 0xa11cf, b'A', 300);
    for _ in 0..150 {
        video.send_frame(&mut sim);
    }
    sim.run_for(Duration::from_secs(1));
    let slot = sim
        .consumer_of(bob, alice, MediaKind::Video)
        .expect("Bob has a slot for Alice's video");
    assert!(
        sim.clients[alice].keyframe_requests >= 1,
        "Bob's slot asked Alice for a keyframe across the link"
    );

    // Bob got every packet from his first keyframe on, repaired by his NACKs,
    // rewritten onto his slot without gaps, in the publisher's order and timing
    let packets = by_sequence(&sim.clients[bob].received, slot);
    let first = packets.first().expect("Bob received Alice's video");
    let (tag, first_frame, keyframe) = frame_of(first);
    assert_eq!(tag, b'A');
    assert!(keyframe, "the slot starts at a keyframe");
    let expected = 150 - first_frame as usize;
    assert_eq!(
        packets.len(),
        expected,
        "every frame after the first keyframe arrived (NACKed {} times)",
        sim.clients[bob].nacks_sent
    );
    for (i, p) in packets.iter().enumerate() {
        let (_, frame, _) = frame_of(p);
        assert_eq!(frame, first_frame + i as u32, "frame order");
        assert_eq!(
            p.seq,
            first.seq.wrapping_add(i as u16),
            "no gap in sequence numbers"
        );
        assert_eq!(
            p.timestamp.wrapping_sub(first.timestamp),
            i as u32 * TICKS_PER_FRAME,
            "the publisher's timing"
        );
    }
    assert!(
        sim.clients[bob].nacks_sent > 0,
        "losses on the last hop were NACKed"
    );
    let reordered = sim.clients[bob]
        .received
        .windows(2)
        .filter(|w| w[0].ssrc == slot && w[1].ssrc == slot)
        .any(|w| w[1].seq.wrapping_sub(w[0].seq) > 0x8000);
    assert!(reordered, "the jitter did reorder packets");

    // Alice leaves and Carol starts publishing on node 1: she takes Alice's slot on Bob's
    // side, and the slot's stream goes on where Alice's ended, from Carol's keyframe
    let last_alice = packets.last().unwrap().clone();
    sim.leave(alice);
    sim.run_for(Duration::from_millis(500));
    let carol = sim.join(0, "m", "carol", Some((0xca201, 0xca202))).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    let mut carol_video = Video::new(&sim, carol, 0xca202, b'C', 300);
    for _ in 0..60 {
        carol_video.send_frame(&mut sim);
    }
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.consumer_of(bob, carol, MediaKind::Video).unwrap(),
        slot,
        "Carol took the slot Alice left"
    );
    let after: Vec<Received> = by_sequence(&sim.clients[bob].received, slot)
        .into_iter()
        .filter(|p| frame_of(p).0 == b'C')
        .collect();
    let switch = after.first().expect("Bob receives Carol on the slot");
    assert!(frame_of(switch).2, "the switch happens at Carol's keyframe");
    assert_eq!(
        switch.seq,
        last_alice.seq.wrapping_add(1),
        "the slot's sequence numbers go on across the switch"
    );
    assert!(
        switch.timestamp.wrapping_sub(last_alice.timestamp) < 0x8000_0000,
        "and its timestamps move forward"
    );
    let carol_frames = after.len();
    assert!(
        carol_frames >= 55,
        "Carol's frames after her keyframe arrived: {carol_frames}"
    );
}

#[test]
fn a_lossy_link_is_repaired_by_nacks_and_nacks_again() {
    let mut sim = Sim::new(11, 2);
    let alice = sim.join(0, "m", "alice", Some((0xa11ce, 0xa11cf))).unwrap();
    let bob = sim.join(1, "m", "bob", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    // 8 % of the link's datagrams are lost, its NACKs and retransmissions included: about
    // 24 of the 300 frames, and almost surely a NACK or a retransmission among them, which
    // only a second NACK repairs
    sim.link = Impairment {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        loss: 0.08,
    };
    let mut video = Video::new(&sim, alice, 0xa11cf, b'A', 300);
    for _ in 0..300 {
        video.send_frame(&mut sim);
    }
    sim.run_for(Duration::from_secs(2));
    let slot = sim.consumer_of(bob, alice, MediaKind::Video).unwrap();
    let packets = by_sequence(&sim.clients[bob].received, slot);
    let first_frame = frame_of(&packets[0]).1;
    let metric = |name: &str| {
        sim.metrics(1)
            .render()
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let (nacks, retransmits) = (
        metric("kaskade_sfu_cascade_nacks_sent_total"),
        sim.metrics(0)
            .render()
            .lines()
            .find_map(|l| {
                l.strip_prefix("kaskade_sfu_cascade_retransmits_total")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0),
    );
    assert_eq!(
        packets.len(),
        300 - first_frame as usize,
        "every frame crossed the link ({nacks} NACKs, {retransmits} retransmissions)"
    );
    assert!(
        nacks >= 1.0 && retransmits >= 1.0,
        "losses on the link were NACKed and resent"
    );
}

#[test]
fn a_viewer_on_another_node_sees_a_camera_at_once_from_its_own_nodes_cache() {
    let mut sim = Sim::new(5, 2);
    let _chair = sim.join(0, "m", "chair", None).unwrap();
    let camera = sim.join_source(0, "m", "lobby").unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    // the camera sends a keyframe every 10 s, the first at once; RTSP has no way to ask it
    for frame in 0..60 {
        sim.ingest(camera, &camera_frame(frame)).unwrap();
        sim.run_for(FRAME);
    }
    // Bob joins on the other node 2 s in: the next keyframe is 8 s away
    let bob = sim.join(1, "m", "bob", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    let joined = sim.now;
    for frame in 60..90 {
        sim.ingest(camera, &camera_frame(frame)).unwrap();
        sim.run_for(FRAME);
    }
    let slot = sim
        .consumer_of_id(bob, camera, MediaKind::Video)
        .expect("Bob has a slot for the camera");
    let packets = by_sequence(&sim.clients[bob].received, slot);
    let first = packets.first().expect("Bob received the camera's video");
    assert_eq!(frame_of(first), (b'L', 0, true), "from the cached keyframe");
    assert!(
        first.at.duration_since(joined) < Duration::from_millis(500),
        "at once, not at the next keyframe"
    );
    let last = frame_of(packets.last().unwrap()).1;
    assert!(last >= 88, "and up to the live frame: {last}");
    assert!(
        packets
            .iter()
            .enumerate()
            .all(|(i, p)| frame_of(p).1 == i as u32 && p.seq == first.seq.wrapping_add(i as u16)),
        "every frame from the keyframe on, in order, without a gap"
    );
    let replays = sim.metrics(1).gop_replays.get();
    assert!(replays >= 1, "Bob's own node replayed its cache");
}

#[test]
fn a_viewer_that_floods_keyframe_requests_gets_a_cameras_cache_at_most_twice_a_second() {
    let mut sim = Sim::new(9, 1);
    let viewer = sim.join(0, "m", "viewer", None).unwrap();
    let camera = sim.join_source(0, "m", "lobby").unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    for frame in 0..30 {
        sim.ingest(camera, &camera_frame(frame)).unwrap();
        sim.run_for(FRAME);
    }
    let slot = sim
        .consumer_of_id(viewer, camera, MediaKind::Video)
        .expect("the viewer has a slot for the camera");
    let before = sim.metrics(0).gop_replays.get();
    // a keyframe request before every frame for one second: only the first, and one half a
    // second later, start the viewer over from the camera's cache
    for frame in 30..60 {
        sim.send_pli(viewer, slot).unwrap();
        sim.run_for(Duration::from_millis(5));
        sim.ingest(camera, &camera_frame(frame)).unwrap();
        sim.run_for(FRAME - Duration::from_millis(5));
    }
    let replays = sim.metrics(0).gop_replays.get() - before;
    assert!(
        (1..=2).contains(&replays),
        "{replays} replays for 30 requests in a second"
    );
    let received = by_sequence(&sim.clients[viewer].received, slot);
    assert!(
        received.len() <= 60 + 2 * 60,
        "the live frames and at most two caches of them: {} packets",
        received.len()
    );
}

#[test]
fn a_nack_repeated_within_the_round_trip_is_held_back_and_every_loss_still_repaired() {
    let mut sim = Sim::new(19, 1);
    let alice = sim.join(0, "m", "alice", Some((0xa11ce, 0xa11cf))).unwrap();
    // Bob sends congestion feedback, as browsers do: his node knows his round trip
    sim.congestion_feedback = true;
    let bob = sim.join(0, "m", "bob", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    let mut video = Video::new(&sim, alice, 0xa11cf, b'A', 60);
    for _ in 0..30 {
        video.send_frame(&mut sim);
    }
    // a long path that loses 5 % both ways: Bob NACKs a gap again every 120 ms, three
    // times a round trip of over 300 ms
    sim.impair(
        bob,
        Impairment {
            delay: Duration::from_millis(150),
            jitter: Duration::ZERO,
            loss: 0.05,
        },
    );
    for _ in 0..300 {
        video.send_frame(&mut sim);
    }
    sim.impair(bob, Impairment::default());
    for _ in 0..30 {
        video.send_frame(&mut sim);
    }
    sim.run_for(Duration::from_secs(1));

    assert_every_frame_from_the_first_keyframe(&sim, bob, alice, 360);
    let repeated = sim.metrics(0).nacks_repeated.get();
    let client = &sim.clients[bob];
    println!(
        "REPEATS nacked={} held_back={repeated} resent={}",
        client.nacks_sent, client.rtx_received
    );
    assert!(repeated > 0, "repeats within the round trip were held back");
    assert!(
        client.rtx_received * 2 < client.nacks_sent,
        "far fewer resends ({}) than NACK entries ({})",
        client.rtx_received,
        client.nacks_sent
    );
}

#[test]
fn after_an_outage_only_the_packets_still_worth_resending_are_resent() {
    // Alice's camera sends one packet a frame; Bob's path (30 ms each way) drops everything
    // for 2 s; when it comes back he NACKs all he missed
    let mut sim = Sim::new(23, 1);
    let alice = sim.join(0, "m", "alice", Some((0xa11ce, 0xa11cf))).unwrap();
    // Bob sends congestion feedback, as browsers do: his node knows his round trip (60 ms)
    sim.congestion_feedback = true;
    let bob = sim.join(0, "m", "bob", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    // a keyframe only when asked: what an outage costs shows in the frames repaired
    let mut video = Video::new(&sim, alice, 0xa11cf, b'A', 10_000);
    let path = Impairment {
        delay: Duration::from_millis(30),
        jitter: Duration::ZERO,
        loss: 0.0,
    };
    sim.impair(bob, path);
    for _ in 0..60 {
        video.send_frame(&mut sim);
    }
    // Bob's path drops everything for 2 s (60 frames), then comes back
    sim.impair(bob, Impairment { loss: 1.0, ..path });
    for _ in 0..60 {
        video.send_frame(&mut sim);
    }
    sim.impair(bob, path);
    for _ in 0..60 {
        video.send_frame(&mut sim);
    }
    sim.run_for(Duration::from_secs(1));

    let slot = sim.consumer_of(bob, alice, MediaKind::Video).unwrap();
    let packets = by_sequence(&sim.clients[bob].received, slot);
    let frames: Vec<u32> = packets.iter().map(|p| frame_of(p).1).collect();
    let lost: Vec<u32> = (60..120).filter(|f| !frames.contains(f)).collect();
    let too_old = sim.metrics(0).nacks_too_old.get();
    let client = &sim.clients[bob];
    println!(
        "OUTAGE lost_for_good={} too_old={too_old} nacked={} resent={}",
        lost.len(),
        client.nacks_sent,
        client.rtx_received
    );
    // Bob's NACKs reach the node 2 s after the outage began: its first second is older than
    // a 60 ms round trip keeps packets worth resending (1 s), the second is not
    assert!(
        (25..=35).contains(&lost.len()),
        "about the outage's first second is not resent: {lost:?}"
    );
    assert_eq!(
        lost,
        (60..60 + lost.len() as u32).collect::<Vec<_>>(),
        "the oldest packets are the ones left"
    );
    assert_eq!(
        client.rtx_received,
        60 - lost.len(),
        "the rest are resent once"
    );
    assert!(
        too_old > 0,
        "Bob's repeated asks for the old ones are counted"
    );
    assert!(
        (120..180).all(|f| frames.contains(&f)),
        "the path is whole again"
    );
}

#[test]
fn one_ring_of_the_publishers_packets_repairs_every_subscribers_losses() {
    let mut sim = Sim::new(29, 1);
    let alice = sim.join(0, "m", "alice", Some((0xa11ce, 0xa11cf))).unwrap();
    let bob = sim.join(0, "m", "bob", None).unwrap();
    let carol = sim.join(0, "m", "carol", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    let mut video = Video::new(&sim, alice, 0xa11cf, b'A', 60);
    for _ in 0..30 {
        video.send_frame(&mut sim);
    }
    // Bob and Carol each lose 10 % of what they are sent (and of their NACKs), each their own
    let lossy = Impairment {
        delay: Duration::from_millis(20),
        jitter: Duration::ZERO,
        loss: 0.1,
    };
    sim.impair(bob, lossy);
    sim.impair(carol, lossy);
    for _ in 0..300 {
        video.send_frame(&mut sim);
    }
    sim.impair(bob, Impairment::default());
    sim.impair(carol, Impairment::default());
    for _ in 0..30 {
        video.send_frame(&mut sim);
    }
    sim.run_for(Duration::from_secs(1));

    let mut resent = 0;
    for subscriber in [bob, carol] {
        assert_every_frame_from_the_first_keyframe(&sim, subscriber, alice, 360);
        assert!(
            sim.clients[subscriber].rtx_received > 10,
            "{subscriber}'s losses were resent"
        );
        resent += sim.clients[subscriber].rtx_received;
    }
    assert!(
        sim.metrics(0).retransmitted.get() as usize >= resent,
        "every resend came from the ring"
    );
    // one copy of each of Alice's last packets, however many subscribers she has
    let kept = sim
        .core(0)
        .map_sizes()
        .into_iter()
        .find(|(name, _)| *name == "repair_packets")
        .map(|(_, n)| n);
    assert_eq!(kept, Some(360));
}
