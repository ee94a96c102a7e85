use super::*;

fn local() -> LocalMedia {
    LocalMedia {
        address: "10.0.0.5".parse().unwrap(),
        audio_port: 40_000,
        video_port: Some(40_002),
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
    let text = offer(&phone, 7, 1);
    assert!(
        text.contains("m=audio 40000 RTP/AVP 111 9 0 8 101"),
        "{text}"
    );
    assert!(!text.contains("m=video"), "{text}");
    // a re-INVITE that brings video gets it refused, the sound kept
    let with_video = offer(&local(), 8, 2);
    let (answered, agreed) = answer(&with_video, &phone, 1, 2).unwrap();
    assert!(answered.contains("m=video 0 "), "{answered}");
    assert!(agreed.video.is_none() && agreed.audio.is_some());
}

#[test]
fn kaskades_offer_names_its_codecs_and_reads_back() {
    let text = offer(&local(), 7, 1);
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
    let agreed = read_answer(answer).unwrap();
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
    let agreed = read_answer(answer).unwrap();
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
        read_answer(offer),
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
        assert!(read_answer(text).is_err(), "{text:?}");
    }
}
