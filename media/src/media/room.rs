//! A meeting on this node: who is in it, whether it is locked, who speaks, and which
//! subscriber slot carries which publisher.

use crate::cascade::control::StreamRef;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::simulcast::LayerSet;
use crate::media::speaker::SpeakerDetector;
use std::collections::HashMap;

/// Where copies of one publisher's stream go: `(subscriber, slot index)`.
pub type Route = (ParticipantId, usize);

/// One meeting's state on this node.
pub struct Room {
    /// The meeting's name.
    pub meeting: String,
    /// Members in the order they joined or were announced: this node's (hidden recorders
    /// included) and those relayed from peer nodes.
    pub members: Vec<ParticipantId>,
    /// Nodes sharing this meeting over a cascade link.
    pub peers: Vec<u16>,
    /// The streams of this node's publishers each peer wants.
    pub subscriptions: HashMap<u16, Vec<StreamRef>>,
    /// The streams of each peer's publishers this node last asked for.
    pub wanted: HashMap<u16, Vec<StreamRef>>,
    /// Peers with a recorder of this meeting.
    pub recording_peers: Vec<u16>,
    /// Whether local participants were last told the meeting is recorded.
    pub recording: bool,
    /// Whether peers were last told a recorder is here.
    pub recorder_here: bool,
    /// A locked meeting refuses new joins.
    pub locked: bool,
    /// Active-speaker detection over the members' audio.
    pub speaker: SpeakerDetector<ParticipantId>,
    /// Fan-out table: (publisher, kind) -> subscriber slots, rebuilt when assignments change.
    routes: HashMap<(ParticipantId, MediaKind), Vec<Route>>,
    /// Relay table: (local publisher, kind) -> peers that want it and the layers they want,
    /// rebuilt from subscriptions.
    relays: HashMap<(ParticipantId, MediaKind), Vec<(u16, LayerSet)>>,
}

impl Room {
    /// An empty room for `meeting`.
    pub fn new(meeting: String) -> Self {
        Self {
            meeting,
            members: Vec::new(),
            peers: Vec::new(),
            subscriptions: HashMap::new(),
            wanted: HashMap::new(),
            recording_peers: Vec::new(),
            recording: false,
            recorder_here: false,
            locked: false,
            speaker: SpeakerDetector::default(),
            routes: HashMap::new(),
            relays: HashMap::new(),
        }
    }

    /// Entries of the fan-out table and of the relay table (metrics).
    pub fn table_sizes(&self) -> (usize, usize) {
        (self.routes.len(), self.relays.len())
    }

    /// The peers that want `publisher`'s stream of `kind` relayed, and the layers each wants.
    pub fn relays(&self, publisher: ParticipantId, kind: MediaKind) -> &[(u16, LayerSet)] {
        self.relays
            .get(&(publisher, kind))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Rebuilds the relay table from every peer's subscription.
    pub fn rebuild_relays(&mut self) {
        self.relays.clear();
        for (peer, streams) in &self.subscriptions {
            for stream in streams {
                self.relays
                    .entry((stream.publisher, stream.kind))
                    .or_default()
                    .push((*peer, stream.layers));
            }
        }
    }

    /// Forgets a peer: its subscriptions, what was asked of it, and the link itself.
    pub fn remove_peer(&mut self, peer: u16) {
        self.peers.retain(|p| *p != peer);
        self.recording_peers.retain(|p| *p != peer);
        self.subscriptions.remove(&peer);
        self.wanted.remove(&peer);
        self.rebuild_relays();
    }

    /// The subscriber slots fed by `publisher`'s media of `kind`.
    pub fn routes(&self, publisher: ParticipantId, kind: MediaKind) -> &[Route] {
        self.routes
            .get(&(publisher, kind))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Rebuilds the fan-out table from every subscriber's slot sources.
    pub fn rebuild_routes<'a>(
        &mut self,
        subscribers: impl Iterator<Item = (ParticipantId, &'a [SlotSource])>,
    ) {
        for routes in self.routes.values_mut() {
            routes.clear();
        }
        for (subscriber, sources) in subscribers {
            for (index, source) in sources.iter().enumerate() {
                if let Some(publisher) = source.publisher {
                    self.routes
                        .entry((publisher, source.kind))
                        .or_default()
                        .push((subscriber, index));
                }
            }
        }
        self.routes.retain(|_, routes| !routes.is_empty());
    }
}

/// What one subscriber slot is for and who feeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSource {
    /// The slot's media kind.
    pub kind: MediaKind,
    /// The publisher it carries, if any.
    pub publisher: Option<ParticipantId>,
}

/// Assigns publishers to a subscriber's slots, keeping every existing assignment that is still
/// valid so no stream moves needlessly. `publishers(kind)` lists, in join order, who publishes
/// that kind (the subscriber excluded). Returns whether anything changed.
pub fn assign_slots(
    slots: &mut [SlotSource],
    publishers: impl Fn(MediaKind) -> Vec<ParticipantId>,
) -> bool {
    let mut changed = false;
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let wanted = publishers(kind);
        for slot in slots.iter_mut().filter(|s| s.kind == kind) {
            if slot.publisher.is_some_and(|p| !wanted.contains(&p)) {
                slot.publisher = None;
                changed = true;
            }
        }
        for publisher in wanted {
            if slots
                .iter()
                .any(|s| s.kind == kind && s.publisher == Some(publisher))
            {
                continue;
            }
            if let Some(free) = slots
                .iter_mut()
                .find(|s| s.kind == kind && s.publisher.is_none())
            {
                free.publisher = Some(publisher);
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use MediaKind::{Audio, Video};

    fn slots(kinds: &[MediaKind]) -> Vec<SlotSource> {
        kinds
            .iter()
            .map(|&kind| SlotSource {
                kind,
                publisher: None,
            })
            .collect()
    }

    /// Each slot's publisher as its wire number.
    fn publishers(slots: &[SlotSource]) -> Vec<Option<u32>> {
        slots.iter().map(|s| s.publisher.map(u32::from)).collect()
    }

    #[test]
    fn fills_free_slots_in_join_order_and_keeps_existing_ones() {
        let mut s = slots(&[Audio, Audio, Video, Video]);
        assert!(assign_slots(&mut s, |_| vec![ParticipantId::from(3)]));
        assert_eq!(publishers(&s), [Some(3), None, Some(3), None]);
        assert!(assign_slots(&mut s, |_| vec![
            ParticipantId::from(3),
            ParticipantId::from(5)
        ]));
        assert_eq!(publishers(&s), [Some(3), Some(5), Some(3), Some(5)]);
        assert!(
            !assign_slots(&mut s, |_| vec![
                ParticipantId::from(3),
                ParticipantId::from(5)
            ]),
            "stable"
        );
    }

    #[test]
    fn a_leaver_frees_a_slot_that_the_next_joiner_takes_without_moving_others() {
        let mut s = slots(&[Audio, Audio, Audio]);
        assign_slots(&mut s, |_| {
            vec![
                ParticipantId::from(1),
                ParticipantId::from(2),
                ParticipantId::from(3),
            ]
        });
        assert!(assign_slots(&mut s, |_| vec![
            ParticipantId::from(1),
            ParticipantId::from(3)
        ]));
        assert_eq!(publishers(&s), [Some(1), None, Some(3)]);
        assign_slots(&mut s, |_| {
            vec![
                ParticipantId::from(1),
                ParticipantId::from(3),
                ParticipantId::from(4),
            ]
        });
        assert_eq!(publishers(&s), [Some(1), Some(4), Some(3)]);
    }

    #[test]
    fn kinds_are_assigned_independently() {
        let mut s = slots(&[Audio, Video]);
        assign_slots(&mut s, |kind| {
            if kind == Audio {
                vec![ParticipantId::from(1)]
            } else {
                vec![ParticipantId::from(2)]
            }
        });
        assert_eq!(publishers(&s), [Some(1), Some(2)]);
    }

    #[test]
    fn more_publishers_than_slots_leaves_the_latest_unassigned() {
        let mut s = slots(&[Video]);
        assign_slots(&mut s, |_| {
            vec![ParticipantId::from(1), ParticipantId::from(2)]
        });
        assert_eq!(publishers(&s), [Some(1)]);
    }

    #[test]
    fn routes_fan_out_by_publisher_and_kind() {
        let mut room = Room::new("m".into());
        let a = vec![
            SlotSource {
                kind: Audio,
                publisher: Some(ParticipantId::from(2)),
            },
            SlotSource {
                kind: Video,
                publisher: Some(ParticipantId::from(2)),
            },
        ];
        let b = vec![SlotSource {
            kind: Audio,
            publisher: Some(ParticipantId::from(2)),
        }];
        room.rebuild_routes(
            [
                (ParticipantId::from(1), a.as_slice()),
                (ParticipantId::from(3), b.as_slice()),
            ]
            .into_iter(),
        );
        assert_eq!(
            room.routes(ParticipantId::from(2), Audio),
            &[(ParticipantId::from(1), 0), (ParticipantId::from(3), 0)]
        );
        assert_eq!(
            room.routes(ParticipantId::from(2), Video),
            &[(ParticipantId::from(1), 1)]
        );
        assert!(room.routes(ParticipantId::from(1), Audio).is_empty());
    }
}
