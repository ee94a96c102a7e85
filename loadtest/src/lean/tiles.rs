//! Tile reports (`viewing`) of a lean participant: it shows every room-mate's video at one
//! height ([`crate::LoadSpec::tile_height`]), like a browser's grid, and reports the tiles
//! again whenever its room-mates change, as the web client does. The node picks each
//! simulcast publisher's layer for it by these heights.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio::sync::broadcast::error::RecvError;

use kaskade_client::peer::Shared;
use kaskade_client::signaling::{ClientMessage, ParticipantId, SignalWriter, TileView};

/// The most tiles one `viewing` frame names (the node reads no more).
const MAX_TILES: usize = 64;

/// Reports every room-mate at `height` pixels, now and after every change of room-mates,
/// until the signaling socket closes.
pub(super) async fn report(shared: Arc<Shared>, writer: Arc<Mutex<SignalWriter>>, height: u32) {
    let mut events = shared.events.subscribe();
    let mut reported: Option<Vec<ParticipantId>> = None;
    loop {
        let mates: Vec<ParticipantId> =
            shared.with_state(|s| s.participants.keys().copied().take(MAX_TILES).collect());
        if reported.as_ref() != Some(&mates) {
            if let Err(e) = writer.lock().await.send(&viewing(&mates, height)).await {
                tracing::debug!("lean participant: reporting tiles: {e:#}");
                return;
            }
            reported = Some(mates);
        }
        match events.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// The `viewing` frame of `mates` shown `height` pixels tall.
fn viewing(mates: &[ParticipantId], height: u32) -> ClientMessage {
    let tiles = mates
        .iter()
        .map(|&participant| TileView {
            participant,
            height,
        })
        .collect();
    ClientMessage::Viewing { tiles }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mate_is_one_tile_of_the_height() {
        let mates = [ParticipantId::from(3), ParticipantId::from(9)];
        let json = serde_json::to_value(viewing(&mates, 90)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "viewing", "tiles": [
                {"participant": 3, "height": 90}, {"participant": 9, "height": 90}]})
        );
    }
}
