//! Simulcast layer choice: which layer of its publisher's video each consumer carries, from
//! the height its subscriber shows that video at and the layers that are live. Chosen again
//! when a subscriber reports its tiles, when slots change, and at every room tick (a layer the
//! publisher paused or took up again); the packet path then switches at the new layer's
//! keyframe (see `packets`). Layers nobody receives are paused at the publisher (it is told
//! with `layers`), and asked for again when a consumer's choice falls on one.

use super::MediaCore;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::simulcast::MAX_LAYERS;
use kaskade_protocol::signaling::{ServerMessage, TileView};
use std::collections::HashMap;
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
        self.hold_unreceived_layers(now);
    }

    /// Tells each simulcast publisher of this node which of its layers anyone receives (a
    /// consumer here, or a cascade link, which carries the best layer), so that it pauses the
    /// others: its uplink and encoder spend nothing on pictures nobody sees.
    fn hold_unreceived_layers(&mut self, now: Instant) {
        let mut wanted: HashMap<ParticipantId, [bool; MAX_LAYERS]> = HashMap::new();
        for s in self.participants.values() {
            for (slot, consumer) in s.slots.iter().zip(s.transport.consumers()) {
                let Some(publisher) = slot.publisher.filter(|_| slot.kind == MediaKind::Video)
                else {
                    continue;
                };
                // the layer it is to carry, and the one it shows until that one's keyframe
                let shown = consumer.stream.mapped().and_then(|ssrc| {
                    self.participants
                        .get(&publisher)
                        .and_then(|p| p.video.layer_of(ssrc))
                });
                want(wanted.entry(publisher).or_default(), consumer.layer, shown);
            }
        }
        let mut told = Vec::new();
        for p in self.participants.values_mut() {
            if !p.is_here() || !p.video.is_simulcast() {
                continue;
            }
            let mut layers = wanted.get(&p.id).copied().unwrap_or_default();
            let relayed = self
                .rooms
                .get(&p.room)
                .is_some_and(|room| !room.relays(p.id, MediaKind::Video).is_empty());
            if relayed {
                // the links' best layer, and the one they carry until its keyframe
                let shown = p
                    .relayed_video
                    .as_ref()
                    .and_then(|stream| stream.mapped())
                    .and_then(|ssrc| p.video.layer_of(ssrc));
                want(&mut layers, p.video.choose(now, None), shown);
            }
            if let Some(active) = p.video.hold(now, layers) {
                told.push((p.id, active));
            }
        }
        for (id, active) in told {
            self.send(id, ServerMessage::Layers { active });
        }
    }
}

/// Marks as wanted the layer a stream is to carry and the one it still shows (`shown`) until
/// that one's keyframe.
fn want(layers: &mut [bool; MAX_LAYERS], chosen: u8, shown: Option<u8>) {
    for layer in std::iter::once(chosen).chain(shown) {
        if let Some(wanted) = layers.get_mut(usize::from(layer)) {
            *wanted = true;
        }
    }
}
