//! The lean client's SDP: the one offer it sends, written out by hand with the layout of
//! docs/SIGNALING.md section 2, and the few facts it needs from the node's answer, read by a
//! small line parser (the answer is rtc's, so its shape is known; anything unexpected is
//! skipped, never trusted).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use kaskade_client::audio::{AUDIO_LEVEL_URI, OPUS_CLOCK_RATE};
use kaskade_client::peer::{H264_FMTP, H264_PAYLOAD_TYPE, OPUS_PAYLOAD_TYPE};
use kaskade_client::signaling::MediaKind;
use kaskade_client::video::VIDEO_CLOCK_RATE;

/// The header extension id offered for the RFC 6464 audio level.
pub const AUDIO_LEVEL_EXT_ID: u8 = 1;
/// The header extension id offered for the m-line's mid (RFC 8843), with simulcast.
pub const MID_EXT_ID: u8 = 4;
/// The header extension id offered for the RTP stream id (RFC 8852), with simulcast.
pub const RID_EXT_ID: u8 = 5;
/// The header extension id offered for the repaired RTP stream id, with simulcast and RTX.
pub const REPAIRED_RID_EXT_ID: u8 = 6;
/// The payload type offered for H.264's retransmissions (RFC 4588), with RTX.
pub const RTX_PAYLOAD_TYPE: u8 = 103;
/// The header extension id offered for transport-wide sequence numbers, with congestion
/// feedback.
pub const TRANSPORT_CC_EXT_ID: u8 = 3;
/// The transport-wide congestion control header extension.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// The payload type offered for redundant audio (RFC 2198), with RED.
pub const RED_PAYLOAD_TYPE: u8 = 63;

/// What the offer says about this client.
#[derive(Debug, Clone)]
pub struct OfferParams {
    /// Our ICE username fragment.
    pub ufrag: String,
    /// Our ICE password.
    pub pwd: String,
    /// The SHA-256 fingerprint of our DTLS certificate (`AB:CD:...`).
    pub fingerprint: String,
    /// The SSRC of the audio we publish, if we publish audio.
    pub audio_ssrc: Option<u32>,
    /// The SSRC of the video we publish, if we publish video.
    pub video_ssrc: Option<u32>,
    /// The RTP stream ids of our video's simulcast layers, lowest first (none: one stream on
    /// `video_ssrc`). Each layer's packets carry its rid and the m-line's mid.
    pub video_rids: Vec<String>,
    /// The CNAME of our streams.
    pub cname: String,
    /// Receive slots of each kind (the `welcome`'s `recv_slots`).
    pub recv_slots: usize,
    /// Offer retransmissions on repair streams (RFC 4588) for video, as browsers do.
    pub rtx: bool,
    /// Offer redundant audio (RED, RFC 2198) after Opus, as browsers do.
    pub red: bool,
    /// Offer transport-wide congestion feedback (`transport-cc`), as browsers do: the node
    /// numbers what it sends us and estimates our downlink from our feedback.
    pub congestion_feedback: bool,
}

/// The direction of one m-line of the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendOnly(u32),
    RecvOnly,
}

/// Writes the offer: sendonly Opus and H.264 (those we publish), then `recv_slots` recvonly
/// audio and `recv_slots` recvonly video m-lines, bundled, with rtcp-mux and `setup:active`.
pub fn offer(p: &OfferParams) -> String {
    let mut lines: Vec<(MediaKind, Direction)> = Vec::new();
    if let Some(ssrc) = p.audio_ssrc {
        lines.push((MediaKind::Audio, Direction::SendOnly(ssrc)));
    }
    if let Some(ssrc) = p.video_ssrc {
        lines.push((MediaKind::Video, Direction::SendOnly(ssrc)));
    }
    for kind in [MediaKind::Audio, MediaKind::Video] {
        lines.extend(std::iter::repeat_n(
            (kind, Direction::RecvOnly),
            p.recv_slots,
        ));
    }
    let mids: Vec<String> = (0..lines.len()).map(|i| i.to_string()).collect();
    let mut sdp = String::with_capacity(600 * lines.len() + 200);
    // writing into a String cannot fail
    let _ = write!(
        sdp,
        "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n\
         a=msid-semantic: WMS {}\r\n",
        u64::from(p.audio_ssrc.unwrap_or(1)) << 16 | u64::from(p.video_ssrc.unwrap_or(1) >> 16),
        mids.join(" "),
        p.cname,
    );
    for ((kind, direction), mid) in lines.into_iter().zip(&mids) {
        let (media, pt) = match kind {
            MediaKind::Audio => ("audio", OPUS_PAYLOAD_TYPE),
            MediaKind::Video => ("video", H264_PAYLOAD_TYPE),
        };
        let rtx = p.rtx && kind == MediaKind::Video;
        let red = p.red && kind == MediaKind::Audio;
        let formats = if rtx {
            format!("{pt} {RTX_PAYLOAD_TYPE}")
        } else if red {
            format!("{pt} {RED_PAYLOAD_TYPE}")
        } else {
            pt.to_string()
        };
        let _ = write!(
            sdp,
            "m={media} 9 UDP/TLS/RTP/SAVPF {formats}\r\nc=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n\
             a=fingerprint:sha-256 {}\r\na=setup:active\r\na=mid:{mid}\r\n",
            p.ufrag, p.pwd, p.fingerprint,
        );
        if p.congestion_feedback {
            let _ = write!(
                sdp,
                "a=extmap:{TRANSPORT_CC_EXT_ID} {TRANSPORT_CC_URI}\r\n\
                 a=rtcp-fb:{pt} transport-cc\r\n",
            );
        }
        match kind {
            MediaKind::Audio => {
                let _ = write!(
                    sdp,
                    "a=extmap:{AUDIO_LEVEL_EXT_ID} {AUDIO_LEVEL_URI}\r\n\
                     a={}\r\na=rtcp-mux\r\na=rtpmap:{pt} opus/{OPUS_CLOCK_RATE}/2\r\n\
                     a=fmtp:{pt} minptime=10;useinbandfec=1\r\n",
                    direction.attribute(),
                );
                if red {
                    let _ = write!(
                        sdp,
                        "a=rtpmap:{RED_PAYLOAD_TYPE} red/{OPUS_CLOCK_RATE}/2\r\n\
                         a=fmtp:{RED_PAYLOAD_TYPE} {pt}/{pt}\r\n",
                    );
                }
            }
            MediaKind::Video => {
                let _ = write!(
                    sdp,
                    "a={}\r\na=rtcp-mux\r\na=rtpmap:{pt} H264/{VIDEO_CLOCK_RATE}\r\n\
                     a=rtcp-fb:{pt} ccm fir\r\na=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\n\
                     a=fmtp:{pt} {H264_FMTP}\r\n",
                    direction.attribute(),
                );
                if rtx {
                    let _ = write!(
                        sdp,
                        "a=rtpmap:{RTX_PAYLOAD_TYPE} rtx/{VIDEO_CLOCK_RATE}\r\n\
                         a=fmtp:{RTX_PAYLOAD_TYPE} apt={pt}\r\n",
                    );
                }
            }
        }
        if kind == MediaKind::Video
            && matches!(direction, Direction::SendOnly(_))
            && !p.video_rids.is_empty()
        {
            let _ = write!(
                sdp,
                "a=extmap:{MID_EXT_ID} urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                 a=extmap:{RID_EXT_ID} urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n",
            );
            if p.rtx {
                let _ = write!(
                    sdp,
                    "a=extmap:{REPAIRED_RID_EXT_ID} \
                     urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n",
                );
            }
            for rid in &p.video_rids {
                let _ = write!(sdp, "a=rid:{rid} send\r\n");
            }
            let _ = write!(sdp, "a=simulcast:send {}\r\n", p.video_rids.join(";"));
            let track = format!("{}-{media}", p.cname);
            let _ = write!(sdp, "a=msid:{} {track}\r\n", p.cname);
        } else if let Direction::SendOnly(ssrc) = direction {
            let (stream, track) = (&p.cname, format!("{}-{media}", p.cname));
            let _ = write!(
                sdp,
                "a=msid:{stream} {track}\r\na=ssrc:{ssrc} cname:{}\r\n\
                 a=ssrc:{ssrc} msid:{stream} {track}\r\n",
                p.cname,
            );
        }
    }
    sdp
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendOnly(_) => "sendonly",
            Direction::RecvOnly => "recvonly",
        }
    }
}

/// One m-line of the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerSection {
    /// Its mid.
    pub mid: String,
    /// `audio` or `video` (anything else: not media this client knows).
    pub kind: Option<MediaKind>,
    /// The node sends on it (one of our receive slots).
    pub node_sends: bool,
    /// The node receives on it (one of our publish m-lines).
    pub node_receives: bool,
    /// The media SSRCs the node announced on it.
    pub ssrcs: Vec<u32>,
    /// Its repair flows (`a=ssrc-group:FID`): each media SSRC and the SSRC of its
    /// retransmissions.
    pub repairs: Vec<(u32, u32)>,
    /// The payload types accepted, in order.
    pub payload_types: Vec<u8>,
    /// The id of the audio level extension, if accepted.
    pub audio_level_ext: Option<u8>,
    /// The id of the transport-wide sequence number extension, if accepted.
    pub transport_cc_ext: Option<u8>,
}

/// What the lean client needs from the node's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The node's ICE username fragment.
    pub ufrag: String,
    /// The node's ICE password.
    pub pwd: String,
    /// The node's certificate fingerprint (`sha-256` only), as written.
    pub fingerprint: String,
    /// The node's UDP candidates, in the answer's order.
    pub candidates: Vec<SocketAddr>,
    /// Every m-line, in order.
    pub sections: Vec<AnswerSection>,
}

/// Why an answer is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// A required attribute is missing.
    #[error("the answer has no {0}")]
    Missing(&'static str),
}

impl Answer {
    /// Reads `sdp`. Unknown lines are skipped; ICE credentials and the fingerprint may stand at
    /// session or media level (the first one wins).
    pub fn parse(sdp: &str) -> Result<Self, AnswerError> {
        let mut answer = Answer::default();
        let (mut ufrag, mut pwd, mut fingerprint) = (None, None, None);
        for line in sdp.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(media) = line.strip_prefix("m=") {
                let mut fields = media.split_ascii_whitespace();
                let kind = match fields.next() {
                    Some("audio") => Some(MediaKind::Audio),
                    Some("video") => Some(MediaKind::Video),
                    _ => None,
                };
                let payload_types = fields.skip(2).filter_map(|f| f.parse().ok()).collect();
                answer.sections.push(AnswerSection {
                    kind,
                    payload_types,
                    ..AnswerSection::default()
                });
                continue;
            }
            let Some(attribute) = line.strip_prefix("a=") else {
                continue;
            };
            let (name, value) = attribute.split_once(':').unwrap_or((attribute, ""));
            match name {
                "ice-ufrag" => {
                    ufrag.get_or_insert_with(|| value.trim().to_owned());
                }
                "ice-pwd" => {
                    pwd.get_or_insert_with(|| value.trim().to_owned());
                }
                "fingerprint" => {
                    if let Some(("sha-256", hash)) = value.trim().split_once(' ') {
                        fingerprint.get_or_insert_with(|| hash.trim().to_owned());
                    }
                }
                "candidate" => {
                    if let Some(addr) = udp_candidate(value) {
                        answer.candidates.push(addr);
                    }
                }
                _ => {
                    if let Some(section) = answer.sections.last_mut() {
                        section.apply(name, value);
                    }
                }
            }
        }
        answer.ufrag = ufrag.ok_or(AnswerError::Missing("ice-ufrag"))?;
        answer.pwd = pwd.ok_or(AnswerError::Missing("ice-pwd"))?;
        answer.fingerprint = fingerprint.ok_or(AnswerError::Missing("sha-256 fingerprint"))?;
        if answer.candidates.is_empty() {
            return Err(AnswerError::Missing("UDP candidate"));
        }
        Ok(answer)
    }

    /// The node's accepted m-line for what we publish of `kind` (the section it receives on).
    pub fn publish_section(&self, kind: MediaKind) -> Option<&AnswerSection> {
        self.sections
            .iter()
            .find(|s| s.kind == Some(kind) && s.node_receives)
    }

    /// Our receive slots: (SSRC, mid, kind) of every section the node sends on.
    pub fn slots(&self) -> impl Iterator<Item = (u32, &str, MediaKind)> + '_ {
        self.sections
            .iter()
            .filter(|s| s.node_sends)
            .filter_map(|s| Some((s, s.kind?)))
            .flat_map(|(s, kind)| {
                s.ssrcs
                    .iter()
                    .map(move |&ssrc| (ssrc, s.mid.as_str(), kind))
            })
    }
}

impl AnswerSection {
    fn apply(&mut self, name: &str, value: &str) {
        match name {
            "mid" => self.mid = value.trim().to_owned(),
            "sendonly" => self.node_sends = true,
            "recvonly" => self.node_receives = true,
            "sendrecv" => (self.node_sends, self.node_receives) = (true, true),
            "ssrc" => {
                let ssrc = value.split(' ').next().and_then(|s| s.parse().ok());
                if let Some(ssrc) = ssrc
                    && !self.ssrcs.contains(&ssrc)
                    && !self.repairs.iter().any(|&(_, rtx)| rtx == ssrc)
                {
                    self.ssrcs.push(ssrc);
                }
            }
            "ssrc-group" => {
                let mut fields = value.split_ascii_whitespace();
                if fields.next() == Some("FID")
                    && let (Some(Ok(media)), Some(Ok(rtx))) =
                        (fields.next().map(str::parse), fields.next().map(str::parse))
                {
                    self.ssrcs.retain(|&s| s != rtx);
                    self.repairs.push((media, rtx));
                }
            }
            "extmap" => {
                let mut fields = value.split_ascii_whitespace();
                // the id may carry a direction: `1/recvonly`
                let id = fields
                    .next()
                    .and_then(|f| f.split('/').next())
                    .and_then(|f| f.parse().ok());
                match (id, fields.next()) {
                    (Some(id), Some(AUDIO_LEVEL_URI)) => self.audio_level_ext = Some(id),
                    (Some(id), Some(TRANSPORT_CC_URI)) => self.transport_cc_ext = Some(id),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// The address of a UDP candidate line's value (`foundation component udp priority ip port
/// typ ...`).
fn udp_candidate(value: &str) -> Option<SocketAddr> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    if fields.len() < 6 || !fields[2].eq_ignore_ascii_case("udp") {
        return None;
    }
    let ip: IpAddr = fields[4].parse().ok()?;
    Some(SocketAddr::new(ip, fields[5].parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(recv_slots: usize) -> OfferParams {
        OfferParams {
            ufrag: "ufrg".into(),
            pwd: "p".repeat(24),
            fingerprint: "AB:CD".into(),
            audio_ssrc: Some(11),
            video_ssrc: Some(22),
            video_rids: Vec::new(),
            cname: "lean".into(),
            recv_slots,
            rtx: false,
            red: false,
            congestion_feedback: false,
        }
    }

    #[test]
    fn the_offer_has_the_protocol_layout() {
        let sdp = offer(&params(2));
        let media: Vec<&str> = sdp.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            media,
            [
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                "m=video 9 UDP/TLS/RTP/SAVPF 102",
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                "m=video 9 UDP/TLS/RTP/SAVPF 102",
                "m=video 9 UDP/TLS/RTP/SAVPF 102",
            ]
        );
        assert!(sdp.contains("a=group:BUNDLE 0 1 2 3 4 5\r\n"));
        let count = |needle: &str| sdp.matches(needle).count();
        assert_eq!(count("a=sendonly\r\n"), 2);
        assert_eq!(count("a=recvonly\r\n"), 4);
        assert_eq!(count("a=rtcp-mux\r\n"), 6);
        assert_eq!(count("a=setup:active\r\n"), 6);
        assert_eq!(count("a=ice-ufrag:ufrg\r\n"), 6);
        assert_eq!(count("a=fingerprint:sha-256 AB:CD\r\n"), 6);
        assert_eq!(count(&format!("a=extmap:1 {AUDIO_LEVEL_URI}\r\n")), 3);
        assert_eq!(count("packetization-mode=1;profile-level-id=42e01f"), 3);
        assert!(sdp.contains("a=ssrc:11 cname:lean\r\n"));
        assert!(sdp.contains("a=ssrc:22 cname:lean\r\n"));
        // every line ends in CRLF
        assert!(sdp.ends_with("\r\n") && !sdp.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn an_offer_without_media_to_publish_only_receives() {
        let mut p = params(1);
        (p.audio_ssrc, p.video_ssrc) = (None, None);
        let sdp = offer(&p);
        assert_eq!(sdp.matches("m=").count(), 2);
        assert!(!sdp.contains("sendonly") && !sdp.contains("a=ssrc"));
        assert!(sdp.contains("a=group:BUNDLE 0 1\r\n"));
    }

    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
        a=fingerprint:sha-256 12:34:AB\r\na=group:BUNDLE 0 1 2 3\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=setup:passive\r\na=mid:0\r\n\
        a=ice-ufrag:7abc\r\na=ice-pwd:secretsecret\r\n\
        a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=recvonly\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 18000 typ host\r\n\
        a=candidate:2 1 tcp 2130706431 127.0.0.1 18000 typ host tcptype passive\r\n\
        a=end-of-candidates\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\na=recvonly\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=sendonly\r\n\
        a=ssrc:1001 cname:k\r\na=ssrc:1001 msid:k audio-1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:3\r\na=sendonly\r\na=ssrc:2002 cname:k\r\n";

    #[test]
    fn the_answer_gives_credentials_candidates_and_slots() {
        let answer = Answer::parse(ANSWER).unwrap();
        assert_eq!(answer.ufrag, "7abc");
        assert_eq!(answer.pwd, "secretsecret");
        assert_eq!(answer.fingerprint, "12:34:AB");
        let node: SocketAddr = "127.0.0.1:18000".parse().unwrap();
        assert_eq!(answer.candidates, [node]);
        let audio = answer.publish_section(MediaKind::Audio).unwrap();
        assert_eq!((audio.mid.as_str(), audio.audio_level_ext), ("0", Some(1)));
        assert_eq!(audio.payload_types, [111]);
        let video = answer.publish_section(MediaKind::Video).unwrap();
        assert_eq!(video.mid, "1");
        let slots: Vec<_> = answer.slots().collect();
        assert_eq!(
            slots,
            [(1001, "2", MediaKind::Audio), (2002, "3", MediaKind::Video)]
        );
    }

    #[test]
    fn with_rtx_video_offers_repair_streams_and_the_answers_are_read() {
        let mut p = params(1);
        (p.rtx, p.video_rids) = (true, vec!["q".into(), "f".into()]);
        let sdp = offer(&p);
        let count = |needle: &str| sdp.matches(needle).count();
        assert_eq!(count("m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\n"), 2);
        assert_eq!(count("a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n"), 2);
        assert_eq!(count("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"), 2);
        assert_eq!(
            count("repaired-rtp-stream-id"),
            1,
            "for the simulcast layers"
        );

        // the repair SSRC is announced before or after its group: never a slot of its own
        let answer = ANSWER.replace(
            "a=ssrc:2002 cname:k\r\n",
            "a=ssrc:2003 cname:k\r\na=ssrc-group:FID 2002 2003\r\na=ssrc:2002 cname:k\r\n",
        );
        let answer = Answer::parse(&answer).unwrap();
        let slots: Vec<_> = answer.slots().map(|(ssrc, _, _)| ssrc).collect();
        assert_eq!(slots, [1001, 2002]);
        assert_eq!(answer.sections[3].repairs, [(2002, 2003)]);
    }

    #[test]
    fn with_congestion_feedback_every_line_offers_transport_cc() {
        let mut p = params(1);
        p.congestion_feedback = true;
        let sdp = offer(&p);
        let count = |needle: &str| sdp.matches(needle).count();
        assert_eq!(count(&format!("a=extmap:3 {TRANSPORT_CC_URI}\r\n")), 4);
        assert_eq!(count("a=rtcp-fb:111 transport-cc\r\n"), 2);
        assert_eq!(count("a=rtcp-fb:102 transport-cc\r\n"), 2);
        let answer = ANSWER.replace(
            "a=mid:1\r\n",
            &format!("a=mid:1\r\na=extmap:3 {TRANSPORT_CC_URI}\r\n"),
        );
        let answer = Answer::parse(&answer).unwrap();
        assert_eq!(answer.sections[1].transport_cc_ext, Some(3));
    }

    #[test]
    fn with_red_audio_offers_redundancy_after_opus() {
        let mut p = params(1);
        p.red = true;
        let sdp = offer(&p);
        let count = |needle: &str| sdp.matches(needle).count();
        assert_eq!(count("m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n"), 2);
        assert_eq!(count("a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n"), 2);
        assert_eq!(count("m=video 9 UDP/TLS/RTP/SAVPF 102\r\n"), 2);
    }

    #[test]
    fn unusable_answers_are_refused() {
        assert_eq!(
            Answer::parse("v=0\r\n"),
            Err(AnswerError::Missing("ice-ufrag"))
        );
        let no_udp = ANSWER.replace("a=candidate:1 1 udp", "a=candidate:1 1 xyz");
        assert_eq!(
            Answer::parse(&no_udp),
            Err(AnswerError::Missing("UDP candidate"))
        );
        let sha1 = ANSWER.replace("sha-256 12", "sha-1 12");
        assert!(Answer::parse(&sha1).is_err());
        // garbage in known attributes is skipped, not trusted
        let garbage = ANSWER.replace("a=ssrc:2002", "a=ssrc:x2002") + "a=candidate:\r\nm=\r\n";
        let answer = Answer::parse(&garbage).unwrap();
        assert_eq!(answer.slots().count(), 1);
    }
}
