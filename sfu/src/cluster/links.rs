//! Cascade links' control connections: dialing a peer node's `/cascade` WebSocket, accepting
//! one, the sealed hello that proves both ends hold the locator's key, and the loop that moves
//! control messages between the socket and the media core.

use super::Inner;
use crate::cascade::cipher::{Channel, LinkCipher};
use crate::cascade::control::{self, LinkMessage};
use crate::cascade::link::LinkParams;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use kaskade_protocol::cluster::{LinkInfo, unhex};
use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// The hello must arrive this soon after the socket opens.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A hello is sent this often as a keepalive.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// A link silent for this long is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Dial attempts before giving up on a peer for now.
const DIAL_ATTEMPTS: usize = 3;

/// The state of the link to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkSlot {
    /// This node is dialing it.
    Dialing,
    /// Up, over the connection with this number.
    Up(u64),
}

/// Makes sure a link to `peer` is up, dialing it if nobody is; waits for a dial in progress
/// (ours, or the peer's towards us).
pub(super) async fn ensure(inner: &Arc<Inner>, peer: &LinkInfo) -> Result<(), String> {
    let mut dials = 0;
    for _ in 0..200 {
        match slot(inner, peer.index) {
            Some(LinkSlot::Up(_)) => return Ok(()),
            Some(LinkSlot::Dialing) => {}
            None if dials < DIAL_ATTEMPTS => {
                dials += 1;
                set_slot(inner, peer.index, None, Some(LinkSlot::Dialing));
                if let Err(e) = dial(inner, peer).await {
                    debug!(peer = %peer.node, "dial failed: {e}");
                    set_slot(inner, peer.index, Some(LinkSlot::Dialing), None);
                }
                continue;
            }
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("no link to {} could be made", peer.node))
}

fn slot(inner: &Inner, peer: u16) -> Option<LinkSlot> {
    inner.links.lock().ok()?.get(&peer).copied()
}

/// Sets the peer's slot to `to` if it is `from` now (`from: None` sets it unconditionally).
fn set_slot(inner: &Inner, peer: u16, from: Option<LinkSlot>, to: Option<LinkSlot>) {
    let Ok(mut links) = inner.links.lock() else {
        return;
    };
    if from.is_some() && links.get(&peer) != from.as_ref() {
        return;
    }
    match to {
        Some(slot) => links.insert(peer, slot),
        None => links.remove(&peer),
    };
}

/// Dials `peer` and, once both hellos verified, runs the link in the background.
async fn dial(inner: &Arc<Inner>, peer: &LinkInfo) -> Result<(), String> {
    let base = peer.http_url.trim_end_matches('/');
    let ws = match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.strip_prefix("http://").unwrap_or(base)),
    };
    let url = format!("{ws}/cascade?from={}", inner.config.name);
    let (socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    use tokio_tungstenite::tungstenite::Message;
    let (sink, stream) = socket.split();
    let incoming = stream.filter_map(|m| {
        ready(match m {
            Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
            _ => None,
        })
    });
    let outgoing = sink.with(|frame: Vec<u8>| {
        ready(Ok::<_, tokio_tungstenite::tungstenite::Error>(
            Message::Binary(frame.into()),
        ))
    });
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(run(
        inner.clone(),
        peer.clone(),
        incoming,
        outgoing,
        Some(up_tx),
    ));
    up_rx
        .await
        .map_err(|_| "the peer closed the link during the hello".to_string())
}

/// Serves a peer's dial: looks the peer up at the locator (which must know it), settles a
/// simultaneous dial (the lower index's dial wins), then runs the link.
pub(super) async fn accept(inner: Arc<Inner>, from: String, socket: axum::extract::ws::WebSocket) {
    let peer = match inner.locator.link(&from).await {
        Ok(peer) => peer,
        Err(e) => {
            warn!(peer = %from, "cascade link refused: {e}");
            return;
        }
    };
    let own = inner.index.load(Ordering::Relaxed);
    if slot(&inner, peer.index) == Some(LinkSlot::Dialing) && own < peer.index {
        debug!(peer = %from, "both dialed: keeping ours");
        return;
    }
    use axum::extract::ws::Message;
    let (sink, stream) = socket.split();
    let incoming = stream.filter_map(|m| {
        ready(match m {
            Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
            _ => None,
        })
    });
    let outgoing =
        sink.with(|frame: Vec<u8>| ready(Ok::<_, axum::Error>(Message::Binary(frame.into()))));
    run(inner, peer, incoming, outgoing, None).await;
}

/// Runs one link connection: hello both ways, then control messages until it closes.
async fn run<I, O>(
    inner: Arc<Inner>,
    peer: LinkInfo,
    mut incoming: I,
    mut outgoing: O,
    up: Option<tokio::sync::oneshot::Sender<()>>,
) where
    I: Stream<Item = Vec<u8>> + Unpin,
    O: Sink<Vec<u8>> + Unpin,
{
    let Some(mut control) = handshake(&inner, &peer, &mut incoming, &mut outgoing).await else {
        return;
    };
    let connection = inner.next_connection.fetch_add(1, Ordering::Relaxed);
    let (messages_tx, messages) = mpsc::unbounded_channel();
    let params = LinkParams {
        index: peer.index,
        name: peer.node.clone(),
        media_addr: peer.media_addr,
        key: control.key,
    };
    set_slot(&inner, peer.index, None, Some(LinkSlot::Up(connection)));
    if inner
        .node
        .link_up(params, connection, messages_tx)
        .await
        .is_err()
    {
        return;
    }
    if let Some(up) = up {
        let _ = up.send(());
    }
    info!(peer = %peer.node, connection, "cascade control connected");
    exchange(&inner, &peer, &mut control, incoming, outgoing, messages).await;
    set_slot(&inner, peer.index, Some(LinkSlot::Up(connection)), None);
    let _ = inner.node.link_down(peer.index, connection).await;
    info!(peer = %peer.node, connection, "cascade control closed");
}

/// A link's control channel once the hellos are verified: its key, both ciphers, and the
/// hello it repeats as a keep-alive.
struct Control {
    key: [u8; 32],
    sealer: LinkCipher,
    opener: LinkCipher,
    hello: LinkMessage,
}

/// Sends our sealed hello and verifies the peer's (it proves the key and who the peer is).
async fn handshake<I, O>(
    inner: &Inner,
    peer: &LinkInfo,
    incoming: &mut I,
    outgoing: &mut O,
) -> Option<Control>
where
    I: Stream<Item = Vec<u8>> + Unpin,
    O: Sink<Vec<u8>> + Unpin,
{
    let Some(key) = unhex(&peer.key).and_then(|k| <[u8; 32]>::try_from(k).ok()) else {
        warn!(peer = %peer.node, "the locator gave a link key that is not 32 bytes");
        return None;
    };
    let own = inner.index.load(Ordering::Relaxed);
    let mut sealer = LinkCipher::new(&key, own, peer.index, Channel::Control)?;
    let mut opener = LinkCipher::new(&key, own, peer.index, Channel::Control)?;
    let hello = LinkMessage::Hello {
        node: inner.config.name.clone(),
        index: own,
    };
    outgoing
        .send(control::seal(&mut sealer, &hello))
        .await
        .ok()?;
    let first = tokio::time::timeout(HELLO_TIMEOUT, incoming.next()).await;
    let verified = match first {
        Ok(Some(frame)) => matches!(
            control::open(&mut opener, &frame),
            Ok(LinkMessage::Hello { node, index }) if node == peer.node && index == peer.index
        ),
        _ => false,
    };
    if !verified {
        warn!(peer = %peer.node, "cascade link refused: the peer's hello did not verify");
        inner
            .metrics
            .drop_packet(crate::metrics::Dropped::CascadeForged);
        return None;
    }
    Some(Control {
        key,
        sealer,
        opener,
        hello,
    })
}

/// Carries control messages both ways until the connection closes, the core stops, or the
/// peer is silent for [`IDLE_TIMEOUT`].
async fn exchange<I, O>(
    inner: &Inner,
    peer: &LinkInfo,
    control: &mut Control,
    mut incoming: I,
    mut outgoing: O,
    mut messages: mpsc::UnboundedReceiver<LinkMessage>,
) where
    I: Stream<Item = Vec<u8>> + Unpin,
    O: Sink<Vec<u8>> + Unpin,
{
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            message = messages.recv() => {
                let Some(message) = message else { break };
                if outgoing.send(control::seal(&mut control.sealer, &message)).await.is_err() {
                    break;
                }
            }
            frame = incoming.next() => {
                let Some(frame) = frame else { break };
                last_heard = tokio::time::Instant::now();
                match control::open(&mut control.opener, &frame) {
                    Ok(message) => {
                        if inner.node.link_message(peer.index, message).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(peer = %peer.node, "cascade control frame dropped: {e}");
                        inner.metrics.drop_packet(crate::metrics::Dropped::CascadeForged);
                    }
                }
            }
            _ = keepalive.tick() => {
                if last_heard.elapsed() > IDLE_TIMEOUT {
                    warn!(peer = %peer.node, "cascade link silent: dropping it");
                    break;
                }
                if outgoing.send(control::seal(&mut control.sealer, &control.hello)).await.is_err() {
                    break;
                }
            }
        }
    }
}
