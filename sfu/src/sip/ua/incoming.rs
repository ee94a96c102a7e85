//! What arrives at the user agent on its own: requests within a call go to their dialog,
//! OPTIONS pings are answered, and calls dialling in become [`Incoming`] calls for the voice
//! menu (or are turned away without one).

use super::{Call, CallFailure};
use rsipstack::dialog::dialog::DialogStateReceiver;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode, Transport, Uri};
use rsipstack::transaction::{Transaction, TransactionReceiver};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::debug;

/// Where calls dialling in go, and the Contact kaskade answers them with (its TLS listener's
/// for a call that came over TLS).
pub(super) struct DialIn {
    pub(super) calls: mpsc::Sender<Incoming>,
    pub(super) contact: Uri,
    pub(super) tls_contact: Option<Uri>,
    pub(super) keep_alive: Duration,
}

/// Answers what arrives outside a call kaskade is placing: in-dialog requests go to their
/// dialog (one task each: the dialog waits for the leg's answer), OPTIONS pings get 200, and
/// calls dialling in go to the voice menu ([`Incoming`]), or are turned away without one.
pub(super) async fn route(
    dialogs: Arc<DialogLayer>,
    mut incoming: TransactionReceiver,
    dial_in: Option<DialIn>,
) {
    while let Some(mut tx) = incoming.recv().await {
        let in_dialog = tx
            .original
            .to_header()
            .ok()
            .and_then(|to| to.tag().ok().flatten())
            .is_some();
        let reply = if in_dialog {
            match dialogs.match_dialog(&tx) {
                Some(mut dialog) => {
                    tokio::spawn(async move {
                        if let Err(e) = dialog.handle(&mut tx).await {
                            debug!("SIP in-dialog request: {e}");
                        }
                    });
                    continue;
                }
                None => StatusCode::CallTransactionDoesNotExist,
            }
        } else {
            match (&tx.original.method, &dial_in) {
                (Method::Options, _) => StatusCode::OK,
                (Method::Invite, Some(dial_in)) => {
                    Incoming::arrive(&dialogs, tx, dial_in);
                    continue;
                }
                (Method::Invite, None) => StatusCode::TemporarilyUnavailable,
                _ => StatusCode::MethodNotAllowed,
            }
        };
        if let Err(e) = tx.reply(reply).await {
            debug!("SIP reply: {e}");
        }
    }
}

/// A call dialling in, not answered yet.
pub struct Incoming {
    dialog: InviteDialog,
    states: DialogStateReceiver,
    dialogs: Arc<DialogLayer>,
    keep_alive: Duration,
}

impl Incoming {
    /// Makes the INVITE of `tx` a dialog and hands it to the voice menu (486 while the menu
    /// takes no more calls); the dialog's task answers the INVITE as the menu says.
    fn arrive(dialogs: &Arc<DialogLayer>, mut tx: Transaction, dial_in: &DialIn) {
        let (states_tx, states) = dialogs.new_dialog_state_channel();
        let over_tls = tx
            .connection
            .as_ref()
            .is_some_and(|c| c.transport() == Transport::Tls);
        let contact = match &dial_in.tls_contact {
            Some(tls) if over_tls => Some(tls.clone()),
            _ => Some(dial_in.contact.clone()),
        };
        let mut dialog = match dialogs.get_or_create_server_invite(&tx, states_tx, None, contact) {
            Ok(dialog) => dialog,
            Err(e) => {
                debug!("SIP INVITE dialling in: {e}");
                tokio::spawn(async move {
                    let _ = tx.reply(StatusCode::BadRequest).await;
                });
                return;
            }
        };
        let incoming = Self {
            dialog: dialog.clone(),
            states,
            dialogs: dialogs.clone(),
            keep_alive: dial_in.keep_alive,
        };
        if let Err(refused) = dial_in.calls.try_send(incoming) {
            let _ = refused
                .into_inner()
                .dialog
                .reject(Some(StatusCode::BusyHere), None);
        }
        tokio::spawn(async move {
            if let Err(e) = dialog.handle(&mut tx).await {
                debug!("SIP INVITE dialling in: {e}");
            }
        });
    }

    /// The caller's address (From).
    pub fn caller(&self) -> String {
        self.dialog
            .initial_request()
            .from_header()
            .ok()
            .and_then(|from| from.uri().ok())
            .map(|uri| uri.to_string())
            .unwrap_or_else(|| "sip:unknown".into())
    }

    /// Who calls, as failed dial-in attempts are counted: the From address's user and host,
    /// without port or parameters (which a phone may change from call to call).
    pub fn caller_key(&self) -> String {
        self.dialog
            .initial_request()
            .from_header()
            .ok()
            .and_then(|from| from.uri().ok())
            .map(|uri| {
                let user = uri.auth.map(|auth| auth.user).unwrap_or_default();
                format!("{user}@{}", uri.host_with_port.host)
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// The SDP offer of the INVITE (empty when it brought none).
    pub fn offer(&self) -> String {
        String::from_utf8_lossy(&self.dialog.initial_request().body).into_owned()
    }

    /// Answers 200 with `answer`: the call.
    pub fn accept(self, answer: String) -> Result<Call, CallFailure> {
        let headers = vec![Header::ContentType("application/sdp".into())];
        self.dialog
            .accept(Some(headers), Some(answer.into_bytes()))
            .map_err(|e| CallFailure::local(e.to_string()))?;
        Ok(Call::new(
            self.dialog,
            self.states,
            self.dialogs,
            self.keep_alive,
        ))
    }

    /// Turns the call away with `status`.
    pub fn refuse(self, status: StatusCode) {
        if let Err(e) = self.dialog.reject(Some(status), None) {
            debug!("SIP reject: {e}");
        }
        self.dialogs.remove_dialog(&self.dialog.id());
    }
}
