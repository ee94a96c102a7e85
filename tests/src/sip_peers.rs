//! Real SIP peers for the gateway's tests: baresip (Debian's baresip-core and baresip-ffmpeg) as
//! an auto-answering room system that sends real H.264 and audio, and sipp running the
//! scenarios of `tests/sip/` (digest authentication, busy, ringing then CANCEL, a far end that
//! holds with a re-INVITE or hangs up, an answer with only PCMU).

use crate::{Scratch, free_port};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The phone number that rings a [`Baresip`] too (a phone behind a trunk, for call-me).
pub const PHONE_NUMBER: &str = "+4722000000";

/// An auto-answering baresip on loopback: a sine tone as its microphone, a synthetic picture
/// as its camera (H.264 by libx264, 320x240 at 15 fps), killed on drop. It answers as
/// `sip:mcu@` (a room system), as `sip:`[`PHONE_NUMBER`]`@` (a phone), and as room systems
/// that encrypt: `sip:srtp@` takes SRTP only (`RTP/SAVP` with SDES keys), `sip:srtp-optional@`
/// takes SRTP on plain `RTP/AVP` lines that offer keys (best-effort SRTP) and plain RTP too.
/// It listens for SIP over TLS too (on its SIP port plus one), with a self-signed certificate
/// for 127.0.0.1 ([`Baresip::certificate`]).
pub struct Baresip {
    child: Child,
    /// Every line it printed so far.
    said: Arc<Mutex<Vec<String>>>,
    /// Its SIP port.
    pub port: u16,
    config: Scratch,
}

/// A self-signed certificate for 127.0.0.1 and its key, written as PEM files in `scratch`
/// (`NAME.crt`, `NAME.key`): their paths.
pub fn self_signed(scratch: &Scratch, name: &str) -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("a self-signed certificate");
    let (certificate, key) = (
        scratch.path(&format!("{name}.crt")),
        scratch.path(&format!("{name}.key")),
    );
    std::fs::write(&certificate, made.cert.pem()).expect("the certificate written");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("the key written");
    (certificate, key)
}

/// A free loopback port whose next port is free too (baresip takes TLS on the next one).
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// The audio codecs a [`Baresip`] offers and takes.
#[derive(Debug, Clone, Copy)]
pub enum BaresipAudio {
    /// Opus (and G.711 after it).
    Opus,
    /// G.711 µ-law and A-law only, as an older room system.
    G711,
    /// G.722 only (wideband), as many room systems prefer.
    G722,
}

impl Baresip {
    /// Starts one with `baresip` (`Command::new("baresip")`, possibly inside a network
    /// namespace) and waits until it is ready; panics if it cannot start.
    pub fn start(mut baresip: Command, audio: BaresipAudio) -> Self {
        let port = free_port_pair();
        let config = Scratch::new("baresip");
        let (certificate, key) = self_signed(&config, "baresip");
        let identity = config.path("identity.pem");
        let pem = [certificate, key].map(|path| std::fs::read_to_string(path).expect("PEM"));
        std::fs::write(&identity, pem.concat()).expect("baresip's identity");
        let audio_modules = match audio {
            BaresipAudio::Opus => "module opus.so\nmodule g711.so\n",
            BaresipAudio::G711 => "module g711.so\n",
            BaresipAudio::G722 => "module g722.so\n",
        };
        let settings = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{port}\nsip_certificate {identity}\n\
             audio_player aubridge,nil\naudio_source ausine,440\naudio_alert aubridge,nil\n\
             ausrc_srate 48000\nauplay_srate 48000\nausrc_channels 2\nauplay_channels 2\n\
             video_source fakevideo,nil\nvideo_display fakevideo,nil\nvideo_size 320x240\n\
             video_bitrate 400000\nvideo_fps 15\nmodule_path /usr/lib/baresip/modules\n\
             {audio_modules}module avcodec.so\nmodule ausine.so\nmodule aubridge.so\n\
             module fakevideo.so\nmodule srtp.so\nmodule account.so\nmodule menu.so\n\
             avcodec_h264enc libx264\n"
        );
        std::fs::write(config.path("config"), settings).expect("baresip config");
        std::fs::write(
            config.path("accounts"),
            format!(
                "<sip:mcu@127.0.0.1:{port}>;regint=0;answermode=auto\n\
                 <sip:{PHONE_NUMBER}@127.0.0.1:{port}>;regint=0;answermode=auto\n\
                 <sip:srtp@127.0.0.1:{port}>;regint=0;answermode=auto;mediaenc=srtp-mand\n\
                 <sip:srtp-optional@127.0.0.1:{port}>;regint=0;answermode=auto;mediaenc=srtp\n"
            ),
        )
        .expect("baresip accounts");
        let mut child = baresip
            .args(["-f", &config.path("")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("baresip runs (Debian package baresip-core)");
        let stdout = child.stdout.take().expect("baresip stdout");
        let (ready_tx, ready) = mpsc::channel();
        let said = Arc::new(Mutex::new(Vec::new()));
        let lines = said.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("baresip: {line}");
                if line.contains("baresip is ready") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        ready
            .recv_timeout(Duration::from_secs(20))
            .expect("baresip is ready");
        Self {
            child,
            said,
            port,
            config,
        }
    }

    /// Waits up to `timeout` for a line of its output that contains `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let said = self.said.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(line) = said.iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            drop(said);
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits up to `timeout` until `count` lines of its output contain `needle`.
    pub fn wait_for_lines(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let said = self.said.lock().unwrap_or_else(|p| p.into_inner());
            if said.iter().filter(|l| l.contains(needle)).count() >= count {
                return true;
            }
            drop(said);
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its SIP address.
    pub fn uri(&self) -> String {
        self.uri_of("mcu")
    }

    /// The `sips:` address of its account `user`: over TLS, on its TLS port.
    pub fn tls_uri_of(&self, user: &str) -> String {
        format!("sips:{user}@127.0.0.1:{}", self.port + 1)
    }

    /// Its TLS certificate (a PEM file): the root a node must trust to reach it over TLS.
    pub fn certificate(&self) -> String {
        self.config.path("baresip.crt")
    }

    /// The SIP address of its account `user` (`mcu`, `srtp`, `srtp-optional`).
    pub fn uri_of(&self, user: &str) -> String {
        format!("sip:{user}@127.0.0.1:{}", self.port)
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sipp running one scenario of `tests/sip/`, for one call: as the called side
/// ([`Sipp::serve`]) or as a caller ([`Sipp::call`]).
pub struct Sipp {
    child: Child,
    /// Its SIP port.
    pub port: u16,
}

impl Sipp {
    /// Starts `sipp` with `tests/sip/{scenario}.xml` on a free loopback port.
    pub fn serve(scenario: &str) -> Self {
        Self::serve_with(scenario, &[])
    }

    /// [`Sipp::serve`] with scenario keywords (`-key NAME VALUE`, `[NAME]` in the scenario).
    pub fn serve_with(scenario: &str, keys: &[(&str, &str)]) -> Self {
        Self::start(scenario, keys, &[])
    }

    /// Starts `sipp` calling `to` (`ADDR:PORT`) with `tests/sip/{scenario}.xml` and scenario
    /// keywords `keys`.
    pub fn call(scenario: &str, to: &str, keys: &[(&str, &str)]) -> Self {
        Self::start(scenario, keys, &[to, "-s", "kaskade"])
    }

    fn start(scenario: &str, keys: &[(&str, &str)], more: &[&str]) -> Self {
        let port = free_port();
        let file = format!("{}/sip/{scenario}.xml", env!("CARGO_MANIFEST_DIR"));
        let mut command = Command::new("sipp");
        for (name, value) in keys {
            command.args(["-key", name, value]);
        }
        let child = command
            .args(["-sf", &file, "-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", "1", "-timeout", "60s", "-timeout_error", "-nostdin"])
            .args(more)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sipp runs (Debian package sip-tester)");
        // sipp binds before it reads the scenario's first message; give it that moment
        std::thread::sleep(Duration::from_millis(300));
        Self { child, port }
    }

    /// The address to dial.
    pub fn uri(&self) -> String {
        format!("sip:room@127.0.0.1:{}", self.port)
    }

    /// Waits up to `timeout` for the scenario to end; its exit status (success: every message
    /// of the scenario came and went as written), or `None` if it had not ended.
    pub fn finish(mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A phone that dials kaskade over SIP over TLS (this machine's sipp has no TLS): it checks
/// kaskade's certificate against the given root, INVITEs `sip:USER@HOST;transport=tls` with
/// PCMU and telephone events whose RTP is the test's own socket, ACKs the 200, and answers the
/// BYE kaskade sends back over the same connection (its Contact is the connection's own
/// address, as TLS phones give it).
pub struct TlsCaller {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    /// What was read past the last message.
    pending: Vec<u8>,
}

impl TlsCaller {
    /// Dials `user` at kaskade's TLS listener `server`, trusting `root` (a PEM file), its RTP on
    /// loopback's `rtp_port`; returns once the call is answered and ACKed, or why it was not.
    pub async fn call(
        server: std::net::SocketAddr,
        root: &str,
        user: &str,
        rtp_port: u16,
    ) -> Result<Self, String> {
        use tokio::io::AsyncWriteExt;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
        use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(root).map_err(|e| e.to_string())? {
            roots
                .add(certificate.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let provider = std::sync::Arc::new(crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(server)
            .await
            .map_err(|e| e.to_string())?;
        let local = tcp.local_addr().map_err(|e| e.to_string())?;
        let name = ServerName::IpAddress(server.ip().into());
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let mut caller = Self {
            stream,
            pending: Vec::new(),
        };
        let sdp = format!(
            "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
        );
        let target = format!("sip:{user}@{server};transport=tls");
        let from = format!("<sip:+4722005678@{local};transport=tls>;tag=tls-phone");
        let common = |method: &str, branch: &str| {
            format!(
                "Via: SIP/2.0/TLS {local};branch=z9hG4bK{branch};alias\r\nFrom: {from}\r\n\
                 Call-ID: tls-phone-call\r\nCSeq: 1 {method}\r\n\
                 Contact: <sip:+4722005678@{local};transport=tls>\r\nMax-Forwards: 70\r\n"
            )
        };
        let invite = format!(
            "INVITE {target} SIP/2.0\r\n{}To: <{target}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            common("INVITE", "invite1"),
            sdp.len()
        );
        caller
            .stream
            .write_all(invite.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let to = loop {
            let (start, headers) = caller.read_message(Duration::from_secs(10)).await?;
            let status: u16 = start
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            match status {
                100..=199 => continue,
                200 => break header(&headers, "to").ok_or("a 200 without To")?,
                _ => return Err(start),
            }
        };
        let ack = format!(
            "ACK {target} SIP/2.0\r\n{}To: {to}\r\nContent-Length: 0\r\n\r\n",
            common("ACK", "ack1")
        );
        caller
            .stream
            .write_all(ack.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        Ok(caller)
    }

    /// Waits up to `timeout` for kaskade's BYE on the TLS connection and answers it 200.
    pub async fn hung_up(&mut self, timeout: Duration) -> bool {
        use tokio::io::AsyncWriteExt;
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok((start, headers)) = self.read_message(left).await else {
                return false;
            };
            if !start.starts_with("BYE ") {
                continue;
            }
            let copied: String = ["via", "from", "to", "call-id", "cseq"]
                .iter()
                .filter_map(|name| {
                    header(&headers, name).map(|value| format!("{name}: {value}\r\n"))
                })
                .collect();
            let ok = format!("SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n");
            return self.stream.write_all(ok.as_bytes()).await.is_ok();
        }
        false
    }

    /// The next SIP message: its start line and headers (its body is read and dropped).
    async fn read_message(&mut self, timeout: Duration) -> Result<(String, String), String> {
        use tokio::io::AsyncReadExt;
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(head_end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending[..head_end]).to_string();
                let length: usize = header(&head, "content-length")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if self.pending.len() >= head_end + 4 + length {
                    self.pending.drain(..head_end + 4 + length);
                    let (start, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
                    return Ok((start.to_string(), headers.to_string()));
                }
            }
            let mut buf = [0u8; 4_096];
            let n = tokio::time::timeout_at(end, self.stream.read(&mut buf))
                .await
                .map_err(|_| "no SIP message in time".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("kaskade closed the TLS connection".into());
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// The value of the first header `name` (case-insensitive) in `headers`.
fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}
