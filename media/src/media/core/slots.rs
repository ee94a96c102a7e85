//! Slot assignment: which publisher each subscriber slot carries, and the room's fan-out table.

use super::{MediaCore, SPEAKER_INTERVAL};
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::participant::RoomIndex;
use crate::media::room::assign_slots;
use kaskade_protocol::signaling::{ServerMessage, SlotAssignment};
use std::time::Instant;

impl MediaCore {
    /// Gives every subscriber of the room a slot for every publisher, keeping existing
    /// assignments, tells subscribers whose map changed, and rebuilds the fan-out table.
    pub(super) fn reassign_slots(&mut self, now: Instant, room_index: RoomIndex) {
        let Some(room) = self.rooms.get_mut(&room_index) else {
            return;
        };
        let publishers = |kind| -> Vec<ParticipantId> {
            room.members
                .iter()
                .filter(|m| {
                    self.participants
                        .get(m)
                        .is_some_and(|p| !p.is_hidden() && p.publishes(kind))
                })
                .copied()
                .collect()
        };
        let (audio, video) = (publishers(MediaKind::Audio), publishers(MediaKind::Video));
        let mut changed = Vec::new();
        for id in &room.members {
            let Some(p) = self.participants.get_mut(id) else {
                continue;
            };
            let before = p.slots.clone();
            let others = |kind| {
                let all = if kind == MediaKind::Audio {
                    &audio
                } else {
                    &video
                };
                all.iter().copied().filter(|m| m != id).collect()
            };
            if assign_slots(&mut p.slots, others) {
                for (index, (old, new)) in before.iter().zip(&p.slots).enumerate() {
                    if old.publisher != new.publisher
                        && let Some(consumer) = p.transport.consumers_mut().get_mut(index)
                    {
                        consumer.stream.detach();
                    }
                }
                changed.push(*id);
            }
        }
        let members = room.members.clone();
        room.rebuild_routes(
            members
                .iter()
                .filter_map(|m| self.participants.get(m).map(|p| (*m, p.slots.as_slice()))),
        );
        for id in changed {
            let Some(p) = self.participants.get(&id) else {
                continue;
            };
            let slots = p
                .slots
                .iter()
                .zip(p.transport.consumers())
                .filter_map(|(source, consumer)| {
                    Some(SlotAssignment {
                        mid: consumer.mid.clone(),
                        kind: source.kind,
                        participant: source.publisher?,
                    })
                })
                .collect();
            self.send(id, ServerMessage::Slots { slots });
        }
        self.choose_layers_of(now, &members);
        self.update_subscriptions(room_index);
        if self.next_speaker_tick.is_none() {
            self.next_speaker_tick = Some(now + SPEAKER_INTERVAL);
        }
    }
}
