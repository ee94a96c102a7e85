//! One RTSP session with a camera (retina): DESCRIBE, SETUP of its H.264 video and its G.711 or
//! AAC audio when it has some, PLAY, then frames turned into the RTP kaskade publishes; Opus
//! audio plays in a second session beside it (`opus`). Every way it can fail is a
//! [`CameraError`] that says what the person who added the camera can do.

use super::opus::OpusSession;
use super::video::{self, VideoPacketizer};
use crate::media::forwarder::MediaKind;
use crate::media::transport::Publication;
use crate::signaling::protocol::{CameraRequest, RtspTransport, display_name};
use crate::transcode::{self, AudioTranscoder, SourceAudio};
use bytes::BytesMut;
use futures_util::StreamExt;
use retina::client::{
    Credentials, Demuxed, Described, PlayOptions, Session, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use std::time::Duration;
use url::Url;

/// Time DESCRIBE, SETUP and PLAY together may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time without a frame after which a playing camera counts as dropped.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest URL accepted.
const MAX_URL: usize = 2_048;

/// Why a camera could not be added or stopped playing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CameraError {
    /// The URL is not one kaskade can open.
    #[error("{0}")]
    BadUrl(String),
    /// The camera's server could not be reached or did not answer in time.
    #[error("cannot reach the camera: {0}")]
    Unreachable(String),
    /// The camera refused the credentials (or asked for some and none were given).
    #[error("the camera refused the credentials: check the user name and password")]
    CredentialsRefused,
    /// The camera has no stream at that path.
    #[error("the camera has no stream at this URL (404): check the path")]
    NotFound,
    /// The camera sends nothing kaskade takes.
    #[error("{0}")]
    Unsupported(String),
    /// The camera answered with an error.
    #[error("the camera answered: {0}")]
    Refused(String),
    /// A playing stream ended or went silent.
    #[error("the camera's stream stopped: {0}")]
    Dropped(String),
}

impl CameraError {
    /// Whether trying again later can help (a camera that is down or restarting), as opposed
    /// to a request that will fail the same way every time.
    pub fn is_transient(&self) -> bool {
        matches!(self, CameraError::Unreachable(_) | CameraError::Dropped(_))
    }

    pub(super) fn from_retina(e: retina::Error) -> Self {
        match e.status_code() {
            Some(401 | 403) => CameraError::CredentialsRefused,
            Some(404) => CameraError::NotFound,
            Some(status) => CameraError::Refused(format!("status {status}")),
            None => CameraError::Unreachable(first_line(&e.to_string())),
        }
    }
}

pub(super) fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// A camera to connect to, checked.
#[derive(Debug, Clone)]
pub struct CameraSpec {
    /// The URL without credentials.
    pub url: Url,
    /// The name its tile shows.
    pub name: String,
    credentials: Option<Credentials>,
    transport: RtspTransport,
}

impl CameraSpec {
    /// Checks a moderator's request: an `rtsp://` URL with a host; credentials from the URL or
    /// the request's fields (the fields win).
    pub fn parse(request: &CameraRequest) -> Result<Self, CameraError> {
        if request.url.len() > MAX_URL {
            return Err(CameraError::BadUrl("the camera URL is too long".into()));
        }
        let mut url = Url::parse(request.url.trim()).map_err(|e| {
            CameraError::BadUrl(format!(
                "not a camera URL ({e}): use rtsp://host[:port]/path"
            ))
        })?;
        if url.scheme() != "rtsp" {
            return Err(CameraError::BadUrl(format!(
                "{}:// is not supported: use an rtsp:// URL",
                url.scheme()
            )));
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()).map(str::to_owned) else {
            return Err(CameraError::BadUrl("the camera URL has no host".into()));
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let username = request
            .username
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| Some(decode(url.username())).filter(|u| !u.is_empty()));
        let password = request
            .password
            .clone()
            .or_else(|| url.password().map(decode))
            .unwrap_or_default();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let name = if request.name.trim().is_empty() {
            display_name(&host)
        } else {
            display_name(&request.name)
        };
        Ok(Self {
            url,
            name,
            credentials: username.map(|username| Credentials { username, password }),
            transport: request.transport,
        })
    }
}

impl CameraSpec {
    /// A new RTSP session with the camera, described.
    pub(super) async fn describe(&self) -> Result<Session<Described>, CameraError> {
        let options = SessionOptions::default()
            .creds(self.credentials.clone())
            .user_agent("kaskade".into());
        Session::describe(self.url.clone(), options)
            .await
            .map_err(CameraError::from_retina)
    }

    /// How a stream is set up: over the RTSP connection (TCP) or over UDP, as asked.
    pub(super) fn setup_options(&self) -> SetupOptions {
        SetupOptions::default().transport(match self.transport {
            RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
        })
    }
}

/// The audio a camera publishes.
enum CameraSound {
    /// G.711 or AAC of the main session's stream `index`, transcoded.
    Transcoded(usize, Box<AudioTranscoder>),
    /// Opus, from a session of its own.
    Opus(OpusSession),
}

/// A playing camera: its frames as RTP packets.
pub struct CameraStream {
    demuxed: Demuxed,
    video_stream: usize,
    video: VideoPacketizer,
    /// Its audio, if it sends some kaskade takes.
    audio: Option<CameraSound>,
    /// Random offset of this session's RTP timestamps.
    offset: u32,
}

impl CameraStream {
    /// Connects, sets up the streams kaskade takes and starts playing. `ssrc` and `seq` are
    /// the random SSRC and first sequence number of this session's packets (audio gets
    /// `ssrc + 1`).
    pub async fn open(spec: &CameraSpec, ssrc: u32, seq: u16) -> Result<Self, CameraError> {
        tokio::time::timeout(OPEN_TIMEOUT, Self::open_now(spec, ssrc, seq))
            .await
            .unwrap_or_else(|_| {
                Err(CameraError::Unreachable(format!(
                    "no answer within {} s",
                    OPEN_TIMEOUT.as_secs()
                )))
            })
    }

    async fn open_now(spec: &CameraSpec, ssrc: u32, seq: u16) -> Result<Self, CameraError> {
        let mut session = spec.describe().await?;
        let streams = session.streams();
        let video_stream = streams
            .iter()
            .position(|s| s.media() == "video" && s.encoding_name() == "h264")
            .ok_or_else(|| match streams.iter().find(|s| s.media() == "video") {
                Some(other) => CameraError::Unsupported(format!(
                    "the camera sends {} video; kaskade takes H.264: set the camera's encoder \
                     to H.264",
                    other.encoding_name().to_uppercase()
                )),
                None => CameraError::Unsupported("the camera offers no video stream".into()),
            })?;
        let audio = audio_stream(streams);
        session
            .setup(
                video_stream,
                spec.setup_options().frame_format(FrameFormat::SIMPLE),
            )
            .await
            .map_err(CameraError::from_retina)?;
        let audio_ssrc = ssrc.wrapping_add(1);
        let transcoded = match &audio {
            Some(AudioStream::Transcoded(index, codec)) => {
                session
                    .setup(*index, spec.setup_options())
                    .await
                    .map_err(CameraError::from_retina)?;
                let transcoder = AudioTranscoder::new(codec, audio_ssrc, seq)
                    .map_err(CameraError::Unsupported)?;
                Some(CameraSound::Transcoded(*index, Box::new(transcoder)))
            }
            _ => None,
        };
        let opus = match audio {
            Some(AudioStream::Opus(index)) => Some(OpusSession::setup(spec, index).await?),
            _ => None,
        };
        let playing = session
            .play(PlayOptions::default())
            .await
            .map_err(CameraError::from_retina)?;
        let demuxed = playing
            .demuxed()
            .map_err(|e| CameraError::Unsupported(first_line(&e.to_string())))?;
        let audio = match opus {
            Some(opus) => Some(CameraSound::Opus(
                OpusSession::play(opus, audio_ssrc, seq).await?,
            )),
            None => transcoded,
        };
        Ok(Self {
            demuxed,
            video_stream,
            video: VideoPacketizer::new(ssrc, seq),
            audio,
            offset: ssrc.rotate_left(16),
        })
    }

    /// What this camera publishes (its payload types).
    pub fn publication(&self) -> Publication {
        let mut payload_kinds = vec![(video::PAYLOAD_TYPE, MediaKind::Video)];
        if self.audio.is_some() {
            payload_kinds.push((transcode::PAYLOAD_TYPE, MediaKind::Audio));
        }
        Publication {
            payload_kinds,
            audio_level_ext: Some(transcode::AUDIO_LEVEL_EXT),
            cache_gop: true,
        }
    }

    /// Waits for the camera's next frame (or Opus packet) and appends its RTP packets to
    /// `out` (none for a frame that completes no packet yet).
    pub async fn next(&mut self, out: &mut Vec<BytesMut>) -> Result<(), CameraError> {
        // the demuxer's next item, or none when an Opus packet of the audio session came first
        let next = async {
            match &mut self.audio {
                Some(CameraSound::Opus(opus)) => tokio::select! {
                    item = self.demuxed.next() => Ok(Some(item)),
                    sent = opus.next(out) => sent.map(|()| None),
                },
                _ => Ok(Some(self.demuxed.next().await)),
            }
        };
        let Some(item) = tokio::time::timeout(SILENCE_TIMEOUT, next)
            .await
            .map_err(|_| {
                CameraError::Dropped(format!("nothing for {} s", SILENCE_TIMEOUT.as_secs()))
            })??
        else {
            return Ok(());
        };
        match item {
            None => Err(CameraError::Dropped("the camera closed the session".into())),
            Some(Err(e)) => Err(CameraError::Dropped(first_line(&e.to_string()))),
            Some(Ok(CodecItem::VideoFrame(frame))) if frame.stream_id() == self.video_stream => {
                let timestamp = (frame.timestamp().timestamp() as u32).wrapping_add(self.offset);
                self.video.packetize(timestamp, frame.data(), out);
                Ok(())
            }
            Some(Ok(CodecItem::AudioFrame(frame))) => {
                if let Some(CameraSound::Transcoded(index, transcoder)) = &mut self.audio
                    && frame.stream_id() == *index
                {
                    transcoder.push(frame.timestamp().timestamp(), frame.data(), out);
                }
                Ok(())
            }
            Some(Ok(_)) => Ok(()),
        }
    }
}

/// An audio stream of a camera that kaskade takes, by its index among the camera's streams.
enum AudioStream {
    /// Opus, published as it is.
    Opus(usize),
    /// G.711 or AAC, transcoded to Opus.
    Transcoded(usize, SourceAudio),
}

/// The audio stream to take: Opus first (no transcoding), else the first one kaskade
/// transcodes.
fn audio_stream(streams: &[retina::client::Stream]) -> Option<AudioStream> {
    let audio = || {
        streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.media() == "audio")
    };
    let opus = audio().find(|(_, s)| s.encoding_name() == "opus");
    opus.map(|(index, _)| AudioStream::Opus(index)).or_else(|| {
        audio().find_map(|(index, s)| {
            let extra_data = match s.parameters() {
                Some(ParametersRef::Audio(params)) => Some(params.extra_data()),
                _ => None,
            };
            SourceAudio::of(s.encoding_name(), s.clock_rate_hz(), extra_data)
                .map(|codec| AudioStream::Transcoded(index, codec))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str) -> CameraRequest {
        CameraRequest {
            url: url.into(),
            name: String::new(),
            username: None,
            password: None,
            transport: RtspTransport::Tcp,
        }
    }

    #[test]
    fn urls_are_checked_and_credentials_taken_out_of_them() {
        let spec =
            CameraSpec::parse(&request("rtsp://admin:s%40cret@cam.local:8554/live")).unwrap();
        assert_eq!(spec.url.as_str(), "rtsp://cam.local:8554/live");
        assert_eq!(spec.name, "cam.local");
        let creds = spec.credentials.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("admin", "s@cret")
        );

        let mut with_fields = request("rtsp://admin:old@cam/live");
        with_fields.username = Some("ops".into());
        with_fields.password = Some("new".into());
        with_fields.name = "  Board room  ".into();
        let spec = CameraSpec::parse(&with_fields).unwrap();
        let creds = spec.credentials.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("ops", "new")
        );
        assert_eq!(spec.name, "Board room");
        assert!(
            CameraSpec::parse(&request("rtsp://cam/live"))
                .unwrap()
                .credentials
                .is_none()
        );

        for (url, says) in [
            ("http://cam/live", "http:// is not supported"),
            ("cam/live", "not a camera URL"),
            ("rtsp:///live", "no host"),
            ("", "not a camera URL"),
        ] {
            let e = CameraSpec::parse(&request(url)).unwrap_err();
            assert!(matches!(e, CameraError::BadUrl(_)), "{url}");
            assert!(e.to_string().contains(says), "{url}: {e}");
        }
        let long = format!("rtsp://cam/{}", "x".repeat(MAX_URL));
        assert!(CameraSpec::parse(&request(&long)).is_err());
    }

    #[test]
    fn only_an_unreachable_or_dropped_camera_is_worth_trying_again() {
        assert!(CameraError::Unreachable("refused".into()).is_transient());
        assert!(CameraError::Dropped("eof".into()).is_transient());
        assert!(!CameraError::CredentialsRefused.is_transient());
        assert!(!CameraError::NotFound.is_transient());
        assert!(!CameraError::Unsupported("mjpeg".into()).is_transient());
    }

    #[tokio::test]
    async fn a_port_where_nothing_listens_is_unreachable_with_the_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let spec = CameraSpec::parse(&request(&format!("rtsp://127.0.0.1:{port}/cam"))).unwrap();
        let Err(e) = CameraStream::open(&spec, 1, 1).await else {
            panic!("nothing listens there");
        };
        assert!(matches!(e, CameraError::Unreachable(_)), "{e}");
        assert!(e.is_transient());
    }
}
