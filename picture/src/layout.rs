//! Where each present participant's tile goes on the composed picture.
//!
//! `n` tiles form a grid of `ceil(sqrt(n))` columns and as many rows as needed, in the
//! order the participants were given; an incomplete last row is centred. Every tile keeps a
//! [`TILE_GAP`] margin inside its cell, where the active speaker's highlight is drawn.

/// Pixels between a tile and the edge of its grid cell.
pub const TILE_GAP: u32 = 4;

/// A rectangle on the composed picture, in pixels; position and size are even (4:2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Tile {
    /// The rectangle grown by `by` pixels on every side, clamped at 0.
    pub(crate) fn grown(self, by: u32) -> Tile {
        let (x, y) = (self.x.saturating_sub(by), self.y.saturating_sub(by));
        Tile {
            x,
            y,
            width: self.x + self.width + by - x,
            height: self.y + self.height + by - y,
        }
    }
}

/// The tiles of `count` participants on a `width` x `height` picture, in order.
pub fn grid(count: usize, width: u32, height: u32) -> Vec<Tile> {
    if count == 0 {
        return Vec::new();
    }
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let columns = (1..=count)
        .find(|&c| u64::from(c) * u64::from(c) >= u64::from(count))
        .unwrap_or(count);
    let rows = count.div_ceil(columns);
    let (cell_width, cell_height) = (width / columns, height / rows);
    let even = |v: u32| v & !1;
    let tile_width = even(cell_width.saturating_sub(2 * TILE_GAP)).max(2);
    let tile_height = even(cell_height.saturating_sub(2 * TILE_GAP)).max(2);
    (0..count)
        .map(|index| {
            let (row, column) = (index / columns, index % columns);
            let in_row = if row + 1 == rows {
                count - row * columns
            } else {
                columns
            };
            let left = (width - in_row * cell_width) / 2;
            Tile {
                x: even(left + column * cell_width + TILE_GAP),
                y: even(row * cell_height + TILE_GAP),
                width: tile_width,
                height: tile_height,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fills_the_picture() {
        assert_eq!(
            grid(1, 1280, 720),
            [Tile {
                x: 4,
                y: 4,
                width: 1272,
                height: 712
            }]
        );
    }

    #[test]
    fn three_make_two_rows_with_the_last_centred() {
        let tiles = grid(3, 1280, 720);
        assert_eq!((tiles[0].x, tiles[0].y), (4, 4));
        assert_eq!((tiles[1].x, tiles[1].y), (644, 4));
        assert_eq!((tiles[2].x, tiles[2].y), (324, 364));
        assert!(tiles.iter().all(|t| t.width == 632 && t.height == 352));
    }

    #[test]
    fn ten_fit_a_four_by_three_grid_inside_the_picture() {
        let tiles = grid(10, 960, 540);
        assert_eq!(tiles.len(), 10);
        for tile in &tiles {
            assert!(
                tile.x + tile.width <= 960 && tile.y + tile.height <= 540,
                "{tile:?}"
            );
            assert_eq!((tile.x % 2, tile.y % 2, tile.width % 2), (0, 0, 0));
        }
        assert_eq!(tiles[8].y, tiles[9].y);
        assert!(tiles[8].x > 0 && tiles[9].x > tiles[8].x);
    }
}
