//! The node's SIP user agent (rsipstack): one endpoint with UDP and TCP on one address (and
//! TLS, [`tls`], on another), the
//! router of requests that arrive on their own (the BYE, re-INVITE and INFO of a call in
//! progress, OPTIONS pings, calls dialling in: [`Incoming`]), and outbound calls from INVITE
//! to BYE.
//!
//! rsipstack answers a 401/407 challenge with the configured credentials, sends the ACKs and
//! retransmits; this module turns its dialog states into the few steps a leg cares about
//! ([`Step`], [`CallEvent`]) and every failure into a [`CallFailure`] a person can read.

mod incoming;
mod tls;

use crate::sip::failure::CallFailure;
pub use incoming::Incoming;
use incoming::{DialIn, route};
use rsipstack::EndpointBuilder;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::dialog::registration::{RefreshOutcome, Registration};
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode, Uri};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TcpListenerConnection, TransportLayer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
pub use tls::{SYSTEM_ROOTS, SipTls, TlsListener};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How the node's user agent presents itself and authenticates.
#[derive(Debug, Clone)]
pub struct SipSettings {
    /// Where it listens, UDP and TCP (a specific address: it is written in Via and Contact).
    pub listen: SocketAddr,
    /// The user part of kaskade's From and Contact (`sip:USER@host`).
    pub user: String,
    /// Digest credentials for 401/407 challenges on calls that bring none of their own.
    pub credential: Option<DigestCredential>,
    /// Every request goes through this proxy (a trunk, a call manager), the request URI kept.
    pub outbound_proxy: Option<SocketAddr>,
    /// Register at this registrar (`sip:pbx.example.org`) as the credential's user, and keep
    /// the registration fresh, so that the PBX routes calls to kaskade.
    pub registrar: Option<String>,
    /// How often an answered call's far end is asked (in-dialog OPTIONS) whether it still has
    /// the call: a far end that lost it (a reboot) or vanished ends it, even on hold.
    pub keep_alive: Duration,
    /// SIP over TLS: a listener, and the roots trusted when dialling `sips:`.
    pub tls: SipTls,
}

/// How long a TLS connection to a far end may take before the call fails.
const TLS_CONNECT: Duration = Duration::from_secs(10);
/// How long a cancelled call waits for its INVITE to end (the far end's 487) before it is
/// left to the stack.
const CANCEL_WAIT: Duration = Duration::from_secs(4);

/// The registration lifetime asked for; it is refreshed at 75 % of what the registrar grants.
const REGISTER_EXPIRES: u32 = 300;

/// A user name and password for digest authentication (401/407).
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredential {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for DigestCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DigestCredential({}:***)", self.user)
    }
}

/// The node's SIP user agent; cheap to clone.
#[derive(Clone)]
pub struct UserAgent {
    dialogs: Arc<DialogLayer>,
    settings: Arc<SipSettings>,
    local: SocketAddr,
    _stop: Arc<StopOnDrop>,
}

/// Stops the endpoint when the last handle of the user agent goes.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl UserAgent {
    /// Binds the SIP sockets and starts serving them; calls dialling in go to `calls` (they are
    /// answered 480 without it, and 486 while it is full).
    pub async fn start(
        settings: SipSettings,
        calls: Option<mpsc::Sender<Incoming>>,
    ) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut transports = TransportLayer::new(stop.child_token());
        transports.outbound = settings.outbound_proxy.map(SipAddr::from);
        let udp = UdpConnection::create_connection(settings.listen, None, Some(stop.child_token()))
            .await
            .map_err(|e| std::io::Error::other(format!("SIP UDP on {}: {e}", settings.listen)))?;
        let local = udp.get_addr().addr.clone();
        transports.add_transport(udp.into());
        let tcp = TcpListenerConnection::new(settings.listen, None)
            .await
            .map_err(|e| std::io::Error::other(format!("SIP TCP on {}: {e}", settings.listen)))?;
        transports.add_transport(tcp.into());
        settings.tls.install(&mut transports).await?;
        let endpoint = EndpointBuilder::new()
            .with_user_agent("kaskade")
            .with_transport_layer(transports)
            .with_cancel_token(stop.child_token())
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                warn!("SIP endpoint stopped: {e}");
            }
        });
        if let Some(registrar) = &settings.registrar {
            let registrar = Uri::try_from(registrar.as_str()).map_err(|e| {
                std::io::Error::other(format!("--sip-register {registrar}: not a SIP URI: {e}"))
            })?;
            let mut registration = Registration::new(
                endpoint.inner.clone(),
                settings.credential.as_ref().map(credential),
            );
            registration.outbound_proxy = settings.outbound_proxy;
            tokio::spawn(register(registration, registrar, stop.child_token()));
        }
        let contact = dialogs
            .build_local_contact(Some(settings.user.clone()), None)
            .map_err(|e| std::io::Error::other(format!("SIP contact: {e}")))?;
        let keep_alive = settings.keep_alive;
        let tls_contact = settings.tls.contact(&settings.user);
        let dial_in = calls.map(|calls| DialIn {
            calls,
            contact,
            tls_contact,
            keep_alive,
        });
        tokio::spawn(route(dialogs.clone(), incoming, dial_in));
        let local: SocketAddr = local
            .try_into()
            .map_err(|e| std::io::Error::other(format!("SIP address: {e}")))?;
        info!(%local, tls = ?settings.tls, "SIP user agent listening (UDP and TCP; TLS when tls.listen is set)");
        Ok(Self {
            dialogs,
            settings: Arc::new(settings),
            local,
            _stop: Arc::new(StopOnDrop(stop)),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends an INVITE with `offer` to `target` (a `sip:` URI, or `sips:` over TLS), `display_name` in From,
    /// answering challenges with `credential` (the configured one when `None`).
    pub async fn dial(
        &self,
        target: &str,
        display_name: &str,
        offer: String,
        credential: Option<&DigestCredential>,
    ) -> Result<Dialling, CallFailure> {
        let mut callee = Uri::try_from(target)
            .map_err(|e| CallFailure::bad_address(format!("{target} is not a SIP URI: {e}")))?;
        let secure = tls::over_tls(&mut callee);
        if secure && self.settings.tls.roots.is_none() {
            return Err(CallFailure::local(
                "this node trusts no roots for SIP over TLS (--sip-tls-ca)",
            ));
        }
        if secure && self.settings.outbound_proxy.is_some() {
            // the proxy is reached over UDP: the call would not be over TLS at all
            return Err(CallFailure::local(
                "this node sends SIP through a UDP proxy (--sip-proxy); a sips: call needs TLS to the far end",
            ));
        }
        if secure {
            self.connect_tls(&callee).await?;
        }
        let caller = Uri::try_from(format!("sip:{}@{}", self.settings.user, self.local).as_str())
            .map_err(|e| CallFailure::local(format!("kaskade's own SIP address: {e}")))?;
        let tls_contact = secure
            .then(|| self.settings.tls.contact(&self.settings.user))
            .flatten();
        let contact = match tls_contact {
            Some(contact) => contact,
            None => self
                .dialogs
                .build_local_contact(Some(self.settings.user.clone()), None)
                .map_err(|e| CallFailure::local(e.to_string()))?,
        };
        let option = InviteOption {
            caller_display_name: Some(display_name.to_string()),
            caller,
            callee,
            contact,
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            credential: credential
                .or(self.settings.credential.as_ref())
                .map(self::credential),
            ..Default::default()
        };
        let (states_tx, states) = self.dialogs.new_dialog_state_channel();
        let (dialog, invite) = self
            .dialogs
            .do_invite_async(option, states_tx)
            .map_err(|e| CallFailure::unreachable(e.to_string()))?;
        Ok(Dialling {
            dialog,
            states,
            invite,
            dialogs: self.dialogs.clone(),
            keep_alive: self.settings.keep_alive,
        })
    }

    /// Opens (or finds open) the TLS connection a call to `callee` goes over, so that a far
    /// end whose certificate the node does not trust, or that does not answer, fails the call
    /// at once and says why (the stack would retry it silently until its INVITE times out).
    async fn connect_tls(&self, callee: &Uri) -> Result<(), CallFailure> {
        let target = SipAddr::try_from(callee)
            .map_err(|e| CallFailure::bad_address(format!("{callee}: {e}")))?;
        let transports = &self.dialogs.endpoint.transport_layer;
        match tokio::time::timeout(TLS_CONNECT, transports.lookup(&target, None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(CallFailure::unreachable(format!("TLS: {e}"))),
            Err(_) => Err(CallFailure::unreachable("TLS: no connection in 10 s")),
        }
    }
}

/// rsipstack's form of `credential`.
fn credential(credential: &DigestCredential) -> Credential {
    Credential {
        username: credential.user.clone(),
        password: credential.password.clone(),
        realm: None,
        auth_username: None,
    }
}

/// Registers at `registrar` and keeps the registration fresh until `stop`, saying how each
/// attempt went.
async fn register(mut registration: Registration, registrar: Uri, stop: CancellationToken) {
    let at = registrar.to_string();
    registration
        .keep_alive(registrar, REGISTER_EXPIRES, stop, |outcome| match outcome {
            RefreshOutcome::Registered(response) => {
                let expires = response.expires_header().map(|e| e.to_string());
                info!(registrar = %at, ?expires, "SIP registered");
            }
            RefreshOutcome::Rejected(response) => {
                warn!(registrar = %at, status = %response.status_code, "SIP registration refused");
            }
            RefreshOutcome::Failed(e) => warn!(registrar = %at, "SIP registration failed: {e}"),
        })
        .await;
}

/// An outbound call until it is answered or fails.
pub struct Dialling {
    dialog: InviteDialog,
    states: DialogStateReceiver,
    invite: JoinHandle<InviteAsyncResult>,
    dialogs: Arc<DialogLayer>,
    keep_alive: Duration,
}

/// What happened to a call being placed.
#[derive(Debug)]
pub enum Step {
    /// The far end rings (180) or plays early media (183).
    Ringing,
    /// Answered with this SDP; the ACK is sent.
    Answered(String),
    /// It failed, and why.
    Failed(CallFailure),
}

impl Dialling {
    /// The next step of the call (a repeated `Ringing` is possible).
    pub async fn next(&mut self) -> Step {
        loop {
            tokio::select! {
                state = self.states.recv() => match state {
                    Some(DialogState::Early(..)) => return Step::Ringing,
                    Some(_) => {}
                    None => return Step::Failed(CallFailure::local("the call's dialog ended")),
                },
                finished = &mut self.invite => return self.finished(finished),
            }
        }
    }

    fn finished(&self, finished: Result<InviteAsyncResult, tokio::task::JoinError>) -> Step {
        let (id, response) = match finished {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Step::Failed(CallFailure::unreachable(e.to_string())),
            Err(e) => return Step::Failed(CallFailure::local(e.to_string())),
        };
        match response {
            Some(response) if response.status_code == StatusCode::OK => {
                if self.dialog.state().is_confirmed() {
                    Step::Answered(String::from_utf8_lossy(&response.body).into_owned())
                } else {
                    Step::Failed(CallFailure::cancelled())
                }
            }
            Some(response) => {
                self.dialogs.remove_dialog(&id);
                Step::Failed(CallFailure::from_status(
                    &response.status_code,
                    response.wire_reason.as_deref(),
                ))
            }
            None => {
                self.dialogs.remove_dialog(&id);
                Step::Failed(CallFailure::no_answer())
            }
        }
    }

    /// Gives up on the call: CANCEL while it rings (a 200 that crosses it is ACKed and ended
    /// with BYE by the stack).
    pub async fn cancel(self) {
        if let Err(e) = self.dialog.cancel().await {
            debug!("SIP CANCEL: {e}");
        }
        let _ = tokio::time::timeout(CANCEL_WAIT, self.invite).await;
        self.dialogs.remove_dialog(&self.dialog.id());
    }

    /// The answered call.
    pub fn established(self) -> Call {
        Call::new(self.dialog, self.states, self.dialogs, self.keep_alive)
    }
}

/// An answered call.
pub struct Call {
    dialog: InviteDialog,
    states: DialogStateReceiver,
    dialogs: Arc<DialogLayer>,
    /// When to ask the far end next whether it still has the call (an in-dialog OPTIONS).
    ping_at: tokio::time::Interval,
    /// The ask in flight: why the call is lost, if it is.
    ping: Option<JoinHandle<Option<String>>>,
}

/// What the keep-alive in flight found: why the call is lost, if it is (never, without one).
async fn settled(ping: &mut Option<JoinHandle<Option<String>>>) -> Option<String> {
    match ping {
        Some(ping) => ping.await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Asks the far end by an in-dialog OPTIONS whether it still has the call: why not, if it
/// does not (481 or 408, or no answer at all); any other answer, even a refusal of OPTIONS,
/// says it does.
async fn ping(dialog: InviteDialog) -> Option<String> {
    match dialog.request(Method::Options, None, None).await {
        Ok(Some(response))
            if matches!(
                response.status_code,
                StatusCode::CallTransactionDoesNotExist | StatusCode::RequestTimeout
            ) =>
        {
            Some(format!(
                "the far end no longer has the call ({})",
                response.status_code
            ))
        }
        Ok(_) => None,
        Err(e) => Some(format!("the far end does not answer ({e})")),
    }
}

/// What the far end did during a call.
#[derive(Debug)]
pub enum CallEvent {
    /// It hung up (or the call timed out): the call is over.
    Ended(String),
    /// It no longer has the call, or no longer answers (the keep-alive): the call is over, and
    /// a BYE would reach nobody.
    Lost(String),
    /// It asked for a keyframe by SIP INFO (`picture_fast_update`); answered 200 already.
    KeyframeWanted,
    /// It pressed a key, sent by SIP INFO (`application/dtmf-relay`); answered 200 already.
    Key(char),
    /// A new offer (a re-INVITE: hold, resume, a codec change); answer it with the reply.
    Reoffer(String, Reply),
}

/// The pending answer to a request of the far end.
#[derive(Debug)]
pub struct Reply(rsipstack::dialog::dialog::TransactionHandle);

impl Reply {
    /// Answers 200 with an SDP body.
    pub async fn sdp(self, sdp: String) {
        let headers = vec![Header::ContentType("application/sdp".into())];
        let _ = self
            .0
            .respond(StatusCode::OK, Some(headers), Some(sdp.into_bytes()))
            .await;
    }

    /// Refuses the request (488 when an offer has nothing kaskade takes).
    pub async fn refuse(self, status: StatusCode) {
        let _ = self.0.reply(status).await;
    }
}

impl Call {
    /// An answered call, its far end asked every `keep_alive` whether it still has it.
    fn new(
        dialog: InviteDialog,
        states: DialogStateReceiver,
        dialogs: Arc<DialogLayer>,
        keep_alive: Duration,
    ) -> Self {
        let first = tokio::time::Instant::now() + keep_alive;
        let mut ping_at = tokio::time::interval_at(first, keep_alive);
        ping_at.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            dialog,
            states,
            dialogs,
            ping_at,
            ping: None,
        }
    }

    /// The next thing the far end does; in-dialog requests kaskade has no use for are answered
    /// here, and the keep-alive goes on.
    pub async fn next(&mut self) -> CallEvent {
        loop {
            tokio::select! {
                state = self.states.recv() => {
                    let Some(state) = state else {
                        return CallEvent::Ended("the call's dialog ended".into());
                    };
                    if let Some(event) = self.on_state(state).await {
                        return event;
                    }
                }
                _ = self.ping_at.tick(), if self.ping.is_none() => {
                    self.ping = Some(tokio::spawn(ping(self.dialog.clone())));
                }
                lost = settled(&mut self.ping), if self.ping.is_some() => {
                    self.ping = None;
                    if let Some(why) = lost {
                        self.dialogs.remove_dialog(&self.dialog.id());
                        return CallEvent::Lost(why);
                    }
                }
            }
        }
    }

    /// What a dialog state means for the call, answering what needs no more.
    async fn on_state(&mut self, state: DialogState) -> Option<CallEvent> {
        match state {
            DialogState::Terminated(id, reason) => {
                self.dialogs.remove_dialog(&id);
                Some(CallEvent::Ended(ended_by(&reason)))
            }
            DialogState::Updated(_, request, handle) if request.method == Method::Invite => {
                let sdp = String::from_utf8_lossy(&request.body).into_owned();
                Some(CallEvent::Reoffer(sdp, Reply(handle)))
            }
            DialogState::Info(_, request, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                let body = String::from_utf8_lossy(&request.body);
                if body.contains("picture_fast_update") {
                    return Some(CallEvent::KeyframeWanted);
                }
                crate::sip::dtmf::relayed_key(&body).map(CallEvent::Key)
            }
            DialogState::Updated(_, _, handle)
            | DialogState::Options(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Message(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                None
            }
            DialogState::Refer(_, _, handle) | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::NotImplemented).await;
                None
            }
            _ => None,
        }
    }

    /// Asks the far end for a keyframe the way room systems that ignore RTCP understand (SIP
    /// INFO `picture_fast_update`, RFC 5168), in the background: the INFO's answer may take
    /// long.
    pub fn picture_fast_update(&self) {
        let body = concat!(
            "<?xml version=\"1.0\" encoding=\"utf-8\" ?>",
            "<media_control><vc_primitive><to_encoder><picture_fast_update/>",
            "</to_encoder></vc_primitive></media_control>"
        );
        let headers = vec![Header::ContentType("application/media_control+xml".into())];
        let dialog = self.dialog.clone();
        tokio::spawn(async move {
            if let Err(e) = dialog
                .info(Some(headers), Some(body.as_bytes().to_vec()))
                .await
            {
                debug!("SIP INFO picture_fast_update: {e}");
            }
        });
    }

    /// Sends DTMF keys by SIP INFO (`application/dtmf-relay`), one request per key, spaced as
    /// the tones would be: for far ends that took no telephone events. In the background.
    pub fn dtmf_info(&self, digits: String) {
        let dialog = self.dialog.clone();
        let duration = crate::sip::dtmf::TONE.as_millis();
        tokio::spawn(async move {
            for key in digits.chars() {
                let headers = vec![Header::ContentType("application/dtmf-relay".into())];
                let body = format!("Signal={key}\r\nDuration={duration}\r\n");
                if let Err(e) = dialog.info(Some(headers), Some(body.into_bytes())).await {
                    debug!("SIP INFO dtmf-relay: {e}");
                    return;
                }
                tokio::time::sleep(crate::sip::dtmf::TONE + crate::sip::dtmf::GAP).await;
            }
        });
    }

    /// Hangs up (BYE).
    pub async fn hang_up(self) {
        if let Some(ping) = &self.ping {
            ping.abort();
        }
        if let Err(e) = self.dialog.bye().await {
            debug!("SIP BYE: {e}");
        }
        self.dialogs.remove_dialog(&self.dialog.id());
    }
}

/// Why an answered call ended, for the meeting's participants.
fn ended_by(reason: &TerminatedReason) -> String {
    match reason {
        TerminatedReason::UasBye => "the far end hung up".into(),
        TerminatedReason::UacBye => "kaskade hung up".into(),
        TerminatedReason::Timeout => "the call timed out".into(),
        other => format!("the call ended ({other:?})"),
    }
}
