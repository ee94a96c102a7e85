use super::*;
use crate::sip::sdes::{Crypto, CryptoSuite};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn local() -> LocalMedia {
    LocalMedia {
        address: "10.0.0.5".parse().unwrap(),
        audio_port: 40_000,
        video_port: Some(40_002),
        srtp: SrtpPolicy::BestEffort,
        keys: LocalKeys::random(&mut StdRng::seed_from_u64(5)),
    }
}

/// An offer as a room system of the Polycom family writes it: Siren and G.722 first, H.264 in
/// both modes beside H.263, BFCP, far-end camera control (H.224) and a second video line for
/// content, lines ending with CRLF as on the wire (also a seed of the `sip_sdp` fuzz target).
const ROOM_SYSTEM_OFFER: &str = include_str!("../testdata/room-system-offer.sdp");

#[test]
fn a_phone_is_offered_sound_only_and_its_video_is_refused() {
    let phone = LocalMedia {
        video_port: None,
        ..local()
    };
    let text = offer(&phone, 7, 1, OfferedProtection::Plain);
    assert!(
        text.contains("m=audio 40000 RTP/AVP 111 9 0 8 101"),
        "{text}"
    );
    assert!(!text.contains("m=video"), "{text}");
    // a re-INVITE that brings video gets it refused, the sound kept
    let with_video = offer(&local(), 8, 2, OfferedProtection::Plain);
    let (answered, agreed) = answer(&with_video, &phone, 1, 2).unwrap();
    assert!(answered.contains("m=video 0 "), "{answered}");
    assert!(agreed.video.is_none() && agreed.audio.is_some());
}

#[test]
fn kaskades_offer_names_its_codecs_and_reads_back() {
    let text = offer(&local(), 7, 1, OfferedProtection::Plain);
    for line in [
        "m=audio 40000 RTP/AVP 111 9 0 8 101",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "m=video 40002 RTP/AVP 96 97",
        "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1",
        "a=fmtp:97 profile-level-id=42e01f;packetization-mode=0",
        "a=rtcp-fb:96 ccm fir",
        "c=IN IP4 10.0.0.5",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    // kaskade's offer is itself a valid offer that kaskade would answer.
    let (_, agreed) = answer(&text, &local(), 1, 1).unwrap();
    assert_eq!(agreed.audio.unwrap().codec, AudioCodec::Opus);
    assert_eq!(agreed.video.unwrap().packetization_mode, 1);
}

#[test]
fn an_answer_with_only_pcmu_agrees_on_pcmu_and_no_video() {
    let answer = "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
        m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
        m=video 0 RTP/AVP 96\r\n";
    let agreed = read_answer(answer, &local(), OfferedProtection::Plain).unwrap();
    let audio = agreed.audio.unwrap();
    assert_eq!(
        audio.codec,
        AudioCodec::Pcmu,
        "static payload type without rtpmap"
    );
    assert_eq!(
        audio.remote,
        "192.0.2.20:30000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        (audio.send_payload_type, audio.receive_payload_type),
        (0, 0)
    );
    assert_eq!(
        audio.telephone_event,
        Some(TelephoneEvent {
            payload_type: 101,
            clock_rate: 8_000
        })
    );
    assert_eq!(
        audio.flow,
        Flow {
            send: true,
            receive: true
        }
    );
    assert!(agreed.video.is_none(), "port 0 is a refusal");
}

#[test]
fn an_answer_that_renumbers_keeps_both_numbers_and_reads_its_h264_limits() {
    let answer = "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
        m=audio 30000 RTP/AVP 120\r\na=rtpmap:120 OPUS/48000/2\r\n\
        m=video 30002 RTP/AVP 126\r\nc=IN IP4 192.0.2.21\r\na=rtpmap:126 H264/90000\r\n\
        a=fmtp:126 profile-level-id=42801f; packetization-mode=1; max-fs=3600; max-mbps=108000\r\n\
        a=sendonly\r\n";
    let agreed = read_answer(answer, &local(), OfferedProtection::Plain).unwrap();
    let audio = agreed.audio.unwrap();
    assert_eq!(
        (audio.send_payload_type, audio.receive_payload_type),
        (120, 111)
    );
    let video = agreed.video.unwrap();
    assert_eq!(
        video.remote,
        "192.0.2.21:30002".parse::<SocketAddr>().unwrap(),
        "media-level c="
    );
    assert_eq!(
        (video.send_payload_type, video.receive_payload_type),
        (126, 96)
    );
    assert_eq!(video.packetization_mode, 1);
    assert_eq!(video.profile_level_id, "42801f");
    assert_eq!((video.max_fs, video.max_mbps), (Some(3600), Some(108_000)));
    assert_eq!(
        video.flow,
        Flow {
            send: false,
            receive: true
        },
        "the far end only sends"
    );
}

#[test]
fn a_room_systems_offer_is_answered_line_for_line() {
    let (text, agreed) = answer(ROOM_SYSTEM_OFFER, &local(), 3, 1).unwrap();
    let audio = agreed.audio.unwrap();
    assert_eq!(
        audio.codec,
        AudioCodec::G722,
        "its first codec kaskade takes"
    );
    assert_eq!(
        (audio.send_payload_type, audio.receive_payload_type),
        (9, 9)
    );
    assert_eq!(
        audio.telephone_event,
        Some(TelephoneEvent {
            payload_type: 101,
            clock_rate: 8_000
        })
    );
    let video = agreed.video.unwrap();
    assert_eq!(video.send_payload_type, 109, "its first H.264, mode 1");
    assert_eq!(video.packetization_mode, 1);
    assert_eq!(video.max_fs, Some(8160), "spaces after ; are read");

    let answered = Session::parse(text.as_bytes()).unwrap();
    let lines: Vec<(&str, u16, &str)> = answered
        .medias
        .iter()
        .map(|m| (m.media.as_str(), m.port, m.proto.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("audio", 40_000, "RTP/AVP"),
            ("video", 40_002, "RTP/AVP"),
            ("application", 0, "RTP/AVP"),
            ("video", 0, "RTP/AVP"),
            ("application", 0, "TCP/BFCP"),
        ],
        "every m-line in its place, the ones kaskade does not take refused"
    );
    assert!(text.contains("m=audio 40000 RTP/AVP 9 101"), "{text}");
    assert!(text.contains("a=fmtp:109 profile-level-id=42e016;packetization-mode=1"));
}

#[test]
fn a_level_above_kaskades_is_answered_with_kaskades() {
    assert_eq!(answered_profile("640028"), "42e01f");
    assert_eq!(answered_profile("42000d"), "42e00d");
    assert_eq!(answered_profile("x"), "42e01f");
}

#[test]
fn mode_0_is_the_default_and_an_unknown_mode_is_skipped() {
    let offer = "v=0\r\no=- 1 1 IN IP4 192.0.2.30\r\ns=-\r\nc=IN IP4 192.0.2.30\r\nt=0 0\r\n\
        m=video 5000 RTP/AVP 98 99\r\na=rtpmap:98 H264/90000\r\n\
        a=fmtp:98 packetization-mode=2\r\na=rtpmap:99 H264/90000\r\n\
        m=audio 5002 RTP/AVP 8\r\n";
    let (_, agreed) = answer(offer, &local(), 1, 1).unwrap();
    let video = agreed.video.unwrap();
    assert_eq!((video.send_payload_type, video.packetization_mode), (99, 0));
    assert_eq!(agreed.audio.unwrap().codec, AudioCodec::Pcma);
}

#[test]
fn hold_by_direction_and_by_address_stops_kaskade_sending() {
    let held = |attr: &str, address: &str| {
        let offer = format!(
            "v=0\r\no=- 1 2 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n\
             m=audio 5000 RTP/AVP 0\r\n{attr}"
        );
        let (text, agreed) = answer(&offer, &local(), 1, 2).unwrap();
        (agreed.audio.unwrap().flow, text)
    };
    let (flow, text) = held("a=sendonly\r\n", "192.0.2.30");
    assert_eq!(
        flow,
        Flow {
            send: false,
            receive: true
        }
    );
    assert!(text.contains("a=recvonly"), "{text}");
    let (flow, text) = held("a=inactive\r\n", "192.0.2.30");
    assert_eq!(
        flow,
        Flow {
            send: false,
            receive: false
        }
    );
    assert!(text.contains("a=inactive"), "{text}");
    let (flow, _) = held("", "0.0.0.0");
    assert_eq!(
        flow,
        Flow {
            send: false,
            receive: true
        },
        "RFC 2543 hold"
    );
}

#[test]
fn nothing_in_common_says_what_the_far_end_has() {
    let offer = "v=0\r\no=- 1 1 IN IP4 192.0.2.30\r\ns=-\r\nc=IN IP4 192.0.2.30\r\nt=0 0\r\n\
        m=audio 5000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n\
        m=video 5002 RTP/AVP 34\r\na=rtpmap:34 H263/90000\r\n\
        m=audio 5004 RTP/SAVP 0\r\n";
    let err = answer(offer, &local(), 1, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no common codec (they have audio RTP/AVP G729, video RTP/AVP H263, audio RTP/SAVP 0)"
    );
    assert!(matches!(
        read_answer(offer, &local(), OfferedProtection::Plain),
        Err(SdpError::NoCommonCodec(_))
    ));
}

#[test]
fn malformed_descriptions_are_errors_not_panics() {
    for text in [
        "",
        "hello",
        "v=0\r\nm=audio x RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 192.0.2.30\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 192.0.2.30\r\ns=-\r\nc=IN IP4 not-an-ip\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n",
    ] {
        let answered = answer(text, &local(), 1, 1);
        assert!(
            matches!(
                answered,
                Err(SdpError::Malformed(_) | SdpError::NoCommonCodec(_))
            ),
            "{text:?}: {answered:?}"
        );
        assert!(
            read_answer(text, &local(), OfferedProtection::Plain).is_err(),
            "{text:?}"
        );
    }
}

/// An offer as an SRTP room system writes it (Cisco's `RTP/SAVP`, a 32-bit suite it prefers,
/// a suite kaskade does not take first).
fn secure_offer(proto: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.40\r\ns=-\r\nc=IN IP4 192.0.2.40\r\nt=0 0\r\n\
         m=audio 6000 {proto} 0\r\n\
         a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^31\r\n\
         a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^31\r\n\
         a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31\r\n\
         m=video 6002 {proto} 96\r\na=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
    )
}

fn with_policy(srtp: SrtpPolicy) -> LocalMedia {
    LocalMedia { srtp, ..local() }
}

#[test]
fn an_srtp_offer_is_answered_with_kaskades_key_for_the_first_suite_it_takes() {
    let ours = local();
    let (text, agreed) = answer(&secure_offer("RTP/SAVP"), &ours, 1, 1).unwrap();
    assert!(text.contains("m=audio 40000 RTP/SAVP 0"), "{text}");
    assert!(text.contains("m=video 40002 RTP/SAVP 96"), "{text}");
    let audio = agreed.audio.unwrap().srtp.expect("audio by SRTP");
    assert_eq!(
        audio.suite,
        CryptoSuite::AesCm128HmacSha1_32,
        "the far end's order"
    );
    assert_eq!(audio.local, ours.keys.audio);
    let answered = Crypto {
        tag: 2,
        suite: CryptoSuite::AesCm128HmacSha1_32,
        key: ours.keys.audio,
    };
    assert!(text.contains(&format!("a=crypto:{answered}")), "{text}");
    assert_eq!(text.matches("a=crypto:").count(), 2, "one per line: {text}");
    let video = agreed.video.unwrap().srtp.expect("video by SRTP");
    assert_eq!(
        (video.suite, video.local),
        (CryptoSuite::AesCm128HmacSha1_80, ours.keys.video)
    );
    assert_ne!(audio.remote, video.remote, "each line its own key");
}

#[test]
fn srtp_follows_the_policy_when_answering() {
    // best effort takes keys on a plain line too, and plain lines as they are
    let (text, agreed) = answer(&secure_offer("RTP/AVP"), &local(), 1, 1).unwrap();
    assert!(text.contains("m=audio 40000 RTP/AVP 0") && text.contains("a=crypto:2 "));
    assert!(agreed.audio.unwrap().srtp.is_some());
    let plain = offer(&local(), 7, 1, OfferedProtection::Plain);
    let (text, agreed) = answer(&plain, &local(), 1, 1).unwrap();
    assert!(!text.contains("crypto") && agreed.audio.unwrap().srtp.is_none());

    // off refuses SRTP lines and ignores keys on plain ones
    let off = with_policy(SrtpPolicy::Off);
    let refused = answer(&secure_offer("RTP/SAVP"), &off, 1, 1).unwrap_err();
    assert!(matches!(refused, SdpError::NoCommonCodec(_)), "{refused}");
    let (text, agreed) = answer(&secure_offer("RTP/AVP"), &off, 1, 1).unwrap();
    assert!(!text.contains("crypto") && agreed.audio.unwrap().srtp.is_none());

    // mandatory refuses plain lines, and SRTP lines without a key it takes
    let mandatory = with_policy(SrtpPolicy::Mandatory);
    assert!(answer(&plain, &mandatory, 1, 1).is_err());
    let unkeyed = secure_offer("RTP/SAVP").replacen("AES_CM_128", "F8_128", 2);
    let (text, agreed) = answer(&unkeyed, &local(), 1, 1).unwrap();
    assert!(text.contains("m=audio 0 RTP/SAVP 0"), "{text}");
    assert!(agreed.audio.is_none() && agreed.video.is_some());
}

#[test]
fn kaskades_offers_carry_keys_as_the_policy_says_and_read_the_answers_keys() {
    assert_eq!(SrtpPolicy::Off.offers(), [OfferedProtection::Plain]);
    assert_eq!(
        SrtpPolicy::BestEffort.offers(),
        [OfferedProtection::BestEffort, OfferedProtection::Secure]
    );
    assert_eq!(SrtpPolicy::Mandatory.offers(), [OfferedProtection::Secure]);
    let ours = local();
    let best_effort = offer(&ours, 7, 1, OfferedProtection::BestEffort);
    assert!(
        best_effort.contains("m=audio 40000 RTP/AVP "),
        "{best_effort}"
    );
    let secure = offer(&ours, 7, 1, OfferedProtection::Secure);
    assert!(secure.contains("m=video 40002 RTP/SAVP 96 97"), "{secure}");
    for (tag, suite) in [
        (1, "AES_CM_128_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
    ] {
        assert_eq!(
            secure.matches(&format!("a=crypto:{tag} {suite} ")).count(),
            2
        );
    }

    // the far end, answering kaskade's secure offer as kaskade itself would
    let far = LocalMedia {
        keys: LocalKeys::random(&mut StdRng::seed_from_u64(9)),
        ..ours
    };
    let (text, theirs) = answer(&secure, &far, 2, 1).unwrap();
    let agreed = read_answer(&text, &ours, OfferedProtection::Secure).unwrap();
    let (audio, video) = (agreed.audio.unwrap().srtp, agreed.video.unwrap().srtp);
    assert_eq!(
        audio,
        Some(Sdes {
            suite: CryptoSuite::AesCm128HmacSha1_80,
            local: ours.keys.audio,
            remote: far.keys.audio,
        })
    );
    assert_eq!(video.map(|k| k.remote), Some(far.keys.video));
    let far_audio = theirs.audio.unwrap().srtp.unwrap();
    assert_eq!(
        (far_audio.local, far_audio.remote),
        (far.keys.audio, ours.keys.audio)
    );

    // an answer without keys to a best-effort offer is plain RTP; to a secure one, refused
    let plain = text
        .lines()
        .filter(|l| !l.starts_with("a=crypto"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let agreed = read_answer(
        &plain.replace("SAVP", "AVP"),
        &ours,
        OfferedProtection::BestEffort,
    );
    assert!(agreed.unwrap().audio.unwrap().srtp.is_none());
    assert!(read_answer(&plain, &ours, OfferedProtection::Secure).is_err());
    let mandatory = with_policy(SrtpPolicy::Mandatory);
    let refused = read_answer(
        &plain.replace("SAVP", "AVP"),
        &mandatory,
        OfferedProtection::Secure,
    );
    assert!(refused.is_err(), "mandatory takes no plain answer");
    // nor keys under a tag kaskade did not offer with that suite
    let swapped = text.replace(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80",
        "a=crypto:2 AES_CM_128_HMAC_SHA1_80",
    );
    assert!(read_answer(&swapped, &ours, OfferedProtection::Secure).is_err());
}
