//! Failover of participants that joined through the join API: when the current session is
//! lost (the signaling socket closed without a `leave`, or the peer connection `failed`, or
//! stayed `disconnected` for [`DISCONNECTED_GRACE`]), join again through the same API with
//! the last `welcome`'s reconnect token and `avoid_node` = the lost node, then open a fresh
//! session that re-publishes the same media. Retries follow [`BACKOFF`]; a fatal refusal
//! ends failover and is kept in `MeetingState::failover_error`. A moderator's removal is not
//! a loss.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use webrtc::peer_connection::RTCPeerConnectionState;

use crate::join::{JoinConfig, JoinError};
use crate::peer::Shared;
use crate::session::{Current, Media, Session, locate};
use crate::signaling::ClientMessage;
use crate::state::Event;

/// How long a `disconnected` peer connection may take to recover by itself.
pub(crate) const DISCONNECTED_GRACE: Duration = Duration::from_millis(1500);

/// Waits before the successive attempts of one rejoin; the last one repeats.
pub(crate) const BACKOFF: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Watches the current session and replaces it whenever it is lost, until failover fails.
pub(crate) async fn run(cfg: JoinConfig, shared: Arc<Shared>, current: Arc<Current>, media: Media) {
    while let Some(reason) = lost(&shared).await {
        let (meeting, name) = (&cfg.meeting, &cfg.name);
        tracing::info!(%meeting, %name, "session lost ({reason}); joining again");
        if let Some(session) = current.take().await {
            session.close().await;
        }
        if let Err(e) = rejoin(&cfg, &shared, &current, &media).await {
            tracing::warn!(%meeting, %name, "failover gave up: {e}");
            shared.update(None, |s| s.failover_error = Some(e.to_string()));
            return;
        }
    }
}

/// Waits until the current session is lost and says how; `None` if a moderator removed us.
async fn lost(shared: &Shared) -> Option<&'static str> {
    let failed = RTCPeerConnectionState::Failed.to_string();
    let disconnected = RTCPeerConnectionState::Disconnected.to_string();
    let mut version = shared.version.subscribe();
    let mut disconnected_since = None;
    loop {
        let (removed, closed, connection) = shared.with_state(|s| {
            (
                s.removed_by.is_some(),
                s.signaling_closed,
                s.connection_state.clone(),
            )
        });
        if removed {
            return None;
        }
        if closed {
            return Some("signaling socket closed");
        }
        if connection == failed {
            return Some("peer connection failed");
        }
        if connection == disconnected {
            let since = *disconnected_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= DISCONNECTED_GRACE {
                return Some("peer connection disconnected");
            }
        } else {
            disconnected_since = None;
        }
        tokio::select! {
            _ = version.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Joins again until a session is open, or a refusal says that trying again is pointless.
async fn rejoin(
    cfg: &JoinConfig,
    shared: &Arc<Shared>,
    current: &Current,
    media: &Media,
) -> Result<(), JoinError> {
    let lost_node = shared.with_state(|s| s.node.clone());
    let reconnect_token = current.with_welcome(|w| (!w.token.is_empty()).then(|| w.token.clone()));
    let mut token = reconnect_token.or_else(|| cfg.token.clone());
    let mut failures = 0;
    loop {
        let opened = async {
            let target = locate(cfg, token.clone(), lost_node.clone(), None).await?;
            let (session, welcome) = Session::open(cfg, shared, media, &target).await?;
            Ok::<_, JoinError>((session, welcome, target.node))
        };
        match opened.await {
            Ok((mut session, welcome, node)) => {
                restore_mute(shared, &mut session).await;
                current.install(session, welcome).await;
                shared.update(Some(Event::Rejoined { node: node.clone() }), |s| {
                    s.node = node;
                    s.reconnects += 1;
                });
                return Ok(());
            }
            // A node that restarted, or a reconnect token that expired: join as at first.
            Err(e) if e.code() == Some("bad_token") && token != cfg.token => {
                tracing::debug!("reconnect token refused ({e}); joining with the configured token");
                token = cfg.token.clone();
            }
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                let wait = BACKOFF[failures.min(BACKOFF.len() - 1)];
                failures += 1;
                tracing::debug!("rejoin failed ({e}); next attempt in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A new node knows nothing of our mute state: tell it.
async fn restore_mute(shared: &Shared, session: &mut Session) {
    let audio = (!shared.send_audio.load(Ordering::Relaxed)).then_some(true);
    let video = (!shared.send_video.load(Ordering::Relaxed)).then_some(true);
    if (audio.is_some() || video.is_some())
        && let Err(e) = session
            .writer
            .send(&ClientMessage::Mute { audio, video })
            .await
    {
        tracing::debug!("restoring the mute state: {e}");
    }
}
