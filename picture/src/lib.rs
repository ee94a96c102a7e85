//! `kaskade_picture`: the video pictures kaskade makes itself, shared by the recorder (its
//! composed grid video), the SIP gateway (the grid a room system sees) and kaskade's clients
//! (which decode what they receive).
//!
//! - [`receive`]: one H.264 RTP stream reordered, reassembled into access units and decoded.
//! - [`canvas`]: a planar YUV 4:2:0 picture and what is drawn on it.
//! - [`layout`]: where each tile of a grid goes.
//! - [`encode`]: a picture encoded into H.264 NAL units.

pub mod canvas;
pub mod encode;
pub mod layout;
pub mod receive;

pub use canvas::Picture;
pub use layout::{TILE_GAP, Tile, grid};
/// Why openh264 failed to encode or decode.
pub use openh264::Error as CodecError;
