//! ICE-TCP: the listener, and each connection's RFC 4571 framing (a 16-bit length, then the
//! datagram) both ways, as inputs for the driver.

use bytes::{Buf, BytesMut};
use rtc::shared::{TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Frames queued towards one ICE-TCP connection before its datagrams are dropped.
const TCP_QUEUE: usize = 512;
/// ICE-TCP connections open at once; further ones are closed at accept (a node carries at most
/// a few hundred participants, each with one or two connections).
const MAX_TCP_CONNECTIONS: usize = 2048;

/// What the ICE-TCP connections tell the driver.
pub(super) enum TcpInput {
    Opened(SocketAddr, mpsc::Sender<BytesMut>),
    Frame(TransportContext, BytesMut),
    Closed(SocketAddr),
}

/// Accepts ICE-TCP connections and serves each in a task of its own.
pub(super) async fn accept_tcp(listener: TcpListener, inputs: mpsc::Sender<TcpInput>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!(%peer, "ICE-TCP connection refused: too many open");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let inputs = inputs.clone();
                tokio::spawn(async move {
                    serve_tcp(stream, peer, inputs).await;
                    drop(slot);
                });
            }
            Err(e) => {
                warn!("ICE-TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One ICE-TCP connection: RFC 4571 frames (16-bit length, then the datagram) both ways.
async fn serve_tcp(stream: TcpStream, peer: SocketAddr, inputs: mpsc::Sender<TcpInput>) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let (frames_tx, mut frames_rx) = mpsc::channel::<BytesMut>(TCP_QUEUE);
    if inputs
        .send(TcpInput::Opened(peer, frames_tx))
        .await
        .is_err()
    {
        return;
    }
    let write = async move {
        while let Some(frame) = frames_rx.recv().await {
            let Ok(len) = u16::try_from(frame.len()) else {
                continue;
            };
            if writer.write_all(&len.to_be_bytes()).await.is_err()
                || writer.write_all(&frame).await.is_err()
            {
                break;
            }
        }
    };
    let transport = TransportContext {
        local_addr: local,
        peer_addr: peer,
        ecn: None,
        transport_protocol: TransportProtocol::TCP,
    };
    let read_inputs = inputs.clone();
    let read = async move {
        let mut buf = BytesMut::with_capacity(1 << 16);
        loop {
            while buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                if buf.len() < 2 + len {
                    break;
                }
                buf.advance(2);
                let frame = buf.split_to(len);
                if read_inputs
                    .send(TcpInput::Frame(transport, frame))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if buf.capacity() - buf.len() < 2048 {
                buf.reserve(1 << 16);
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = write => {}
        _ = read => {}
    }
    let _ = inputs.send(TcpInput::Closed(peer)).await;
}
