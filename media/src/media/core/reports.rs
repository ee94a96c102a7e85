//! What the core reports to the cluster: its load (for placement) and each participant
//! session's call record.

use super::{MediaCore, Output};
use crate::media::demux::ParticipantId;
use crate::media::forwarder::MediaKind;
use crate::media::participant::{CallNote, Participant};
use kaskade_protocol::cluster::{CallRecord, MeetingLoad};
use kaskade_protocol::signaling::LeaveReason;
use kaskade_protocol::token::Role;
use std::time::Instant;

/// What the node reports to the locator about its load.
#[derive(Debug, Clone, Default)]
pub struct NodeLoad {
    /// Participants on this node (recorders included, relayed ones not).
    pub participants: u32,
    /// Meetings on this node.
    pub meetings: Vec<MeetingLoad>,
    /// Streams coming in: from local publishers and over links.
    pub streams_in: u32,
    /// Streams going out: to local subscribers' slots and over links.
    pub streams_out: u32,
}

impl MediaCore {
    /// What the shell tells of a call it placed (who dialled it, how it went), for the
    /// participant's call record.
    pub fn note_call(&mut self, id: ParticipantId, note: CallNote) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.call = note;
        }
    }

    /// This node's load, for the locator.
    pub fn load(&self) -> NodeLoad {
        let mut load = NodeLoad {
            participants: self.participant_count() as u32,
            ..NodeLoad::default()
        };
        for room in self.rooms.values() {
            let locals = room
                .members
                .iter()
                .filter_map(|m| self.participants.get(m))
                .filter(|p| p.is_here());
            let mut visible = 0;
            let mut moderators = Vec::new();
            for p in locals {
                load.streams_out += p.slots.iter().filter(|s| s.publisher.is_some()).count() as u32;
                if p.is_hidden() {
                    continue;
                }
                visible += 1;
                load.streams_in += [MediaKind::Audio, MediaKind::Video]
                    .into_iter()
                    .filter(|k| p.publishes(*k))
                    .count() as u32;
                if p.role == Role::Moderator {
                    moderators.push(p.identity.clone());
                }
            }
            load.streams_in += room.wanted.values().map(|w| w.len() as u32).sum::<u32>();
            load.streams_out += room
                .subscriptions
                .values()
                .map(|w| w.len() as u32)
                .sum::<u32>();
            load.meetings.push(MeetingLoad {
                meeting: room.meeting.clone(),
                participants: visible,
                locked: room.locked,
                moderators,
            });
        }
        load
    }

    pub(super) fn participant_meeting(&self, id: ParticipantId) -> String {
        self.participants
            .get(&id)
            .and_then(|p| self.rooms.get(&p.room))
            .map(|r| r.meeting.clone())
            .unwrap_or_default()
    }

    /// Sends the call record of a participant who left.
    pub(super) fn record_call(&mut self, now: Instant, p: &Participant, reason: LeaveReason) {
        let meeting = self
            .rooms
            .get(&p.room)
            .map(|r| r.meeting.clone())
            .unwrap_or_default();
        self.outputs.push_back(Output::CallRecord(CallRecord {
            session: format!("{}/{}/{}", self.config.node_name, p.id, p.joined_at_ms),
            meeting,
            identity: p.identity.clone(),
            name: p.name.clone(),
            node: self.config.node_name.clone(),
            kind: if p.is_hidden() {
                "recorder".into()
            } else {
                p.kind.clone()
            },
            role: p.role,
            joined_at_ms: p.joined_at_ms,
            left_at_ms: self.surroundings.clock.unix_ms(now),
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            reason: match reason {
                LeaveReason::Left => "left",
                LeaveReason::Removed => "removed",
                LeaveReason::Disconnected => "disconnected",
            }
            .into(),
            caller: p.call.caller.clone(),
            result: p.call.result.clone(),
        }));
    }
}
