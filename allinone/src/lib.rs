//! `kaskade`, the all-in-one: a locator, one SFU node and a recorder in one process on one
//! HTTP listener, with no external service. The node's routes are nested under `/node` and it
//! registers with the locator over HTTP like any other node; the recorder's routes
//! (`/recordings`, `/r/{meeting}`) share the listener. Without `--secret` joins are open and
//! the first participant of a meeting is its moderator.

pub mod config;
pub mod embedded;

use std::time::Duration;

use kaskade_locator::server::{self, Access, Bound, Running};
use kaskade_protocol::cluster::hex;

use crate::config::AllInOne;

/// How long the all-in-one waits for its node's first report before it gives up.
const NODE_DEADLINE: Duration = Duration::from_secs(20);

/// Starts the all-in-one `config` describes and prints where people open it, once its node
/// takes participants.
pub async fn run(config: AllInOne) -> anyhow::Result<Running> {
    let access = match &config.serve.secret {
        Some(secret) => Access {
            secret: secret.clone(),
            open: false,
        },
        None => Access {
            secret: hex(&rand::random::<[u8; 32]>()),
            open: true,
        },
    };
    let bound = Bound::bind(config.serve.clone(), access.clone()).await?;
    let addr = bound.addr()?;
    let node = embedded::node(&config, addr, &access.secret).await?;
    println!("kaskade media: udp {}", node.udp_addr);
    let extra = node.router.merge(embedded::recorder(&config, &access));
    // the recorder answers on this very listener
    let running = bound.serve(extra, Some(format!("http://{addr}")))?;
    running.wait_for_a_node(NODE_DEADLINE).await?;
    server::print_ready(running.addr);
    Ok(running)
}
