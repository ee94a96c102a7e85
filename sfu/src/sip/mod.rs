//! The SIP gateway: room systems, video MCUs and phones as participants of a meeting.
//!
//! A moderator dials a SIP address ([`SipGateway::dial`]); the call joins the meeting at once as
//! a source participant whose tile shows the call's progress (calling, ringing, live), and
//! from the answer on, the far end's H.264 and audio (Opus as it is, G.711 transcoded to Opus)
//! are published through the core's plain-RTP transport like a camera's. A failure (busy,
//! declined, no answer, ...) reaches the moderator who dialled as an `error` with code
//! `call_failed`, and the participant leaves. Removing the participant hangs up (CANCEL while
//! it rings, BYE once answered); the far end hanging up makes it leave.
//!
//! A moderator sends DTMF keys to a call ([`SipGateway::send_dtmf`]) to steer a room system's
//! menu.
//!
//! Modules: [`ua`] (the SIP user agent), [`sdp`] (offer and answer), [`media`] (RTP sockets and
//! packets), [`dtmf`] (telephone events), [`failure`] (why a call failed, in words), `leg` (one
//! call's life).

mod attempts;
mod dial_in;
mod dialplan;
pub mod dtmf;
pub mod failure;
pub mod grid;
pub mod h264;
mod leg;
pub mod media;
pub mod metrics;
pub mod mix;
pub mod outgoing;
pub mod prompts;
pub mod sdes;
pub mod sdp;
mod sockets;
pub mod ua;
pub mod view;

pub use outgoing::{PictureMode, PictureSettings};

use crate::media::demux::ParticipantId;
use crate::node::{NodeHandle, SessionEvent};
use crate::seats::Seats;
use crate::signaling::protocol::{DialRequest, ErrorCode, ServerMessage};
pub use dialplan::{Callee, Dialplan, NamedCredential, PhoneUri, Trunk};
pub use metrics::SipMetrics;
pub use sdp::SrtpPolicy;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
pub use ua::{DigestCredential, SipSettings, UserAgent};

/// SIP calls a node runs at once; more are refused.
const MAX_CALLS: usize = 64;

/// SIP calls running on this node.
static RUNNING: Seats = Seats::new(MAX_CALLS);

/// Calls dialling in that wait for the voice menu at once; more are answered 486.
const DIAL_IN_QUEUE: usize = 16;

/// Requests for one call waiting at once; more are refused (a moderator pressing keys faster
/// than they can sound).
const COMMAND_QUEUE: usize = 8;

/// The node's SIP gateway: its user agent, the addresses its legs' RTP is bound to, and the
/// calls in progress.
pub struct SipGateway {
    ua: UserAgent,
    media_ip: IpAddr,
    /// Where a leg takes the meeting's media from the node's socket.
    meeting_ip: IpAddr,
    policy: CallPolicy,
    dialplan: Dialplan,
    calls: Mutex<HashMap<ParticipantId, CallHandle>>,
    /// Failed dial-in attempts, by caller and by meeting.
    attempts: Mutex<attempts::Attempts>,
    metrics: SipMetrics,
    /// The grids composed for calls at once (`--sip-max-grids`).
    grids: Arc<Seats>,
}

/// How long a call may wait for things before kaskade gives up on it, how its media is
/// protected, and what picture of the meeting it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// Ringing without an answer (then CANCEL: "no answer").
    pub ring: Duration,
    /// An answered call whose far end sends no RTP (then BYE: "no media"): a room system that
    /// crashed or lost its network without hanging up.
    pub media: Duration,
    /// When the legs' media goes by SRTP (keys by SDES).
    pub srtp: SrtpPolicy,
    /// How the picture a far end gets of the meeting is made.
    pub picture: PictureSettings,
}

/// How a call in progress is reached.
struct CallHandle {
    placed: Placement,
    commands: mpsc::Sender<LegCommand>,
}

/// Where a call was placed, and for whom.
struct Placement {
    meeting: String,
    /// The identity of who asked for it.
    caller: String,
    /// A participant's phone (call-me).
    phone: bool,
}

/// Whom a participant wants called.
#[derive(Debug)]
pub enum Wanted {
    /// An address or a room of the directory.
    Dial(DialRequest),
    /// The participant's own phone (call-me).
    Phone {
        /// The number, as typed.
        number: String,
        /// The participant's name.
        name: String,
    },
}

/// What a moderator asks of a call in progress.
#[derive(Debug)]
enum LegCommand {
    /// Send these DTMF keys (checked).
    Dtmf(String),
}

impl SipGateway {
    /// Starts the user agent of `settings`; legs bind their RTP on `media_ip` (which their SDP
    /// names, so the far end must reach it), take the meeting's media from the node's socket
    /// (bound on `node_ip`), give up on calls and protect their media as `policy` says and find whom to call in
    /// `dialplan`, counting calls in `metrics`.
    pub async fn start(
        settings: SipSettings,
        (media_ip, node_ip): (IpAddr, IpAddr),
        policy: CallPolicy,
        (dialplan, node, metrics): (Dialplan, NodeHandle, SipMetrics),
    ) -> std::io::Result<Arc<Self>> {
        let meeting_ip = if node_ip.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            node_ip
        };
        // phones dial in when there are meeting numbers to dial (the locator's)
        let (dial_in, calls) = match dialplan.takes_dial_in() {
            true => {
                let (sender, calls) = mpsc::channel(DIAL_IN_QUEUE);
                (Some(sender), Some(calls))
            }
            false => (None, None),
        };
        let gateway = Arc::new(Self {
            ua: UserAgent::start(settings, dial_in).await?,
            media_ip,
            meeting_ip,
            policy,
            dialplan,
            calls: Mutex::new(HashMap::new()),
            attempts: Mutex::default(),
            metrics,
            grids: Arc::new(Seats::new(policy.picture.max_grids)),
        });
        if let Some(calls) = calls {
            tokio::spawn(answer_dial_in(Arc::downgrade(&gateway), node, calls));
        }
        Ok(gateway)
    }

    /// The failed dial-in attempts (held briefly: no await while it is).
    fn attempts(&self) -> std::sync::MutexGuard<'_, attempts::Attempts> {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends DTMF `digits` to the call `target` of `meeting`; the refusal's code and reason
    /// when the keys are not DTMF, there is no such call in that meeting, or it is busy.
    pub fn send_dtmf(
        &self,
        meeting: &str,
        target: ParticipantId,
        digits: &str,
    ) -> Result<(), (ErrorCode, String)> {
        dtmf::check(digits).map_err(|why| (ErrorCode::BadRequest, why))?;
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let call = calls
            .get(&target)
            .filter(|call| call.placed.meeting == meeting)
            .ok_or_else(|| {
                (
                    ErrorCode::NotFound,
                    format!("no SIP call {target} in this meeting"),
                )
            })?;
        call.commands
            .try_send(LegCommand::Dtmf(digits.to_string()))
            .map_err(|_| {
                (
                    ErrorCode::BadRequest,
                    "the call is still sending keys".to_string(),
                )
            })
    }

    /// Who asked for the SIP call `target` of `meeting` on this node (their identity), if it
    /// is one.
    pub fn placed_by(&self, meeting: &str, target: ParticipantId) -> Option<String> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&target)
            .filter(|call| call.placed.meeting == meeting)
            .map(|call| call.placed.caller.clone())
    }

    /// Whether `caller` has a phone call (call-me) in `meeting` already.
    pub fn calls_phone_of(&self, meeting: &str, caller: &str) -> bool {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|call| {
                call.placed.phone && call.placed.meeting == meeting && call.placed.caller == caller
            })
    }

    /// Makes a call reachable for [`Self::send_dtmf`] until the returned guard drops.
    fn register(
        self: &Arc<Self>,
        id: ParticipantId,
        placed: Placement,
    ) -> (Registered, mpsc::Receiver<LegCommand>) {
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, CallHandle { placed, commands });
        (
            Registered {
                gateway: self.clone(),
                id,
            },
            receiver,
        )
    }

    /// The SIP directory's rooms, for the dialpad.
    pub async fn directory(
        &self,
    ) -> Result<Vec<kaskade_protocol::directory::DirectoryListing>, (ErrorCode, String)> {
        self.dialplan.listing().await
    }

    /// Whom it calls, and the numbers of meetings phones dial in to.
    pub fn dialplan(&self) -> &Dialplan {
        &self.dialplan
    }

    /// Whether it calls phones (call-me).
    pub fn calls_phones(&self) -> bool {
        self.dialplan.calls_phones()
    }

    /// Where its user agent listens.
    pub fn sip_addr(&self) -> std::net::SocketAddr {
        self.ua.local_addr()
    }

    /// Calls whom `wanted` names (an address, a room of the directory, a phone) into `meeting` for
    /// `caller` (the identity of who dials, for the call record) in the background. `reply`
    /// (the dialler's session, if still there) gets `dialling` with the call's participant id
    /// once it is in the meeting, or an `error` saying why it could not be placed or failed.
    pub fn dial(
        self: &Arc<Self>,
        node: NodeHandle,
        (meeting, caller): (String, String),
        wanted: Wanted,
        reply: mpsc::WeakSender<SessionEvent>,
    ) {
        let tell = Teller(reply);
        let Some(seat) = RUNNING.take() else {
            tokio::spawn(async move {
                let refusal = format!("this node already runs {MAX_CALLS} SIP calls");
                tell.say(ServerMessage::error(ErrorCode::CallFailed, refusal))
                    .await;
            });
            return;
        };
        let gateway = self.clone();
        tokio::spawn(async move {
            let _seat = seat;
            leg::run(gateway, node, (meeting, caller), wanted, tell).await;
        });
    }
}

/// Takes the calls dialling in to the voice menu, each as a SIP call of the node's, while
/// the gateway lives.
async fn answer_dial_in(
    gateway: std::sync::Weak<SipGateway>,
    node: NodeHandle,
    mut calls: mpsc::Receiver<ua::Incoming>,
) {
    while let Some(incoming) = calls.recv().await {
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let Some(seat) = RUNNING.take() else {
            incoming.refuse(rsipstack::sip::StatusCode::BusyHere);
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _seat = seat;
            dial_in::run(gateway, node, incoming).await;
        });
    }
}

/// A call's place in the gateway's table, removed when dropped.
struct Registered {
    gateway: Arc<SipGateway>,
    id: ParticipantId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.gateway
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The dialling moderator's session, if it is still there.
struct Teller(mpsc::WeakSender<SessionEvent>);

impl Teller {
    async fn say(&self, message: ServerMessage) {
        if let Some(session) = self.0.upgrade() {
            let _ = session.send(SessionEvent::Message(message)).await;
        }
    }
}
