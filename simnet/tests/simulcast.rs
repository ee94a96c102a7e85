//! Simulcast through real SRTP: a publisher sends three layers (rid q, h, f in its offer; each
//! packet names its layer in the rid header extension), and each subscriber gets the layer its
//! tile needs, switched at that layer's keyframe with no gap in its slot's sequence numbers; a
//! layer the publisher pauses is passed over, on this node and across a cascade link, which
//! carries only the layers the far node's subscribers need.

use kaskade_loadtest::lean::sdp::{MID_EXT_ID, REPAIRED_RID_EXT_ID, RID_EXT_ID, RTX_PAYLOAD_TYPE};
use kaskade_media::cascade::control::LinkMessage;
use kaskade_media::media::core::Output;
use kaskade_media::media::simulcast::LayerSet;
use kaskade_protocol::signaling::{
    ClientMessage, MediaKind, ParticipantId, ServerMessage, TileView,
};
use kaskade_simnet::{Impairment, Received, Sim};
use std::collections::BTreeSet;
use std::time::Duration;

const FRAME: Duration = Duration::from_millis(33);
const TICKS_PER_FRAME: u32 = 3_000;
const RIDS: [&str; 3] = ["q", "h", "f"];
/// Frames a picture may freeze for when its layer pauses: the pause noticed (half a second
/// behind the other layers), the next layer choice (every 250 ms), and the keyframe asked of
/// the new layer.
const PAUSED_FREEZE: u32 = 25;
const SSRCS: [u32; 3] = [0x0100, 0x0200, 0x0300];

/// The SPS of each layer's keyframes (x264 baseline): 160x120, 320x240, 1920x1080.
const SPS: [&[u8]; 3] = [
    &[
        0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x02, 0x84, 0x7e, 0x5c, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00,
        0x40, 0x00, 0x00, 0x03, 0x00, 0x83, 0xc4, 0x89, 0x92,
    ],
    &[
        0x67, 0x42, 0xc0, 0x0b, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x00, 0x20, 0xf1, 0x42, 0xa4, 0x80,
    ],
    &[
        0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03,
        0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0x08, 0x3c, 0x60, 0xc9, 0x20,
    ],
];

/// A publisher's simulcast video: one packet per layer and frame, a keyframe on a layer when
/// the node asked for one of that layer (or every `interval` frames); each payload ends with
/// the frame number and the layer.
struct Simulcast {
    client: usize,
    payload_type: u8,
    seqs: [u16; 3],
    frame: u32,
    interval: u32,
    /// Which layers it can send (a browser's encoder pauses its top layer when short of
    /// bandwidth).
    sending: [bool; 3],
    /// Which layers the node wants (`layers`): the others are paused, as a browser pauses an
    /// encoding set inactive, and start again at a keyframe.
    active: [bool; 3],
    /// Every `layers` frame the node sent it, in order.
    told: Vec<Vec<bool>>,
    outputs_seen: usize,
    requests_seen: usize,
    /// The layer whose next packet is lost on the way to the node, and that packet.
    withhold: Option<usize>,
    withheld: Option<rtc::rtp::Packet>,
}

impl Simulcast {
    fn new(sim: &Sim, client: usize, interval: u32) -> Self {
        Self {
            client,
            payload_type: sim.clients[client]
                .publish_payload_type(MediaKind::Video)
                .expect("the node takes our video"),
            seqs: [1_000, 30_000, 65_500],
            frame: 0,
            interval,
            sending: [true; 3],
            active: [true; 3],
            told: Vec::new(),
            outputs_seen: 0,
            requests_seen: 0,
            withhold: None,
            withheld: None,
        }
    }

    /// Sends the next frame on every layer it sends and lets a frame interval pass; returns
    /// the layers whose frame was a keyframe.
    fn send_frame(&mut self, sim: &mut Sim) -> Vec<usize> {
        let asked: Vec<u32> =
            sim.clients[self.client].keyframes_asked_of[self.requests_seen..].to_vec();
        self.requests_seen += asked.len();
        let me = sim.id(self.client);
        let mut resumed = [false; 3];
        for (_, output) in &sim.outputs[self.outputs_seen..] {
            if let Output::Send(to, ServerMessage::Layers { active }) = output
                && *to == me
            {
                for (layer, &on) in active.iter().enumerate().take(3) {
                    resumed[layer] |= on && !self.active[layer];
                    self.active[layer] = on;
                }
                self.told.push(active.clone());
            }
        }
        self.outputs_seen = sim.outputs.len();
        let mut keyframes = Vec::new();
        for layer in (0..3).filter(|&l| self.sending[l] && self.active[l]) {
            let keyframe = self.frame == 0
                || resumed[layer]
                || asked.contains(&SSRCS[layer])
                || (self.frame + 1).is_multiple_of(self.interval);
            let mut tail = self.frame.to_be_bytes().to_vec();
            tail.push(layer as u8);
            let payload = if keyframe {
                keyframes.push(layer);
                let idr = [&[0x65][..], &[0xab; 100], &tail].concat();
                let mut stap = vec![0x78];
                for nal in [SPS[layer], &idr] {
                    stap.extend((nal.len() as u16).to_be_bytes());
                    stap.extend(nal);
                }
                stap
            } else {
                [&[0x41][..], &[0xab; 100], &tail].concat()
            };
            let mut header = rtc::rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: self.payload_type,
                sequence_number: self.seqs[layer],
                timestamp: 7_000 * (layer as u32 + 1) + self.frame * TICKS_PER_FRAME,
                ssrc: SSRCS[layer],
                extension: true,
                extension_profile: 0xBEDE,
                ..Default::default()
            };
            header.set_extension(MID_EXT_ID, "1".into()).unwrap();
            header
                .set_extension(RID_EXT_ID, RIDS[layer].into())
                .unwrap();
            let packet = rtc::rtp::Packet {
                header,
                payload: payload.into(),
            };
            if self.withhold == Some(layer) {
                self.withhold = None;
                self.withheld = Some(packet);
            } else {
                sim.send_rtp(self.client, &packet).expect("connected");
            }
            self.seqs[layer] = self.seqs[layer].wrapping_add(1);
        }
        self.frame += 1;
        sim.run_for(FRAME);
        keyframes
    }

    /// Sends the withheld packet again as a browser does: on its layer's repair stream (RTX),
    /// the original sequence number before the payload, the layer named by its repaired rid.
    fn retransmit_withheld(&mut self, sim: &mut Sim) {
        let original = self.withheld.take().expect("a packet was withheld");
        let mut header = rtc::rtp::header::Header {
            version: 2,
            marker: original.header.marker,
            payload_type: RTX_PAYLOAD_TYPE,
            sequence_number: 1,
            timestamp: original.header.timestamp,
            ssrc: original.header.ssrc + 1,
            extension: true,
            extension_profile: 0xBEDE,
            ..Default::default()
        };
        let rid = original.header.get_extension(RID_EXT_ID).expect("a rid");
        header.set_extension(MID_EXT_ID, "1".into()).unwrap();
        header.set_extension(REPAIRED_RID_EXT_ID, rid).unwrap();
        let osn = original.header.sequence_number.to_be_bytes();
        let packet = rtc::rtp::Packet {
            header,
            payload: [&osn[..], &original.payload].concat().into(),
        };
        sim.send_rtp(self.client, &packet).expect("connected");
    }

    fn send_frames(&mut self, sim: &mut Sim, frames: usize) {
        for _ in 0..frames {
            self.send_frame(sim);
        }
    }
}

/// The (frame, layer) a received packet carries, and whether it starts a keyframe.
fn frame_of(packet: &Received) -> (u32, u8, bool) {
    let p = &packet.payload;
    let n = p.len();
    (
        u32::from_be_bytes([p[n - 5], p[n - 4], p[n - 3], p[n - 2]]),
        p[n - 1],
        p[0] == 0x78,
    )
}

/// What subscriber `n` received on its slot `ssrc`, in arrival order.
fn on_slot(sim: &Sim, n: usize, ssrc: u32) -> Vec<Received> {
    sim.clients[n]
        .received
        .iter()
        .filter(|p| p.ssrc == ssrc)
        .cloned()
        .collect()
}

/// The slot's packets show one layer at a time, change layer only at a keyframe, go on
/// frame after frame and have no gap in their sequence numbers; returns the layer of each. A
/// switch misses no frame, except one away from a layer the publisher paused: that one's
/// picture freezes for at most `paused_freeze` frames.
fn assert_seamless(packets: &[Received], paused_freeze: u32) -> Vec<u8> {
    assert!(frame_of(&packets[0]).2, "the slot starts at a keyframe");
    for w in packets.windows(2) {
        let ((f0, l0, _), (f1, l1, key1)) = (frame_of(&w[0]), frame_of(&w[1]));
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "no sequence gap");
        assert!(
            w[1].timestamp.wrapping_sub(w[0].timestamp) < 0x8000_0000,
            "timestamps move forward"
        );
        if l0 != l1 {
            assert!(key1, "a layer switch happens at the new layer's keyframe");
            assert!(
                f1 == f0 || f1 <= f0 + 1 + paused_freeze,
                "and neither repeats older frames nor misses any: frame {f0} then {f1}"
            );
        } else {
            assert_eq!(f1, f0 + 1, "frame after frame");
        }
    }
    packets.iter().map(|p| frame_of(p).1).collect()
}

fn viewing(sim: &mut Sim, subscriber: usize, publisher: usize, height: u32) {
    viewing_on(sim, 0, subscriber, publisher, height);
}

/// Subscriber `subscriber`, on node `node`, shows `publisher` `height` pixels tall.
fn viewing_on(sim: &mut Sim, node: usize, subscriber: usize, publisher: usize, height: u32) {
    let (now, id, participant) = (sim.now, sim.id(subscriber), sim.id(publisher));
    sim.core(node).client_message(
        now,
        id,
        ClientMessage::Viewing {
            tiles: vec![TileView {
                participant,
                height,
            }],
        },
    );
}

#[test]
fn each_subscriber_gets_the_layer_its_tile_needs_and_switches_seamlessly() {
    let mut sim = Sim::new(11, 1);
    let ann = sim.join_simulcast(0, "m", "ann", 0xa0, &RIDS).unwrap();
    let bob = sim.join(0, "m", "bob", None).unwrap();
    let carol = sim.join(0, "m", "carol", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    let mut video = Simulcast::new(&sim, ann, 300);

    // nobody said how large they show Ann: both get her top layer
    video.send_frames(&mut sim, 30);
    let bob_slot = sim.consumer_of(bob, ann, MediaKind::Video).unwrap();
    let carol_slot = sim.consumer_of(carol, ann, MediaKind::Video).unwrap();
    for (n, slot) in [(bob, bob_slot), (carol, carol_slot)] {
        let layers = assert_seamless(&on_slot(&sim, n, slot), 0);
        assert_eq!(*layers.last().unwrap(), 2, "the top layer");
    }
    assert_eq!(
        video.told.last().map(Vec::as_slice),
        Some(&[false, false, true][..]),
        "Ann pauses the layers nobody receives"
    );

    // Bob shows Ann in a 100 px tile: the smallest layer, asked for by its own keyframe
    let asked_before = sim.clients[ann].keyframes_asked_of.len();
    viewing(&mut sim, bob, ann, 100);
    video.send_frames(&mut sim, 30);
    let asked: Vec<u32> = sim.clients[ann].keyframes_asked_of[asked_before..].to_vec();
    assert!(
        asked.iter().all(|&ssrc| ssrc == SSRCS[0]),
        "keyframes asked of the small layer only: {asked:x?}"
    );
    assert_eq!(
        video.told.last().map(Vec::as_slice),
        Some(&[true, false, true][..]),
        "Ann sends the small layer again (from a keyframe), for Bob"
    );
    let bob_layers = assert_seamless(&on_slot(&sim, bob, bob_slot), 0);
    assert_eq!(
        *bob_layers.last().unwrap(),
        0,
        "Bob now gets the small layer"
    );
    let carol_layers = assert_seamless(&on_slot(&sim, carol, carol_slot), 0);
    assert!(
        carol_layers[carol_layers.len() - 30..]
            .iter()
            .all(|&l| l == 2)
    );

    // Carol's tile is 240 px tall: the middle layer fills it
    viewing(&mut sim, carol, ann, 240);
    video.send_frames(&mut sim, 30);
    let carol_layers = assert_seamless(&on_slot(&sim, carol, carol_slot), 0);
    assert_eq!(*carol_layers.last().unwrap(), 1);

    // Ann's browser pauses its middle layer: Carol falls back to the best live one
    video.sending[1] = false;
    video.send_frames(&mut sim, 75);
    let carol_layers = assert_seamless(&on_slot(&sim, carol, carol_slot), PAUSED_FREEZE);
    assert_eq!(
        *carol_layers.last().unwrap(),
        2,
        "the top layer fills her tile now"
    );
    // and back: the middle layer is hers again
    video.sending[1] = true;
    video.send_frames(&mut sim, 30);
    let carol_layers = assert_seamless(&on_slot(&sim, carol, carol_slot), PAUSED_FREEZE);
    assert_eq!(*carol_layers.last().unwrap(), 1);
    assert_seamless(&on_slot(&sim, bob, bob_slot), 0);
}

/// A node (seeded `seed`) with Ann publishing simulcast and Bob watching her, connected.
fn ann_and_bob(seed: u64) -> (Sim, usize, usize) {
    let mut sim = Sim::new(seed, 1);
    let ann = sim.join_simulcast(0, "m", "ann", 0xa0, &RIDS).unwrap();
    let bob = sim.join(0, "m", "bob", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    (sim, ann, bob)
}

#[test]
fn nacks_for_packets_from_before_a_layer_switch_go_unanswered() {
    let (mut sim, ann, bob) = ann_and_bob(13);
    let mut video = Simulcast::new(&sim, ann, 300);
    video.send_frames(&mut sim, 30);
    let slot = sim.consumer_of(bob, ann, MediaKind::Video).unwrap();
    let top_last = on_slot(&sim, bob, slot).last().expect("the top layer").seq;

    // Bob's path loses everything for a while, across his switch to Ann's small layer
    let lossy = Impairment {
        loss: 1.0,
        ..Impairment::default()
    };
    sim.impair(bob, lossy);
    video.send_frames(&mut sim, 3);
    viewing(&mut sim, bob, ann, 100);
    video.send_frames(&mut sim, 8);
    sim.impair(bob, Impairment::default());
    video.send_frames(&mut sim, 10);
    sim.run_for(Duration::from_millis(500));

    // his NACKs brought back what the small layer lost, not what the top layer lost before
    // the switch (his decoder starts over at the small layer's keyframe)
    let seqs: BTreeSet<u16> = on_slot(&sim, bob, slot).iter().map(|p| p.seq).collect();
    let small_first = on_slot(&sim, bob, slot)
        .iter()
        .filter(|p| frame_of(p).1 == 0 && p.seq > top_last)
        .map(|p| p.seq)
        .min()
        .expect("the small layer");
    let lost_top: Vec<u16> = (top_last + 1..small_first).collect();
    assert!(
        !lost_top.is_empty(),
        "the top layer lost packets before the switch"
    );
    assert!(
        lost_top.iter().all(|s| !seqs.contains(s)),
        "none of them was resent: {lost_top:?}"
    );
    let last = *seqs.last().unwrap();
    assert!(
        (small_first..=last).all(|s| seqs.contains(&s)),
        "every packet of the small layer arrived, repaired"
    );
    assert!(
        sim.metrics(0).nacks_stale.get() >= lost_top.len() as u64,
        "the stale ones were NACKed and left unanswered"
    );
    assert!(
        sim.clients[bob].rtx_received > 0,
        "the repairs came on the slot's repair stream (RTX)"
    );
}

#[test]
fn a_layers_retransmission_on_its_repair_stream_reaches_subscribers_as_the_original() {
    let (mut sim, ann, bob) = ann_and_bob(14);
    let answer = &sim.clients[ann].answer;
    let publish = answer.publish_section(MediaKind::Video).unwrap();
    assert!(
        publish.payload_types.contains(&RTX_PAYLOAD_TYPE),
        "the node takes RTX from a publisher: {:?}",
        publish.payload_types
    );
    let mut video = Simulcast::new(&sim, ann, 300);
    video.send_frames(&mut sim, 30);
    let slot = sim.consumer_of(bob, ann, MediaKind::Video).unwrap();

    // a packet of the top layer, which Bob receives, is lost on the way; the node NACKs it
    let nacked = sim.clients[ann].nacks;
    video.withhold = Some(2);
    video.send_frames(&mut sim, 5);
    assert!(
        sim.clients[ann].nacks > nacked,
        "the node asked for it again"
    );
    video.retransmit_withheld(&mut sim);
    video.send_frames(&mut sim, 5);

    let mut packets = on_slot(&sim, bob, slot);
    let first = packets[0].seq;
    packets.sort_by_key(|p| p.seq.wrapping_sub(first));
    // seamless: no gap in the slot's sequence numbers, the repaired packet in its place
    let layers = assert_seamless(&packets, 0);
    assert!(
        layers.ends_with(&[2; 11]),
        "the top layer around the loss: {layers:?}"
    );
    assert_eq!(sim.metrics(0).rtx_unwrapped.get(), 1);
}

#[test]
fn a_cascade_link_carries_only_the_layers_the_far_node_needs() {
    let mut sim = Sim::new(12, 2);
    let ann = sim.join_simulcast(0, "m", "ann", 0xa0, &RIDS).unwrap();
    let dave = sim.join(1, "m", "dave", None).unwrap();
    // Erin, beside Ann, shows her as large as she comes: the top layer
    let erin = sim.join(0, "m", "erin", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    // Dave, across the link, shows her small
    viewing_on(&mut sim, 1, dave, ann, 100);
    let mut video = Simulcast::new(&sim, ann, 300);
    video.send_frames(&mut sim, 45);
    let dave_slot = sim.consumer_of(dave, ann, MediaKind::Video).unwrap();
    let erin_slot = sim.consumer_of(erin, ann, MediaKind::Video).unwrap();
    let layers = assert_seamless(&on_slot(&sim, dave, dave_slot), 0);
    assert_eq!(
        *layers.last().unwrap(),
        0,
        "the small layer crosses the link"
    );
    let layers = assert_seamless(&on_slot(&sim, erin, erin_slot), 0);
    assert_eq!(*layers.last().unwrap(), 2);
    assert_eq!(
        video.told.last().map(Vec::as_slice),
        Some(&[true, false, true][..]),
        "the middle layer, which nobody receives on either node, is paused"
    );
    assert_eq!(
        relayed_over(&mut sim, &mut video, 30),
        30,
        "one packet a frame crosses the link: the small layer's, not the top one's"
    );

    // Dave's tile grows to 240 px: the middle layer crosses the link instead, from its
    // keyframe, and the small one, which nobody receives any more, is paused
    viewing_on(&mut sim, 1, dave, ann, 240);
    video.send_frames(&mut sim, 30);
    let layers = assert_seamless(&on_slot(&sim, dave, dave_slot), 0);
    assert_eq!(*layers.last().unwrap(), 1);
    assert_eq!(
        video.told.last().map(Vec::as_slice),
        Some(&[false, true, true][..])
    );
    assert_eq!(relayed_over(&mut sim, &mut video, 30), 30);

    // Dave shows her as large as she comes, and Fay, beside him, small: two layers cross
    viewing_on(&mut sim, 1, dave, ann, 1080);
    let fay = sim.join(1, "m", "fay", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    viewing_on(&mut sim, 1, fay, ann, 100);
    video.send_frames(&mut sim, 45);
    let fay_slot = sim.consumer_of(fay, ann, MediaKind::Video).unwrap();
    let layers = assert_seamless(&on_slot(&sim, fay, fay_slot), 0);
    assert_eq!(*layers.last().unwrap(), 0);
    let layers = assert_seamless(&on_slot(&sim, dave, dave_slot), 0);
    assert_eq!(*layers.last().unwrap(), 2);
    assert_eq!(relayed_over(&mut sim, &mut video, 30), 60);

    // the top layer pauses (Ann is short of bandwidth): the middle one stands in for it on
    // the link, asked of Ann again, and Dave and Erin fall back to it
    video.sending[2] = false;
    video.send_frames(&mut sim, 90);
    for (n, slot) in [(dave, dave_slot), (erin, erin_slot)] {
        let layers = assert_seamless(&on_slot(&sim, n, slot), PAUSED_FREEZE);
        assert_eq!(*layers.last().unwrap(), 1);
    }
    // and when it comes back, so do they
    video.sending[2] = true;
    video.send_frames(&mut sim, 60);
    for (n, slot) in [(dave, dave_slot), (erin, erin_slot)] {
        let layers = assert_seamless(&on_slot(&sim, n, slot), PAUSED_FREEZE);
        assert_eq!(*layers.last().unwrap(), 2);
    }
}

/// Sends `frames` frames and returns how many relayed packets node 1 received over its link
/// meanwhile.
fn relayed_over(sim: &mut Sim, video: &mut Simulcast, frames: usize) -> u64 {
    let before = cascade_rtp_received(sim);
    video.send_frames(sim, frames);
    cascade_rtp_received(sim) - before
}

/// Relayed packets node 1 received over its links, in all.
fn cascade_rtp_received(sim: &Sim) -> u64 {
    sim.metrics(1)
        .render()
        .lines()
        .filter(|l| l.starts_with("kaskade_sfu_cascade_rtp_received_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_far_subscriber_squeezed_off_a_relayed_video_leaves_it_off_the_link() {
    let mut sim = Sim::new(18, 2);
    let ann = sim.join_simulcast(0, "m", "ann", 0xa0, &RIDS).unwrap();
    let cid = sim.join_simulcast(0, "m", "cid", 0xc0, &RIDS).unwrap();
    // Bob, across the link, sends congestion feedback as browsers do: his node weighs his
    // tiles against what it estimates his downlink carries
    sim.congestion_feedback = true;
    let bob = sim.join(1, "m", "bob", None).unwrap();
    sim.connect_all(Duration::from_secs(5)).unwrap();
    let mut videos = [
        Simulcast::new(&sim, ann, 300),
        Simulcast::new(&sim, cid, 300),
    ];
    let mut rounds = |sim: &mut Sim, n: usize| -> u64 {
        let before = cascade_rtp_received(sim);
        for _ in 0..n {
            for video in &mut videos {
                video.send_frame(sim);
            }
        }
        cascade_rtp_received(sim) - before
    };
    rounds(&mut sim, 45);
    let asked = video_asked_of_peer(&sim, 1);
    assert_eq!(asked.len(), 2);
    assert!(asked.iter().all(|(_, layers)| *layers != LayerSet::NONE));

    // his path loses a third of everything: his estimate falls to the least, which carries
    // one tile's smallest layer beside the audio; the other tile is paused, and his node
    // asks Ann's and Cid's node for none of that video
    sim.impair(
        bob,
        Impairment {
            loss: 0.3,
            ..Impairment::default()
        },
    );
    rounds(&mut sim, 150);
    let asked = video_asked_of_peer(&sim, 1);
    let none: Vec<_> = asked.iter().filter(|(_, l)| *l == LayerSet::NONE).collect();
    assert_eq!(none.len(), 1, "one video asked for not at all: {asked:?}");
    assert_eq!(
        rounds(&mut sim, 30),
        30,
        "one layer of one video crosses the link"
    );

    // his path heals: his estimate grows back and both videos cross again
    sim.impair(bob, Impairment::default());
    rounds(&mut sim, 600);
    let asked = video_asked_of_peer(&sim, 1);
    assert!(
        asked.iter().all(|(_, layers)| *layers != LayerSet::NONE),
        "{asked:?}"
    );
    assert!(sim.clients[bob].received.len() > 1_000);
}

/// The videos (publisher and layers) `node`'s last subscription asked of its peer.
fn video_asked_of_peer(sim: &Sim, node: usize) -> Vec<(ParticipantId, LayerSet)> {
    sim.control_sent
        .iter()
        .rev()
        .find_map(|(from, message)| match message {
            LinkMessage::Subscribe { streams, .. } if *from == node => Some(
                streams
                    .iter()
                    .filter(|s| s.kind == MediaKind::Video)
                    .map(|s| (s.publisher, s.layers))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}
