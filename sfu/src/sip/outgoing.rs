//! What a SIP call's far end receives from the meeting: its sound (every other participant
//! mixed, see `mix`) and its picture, from the meeting's media the node delivers to the call.
//! The picture is, as the operator chooses ([`PictureMode`]), a grid of everyone else composed
//! and encoded for the far end (`grid`), or the active speaker's video forwarded as it is
//! (`view`); either follows the meeting's participants, slot map and active speaker.

use crate::media::demux::ParticipantId;
use crate::media::ingest::Delivery;
use crate::seats::{Seats, SharedSeat};
use crate::signaling::protocol::{MediaKind, ParticipantInfo, Role, ServerMessage, TileView};
use crate::sip::grid::format::PictureFormat;
use crate::sip::grid::{Composed, GridTile, GridView};
use crate::sip::mix::Mixer;
use crate::sip::sdp::{Agreement, VideoLine};
use crate::sip::view::SpeakerView;
use kaskade_picture::layout::grid;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// How long a wanted stream's keyframe is waited for before it is asked again.
const REASK: Duration = Duration::from_secs(1);

/// What a SIP far end's picture of the meeting shows (`--sip-picture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PictureMode {
    /// Everyone else in a grid, the active speaker highlighted, names on the tiles: composed
    /// and encoded per call (a fifth to two fifths of a core each, docs/SIP.md).
    Grid,
    /// The active speaker's video as they send it: no decoding or encoding.
    Speaker,
}

/// How a SIP far end's picture is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureSettings {
    /// What it shows.
    pub mode: PictureMode,
    /// The grid's most pictures per second.
    pub fps: u32,
    /// The grid's most bits per second (less when the far end's level says so).
    pub bitrate: u32,
    /// The most grids the node composes at once; calls beyond get the speaker's picture.
    pub max_grids: usize,
}

/// The picture being sent (a grid holds one of the node's grid seats).
enum Picture {
    Speaker(SpeakerView),
    Grid {
        view: GridView,
        /// The grid's width and height.
        size: (u32, u32),
        /// Given back when the grid ends.
        _seat: SharedSeat,
    },
}

/// Who is in the meeting, as the far end's grid names them.
#[derive(Debug, Clone)]
struct Present {
    name: String,
    video_muted: bool,
}

/// The meeting as the far end gets it.
pub struct Outgoing {
    delivery: Delivery,
    /// The SSRC of what kaskade sends the far end (audio and video each have their own
    /// stream, video on `ssrc + 1`).
    ssrc: u32,
    settings: PictureSettings,
    /// The grids the node composes at most at once.
    grids: Arc<Seats>,
    mixer: Option<Mixer>,
    picture: Option<Picture>,
    /// The call's own participant (from the welcome): not in its own picture.
    me: Option<ParticipantId>,
    /// Everyone else present (recorders left out), by participant id: on one node, the order
    /// they joined.
    present: BTreeMap<ParticipantId, Present>,
    /// Participant -> the mid of the video slot that carries them.
    video_mids: BTreeMap<ParticipantId, String>,
    speaker: Option<ParticipantId>,
    asked: Option<Instant>,
    /// The tile heights last reported to the node.
    reported: Vec<TileView>,
}

impl Outgoing {
    /// Nothing agreed yet: the meeting's state is followed, nothing is sent; the picture will
    /// be made as `settings` say, a grid only while one of `grids` is free.
    pub fn new(
        delivery: Delivery,
        ssrc: u32,
        (settings, grids): (PictureSettings, Arc<Seats>),
    ) -> Self {
        Self {
            delivery,
            ssrc,
            settings,
            grids,
            mixer: None,
            picture: None,
            me: None,
            present: BTreeMap::new(),
            video_mids: BTreeMap::new(),
            speaker: None,
            asked: None,
            reported: Vec::new(),
        }
    }

    /// Takes over the far end's sound from `mixer` (the voice menu's), whose stream the next
    /// agreement continues.
    pub fn adopt(&mut self, mixer: Mixer) {
        self.ssrc = mixer.ssrc();
        self.mixer = Some(mixer);
    }

    /// Sends what `agreement` says kaskade sends, continuing the streams sent before; the
    /// picture's first keyframe is asked for at the next delivered packet ([`Self::ask`]).
    pub fn agree(&mut self, agreement: &Agreement) -> Result<(), String> {
        let mut rng = rand::rng();
        let (seq, timestamp) = self
            .mixer
            .as_ref()
            .map_or_else(|| (rng.random(), rng.random()), Mixer::position);
        self.mixer = match agreement.audio.as_ref().filter(|line| line.flow.send) {
            Some(line) => Some(Mixer::new(line, self.ssrc, seq, timestamp)?),
            None => None,
        };
        // the last agreement's grid gives its seat back before the new one takes one
        self.picture = None;
        self.picture = match agreement.video.as_ref().filter(|line| line.flow.send) {
            Some(line) => Some(self.picture_for(line, (rng.random(), rng.random()))?),
            None => None,
        };
        self.follow();
        Ok(())
    }

    /// The picture for the far end of `line`, its stream starting at `position` (sequence
    /// number, timestamp).
    fn picture_for(
        &self,
        line: &VideoLine,
        (seq, timestamp): (u16, u32),
    ) -> Result<Picture, String> {
        let ssrc = self.ssrc.wrapping_add(1);
        let seat = match self.settings.mode {
            PictureMode::Speaker => None,
            PictureMode::Grid => {
                let seat = Seats::take_shared(&self.grids);
                if seat.is_none() {
                    info!(
                        "the node composes as many grids as --sip-max-grids allows: this call \
                         gets the speaker's picture"
                    );
                }
                seat
            }
        };
        Ok(match seat {
            Some(seat) => {
                let format =
                    PictureFormat::for_line(line, self.settings.fps, self.settings.bitrate);
                let stream = (ssrc, line.send_payload_type);
                Picture::Grid {
                    size: (format.width, format.height),
                    view: GridView::start(format, stream, (seq, timestamp))?,
                    _seat: seat,
                }
            }
            None => Picture::Speaker(SpeakerView::new(line, ssrc, seq, timestamp)),
        })
    }

    /// How tall the grid shows each participant, when that changed since the last call: what
    /// the node is told (`viewing`), so that it sends simulcast publishers' smallest layer that
    /// fills their tile, and the grid decodes no more than it shows. A speaker's picture is
    /// forwarded as it comes: nothing to report.
    pub fn viewing_changed(&mut self) -> Option<Vec<TileView>> {
        let Some(Picture::Grid {
            size: (width, height),
            ..
        }) = self.picture
        else {
            return None;
        };
        let tiles: Vec<TileView> = self
            .present
            .keys()
            .zip(grid(self.present.len(), width, height))
            .map(|(&participant, place)| TileView {
                participant,
                height: place.height,
            })
            .collect();
        if tiles == self.reported {
            return None;
        }
        self.reported.clone_from(&tiles);
        Some(tiles)
    }

    /// Whether the far end's picture is a grid composed for it.
    pub fn composes(&self) -> bool {
        matches!(self.picture, Some(Picture::Grid { .. }))
    }

    /// Follows the meeting (who is there, the slot map, the active speaker); returns the
    /// delivered stream to ask a keyframe of when the speaker's picture should switch.
    pub fn observe(&mut self, message: &ServerMessage) -> Option<u32> {
        match message {
            ServerMessage::Welcome(welcome) => {
                self.speaker = welcome.speaker;
                self.me = Some(welcome.you.id);
                self.present.clear();
                welcome.participants.iter().for_each(|p| self.arrived(p));
            }
            ServerMessage::Joined { participant } | ServerMessage::Updated { participant } => {
                self.arrived(participant);
            }
            ServerMessage::Left { id, .. } => {
                self.present.remove(id);
            }
            ServerMessage::Speaker { id } => self.speaker = Some(*id),
            ServerMessage::Slots { slots } => {
                self.video_mids = slots
                    .iter()
                    .filter(|slot| slot.kind == MediaKind::Video)
                    .map(|slot| (slot.participant, slot.mid.clone()))
                    .collect();
            }
            _ => return None,
        }
        if self.follow() { self.ask() } else { None }
    }

    /// Someone is present (or changed).
    fn arrived(&mut self, participant: &ParticipantInfo) {
        if participant.role != Role::Recorder && self.me != Some(participant.id) {
            let present = Present {
                name: participant.name.clone(),
                video_muted: participant.video_muted,
            };
            self.present.insert(participant.id, present);
        }
    }

    /// Brings the picture up to date with the meeting: the grid's tiles, or whom the speaker's
    /// view shows. True when the view should switch (ask for a keyframe).
    fn follow(&mut self) -> bool {
        match &self.picture {
            Some(Picture::Grid { view: grid, .. }) => {
                grid.lay_out(self.tiles());
                false
            }
            Some(Picture::Speaker(_)) => self.choose(),
            None => false,
        }
    }

    /// The grid's tiles: everyone present, their video where a slot carries it.
    fn tiles(&self) -> Vec<GridTile> {
        self.present
            .iter()
            .map(|(id, present)| GridTile {
                owner: *id,
                label: present.name.clone(),
                video: self
                    .video_mids
                    .get(id)
                    .filter(|_| !present.video_muted)
                    .and_then(|mid| self.delivery.ssrc_of(mid)),
                speaking: self.speaker == Some(*id),
            })
            .collect()
    }

    /// Points the speaker's view at the participant to show: the speaker when they have
    /// video, else whom the view shows, else the first with video. True when it changed.
    fn choose(&mut self) -> bool {
        let Some(Picture::Speaker(view)) = self.picture.as_mut() else {
            return false;
        };
        let ssrc_of = |id: &ParticipantId| {
            self.video_mids
                .get(id)
                .and_then(|mid| self.delivery.ssrc_of(mid))
        };
        let shown = self
            .video_mids
            .keys()
            .find(|id| ssrc_of(id).is_some() && ssrc_of(id) == view.current());
        let target = self
            .speaker
            .filter(|id| self.video_mids.contains_key(id))
            .or(shown.copied())
            .or_else(|| self.video_mids.keys().next().copied());
        let Some(ssrc) = target.as_ref().and_then(ssrc_of) else {
            return false;
        };
        let changed = view.show(ssrc);
        if changed {
            self.asked = None;
        }
        changed
    }

    /// The stream to ask a keyframe of now, if one is waited for and was not asked a moment
    /// ago (the core throttles too; this keeps asking while the wait lasts).
    pub fn ask(&mut self) -> Option<u32> {
        let Some(Picture::Speaker(view)) = &self.picture else {
            return None;
        };
        let wanted = view.wanted()?;
        let now = Instant::now();
        if self.asked.is_some_and(|at| now.duration_since(at) < REASK) {
            return None;
        }
        self.asked = Some(now);
        Some(wanted)
    }

    /// The far end asked for a keyframe: the grid makes one; the speaker's view returns the
    /// delivered stream it shows, to ask the node for one.
    pub fn far_end_wants_keyframe(&self) -> Option<u32> {
        match self.picture.as_ref()? {
            Picture::Speaker(view) => view.current(),
            Picture::Grid { view: grid, .. } => {
                grid.force_keyframe();
                None
            }
        }
    }

    /// A datagram the node delivered: its audio into the mix; its video to the grid, or, when
    /// it is the speaker's view's stream, its packets for the far end appended to `video`.
    pub fn deliver(&mut self, now: Instant, datagram: &[u8], video: &mut Vec<Vec<u8>>) {
        if let Some(mixer) = &mut self.mixer {
            mixer.push(now, datagram);
        }
        match &mut self.picture {
            Some(Picture::Speaker(view)) => view.packet(datagram, video),
            Some(Picture::Grid { view: grid, .. }) => grid.deliver(datagram),
            None => {}
        }
    }

    /// The grid's next picture for the far end, or a keyframe it needs of a delivered
    /// stream; never ready without a grid.
    pub async fn composed(&mut self) -> Composed {
        match &mut self.picture {
            Some(Picture::Grid { view: grid, .. }) => match grid.next().await {
                Some(composed) => composed,
                None => std::future::pending().await,
            },
            _ => std::future::pending().await,
        }
    }

    /// The 20 ms frame of sound (or DTMF) due at `now`.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        if let Some(mixer) = &mut self.mixer {
            mixer.tick(now, out);
        }
    }

    /// Schedules DTMF keys in the sound; false when the call took no telephone events.
    pub fn schedule_keys(&mut self, now: Instant, digits: &str) -> bool {
        self.mixer
            .as_mut()
            .is_some_and(|m| m.schedule_keys(now, digits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(grids: &Arc<Seats>) -> Outgoing {
        let delivery = Delivery {
            to: "127.0.0.1:9".parse().unwrap(),
            audio_slots: 9,
            video_slots: 9,
            ssrc_base: 1_000,
        };
        let settings = PictureSettings {
            mode: PictureMode::Grid,
            fps: 15,
            bitrate: 500_000,
            max_grids: 1,
        };
        Outgoing::new(delivery, 5, (settings, grids.clone()))
    }

    fn agreement() -> Agreement {
        Agreement {
            audio: None,
            video: Some(VideoLine::example("42e01f")),
        }
    }

    #[test]
    fn the_grid_reports_how_tall_it_shows_everyone_when_that_changes() {
        let grids = Arc::new(Seats::new(1));
        let mut call = outgoing(&grids);
        let info = |id: u32, role| ParticipantInfo {
            id: ParticipantId::from(id),
            identity: None,
            name: format!("p{id}"),
            role,
            audio_muted: false,
            video_muted: false,
            source: None,
        };
        call.observe(&ServerMessage::Joined {
            participant: info(7, Role::Participant),
        });
        assert_eq!(call.viewing_changed(), None, "no picture agreed yet");
        call.agree(&agreement()).unwrap();
        let (width, height) = (1280, 720);
        let one = call.viewing_changed().expect("the first report");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].participant, ParticipantId::from(7));
        assert_eq!(one[0].height, grid(1, width, height)[0].height);
        assert_eq!(call.viewing_changed(), None, "nothing changed");
        call.observe(&ServerMessage::Joined {
            participant: info(9, Role::Participant),
        });
        call.observe(&ServerMessage::Joined {
            participant: info(11, Role::Recorder),
        });
        let two = call.viewing_changed().expect("a second tile");
        let heights: Vec<u32> = grid(2, width, height).iter().map(|t| t.height).collect();
        assert_eq!(
            two.iter()
                .map(|t| (u32::from(t.participant), t.height))
                .collect::<Vec<_>>(),
            vec![(7, heights[0]), (9, heights[1])],
            "everyone shown, the recorder left out"
        );
        assert!(
            outgoing(&Arc::new(Seats::new(0)))
                .viewing_changed()
                .is_none()
        );
    }

    #[test]
    fn calls_beyond_the_nodes_grids_get_the_speakers_picture() {
        let grids = Arc::new(Seats::new(1));
        let mut first = outgoing(&grids);
        first.agree(&agreement()).unwrap();
        assert!(first.composes());
        let mut second = outgoing(&grids);
        second.agree(&agreement()).unwrap();
        assert!(!second.composes(), "no grid seat left");
        first.agree(&agreement()).unwrap();
        assert!(first.composes(), "a new agreement keeps its call's seat");
        drop(first);
        second.agree(&agreement()).unwrap();
        assert!(second.composes(), "the seat was given back");
    }
}
