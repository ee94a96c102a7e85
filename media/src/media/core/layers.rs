//! Simulcast layer choice: which layer of its publisher's video each consumer carries, from
//! the height its subscriber shows that video at and the layers that are live. Chosen again
//! when a subscriber reports its tiles, when slots change, and at every room tick (a layer the
//! publisher paused or took up again); the packet path then switches at the new layer's
//! keyframe (see `packets`).

use super::MediaCore;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use kaskade_protocol::signaling::TileView;
use std::time::Instant;

/// Most tiles a subscriber's report is read for.
const MAX_TILES: usize = 64;

impl MediaCore {
    /// A subscriber's report of the heights it shows others' video at.
    pub(super) fn on_viewing(&mut self, now: Instant, id: ParticipantId, tiles: Vec<TileView>) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.viewing = tiles
            .iter()
            .take(MAX_TILES)
            .map(|t| (t.participant, t.height))
            .collect();
        self.choose_layers_of(now, &[id]);
    }

    /// Chooses again the layer of every video consumer of the node.
    pub(super) fn choose_layers(&mut self, now: Instant) {
        let subscribers: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| !p.transport.consumers().is_empty())
            .map(|p| p.id)
            .collect();
        self.choose_layers_of(now, &subscribers);
    }

    /// Chooses again the layer of every video consumer of `subscribers`.
    pub(super) fn choose_layers_of(&mut self, now: Instant, subscribers: &[ParticipantId]) {
        let mut changes = Vec::new();
        for id in subscribers {
            let Some(s) = self.participants.get(id) else {
                continue;
            };
            for (index, (slot, consumer)) in s.slots.iter().zip(s.transport.consumers()).enumerate()
            {
                let Some(publisher) = slot.publisher.filter(|_| slot.kind == MediaKind::Video)
                else {
                    continue;
                };
                let Some(p) = self.participants.get(&publisher) else {
                    continue;
                };
                let layer = p.video.choose(now, s.viewing_height(publisher));
                if layer != consumer.layer {
                    changes.push((*id, index, layer));
                }
            }
        }
        for (id, index, layer) in changes {
            if let Some(consumer) = self
                .participants
                .get_mut(&id)
                .and_then(|s| s.transport.consumers_mut().get_mut(index))
            {
                consumer.layer = layer;
                self.metrics.layer_switches.inc();
            }
        }
    }
}
