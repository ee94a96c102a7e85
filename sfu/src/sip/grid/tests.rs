use super::*;
use crate::sip::h264::rtp_header;
use kaskade_picture::encode::{EncoderSettings, H264Encoder};

const A: u32 = 0x1000;
const B: u32 = 0x2000;
/// (Y, U, V) of a red and a blue picture.
const RED: (u8, u8, u8) = (81, 90, 240);
const BLUE: (u8, u8, u8) = (41, 240, 110);

fn format() -> PictureFormat {
    PictureFormat {
        width: 640,
        height: 360,
        fps: 15,
        bitrate: 800_000,
    }
}

fn id(counter: u32) -> ParticipantId {
    ParticipantId::from(counter)
}

/// A participant's video as the node delivers it: `frames` pictures of one colour, the first a
/// keyframe unless `from_keyframe` is false, one NAL unit per packet, on `ssrc`.
fn delivered(ssrc: u32, colour: (u8, u8, u8), frames: u32, from_keyframe: bool) -> Vec<Bytes> {
    let mut encoder = H264Encoder::new(EncoderSettings {
        fps: 15,
        bitrate: 300_000,
        keyframe_interval: 1_000,
        max_nal_size: Some(1_000),
    })
    .unwrap();
    let picture = Picture::filled(320, 240, colour);
    let mut packets = Vec::new();
    let mut seq = 0u16;
    for frame in 0..frames {
        let mut units = Vec::new();
        encoder
            .encode(&picture, |nal| units.push(nal.to_vec()))
            .unwrap();
        if frame == 0 && !from_keyframe {
            continue;
        }
        let count = units.len();
        for (n, unit) in units.into_iter().enumerate() {
            let marker = n + 1 == count;
            let mut packet =
                rtp_header((marker, DELIVERED_VIDEO), seq, frame * 6_000, ssrc).to_vec();
            packet.extend_from_slice(&unit);
            packets.push(Bytes::from(packet));
            seq = seq.wrapping_add(1);
        }
    }
    packets
}

fn tile(owner: u32, label: &str, video: Option<u32>, speaking: bool) -> GridTile {
    GridTile {
        owner: id(owner),
        label: label.into(),
        video,
        speaking,
    }
}

fn compositor(now: Instant) -> Compositor {
    Compositor::new(format(), (0xabc, 109), (100, 5_000), now).unwrap()
}

/// Decodes the far end's packets, checking they are what a far end in either packetization
/// mode takes; the last picture.
fn far_end_picture(packets: &[Vec<u8>]) -> Picture {
    let mut receiver = H264Receiver::default().keeping_pictures();
    let now = Instant::now();
    for packet in packets {
        let parts = rtp_parts(packet).unwrap();
        assert_eq!((parts.payload_type, parts.ssrc), (109, 0xabc));
        let nal_type = parts.payload[0] & 0x1f;
        assert!(
            (1..=23).contains(&nal_type),
            "one whole NAL unit: {nal_type}"
        );
        assert!(
            packet.len() <= 12 + MAX_NAL_SIZE as usize,
            "{}",
            packet.len()
        );
        let outcome = receiver.push(
            now,
            parts.seq,
            parts.timestamp,
            parts.marker,
            Bytes::copy_from_slice(parts.payload),
        );
        assert_eq!(outcome.errors, 0);
    }
    receiver
        .picture()
        .expect("the far end decodes the grid")
        .clone()
}

/// The (Y, U, V) at (x, y).
fn colour_at(picture: &Picture, (x, y): (u32, u32)) -> (u8, u8, u8) {
    let (x, y) = (x as usize, y as usize);
    let chroma = (y / 2) * (picture.width / 2) + x / 2;
    (
        picture.y[y * picture.width + x],
        picture.u[chroma],
        picture.v[chroma],
    )
}

fn near((y, u, v): (u8, u8, u8), (ey, eu, ev): (u8, u8, u8)) -> bool {
    y.abs_diff(ey) < 24 && u.abs_diff(eu) < 24 && v.abs_diff(ev) < 24
}

#[test]
fn the_far_end_sees_each_participant_in_their_tile_and_the_speaker_highlighted() {
    let start = Instant::now();
    let mut compositor = compositor(start);
    compositor.lay_out(vec![
        tile(1, "Ada", Some(A), false),
        tile(2, "Bob", Some(B), true),
        tile(3, "Phone", None, false),
    ]);
    for packet in delivered(A, RED, 5, true)
        .iter()
        .chain(&delivered(B, BLUE, 5, true))
    {
        compositor.packet(start, packet);
    }
    let mut packets = Vec::new();
    for n in 0..3 {
        compositor
            .render(start + Duration::from_millis(66 * n), &mut packets)
            .unwrap();
    }
    let markers: Vec<u32> = packets
        .iter()
        .filter_map(|p| rtp_parts(p).filter(|p| p.marker).map(|p| p.timestamp))
        .collect();
    assert_eq!(markers.len(), 3, "one marker per picture");
    assert_eq!(markers[0], 5_000);
    assert_eq!(
        markers[2].wrapping_sub(markers[0]),
        132 * 90,
        "90 kHz from the clock"
    );
    let seqs: Vec<u16> = packets.iter().map(|p| rtp_parts(p).unwrap().seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    assert_eq!(seqs[0], 100);

    let picture = far_end_picture(&packets);
    assert_eq!((picture.width, picture.height), (640, 360));
    let places = grid(3, 640, 360);
    let centre = |n: usize| {
        let place = places[n];
        (place.x + place.width / 2, place.y + place.height / 2)
    };
    assert!(
        near(colour_at(&picture, centre(0)), RED),
        "Ada's tile is red"
    );
    assert!(
        near(colour_at(&picture, centre(1)), BLUE),
        "Bob's tile is blue"
    );
    let phone = colour_at(&picture, centre(2));
    assert!(
        near(phone, (32, 128, 128)),
        "the phone's tile is grey: {phone:?}"
    );
    let margin = |n: usize| (places[n].x + places[n].width / 2, places[n].y - 2);
    assert!(
        near(colour_at(&picture, margin(1)), (190, 40, 150)),
        "Bob speaks: his tile is framed"
    );
    assert!(
        near(colour_at(&picture, margin(0)), (16, 128, 128)),
        "Ada's is not"
    );
}

#[test]
fn a_far_end_alone_in_the_meeting_reads_that_it_waits_for_others() {
    let start = Instant::now();
    let mut compositor = compositor(start);
    let mut packets = Vec::new();
    compositor.render(start, &mut packets).unwrap();
    let picture = far_end_picture(&packets);
    let white = picture.y.iter().filter(|&&y| y > 200).count();
    assert!(white > 500, "a line of text: {white} white pixels");
    compositor.lay_out(vec![tile(1, "Ada", None, false)]);
    compositor
        .render(start + Duration::from_millis(66), &mut packets)
        .unwrap();
    let picture = far_end_picture(&packets);
    let place = grid(1, 640, 360)[0];
    let centre = (place.x + place.width / 2, place.y + place.height / 2);
    assert!(
        near(colour_at(&picture, centre), (32, 128, 128)),
        "then Ada's tile"
    );
}

#[test]
fn a_stream_joined_between_keyframes_is_asked_for_one_once_a_second() {
    let start = Instant::now();
    let mut compositor = compositor(start);
    compositor.lay_out(vec![tile(1, "Ada", Some(A), false)]);
    let packets = delivered(A, RED, 6, false);
    let asked: Vec<Option<u32>> = packets
        .iter()
        .map(|packet| compositor.packet(start, packet))
        .collect();
    assert_eq!(asked.iter().flatten().count(), 1, "{asked:?}");
    assert_eq!(asked.iter().flatten().next(), Some(&A));
    let later = start + Duration::from_millis(1_100);
    assert_eq!(
        compositor.packet(later, &packets[packets.len() - 1]),
        Some(A)
    );
    assert_eq!(
        compositor.packet(later, &delivered(B, BLUE, 1, true)[0]),
        None,
        "a stream not shown is not decoded"
    );
}

#[test]
fn a_slot_that_carries_someone_else_starts_over() {
    let start = Instant::now();
    let mut compositor = compositor(start);
    compositor.lay_out(vec![tile(1, "Ada", Some(A), false)]);
    for packet in &delivered(A, RED, 3, true) {
        compositor.packet(start, packet);
    }
    let mut packets = Vec::new();
    compositor.render(start, &mut packets).unwrap();
    let place = grid(1, 640, 360)[0];
    let centre = (place.x + place.width / 2, place.y + place.height / 2);
    assert!(near(colour_at(&far_end_picture(&packets), centre), RED));

    // the node's slot now carries Bob, who has sent nothing yet: no more of Ada's picture
    compositor.lay_out(vec![tile(2, "Bob", Some(A), false)]);
    compositor
        .render(start + Duration::from_millis(66), &mut packets)
        .unwrap();
    let grey = colour_at(&far_end_picture(&packets), centre);
    assert!(near(grey, (32, 128, 128)), "{grey:?}");
}

#[test]
fn a_far_end_repeating_its_keyframe_request_gets_one_keyframe() {
    let start = Instant::now();
    let mut compositor = compositor(start);
    let mut packets = Vec::new();
    let mut keyframes = |compositor: &mut Compositor, at: Duration| {
        packets.clear();
        compositor.render(start + at, &mut packets).unwrap();
        packets
            .iter()
            .any(|p| rtp_parts(p).unwrap().payload[0] & 0x1f == 5)
    };
    assert!(
        keyframes(&mut compositor, Duration::ZERO),
        "the first picture"
    );
    assert!(!keyframes(&mut compositor, Duration::from_millis(66)));
    compositor.force_keyframe(start + Duration::from_millis(100));
    assert!(
        keyframes(&mut compositor, Duration::from_millis(133)),
        "asked for"
    );
    compositor.force_keyframe(start + Duration::from_millis(200));
    assert!(
        !keyframes(&mut compositor, Duration::from_millis(200)),
        "asked again a moment later"
    );
    compositor.force_keyframe(start + Duration::from_millis(700));
    assert!(
        keyframes(&mut compositor, Duration::from_millis(733)),
        "asked again later"
    );
}

#[tokio::test]
async fn the_view_renders_on_its_thread_and_asks_for_keyframes() {
    let mut view = GridView::start(format(), (0xabc, 109), (1, 1)).unwrap();
    view.lay_out(vec![tile(1, "Ada", Some(A), false)]);
    // from a P picture: the thread asks for a keyframe
    for packet in delivered(A, RED, 3, false) {
        view.deliver(&packet);
    }
    let (mut pictures, mut asked) = (0, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pictures < 5 || !asked {
        match tokio::time::timeout_at(deadline, view.next()).await {
            Ok(Some(Composed::Packets(packets))) => {
                assert!(!packets.is_empty());
                pictures += 1;
            }
            Ok(Some(Composed::AskKeyframe(ssrc))) => {
                assert_eq!(ssrc, A);
                asked = true;
            }
            other => panic!("pictures {pictures}, asked {asked}: {other:?}"),
        }
    }
}
