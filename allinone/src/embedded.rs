//! The all-in-one's node and recorder, built on the locator's bound address: the node's HTTP
//! routes are nested under [`NODE_PATH`] (it reports to the locator at that same address), the
//! recorder's routes are merged at the top.

use crate::config::AllInOne;
use axum::Router;
use clap::Parser;
use kaskade_locator::server::Access;
use kaskade_recorder::service::{Recorder, RecorderConfig};
use kaskade_sfu::NodeConfig;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where the node's routes live on the listener.
pub const NODE_PATH: &str = "/node";

/// The built node.
pub struct Node {
    /// Where its media UDP socket is bound.
    pub udp_addr: SocketAddr,
    /// Its HTTP routes, nested under [`NODE_PATH`].
    pub router: Router,
}

/// The node's command line: the locator's address, secret and media flags.
pub fn node_config(
    config: &AllInOne,
    addr: SocketAddr,
    secret: &str,
) -> clap::error::Result<NodeConfig> {
    let mut args = vec![
        "kaskade-sfu".to_string(),
        format!("--listen={addr}"),
        format!("--locator=http://{addr}"),
        format!("--advertise-url=http://{addr}{NODE_PATH}"),
        format!("--secret={secret}"),
        format!("--udp-port={}", config.udp_port),
        format!("--tcp-port={}", config.tcp_port),
        format!("--max-room-size={}", config.serve.max_room_size),
    ];
    args.extend(config.serve.ip_limits.to_args());
    args.extend(config.sip.to_args());
    if let Some(region) = &config.region {
        args.push(format!("--region={region}"));
    }
    NodeConfig::try_parse_from(args)
}

/// Binds the node's media sockets and builds its routes.
pub async fn node(config: &AllInOne, addr: SocketAddr, secret: &str) -> anyhow::Result<Node> {
    let node = kaskade_sfu::build(&node_config(config, addr, secret)?).await?;
    Ok(Node {
        udp_addr: node.udp_addr,
        router: Router::new().nest(NODE_PATH, node.router),
    })
}

/// The recorder's routes; what a crash interrupted is recovered in the background.
pub fn recorder(config: &AllInOne, access: &Access) -> Router {
    let recorder = Arc::new(Recorder::new(RecorderConfig {
        out: config.recordings.clone(),
        secret: access.secret.as_bytes().to_vec(),
        open: access.open,
        public_url: None,
        encryption: config.recording_key.clone(),
    }));
    recorder.recover_in_background();
    kaskade_recorder::api::router(recorder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;

    #[test]
    fn the_sip_gateway_options_reach_the_node() {
        let cli = Cli::try_parse_from([
            "kaskade",
            "--sip-listen=127.0.0.1:5062",
            "--sip-auth-user=ops",
            "--sip-password=pw",
            "--sip-ring-timeout=30s",
            "--sip-proxy=127.0.0.1:5070",
        ])
        .unwrap();
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let sip = node_config(&cli.all_in_one, addr, "s3cret").unwrap().sip;
        assert_eq!(sip.sip_listen, Some("127.0.0.1:5062".parse().unwrap()));
        assert_eq!(sip.sip_auth_user.as_deref(), Some("ops"));
        assert_eq!(sip.sip_password.as_deref(), Some("pw"));
        assert_eq!(sip.sip_ring_timeout, std::time::Duration::from_secs(30));
        assert_eq!(sip.sip_proxy, Some("127.0.0.1:5070".parse().unwrap()));
    }

    #[test]
    fn the_node_reports_to_this_locator_and_is_reached_under_node() {
        let cli = Cli::try_parse_from(["kaskade", "--udp-port", "0", "--region", "eu"]).unwrap();
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let node = node_config(&cli.all_in_one, addr, "s3cret").unwrap();
        assert_eq!(node.locators, ["http://127.0.0.1:8080"]);
        assert_eq!(node.sip.sip_listen, None, "SIP is off unless asked for");
        assert_eq!(node.signaling_url(), "ws://127.0.0.1:8080/node/ws");
        assert_eq!(node.secret.as_deref(), Some("s3cret"));
        assert_eq!(node.listen, addr);
        assert_eq!(node.udp_port, 0);
        assert_eq!(node.region.as_deref(), Some("eu"));
    }
}
