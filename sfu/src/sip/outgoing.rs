//! What a SIP call's far end receives from the meeting: its sound (every other participant
//! mixed, see `mix`) and its picture (the active speaker's video, see `view`), from the
//! meeting's media the node delivers to the call, and which of the delivered video streams to
//! show as the meeting's slot map and active speaker change.

use crate::media::demux::ParticipantId;
use crate::media::ingest::Delivery;
use crate::signaling::protocol::{MediaKind, ServerMessage};
use crate::sip::mix::Mixer;
use crate::sip::sdp::Agreement;
use crate::sip::view::SpeakerView;
use rand::Rng;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a wanted stream's keyframe is waited for before it is asked again.
const REASK: Duration = Duration::from_secs(1);

/// The meeting as the far end gets it.
pub struct Outgoing {
    delivery: Delivery,
    /// The SSRC of what kaskade sends the far end (audio and video each have their own
    /// stream, video on `ssrc + 1`).
    ssrc: u32,
    mixer: Option<Mixer>,
    view: Option<SpeakerView>,
    /// Participant -> the mid of the video slot that carries them.
    video_mids: BTreeMap<ParticipantId, String>,
    speaker: Option<ParticipantId>,
    asked: Option<Instant>,
}

impl Outgoing {
    /// Nothing agreed yet: the meeting's state is followed, nothing is sent.
    pub fn new(delivery: Delivery, ssrc: u32) -> Self {
        Self {
            delivery,
            ssrc,
            mixer: None,
            view: None,
            video_mids: BTreeMap::new(),
            speaker: None,
            asked: None,
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
        self.view = agreement
            .video
            .as_ref()
            .filter(|line| line.flow.send)
            .map(|line| {
                SpeakerView::new(line, self.ssrc.wrapping_add(1), rng.random(), rng.random())
            });
        self.choose();
        Ok(())
    }

    /// Follows the meeting (slot map, active speaker); returns the delivered stream to ask a
    /// keyframe of when the picture should switch.
    pub fn observe(&mut self, message: &ServerMessage) -> Option<u32> {
        match message {
            ServerMessage::Welcome(welcome) => self.speaker = welcome.speaker,
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
        if self.choose() { self.ask() } else { None }
    }

    /// Points the view at the participant to show: the speaker when they have video, else
    /// whom the view shows, else the first with video. True when it changed.
    fn choose(&mut self) -> bool {
        let Some(view) = self.view.as_mut() else {
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
        let wanted = self.view.as_ref()?.wanted()?;
        let now = Instant::now();
        if self.asked.is_some_and(|at| now.duration_since(at) < REASK) {
            return None;
        }
        self.asked = Some(now);
        Some(wanted)
    }

    /// The stream shown now (what a far end's keyframe request is for).
    pub fn shown(&self) -> Option<u32> {
        self.view.as_ref()?.current()
    }

    /// A datagram the node delivered: its audio into the mix; the video packets for the far
    /// end, appended to `video`, when it is the one shown.
    pub fn deliver(&mut self, now: Instant, datagram: &[u8], video: &mut Vec<Vec<u8>>) {
        if let Some(mixer) = &mut self.mixer {
            mixer.push(now, datagram);
        }
        if let Some(view) = &mut self.view {
            view.packet(datagram, video);
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
