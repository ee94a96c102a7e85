use super::*;

#[test]
fn companding_round_trips_within_a_quantization_step() {
    for law in [Law::MuLaw, Law::ALaw] {
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let back = law.expand(law.compress(sample));
            let error = (i32::from(back) - i32::from(sample)).abs();
            let step = (i32::from(sample).abs() / 8).max(40);
            assert!(error <= step, "{law:?} {sample} came back as {back}");
        }
        // every code but µ-law's negative zero (0x7f, the same sample as 0xff) comes back
        for byte in (0..=255u8).filter(|&b| !(law == Law::MuLaw && b == 0x7f)) {
            assert_eq!(law.compress(law.expand(byte)), byte, "{law:?} {byte:#04x}");
        }
    }
}
use rtc::shared::marshal::Unmarshal;

fn parse(out: &[BytesMut]) -> Vec<rtc::rtp::Packet> {
    out.iter()
        .map(|d| rtc::rtp::Packet::unmarshal(&mut &d[..]).unwrap())
        .collect()
}

/// RMS of the decoded Opus packets after the first `skip` (the encoder's start-up).
fn decoded_rms(packets: &[rtc::rtp::Packet], skip: usize) -> f64 {
    let mut decoder = opus::Decoder::new(OPUS_RATE, Channels::Mono).unwrap();
    let mut pcm = vec![0i16; FRAME];
    let (mut energy, mut samples) = (0f64, 0usize);
    for (i, p) in packets.iter().enumerate() {
        let n = decoder.decode(&p.payload, &mut pcm, false).unwrap();
        assert_eq!(n, FRAME);
        if i >= skip {
            energy += pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
            samples += n;
        }
    }
    (energy / samples.max(1) as f64).sqrt()
}

#[test]
fn g711_expands_as_the_itu_tables_say() {
    assert_eq!(Law::MuLaw.expand(0xff), 0);
    assert_eq!(Law::MuLaw.expand(0x7f), 0);
    assert_eq!(Law::MuLaw.expand(0x80), 32_124);
    assert_eq!(Law::MuLaw.expand(0x00), -32_124);
    assert_eq!(Law::ALaw.expand(0xd5), 8);
    assert_eq!(Law::ALaw.expand(0x55), -8);
    assert_eq!(Law::ALaw.expand(0xaa), 32_256);
    assert_eq!(Law::ALaw.expand(0x2a), -32_256);
}

#[test]
fn the_codecs_kaskade_takes_are_known_by_their_rtsp_names() {
    assert_eq!(
        SourceAudio::of("PCMU", 8_000, None),
        Some(SourceAudio::G711(Law::MuLaw))
    );
    assert_eq!(
        SourceAudio::of("pcma", 8_000, None),
        Some(SourceAudio::G711(Law::ALaw))
    );
    assert_eq!(
        SourceAudio::of("MPEG4-GENERIC", 16_000, Some(&[0x14, 0x08])),
        Some(SourceAudio::Aac {
            config: vec![0x14, 0x08],
            rate: 16_000
        })
    );
    assert_eq!(
        SourceAudio::of("mpeg4-generic", 16_000, None),
        None,
        "AAC needs its config"
    );
    assert_eq!(SourceAudio::of("opus", 48_000, None), None);
    assert_eq!(SourceAudio::of("G726-32", 8_000, None), None);
}

#[test]
fn resampling_to_48_khz_keeps_the_count_and_the_line() {
    for (rate, input) in [
        (8_000u32, 800usize),
        (16_000, 1_600),
        (44_100, 4_410),
        (48_000, 4_800),
    ] {
        let mut r = Resampler::new(rate);
        let mut out = Vec::new();
        // a ramp, in chunks that do not divide evenly
        let ramp: Vec<i16> = (0..input as i16).collect();
        for chunk in ramp.chunks(77) {
            r.push(chunk, &mut out);
        }
        let expected = input as i64 * 48_000 / i64::from(rate);
        assert!(
            (out.len() as i64 - expected).abs() <= 1,
            "{rate}: {} samples",
            out.len()
        );
        assert!(
            out.windows(2).all(|w| w[1] >= w[0]),
            "{rate}: monotonic across chunks"
        );
    }
}

#[test]
fn a_g711_tone_becomes_20_ms_opus_packets_on_the_cameras_clock_that_decode_to_the_tone() {
    let mut t = AudioTranscoder::new(&SourceAudio::G711(Law::MuLaw), 7, 100).unwrap();
    let mut out = Vec::new();
    // 1 s of a 440 Hz tone at 8 kHz, in 20 ms (160-sample) camera packets
    let mu = |x: f64| -> u8 {
        (0..=255u8)
            .min_by_key(|b| (f64::from(Law::MuLaw.expand(*b)) - x).abs() as i64)
            .unwrap()
    };
    let tone: Vec<u8> = (0..8_000)
        .map(|n| mu(8_000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 8_000.0).sin()))
        .collect();
    for (i, chunk) in tone.chunks(160).enumerate() {
        t.push(1_000 + (i * 160) as i64, chunk, &mut out);
    }
    let packets = parse(&out);
    assert_eq!(packets.len(), 50);
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.header.timestamp, 6_000 + (i * FRAME) as u32);
        assert_eq!(p.header.sequence_number, 100 + i as u16);
        assert_eq!(p.header.payload_type, PAYLOAD_TYPE);
    }
    // a sine of amplitude 8,000 is -15 dBov: the level says so, voice bit set
    for p in &packets[1..] {
        let level = p.header.get_extension(AUDIO_LEVEL_EXT).expect("a level");
        assert!(
            level[0] & 0x80 != 0 && (14..=16).contains(&(level[0] & 0x7f)),
            "{:#x}",
            level[0]
        );
    }
    let rms = decoded_rms(&packets, 10);
    assert!(
        (3_000.0..9_000.0).contains(&rms),
        "the tone came through: rms {rms}"
    );
}

#[test]
fn levels_run_from_full_scale_to_silence() {
    assert_eq!(audio_level(&[0; FRAME]), SILENT);
    assert_eq!(audio_level(&[i16::MAX; FRAME]), 0);
    assert_eq!(audio_level(&[i16::MAX / 10; FRAME]), 20);
    assert_eq!(audio_level(&[1; FRAME]), 90);
}

#[test]
fn a_g722_tone_on_its_8_khz_clock_becomes_opus_that_decodes_to_the_tone() {
    let mut t = AudioTranscoder::new(&SourceAudio::G722, 7, 0).unwrap();
    let mut encoder = ezk_g722::libg722::encoder::Encoder::new(Bitrate::Mode1_64000, false, false);
    let mut out = Vec::new();
    // 1 s of a 440 Hz tone sampled at 16 kHz, in 20 ms packets of 160 bytes whose RTP
    // timestamps count 8 kHz (RFC 3551)
    let tone: Vec<i16> = (0..16_000)
        .map(|n| (8_000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 16_000.0).sin()) as i16)
        .collect();
    for (i, chunk) in tone.chunks(320).enumerate() {
        let payload = encoder.encode(chunk);
        assert_eq!(payload.len(), 160);
        t.push((i * 160) as i64, &payload, &mut out);
    }
    let packets = parse(&out);
    assert_eq!(packets.len(), 50, "20 ms of 48 kHz Opus each");
    for pair in packets.windows(2) {
        assert_eq!(
            pair[1].header.timestamp - pair[0].header.timestamp,
            FRAME as u32
        );
    }
    let rms = decoded_rms(&packets, 10);
    assert!(
        (3_000.0..9_000.0).contains(&rms),
        "the tone came through: rms {rms}"
    );
}

#[test]
fn a_gap_in_the_cameras_audio_restarts_the_run_at_the_cameras_timestamp() {
    let mut t = AudioTranscoder::new(&SourceAudio::G711(Law::ALaw), 7, 0).unwrap();
    let mut out = Vec::new();
    t.push(0, &[0xd5; 160], &mut out);
    t.push(8_000, &[0xd5; 160], &mut out);
    let stamps: Vec<u32> = parse(&out).iter().map(|p| p.header.timestamp).collect();
    assert_eq!(stamps, [0, 48_000]);
}

/// The raw frames of an ADTS stream and the AudioSpecificConfig its headers describe.
fn adts_frames(stream: &[u8]) -> (Vec<u8>, Vec<&[u8]>) {
    let mut frames = Vec::new();
    let mut config = Vec::new();
    let mut at = 0;
    while at + 7 <= stream.len() {
        let h = &stream[at..at + 7];
        assert_eq!((h[0], h[1] & 0xf6), (0xff, 0xf0), "ADTS sync at {at}");
        let profile = (h[2] >> 6) + 1;
        let rate_index = (h[2] >> 2) & 0x0f;
        let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
        let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        config = vec![
            (profile << 3) | (rate_index >> 1),
            ((rate_index & 1) << 7) | (channels << 3),
        ];
        frames.push(&stream[at + 7..at + len]);
        at += len;
    }
    (config, frames)
}

#[test]
fn an_aac_tone_from_a_real_encoder_comes_out_as_the_tone_in_opus() {
    // 16 frames of a 440 Hz tone at 16 kHz, encoded by GStreamer's voaacenc (ADTS)
    let stream = include_bytes!("../testdata/tone16k.aac");
    let (config, frames) = adts_frames(stream);
    assert_eq!(frames.len(), 16);
    let codec = SourceAudio::of("mpeg4-generic", 16_000, Some(&config)).unwrap();
    let mut t = AudioTranscoder::new(&codec, 9, 0).unwrap();
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        t.push(500 + (i * 1_024) as i64, frame, &mut out);
    }
    let packets = parse(&out);
    // 16 x 1024 samples at 16 kHz = 1.024 s = 51 whole 20 ms frames at 48 kHz
    assert_eq!(packets.len(), 51);
    assert_eq!(
        packets[0].header.timestamp, 1_500,
        "500 at 16 kHz is 1,500 at 48 kHz"
    );
    assert!(
        packets
            .windows(2)
            .all(|w| w[1].header.timestamp - w[0].header.timestamp == 960)
    );
    let rms = decoded_rms(&packets, 10);
    assert!(
        (3_000.0..15_000.0).contains(&rms),
        "the tone came through: rms {rms}"
    );
}
