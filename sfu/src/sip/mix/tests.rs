use super::*;
use crate::sip::sdp::{Flow, TelephoneEvent};
use std::collections::BTreeSet;

const TICK: Duration = Duration::from_millis(20);

fn line(codec: AudioCodec, payload_type: u8) -> AudioLine {
    AudioLine {
        remote: "192.0.2.1:5000".parse().unwrap(),
        codec,
        send_payload_type: payload_type,
        receive_payload_type: payload_type,
        telephone_event: Some(TelephoneEvent {
            payload_type: 101,
            clock_rate: 8_000,
        }),
        flow: Flow {
            send: true,
            receive: true,
        },
        srtp: None,
    }
}

/// One talker's 20 ms Opus packets of a tone at `hz`, as the node delivers them.
struct Tone {
    encoder: Encoder,
    ssrc: u32,
    hz: f32,
    frame: u32,
}

impl Tone {
    fn new(ssrc: u32, hz: f32) -> Self {
        Self {
            encoder: Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap(),
            ssrc,
            hz,
            frame: 0,
        }
    }

    fn next(&mut self) -> Vec<u8> {
        let pcm: Vec<i16> = (0..FRAME)
            .map(|i| {
                let t = (self.frame as usize * FRAME + i) as f32 / 48_000.0;
                ((t * self.hz * std::f32::consts::TAU).sin() * 8_000.0) as i16
            })
            .collect();
        let mut payload = vec![0; 1_500];
        let n = self.encoder.encode(&pcm, &mut payload).unwrap();
        let mut packet = vec![0x80, DELIVERED_OPUS];
        packet.extend_from_slice(&(self.frame as u16).to_be_bytes());
        packet.extend_from_slice(&(self.frame * 960).to_be_bytes());
        packet.extend_from_slice(&self.ssrc.to_be_bytes());
        packet.extend_from_slice(&payload[..n]);
        self.frame += 1;
        packet
    }
}

fn header(packet: &[u8]) -> (u8, u16, u32, u32) {
    (
        packet[1],
        u16::from_be_bytes([packet[2], packet[3]]),
        u32::from_be_bytes(packet[4..8].try_into().unwrap()),
        u32::from_be_bytes(packet[8..12].try_into().unwrap()),
    )
}

fn rms(law: Law, payload: &[u8]) -> f64 {
    let sum: f64 = payload
        .iter()
        .map(|&b| f64::from(law.expand(b)).powi(2))
        .sum();
    (sum / payload.len() as f64).sqrt()
}

#[test]
fn two_talkers_are_mixed_into_pcmu_packets_every_20_ms() {
    let mut mixer = Mixer::new(&line(AudioCodec::Pcmu, 0), 0x5eed, 65_534, 1_000).unwrap();
    let (mut low, mut high) = (Tone::new(1, 300.0), Tone::new(2, 700.0));
    let start = Instant::now();
    let mut out = Vec::new();
    for i in 0..25u32 {
        let now = start + TICK * i;
        mixer.push(now, &low.next());
        mixer.push(now, &high.next());
        mixer.tick(now, &mut out);
    }
    assert_eq!(out.len(), 25, "one packet a tick");
    for (i, packet) in out.iter().enumerate() {
        let (pt, seq, ts, ssrc) = header(packet);
        assert_eq!((pt, ssrc), (0, 0x5eed));
        assert_eq!(
            seq,
            65_534u16.wrapping_add(i as u16),
            "continuous across the wrap"
        );
        assert_eq!(ts, 1_000 + 160 * i as u32, "8 kHz timestamps");
        assert_eq!(packet.len(), 12 + 160);
    }
    // past the decoders' start, the mix carries both tones: louder than either alone
    let level = rms(Law::MuLaw, &out[20][12..]);
    assert!(level > 6_000.0, "the mix is heard: rms {level}");
}

#[test]
fn g722_carries_the_mix_as_160_bytes_on_an_8_khz_clock() {
    let mut mixer = Mixer::new(&line(AudioCodec::G722, 9), 3, 0, 0).unwrap();
    let mut tone = Tone::new(1, 440.0);
    let start = Instant::now();
    let mut out = Vec::new();
    for i in 0..25u32 {
        let now = start + TICK * i;
        mixer.push(now, &tone.next());
        mixer.tick(now, &mut out);
    }
    assert!(out.iter().all(|p| p.len() == 12 + 160 && header(p).0 == 9));
    assert_eq!(header(&out[24]).2, 24 * 160, "G.722's RTP clock is 8 kHz");
    let mut decoder = ezk_g722::libg722::decoder::Decoder::new(Bitrate::Mode1_64000, false, false);
    let pcm: Vec<i16> = out[15..]
        .iter()
        .flat_map(|p| decoder.decode(&p[12..]))
        .collect();
    assert_eq!(pcm.len(), 10 * 320, "16 kHz samples");
    let rms = (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!(rms > 2_000.0, "the tone is in it: rms {rms}");
}

#[test]
fn nobody_talking_still_sends_a_packet_every_20_ms() {
    let mut mixer = Mixer::new(&line(AudioCodec::Opus, 111), 7, 0, 0).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    for i in 0..10u32 {
        mixer.tick(start + TICK * i, &mut out);
    }
    assert_eq!(out.len(), 10, "silence keeps the far end's RTP timer alive");
    assert!(out.iter().all(|p| header(p).0 == 111 && p.len() > 12));
    assert_eq!(header(&out[9]).2, 9 * 960, "48 kHz timestamps");
}

#[test]
fn dtmf_takes_the_audios_place_while_it_sounds_in_one_sequence_space() {
    let mut mixer = Mixer::new(&line(AudioCodec::Pcma, 8), 9, 100, 0).unwrap();
    let start = Instant::now();
    assert!(mixer.schedule_keys(start, "1"));
    assert!(mixer.schedule_keys(start, "2"), "queued after the first");
    let mut out = Vec::new();
    for i in 0..40u32 {
        mixer.tick(start + TICK * i, &mut out);
    }
    let kinds: Vec<u8> = out.iter().map(|p| header(p).0 & 0x7f).collect();
    let events = kinds.iter().filter(|&&pt| pt == 101).count();
    assert_eq!(events, 2 * 11, "both keys, whole");
    let first_audio = kinds.iter().position(|&pt| pt == 8).unwrap();
    assert!(
        kinds[..first_audio].iter().all(|&pt| pt == 101),
        "no audio while keys sound"
    );
    let seqs: Vec<u16> = out.iter().map(|p| header(p).1).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "one sequence space: {seqs:?}"
    );
    let starts: BTreeSet<u32> = out
        .iter()
        .filter(|p| header(p).0 & 0x7f == 101)
        .map(|p| header(p).2)
        .collect();
    assert_eq!(starts.len(), 2, "each key its own event timestamp");
    let mut none = Mixer::new(
        &AudioLine {
            telephone_event: None,
            ..line(AudioCodec::Pcmu, 0)
        },
        1,
        1,
        1,
    )
    .unwrap();
    assert!(
        !none.schedule_keys(start, "1"),
        "no events: SIP INFO instead"
    );
}

#[test]
fn a_talker_that_floods_is_kept_to_100_ms_and_garbage_is_dropped() {
    let mut mixer = Mixer::new(&line(AudioCodec::Pcmu, 0), 1, 1, 1).unwrap();
    let mut tone = Tone::new(3, 440.0);
    let now = Instant::now();
    for _ in 0..50 {
        mixer.push(now, &tone.next());
    }
    mixer.push(now, &[0x80, 0x6f, 0, 1]);
    mixer.push(now, &[0u8; 40]);
    let queued: usize = mixer.talkers.values().map(|t| t.queued.len()).sum();
    assert_eq!(queued, MAX_QUEUED);
    assert_eq!(mixer.talkers.len(), 1);
}
