//! The raw forwarder's state machine, without I/O: a datagram in ([`Forwarder::handle`]),
//! datagrams out (into an [`Outbox`]), and a clock tick ([`Forwarder::tick`]) that forgets
//! silent participants.
//!
//! A media packet is opened once with its publisher's key (found from its SSRC), checked
//! against the publisher's replay window, then copied and sealed once for every other member
//! of the publisher's room with that member's key. Nothing in the packet is rewritten.
//! Everything a packet needs is allocated when participants come and go, never per packet.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::wire::{
    CONTROL_MAGIC, Control, ControlKind, MAX_DATAGRAM, MAX_PARTICIPANT_ID, ParticipantKey,
    ReplayWindow, RtpHeader, Secret, TAG_LEN, ssrc_owner,
};
use kaskade_client::signaling::MediaKind;

/// Members of one room at most (a hello beyond it is refused).
pub const MAX_ROOM_SIZE: usize = 32;
/// Copies one packet makes at most.
pub const MAX_FANOUT: usize = MAX_ROOM_SIZE - 1;
/// A participant not heard from for this long (no hello, no media) is forgotten.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the forwarder has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ForwarderStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Authentic media packets received (each forwarded to the room).
    pub media_in: u64,
    /// Media datagrams sent (one per packet and receiver).
    pub forwarded: u64,
    /// Bytes of those datagrams.
    pub bytes_forwarded: u64,
    /// Hellos accepted (joins and keepalives).
    pub hellos: u64,
    /// Participants who joined (a first hello, or a new session).
    pub joins: u64,
    /// Byes accepted.
    pub byes: u64,
    /// Participants forgotten after [`SILENCE_TIMEOUT`].
    pub expired: u64,
    /// Dropped: not a datagram of the format (size, version, header, unknown type).
    pub dropped_malformed: u64,
    /// Dropped: the tag did not verify (forged, corrupted, or sealed with another key).
    pub dropped_unauthentic: u64,
    /// Dropped: a media nonce or control counter already used.
    pub dropped_replayed: u64,
    /// Dropped: media of a participant who has not said hello.
    pub dropped_unknown: u64,
    /// Dropped: a hello into a full room, or beyond the participant limit.
    pub dropped_refused: u64,
    /// Copies not made because the outbox was full (the I/O shell flushes before that).
    pub dropped_overflow: u64,
}

impl ForwarderStats {
    /// Every dropped datagram, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_malformed
            + self.dropped_unauthentic
            + self.dropped_replayed
            + self.dropped_unknown
            + self.dropped_refused
    }
}

/// Datagrams to send: fixed slots of [`MAX_DATAGRAM`] bytes, allocated once.
pub struct Outbox {
    buf: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Outbox {
    /// An outbox for `capacity` datagrams (at least [`MAX_FANOUT`]).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(MAX_FANOUT);
        Self {
            buf: vec![0; capacity * MAX_DATAGRAM],
            lens: Vec::with_capacity(capacity),
            addrs: Vec::with_capacity(capacity),
        }
    }

    /// How many datagrams it holds.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// How many datagrams it can hold.
    pub fn capacity(&self) -> usize {
        self.buf.len() / MAX_DATAGRAM
    }

    /// How many more datagrams fit.
    pub fn free(&self) -> usize {
        self.capacity() - self.len()
    }

    /// Datagram `i` and its destination.
    pub fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let start = i * MAX_DATAGRAM;
        (self.addrs[i], &self.buf[start..start + self.lens[i]])
    }

    /// The datagrams in order, with their destinations.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Forgets every datagram (after sending them).
    pub fn clear(&mut self) {
        self.lens.clear();
        self.addrs.clear();
    }

    /// The next free slot, if any: write into it, then [`Self::commit`].
    fn slot(&mut self) -> Option<&mut [u8]> {
        let start = self.len() * MAX_DATAGRAM;
        self.buf.get_mut(start..start + MAX_DATAGRAM)
    }

    /// Keeps the first `len` bytes of the slot [`Self::slot`] gave, for `addr`.
    fn commit(&mut self, addr: SocketAddr, len: usize) {
        self.lens.push(len);
        self.addrs.push(addr);
    }
}

/// A hasher for small integer keys chosen by clients (participant and room ids): one
/// multiplication. Keys are not secret and a collision costs a probe, not correctness.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// One participant as the forwarder knows it.
struct Member {
    id: u32,
    session: u64,
    key: ParticipantKey,
    addr: SocketAddr,
    /// Index into `rooms`.
    room: usize,
    /// Replay windows of its audio and video streams.
    streams: [ReplayWindow; 2],
    last_heard: Instant,
}

/// One room: its id and its members (indices into `members`), at most [`MAX_ROOM_SIZE`].
struct Room {
    id: u64,
    members: Vec<usize>,
}

/// The forwarder: participants, rooms and counters.
pub struct Forwarder {
    secret: Secret,
    max_participants: usize,
    /// Participants by slot; `None` slots are free (listed in `free_members`).
    members: Vec<Option<Member>>,
    free_members: Vec<usize>,
    /// Participant id to slot.
    by_id: IdMap<u32, usize>,
    /// Rooms by slot; a room left empty is freed (listed in `free_rooms`) for reuse.
    rooms: Vec<Room>,
    free_rooms: Vec<usize>,
    /// Room id to slot, for rooms with members.
    room_by_id: IdMap<u64, usize>,
    /// The last counter accepted per participant id, kept after it leaves, so that an old
    /// hello cannot be replayed.
    last_counter: IdMap<u32, u64>,
    stats: ForwarderStats,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("participants", &self.participants())
            .field("stats", &self.stats)
            .finish()
    }
}

fn kind_index(kind: MediaKind) -> usize {
    usize::from(kind == MediaKind::Video)
}

impl Forwarder {
    /// A forwarder for participants keyed from `secret`, at most `max_participants` at once.
    pub fn new(secret: Secret, max_participants: usize) -> Self {
        Self {
            secret,
            max_participants,
            members: Vec::new(),
            free_members: Vec::new(),
            by_id: IdMap::default(),
            rooms: Vec::new(),
            free_rooms: Vec::new(),
            room_by_id: IdMap::default(),
            last_counter: IdMap::default(),
            stats: ForwarderStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ForwarderStats {
        self.stats
    }

    /// Participants present.
    pub fn participants(&self) -> usize {
        self.by_id.len()
    }

    /// Rooms with at least one participant.
    pub fn rooms(&self) -> usize {
        self.room_by_id.len()
    }

    /// Handles one datagram from `from` (decrypted in place when it is media); what it sends
    /// goes into `out`, which should have [`MAX_FANOUT`] free slots.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
        out: &mut Outbox,
    ) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        match datagram.first() {
            Some(&CONTROL_MAGIC) => self.on_control(now, from, datagram, out),
            Some(_) => self.on_media(now, datagram, out),
            None => self.stats.dropped_malformed += 1,
        }
    }

    /// Forgets participants silent for [`SILENCE_TIMEOUT`]; call about once a second.
    pub fn tick(&mut self, now: Instant) {
        let silent: Vec<usize> = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(slot, m)| {
                let m = m.as_ref()?;
                (now.saturating_duration_since(m.last_heard) >= SILENCE_TIMEOUT).then_some(slot)
            })
            .collect();
        for slot in silent {
            self.remove(slot);
            self.stats.expired += 1;
        }
    }

    fn on_media(&mut self, now: Instant, datagram: &mut [u8], out: &mut Outbox) {
        let Some(header) = RtpHeader::parse(datagram) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let (publisher, kind) = ssrc_owner(header.ssrc);
        let Some(&slot) = self.by_id.get(&publisher) else {
            self.stats.dropped_unknown += 1;
            return;
        };
        let member = self.members[slot].as_mut().expect("a listed member");
        let window = &mut member.streams[kind_index(kind)];
        let index = window.index(header.sequence);
        if !window.is_new(index) {
            self.stats.dropped_replayed += 1;
            return;
        }
        if !member.key.open_media(datagram, index) {
            self.stats.dropped_unauthentic += 1;
            return;
        }
        window.mark(index);
        member.last_heard = now;
        self.stats.media_in += 1;
        let room = member.room;
        let clear = &datagram[..datagram.len() - TAG_LEN];
        for &mate in &self.rooms[room].members {
            if mate == slot {
                continue;
            }
            let mate = self.members[mate].as_ref().expect("a room member");
            let Some(copy) = out.slot() else {
                self.stats.dropped_overflow += 1;
                continue;
            };
            let copy = &mut copy[..datagram.len()];
            copy[..clear.len()].copy_from_slice(clear);
            mate.key.seal_media(copy, index);
            out.commit(mate.addr, datagram.len());
            self.stats.forwarded += 1;
            self.stats.bytes_forwarded += datagram.len() as u64;
        }
    }

    fn on_control(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], out: &mut Outbox) {
        let Some(control) = Control::parse(datagram) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        if control.participant >= MAX_PARTICIPANT_ID || control.kind == ControlKind::Ack {
            self.stats.dropped_malformed += 1;
            return;
        }
        let existing = self.by_id.get(&control.participant).copied();
        let current = existing.filter(|&slot| self.member(slot).session == control.session);
        // a new session's key is derived for a hello only, and kept only if it verifies
        let mut new_key = None;
        let authentic = match (current, control.kind) {
            (Some(slot), _) => control.verify(&self.member(slot).key, datagram),
            (None, ControlKind::Hello) => {
                let key = self
                    .secret
                    .participant_key(control.participant, control.session);
                let authentic = control.verify(&key, datagram);
                new_key = Some(key);
                authentic
            }
            (None, _) => {
                self.stats.dropped_unknown += 1;
                return;
            }
        };
        if !authentic {
            self.stats.dropped_unauthentic += 1;
            return;
        }
        if self
            .last_counter
            .get(&control.participant)
            .is_some_and(|&last| control.counter <= last)
        {
            self.stats.dropped_replayed += 1;
            return;
        }
        if control.kind == ControlKind::Bye {
            self.last_counter
                .insert(control.participant, control.counter);
            if let Some(slot) = current {
                self.remove(slot);
                self.stats.byes += 1;
            }
            return;
        }
        let full = existing.is_none() && self.participants() >= self.max_participants;
        if full || !self.fits(existing, control.room) {
            self.stats.dropped_refused += 1;
            return;
        }
        self.last_counter
            .insert(control.participant, control.counter);
        let slot = match (current, new_key) {
            (Some(slot), _) => slot,
            (None, Some(key)) => self.admit(now, from, control, key, existing),
            (None, None) => return,
        };
        self.move_to_room(slot, control.room);
        let member = self.members[slot].as_mut().expect("a listed member");
        member.addr = from;
        member.last_heard = now;
        self.stats.hellos += 1;
        let ack = Control {
            kind: ControlKind::Ack,
            ..control
        };
        match out.slot() {
            Some(buf) => {
                let len = ack.seal(&member.key, buf);
                out.commit(from, len);
            }
            None => self.stats.dropped_overflow += 1,
        }
    }

    fn member(&self, slot: usize) -> &Member {
        self.members[slot].as_ref().expect("a listed member")
    }

    /// Whether room `id` has a place for `slot` (a new participant when `None`).
    fn fits(&self, slot: Option<usize>, id: u64) -> bool {
        self.room_by_id.get(&id).is_none_or(|&room| {
            let members = &self.rooms[room].members;
            members.len() < MAX_ROOM_SIZE || slot.is_some_and(|slot| members.contains(&slot))
        })
    }

    /// Admits a participant, or a new session of `existing` (new key, new replay windows,
    /// same slot and room until [`Self::move_to_room`]).
    fn admit(
        &mut self,
        now: Instant,
        from: SocketAddr,
        control: Control,
        key: ParticipantKey,
        existing: Option<usize>,
    ) -> usize {
        self.stats.joins += 1;
        let mut member = Member {
            id: control.participant,
            session: control.session,
            key,
            addr: from,
            room: 0,
            streams: Default::default(),
            last_heard: now,
        };
        if let Some(slot) = existing {
            member.room = self.member(slot).room;
            self.members[slot] = Some(member);
            return slot;
        }
        member.room = self.room_slot(control.room);
        let room = member.room;
        let slot = match self.free_members.pop() {
            Some(slot) => {
                self.members[slot] = Some(member);
                slot
            }
            None => {
                self.members.push(Some(member));
                self.members.len() - 1
            }
        };
        self.by_id.insert(control.participant, slot);
        self.rooms[room].members.push(slot);
        slot
    }

    /// The slot of room `id`, created when new.
    fn room_slot(&mut self, id: u64) -> usize {
        if let Some(&room) = self.room_by_id.get(&id) {
            return room;
        }
        let room = match self.free_rooms.pop() {
            Some(room) => {
                self.rooms[room].id = id;
                room
            }
            None => {
                self.rooms.push(Room {
                    id,
                    members: Vec::with_capacity(MAX_ROOM_SIZE),
                });
                self.rooms.len() - 1
            }
        };
        self.room_by_id.insert(id, room);
        room
    }

    /// Takes member `slot` out of room `room`, freeing the room when it is left empty.
    fn leave_room(&mut self, room: usize, slot: usize) {
        let members = &mut self.rooms[room].members;
        members.retain(|&m| m != slot);
        if members.is_empty() {
            self.room_by_id.remove(&self.rooms[room].id);
            self.free_rooms.push(room);
        }
    }

    /// Puts member `slot` into room `id` (a hello may name another room than before).
    fn move_to_room(&mut self, slot: usize, id: u64) {
        let member = self.members[slot].as_ref().expect("member");
        if self.rooms[member.room].id == id {
            return;
        }
        let old = member.room;
        let new = self.room_slot(id);
        self.leave_room(old, slot);
        self.rooms[new].members.push(slot);
        self.members[slot].as_mut().expect("member").room = new;
    }

    fn remove(&mut self, slot: usize) {
        let Some(member) = self.members[slot].take() else {
            return;
        };
        self.by_id.remove(&member.id);
        self.leave_room(member.room, slot);
        self.free_members.push(slot);
    }
}

#[cfg(test)]
mod tests;
