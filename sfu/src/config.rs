//! Command-line configuration of a node.

use clap::Parser;
use std::net::{IpAddr, SocketAddr};

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
}

impl NodeConfig {
    /// The IP the media sockets bind to.
    pub fn media_ip(&self) -> IpAddr {
        self.media_bind.unwrap_or(self.listen.ip())
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
