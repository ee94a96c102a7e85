//! Participants' and moderators' requests: mute state, removal, lock.

use super::{MediaCore, Output};
use crate::cascade::control::LinkMessage;
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::participant::RoomIndex;
use kaskade_protocol::signaling::{ErrorCode, LeaveReason, ModerateAction, ServerMessage};
use kaskade_protocol::token::Role;
use std::time::Instant;

impl MediaCore {
    pub(super) fn set_mute(
        &mut self,
        id: ParticipantId,
        audio: Option<bool>,
        video: Option<bool>,
        by: Option<ParticipantId>,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.audio_muted = audio.unwrap_or(p.audio_muted);
        p.video_muted = video.unwrap_or(p.video_muted);
        let (info, room) = (p.info(), p.room);
        for (kind, muted) in [(MediaKind::Audio, audio), (MediaKind::Video, video)] {
            if muted == Some(true) {
                self.detach_routes(room, id, kind);
            }
        }
        if let Some(by) = by {
            self.send(
                id,
                ServerMessage::MutedByModerator {
                    audio: audio == Some(true),
                    video: video == Some(true),
                    by,
                },
            );
        }
        self.broadcast(room, None, ServerMessage::Updated { participant: info });
        self.announce(id);
    }

    /// Stops every stream fed by `publisher`'s `kind`, so resuming re-syncs it.
    pub(super) fn detach_routes(
        &mut self,
        room: RoomIndex,
        publisher: ParticipantId,
        kind: MediaKind,
    ) {
        let Some(room) = self.rooms.get(&room) else {
            return;
        };
        for &(subscriber, slot) in room.routes(publisher, kind) {
            if let Some(s) = self
                .participants
                .get_mut(&subscriber)
                .and_then(|s| s.transport.consumers_mut().get_mut(slot))
            {
                s.stream.detach();
            }
        }
    }

    pub(super) fn moderate(
        &mut self,
        now: Instant,
        id: ParticipantId,
        action: ModerateAction,
        target: ParticipantId,
    ) {
        let Some(room) = self.moderator_room(id) else {
            return;
        };
        if let Some(home) = self
            .participants
            .get(&target)
            .filter(|t| t.room == room)
            .and_then(|t| t.relayed_from)
        {
            if let Some(meeting) = self.rooms.get(&room).map(|r| r.meeting.clone()) {
                self.outputs.push_back(Output::Link(
                    home,
                    LinkMessage::Moderate {
                        meeting,
                        by: id,
                        action,
                        target,
                    },
                ));
            }
            return;
        }
        if self
            .participants
            .get(&target)
            .is_none_or(|t| t.room != room || t.is_hidden())
        {
            self.send(
                id,
                ServerMessage::error(ErrorCode::NotFound, "no such participant"),
            );
            return;
        }
        self.apply_moderation(now, id, action, target);
    }

    /// Carries out a moderator's action on a participant of this node.
    pub(super) fn apply_moderation(
        &mut self,
        now: Instant,
        by: ParticipantId,
        action: ModerateAction,
        target: ParticipantId,
    ) {
        match action {
            ModerateAction::MuteAudio => self.set_mute(target, Some(true), None, Some(by)),
            ModerateAction::MuteVideo => self.set_mute(target, None, Some(true), Some(by)),
            ModerateAction::Remove => {
                self.send(target, ServerMessage::Removed { by });
                self.leave(now, target, LeaveReason::Removed);
                self.outputs.push_back(Output::Close(target));
            }
        }
    }

    pub(super) fn lock(&mut self, id: ParticipantId, locked: bool) {
        let Some(room) = self.moderator_room(id) else {
            return;
        };
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        r.locked = locked;
        let meeting = r.meeting.clone();
        self.broadcast(room, None, ServerMessage::Lock { locked, by: id });
        self.tell_peers(
            room,
            LinkMessage::Lock {
                meeting,
                locked,
                by: id,
            },
        );
    }

    /// The room of `id` if it is a moderator; otherwise tells it no.
    fn moderator_room(&mut self, id: ParticipantId) -> Option<RoomIndex> {
        let p = self.participants.get(&id)?;
        if p.role == Role::Moderator {
            return Some(p.room);
        }
        self.send(
            id,
            ServerMessage::error(ErrorCode::Forbidden, "only moderators can do that"),
        );
        None
    }
}
