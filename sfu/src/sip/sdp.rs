//! SDP for SIP legs (RFC 3264 offer/answer over RTP or SRTP): the offer kaskade sends when it
//! dials a room system, the answer it gives to an offer (a room system or phone dialling in, a
//! re-INVITE), and what the two sides agreed on for audio and video.
//!
//! SRTP is keyed by SDES ([`super::sdes`]) as the node's [`SrtpPolicy`] says: an `RTP/SAVP`
//! line, or a plain one carrying `a=crypto` (best-effort SRTP, as Polycom and FreeSWITCH
//! offer it), is answered with kaskade's own key; plain RTP is taken unless the policy is
//! mandatory.
//!
//! Room systems offer much that kaskade does not take (BFCP, H.224 far-end camera control, a
//! second video line for content, H.263, G.729): every m-line of an offer is answered, the
//! ones kaskade does not take with port 0, so the answer stays valid for the far end's parser.
//! Parsing is `sdp-types`, which reads such offers losslessly.
//!
//! Payload types follow RFC 3264 6.1: each side sends with the numbers the *receiver* wrote in
//! its description, so [`Agreement`] keeps both the number kaskade sends with and the one it
//! receives.

use super::sdes::Sdes;
pub use audio_codec::AudioCodec;
use sdp_types::{Connection, Fmtp, Media, Origin, RtpMap, Session, Time};
pub use srtp::{LocalKeys, OfferedProtection, SrtpPolicy};
use srtp::{answered_keys, answering_keys, offer_keys};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The payload type kaskade offers RFC 4733 telephone events (DTMF) with.
const TELEPHONE_EVENT: u8 = 101;
/// The payload types kaskade offers H.264 with: packetization mode 1, then mode 0.
const H264_MODE_1: u8 = 96;
const H264_MODE_0: u8 = 97;
/// The H.264 kaskade offers and sends: constrained baseline, level 3.1 (1280x720 at 30 fps).
const PROFILE_LEVEL_ID: &str = "42e01f";

/// Where kaskade receives a leg's media, and how it protects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address written in `c=` and `o=`.
    pub address: IpAddr,
    /// The audio RTP port (RTCP on the next one).
    pub audio_port: u16,
    /// The video RTP port; none for a phone (no video offered, a video line refused).
    pub video_port: Option<u16>,
    /// When SRTP is used.
    pub srtp: SrtpPolicy,
    /// kaskade's keys, for the lines it sends by SRTP.
    pub keys: LocalKeys,
}

/// Which way media flows on one line, from kaskade's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// kaskade sends (the far end receives).
    pub send: bool,
    /// kaskade receives.
    pub receive: bool,
}

impl Flow {
    /// The flow kaskade has when the far end's description says `remote` (sendrecv when no
    /// direction is written; a connection address of 0.0.0.0 is the old way to hold).
    fn from_remote(media: &Media, held_by_address: bool) -> Self {
        let has = |name: &str| media.has_attribute(name);
        let (remote_sends, remote_receives) = if has("inactive") {
            (false, false)
        } else if has("sendonly") {
            (true, false)
        } else if has("recvonly") {
            (false, true)
        } else {
            (true, true)
        };
        Flow {
            send: remote_receives && !held_by_address,
            receive: remote_sends,
        }
    }

    /// The direction attribute kaskade writes for this flow.
    fn attribute(self) -> &'static str {
        match (self.send, self.receive) {
            (true, true) => "sendrecv",
            (true, false) => "sendonly",
            (false, true) => "recvonly",
            (false, false) => "inactive",
        }
    }
}

/// RFC 4733 telephone events as agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The payload type kaskade sends them with.
    pub payload_type: u8,
    /// Their RTP clock rate (durations count it).
    pub clock_rate: u32,
}

/// The agreed audio of a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioLine {
    /// Where kaskade sends RTP.
    pub remote: SocketAddr,
    /// The codec both sides use.
    pub codec: AudioCodec,
    /// The payload type kaskade sends it with.
    pub send_payload_type: u8,
    /// The payload type kaskade receives it with.
    pub receive_payload_type: u8,
    /// RFC 4733 telephone events (DTMF), when the far end takes them.
    pub telephone_event: Option<TelephoneEvent>,
    /// Which way it flows.
    pub flow: Flow,
    /// Its SRTP keys, when it is sent by SRTP.
    pub srtp: Option<Sdes>,
}

/// The agreed video of a leg: H.264.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoLine {
    /// Where kaskade sends RTP.
    pub remote: SocketAddr,
    /// The payload type kaskade sends with.
    pub send_payload_type: u8,
    /// The payload type kaskade receives with.
    pub receive_payload_type: u8,
    /// 0: one NAL unit per packet; 1: STAP-A and FU-A allowed too.
    pub packetization_mode: u8,
    /// The far end's `profile-level-id` (what it decodes), hex, as written.
    pub profile_level_id: String,
    /// The far end's largest frame in macroblocks (`max-fs`), when it says.
    pub max_fs: Option<u32>,
    /// The far end's largest macroblock rate (`max-mbps`), when it says.
    pub max_mbps: Option<u32>,
    /// Which way it flows.
    pub flow: Flow,
    /// Its SRTP keys, when it is sent by SRTP.
    pub srtp: Option<Sdes>,
}

#[cfg(test)]
impl VideoLine {
    /// A line sending and receiving H.264 in mode 1 at `profile_level_id`, payload type 96.
    pub fn example(profile_level_id: &str) -> Self {
        Self {
            remote: SocketAddr::from(([192, 0, 2, 1], 5_004)),
            send_payload_type: 96,
            receive_payload_type: 96,
            packetization_mode: 1,
            profile_level_id: profile_level_id.into(),
            max_fs: None,
            max_mbps: None,
            flow: Flow {
                send: true,
                receive: true,
            },
            srtp: None,
        }
    }
}

/// What both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The audio, unless it was refused.
    pub audio: Option<AudioLine>,
    /// The video, unless it was refused or not offered (a phone).
    pub video: Option<VideoLine>,
}

/// Why a description could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// Not SDP kaskade can read.
    Malformed(String),
    /// Nothing in common: the far end's codecs are named so the person dialling knows why.
    NoCommonCodec(String),
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::Malformed(why) => write!(f, "unreadable SDP: {why}"),
            SdpError::NoCommonCodec(offered) => write!(f, "no common codec (they have {offered})"),
        }
    }
}

impl std::error::Error for SdpError {}

/// The offer kaskade sends when it dials: Opus, G.722, G.711 and telephone events; H.264 in
/// packetization modes 1 and 0 (not to a phone); keys for SRTP as `protection` says. `version`
/// is the `o=` session version (raise it for each new offer in the same call).
pub fn offer(
    local: &LocalMedia,
    session_id: u64,
    version: u64,
    protection: OfferedProtection,
) -> String {
    let proto = match protection {
        OfferedProtection::Secure => "RTP/SAVP",
        OfferedProtection::Plain | OfferedProtection::BestEffort => "RTP/AVP",
    };
    let mut session = session_with(local, session_id, version);
    let mut audio = media_line("audio", proto, local.audio_port, &audio_formats());
    for codec in AudioCodec::ALL {
        add_audio_codec(&mut audio, codec, codec.offered_payload_type());
    }
    add_telephone_event(&mut audio, TELEPHONE_EVENT, 8_000);
    audio.add_attribute_with_value("ptime", "20");
    audio.add_attribute_from_str("sendrecv");
    offer_keys(&mut audio, protection, local.keys.audio);
    session.medias.push(audio);

    if let Some(video_port) = local.video_port {
        let formats = format!("{H264_MODE_1} {H264_MODE_0}");
        let mut video = media_line("video", proto, video_port, &formats);
        add_h264(&mut video, H264_MODE_1, 1, PROFILE_LEVEL_ID);
        add_h264(&mut video, H264_MODE_0, 0, PROFILE_LEVEL_ID);
        video.add_attribute_from_str("sendrecv");
        offer_keys(&mut video, protection, local.keys.video);
        session.medias.push(video);
    }
    write(&session)
}

/// Reads the far end's answer to [`offer`] (made for `local`, protected as `offered`).
pub fn read_answer(
    answer: &str,
    local: &LocalMedia,
    offered: OfferedProtection,
) -> Result<Agreement, SdpError> {
    let session = parse(answer)?;
    let mut agreement = Agreement {
        audio: None,
        video: None,
    };
    for media in &session.medias {
        if media.port == 0 {
            continue;
        }
        let Some(srtp) = answered_keys(media, local, offered) else {
            continue;
        };
        let remote = remote_address(&session, media)?;
        match media.media.as_str() {
            "audio" if agreement.audio.is_none() => {
                agreement.audio =
                    pick_audio(media, remote, |codec, _| Some(codec.offered_payload_type()))
                        .map(|line| AudioLine { srtp, ..line });
            }
            "video" if agreement.video.is_none() => {
                agreement.video = pick_video(media, remote, |mode| {
                    Some(if mode == 1 { H264_MODE_1 } else { H264_MODE_0 })
                })
                .map(|line| VideoLine { srtp, ..line });
            }
            _ => {}
        }
    }
    if agreement.audio.is_none() && agreement.video.is_none() {
        return Err(SdpError::NoCommonCodec(codecs_of(&session)));
    }
    Ok(agreement)
}

/// Answers an offer (a call dialling in, or a re-INVITE): every m-line answered in its place,
/// the first audio and the first H.264 video kaskade can take (under its SRTP policy) accepted,
/// everything else refused with port 0. Returns the answer and what it agrees to.
pub fn answer(
    offer: &str,
    local: &LocalMedia,
    session_id: u64,
    version: u64,
) -> Result<(String, Agreement), SdpError> {
    let offered = parse(offer)?;
    let mut session = session_with(local, session_id, version);
    let mut agreement = Agreement {
        audio: None,
        video: None,
    };
    for media in &offered.medias {
        let keys = (media.port != 0)
            .then(|| answering_keys(media, local))
            .flatten();
        let accepted = match keys {
            None => None,
            Some((crypto, srtp)) => {
                let remote = remote_address(&offered, media)?;
                let mut answered = match media.media.as_str() {
                    "audio" if agreement.audio.is_none() => {
                        pick_audio(media, remote, |_, theirs| Some(theirs)).map(|line| {
                            let answered = answer_audio(&line, &media.proto, local.audio_port);
                            agreement.audio = Some(AudioLine { srtp, ..line });
                            answered
                        })
                    }
                    "video" if agreement.video.is_none() => local.video_port.and_then(|port| {
                        pick_video(media, remote, |_| None).map(|line| {
                            let answered = answer_video(&line, &media.proto, port);
                            agreement.video = Some(VideoLine { srtp, ..line });
                            answered
                        })
                    }),
                    _ => None,
                };
                if let (Some(answered), Some(crypto)) = (answered.as_mut(), crypto) {
                    answered.add_attribute_with_value("crypto", crypto.to_string());
                }
                answered
            }
        };
        session
            .medias
            .push(accepted.unwrap_or_else(|| refused(media)));
    }
    if agreement.audio.is_none() && agreement.video.is_none() {
        return Err(SdpError::NoCommonCodec(codecs_of(&offered)));
    }
    Ok((write(&session), agreement))
}

fn parse(text: &str) -> Result<Session, SdpError> {
    Session::parse(text.as_bytes()).map_err(|e| SdpError::Malformed(e.to_string()))
}

fn write(session: &Session) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = session.write(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn session_with(local: &LocalMedia, session_id: u64, version: u64) -> Session {
    let mut origin = Origin::with_ip_addr(session_id, version, local.address);
    origin.set_username("kaskade");
    let mut session = Session::new(origin, "kaskade");
    session.connection = Some(Connection::from_ip_addr(local.address));
    session.times.push(Time::new(0, 0));
    session
}

fn media_line(kind: &str, proto: &str, port: u16, formats: &str) -> Media {
    Media {
        media: kind.to_string(),
        port,
        num_ports: None,
        proto: proto.to_string(),
        fmt: formats.to_string(),
        media_title: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    }
}

fn audio_formats() -> String {
    let mut formats: Vec<String> = AudioCodec::ALL
        .iter()
        .map(|c| c.offered_payload_type().to_string())
        .collect();
    formats.push(TELEPHONE_EVENT.to_string());
    formats.join(" ")
}

fn add_audio_codec(media: &mut Media, codec: AudioCodec, payload_type: u8) {
    let rtpmap = if codec == AudioCodec::Opus {
        RtpMap::with_encoding_params(payload_type, "opus", 48_000, 2)
    } else {
        RtpMap::new(payload_type, codec.encoding_name(), codec.clock_rate())
    };
    media.add_attribute(rtpmap);
    if codec == AudioCodec::Opus {
        media.add_attribute_with_value("fmtp", format!("{payload_type} useinbandfec=1"));
    }
}

fn add_telephone_event(media: &mut Media, payload_type: u8, clock_rate: u32) {
    media.add_attribute(RtpMap::new(payload_type, "telephone-event", clock_rate));
    media.add_attribute_with_value("fmtp", format!("{payload_type} 0-15"));
}

fn add_h264(media: &mut Media, payload_type: u8, mode: u8, profile_level_id: &str) {
    media.add_attribute(RtpMap::new(payload_type, "H264", 90_000));
    media.add_attribute_with_value(
        "fmtp",
        format!("{payload_type} profile-level-id={profile_level_id};packetization-mode={mode}"),
    );
    for feedback in ["nack pli", "ccm fir"] {
        media.add_attribute_with_value("rtcp-fb", format!("{payload_type} {feedback}"));
    }
}

fn remote_address(session: &Session, media: &Media) -> Result<SocketAddr, SdpError> {
    let connection = media
        .connections
        .first()
        .or(session.connection.as_ref())
        .ok_or_else(|| SdpError::Malformed(format!("no c= line for {}", media.media)))?;
    let address = connection
        .try_address()
        .map_err(|e| SdpError::Malformed(format!("connection address: {e}")))?;
    Ok(SocketAddr::new(address.ip, media.port))
}

/// Whether the far end holds by the old convention (`c=IN IP4 0.0.0.0`).
fn held_by_address(remote: SocketAddr) -> bool {
    remote.ip().is_unspecified()
}

/// The payload types of an m-line, in its order of preference.
fn formats(media: &Media) -> impl Iterator<Item = u8> + '_ {
    media.fmt.split_whitespace().filter_map(|f| f.parse().ok())
}

fn rtpmap_of(media: &Media, payload_type: u8) -> Option<RtpMap> {
    media
        .attributes_typed::<RtpMap>()
        .filter_map(Result::ok)
        .find(|r| r.payload_type == payload_type)
}

/// The format parameters of a payload type, names lower-cased and trimmed.
fn fmtp_of(media: &Media, payload_type: u8) -> Vec<(String, String)> {
    media
        .attributes_typed::<Fmtp>()
        .filter_map(Result::ok)
        .filter(|f| f.fmt == payload_type)
        .flat_map(|f| f.format_specific_params)
        .map(|p| {
            (
                p.param.trim().to_ascii_lowercase(),
                p.val.unwrap_or_default().trim().to_string(),
            )
        })
        .collect()
}

fn fmtp_value<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The first audio codec of the far end's m-line that kaskade takes (in the far end's order,
/// which is its preference), and its telephone events. `receive_payload_type` gives the number
/// kaskade receives a codec with: its own offered one when this is an answer to kaskade's
/// offer, the far end's when kaskade answers.
fn pick_audio(
    media: &Media,
    remote: SocketAddr,
    receive_payload_type: impl Fn(AudioCodec, u8) -> Option<u8>,
) -> Option<AudioLine> {
    let (codec, theirs) = formats(media).find_map(|pt| {
        let codec = match rtpmap_of(media, pt) {
            Some(rtpmap) => AudioCodec::of_rtpmap(&rtpmap),
            None => AudioCodec::of_static(pt),
        }?;
        Some((codec, pt))
    })?;
    let telephone_event = formats(media).find_map(|pt| {
        let rtpmap = rtpmap_of(media, pt)?;
        rtpmap
            .encoding_name
            .eq_ignore_ascii_case("telephone-event")
            .then_some(TelephoneEvent {
                payload_type: pt,
                clock_rate: rtpmap.clock_rate,
            })
    });
    Some(AudioLine {
        remote,
        codec,
        send_payload_type: theirs,
        receive_payload_type: receive_payload_type(codec, theirs)?,
        telephone_event,
        flow: Flow::from_remote(media, held_by_address(remote)),
        srtp: None,
    })
}

/// The first H.264 format of the far end's m-line (in its order), with its packetization
/// mode (0 when not written, RFC 6184) and decoding limits. `our_payload_type` gives the
/// number kaskade receives a mode with when answering kaskade's own offer; when kaskade
/// answers, it receives with the far end's number.
fn pick_video(
    media: &Media,
    remote: SocketAddr,
    our_payload_type: impl Fn(u8) -> Option<u8>,
) -> Option<VideoLine> {
    formats(media).find_map(|pt| {
        let rtpmap = rtpmap_of(media, pt)?;
        if !rtpmap.encoding_name.eq_ignore_ascii_case("H264") || rtpmap.clock_rate != 90_000 {
            return None;
        }
        let params = fmtp_of(media, pt);
        let mode = match fmtp_value(&params, "packetization-mode") {
            None | Some("0") => 0,
            Some("1") => 1,
            Some(_) => return None,
        };
        let number = |name| fmtp_value(&params, name).and_then(|v| v.parse().ok());
        Some(VideoLine {
            remote,
            send_payload_type: pt,
            receive_payload_type: our_payload_type(mode).unwrap_or(pt),
            packetization_mode: mode,
            profile_level_id: fmtp_value(&params, "profile-level-id")
                .unwrap_or("42000a")
                .to_string(),
            max_fs: number("max-fs"),
            max_mbps: number("max-mbps"),
            flow: Flow::from_remote(media, held_by_address(remote)),
            srtp: None,
        })
    })
}

fn answer_audio(line: &AudioLine, proto: &str, port: u16) -> Media {
    let mut formats = vec![line.send_payload_type.to_string()];
    formats.extend(line.telephone_event.map(|e| e.payload_type.to_string()));
    let mut media = media_line("audio", proto, port, &formats.join(" "));
    add_audio_codec(&mut media, line.codec, line.send_payload_type);
    if let Some(events) = line.telephone_event {
        add_telephone_event(&mut media, events.payload_type, events.clock_rate);
    }
    media.add_attribute_with_value("ptime", "20");
    media.add_attribute_from_str(line.flow.attribute());
    media
}

fn answer_video(line: &VideoLine, proto: &str, port: u16) -> Media {
    let payload_type = line.send_payload_type.to_string();
    let mut media = media_line("video", proto, port, &payload_type);
    add_h264(
        &mut media,
        line.send_payload_type,
        line.packetization_mode,
        &answered_profile(&line.profile_level_id),
    );
    media.add_attribute_from_str(line.flow.attribute());
    media
}

/// The `profile-level-id` kaskade answers with: constrained baseline (what it encodes), at the
/// lower of the far end's level and kaskade's own (RFC 6184 8.2.2: an answer's level may be
/// lower, never higher).
fn answered_profile(theirs: &str) -> String {
    let ours = u8::from_str_radix(&PROFILE_LEVEL_ID[4..6], 16).unwrap_or(0x1f);
    let level = theirs
        .get(4..6)
        .and_then(|l| u8::from_str_radix(l, 16).ok())
        .map_or(ours, |l| l.min(ours));
    format!("{}{level:02x}", &PROFILE_LEVEL_ID[..4])
}

/// An m-line refused: port 0, the same media and protocol, one of its formats (RFC 3264 6).
fn refused(offered: &Media) -> Media {
    let first = offered.fmt.split_whitespace().next().unwrap_or("0");
    media_line(&offered.media, &offered.proto, 0, first)
}

/// The codecs of a description, for telling why nothing matched ("audio PCMU G729, video
/// H263").
fn codecs_of(session: &Session) -> String {
    let lines: Vec<String> = session
        .medias
        .iter()
        .filter(|m| m.port != 0)
        .map(|m| {
            let names: Vec<String> = formats(m)
                .map(|pt| {
                    rtpmap_of(m, pt).map_or_else(|| pt.to_string(), |r| r.encoding_name.clone())
                })
                .collect();
            format!("{} {} {}", m.media, m.proto, names.join(" "))
        })
        .collect();
    if lines.is_empty() {
        "no media".into()
    } else {
        lines.join(", ")
    }
}

mod audio_codec;
mod srtp;
#[cfg(test)]
mod tests;
