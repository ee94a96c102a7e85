//! The forwarder driven by hand: hellos and their acks, fan-out to room-mates, sequence wrap,
//! what is dropped (forged, replayed, unknown, malformed), byes and silence, room bounds.

use super::*;
use crate::raw::wire::{CONTROL_LEN, ControlSender, RTP_HEADER_LEN, room_id, ssrc};

const SECRET: &[u8] = b"test secret";

/// A client of the tests: its key and counters.
struct Client {
    id: u32,
    sender: ControlSender,
    addr: SocketAddr,
    key: ParticipantKey,
    seq: u16,
}

impl Client {
    fn new(id: u32, room: &str) -> Self {
        Self::with_session(id, room, 1)
    }

    fn with_session(id: u32, room: &str, session: u64) -> Self {
        Self {
            id,
            sender: ControlSender {
                room: room_id(room),
                participant: id,
                session,
                counter: 100,
            },
            addr: SocketAddr::from(([127, 0, 0, 1], 10_000 + id as u16)),
            key: Secret::new(SECRET).participant_key(id, session),
            seq: 65_530,
        }
    }

    fn control(&mut self, kind: ControlKind) -> Vec<u8> {
        self.sender.next(kind, &self.key).to_vec()
    }

    fn media(&mut self, kind: MediaKind, payload: &[u8]) -> Vec<u8> {
        let header = RtpHeader {
            marker: false,
            payload_type: 102,
            sequence: self.seq,
            timestamp: 9,
            ssrc: ssrc(self.id, kind),
        };
        let mut out = vec![0; RTP_HEADER_LEN + payload.len() + TAG_LEN];
        header.write(&mut out);
        out[RTP_HEADER_LEN..RTP_HEADER_LEN + payload.len()].copy_from_slice(payload);
        // the index as a receiver that saw every earlier packet estimates it
        let index = u64::from(self.seq) + if self.seq < 100 { 1 << 16 } else { 0 };
        self.key.seal_media(&mut out, index);
        self.seq = self.seq.wrapping_add(1);
        out
    }
}

struct Bench {
    forwarder: Forwarder,
    out: Outbox,
    now: Instant,
}

impl Bench {
    fn new() -> Self {
        Self {
            forwarder: Forwarder::new(Secret::new(SECRET), 100),
            out: Outbox::new(64),
            now: Instant::now(),
        }
    }

    /// Feeds one datagram; returns what came out.
    fn feed(&mut self, from: SocketAddr, datagram: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.out.clear();
        let mut datagram = datagram.to_vec();
        self.forwarder
            .handle(self.now, from, &mut datagram, &mut self.out);
        self.out.iter().map(|(a, d)| (a, d.to_vec())).collect()
    }

    fn hello(&mut self, client: &mut Client) -> Vec<(SocketAddr, Vec<u8>)> {
        let hello = client.control(ControlKind::Hello);
        self.feed(client.addr, &hello)
    }
}

#[test]
fn a_hello_is_acked_with_the_participants_key() {
    let mut bench = Bench::new();
    let mut ann = Client::new(1, "standup");
    let out = bench.hello(&mut ann);
    assert_eq!(out.len(), 1);
    let (to, ack) = &out[0];
    assert_eq!(*to, ann.addr);
    let fields = Control::parse(ack).expect("an ack");
    assert_eq!(fields.kind, ControlKind::Ack);
    assert_eq!(
        (fields.participant, fields.counter),
        (1, ann.sender.counter)
    );
    assert!(fields.verify(&ann.key, ack));
    assert_eq!(bench.forwarder.participants(), 1);
    // keepalive hellos are acked too, and count as hellos, not joins
    assert_eq!(bench.hello(&mut ann).len(), 1);
    let stats = bench.forwarder.stats();
    assert_eq!((stats.hellos, stats.joins), (2, 1));
}

#[test]
fn media_goes_to_room_mates_only_each_sealed_with_its_own_key() {
    let mut bench = Bench::new();
    let mut clients: Vec<Client> = (1..=3).map(|id| Client::new(id, "a")).collect();
    let mut other = Client::new(4, "b");
    for c in clients.iter_mut().chain([&mut other]) {
        bench.hello(c);
    }
    let sent = clients[0].media(MediaKind::Video, b"frame data");
    let out = bench.feed(clients[0].addr, &sent);
    assert_eq!(out.len(), 2, "to the two room-mates");
    for (mate, (to, datagram)) in clients[1..].iter().zip(&out) {
        assert_eq!(*to, mate.addr);
        assert_eq!(datagram.len(), sent.len());
        assert_eq!(
            datagram[..RTP_HEADER_LEN],
            sent[..RTP_HEADER_LEN],
            "nothing rewritten"
        );
        let index = 65_530;
        let mut wrong = datagram.clone();
        assert!(
            !clients[0].key.open_media(&mut wrong, index),
            "not the publisher's key"
        );
        let mut copy = datagram.clone();
        assert!(mate.key.open_media(&mut copy, index));
        assert_eq!(&copy[RTP_HEADER_LEN..copy.len() - TAG_LEN], b"frame data");
    }
    let stats = bench.forwarder.stats();
    assert_eq!((stats.media_in, stats.forwarded), (1, 2));
    assert_eq!(stats.bytes_forwarded, 2 * sent.len() as u64);
    // the other room's member publishes to nobody
    let alone = other.media(MediaKind::Audio, b"x");
    assert!(bench.feed(other.addr, &alone).is_empty());
    assert_eq!(bench.forwarder.stats().media_in, 2);
}

#[test]
fn sequence_numbers_wrap_without_a_drop() {
    let mut bench = Bench::new();
    let (mut ann, mut bob) = (Client::new(1, "r"), Client::new(2, "r"));
    bench.hello(&mut ann);
    bench.hello(&mut bob);
    let mut window = ReplayWindow::default();
    for _ in 0..20 {
        let sent = ann.media(MediaKind::Audio, b"opus");
        let out = bench.feed(ann.addr, &sent);
        assert_eq!(out.len(), 1);
        // bob recovers the index the same way
        let mut copy = out[0].1.clone();
        let header = RtpHeader::parse(&copy).unwrap();
        let index = window.index(header.sequence);
        assert!(bob.key.open_media(&mut copy, index), "index {index}");
        window.mark(index);
    }
    assert_eq!(bench.forwarder.stats().dropped(), 0);
}

#[test]
fn forged_replayed_unknown_and_malformed_datagrams_are_dropped_and_counted() {
    let mut bench = Bench::new();
    let (mut ann, mut bob) = (Client::new(1, "r"), Client::new(2, "r"));
    bench.hello(&mut ann);
    bench.hello(&mut bob);

    let packet = ann.media(MediaKind::Video, b"payload");
    let mut forged = packet.clone();
    forged[RTP_HEADER_LEN] ^= 1;
    assert!(bench.feed(ann.addr, &forged).is_empty());
    let mut retimed = packet.clone();
    retimed[7] ^= 1;
    assert!(
        bench.feed(ann.addr, &retimed).is_empty(),
        "the header is authenticated"
    );
    let mut impostor = Client::new(1, "r");
    impostor.key = Secret::new(b"guess").participant_key(1, 1);
    let fake = impostor.media(MediaKind::Video, b"payload");
    assert!(bench.feed(ann.addr, &fake).is_empty());
    assert_eq!(bench.forwarder.stats().dropped_unauthentic, 3);

    assert_eq!(
        bench.feed(ann.addr, &packet).len(),
        1,
        "the genuine one passes"
    );
    assert!(bench.feed(ann.addr, &packet).is_empty(), "but only once");
    assert_eq!(bench.forwarder.stats().dropped_replayed, 1);

    let mut carl = Client::new(3, "r");
    let unknown = carl.media(MediaKind::Audio, b"who");
    assert!(bench.feed(carl.addr, &unknown).is_empty());
    assert_eq!(bench.forwarder.stats().dropped_unknown, 1);

    let ack = ann.control(ControlKind::Ack);
    let mut csrc = packet.clone();
    csrc[0] |= 1;
    let mut extension = packet.clone();
    extension[0] |= 0x10;
    let mut version1 = packet.clone();
    version1[0] = 0x40;
    let mut bad_type = ann.control(ControlKind::Hello);
    bad_type[1] = b'Z';
    let malformed: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        packet[..RTP_HEADER_LEN + TAG_LEN - 1].to_vec(),
        vec![0x80; MAX_DATAGRAM + 1],
        csrc,
        extension,
        version1,
        bad_type,
        ack[..CONTROL_LEN - 1].to_vec(),
        ack,
    ];
    for datagram in &malformed {
        assert!(bench.feed(ann.addr, datagram).is_empty(), "{datagram:?}");
    }
    assert_eq!(
        bench.forwarder.stats().dropped_malformed,
        malformed.len() as u64
    );
    assert_eq!(bench.forwarder.stats().forwarded, 1);
}

#[test]
fn forged_and_replayed_hellos_change_nothing() {
    let mut bench = Bench::new();
    let mut ann = Client::new(1, "r");
    let hello = ann.control(ControlKind::Hello);
    assert_eq!(bench.feed(ann.addr, &hello).len(), 1);
    // a replay from elsewhere does not move ann's media there
    let thief = SocketAddr::from(([10, 0, 0, 9], 5));
    assert!(bench.feed(thief, &hello).is_empty());
    assert_eq!(bench.forwarder.stats().dropped_replayed, 1);
    let mut forged = ann.control(ControlKind::Hello);
    forged[8] ^= 1; // another room
    assert!(bench.feed(thief, &forged).is_empty());
    let mut stranger = Client::new(2, "r");
    stranger.key = Secret::new(b"guess").participant_key(2, 1);
    assert!(bench.hello(&mut stranger).is_empty());
    assert_eq!(bench.forwarder.stats().dropped_unauthentic, 2);
    assert_eq!(bench.forwarder.participants(), 1);

    let mut bob = Client::new(2, "r");
    bench.hello(&mut bob);
    let out = bench.feed(bob.addr, &bob.media(MediaKind::Audio, b"hi"));
    assert_eq!(out[0].0, ann.addr, "still to ann's own address");
}

#[test]
fn byes_silence_and_new_sessions() {
    let mut bench = Bench::new();
    let (mut ann, mut bob) = (Client::new(1, "r"), Client::new(2, "r"));
    bench.hello(&mut ann);
    bench.hello(&mut bob);

    // a new session of bob: new key, the old one no longer opens anything
    let mut bob2 = Client::with_session(2, "r", 2);
    bob2.sender.counter = bob.sender.counter;
    bob2.addr = SocketAddr::from(([127, 0, 0, 1], 20_002));
    assert_eq!(bench.hello(&mut bob2).len(), 1);
    assert_eq!(bench.forwarder.participants(), 2);
    assert!(
        bench
            .feed(bob.addr, &bob.media(MediaKind::Audio, b"old"))
            .is_empty()
    );
    assert_eq!(bench.forwarder.stats().dropped_unauthentic, 1);
    let out = bench.feed(ann.addr, &ann.media(MediaKind::Audio, b"a"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, bob2.addr);
    let mut copy = out[0].1.clone();
    assert!(bob2.key.open_media(&mut copy, 65_530));

    // bye: bob2 is gone, and its bye cannot be replayed
    let bye = bob2.control(ControlKind::Bye);
    assert!(bench.feed(bob2.addr, &bye).is_empty());
    assert_eq!(bench.forwarder.stats().byes, 1);
    assert_eq!(bench.forwarder.participants(), 1);
    assert!(
        bench
            .feed(ann.addr, &ann.media(MediaKind::Audio, b"b"))
            .is_empty()
    );

    // silence: ann is forgotten after the timeout, not before
    bench.now += SILENCE_TIMEOUT - Duration::from_millis(1);
    bench.forwarder.tick(bench.now);
    assert_eq!(bench.forwarder.participants(), 1);
    bench.now += Duration::from_millis(1);
    bench.forwarder.tick(bench.now);
    assert_eq!(bench.forwarder.participants(), 0);
    assert_eq!(bench.forwarder.stats().expired, 1);
    assert_eq!(bench.forwarder.rooms(), 0);

    // rooms and participant slots left empty are reused
    for round in 0..50 {
        let mut visitor = Client::new(100 + round, &format!("room {round}"));
        assert_eq!(bench.hello(&mut visitor).len(), 1);
        assert_eq!(bench.forwarder.rooms(), 1);
        bench.feed(visitor.addr, &visitor.control(ControlKind::Bye));
    }
    assert_eq!(bench.forwarder.rooms(), 0);
    assert_eq!(bench.forwarder.rooms.len(), 1);
    assert_eq!(bench.forwarder.members.len(), 2);
}

#[test]
fn rooms_are_bounded_and_a_hello_can_change_rooms() {
    let mut bench = Bench::new();
    let mut members: Vec<Client> = (0..MAX_ROOM_SIZE as u32)
        .map(|id| Client::new(id, "big"))
        .collect();
    for m in &mut members {
        assert_eq!(bench.hello(m).len(), 1);
    }
    let mut late = Client::new(1000, "big");
    assert!(bench.hello(&mut late).is_empty());
    assert_eq!(bench.forwarder.stats().dropped_refused, 1);
    // a full fan-out fits the outbox
    let out = bench.feed(members[0].addr, &members[0].media(MediaKind::Video, b"v"));
    assert_eq!(out.len(), MAX_FANOUT);

    // a member moves to another room: the big room has a place again
    members[1].sender.room = room_id("small");
    bench.hello(&mut members[1]);
    assert_eq!(bench.hello(&mut late).len(), 1);
    let out = bench.feed(members[0].addr, &members[0].media(MediaKind::Video, b"v"));
    assert_eq!(out.len(), MAX_FANOUT);
    assert!(out.iter().all(|(to, _)| *to != members[1].addr));
    assert_eq!(bench.forwarder.rooms(), 2);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut bench = Bench::new();
    let mut ann = Client::new(1, "r");
    bench.hello(&mut ann);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..5_000 {
        let len = (next() % 1600) as usize;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match (round % 3, datagram.first_mut()) {
            (0, Some(first)) => *first = 0x80,
            (1, Some(first)) => *first = CONTROL_MAGIC,
            _ => {}
        }
        if round % 5 == 0 && datagram.len() >= 12 {
            datagram[8..12].copy_from_slice(&ssrc(1, MediaKind::Video).to_be_bytes());
        }
        assert!(bench.feed(ann.addr, &datagram).is_empty());
    }
    assert_eq!(bench.forwarder.stats().dropped(), 5_000);
}
