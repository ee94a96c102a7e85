//! Simulcast layer choice: which layer of its publisher's video each consumer carries, from
//! the height its subscriber shows that video at and the layers that are live. Chosen again
//! when a subscriber reports its tiles, when slots change, and at every room tick (a layer the
//! publisher paused or took up again); the packet path then switches at the new layer's
//! keyframe (see `packets`). A subscriber with a downlink estimate gets what fits it, the
//! active speaker first (see `allocation`). Layers nobody receives are paused at the publisher (it is told
//! with `layers`), and asked for again when a consumer's choice falls on one.

use super::MediaCore;
use crate::media::allocation::{AUDIO_SHARE, PAUSED, ProbeOutcome, Tile, allocate};
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::simulcast::MAX_LAYERS;
use kaskade_protocol::signaling::{ServerMessage, TileView};
use std::collections::HashMap;
use std::time::Instant;
use tracing::debug;

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

    /// Chooses again the layer of every video consumer of `subscribers`: what each tile's
    /// size asks for, within the subscriber's downlink estimate when it has one (see
    /// `allocation`). A consumer paused for want of bandwidth stops at once; one given a layer
    /// switches at that layer's keyframe.
    pub(super) fn choose_layers_of(&mut self, now: Instant, subscribers: &[ParticipantId]) {
        let mut changes = Vec::new();
        let mut allocations = Vec::new();
        let mut tiles = Vec::new();
        for id in subscribers {
            let Some(s) = self.participants.get(id) else {
                continue;
            };
            let speaker = self.rooms.get(&s.room).and_then(|r| r.speaker.current());
            tiles.clear();
            let mut audio: u32 = 0;
            for (index, (slot, consumer)) in s.slots.iter().zip(s.transport.consumers()).enumerate()
            {
                let Some(publisher) = slot.publisher else {
                    continue;
                };
                let Some(p) = self.participants.get(&publisher) else {
                    continue;
                };
                if slot.kind == MediaKind::Audio {
                    audio += u32::from(!p.audio_muted);
                    continue;
                }
                let ladder = p.video.ladder(now);
                tiles.push((
                    index,
                    Tile {
                        ladder,
                        wanted: ladder.fitting(s.viewing_height(publisher)).unwrap_or(0),
                        current: consumer.layer,
                        speaker: speaker == Some(publisher),
                    },
                ));
            }
            let wanted = |t: &Tile| t.ladder.rungs().get(t.wanted).map_or(0, |r| r.layer);
            let choices = match s.transport.downlink_estimate().and_then(|e| e.get()) {
                Some(estimate) => {
                    let weighed: Vec<Tile> = tiles.iter().map(|(_, t)| *t).collect();
                    allocate(estimate.saturating_sub(audio * AUDIO_SHARE), &weighed)
                }
                None => std::array::from_fn(|i| tiles.get(i).map_or(PAUSED, |(_, t)| wanted(t))),
            };
            let mut limited = false;
            let mut sending = audio * AUDIO_SHARE;
            for ((index, tile), layer) in tiles.iter().zip(choices) {
                limited |= layer != wanted(tile);
                sending += tile
                    .ladder
                    .rungs()
                    .iter()
                    .find(|r| r.layer == layer)
                    .map_or(0, |r| r.bitrate);
                if layer != tile.current {
                    changes.push((*id, *index, layer));
                }
            }
            allocations.push((*id, limited, sending));
        }
        for (id, limited, sending) in allocations {
            let Some(s) = self.participants.get_mut(&id) else {
                continue;
            };
            let Some(estimate) = s.transport.downlink_estimate() else {
                continue;
            };
            let probing = s.prober.is_probing();
            let outcome = s.prober.on_allocation(now, estimate, limited, sending);
            if outcome.is_some() || (s.prober.is_probing() && !probing) {
                debug!(subscriber = %id, ?outcome, probing = s.prober.is_probing(), estimate = ?estimate.get(), sending, "downlink probe");
            }
            match outcome {
                Some(ProbeOutcome::Lifted) => {
                    self.metrics.probes_lifted.inc();
                }
                Some(ProbeOutcome::Held) => {
                    self.metrics.probes_held.inc();
                }
                None => {}
            }
        }
        for (id, index, layer) in changes {
            if let Some(consumer) = self
                .participants
                .get_mut(&id)
                .and_then(|s| s.transport.consumers_mut().get_mut(index))
            {
                debug!(subscriber = %id, slot = index, from = consumer.layer, to = layer, "layer chosen");
                consumer.layer = layer;
                if layer == PAUSED {
                    consumer.stream.detach();
                    self.metrics.tiles_paused.inc();
                } else {
                    self.metrics.layer_switches.inc();
                }
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
