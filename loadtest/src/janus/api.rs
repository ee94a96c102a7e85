//! The Janus API over Janus's WebSocket transport (subprotocol `janus-protocol`): one socket
//! and one Janus session per synthetic participant, requests matched to their responses by
//! transaction, events without a pending transaction routed to their plugin handle, and a
//! keepalive every [`KEEPALIVE`] so the session never times out.
//!
//! Janus answers a request either at once (`success`, `error`) or, for plugin messages that
//! the plugin handles asynchronously, with an `ack` followed by an `event` carrying the same
//! transaction. [`JanusSession::message`] waits for whichever comes last.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// How often a keepalive goes out (Janus's default session timeout is 60 s).
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// The WebSocket subprotocol of the Janus API.
const SUBPROTOCOL: &str = "janus-protocol";

/// A reply Janus sent for a request, or an event it pushed on a handle.
pub type Reply = Value;

/// Waiters for replies, by transaction.
type Pending = Arc<Mutex<HashMap<String, Waiter>>>;
/// Event channels of the attached plugin handles, by handle id.
type Handles = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Reply>>>>;

struct Waiter {
    /// Whether an `ack` is the awaited reply (keepalives) rather than a step before it.
    wants_ack: bool,
    reply: oneshot::Sender<Reply>,
}

/// One Janus session on its own WebSocket. Dropping it stops its tasks (and so closes the
/// socket, which makes Janus destroy the session).
pub struct JanusSession {
    id: u64,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    handles: Handles,
    next_transaction: AtomicU64,
    local_ip: Option<IpAddr>,
    timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
}

/// A plugin handle attached to a session, with the events Janus pushes on it.
pub struct Handle {
    /// The handle id.
    pub id: u64,
    /// Events on this handle that answer no pending request (plugin events, `webrtcup`,
    /// `hangup`, `media`, `detached`, ...).
    pub events: mpsc::UnboundedReceiver<Reply>,
}

impl JanusSession {
    /// Connects to the Janus WebSocket API at `url` (`ws://host:8188`) and creates a session;
    /// `timeout` bounds every request.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let mut request = url
            .into_client_request()
            .with_context(|| format!("bad Janus URL {url}"))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let (ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| anyhow!("connecting to Janus at {url}: timed out"))?
            .with_context(|| format!("connecting to Janus at {url}"))?;
        let local_ip = match ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.local_addr().ok().map(|a| a.ip()),
            _ => None,
        };
        let (mut sink, mut stream) = ws.split();
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<Message>();
        let pending = Pending::default();
        let handles = Handles::default();
        let writer = tokio::spawn(async move {
            while let Some(message) = to_send.recv().await {
                if let Err(e) = sink.send(message).await {
                    tracing::debug!("Janus socket write: {e}");
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader = {
            let (pending, handles) = (Arc::clone(&pending), Arc::clone(&handles));
            tokio::spawn(async move {
                while let Some(Ok(frame)) = stream.next().await {
                    match frame {
                        Message::Text(text) => dispatch(text.as_str(), &pending, &handles),
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                // the socket is gone: waiters and handle readers see their channels close
                pending.lock().expect("pending lock").clear();
                handles.lock().expect("handles lock").clear();
            })
        };
        let mut session = Self {
            id: 0,
            outgoing,
            pending,
            handles,
            next_transaction: AtomicU64::new(1),
            local_ip,
            timeout,
            tasks: vec![writer, reader],
        };
        let created = session.request(json!({"janus": "create"})).await?;
        session.id = data_id(&created).context("Janus create: no session id")?;
        session.tasks.push(tokio::spawn(keepalive(
            session.outgoing.clone(),
            Arc::clone(&session.pending),
            session.id,
        )));
        Ok(session)
    }

    /// The local IP of the socket (the address Janus reaches this client at).
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.local_ip
    }

    /// Attaches a handle of `plugin` (`janus.plugin.videoroom`).
    pub async fn attach(&self, plugin: &str) -> Result<Handle> {
        let reply = self
            .request(json!({"janus": "attach", "session_id": self.id, "plugin": plugin}))
            .await?;
        let id = data_id(&reply).context("Janus attach: no handle id")?;
        let (tx, events) = mpsc::unbounded_channel();
        self.handles.lock().expect("handles lock").insert(id, tx);
        Ok(Handle { id, events })
    }

    /// Sends `body` (and `jsep`, if any) to the plugin of `handle` and returns the plugin's
    /// reply: the `plugindata.data` object and the reply's `jsep`. A plugin error
    /// (`error_code`) is an error.
    pub async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Option<Value>)> {
        let mut request = json!({
            "janus": "message",
            "session_id": self.id,
            "handle_id": handle,
            "body": body,
        });
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        let reply = self.request(request).await?;
        let data = plugin_data(&reply)
            .cloned()
            .ok_or_else(|| anyhow!("Janus reply without plugin data: {reply}"))?;
        if let Some(code) = data.get("error_code") {
            return Err(PluginError {
                code: code.as_u64().unwrap_or(0),
                reason: data["error"].as_str().unwrap_or("").to_owned(),
            }
            .into());
        }
        Ok((data, reply.get("jsep").cloned()))
    }

    /// Destroys the session (politely, before the socket closes).
    pub async fn destroy(&self) -> Result<()> {
        self.request(json!({"janus": "destroy", "session_id": self.id}))
            .await
            .map(|_| ())
    }

    /// Sends `request` with a new transaction and waits (up to the timeout) for its final
    /// reply; a Janus `error` reply is an error.
    async fn request(&self, mut request: Value) -> Result<Reply> {
        let transaction = self
            .next_transaction
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        request["transaction"] = Value::String(transaction.clone());
        let what = request["janus"].as_str().unwrap_or("request").to_owned();
        let reply = send_and_wait(
            &self.outgoing,
            &self.pending,
            transaction,
            request,
            false,
            self.timeout,
        )
        .await
        .with_context(|| format!("Janus {what}"))?;
        if reply["janus"] == "error" {
            bail!(
                "Janus {what}: error {}: {}",
                reply["error"]["code"],
                reply["error"]["reason"].as_str().unwrap_or("")
            );
        }
        Ok(reply)
    }
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An error the plugin answered with (`error_code`, `error`).
#[derive(Debug, thiserror::Error)]
#[error("plugin error {code}: {reason}")]
pub struct PluginError {
    /// The plugin's error code (the VideoRoom's are 421-437).
    pub code: u64,
    /// Its description.
    pub reason: String,
}

impl PluginError {
    /// The plugin error code of `error`, if it is a [`PluginError`].
    pub fn code_of(error: &anyhow::Error) -> Option<u64> {
        error.downcast_ref::<PluginError>().map(|e| e.code)
    }
}

/// Registers a waiter for `transaction`, sends `request` and waits for the reply.
async fn send_and_wait(
    outgoing: &mpsc::UnboundedSender<Message>,
    pending: &Pending,
    transaction: String,
    request: Value,
    wants_ack: bool,
    timeout: Duration,
) -> Result<Reply> {
    let (tx, rx) = oneshot::channel();
    let waiter = Waiter {
        wants_ack,
        reply: tx,
    };
    pending
        .lock()
        .expect("pending lock")
        .insert(transaction.clone(), waiter);
    let reply = match outgoing.send(Message::Text(request.to_string().into())) {
        Ok(()) => {
            tokio::time::timeout(timeout, async {
                rx.await.map_err(|_| anyhow!("the Janus socket closed"))
            })
            .await
        }
        Err(_) => Ok(Err(anyhow!("the Janus socket is closed"))),
    };
    pending.lock().expect("pending lock").remove(&transaction);
    match reply {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow!("no reply within {timeout:?}")),
    }
}

/// Routes one frame from Janus: to the waiter of its transaction, else to its handle.
fn dispatch(text: &str, pending: &Pending, handles: &Handles) {
    let Ok(reply) = serde_json::from_str::<Value>(text) else {
        tracing::warn!("Janus sent a frame that is not JSON: {text:.200}");
        return;
    };
    let kind = reply["janus"].as_str().unwrap_or("");
    if let Some(transaction) = reply["transaction"].as_str() {
        let mut pending = pending.lock().expect("pending lock");
        let awaited = pending
            .get(transaction)
            .is_some_and(|w| kind != "ack" || w.wants_ack);
        if awaited {
            if let Some(waiter) = pending.remove(transaction) {
                let _ = waiter.reply.send(reply);
            }
            return;
        }
        if kind == "ack" {
            return;
        }
    }
    let handle = reply["sender"].as_u64();
    let channel = handle.and_then(|h| handles.lock().expect("handles lock").get(&h).cloned());
    match channel {
        Some(channel) => {
            let _ = channel.send(reply);
        }
        None => tracing::debug!("Janus event for no handle: {text:.200}"),
    }
}

/// Sends a keepalive every [`KEEPALIVE`] until the socket closes.
async fn keepalive(outgoing: mpsc::UnboundedSender<Message>, pending: Pending, session: u64) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    for n in 0u64.. {
        ticker.tick().await;
        let transaction = format!("keepalive-{n}");
        let request =
            json!({"janus": "keepalive", "session_id": session, "transaction": transaction});
        match send_and_wait(&outgoing, &pending, transaction, request, true, KEEPALIVE).await {
            Ok(reply) if reply["janus"] == "ack" => {}
            Ok(reply) => tracing::warn!("Janus keepalive answered {reply}"),
            Err(e) => {
                tracing::warn!("Janus keepalive: {e}");
                if outgoing.is_closed() {
                    return;
                }
            }
        }
    }
}

/// `data.id` of a `success` reply (a new session's or handle's id).
fn data_id(reply: &Reply) -> Option<u64> {
    reply["data"]["id"].as_u64()
}

/// The plugin's part of a reply or event: `plugindata.data`.
pub fn plugin_data(reply: &Reply) -> Option<&Value> {
    reply.get("plugindata")?.get("data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_to_their_waiter_events_to_their_handle() {
        let pending = Pending::default();
        let handles = Handles::default();
        let (tx, mut rx) = oneshot::channel();
        pending.lock().unwrap().insert(
            "7".into(),
            Waiter {
                wants_ack: false,
                reply: tx,
            },
        );
        let (events_tx, mut events) = mpsc::unbounded_channel();
        handles.lock().unwrap().insert(42, events_tx);

        // the ack of an asynchronous request is not its reply
        dispatch(r#"{"janus":"ack","transaction":"7"}"#, &pending, &handles);
        assert!(rx.try_recv().is_err());
        // an event without a transaction goes to its handle
        dispatch(
            r#"{"janus":"event","sender":42,"plugindata":{"data":{"publishers":[]}}}"#,
            &pending,
            &handles,
        );
        assert!(events.try_recv().is_ok());
        // the event with the transaction is the reply
        dispatch(
            r#"{"janus":"event","sender":42,"transaction":"7","plugindata":{"data":{"x":1}}}"#,
            &pending,
            &handles,
        );
        let reply = rx.try_recv().unwrap();
        assert_eq!(plugin_data(&reply).unwrap()["x"], 1);
        assert!(pending.lock().unwrap().is_empty());
        // garbage, unknown handles and late acks are dropped quietly
        dispatch("not json", &pending, &handles);
        dispatch(r#"{"janus":"event","sender":7}"#, &pending, &handles);
        dispatch(r#"{"janus":"ack","transaction":"7"}"#, &pending, &handles);
        dispatch(r#"[1,2]"#, &pending, &handles);
        assert!(events.try_recv().is_err());
    }
}
