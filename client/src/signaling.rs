//! The kaskade signaling protocol (docs/SIGNALING.md) from the client's side: the shared frame
//! types of `kaskade_protocol`, and a WebSocket client. [`connect`] opens `ws://ADDR/ws` and
//! returns a [`SignalWriter`] / [`SignalReader`] pair.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, anyhow};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use kaskade_protocol::signaling::{
    CameraRequest, ClientMessage, DialRequest, ErrorCode, LeaveReason, MediaKind, ModerateAction,
    ParticipantId, ParticipantInfo, Role, RtspTransport, ServerMessage, SlotAssignment, SourceKind,
    SourceState, TileView, Welcome,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of a signaling connection.
pub struct SignalWriter {
    sink: SplitSink<Ws, Message>,
    local_ip: Option<IpAddr>,
}

/// The receiving half of a signaling connection.
pub struct SignalReader {
    stream: SplitStream<Ws>,
}

/// The signaling WebSocket URL of the node at `server`: `ws://{server}/ws`.
pub fn url(server: SocketAddr) -> String {
    format!("ws://{server}/ws")
}

/// Opens the signaling WebSocket `ws://{server}/ws`.
pub async fn connect(server: SocketAddr) -> Result<(SignalWriter, SignalReader)> {
    connect_url(&url(server)).await
}

/// Opens a signaling WebSocket at an explicit URL.
pub async fn connect_url(url: &str) -> Result<(SignalWriter, SignalReader)> {
    let (ws, _response) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let local_ip = match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().ok().map(|a| a.ip()),
        _ => None,
    };
    let (sink, stream) = ws.split();
    Ok((SignalWriter { sink, local_ip }, SignalReader { stream }))
}

impl SignalWriter {
    /// Sends one typed frame.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<()> {
        let text = serde_json::to_string(msg)?;
        self.send_raw(text).await
    }

    /// Sends arbitrary text (for protocol tests that need malformed frames).
    pub async fn send_raw(&mut self, text: String) -> Result<()> {
        self.sink
            .send(Message::Text(text.into()))
            .await
            .context("sending signaling frame")
    }

    /// The local IP of the connection: the one the OS uses to reach the node.
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.local_ip
    }

    /// Closes the WebSocket politely.
    pub async fn close(&mut self) -> Result<()> {
        self.sink.close().await.context("closing signaling socket")
    }
}

/// One item read from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A frame that parsed as a [`ServerMessage`].
    Message(ServerMessage),
    /// A text frame that did not parse (kept for diagnostics).
    Unparsed(String),
}

impl SignalReader {
    /// Reads the next frame; `Ok(None)` when the node closed the socket.
    pub async fn recv(&mut self) -> Result<Option<Incoming>> {
        loop {
            let Some(frame) = self.stream.next().await else {
                return Ok(None);
            };
            match frame.map_err(|e| anyhow!("signaling socket: {e}"))? {
                Message::Text(text) => {
                    return Ok(Some(match serde_json::from_str(text.as_str()) {
                        Ok(msg) => Incoming::Message(msg),
                        Err(_) => Incoming::Unparsed(text.as_str().to_owned()),
                    }));
                }
                Message::Close(_) => return Ok(None),
                _ => {}
            }
        }
    }
}
