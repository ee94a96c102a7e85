//! The picture a SIP call's far end sees in grid mode: every other participant of the meeting
//! in a tile (the active speaker highlighted, names written on the tiles), composed from their
//! decoded video and encoded with openh264 at the size and rate the far end decodes
//! ([`format`]).
//!
//! [`Compositor`] is the work without I/O or clocks of its own: the node's delivered video
//! packets go in (one H.264 receiver per delivered stream reorders, reassembles and decodes
//! them, asking for a keyframe when it cannot go on), and each [`Compositor::render`] makes one
//! picture and its RTP packets, one NAL unit per packet (slices are cut to fit, so a far end in
//! packetization mode 0 takes them as well as one in mode 1). [`GridView`] runs a compositor
//! on a thread of its own, so decoding and encoding never hold up the call's task.

pub mod format;

use crate::media::demux::ParticipantId;
use crate::sip::h264::{rtp_header, rtp_parts};
use bytes::Bytes;
use format::PictureFormat;
use kaskade_media::media::ingest::DELIVERED_VIDEO;
use kaskade_picture::encode::{EncoderSettings, H264Encoder};
use kaskade_picture::receive::H264Receiver;
use kaskade_picture::{CodecError, Picture, TILE_GAP, Tile, grid};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as async_mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::warn;

/// What the far end reads while it is alone in the meeting.
const WAITING: &str = "Waiting for others to join";
/// The largest NAL unit sent, so one fits a datagram with its RTP header (and SRTP's tag).
const MAX_NAL_SIZE: u32 = 1_200;
/// How long a missing packet of a participant's video is waited for.
const REORDER_WAIT: Duration = Duration::from_millis(200);
/// The least time between two keyframe requests for one participant's video.
const REASK: Duration = Duration::from_secs(1);
/// Seconds between the far end's regular keyframes (more come when it asks).
const KEYFRAME_SECONDS: u32 = 4;
/// The least time between two keyframes forced by the far end's requests.
const KEYFRAME_GAP: Duration = Duration::from_millis(500);
/// Delivered packets waiting for the compositor's thread; more are dropped (a loss the
/// receiver recovers from with a keyframe). Also the most inputs taken between two pictures.
const INPUT_QUEUE: usize = 1_024;
/// Composed pictures waiting for the call's task; more are dropped (and the next picture is a
/// keyframe).
const OUTPUT_QUEUE: usize = 8;

/// One tile of the grid: whose it is, the name written on it, the delivered stream showing
/// their video (`None`: they send none, or muted it), and whether they speak now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridTile {
    /// The participant.
    pub owner: ParticipantId,
    /// Their name.
    pub label: String,
    /// The delivered stream (consumer SSRC) carrying their video.
    pub video: Option<u32>,
    /// They are the active speaker.
    pub speaking: bool,
}

/// One participant's video as the compositor decodes it.
struct Source {
    owner: ParticipantId,
    receiver: H264Receiver,
    asked: Option<Instant>,
}

impl Source {
    fn new(owner: ParticipantId) -> Self {
        Self {
            owner,
            receiver: H264Receiver::new(REORDER_WAIT).keeping_pictures(),
            asked: None,
        }
    }
}

/// The RTP stream of the composed pictures.
struct Packetizer {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    /// The timestamp of the first picture, and when it was rendered.
    start: (u32, Instant),
}

/// Composes the grid and encodes it; see the module documentation.
pub struct Compositor {
    format: PictureFormat,
    canvas: Picture,
    encoder: H264Encoder,
    tiles: Vec<GridTile>,
    /// By delivered stream.
    sources: HashMap<u32, Source>,
    packetizer: Packetizer,
    /// When a keyframe was last forced.
    last_forced: Option<Instant>,
}

impl Compositor {
    /// A compositor of `format` pictures sent as `ssrc` with `payload_type`, numbered from
    /// `seq`, timed from `timestamp` at `now`.
    pub fn new(
        format: PictureFormat,
        (ssrc, payload_type): (u32, u8),
        (seq, timestamp): (u16, u32),
        now: Instant,
    ) -> Result<Self, CodecError> {
        let settings = EncoderSettings {
            fps: format.fps,
            bitrate: format.bitrate,
            keyframe_interval: KEYFRAME_SECONDS * format.fps,
            max_nal_size: Some(MAX_NAL_SIZE),
        };
        Ok(Self {
            format,
            canvas: Picture::filled(
                format.width as usize,
                format.height as usize,
                (16, 128, 128),
            ),
            encoder: H264Encoder::new(settings)?,
            tiles: Vec::new(),
            sources: HashMap::new(),
            packetizer: Packetizer {
                ssrc,
                payload_type,
                seq,
                start: (timestamp, now),
            },
            last_forced: None,
        })
    }

    /// What the pictures look like.
    pub fn format(&self) -> PictureFormat {
        self.format
    }

    /// The tiles from now on, in order. A delivered stream that now carries someone else
    /// starts over (from their next keyframe).
    pub fn lay_out(&mut self, tiles: Vec<GridTile>) {
        self.sources.retain(|ssrc, source| {
            tiles
                .iter()
                .any(|t| t.video == Some(*ssrc) && t.owner == source.owner)
        });
        for tile in &tiles {
            if let Some(ssrc) = tile.video {
                self.sources
                    .entry(ssrc)
                    .or_insert_with(|| Source::new(tile.owner));
            }
        }
        self.tiles = tiles;
    }

    /// A datagram the node delivered: decoded when it is a shown participant's video (its
    /// payload shared, not copied). Returns the delivered stream to ask a keyframe of, when its
    /// receiver cannot go on without one (at most once a second per stream).
    pub fn packet(&mut self, now: Instant, datagram: &Bytes) -> Option<u32> {
        let parts = rtp_parts(datagram).filter(|p| p.payload_type == DELIVERED_VIDEO)?;
        let source = self.sources.get_mut(&parts.ssrc)?;
        let outcome = source.receiver.push(
            now,
            parts.seq,
            parts.timestamp,
            parts.marker,
            datagram.slice_ref(parts.payload),
        );
        let due = source
            .asked
            .is_none_or(|at| now.duration_since(at) >= REASK);
        (outcome.want_keyframe && due).then(|| {
            source.asked = Some(now);
            parts.ssrc
        })
    }

    /// Makes the next picture a keyframe (the far end asked for one at `now`), unless one was
    /// forced a moment ago: a far end repeating its request for one loss gets one keyframe.
    pub fn force_keyframe(&mut self, now: Instant) {
        if self
            .last_forced
            .is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_GAP)
        {
            return;
        }
        self.last_forced = Some(now);
        self.encoder.force_keyframe();
    }

    /// Composes and encodes the picture of `now`; its RTP packets are appended to `out`.
    pub fn render(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) -> Result<(), CodecError> {
        self.draw();
        let (first_timestamp, started) = self.packetizer.start;
        let ticks = now.saturating_duration_since(started).as_micros() * 9 / 100;
        let timestamp = first_timestamp.wrapping_add(ticks as u32);
        let first = out.len();
        let packetizer = &mut self.packetizer;
        self.encoder.encode(&self.canvas, |nal| {
            let header = rtp_header(
                (false, packetizer.payload_type),
                packetizer.seq,
                timestamp,
                packetizer.ssrc,
            );
            let mut packet = Vec::with_capacity(header.len() + nal.len());
            packet.extend_from_slice(&header);
            packet.extend_from_slice(nal);
            out.push(packet);
            packetizer.seq = packetizer.seq.wrapping_add(1);
        })?;
        if out.len() > first
            && let Some(last) = out.last_mut()
        {
            last[1] |= 0x80;
        }
        Ok(())
    }

    /// Draws the tiles: each participant's latest picture scaled into its tile (a grey tile
    /// until one is decoded, or without video), names and the speaker's highlight; with nobody
    /// else in the meeting, a line saying so.
    fn draw(&mut self) {
        self.canvas.clear();
        if self.tiles.is_empty() {
            let whole = Tile {
                x: 0,
                y: 0,
                width: self.format.width,
                height: self.format.height,
            };
            self.canvas.label(whole, WAITING);
            return;
        }
        let places = grid(self.tiles.len(), self.format.width, self.format.height);
        for (tile, place) in self.tiles.iter().zip(places) {
            let picture = tile
                .video
                .and_then(|ssrc| self.sources.get(&ssrc))
                .and_then(|source| source.receiver.picture());
            match picture {
                Some(picture) => self.canvas.draw_scaled(place, picture),
                None => self.canvas.empty_tile(place),
            }
            self.canvas.label(place, &tile.label);
            if tile.speaking {
                self.canvas.highlight(place, TILE_GAP);
            }
        }
    }
}

/// What a [`GridView`]'s thread is told.
enum Input {
    Packet(Bytes),
    Tiles(Vec<GridTile>),
    Keyframe,
}

/// What a [`GridView`] has for the call.
#[derive(Debug)]
pub enum Composed {
    /// One picture's RTP packets for the far end.
    Packets(Vec<Vec<u8>>),
    /// Ask the node for a keyframe of this delivered stream.
    AskKeyframe(u32),
}

/// A [`Compositor`] on its own thread, rendering at its format's frame rate; the thread ends
/// when the view is dropped.
pub struct GridView {
    input: mpsc::Sender<Input>,
    /// Delivered packets sent to the thread and not yet taken (at most [`INPUT_QUEUE`]).
    queued: Arc<AtomicUsize>,
    output: async_mpsc::Receiver<Composed>,
}

impl std::fmt::Debug for GridView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GridView").finish_non_exhaustive()
    }
}

impl GridView {
    /// Starts composing for the far end (see [`Compositor::new`]).
    pub fn start(
        format: PictureFormat,
        stream: (u32, u8),
        position: (u16, u32),
    ) -> Result<Self, String> {
        let compositor = Compositor::new(format, stream, position, Instant::now())
            .map_err(|e| format!("the grid's H.264 encoder: {e}"))?;
        let (input, inputs) = mpsc::channel();
        let (outputs, output) = async_mpsc::channel(OUTPUT_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let thread = Thread {
            compositor,
            inputs,
            queued: queued.clone(),
            outputs,
        };
        std::thread::Builder::new()
            .name("sip-grid".into())
            .spawn(move || thread.run())
            .map_err(|e| format!("the grid's thread: {e}"))?;
        Ok(Self {
            input,
            queued,
            output,
        })
    }

    /// A datagram the node delivered (dropped if the thread is behind).
    pub fn deliver(&self, datagram: &[u8]) {
        if self.queued.load(Ordering::Relaxed) < INPUT_QUEUE {
            self.queued.fetch_add(1, Ordering::Relaxed);
            let _ = self
                .input
                .send(Input::Packet(Bytes::copy_from_slice(datagram)));
        }
    }

    /// The tiles from now on.
    pub fn lay_out(&self, tiles: Vec<GridTile>) {
        let _ = self.input.send(Input::Tiles(tiles));
    }

    /// The far end asked for a keyframe.
    pub fn force_keyframe(&self) {
        let _ = self.input.send(Input::Keyframe);
    }

    /// The next picture's packets, or a keyframe to ask for; `None` once the thread is gone.
    pub async fn next(&mut self) -> Option<Composed> {
        self.output.recv().await
    }
}

/// The compositor's thread.
struct Thread {
    compositor: Compositor,
    inputs: mpsc::Receiver<Input>,
    queued: Arc<AtomicUsize>,
    outputs: async_mpsc::Sender<Composed>,
}

impl Thread {
    /// Inputs as they come, a picture whenever one is due; ends when the view is dropped or
    /// the encoder fails.
    fn run(mut self) {
        let interval = Duration::from_secs(1) / self.compositor.format().fps.max(1);
        let mut due = Instant::now();
        loop {
            let now = Instant::now();
            if now >= due {
                if !self.render(now) {
                    return;
                }
                // a thread that fell behind skips pictures rather than bursting them, and takes
                // what waits before the next
                due = (due + interval).max(now);
                for _ in 0..INPUT_QUEUE {
                    match self.inputs.try_recv() {
                        Ok(input) => {
                            if !self.take(input) {
                                return;
                            }
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                continue;
            }
            match self.inputs.recv_timeout(due - now) {
                Ok(input) => {
                    if !self.take(input) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Renders the picture of `now` and hands it over; false when the thread should end.
    fn render(&mut self, now: Instant) -> bool {
        let mut packets = Vec::new();
        if let Err(e) = self.compositor.render(now, &mut packets) {
            warn!("the grid for a SIP call: {e}");
            return false;
        }
        match self.outputs.try_send(Composed::Packets(packets)) {
            Ok(()) => true,
            // the call's task is behind: this picture is lost, the next one starts over
            Err(TrySendError::Full(_)) => {
                self.compositor.force_keyframe(Instant::now());
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Takes one input; false when the thread should end.
    fn take(&mut self, input: Input) -> bool {
        match input {
            Input::Packet(datagram) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                if let Some(ssrc) = self.compositor.packet(Instant::now(), &datagram) {
                    return !matches!(
                        self.outputs.try_send(Composed::AskKeyframe(ssrc)),
                        Err(TrySendError::Closed(_))
                    );
                }
            }
            Input::Tiles(tiles) => self.compositor.lay_out(tiles),
            Input::Keyframe => self.compositor.force_keyframe(Instant::now()),
        }
        true
    }
}

#[cfg(test)]
mod tests;
