//! What a SIP call's far end gets of the meeting, against sipp far ends whose RTP ports are the
//! test's own sockets and a real `kaskade-sfu`: the meeting's sound mixed into PCMU, its picture
//! (the speaker's H.264 as sent, or the grid composed for the far end) decoded in either
//! packetization mode, and the audio's delay through the gateway both ways.

#[allow(dead_code)]
mod sip_common;

use kaskade_client::{ClientMessage, MediaKind, ModerateAction, Participant};
use kaskade_e2e::sip_peers::Sipp;
use kaskade_sfu::transcode::Law;
use rtc::shared::marshal::Unmarshal;
use sip_common::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_hears_the_meeting_mixed_into_pcmu() {
    let _serial = SERIAL.lock().await;
    let node = node();
    // the phone's RTP port is this test's own socket: it measures what kaskade sends
    let (phone_rtp, port) = rtp_socket().await;
    let phone = Sipp::serve_with("answer_pcmu_to_port", &[("rtp_port", &port)]);
    let chair = join(&node, "hear", "chair").await;
    let id = dial(&chair, &phone.uri(), "phone").await;
    live(&chair, id, "the phone answered").await;

    let heard = far_end_hears(&phone_rtp, Duration::from_secs(2)).await;
    let audio: Vec<&Vec<u8>> = heard
        .iter()
        .filter(|(pt, _)| *pt == 0)
        .map(|(_, p)| p)
        .collect();
    assert!(
        audio.len() >= 80,
        "a PCMU packet every 20 ms: {} in 2 s",
        audio.len()
    );
    assert!(
        audio.iter().all(|p| p.len() == 160),
        "20 ms of 8 kHz samples each"
    );
    let loudest = audio.iter().map(|p| pcmu_rms(p)).fold(0.0, f64::max);
    assert!(
        loudest > 2_000.0,
        "the chair's tone is in the mix: rms {loudest}"
    );

    // keys go in the same stream as RFC 4733 events
    chair
        .send(&ClientMessage::Dtmf {
            target: id,
            digits: "9".into(),
        })
        .await
        .unwrap();
    let heard = far_end_hears(&phone_rtp, Duration::from_millis(600)).await;
    let events: Vec<&Vec<u8>> = heard
        .iter()
        .filter(|(pt, _)| *pt == 101)
        .map(|(_, p)| p)
        .collect();
    assert_eq!(events.len(), 11, "one key: 8 packets and 3 ends");
    assert!(events.iter().all(|e| e[0] == 9), "the key 9");

    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(
        phone.finish(WAIT).is_some_and(|s| s.success()),
        "sipp got the BYE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_sees_the_meetings_speaker_and_decodes_it() {
    a_room_system_sees_the_meeting(1, Picture::Speaker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_in_packetization_mode_0_gets_whole_nal_units_and_decodes_them() {
    a_room_system_sees_the_meeting(0, Picture::Speaker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_system_sees_everyone_in_a_grid_composed_for_it() {
    a_room_system_sees_the_meeting(0, Picture::Grid).await;
}

/// What the node's `--sip-picture` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Picture {
    Speaker,
    Grid,
}

/// A room system that takes H.264 in packetization `mode` gets one stream that decodes (in
/// mode 0, one whole NAL unit per packet) and hears the meeting. With the speaker's picture it
/// is the chair's video; with the grid, a 1280x720 picture (its level 3.1) with the chair and
/// a guest each in a tile, showing their video, the one who speaks framed.
async fn a_room_system_sees_the_meeting(mode: u8, picture: Picture) {
    let _serial = SERIAL.lock().await;
    let node = node_with(&[
        "--sip-picture",
        if picture == Picture::Grid {
            "grid"
        } else {
            "speaker"
        },
    ]);
    // the room system's RTP ports are this test's own sockets
    let (audio, audio_port) = rtp_socket().await;
    let (video, video_port) = rtp_socket().await;
    let mode_key = mode.to_string();
    let room = Sipp::serve_with(
        "answer_av_to_ports",
        &[
            ("rtp_port", &audio_port),
            ("video_port", &video_port),
            ("mode", &mode_key),
        ],
    );
    let chair = join(&node, "see", "chair").await;
    // the guest speaks (its packets' audio level is loud)
    let _guest = match picture {
        Picture::Grid => {
            let mut config = kaskade_e2e::small_media_config(node.http, "see", "guest");
            config.audio_level = kaskade_client::audio::LEVEL_LOUD;
            Some(Participant::join(config).await.expect("the guest joins"))
        }
        Picture::Speaker => None,
    };
    let dialled = std::time::Instant::now();
    let id = dial(&chair, &room.uri(), "room").await;
    live(&chair, id, "the room system answered").await;

    // what arrives on its video port is one H.264 stream (payload type 98, as it asked) that
    // decodes
    let mut receiver = kaskade_picture::receive::H264Receiver::default().keeping_pictures();
    let (mut decoded, mut errors, mut ssrcs, mut last_seq) = (0, 0, BTreeSet::new(), None);
    // a mode 0 keyframe of a room system's own can be one datagram of many kilobytes
    let mut buf = vec![0u8; 65_536];
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let seen = |receiver: &kaskade_picture::receive::H264Receiver| match picture {
        Picture::Speaker => true,
        Picture::Grid => receiver
            .picture()
            .is_some_and(|p| tiles_show_video(p, 2) && speaker_framed(p, 2)),
    };
    let mut everyone_shown = false;
    while decoded < 20 || !seen(&receiver) {
        let Ok(Ok(n)) = tokio::time::timeout_at(end, video.recv(&mut buf)).await else {
            break;
        };
        let packet = rtc::rtp::Packet::unmarshal(&mut &buf[..n]).unwrap();
        assert_eq!(packet.header.payload_type, 98);
        let nal_type = packet.payload.first().map_or(0, |b| b & 0x1f);
        if mode == 0 {
            assert!(
                (1..=23).contains(&nal_type),
                "a whole NAL unit: type {nal_type}"
            );
        }
        if let Some(last) = last_seq {
            assert_eq!(
                packet.header.sequence_number,
                u16::wrapping_add(last, 1),
                "in order"
            );
        }
        last_seq = Some(packet.header.sequence_number);
        ssrcs.insert(packet.header.ssrc);
        let outcome = receiver.push(
            std::time::Instant::now(),
            packet.header.sequence_number,
            packet.header.timestamp,
            packet.header.marker,
            packet.payload,
        );
        if decoded == 0 && outcome.decoded > 0 {
            println!(
                "SIP_FIRST_FRAME_AT_FAR_END picture={picture:?} ms={}",
                dialled.elapsed().as_millis()
            );
        }
        decoded += outcome.decoded;
        errors += outcome.errors;
        if picture == Picture::Grid && !everyone_shown && seen(&receiver) {
            everyone_shown = true;
            println!(
                "SIP_GRID_SHOWS_EVERYONE ms={}",
                dialled.elapsed().as_millis()
            );
        }
    }
    assert!(
        decoded >= 20,
        "the room system decodes the meeting: {decoded} frames"
    );
    assert_eq!(errors, 0);
    assert_eq!(ssrcs.len(), 1, "one stream");
    if picture == Picture::Grid {
        let grid = receiver.picture().expect("a picture");
        assert_eq!((grid.width, grid.height), (1280, 720), "level 3.1's 720p");
        assert!(
            tiles_show_video(grid, 2),
            "the chair's and the guest's tiles show their video"
        );
        assert!(speaker_framed(grid, 2), "the one who speaks is framed");
    }
    let sound = far_end_hears(&audio, Duration::from_millis(500)).await;
    assert!(
        sound.len() >= 15,
        "and hears the meeting: {} packets",
        sound.len()
    );

    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(
        room.finish(WAIT).is_some_and(|s| s.success()),
        "sipp got the BYE"
    );
}

/// Whether each of the `count` tiles of a grid shows a picture: its middle row holds many
/// shades (an empty tile is one flat grey).
fn tiles_show_video(grid: &kaskade_picture::Picture, count: usize) -> bool {
    let places = kaskade_picture::grid(count, grid.width as u32, grid.height as u32);
    places.iter().all(|place| {
        let row = (place.y + place.height / 2) as usize * grid.width;
        let line = &grid.y[row + place.x as usize..row + (place.x + place.width) as usize];
        line.iter().collect::<BTreeSet<_>>().len() >= 8
    })
}

/// Whether one of the `count` tiles of a grid is framed as the active speaker's: the margin
/// above it is the highlight's bright luma (a tile's margin is otherwise the dark background).
fn speaker_framed(grid: &kaskade_picture::Picture, count: usize) -> bool {
    let places = kaskade_picture::grid(count, grid.width as u32, grid.height as u32);
    places.iter().any(|place| {
        let (x, y) = (place.x + place.width / 2, place.y.saturating_sub(2));
        grid.y[y as usize * grid.width + x as usize].abs_diff(190) < 30
    })
}

/// Audio through the gateway both ways, timed: a far end (the test's own RTP socket, PCMU as
/// most phones and room systems) goes from silence to a tone and the chair, a kaskade client,
/// hears it in the room's Opus; then the chair, muted until now, unmutes its tone and the far
/// end hears it in the meeting's PCMU mix. Each figure is the whole path (transcoding, the
/// node, the 20 ms framing of both ends) without the receivers' jitter buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_crosses_the_gateway_both_ways_within_a_few_frames() {
    let _serial = SERIAL.lock().await;
    let node = node();
    let (audio, audio_port) = rtp_socket().await;
    let (_video, video_port) = rtp_socket().await;
    let room = Sipp::serve_with(
        "answer_av_to_ports",
        &[
            ("rtp_port", &audio_port),
            ("video_port", &video_port),
            ("mode", "1"),
        ],
    );
    // the chair's received audio, decoded, with its arrival
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let mut config = kaskade_e2e::small_media_config(node.http, "delay", "chair");
    config.sink = Some(kaskade_client::MediaSink(std::sync::Arc::new(move |p| {
        if p.kind == MediaKind::Audio {
            let _ = heard_tx.send((p.from, p.arrival, p.packet.payload.clone()));
        }
    })));
    let chair = kaskade_client::Participant::join(config).await.unwrap();
    chair.mute(Some(true), None).await.unwrap();
    let id = dial(&chair, &room.uri(), "room").await;
    live(&chair, id, "the room system answered").await;

    // kaskade's address for the far end's RTP: where its mix comes from (symmetric RTP)
    let mut buf = [0u8; 2_048];
    let (_, kaskade) = tokio::time::timeout(WAIT, audio.recv_from(&mut buf))
        .await
        .expect("the mix arrives")
        .unwrap();

    // far end -> meeting: a second of silence, then a tone
    let silence = [Law::MuLaw.compress(0); 160];
    let tone: Vec<u8> = (0..160)
        .map(|n| {
            let phase = f64::from(n) * 2.0 * std::f64::consts::PI * 1_000.0 / 8_000.0;
            Law::MuLaw.compress((phase.sin() * 8_000.0) as i16)
        })
        .collect();
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let mut tone_sent = None;
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut pcm = vec![0i16; 5_760];
    let mut into_meeting = None;
    for n in 0u16..150 {
        ticks.tick().await;
        let payload: &[u8] = if n < 50 { &silence } else { &tone };
        if n == 50 {
            tone_sent = Some(std::time::Instant::now());
        }
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
        packet[2..4].copy_from_slice(&n.to_be_bytes());
        packet[4..8].copy_from_slice(&(u32::from(n) * 160).to_be_bytes());
        packet.extend_from_slice(payload);
        audio.send_to(&packet, kaskade).await.unwrap();
        while let Ok((from, arrival, opus)) = heard.try_recv() {
            let Some(sent) = tone_sent.filter(|_| from == id && into_meeting.is_none()) else {
                continue;
            };
            let samples = decoder.decode(&opus, &mut pcm, false).unwrap_or(0);
            let rms = (pcm[..samples]
                .iter()
                .map(|&s| f64::from(s).powi(2))
                .sum::<f64>()
                / samples.max(1) as f64)
                .sqrt();
            if rms > 1_000.0 {
                into_meeting = Some(arrival.saturating_duration_since(sent));
            }
        }
        if into_meeting.is_some() {
            break;
        }
    }
    let into_meeting = into_meeting.expect("the chair hears the far end's tone");

    // meeting -> far end: the chair unmutes its tone
    while audio.try_recv(&mut buf).is_ok() {}
    let unmuted = std::time::Instant::now();
    chair.mute(Some(false), None).await.unwrap();
    let mut to_far_end = None;
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout_at(end, audio.recv(&mut buf)).await {
        if n > 12 && buf[1] & 0x7f == 0 && pcmu_rms(&buf[12..n]) > 1_000.0 {
            to_far_end = Some(unmuted.elapsed());
            break;
        }
    }
    let to_far_end = to_far_end.expect("the far end hears the chair");
    println!(
        "SIP_AUDIO_DELAY into_meeting_ms={} to_far_end_ms={}",
        into_meeting.as_millis(),
        to_far_end.as_millis()
    );
    // a few 20 ms frames each way, not a jitter buffer's worth or more
    assert!(
        into_meeting < Duration::from_millis(200),
        "{into_meeting:?}"
    );
    assert!(to_far_end < Duration::from_millis(300), "{to_far_end:?}");

    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(room.finish(WAIT).is_some_and(|s| s.success()));
}
