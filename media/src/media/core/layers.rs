//! Simulcast layer choice: which layer of its publisher's video each consumer carries, from
//! the height its subscriber shows that video at and the layers that are live. Chosen again
//! when a subscriber reports its tiles, when slots change, at every room tick (a layer the
//! publisher paused or took up again), and at once when its downlink estimate falls; the
//! packet path then switches at the new layer's keyframe (see `packets`). A subscriber with a
//! downlink estimate gets what fits it, the active speaker first (see `allocation`). Layers
//! nobody receives are paused at the publisher (it is told with `layers`; a relayed
//! publisher's node, through this node's subscription), and asked for again when a consumer's
//! choice falls on one.

use super::MediaCore;
use crate::media::allocation::{AUDIO_SHARE, PAUSED, Tile, allocate};
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::probe::ProbeOutcome;
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

    /// Chooses again the layers of subscriber `id` when its downlink estimate fell under the
    /// one they were chosen for (a decrease, read from the feedback it just sent): a squeezed
    /// path is relieved now, not up to a tick later, while its queue grows.
    pub(super) fn choose_layers_if_squeezed(&mut self, now: Instant, id: ParticipantId) {
        let fell = self.participants.get(&id).is_some_and(|p| {
            let estimate = p.transport.downlink_estimate().and_then(|e| e.get());
            estimate
                .zip(p.allocated_for)
                .is_some_and(|(now, was)| now < was)
        });
        if fell {
            self.choose_layers_of(now, &[id]);
        }
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
        for &id in subscribers {
            let Some(allocation) = self.allocation_of(now, id) else {
                continue;
            };
            for &(index, layer, squeezed) in &allocation.changes {
                self.set_layer(id, index, layer, squeezed);
            }
            if let Some(s) = self.participants.get_mut(&id) {
                s.allocated_for = allocation.estimate;
            }
            self.probe(now, id, &allocation);
        }
        self.hold_unreceived_layers(now);
    }

    /// The layers `id`'s video consumers are to carry now.
    fn allocation_of(&self, now: Instant, id: ParticipantId) -> Option<Allocation> {
        let s = self.participants.get(&id)?;
        let speaker = self.rooms.get(&s.room).and_then(|r| r.speaker.current());
        let (mut indices, mut tiles) = (Vec::new(), Vec::new());
        let mut audio: u32 = 0;
        for (index, (slot, consumer)) in s.slots.iter().zip(s.transport.consumers()).enumerate() {
            let Some(p) = slot.publisher.and_then(|p| self.participants.get(&p)) else {
                continue;
            };
            if slot.kind == MediaKind::Audio {
                audio += u32::from(!p.audio_muted);
                continue;
            }
            let ladder = p.video.ladder(now);
            indices.push(index);
            tiles.push(Tile {
                ladder,
                wanted: ladder.fitting(s.viewing_height(p.id)).unwrap_or(0),
                current: consumer.layer,
                speaker: speaker == Some(p.id),
            });
        }
        let wanted = |t: &Tile| t.ladder.rungs().get(t.wanted).map_or(0, |r| r.layer);
        let estimate = s.transport.downlink_estimate().and_then(|e| e.get());
        let choices = match estimate {
            Some(estimate) => allocate(estimate.saturating_sub(audio * AUDIO_SHARE), &tiles),
            None => std::array::from_fn(|i| tiles.get(i).map_or(PAUSED, wanted)),
        };
        let mut allocation = Allocation {
            estimate,
            changes: Vec::new(),
            limited: false,
            sending: audio * AUDIO_SHARE,
        };
        for ((index, tile), layer) in indices.into_iter().zip(&tiles).zip(choices) {
            let short = layer != wanted(tile);
            allocation.limited |= short;
            let rung = tile.ladder.rungs().iter().find(|r| r.layer == layer);
            allocation.sending += rung.map_or(0, |r| r.bitrate);
            if layer != tile.current {
                let position = |layer| tile.ladder.position(layer);
                let down = position(layer) < position(tile.current);
                allocation.changes.push((index, layer, short && down));
            }
        }
        Some(allocation)
    }

    /// Gives consumer `index` of `id` the layer `layer` (or pauses it). A consumer moved down
    /// for want of bandwidth (`squeezed`) drops its layer at once rather than at the new
    /// layer's keyframe: the old layer's packets would only deepen the queue that keyframe
    /// must cross.
    fn set_layer(&mut self, id: ParticipantId, index: usize, layer: u8, squeezed: bool) {
        let Some(consumer) = self
            .participants
            .get_mut(&id)
            .and_then(|s| s.transport.consumers_mut().get_mut(index))
        else {
            return;
        };
        debug!(subscriber = %id, slot = index, from = consumer.layer, to = layer, "layer");
        consumer.layer = layer;
        if squeezed || layer == PAUSED {
            consumer.stream.detach();
        }
        if layer == PAUSED {
            self.metrics.tiles_paused.inc();
        } else {
            self.metrics.layer_switches.inc();
        }
    }

    /// Starts or ends a probe of `id`'s downlink after its allocation (see `Prober`).
    fn probe(&mut self, now: Instant, id: ParticipantId, allocation: &Allocation) {
        let Some(s) = self.participants.get_mut(&id) else {
            return;
        };
        let Some(estimate) = s.transport.downlink_estimate() else {
            return;
        };
        let was_probing = s.prober.is_probing();
        let outcome = s
            .prober
            .on_allocation(now, estimate, allocation.limited, allocation.sending);
        if outcome.is_some() || (s.prober.is_probing() && !was_probing) {
            let estimate = estimate.get();
            debug!(subscriber = %id, ?outcome, ?estimate, sending = allocation.sending, "probe");
        }
        let counter = match outcome {
            Some(ProbeOutcome::Lifted) => &self.metrics.probes_lifted,
            Some(ProbeOutcome::Held) => &self.metrics.probes_held,
            None => return,
        };
        counter.inc();
    }

    /// Tells each simulcast publisher which of its layers anyone receives (a consumer here, or
    /// a peer node whose subscription names the layer), so that it pauses the others: its
    /// uplink and encoder spend nothing on pictures nobody sees. A publisher on this node is
    /// told with `layers`; of one relayed from a peer, this node's subscription asks the peer
    /// only for the layers wanted here, so the link carries nothing nobody here sees.
    pub(super) fn hold_unreceived_layers(&mut self, now: Instant) {
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
        // what peers' subscriptions ask, and the stand-ins for layers the publisher paused
        let subscriptions = self.rooms.values().flat_map(|r| r.subscriptions.values());
        for stream in subscriptions.flatten() {
            let Some(p) = self
                .participants
                .get(&stream.publisher)
                .filter(|_| stream.kind == MediaKind::Video)
            else {
                continue;
            };
            let carried = p.video.carried(now, stream.layers);
            let layers = wanted.entry(stream.publisher).or_default();
            for (layer, wanted) in (0..).zip(layers.iter_mut()) {
                *wanted |= carried.contains(layer);
            }
        }
        let (mut told, mut resubscribe) = (Vec::new(), Vec::new());
        for p in self.participants.values_mut() {
            let layers = wanted.get(&p.id).copied().unwrap_or_default();
            // a relayed video whose every consumer here is paused is asked for not at all
            if p.relayed_from.is_some()
                && p.video.watch(layers.contains(&true))
                && !resubscribe.contains(&p.room)
            {
                resubscribe.push(p.room);
            }
            let Some(active) = p.video.hold(now, layers) else {
                continue;
            };
            debug!(publisher = %p.id, ?active, "layers held");
            match p.relayed_from {
                None => told.push((p.id, active)),
                Some(_) if !resubscribe.contains(&p.room) => resubscribe.push(p.room),
                Some(_) => {}
            }
        }
        for (id, active) in told {
            self.send(id, ServerMessage::Layers { active });
        }
        for room in resubscribe {
            self.update_subscriptions(room);
        }
    }
}

/// What an allocation changes for one subscriber.
struct Allocation {
    /// The downlink estimate it was made for.
    estimate: Option<u32>,
    /// Consumers (by index), the layers they are to carry now, and whether that is a move down
    /// for want of bandwidth.
    changes: Vec<(usize, u8, bool)>,
    /// Whether a tile got less than its size asks for.
    limited: bool,
    /// What the allocation sends the subscriber, in bits per second.
    sending: u32,
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
