//! Downlink allocation: which layer of each publisher's video a subscriber receives, given its
//! downlink estimate (see `bwe`) and the heights it renders each tile at.
//!
//! Audio comes first: its share is set aside before any video. Then every tile gets its
//! smallest layer, the active speaker's first, as long as the budget holds (the speaker's
//! always: a subscriber sees the speaker even on a link too thin for anything); a tile that
//! does not fit is paused, and shows its last picture. What remains lifts tiles towards the
//! layer their rendered size asks for, again the speaker's first, one step at a time. A step
//! above the layer a tile carries now must fit with [`UPSWITCH_HEADROOM`] to spare, so that an
//! estimate hovering at a layer's rate does not switch it up and down at every tick (each
//! switch costs a keyframe); a tile keeps its layer while the layer itself fits.
//!
//! Pure and allocation-free: the core calls it for every subscriber at each layer-choice tick.

use crate::media::simulcast::{Ladder, MAX_LAYERS};

/// The share of the downlink set aside for each audio stream a subscriber receives: Opus at
/// 32 kbit/s and its packets' overhead.
pub const AUDIO_SHARE: u32 = 48_000;

/// A step up must fit its layer's rate this much over: a layer's rate varies with the picture
/// and a keyframe's burst is several frames' worth.
pub const UPSWITCH_HEADROOM: f64 = 1.2;

/// Most video tiles one allocation weighs (a subscriber's receive slots).
pub const MAX_TILES: usize = 32;

/// The layer a tile is given: a layer number, or [`PAUSED`].
pub type Choice = u8;

/// A tile given no layer: it carries nothing until the budget grows.
pub const PAUSED: Choice = u8::MAX;

/// One video tile of a subscriber, as the allocator weighs it.
#[derive(Debug, Clone, Copy)]
pub struct Tile {
    /// The publisher's layers the tile may carry.
    pub ladder: Ladder,
    /// The position on the ladder its rendered size asks for.
    pub wanted: usize,
    /// The layer it carries now (or [`PAUSED`]).
    pub current: Choice,
    /// Whether it shows the active speaker.
    pub speaker: bool,
}

/// Chooses a layer for each of `tiles` (at most [`MAX_TILES`]; the rest are not weighed)
/// within `budget` bits per second of video. A tile whose publisher sent nothing yet gets
/// layer 0, whatever comes first.
pub fn allocate(budget: u32, tiles: &[Tile]) -> [Choice; MAX_TILES] {
    let count = tiles.len().min(MAX_TILES);
    let mut order: [usize; MAX_TILES] = std::array::from_fn(|i| i);
    // the speaker first, then the tiles in the subscriber's order
    order[..count].sort_by_key(|&i| (!tiles[i].speaker, i));
    let mut positions: [Option<usize>; MAX_TILES] = [None; MAX_TILES];
    let mut left = u64::from(budget);
    for (rank, &i) in order[..count].iter().enumerate() {
        if tiles[i].ladder.rungs().is_empty() {
            continue;
        }
        let cost = step_cost(&tiles[i], 0, None);
        if cost <= left || rank == 0 {
            positions[i] = Some(0);
            left = left.saturating_sub(cost);
        }
    }
    for &i in &order[..count] {
        let tile = &tiles[i];
        let Some(mut at) = positions[i] else {
            continue;
        };
        while at < tile.wanted.min(tile.ladder.rungs().len().saturating_sub(1)) {
            let cost = step_cost(tile, at + 1, Some(at));
            if cost > left {
                break;
            }
            left -= cost;
            at += 1;
        }
        positions[i] = Some(at);
    }
    let mut choices = [PAUSED; MAX_TILES];
    for (i, tile) in tiles.iter().enumerate().take(count) {
        let rungs = tile.ladder.rungs();
        choices[i] = match positions[i] {
            Some(at) => rungs[at].layer,
            // nothing arrived yet: whatever comes first
            None if rungs.is_empty() => 0,
            None => PAUSED,
        };
    }
    choices
}

/// What moving `tile` to position `to` costs, from position `from` (none: from nothing).
fn step_cost(tile: &Tile, to: usize, from: Option<usize>) -> u64 {
    let rungs = tile.ladder.rungs();
    let rate = u64::from(rungs[to].bitrate);
    let current = tile
        .ladder
        .position(tile.current)
        .filter(|_| tile.current != PAUSED);
    let with_headroom = if current.is_some_and(|c| to <= c) {
        rate
    } else {
        (rate as f64 * UPSWITCH_HEADROOM) as u64
    };
    let already = from.map_or(0, |f| u64::from(rungs[f].bitrate));
    with_headroom.saturating_sub(already)
}

const _: () = assert!(MAX_LAYERS <= MAX_TILES);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::simulcast::VideoLayers;
    use crate::media::simulcast::tests::{SPS_120, SPS_240, SPS_1080};
    use std::time::{Duration, Instant};

    /// A publisher's three layers at 1,200 / 400 / 120 kbit/s (layers 0 / 1 / 2), measured
    /// over two seconds of 25 packets a second each.
    fn ladder() -> Ladder {
        let t0 = Instant::now();
        let mut v = VideoLayers::default();
        let layers: [(u8, &[u8], u64); 3] = [
            (0, &SPS_1080, 1_200_000),
            (1, &SPS_240, 400_000),
            (2, &SPS_120, 120_000),
        ];
        for tick in 0..=50u32 {
            let at = t0 + Duration::from_millis(40) * tick;
            for (layer, sps, bps) in layers {
                // 25 packets a second, each with its share of the rate (less the overhead)
                let size = (bps / 8 / 25 - 70) as usize;
                let mut payload = vec![0u8; size];
                payload[..sps.len()].copy_from_slice(sps);
                v.on_packet(at, layer, 0x10 + u32::from(layer), &payload, tick == 0);
            }
        }
        v.ladder(t0 + Duration::from_secs(2))
    }

    fn tile(wanted: usize, current: Choice, speaker: bool) -> Tile {
        Tile {
            ladder: ladder(),
            wanted,
            current,
            speaker,
        }
    }

    #[test]
    fn the_ladder_knows_each_layers_rate() {
        let ladder = ladder();
        let rates: Vec<(u8, u32)> = ladder
            .rungs()
            .iter()
            .map(|r| (r.layer, r.bitrate))
            .collect();
        assert_eq!(rates.len(), 3);
        for ((layer, bps), (want_layer, want_bps)) in
            rates
                .into_iter()
                .zip([(2, 120_000), (1, 400_000), (0, 1_200_000)])
        {
            assert_eq!(layer, want_layer);
            assert!(bps.abs_diff(want_bps) < want_bps / 20, "{layer}: {bps}");
        }
    }

    /// A budget, tiles as (wanted position, current layer, speaker), and the choices expected.
    type Case = (u32, &'static [(usize, Choice, bool)], &'static [Choice]);

    #[test]
    fn layers_fit_the_budget_speaker_first() {
        let cases: [Case; 8] = [
            // plenty: each tile what its size asks for
            (5_000_000, &[(2, 0, false), (1, 1, true)], &[0, 1]),
            // the speaker's top layer fits beside the other's lowest, and nothing more
            (1_400_000, &[(2, 0, false), (2, 0, true)], &[2, 0]),
            // less: both one step down
            (1_300_000, &[(2, 0, false), (2, 0, true)], &[1, 1]),
            // thin: the speaker's low layer, the other paused
            (150_000, &[(2, 0, false), (2, 0, true)], &[PAUSED, 2]),
            // too thin for anything: the speaker still gets its lowest
            (50_000, &[(2, 2, false), (2, 2, true)], &[PAUSED, 2]),
            // a layer carried now is kept while it fits, without headroom
            (1_250_000, &[(2, 0, true)], &[0]),
            // but a step up needs the headroom: 1.2 x 1.2 Mbit/s
            (1_250_000, &[(2, 1, true)], &[1]),
            (1_450_000, &[(2, 1, true)], &[0]),
        ];
        for (budget, tiles, expected) in cases {
            let tiles: Vec<Tile> = tiles
                .iter()
                .map(|&(wanted, current, speaker)| tile(wanted, current, speaker))
                .collect();
            let choices = allocate(budget, &tiles);
            assert_eq!(&choices[..tiles.len()], expected, "budget {budget}");
        }
    }

    #[test]
    fn tiles_without_layers_are_left_alone() {
        let empty = Tile {
            ladder: Ladder::default(),
            wanted: 0,
            current: 0,
            speaker: true,
        };
        let choices = allocate(2_000_000, &[empty, tile(2, 0, false)]);
        assert_eq!(choices[0], 0);
        assert_eq!(choices[1], 0);
    }
}
