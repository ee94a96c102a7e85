//! Command-line configuration of a node.

use crate::sip::{NamedCredential, PhoneUri, PictureMode, PictureSettings, SrtpPolicy};
use clap::{Parser, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// `kaskade-sfu`: a kaskade SFU node with its web client.
#[derive(Debug, Clone, Parser)]
#[command(name = "kaskade-sfu", version, about)]
pub struct NodeConfig {
    /// HTTP address for the web client, signaling (/ws), /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// UDP port shared by every peer's media (0: any free port).
    #[arg(long, default_value_t = 10_000)]
    pub udp_port: u16,
    /// TCP port for ICE-TCP, for clients whose UDP is blocked (0: any free port).
    #[arg(long, default_value_t = 10_000)]
    pub tcp_port: u16,
    /// Do not listen for ICE-TCP.
    #[arg(long)]
    pub no_ice_tcp: bool,
    /// Address the media sockets bind to (default: the --listen address).
    #[arg(long)]
    pub media_bind: Option<IpAddr>,
    /// Address(es) announced to clients as ICE candidates, for nodes behind NAT (repeatable;
    /// default: the bind address).
    #[arg(long = "public-ip")]
    pub public_ips: Vec<IpAddr>,
    /// Participants per meeting.
    #[arg(long, default_value_t = 10)]
    pub max_room_size: usize,
    /// Participants this node carries before refusing joins.
    #[arg(long, default_value_t = 500)]
    pub max_participants: usize,
    /// Operator secret that signs access tokens; without it, anyone may join from the web page.
    #[arg(long, env = "KASKADE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Also offer AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM SRTP (legacy peers).
    #[arg(long)]
    pub legacy_srtp: bool,
    /// Locator base URL(s) to register with and report to (repeatable: the next is tried when
    /// one stops answering). Without one, the node serves joins by itself.
    #[arg(long = "locator")]
    pub locators: Vec<String>,
    /// The node's region, for placement.
    #[arg(long)]
    pub region: Option<String>,
    /// The node's unique name in the cluster (default: its advertised URL's host:port).
    #[arg(long)]
    pub name: Option<String>,
    /// The HTTP base URL clients and other nodes reach this node at (default: http://LISTEN).
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// Outbound bitrate the node carries before it reports overload, in Mbit/s.
    #[arg(long)]
    pub max_bitrate_mbps: Option<u64>,
    /// Per-client-address limits on signaling connections and joins.
    #[command(flatten)]
    pub ip_limits: kaskade_limits::IpLimitsConfig,
    /// The SIP gateway: room systems, MCUs and phones dialled into meetings.
    #[command(flatten)]
    pub sip: SipOptions,
}

/// The node's SIP gateway (docs/SIP.md); off unless `--sip-listen` is given.
#[derive(Debug, Clone, clap::Args)]
pub struct SipOptions {
    /// Listen for SIP on this address, UDP and TCP (a specific address: it is written in every
    /// message), and let moderators dial SIP addresses into meetings.
    #[arg(long)]
    pub sip_listen: Option<SocketAddr>,
    /// The user part of kaskade's own SIP address (From and Contact).
    #[arg(long, default_value = "kaskade")]
    pub sip_user: String,
    /// User name for digest authentication (401/407) when the far end or a proxy asks.
    #[arg(long)]
    pub sip_auth_user: Option<String>,
    /// Password for digest authentication.
    #[arg(long, env = "KASKADE_SIP_PASSWORD", hide_env_values = true)]
    pub sip_password: Option<String>,
    /// Named digest credentials for rooms of the locator's SIP directory that ask for them:
    /// NAME=USER:PASSWORD, repeatable (or KASKADE_SIP_CREDENTIALS, comma-separated; so no comma
    /// in a password). A room names them by NAME; they are sent to that room's address only.
    #[arg(
        long = "sip-credential",
        env = "KASKADE_SIP_CREDENTIALS",
        hide_env_values = true,
        value_delimiter = ',',
        value_parser = NamedCredential::parse
    )]
    pub sip_credentials: Vec<NamedCredential>,
    /// Call participants' phones (call-me) at this address: a sip: URI with {number} where the
    /// number goes, e.g. sip:{number}@trunk.example.org;user=phone (with --sip-proxy, the
    /// trunk's address). Without it, call-me is off.
    #[arg(long, value_parser = PhoneUri::parse)]
    pub sip_phone_uri: Option<PhoneUri>,
    /// The phone number that reaches this node's voice menu (the trunk routes it to
    /// --sip-listen), as moderators are shown it beside the meeting's number and PIN.
    #[arg(long)]
    pub sip_dial_in_number: Option<String>,
    /// Send every SIP request through this proxy (a trunk or call manager: ADDR:PORT, UDP), the
    /// dialled address kept as the request URI.
    #[arg(long)]
    pub sip_proxy: Option<SocketAddr>,
    /// Register at this registrar (a PBX: sip:pbx.example.org) as --sip-auth-user with
    /// --sip-password, refreshed before it expires, so that it routes calls (dial-in) here.
    #[arg(long, value_parser = sip_uri)]
    pub sip_register: Option<String>,
    /// How long a call may ring before kaskade gives up ("no answer").
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub sip_ring_timeout: Duration,
    /// How often an answered call's far end is asked (an in-dialog OPTIONS) whether it still
    /// has the call; one that lost it (481) or does not answer is hung up, even on hold.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub sip_keepalive: Duration,
    /// How long an answered call may go without RTP from the far end before kaskade hangs up
    /// (a room system that crashed or lost its network without a BYE).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub sip_media_timeout: Duration,
    /// When SIP legs' media goes by SRTP, keyed by SDES (RFC 4568): best-effort (whenever the
    /// far end takes it), mandatory (refuse calls without it) or off.
    #[arg(long, value_enum, default_value_t = SrtpPolicy::BestEffort)]
    pub sip_srtp: SrtpPolicy,
    /// What a SIP room system sees of the meeting: grid (everyone else composed into one
    /// picture, the active speaker highlighted, encoded per call at the size its decoder
    /// takes) or speaker (the active speaker's video as sent, no transcoding).
    #[arg(long, value_enum, default_value_t = PictureMode::Grid)]
    pub sip_picture: PictureMode,
    /// The grid's most pictures per second.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub sip_picture_fps: u32,
    /// The grid's most bits per second (lower when the room system's H.264 level says so).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(64_000..=8_000_000))]
    pub sip_picture_bitrate: u32,
    /// The most grids the node composes at once (each takes a fifth to two fifths of a core);
    /// calls beyond get the speaker's picture. By default as many as the node has cores.
    #[arg(long)]
    pub sip_max_grids: Option<usize>,
    /// Also listen for SIP over TLS on this address (5061 is the usual port), with
    /// --sip-tls-cert and --sip-tls-key; calls over TLS give it as their Contact.
    #[arg(long, requires_all = ["sip_tls_cert", "sip_tls_key"])]
    pub sip_tls_listen: Option<SocketAddr>,
    /// The TLS listener's certificate chain (a PEM file).
    #[arg(long)]
    pub sip_tls_cert: Option<PathBuf>,
    /// The TLS listener's private key (a PEM file, PKCS#8 or PKCS#1).
    #[arg(long)]
    pub sip_tls_key: Option<PathBuf>,
    /// The roots (a PEM file) a far end's certificate must chain to when kaskade dials a sips:
    /// address (or one with transport=tls); the system's by default
    /// (/etc/ssl/certs/ca-certificates.crt).
    #[arg(long)]
    pub sip_tls_ca: Option<PathBuf>,
}

/// A value's name as its option takes it (`best-effort`, `grid`).
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// A `sip:` URI, checked.
fn sip_uri(text: &str) -> Result<String, String> {
    kaskade_protocol::directory::check_sip_uri(text).map(|()| text.to_string())
}

impl SipOptions {
    /// How SIP legs' pictures are made.
    pub fn picture(&self) -> PictureSettings {
        PictureSettings {
            mode: self.sip_picture,
            fps: self.sip_picture_fps,
            bitrate: self.sip_picture_bitrate,
            max_grids: self
                .sip_max_grids
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }

    /// The options as command-line arguments (for a node built from another program's
    /// options, as the all-in-one builds its own).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--sip-user={}", self.sip_user),
            format!(
                "--sip-ring-timeout={}",
                humantime::format_duration(self.sip_ring_timeout)
            ),
            format!(
                "--sip-media-timeout={}",
                humantime::format_duration(self.sip_media_timeout)
            ),
            format!(
                "--sip-keepalive={}",
                humantime::format_duration(self.sip_keepalive)
            ),
            format!("--sip-srtp={}", value_name(self.sip_srtp)),
            format!("--sip-picture={}", value_name(self.sip_picture)),
            format!("--sip-picture-fps={}", self.sip_picture_fps),
            format!("--sip-picture-bitrate={}", self.sip_picture_bitrate),
        ];
        if let Some(grids) = self.sip_max_grids {
            args.push(format!("--sip-max-grids={grids}"));
        }
        let paths = [
            ("sip-tls-cert", &self.sip_tls_cert),
            ("sip-tls-key", &self.sip_tls_key),
            ("sip-tls-ca", &self.sip_tls_ca),
        ];
        for (name, path) in paths {
            if let Some(path) = path {
                args.push(format!("--{name}={}", path.display()));
            }
        }
        if let Some(listen) = self.sip_tls_listen {
            args.push(format!("--sip-tls-listen={listen}"));
        }
        if let Some(listen) = self.sip_listen {
            args.push(format!("--sip-listen={listen}"));
        }
        if let Some(user) = &self.sip_auth_user {
            args.push(format!("--sip-auth-user={user}"));
        }
        if let Some(password) = &self.sip_password {
            args.push(format!("--sip-password={password}"));
        }
        if let Some(registrar) = &self.sip_register {
            args.push(format!("--sip-register={registrar}"));
        }
        if let Some(proxy) = self.sip_proxy {
            args.push(format!("--sip-proxy={proxy}"));
        }
        if let Some(number) = &self.sip_dial_in_number {
            args.push(format!("--sip-dial-in-number={number}"));
        }
        if let Some(phone_uri) = &self.sip_phone_uri {
            args.push(format!("--sip-phone-uri={}", phone_uri.as_str()));
        }
        args.extend(
            self.sip_credentials
                .iter()
                .map(|named| format!("--sip-credential={}", named.to_arg())),
        );
        args
    }
}

impl NodeConfig {
    /// The IP the media sockets bind to.
    pub fn media_ip(&self) -> IpAddr {
        self.media_bind.unwrap_or(self.listen.ip())
    }

    /// The base URL others reach this node's HTTP surface at.
    pub fn advertised_url(&self) -> String {
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }

    /// Where clients open signaling: the advertised URL with a WebSocket scheme, then `/ws`.
    pub fn signaling_url(&self) -> String {
        let base = self.advertised_url();
        let ws = match base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", base.strip_prefix("http://").unwrap_or(&base)),
        };
        format!("{ws}/ws")
    }

    /// The node's name in the cluster.
    pub fn node_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let base = self.advertised_url();
            let host = base.split("://").nth(1).unwrap_or(&base);
            host.split('/').next().unwrap_or(host).to_string()
        })
    }

    /// The IPs announced as candidates.
    pub fn announced_ips(&self) -> Vec<IpAddr> {
        if self.public_ips.is_empty() {
            vec![self.media_ip()]
        } else {
            self.public_ips.clone()
        }
    }
}
