//! Simulcast: the layers of a publisher's video, and the one each consumer is to carry.
//!
//! A browser publishing simulcast sends the same camera as up to [`MAX_LAYERS`] H.264 streams,
//! each on its own SSRC and told apart by its RTP stream id (rid). The transport numbers them
//! in the order the offer lists them; [`VideoLayers`] ranks them by the picture height their
//! keyframes' SPS announce, notes which are live (the browser's encoder drops its upper layers
//! when bandwidth or CPU run short, and takes them up again later), and throttles keyframe
//! requests per layer, so that a consumer switching layers asks for a keyframe of that layer
//! only. A publisher without simulcast is a single layer 0, and everything here is a no-op
//! for it.
//!
//! [`ladder`](VideoLayers::ladder) lists the layers a consumer may carry, smallest first, with
//! the bit rate each arrives at (what carrying it costs a subscriber's downlink);
//! [`choose`](VideoLayers::choose) picks from it the smallest layer at least as tall as the
//! tile its subscriber renders, or the best one when the subscriber said nothing or renders it
//! taller than any layer. [`hold`](VideoLayers::hold) decides which layers the publisher is to
//! pause, nobody receiving them; those stay choices, and a choice falling on one asks for it
//! again.

use crate::media::keyframe::KeyframeThrottle;
use crate::media::sps;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Most layers of one publisher's video.
pub const MAX_LAYERS: usize = 3;

/// A layer that sent nothing for this long is no longer live: its publisher paused it, or
/// stopped sending altogether.
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);

/// A layer this far behind the publisher's freshest layer is paused (a browser's encoder
/// dropped it for want of bandwidth or CPU) while the others go on: passed over at once
/// rather than after [`LAYER_TIMEOUT`]. Longer than the gaps an encoder's frame dropping leaves
/// in one layer.
pub const PAUSE_GAP: Duration = Duration::from_millis(500);

/// The window a layer's bit rate is measured over: long enough to hold a keyframe and the
/// frames after it.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Bytes a forwarded packet costs on the wire beyond its payload: RTP header and extensions,
/// the SRTP tag, UDP and IP.
const PACKET_OVERHEAD: u64 = 70;

/// A layer's bit rate, measured over consecutive windows.
#[derive(Debug, Default)]
struct Rate {
    window_start: Option<Instant>,
    bytes: u64,
    /// Bits per second over the last full window.
    last: u32,
}

impl Rate {
    fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            // a window that ended long ago (the layer paused) says nothing about this one
            self.last = if elapsed < RATE_WINDOW * 2 {
                u32::try_from(self.bytes * 8 * 1000 / elapsed.as_millis().max(1) as u64)
                    .unwrap_or(u32::MAX)
            } else {
                0
            };
            self.window_start = Some(now);
            self.bytes = 0;
        }
        self.bytes += bytes as u64 + PACKET_OVERHEAD;
    }
}

/// What a layer is taken to cost before its rate was measured (it just started, or was paused
/// since the call began), by its picture height: about what browsers send at that size.
fn assumed_bitrate(height: Option<u32>) -> u32 {
    match height {
        Some(0..=135) => 100_000,
        Some(136..=270) => 200_000,
        Some(271..=405) => 500_000,
        Some(406..=540) => 800_000,
        Some(_) => 1_500_000,
        None => 300_000,
    }
}

/// A set of a publisher's layers (by number), as a cascade link's subscription names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LayerSet(u8);

impl LayerSet {
    /// No layer.
    pub const NONE: Self = Self(0);
    /// Every layer.
    pub const ALL: Self = Self((1 << MAX_LAYERS) - 1);

    /// Whether `layer` is in the set.
    pub fn contains(self, layer: u8) -> bool {
        layer < 8 && self.0 & (1 << layer) != 0
    }

    /// The set with `layer` added (out-of-range layers are ignored).
    #[must_use]
    pub fn with(self, layer: u8) -> Self {
        if usize::from(layer) < MAX_LAYERS {
            Self(self.0 | 1 << layer)
        } else {
            self
        }
    }

    /// The layers in either set.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The layers in this set and not in `other`.
    pub fn without(self, other: Self) -> impl Iterator<Item = u8> {
        (0..MAX_LAYERS as u8).filter(move |&l| self.contains(l) && !other.contains(l))
    }
}

impl Default for LayerSet {
    fn default() -> Self {
        Self::ALL
    }
}

/// One step of a [`Ladder`]: a layer a consumer may carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rung {
    /// The layer's number.
    pub layer: u8,
    /// Its picture height, once a keyframe said.
    pub height: Option<u32>,
    /// The bits per second it arrives at (until a full window of it was measured since it last
    /// paused: what a layer of its height is taken to cost).
    pub bitrate: u32,
}

/// The layers a consumer may carry, smallest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ladder {
    rungs: [Rung; MAX_LAYERS],
    len: usize,
}

impl Ladder {
    /// The rungs, smallest first.
    pub fn rungs(&self) -> &[Rung] {
        &self.rungs[..self.len]
    }

    /// The position of `layer` on the ladder.
    pub fn position(&self, layer: u8) -> Option<usize> {
        self.rungs().iter().position(|r| r.layer == layer)
    }

    /// The position of the smallest rung at least `wanted_height` tall, else of the top rung.
    pub fn fitting(&self, wanted_height: Option<u32>) -> Option<usize> {
        let top = self.len.checked_sub(1)?;
        Some(wanted_height.map_or(top, |wanted| {
            self.rungs()
                .iter()
                .position(|r| r.height.is_some_and(|h| h >= wanted))
                .unwrap_or(top)
        }))
    }
}

/// One layer of a publisher's video.
#[derive(Debug, Default)]
struct Layer {
    ssrc: Option<u32>,
    /// Picture height from its last SPS.
    height: Option<u32>,
    last_packet: Option<Instant>,
    keyframes: KeyframeThrottle,
    rate: Rate,
}

impl Layer {
    /// What it costs a subscriber: its rate over the last full window while it sends, else
    /// what a layer of its height is taken to cost (a rate measured before a pause, or while
    /// its encoder was starting, says little about the next one).
    fn bitrate(&self, now: Instant) -> u32 {
        let fresh = self
            .last_packet
            .is_some_and(|at| now.saturating_duration_since(at) < RATE_WINDOW);
        match self.rate.last {
            measured if fresh && measured > 0 => measured,
            _ => assumed_bitrate(self.height),
        }
    }

    /// Whether it sends: recently, and not far behind the `freshest` layer.
    fn is_live(&self, now: Instant, freshest: Instant) -> bool {
        self.last_packet.is_some_and(|at| {
            now.saturating_duration_since(at) < LAYER_TIMEOUT
                && freshest.saturating_duration_since(at) < PAUSE_GAP
        })
    }
}

/// The layers of one publisher's video.
#[derive(Debug, Default)]
pub struct VideoLayers {
    layers: [Layer; MAX_LAYERS],
    /// The layers the publisher was asked to pause, nobody receiving them (see
    /// [`Self::hold`]): they were live, stopped because the node asked, and are still chosen
    /// when they fit, which asks for them again.
    held: [bool; MAX_LAYERS],
    /// Nobody on this node receives any layer (see [`Self::watch`]).
    unwatched: bool,
}

impl VideoLayers {
    /// Layers whose keyframe requests go out at most once per `interval` each.
    pub fn with_keyframe_interval(interval: Duration) -> Self {
        Self {
            layers: std::array::from_fn(|_| Layer {
                keyframes: KeyframeThrottle::new(interval),
                ..Layer::default()
            }),
            held: [false; MAX_LAYERS],
            unwatched: false,
        }
    }

    /// Notes a packet of `layer` (out-of-range layers are ignored): its SSRC, that it is live,
    /// its size, and the picture size when it carries an SPS.
    pub fn on_packet(
        &mut self,
        now: Instant,
        layer: u8,
        ssrc: u32,
        payload: &[u8],
        keyframe_start: bool,
    ) {
        let Some(l) = self.layers.get_mut(usize::from(layer)) else {
            return;
        };
        l.ssrc = Some(ssrc);
        l.last_packet = Some(now);
        l.rate.add(now, payload.len());
        if keyframe_start {
            l.keyframes.keyframe_seen();
            if let Some((_, height)) = sps::picture_size(payload) {
                let before = l.height.replace(height);
                if let Some(before) = before.filter(|&b| b != height && b > 0) {
                    self.rescale_held(usize::from(layer), before, height);
                }
            }
        }
    }

    /// The publisher's picture changed size (a new camera resolution, or its encoder scaling
    /// under load): the layers held paused send no keyframe to tell their new size, so they
    /// are taken to have changed alike (a browser's layers are fixed fractions of the camera's
    /// picture) until they send again. Without this a small tile would pass over a held layer
    /// by its old, smaller height and keep the large one.
    fn rescale_held(&mut self, changed: usize, before: u32, after: u32) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            if i != changed && self.held[i] {
                layer.height = layer.height.map(|h| {
                    u32::try_from(u64::from(h) * u64::from(after) / u64::from(before))
                        .unwrap_or(u32::MAX)
                });
            }
        }
    }

    /// The SSRC `layer` arrives on, once it has sent a packet.
    pub fn ssrc(&self, layer: u8) -> Option<u32> {
        self.layers.get(usize::from(layer))?.ssrc
    }

    /// The layer arriving on `ssrc`.
    pub fn layer_of(&self, ssrc: u32) -> Option<u8> {
        let index = self.layers.iter().position(|l| l.ssrc == Some(ssrc))?;
        u8::try_from(index).ok()
    }

    /// Whether more than one layer ever arrived.
    pub fn is_simulcast(&self) -> bool {
        self.layers.iter().filter(|l| l.ssrc.is_some()).count() > 1
    }

    /// The layers a consumer may carry, smallest first: the live ones (and those held for
    /// want of a receiver, which come back when asked); with no live layer, every layer that
    /// ever arrived. Allocates nothing: a cascade link's stream asks at every packet it relays.
    pub fn ladder(&self, now: Instant) -> Ladder {
        let seen = |i: usize| self.layers[i].ssrc.is_some();
        let freshest = self.layers.iter().filter_map(|l| l.last_packet).max();
        let live = |i: usize| {
            seen(i) && (self.held[i] || freshest.is_some_and(|f| self.layers[i].is_live(now, f)))
        };
        let any_live = (0..MAX_LAYERS).any(live);
        let mut ladder = Ladder::default();
        for i in (0..MAX_LAYERS).filter(|&i| if any_live { live(i) } else { seen(i) }) {
            let l = &self.layers[i];
            ladder.rungs[ladder.len] = Rung {
                layer: i as u8,
                height: l.height,
                bitrate: l.bitrate(now),
            };
            ladder.len += 1;
        }
        ladder.rungs[..ladder.len].sort_unstable_by_key(|r| (r.height.unwrap_or(0), r.layer));
        ladder
    }

    /// The layer a consumer is to carry: the smallest live layer at least `wanted_height` tall,
    /// else the best live one; with no live layer, the best layer that ever arrived.
    pub fn choose(&self, now: Instant, wanted_height: Option<u32>) -> u8 {
        let ladder = self.ladder(now);
        ladder
            .fitting(wanted_height)
            .map_or(0, |position| ladder.rungs()[position].layer)
    }

    /// Which layers the publisher is to send, given the layers its consumers carry or show
    /// (`wanted`, by layer): those wanted, those it paused itself (asked for nothing, it
    /// takes them up again when it can), and those whose picture size no keyframe has told
    /// yet (ranked by size, they could not be chosen rightly: a cascade link's layer that
    /// began mid-picture goes on until its keyframe); while nobody receives any, all of them.
    /// Returns the layers' new state when it changed: what the publisher is told (`layers`),
    /// the order being its offer's.
    pub fn hold(&mut self, now: Instant, wanted: [bool; MAX_LAYERS]) -> Option<Vec<bool>> {
        if !self.is_simulcast() {
            return None;
        }
        let freshest = self.layers.iter().filter_map(|l| l.last_packet).max();
        let seen: [bool; MAX_LAYERS] = std::array::from_fn(|i| self.layers[i].ssrc.is_some());
        let watched = (0..MAX_LAYERS).any(|i| wanted[i] && seen[i]);
        let held: [bool; MAX_LAYERS] = std::array::from_fn(|i| {
            let layer = &self.layers[i];
            let live = freshest.is_some_and(|f| layer.is_live(now, f));
            let sized = layer.height.is_some();
            watched && seen[i] && sized && !wanted[i] && (self.held[i] || live)
        });
        if held == self.held {
            return None;
        }
        self.held = held;
        let count = (0..MAX_LAYERS)
            .rposition(|i| seen[i])
            .map_or(0, |last| last + 1);
        Some((0..count).map(|i| !held[i]).collect())
    }

    /// Notes whether anyone on this node receives a layer of this video (a relayed one: its
    /// consumers' allocations may all be paused for want of bandwidth); whether that changed.
    pub fn watch(&mut self, watched: bool) -> bool {
        let changed = self.unwatched == watched;
        self.unwatched = !watched;
        changed
    }

    /// The layers a cascade link's subscription asks of a relayed video: none while nobody here
    /// receives any (see [`Self::watch`]); else those not held (see [`Self::hold`]): those
    /// wanted, those paused by the publisher itself, and those never seen (so that the node
    /// learns every layer its peer's publisher has).
    pub fn requested(&self) -> LayerSet {
        if self.unwatched {
            return LayerSet::NONE;
        }
        (0..MAX_LAYERS as u8)
            .filter(|&l| !self.held[usize::from(l)])
            .fold(LayerSet::NONE, LayerSet::with)
    }

    /// The layers a cascade link carries to a peer that asked for `requested`: those, and in
    /// place of one the publisher paused itself, the best live layer no taller than it (the
    /// lowest live one when none is), so that the peer sees the pause as soon as this node
    /// does and its subscribers fall back to what still flows. Allocates nothing: the link
    /// asks at every packet it relays.
    pub fn carried(&self, now: Instant, requested: LayerSet) -> LayerSet {
        let ladder = self.ladder(now);
        let mut carried = requested;
        for layer in 0..MAX_LAYERS as u8 {
            let l = &self.layers[usize::from(layer)];
            if !requested.contains(layer) || l.ssrc.is_none() || ladder.position(layer).is_some() {
                continue;
            }
            let rungs = ladder.rungs();
            let stand_in = rungs
                .iter()
                .rev()
                .find(|r| r.height.unwrap_or(0) <= l.height.unwrap_or(0))
                .or(rungs.first());
            if let Some(rung) = stand_in {
                carried = carried.with(rung.layer);
            }
        }
        carried
    }

    /// Someone wants a keyframe of `layer`: its SSRC when a request must be sent now (it is
    /// otherwise folded into one sent at [`Self::poll_timeout`]).
    pub fn request_keyframe(&mut self, now: Instant, layer: u8) -> Option<u32> {
        let l = self.layers.get_mut(usize::from(layer))?;
        let ssrc = l.ssrc?;
        l.keyframes.request(now).then_some(ssrc)
    }

    /// When a coalesced keyframe request falls due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.layers
            .iter()
            .filter_map(|l| l.keyframes.poll_timeout())
            .min()
    }

    /// The SSRCs of the layers whose coalesced keyframe request is due at `now`.
    pub fn due_keyframe_requests(&mut self, now: Instant) -> impl Iterator<Item = u32> + '_ {
        self.layers
            .iter_mut()
            .filter_map(move |l| l.keyframes.handle_timeout(now).then_some(l.ssrc)?)
    }
}

#[cfg(test)]
pub(crate) mod tests;
