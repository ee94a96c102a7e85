//! The Janus target of the load generator: a [`JanusParticipant`] joins a room of Janus's
//! VideoRoom plugin (Janus 1.x, multistream) with the very synthetic media and WebRTC client
//! that kaskade's [`crate::Participant`] uses, so that one tool measures both SFUs alike.
//!
//! One participant is one Janus session on its own WebSocket ([`api`]) with two handles:
//! - the *publisher* creates the room if it is missing (a numeric id derived from the meeting
//!   name, see [`videoroom::create_room`]), joins it with its own 32-bit feed id (the
//!   participant's [`ParticipantId`]), and publishes a sendonly offer: Opus (PT 111, RFC 6464
//!   audio level) and H.264 42e01f packetization mode 1 (PT 102) from the shared clips, with
//!   latency stamps and keyframes on PLI, exactly as towards kaskade. Its events tell who
//!   publishes and who left;
//! - the *subscriber* holds one subscription (one PeerConnection) to every other publisher of
//!   the room: `join` as subscriber with the publishers known, then `subscribe` as more
//!   appear. Janus sends the offers, the participant answers (`start`). The mid → feed layout
//!   of each offer becomes the receiving side's slot map, so the shared receivers attribute
//!   every packet to its publisher, count it, decode it if asked and hand it to the sink.

mod api;
mod videoroom;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use async_trait::async_trait;
use rtc::peer_connection::sdp::RTCSessionDescription;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::peer_connection::PeerConnection;

use crate::load_peer::{LoadPeer, LoadSpec};
use api::{JanusSession, PluginError, Reply, plugin_data};
use kaskade_client::peer::{self, Shared, random_u32};
use kaskade_client::session::{self, Media};
use kaskade_client::signaling::ParticipantId;
use kaskade_client::state::{ParticipantStats, SlotState};
use videoroom::SubscribedStream;

/// How many times a publisher `join` draws a new feed id when the drawn one is taken.
const ID_ATTEMPTS: usize = 5;
/// How often subscriptions that failed (a publisher not ready yet) are tried again.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);
/// How long `leave` waits for Janus to confirm.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how to reach Janus.
#[derive(Debug, Clone)]
pub struct JanusConfig {
    /// The WebSocket API URL (`ws://HOST:8188`).
    pub url: String,
    /// The `publishers` limit of the rooms this participant creates (at least the room size).
    pub max_publishers: u32,
}

impl JanusConfig {
    /// Janus at `url`, rooms of up to `max_publishers` publishers.
    pub fn new(url: impl Into<String>, max_publishers: u32) -> Self {
        Self {
            url: url.into(),
            max_publishers: max_publishers.max(1),
        }
    }
}

/// A synthetic participant in a Janus VideoRoom (see the module documentation). Dropping it
/// closes its connections, which makes Janus drop it from the room.
pub struct JanusParticipant {
    id: ParticipantId,
    janus: Arc<JanusSession>,
    publisher: u64,
    /// The publishing side: senders, their counters, the publisher PeerConnection's feedback.
    sending: Arc<Shared>,
    /// The receiving side: the subscription's slot map, received statistics, its feedback.
    receiving: Arc<Shared>,
    /// The other publishers of the room, as Janus announced them.
    present: Arc<Mutex<BTreeSet<ParticipantId>>>,
    pcs: Vec<Arc<dyn PeerConnection>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A change in who publishes in the room, from the publisher handle's events.
#[derive(Debug)]
enum RoomChange {
    /// These publishers publish (newly, or as `joined` listed them).
    Publishing(Vec<ParticipantId>),
    /// This publisher left or stopped publishing.
    Gone(ParticipantId),
}

/// Creates the VideoRoom `room` (for `spec.meeting`) unless it exists; another participant
/// creating it meanwhile is no error.
async fn ensure_room(
    janus: &JanusSession,
    handle: u64,
    room: u64,
    config: &JanusConfig,
    spec: &LoadSpec,
) -> Result<()> {
    let (exists, _) = janus.message(handle, videoroom::exists(room), None).await?;
    if exists["exists"] == true {
        return Ok(());
    }
    let bitrate = spec.video_bitrate_bps.saturating_mul(4).max(2_000_000);
    let create = videoroom::create_room(room, config.max_publishers, bitrate);
    match janus.message(handle, create, None).await {
        Ok(_) => Ok(()),
        Err(e) if PluginError::code_of(&e) == Some(videoroom::ERROR_ROOM_EXISTS) => Ok(()),
        Err(e) => Err(e.context(format!("creating room {room} ({})", spec.meeting))),
    }
}

/// Publishes on the joined publisher `handle`: offers the clips, applies Janus's answer and
/// starts sending; returns the publishing connection and its sending tasks.
async fn publish(
    janus: &JanusSession,
    handle: u64,
    sending: &Arc<Shared>,
    media: &Media,
    local_ip: IpAddr,
) -> Result<(Arc<dyn PeerConnection>, Vec<JoinHandle<()>>)> {
    let session = sending.begin_session();
    let sender = peer::build(sending, session, local_ip, true, true, &[], 0).await?;
    let offer = sender.pc.create_offer(None).await.context("create_offer")?;
    let offer = session::local_sdp(&sender.pc, sending, offer).await?;
    let (_, answer) = janus
        .message(handle, videoroom::publish(), Some(sdp_jsep("offer", offer)))
        .await
        .context("publishing")?;
    let answer = sdp_of(answer.as_ref(), "answer").context("publishing")?;
    sender
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer)?)
        .await
        .context("applying Janus's answer")?;
    let tasks = media
        .start_sending(&sender.pc, &sender.local, sending)
        .await?;
    Ok((sender.pc, tasks))
}

impl JanusParticipant {
    /// Joins the room of `spec.meeting` on the Janus at `config.url` (creating the room if
    /// missing), publishes, and subscribes to everyone else who publishes there, now and
    /// later. Each step is bounded by `spec.timeout`.
    pub async fn join(config: &JanusConfig, spec: LoadSpec) -> Result<Self> {
        // the media settings of a kaskade join, whose clips and counters are the same here
        let media_config = spec.kaskade_config(&config.url);
        let sending = Arc::new(Shared::new(&media_config));
        let receiving = Arc::new(Shared::new(&media_config));
        let media = Media::prepare(&media_config).await?;

        let janus = Arc::new(JanusSession::connect(&config.url, spec.timeout).await?);
        let local_ip = janus.local_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let publisher = janus.attach(videoroom::PLUGIN).await?;
        let room = videoroom::room_id(&spec.meeting);
        ensure_room(&janus, publisher.id, room, config, &spec).await?;
        let (id, joined) = join_as_publisher(&janus, publisher.id, room, &spec.name).await?;
        let others = videoroom::publishers(&joined);
        let present = Arc::new(Mutex::new(others.iter().copied().collect()));

        let (sender_pc, mut tasks) =
            publish(&janus, publisher.id, &sending, &media, local_ip).await?;

        // subscribe
        let subscriber = janus.attach(videoroom::PLUGIN).await?;
        let session = receiving.begin_session();
        let receiver = peer::build(&receiving, session, local_ip, false, false, &[], 0).await?;
        tasks.push(tokio::spawn(kaskade_client::receive::dispatch_tracks(
            Arc::clone(&receiver.pc),
            receiver.tracks_rx,
            Arc::clone(&receiving),
            session,
        )));
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let _ = changes.send(RoomChange::Publishing(others));
        tasks.push(tokio::spawn(watch_room(
            publisher.events,
            Arc::clone(&present),
            changes,
        )));
        let subscription = Subscription {
            janus: Arc::clone(&janus),
            handle: subscriber.id,
            room,
            private_id: joined["private_id"].as_u64(),
            pc: Arc::clone(&receiver.pc),
            shared: Arc::clone(&receiving),
            joined: false,
            wanted: BTreeSet::new(),
            subscribed: BTreeSet::new(),
        };
        tasks.push(tokio::spawn(
            subscription.run(changes_rx, subscriber.events),
        ));
        Ok(Self {
            id,
            janus,
            publisher: publisher.id,
            sending,
            receiving,
            present,
            pcs: vec![sender_pc, receiver.pc],
            tasks,
        })
    }

    fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for JanusParticipant {
    fn drop(&mut self) {
        self.stop_tasks();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            for pc in self.pcs.drain(..) {
                handle.spawn(async move {
                    let _ = pc.close().await;
                });
            }
        }
    }
}

#[async_trait]
impl LoadPeer for JanusParticipant {
    fn id(&self) -> ParticipantId {
        self.id
    }

    fn stats(&self) -> ParticipantStats {
        let mut stats = self.receiving.with_state(|s| s.stats.clone());
        self.sending.add_counters(&mut stats);
        self.receiving.add_counters(&mut stats);
        stats
    }

    fn sees(&self, other: ParticipantId) -> bool {
        self.present.lock().expect("present lock").contains(&other)
    }

    async fn stop_sending(&self) -> Result<()> {
        self.sending.send_audio.store(false, Ordering::Relaxed);
        self.sending.send_video.store(false, Ordering::Relaxed);
        Ok(())
    }

    async fn leave(mut self: Box<Self>) -> Result<()> {
        self.stop_tasks();
        let left = tokio::time::timeout(
            LEAVE_TIMEOUT,
            self.janus.message(self.publisher, videoroom::leave(), None),
        )
        .await
        .map_err(|_| anyhow!("Janus did not confirm the leave within {LEAVE_TIMEOUT:?}"))
        .and_then(|r| r.map(|_| ()));
        let destroyed = self.janus.destroy().await;
        for pc in self.pcs.drain(..) {
            let _ = pc.close().await;
        }
        left.and(destroyed)
    }
}

/// Joins `room` as a publisher with a fresh feed id (drawing again if it is taken); returns
/// the id and the `joined` event.
async fn join_as_publisher(
    janus: &JanusSession,
    handle: u64,
    room: u64,
    name: &str,
) -> Result<(ParticipantId, Value)> {
    let mut last_error = None;
    for _ in 0..ID_ATTEMPTS {
        let id = ParticipantId::from(random_u32().max(1));
        let join = videoroom::join_publisher(room, id, name);
        match janus.message(handle, join, None).await {
            Ok((joined, _)) => return Ok((id, joined)),
            Err(e) if PluginError::code_of(&e) == Some(videoroom::ERROR_ID_EXISTS) => {
                last_error = Some(e);
            }
            Err(e) => return Err(e.context(format!("joining room {room}"))),
        }
    }
    Err(last_error
        .unwrap_or_else(|| anyhow!("no attempt"))
        .context(format!(
            "joining room {room}: every feed id drawn was taken"
        )))
}

/// A jsep object for Janus: an SDP with every candidate in it (no trickle).
fn sdp_jsep(kind: &str, sdp: String) -> Value {
    json!({"type": kind, "sdp": sdp, "trickle": false})
}

/// The SDP of a jsep of type `kind`.
fn sdp_of(jsep: Option<&Value>, kind: &str) -> Result<String> {
    let jsep = jsep.ok_or_else(|| anyhow!("Janus sent no SDP {kind}"))?;
    if jsep["type"] != kind {
        return Err(anyhow!("Janus sent an SDP {} for an {kind}", jsep["type"]));
    }
    jsep["sdp"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("Janus's {kind} has no SDP"))
}

/// Follows the publisher handle's events: who publishes, who left; changes go to the
/// subscription.
async fn watch_room(
    mut events: mpsc::UnboundedReceiver<Reply>,
    present: Arc<Mutex<BTreeSet<ParticipantId>>>,
    changes: mpsc::UnboundedSender<RoomChange>,
) {
    while let Some(event) = events.recv().await {
        let Some(data) = plugin_data(&event) else {
            if event["janus"] == "hangup" {
                tracing::warn!("Janus hung up the publisher: {}", event["reason"]);
            }
            continue;
        };
        let publishing = videoroom::publishers(data);
        if !publishing.is_empty() {
            present
                .lock()
                .expect("present lock")
                .extend(publishing.iter().copied());
            let _ = changes.send(RoomChange::Publishing(publishing));
        }
        if let Some(gone) = videoroom::departed(data) {
            present.lock().expect("present lock").remove(&gone);
            let _ = changes.send(RoomChange::Gone(gone));
        }
    }
}

/// The subscriber handle's subscription to every other publisher of the room.
struct Subscription {
    janus: Arc<JanusSession>,
    handle: u64,
    room: u64,
    private_id: Option<u64>,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    /// Whether the subscriber `join` succeeded (later feeds go through `subscribe`).
    joined: bool,
    /// The publishers to receive.
    wanted: BTreeSet<ParticipantId>,
    /// The publishers subscribed to.
    subscribed: BTreeSet<ParticipantId>,
}

impl Subscription {
    /// Subscribes to publishers as they come, answers Janus's offers, and keeps the slot map
    /// current, until the room's events or the socket end.
    async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<RoomChange>,
        mut events: mpsc::UnboundedReceiver<Reply>,
    ) {
        let mut retry = tokio::time::interval(RESUBSCRIBE_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(RoomChange::Publishing(feeds)) => self.wanted.extend(feeds),
                    Some(RoomChange::Gone(feed)) => {
                        self.wanted.remove(&feed);
                        self.subscribed.remove(&feed);
                    }
                    None => return,
                },
                event = events.recv() => match event {
                    Some(event) => self.on_event(&event).await,
                    None => return,
                },
                _ = retry.tick() => {}
            }
            self.subscribe_missing().await;
        }
    }

    /// Subscribes to the wanted publishers not subscribed yet: all in one request, or one by
    /// one when that fails because one of them is not ready (the rest are tried again later).
    async fn subscribe_missing(&mut self) {
        let missing: Vec<ParticipantId> =
            self.wanted.difference(&self.subscribed).copied().collect();
        if missing.is_empty() {
            return;
        }
        if let Err(e) = self.subscribe(&missing).await {
            if PluginError::code_of(&e) == Some(videoroom::ERROR_NO_SUCH_FEED) && missing.len() > 1
            {
                for feed in missing {
                    if let Err(e) = self.subscribe(&[feed]).await {
                        tracing::debug!("subscribing to feed {feed}: {e:#}");
                    }
                }
            } else if PluginError::code_of(&e) == Some(videoroom::ERROR_NO_SUCH_FEED) {
                tracing::debug!("subscribing to feed {missing:?}: {e:#}");
            } else {
                tracing::warn!("subscribing to feeds {missing:?}: {e:#}");
            }
        }
    }

    /// One `join` (the first time) or `subscribe` request for `feeds`.
    async fn subscribe(&mut self, feeds: &[ParticipantId]) -> Result<()> {
        let body = if self.joined {
            videoroom::subscribe(feeds)
        } else {
            videoroom::join_subscriber(self.room, self.private_id, feeds)
        };
        let (data, jsep) = self.janus.message(self.handle, body, None).await?;
        self.joined = true;
        self.subscribed.extend(feeds.iter().copied());
        self.apply(&data, jsep.as_ref()).await
    }

    /// An event on the subscriber handle that answers no request of ours (an offer Janus
    /// sends after a publisher left, or a deferred `subscribe`).
    async fn on_event(&mut self, event: &Reply) {
        let Some(data) = plugin_data(event) else {
            if event["janus"] == "hangup" {
                tracing::warn!("Janus hung up the subscription: {}", event["reason"]);
            }
            return;
        };
        if let Some(code) = data.get("error_code") {
            tracing::warn!("subscription error {code}: {}", data["error"]);
            return;
        }
        if let Err(e) = self.apply(data, event.get("jsep")).await {
            tracing::warn!("subscription update: {e:#}");
        }
    }

    /// Takes the layout of `data` into the slot map and answers the offer in `jsep`, if any.
    async fn apply(&mut self, data: &Value, jsep: Option<&Value>) -> Result<()> {
        if let Some(streams) = videoroom::subscribed_streams(data) {
            self.shared.update(None, |state| {
                state.slots = streams
                    .into_iter()
                    .map(|SubscribedStream { mid, kind, feed }| {
                        let slot = SlotState {
                            kind,
                            participant: feed,
                        };
                        (mid, slot)
                    })
                    .collect();
            });
        }
        let Some(jsep) = jsep else {
            return Ok(());
        };
        let offer = sdp_of(Some(jsep), "offer")?;
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer)?)
            .await
            .context("applying Janus's offer")?;
        let answer = self.pc.create_answer(None).await.context("create_answer")?;
        let answer = session::local_sdp(&self.pc, &self.shared, answer).await?;
        self.janus
            .message(
                self.handle,
                videoroom::start(),
                Some(sdp_jsep("answer", answer)),
            )
            .await
            .context("answering the subscription offer")?;
        Ok(())
    }
}
