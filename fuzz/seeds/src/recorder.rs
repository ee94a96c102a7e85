//! Seeds of the recorder's targets: H.264 and Opus RTP into access units, a participant's
//! pipeline, fragmented MP4 files (whole, cut, encrypted) for recovery and at-rest reading.

use super::*;

/// The video clip as RTP: `(seq offset, timestamp, marker, payload)` per packet.
fn video_packets(m: &Media, frames: usize) -> Vec<(u16, u32, bool, Bytes)> {
    let mut out = Vec::new();
    for (f, (payloads, _)) in m.video.iter().take(frames).enumerate() {
        for (i, payload) in payloads.iter().enumerate() {
            out.push((
                out.len() as u16,
                9000 * f as u32,
                i + 1 == payloads.len(),
                payload.clone(),
            ));
        }
    }
    out
}

pub(super) fn recorder_depacketize(c: &mut Corpus, m: &Media) {
    let t = "recorder_depacketize";
    let packets = video_packets(m, 4);
    let push = |step: u16, flags: u8, payload: &[u8]| {
        let mut body = step.to_be_bytes().to_vec();
        body.push(flags);
        body.extend_from_slice(payload);
        body
    };
    let mut whole = Vec::new();
    let mut lossy = Vec::new();
    let mut last_ts = 0;
    for (i, (_, ts, marker, payload)) in packets.iter().enumerate() {
        let step = (ts - last_ts) as u16;
        last_ts = *ts;
        record(&mut whole, 0, &push(step, u8::from(*marker), payload));
        if i != 2 {
            let discontinuity = if i == 3 { 2 } else { 0 };
            record(
                &mut lossy,
                0,
                &push(step, u8::from(*marker) | discontinuity, payload),
            );
        }
    }
    record(&mut whole, 1, b"");
    c.add(t, "clip", whole);
    c.add(t, "clip-with-loss", lossy);
    let mut parsers = Vec::new();
    for packet in m.audio.iter().take(3) {
        record(&mut parsers, 2, packet);
    }
    record(&mut parsers, 2, &[0, 0, 0, 2, 0x67, 0x42, 0, 0, 0, 1, 0x68]);
    c.add(t, "parsers", parsers);
}

/// Records of the `recorder_participant` layout for one second of both tracks.
fn participant_records(m: &Media, seconds: usize) -> Vec<u8> {
    let packet = |step: u16, ssrc: u8, seq: u16, ts: u32, marker: bool, payload: &[u8]| {
        let mut body = step.to_be_bytes().to_vec();
        body.push(ssrc);
        body.extend_from_slice(&seq.to_be_bytes());
        body.extend_from_slice(&ts.to_be_bytes());
        body.push(u8::from(marker));
        body.extend_from_slice(payload);
        body
    };
    let video = video_packets(m, 10 * seconds);
    let mut out = Vec::new();
    let mut video_iter = video.iter().peekable();
    for i in 0..50 * seconds {
        let audio = &m.audio[i % m.audio.len()];
        record(
            &mut out,
            0,
            &packet(20, 1, i as u16, 960 * i as u32, false, audio),
        );
        // ten video frames a second: every fifth audio packet
        if i % 5 == 0 {
            let frame_ts = video_iter.peek().map(|p| p.1);
            while let Some(p) = video_iter.next_if(|p| Some(p.1) == frame_ts) {
                record(&mut out, 1, &packet(0, 2, p.0, p.1, p.2, &p.3));
            }
        }
    }
    out
}

/// A fragmented MP4 the recorder's pipeline writes for `seconds` of the clips.
fn fragmented_mp4(m: &Media, audio: bool, video: bool, seconds: usize) -> Vec<u8> {
    let origin = Instant::now();
    let mut recorder = ParticipantRecorder::new(origin, Vec::new());
    let mut now = origin;
    let video_packets = video_packets(m, 10 * seconds);
    let mut next_video = 0;
    for i in 0..50 * seconds {
        now += Duration::from_millis(20);
        if audio {
            let packet = RtpPacket {
                ssrc: 1,
                sequence: i as u16,
                timestamp: 960 * i as u32,
                marker: false,
                payload: m.audio[i % m.audio.len()].to_vec(),
            };
            recorder
                .push(TrackKind::Audio, packet, now)
                .expect("recording audio");
        }
        while video
            && next_video < video_packets.len()
            && video_packets[next_video].1 <= 1800 * i as u32
        {
            let (seq, ts, marker, payload) = &video_packets[next_video];
            let packet = RtpPacket {
                ssrc: 2,
                sequence: *seq,
                timestamp: *ts,
                marker: *marker,
                payload: payload.to_vec(),
            };
            recorder
                .push(TrackKind::Video, packet, now)
                .expect("recording video");
            next_video += 1;
        }
    }
    recorder
        .finish(now + Duration::from_secs(1))
        .expect("finishing")
}

pub(super) fn recorder(c: &mut Corpus, m: &Media) {
    c.add(
        "recorder_participant",
        "one-second",
        participant_records(m, 1),
    );
    let mut with_timers = participant_records(m, 1);
    record(&mut with_timers, 2, &[0, 200, 0x01, 0x00]);
    c.add(
        "recorder_participant",
        "one-second-then-timers",
        with_timers,
    );

    let both = fragmented_mp4(m, true, true, 2);
    let audio_only = fragmented_mp4(m, true, false, 2);
    let video_only = fragmented_mp4(m, false, true, 1);
    c.add("mp4_recovery", "audio-video", both.clone());
    c.add("mp4_recovery", "audio-only", audio_only.clone());
    c.add("mp4_recovery", "video-only", video_only);
    for (name, cut) in [
        ("cut-in-moov", 600),
        ("cut-mid", both.len() / 2),
        ("cut-tail", both.len() - 7),
    ] {
        c.add("mp4_recovery", name, both[..cut.min(both.len())].to_vec());
    }

    let t = "recording_at_rest";
    let keys = Keyring::parse(AT_REST_KEY).expect("a key");
    let encrypted = |layout: Layout, plain: &[u8], pieces: usize| {
        let mut writer = EncryptingWriter::new(Vec::new(), &keys, layout).expect("a writer");
        for piece in plain.chunks(plain.len().div_ceil(pieces).max(1)) {
            writer.write_all(piece).expect("encrypting");
            writer.flush().expect("flushing");
        }
        writer.finish().expect("finishing")
    };
    let small = &audio_only[..audio_only.len().min(1500)];
    let mut seed = vec![0];
    seed.extend_from_slice(&encrypted(Layout::Fixed, small, 1));
    c.add(t, "file-fixed", seed);
    let mut seed = vec![2];
    let streaming = encrypted(Layout::Streaming, small, 3);
    seed.extend_from_slice(&streaming[..streaming.len() - 5]);
    c.add(t, "file-streaming-cut", seed);
    let written = |mode: u8, repeat: u8, piece: u16, edits: &[(u32, u8)], cut: u32| {
        let mut seed = vec![mode, repeat];
        seed.extend_from_slice(&piece.to_be_bytes());
        seed.push(edits.len() as u8);
        for (at, xor) in edits {
            seed.extend_from_slice(&at.to_be_bytes());
            seed.push(*xor);
        }
        seed.extend_from_slice(&cut.to_be_bytes());
        seed.extend_from_slice(small);
        seed
    };
    c.add(t, "write-fixed", written(1, 0, 0, &[], 0));
    c.add(t, "write-streaming-pieces", written(5 | 2, 3, 400, &[], 0));
    c.add(
        t,
        "write-fixed-multichunk",
        written(1, 7, 19_999, &[(70_000, 1)], 0),
    );
    c.add(t, "write-streaming-cut", written(7, 2, 500, &[], 1200));

    let t = "recorder_http";
    let range = |flags: u8, value: &str| {
        let mut body = vec![flags];
        body.extend_from_slice(value.as_bytes());
        body
    };
    c.add(
        t,
        "ranges",
        records(&[
            (0, &range(3, "bytes=0-99")),
            (0, &range(2, "bytes=-500")),
            (0, &range(3, "bytes=65530-65600")),
            (0, &range(3, "bytes=199000-")),
            (0, &range(2, "bytes=0-1,5-6")),
            (0, &range(1, "bytes=0-10")),
            (0, &range(6, "")),
        ]),
    );
    c.add(
        t,
        "paths-and-lists",
        records(&[
            (1, b"fuzz\0rec-1\0plain.mp4\0x"),
            (1, b"fuzz\0..\0plain.mp4\0"),
            (2, b"fuzz\0x"),
            (3, b"Kaskade-Node locator:1700000000:00ff"),
            (
                5,
                br#"{"meeting":"fuzz","join_url":"http://127.0.0.1:9","token":"x"}"#,
            ),
        ]),
    );
    let mut parse = 200_003u64.to_be_bytes().to_vec();
    parse.push(0);
    parse.extend_from_slice(b"bytes=100-");
    c.add(t, "parse-range", records(&[(4, &parse)]));
}
