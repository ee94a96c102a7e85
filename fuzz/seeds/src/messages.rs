//! Seeds of the message targets: signaling frames, tokens, and the cascade's link frames,
//! cipher and control messages.

use super::*;

pub(super) fn signaling_json(c: &mut Corpus) {
    for (name, message) in client_messages() {
        c.add("signaling_json", name, json(&message));
    }
    c.add(
        "signaling_json",
        "unknown-type",
        br#"{"type":"dance","speed":3}"#.to_vec(),
    );
    c.add(
        "signaling_json",
        "malformed",
        br#"{"type":"mute","audio":"yes"}"#.to_vec(),
    );
    c.add("signaling_json", "not-json", b"join standup".to_vec());
}

pub(super) fn token(c: &mut Corpus) {
    let other = TokenKey::from_secret(OTHER_SECRET);
    let mode0 = |token: &str| {
        let mut seed = vec![0];
        seed.extend_from_slice(&1_000u64.to_be_bytes());
        seed.extend_from_slice(token.as_bytes());
        seed
    };
    c.add("token", "other-key", mode0(&other.sign(&claims("fuzz"))));
    c.add(
        "token",
        "alg-none",
        mode0("eyJhbGciOiJub25lIn0.eyJtZWV0aW5nIjoiZnV6eiJ9."),
    );
    c.add("token", "three-dots", mode0("a.b.c.d"));
    let mode1 = |meeting: &str, name: &str, role: u8, exp: u64, edits: &[(u16, u8)]| {
        let mut seed = vec![1];
        seed.extend_from_slice(&1_000u64.to_be_bytes());
        for text in [meeting, "alice@example.com", name] {
            seed.push(text.len() as u8);
            seed.extend_from_slice(text.as_bytes());
        }
        seed.push(role);
        seed.extend_from_slice(&exp.to_be_bytes());
        seed.push(0);
        seed.push(edits.len() as u8);
        for (at, byte) in edits {
            seed.extend_from_slice(&at.to_be_bytes());
            seed.push(*byte);
        }
        seed
    };
    c.add("token", "signed", mode1("standup", "Alice", 1, 2_000, &[]));
    c.add(
        "token",
        "signed-expired",
        mode1("standup", "Alice", 0, 999, &[]),
    );
    c.add(
        "token",
        "signed-tampered",
        mode1("board", "Bob", 2, 5_000, &[(40, b'A'), (200, b'.')]),
    );
}

pub(super) fn cascade(c: &mut Corpus, m: &Media) {
    let video = relayed(MediaKind::Video, 1, &m.video[0].0[0], None);
    let audio = relayed(MediaKind::Audio, 2, &m.audio[0], Some(10));
    let mut keyframe = BytesMut::new();
    frame::put_keyframe_request(&mut keyframe, node::FIRST_ID, 2);
    let mut nack_frame = BytesMut::new();
    let audio_stream = LinkStream {
        publisher: node::FIRST_ID,
        kind: MediaKind::Audio,
        layer: 0,
    };
    frame::put_nack(&mut nack_frame, audio_stream, &[5, 6, 65_535]);
    let mut peer = node::peer_media_cipher();
    let datagram = node::sealed_link_datagram(&mut peer, &video);
    for (name, bytes) in [
        ("frame-rtp-video", &video[..]),
        ("frame-rtp-audio", &audio[..]),
        ("frame-keyframe-request", &keyframe[..]),
        ("frame-nack", &nack_frame[..]),
        ("datagram", &datagram[..]),
    ] {
        let mut seed = vec![0];
        seed.extend_from_slice(bytes);
        c.add("cascade_frame", name, seed);
    }
    let mut built = vec![1, 0, 2, 1, 30, 1, 102];
    built.extend_from_slice(&node::REMOTE_ID.to_wire().to_be_bytes());
    c.add("cascade_frame", "built", built);

    let t = "cascade_cipher";
    let stranger = {
        let mut cipher = LinkCipher::new(&[1; 32], 2, 1, Channel::Media).expect("a 32-byte key");
        node::sealed_link_datagram(&mut cipher, &video)
    };
    let deliver = |index: u8, at: u16, xor: u8, cut: u16| {
        let mut body = vec![index];
        body.extend_from_slice(&at.to_be_bytes());
        body.push(xor);
        body.extend_from_slice(&cut.to_be_bytes());
        body
    };
    c.add(
        t,
        "seal-deliver-replay",
        records(&[
            (1, &video),
            (2, &deliver(0, 0, 0, 0)),
            (2, &deliver(0, 0, 0, 0)),
        ]),
    );
    c.add(
        t,
        "reordered",
        records(&[
            (1, &video),
            (1, &audio),
            (1, &keyframe),
            (2, &deliver(2, 0, 0, 0)),
            (2, &deliver(0, 0, 0, 0)),
            (2, &deliver(1, 0, 0, 0)),
        ]),
    );
    c.add(
        t,
        "tampered-and-cut",
        records(&[
            (1, &audio),
            (2, &deliver(0, 20, 1, 0)),
            (2, &deliver(0, 0, 0, 30)),
            (2, &deliver(0, 5, 0x80, 0)),
            (2, &deliver(0, 0, 0, 0)),
        ]),
    );
    c.add(t, "foreign", records(&[(0, &stranger), (0, &datagram)]));

    let t = "cascade_control";
    let mut sealer = LinkCipher::new(&[3; 32], 2, 1, Channel::Control).expect("a 32-byte key");
    for (name, message) in link_messages() {
        let mut seed = vec![1];
        seed.extend_from_slice(&json(&message));
        c.add(t, format!("json-{name}"), seed);
        if name == "hello" || name == "subscribe" {
            let mut seed = vec![0];
            seed.extend_from_slice(&control::seal(&mut sealer, &message));
            c.add(t, format!("sealed-{name}"), seed);
        }
    }
}
