//! The composed picture (planar YUV 4:2:0) and what is drawn on it: a background, decoded
//! frames scaled into their tiles, the active speaker's highlight and name labels.

use openh264::formats::YUVSource;

use crate::layout::Tile;

/// Luma of the picture's background.
pub const BACKGROUND_LUMA: u8 = 16;
/// Luma of a tile whose participant sends no picture, and of the letterbox around a frame.
pub const EMPTY_TILE_LUMA: u8 = 32;
/// Chroma of grey.
const NEUTRAL: u8 = 128;
/// The active speaker's highlight (a saturated yellow-green) as (Y, U, V).
const HIGHLIGHT: (u8, u8, u8) = (190, 40, 150);
/// Glyph cells are scaled by this much.
const FONT_SCALE: u32 = 2;

/// A decoded picture, tightly packed planar YUV 4:2:0 with even dimensions.
#[derive(Debug, Clone, Default)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// The luma plane, `width` x `height`.
    pub y: Vec<u8>,
    /// The blue-difference plane, half the width and height.
    pub u: Vec<u8>,
    /// The red-difference plane, half the width and height.
    pub v: Vec<u8>,
}

impl Picture {
    /// A `width` x `height` picture of one colour.
    pub fn filled(width: usize, height: usize, (y, u, v): (u8, u8, u8)) -> Self {
        let chroma = (width / 2) * (height / 2);
        Self {
            width,
            height,
            y: vec![y; width * height],
            u: vec![u; chroma],
            v: vec![v; chroma],
        }
    }

    /// Copies a decoder's picture (planes with strides) into this one, its dimensions rounded
    /// down to even.
    pub fn copy_from(&mut self, yuv: &impl YUVSource) {
        let (ys, us, vs) = yuv.strides();
        let planes = [(yuv.y(), ys), (yuv.u(), us), (yuv.v(), vs)];
        let (width, height) = yuv.dimensions();
        let (width, height) = (width & !1, height & !1);
        self.width = width;
        self.height = height;
        let sizes = [
            (width, height),
            (width / 2, height / 2),
            (width / 2, height / 2),
        ];
        let targets = [&mut self.y, &mut self.u, &mut self.v];
        for ((target, (plane, stride)), (w, h)) in targets.into_iter().zip(planes).zip(sizes) {
            target.clear();
            for row in 0..h {
                let start = row * stride;
                match plane.get(start..start + w) {
                    Some(line) => target.extend_from_slice(line),
                    None => target.resize(target.len() + w, NEUTRAL),
                }
            }
        }
    }

    /// Fills `rect` (clamped to the picture) with one colour.
    pub fn fill(&mut self, rect: Tile, (y, u, v): (u8, u8, u8)) {
        let Some((x0, y0, x1, y1)) = self.clamp(rect) else {
            return;
        };
        for row in y0..y1 {
            self.y[row * self.width + x0..row * self.width + x1].fill(y);
        }
        let cw = self.width / 2;
        for row in y0 / 2..y1 / 2 {
            self.u[row * cw + x0 / 2..row * cw + x1 / 2].fill(u);
            self.v[row * cw + x0 / 2..row * cw + x1 / 2].fill(v);
        }
    }

    /// Fills the whole picture with the background.
    pub fn clear(&mut self) {
        self.y.fill(BACKGROUND_LUMA);
        self.u.fill(NEUTRAL);
        self.v.fill(NEUTRAL);
    }

    /// Fills `tile` as a present participant without a picture.
    pub fn empty_tile(&mut self, tile: Tile) {
        self.fill(tile, (EMPTY_TILE_LUMA, NEUTRAL, NEUTRAL));
    }

    /// Draws `frame` into `tile`, scaled to fit with its aspect ratio kept (nearest
    /// neighbour), centred, letterboxed with the empty tile's grey.
    pub fn draw_scaled(&mut self, tile: Tile, frame: &Picture) {
        self.empty_tile(tile);
        if frame.width < 2 || frame.height < 2 {
            return;
        }
        let (tw, th) = (tile.width as usize, tile.height as usize);
        let (fw, fh) = (frame.width, frame.height);
        let (w, h) = if tw * fh <= th * fw {
            (tw, (tw * fh / fw) & !1)
        } else {
            ((th * fw / fh) & !1, th)
        };
        let inner = Tile {
            x: (tile.x + ((tw - w) / 2) as u32) & !1,
            y: (tile.y + ((th - h) / 2) as u32) & !1,
            width: w as u32,
            height: h as u32,
        };
        let Some((x0, y0, x1, y1)) = self.clamp(inner) else {
            return;
        };
        let columns: Vec<usize> = (0..x1 - x0).map(|x| x * fw / w).collect();
        for row in 0..y1 - y0 {
            let source = &frame.y[(row * fh / h) * fw..][..fw];
            let target = &mut self.y[(y0 + row) * self.width + x0..][..x1 - x0];
            for (pixel, &column) in target.iter_mut().zip(&columns) {
                *pixel = source[column];
            }
        }
        let (cw, fcw) = (self.width / 2, fw / 2);
        let columns: Vec<usize> = columns.iter().step_by(2).map(|c| c / 2).collect();
        for row in 0..(y1 - y0) / 2 {
            let source_row = ((2 * row) * fh / h) / 2 * fcw;
            let start = (y0 / 2 + row) * cw + x0 / 2;
            for (plane, target) in [(&frame.u, &mut self.u), (&frame.v, &mut self.v)] {
                let source = &plane[source_row..][..fcw];
                for (pixel, &column) in target[start..][..columns.len()].iter_mut().zip(&columns) {
                    *pixel = source[column];
                }
            }
        }
    }

    /// Draws the active speaker's highlight in the margin around `tile`.
    pub fn highlight(&mut self, tile: Tile, thickness: u32) {
        let outer = tile.grown(thickness);
        let bands = [
            Tile {
                height: tile.y - outer.y,
                ..outer
            },
            Tile {
                y: tile.y + tile.height,
                height: outer.y + outer.height - tile.y - tile.height,
                ..outer
            },
            Tile {
                width: tile.x - outer.x,
                ..outer
            },
            Tile {
                x: tile.x + tile.width,
                width: outer.x + outer.width - tile.x - tile.width,
                ..outer
            },
        ];
        for band in bands {
            self.fill(band, HIGHLIGHT);
        }
    }

    /// Writes `text` (ASCII letters, digits, a few signs) in white on a dark box at the
    /// bottom left of `tile`; the text is cut to fit the tile.
    pub fn label(&mut self, tile: Tile, text: &str) {
        let cell = 6 * FONT_SCALE;
        let fits = (tile.width.saturating_sub(4 * FONT_SCALE) / cell) as usize;
        let glyphs: Vec<[u8; 7]> = text.chars().take(fits).map(glyph).collect();
        if glyphs.is_empty() || tile.height < 12 * FONT_SCALE {
            return;
        }
        let box_rect = Tile {
            x: tile.x,
            y: tile.y + tile.height - 11 * FONT_SCALE,
            width: (glyphs.len() as u32 * cell + 4 * FONT_SCALE) & !1,
            height: 11 * FONT_SCALE,
        };
        self.fill(box_rect, (BACKGROUND_LUMA, NEUTRAL, NEUTRAL));
        let (left, top) = (box_rect.x + 2 * FONT_SCALE, box_rect.y + 2 * FONT_SCALE);
        for (index, rows) in glyphs.iter().enumerate() {
            for (dy, bits) in rows.iter().enumerate() {
                for dx in 0..5u32 {
                    if bits & (0x10 >> dx) == 0 {
                        continue;
                    }
                    let x = left + index as u32 * cell + dx * FONT_SCALE;
                    let y = top + dy as u32 * FONT_SCALE;
                    for py in y..y + FONT_SCALE {
                        let start = py as usize * self.width + x as usize;
                        if let Some(line) = self.y.get_mut(start..start + FONT_SCALE as usize) {
                            line.fill(235);
                        }
                    }
                }
            }
        }
    }

    /// `rect` clipped to the picture as (x0, y0, x1, y1), even; `None` if nothing is left.
    fn clamp(&self, rect: Tile) -> Option<(usize, usize, usize, usize)> {
        let x0 = (rect.x as usize).min(self.width) & !1;
        let y0 = (rect.y as usize).min(self.height) & !1;
        let x1 = ((rect.x + rect.width) as usize).min(self.width) & !1;
        let y1 = ((rect.y + rect.height) as usize).min(self.height) & !1;
        (x1 > x0 && y1 > y0).then_some((x0, y0, x1, y1))
    }
}

/// The 5x7 bitmap of `c` (rows top to bottom, bit 4 leftmost); unknown characters are a box.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        ' ' => [0; 7],
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'B' => [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
        'C' => [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
        'D' => [0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'F' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
        'G' => [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
        'H' => [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'I' => [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'P' => [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10],
        'Q' => [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'T' => [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a],
        'X' => [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04],
        'Z' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f],
        '.' => [0, 0, 0, 0, 0, 0x0c, 0x0c],
        ',' => [0, 0, 0, 0, 0x0c, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1f, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1f],
        ':' => [0, 0x0c, 0x0c, 0, 0x0c, 0x0c, 0],
        '\'' => [0x0c, 0x04, 0x08, 0, 0, 0, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        _ => [0x1f, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1f],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_scaled_into_its_tile_and_letterboxed() {
        let mut canvas = Picture::filled(64, 32, (0, 0, 0));
        let frame = Picture::filled(8, 8, (200, 50, 60));
        let tile = Tile {
            x: 0,
            y: 0,
            width: 32,
            height: 16,
        };
        canvas.draw_scaled(tile, &frame);
        let luma = |x: usize, y: usize| canvas.y[y * 64 + x];
        assert_eq!(
            luma(0, 0),
            EMPTY_TILE_LUMA,
            "letterbox left of a square frame"
        );
        assert_eq!(luma(16, 8), 200, "the frame in the middle");
        assert_eq!(luma(40, 8), 0, "nothing outside the tile");
        assert_eq!(canvas.u[4 * 32 + 8], 50);
        assert_eq!(canvas.v[4 * 32 + 8], 60);
    }

    #[test]
    fn the_highlight_surrounds_the_tile_only() {
        let mut canvas = Picture::filled(32, 32, (0, 128, 128));
        let tile = Tile {
            x: 8,
            y: 8,
            width: 16,
            height: 16,
        };
        canvas.highlight(tile, 4);
        assert_eq!(canvas.y[4 * 32 + 4], HIGHLIGHT.0);
        assert_eq!(canvas.y[16 * 32 + 26], HIGHLIGHT.0);
        assert_eq!(canvas.y[16 * 32 + 16], 0, "inside untouched");
        assert_eq!(canvas.y[2 * 32 + 2], 0, "outside untouched");
    }

    #[test]
    fn labels_stay_inside_a_small_tile() {
        let mut canvas = Picture::filled(40, 40, (0, 128, 128));
        let tile = Tile {
            x: 0,
            y: 0,
            width: 40,
            height: 40,
        };
        canvas.label(tile, "A very long name, cut to fit");
        assert!(canvas.y.contains(&235));
        assert_eq!(canvas.y.len(), 1600);
    }
}
