//! The all-in-one node and recorder: one SFU node in the locator's process, its HTTP routes
//! nested under `/node` of the locator's listener (it registers with the locator over HTTP
//! like any other node), and one recorder whose routes (`/recordings`, `/r/{meeting}`) share
//! the listener.

use crate::config::ServeConfig;
use axum::Router;
use clap::Parser;
use kaskade_recorder::service::{Recorder, RecorderConfig};
use kaskade_sfu::NodeConfig;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where the embedded node's routes live on the locator's listener.
pub const NODE_PATH: &str = "/node";

/// A built embedded node.
pub struct Embedded {
    /// Where its media UDP socket is bound.
    pub udp_addr: SocketAddr,
    /// Its HTTP routes, to nest under [`NODE_PATH`].
    pub router: Router,
}

/// The node's command line: the locator's address, secret and media flags.
pub fn node_config(
    config: &ServeConfig,
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
        format!("--max-room-size={}", config.max_room_size),
    ];
    args.extend(config.ip_limits.to_args());
    if let Some(region) = &config.region {
        args.push(format!("--region={region}"));
    }
    NodeConfig::try_parse_from(args)
}

/// Binds the node's media sockets and builds its routes.
pub async fn build(
    config: &ServeConfig,
    addr: SocketAddr,
    secret: &str,
) -> anyhow::Result<Embedded> {
    let node = kaskade_sfu::build(&node_config(config, addr, secret)?).await?;
    Ok(Embedded {
        udp_addr: node.udp_addr,
        router: node.router,
    })
}

/// The embedded recorder's routes; what a crash interrupted is recovered in the background.
pub fn recorder(config: &ServeConfig, secret: &str, open: bool) -> Router {
    let recorder = Recorder::new(RecorderConfig {
        out: config.recordings.clone(),
        secret: secret.as_bytes().to_vec(),
        open,
        public_url: None,
        encryption: config.recording_key.clone(),
    });
    let recorder = Arc::new(recorder);
    recorder.recover_in_background();
    kaskade_recorder::api::router(recorder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;

    #[test]
    fn the_node_reports_to_this_locator_and_is_reached_under_node() {
        let cli =
            Cli::try_parse_from(["kaskade-locator", "--udp-port", "0", "--region", "eu"]).unwrap();
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let node = node_config(&cli.serve, addr, "s3cret").unwrap();
        assert_eq!(node.locators, ["http://127.0.0.1:8080"]);
        assert_eq!(node.signaling_url(), "ws://127.0.0.1:8080/node/ws");
        assert_eq!(node.secret.as_deref(), Some("s3cret"));
        assert_eq!(node.listen, addr);
        assert_eq!(node.udp_port, 0);
        assert_eq!(node.region.as_deref(), Some("eu"));
    }
}
