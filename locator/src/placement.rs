//! Placement: which node a participant of a meeting joins.
//!
//! Pure and deterministic: no I/O, no clock, no global randomness. The caller passes `now` and
//! a random number generator, so tests replay exactly. The rules (docs/CLUSTER.md, "Placement")
//! follow Jicofo and LiveKit:
//!
//! - a node's *corrected* load is its reported participants plus the participants placed on it
//!   since that report (reports lag by a second or more); a report resets the correction;
//! - a node is eligible while its last report is fresher than the node timeout, it does not
//!   report overload, and it has room by participants and by outbound bitrate;
//! - a meeting stays on a node that hosts it while that node is eligible, and cascades to
//!   another node when none has room or the participant prefers a region none of them serves;
//! - new meetings and cascades take the less loaded of two random eligible nodes ("power of two
//!   choices"), so a burst of joins against the same stale reports does not herd onto one node.
//!
//! Nodes live in a dense table with per-region index vectors, so a placement samples a few
//! random slots instead of scanning every node.

use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Random draws tried before falling back to a scan of every candidate.
const SAMPLES: usize = 16;

/// Limits that apply to every placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementConfig {
    /// A node whose last report is this old is not eligible.
    pub node_timeout: Duration,
    /// Visible participants a meeting holds across all its nodes.
    pub max_meeting_size: u32,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            node_timeout: Duration::from_secs(3),
            max_meeting_size: 10,
        }
    }
}

/// What a node's report says about its load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeLoad {
    /// The node's region, if any.
    pub region: Option<String>,
    /// Participants the node carries at most.
    pub capacity: u32,
    /// Outbound bitrate the node carries at most, if limited.
    pub max_bitrate_out_bps: Option<u64>,
    /// Participants the node reported.
    pub participants: u32,
    /// Outbound bitrate the node reported.
    pub bitrate_out_bps: u64,
    /// The node asked for no new participants.
    pub overloaded: bool,
}

/// One join to place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request<'a> {
    /// Preferred region.
    pub region: Option<&'a str>,
    /// Place on this node or fail.
    pub pinned: Option<&'a str>,
    /// Never place on this node (the client just lost it).
    pub avoid: Option<&'a str>,
    /// A hidden participant (a recorder): not counted against the meeting's size.
    pub hidden: bool,
}

/// How a placement relates to the meeting's existing nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementKind {
    /// On a node that already hosts the meeting.
    Stay,
    /// On a further node of a meeting hosted elsewhere: the nodes will link.
    Cascade,
    /// The meeting's first node.
    New,
}

impl PlacementKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            PlacementKind::Stay => "stay",
            PlacementKind::Cascade => "cascade",
            PlacementKind::New => "new",
        }
    }
}

/// Where a join goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The chosen node.
    pub node: Arc<str>,
    /// Stay, cascade or new.
    pub kind: PlacementKind,
    /// The meeting's corrected participants before this one.
    pub participants_before: u32,
}

/// Why a join cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The meeting already holds its maximum of visible participants.
    #[error("the meeting is full ({0} participants)")]
    MeetingFull(u32),
    /// No eligible node has room.
    #[error("no node has room for another participant")]
    NoCapacity,
    /// The pinned node is not a live node of the cluster.
    #[error("no live node has that name")]
    UnknownNode,
}

/// A node the table knows.
#[derive(Debug)]
struct Slot {
    name: Arc<str>,
    region: Option<Arc<str>>,
    load: NodeLoad,
    last_report: Instant,
    /// Participants placed since the last report.
    placed: u32,
    /// False once the node is removed (its slot is kept for when it comes back).
    live: bool,
    /// Meetings this node hosts.
    meetings: Vec<Arc<str>>,
}

impl Slot {
    fn corrected(&self) -> u32 {
        self.load.participants.saturating_add(self.placed)
    }

    fn fresh(&self, now: Instant, timeout: Duration) -> bool {
        self.live && now.saturating_duration_since(self.last_report) < timeout
    }

    fn eligible(&self, now: Instant, timeout: Duration) -> bool {
        self.fresh(now, timeout)
            && !self.load.overloaded
            && self.corrected() < self.load.capacity
            && self
                .load
                .max_bitrate_out_bps
                .is_none_or(|max| self.load.bitrate_out_bps < max)
    }

    fn load_fraction(&self) -> f64 {
        let by_participants = f64::from(self.corrected()) / f64::from(self.load.capacity.max(1));
        let by_bitrate = match self.load.max_bitrate_out_bps {
            Some(max) => self.load.bitrate_out_bps as f64 / max.max(1) as f64,
            None => 0.0,
        };
        by_participants.max(by_bitrate)
    }

    fn in_region(&self, region: &str) -> bool {
        self.region.as_deref() == Some(region)
    }
}

/// One node hosting one meeting.
#[derive(Debug, Clone, Copy)]
struct Host {
    node: u32,
    /// Participants the node reported in this meeting.
    reported: u32,
    /// Participants placed in this meeting on this node since the node's last report.
    placed: u32,
}

impl Host {
    fn corrected(&self) -> u32 {
        self.reported.saturating_add(self.placed)
    }
}

/// The node table and the meetings placed on it.
#[derive(Debug, Default)]
pub struct Placer {
    config: PlacementConfig,
    slots: Vec<Slot>,
    by_name: HashMap<Arc<str>, u32>,
    /// Every slot, for sampling.
    all: Vec<u32>,
    /// Slots per region, for sampling within a region.
    regions: HashMap<Arc<str>, Vec<u32>>,
    meetings: HashMap<Arc<str>, Vec<Host>>,
    scratch: Vec<u32>,
}

impl Placer {
    /// An empty table.
    pub fn new(config: PlacementConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Records a node's report: its load, and its meetings with their participants. The
    /// report replaces every placement correction of the node.
    pub fn report<'m>(
        &mut self,
        node: &str,
        load: NodeLoad,
        meetings: impl IntoIterator<Item = (&'m str, u32)>,
        now: Instant,
    ) {
        let id = self.upsert_node(node, load, now, 0);
        let slot = &mut self.slots[id as usize];
        let previous = std::mem::take(&mut slot.meetings);
        for meeting in &previous {
            if let Some(hosts) = self.meetings.get_mut(meeting) {
                hosts.retain(|h| h.node != id);
                if hosts.is_empty() {
                    self.meetings.remove(meeting);
                }
            }
        }
        for (meeting, participants) in meetings {
            self.set_host(meeting, id, participants, 0);
        }
    }

    /// Sets a node's load and the time of its last report, with `placed` participants placed
    /// since (another locator's placements, when the table mirrors shared state). Returns
    /// nothing about meetings: see [`Placer::set_hosts`].
    pub fn set_node(&mut self, node: &str, load: NodeLoad, last_report: Instant, placed: u32) {
        self.upsert_node(node, load, last_report, placed);
    }

    fn upsert_node(
        &mut self,
        node: &str,
        load: NodeLoad,
        last_report: Instant,
        placed: u32,
    ) -> u32 {
        let region: Option<Arc<str>> = load.region.as_deref().map(Arc::from);
        let id = match self.by_name.get(node) {
            Some(&id) => id,
            None => {
                let id = self.slots.len() as u32;
                let name: Arc<str> = Arc::from(node);
                self.slots.push(Slot {
                    name: name.clone(),
                    region: None,
                    load: NodeLoad::default(),
                    last_report,
                    placed: 0,
                    live: true,
                    meetings: Vec::new(),
                });
                self.by_name.insert(name, id);
                self.all.push(id);
                id
            }
        };
        let slot = &mut self.slots[id as usize];
        if slot.region != region || slot.load.region != load.region {
            if let Some(old) = slot.region.take()
                && let Some(ids) = self.regions.get_mut(&old)
            {
                ids.retain(|&other| other != id);
            }
            if let Some(new) = &region {
                self.regions.entry(new.clone()).or_default().push(id);
            }
            slot.region = region;
        }
        slot.load = load;
        slot.last_report = last_report;
        slot.placed = placed;
        slot.live = true;
        id
    }

    /// Replaces the hosts of a meeting: `(node, reported participants, placed since that
    /// node's report)`. Unknown nodes are skipped.
    pub fn set_hosts<'n>(
        &mut self,
        meeting: &str,
        hosts: impl IntoIterator<Item = (&'n str, u32, u32)>,
    ) {
        if let Some(old) = self.meetings.remove(meeting) {
            for host in old {
                self.slots[host.node as usize]
                    .meetings
                    .retain(|m| &**m != meeting);
            }
        }
        for (node, reported, placed) in hosts {
            if let Some(&id) = self.by_name.get(node) {
                self.set_host(meeting, id, reported, placed);
            }
        }
    }

    /// Records that `node` hosts `meeting` (it asked for the meeting's peers); the node's next
    /// report confirms it. Returns false for an unknown node.
    pub fn host(&mut self, meeting: &str, node: &str) -> bool {
        let Some(&id) = self.by_name.get(node) else {
            return false;
        };
        if !self.hosts_meeting(meeting, id) {
            self.set_host(meeting, id, 0, 0);
        }
        true
    }

    fn hosts_meeting(&self, meeting: &str, id: u32) -> bool {
        self.meetings
            .get(meeting)
            .is_some_and(|hosts| hosts.iter().any(|h| h.node == id))
    }

    fn set_host(&mut self, meeting: &str, id: u32, reported: u32, placed: u32) {
        let key = match self.meetings.get_key_value(meeting) {
            Some((key, _)) => key.clone(),
            None => Arc::from(meeting),
        };
        let hosts = self.meetings.entry(key.clone()).or_default();
        match hosts.iter_mut().find(|h| h.node == id) {
            Some(host) => {
                host.reported = reported;
                host.placed = placed;
            }
            None => {
                hosts.push(Host {
                    node: id,
                    reported,
                    placed,
                });
                self.slots[id as usize].meetings.push(key);
            }
        }
    }

    /// Drops a node from placement and from every meeting it hosted.
    pub fn remove_node(&mut self, node: &str) {
        let Some(&id) = self.by_name.get(node) else {
            return;
        };
        let slot = &mut self.slots[id as usize];
        slot.live = false;
        slot.placed = 0;
        for meeting in std::mem::take(&mut slot.meetings) {
            if let Some(hosts) = self.meetings.get_mut(&meeting) {
                hosts.retain(|h| h.node != id);
                if hosts.is_empty() {
                    self.meetings.remove(&meeting);
                }
            }
        }
    }

    /// `(table, entries)` of the placer's tables, for the locator's map-size gauges: node
    /// slots (removed ones are kept for a comeback), names, region lists, meetings and the
    /// meetings' hosts.
    pub fn sizes(&self) -> [(&'static str, usize); 5] {
        [
            ("placer_slots", self.slots.len()),
            ("placer_names", self.by_name.len()),
            ("placer_regions", self.regions.len()),
            ("placer_meetings", self.meetings.len()),
            ("placer_hosts", self.meetings.values().map(Vec::len).sum()),
        ]
    }

    /// Whether any node hosts `meeting`.
    pub fn hosted(&self, meeting: &str) -> bool {
        self.meetings.contains_key(meeting)
    }

    /// Names of the nodes not removed.
    pub fn live_nodes(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().filter(|s| s.live).map(|s| &*s.name)
    }

    /// A live node's participants corrected for placements since its report.
    pub fn corrected_participants(&self, node: &str) -> Option<u32> {
        let slot = &self.slots[*self.by_name.get(node)? as usize];
        slot.live.then(|| slot.corrected())
    }

    /// The nodes hosting `meeting` whose reports are fresh, with the meeting's corrected
    /// participants on each.
    pub fn meeting_nodes(&self, meeting: &str, now: Instant) -> Vec<(Arc<str>, u32)> {
        self.fresh_hosts(meeting, now)
            .map(|(slot, host)| (slot.name.clone(), host.corrected()))
            .collect()
    }

    /// The meeting's corrected participants over its fresh nodes.
    pub fn meeting_participants(&self, meeting: &str, now: Instant) -> u32 {
        self.fresh_hosts(meeting, now)
            .map(|(_, host)| host.corrected())
            .sum()
    }

    fn fresh_hosts(&self, meeting: &str, now: Instant) -> impl Iterator<Item = (&Slot, &Host)> {
        let timeout = self.config.node_timeout;
        self.meetings
            .get(meeting)
            .into_iter()
            .flatten()
            .map(|host| (&self.slots[host.node as usize], host))
            .filter(move |(slot, _)| slot.fresh(now, timeout))
    }

    /// Chooses the node for one more participant of `meeting` and counts the participant
    /// there until the node's next report.
    pub fn place<R: Rng + ?Sized>(
        &mut self,
        meeting: &str,
        request: Request<'_>,
        now: Instant,
        rng: &mut R,
    ) -> Result<Placement, PlacementError> {
        let timeout = self.config.node_timeout;
        let before = self.meeting_participants(meeting, now);
        if before >= self.config.max_meeting_size && !request.hidden {
            return Err(PlacementError::MeetingFull(self.config.max_meeting_size));
        }
        let avoid = request
            .avoid
            .and_then(|name| self.by_name.get(name).copied());
        let hosted = before > 0 || self.fresh_hosts(meeting, now).next().is_some();
        let (id, kind) = match request.pinned {
            Some(name) => {
                let id = *self.by_name.get(name).ok_or(PlacementError::UnknownNode)?;
                let slot = &self.slots[id as usize];
                if !slot.fresh(now, timeout) {
                    return Err(PlacementError::UnknownNode);
                }
                if Some(id) == avoid || !slot.eligible(now, timeout) {
                    return Err(PlacementError::NoCapacity);
                }
                (id, self.kind_on(meeting, id, hosted))
            }
            None => self.choose(meeting, request.region, avoid, hosted, now, rng)?,
        };
        let slot = &mut self.slots[id as usize];
        slot.placed = slot.placed.saturating_add(1);
        let node = slot.name.clone();
        let (reported, placed) = self
            .meetings
            .get(meeting)
            .and_then(|hosts| hosts.iter().find(|h| h.node == id))
            .map_or((0, 0), |h| (h.reported, h.placed));
        let counted = u32::from(!request.hidden);
        self.set_host(meeting, id, reported, placed.saturating_add(counted));
        Ok(Placement {
            node,
            kind,
            participants_before: before,
        })
    }

    fn kind_on(&self, meeting: &str, id: u32, hosted: bool) -> PlacementKind {
        if self.hosts_meeting(meeting, id) {
            PlacementKind::Stay
        } else if hosted {
            PlacementKind::Cascade
        } else {
            PlacementKind::New
        }
    }

    fn choose<R: Rng + ?Sized>(
        &mut self,
        meeting: &str,
        region: Option<&str>,
        avoid: Option<u32>,
        hosted: bool,
        now: Instant,
        rng: &mut R,
    ) -> Result<(u32, PlacementKind), PlacementError> {
        let timeout = self.config.node_timeout;
        let stay = self
            .meetings
            .get(meeting)
            .into_iter()
            .flatten()
            .filter(|h| Some(h.node) != avoid)
            .filter(|h| self.slots[h.node as usize].eligible(now, timeout))
            .max_by_key(|h| {
                let slot = &self.slots[h.node as usize];
                (region.is_some_and(|r| slot.in_region(r)), h.corrected())
            })
            .map(|h| h.node);
        let region_pool = region.and_then(|r| self.regions.get(r));
        let (slots, scratch) = (&self.slots, &mut self.scratch);
        let mut pick = |pool: &[u32]| two_choices(slots, pool, avoid, now, timeout, rng, scratch);
        if let Some(id) = stay {
            let in_region = region.is_none_or(|r| slots[id as usize].in_region(r));
            if !in_region
                && let Some(pool) = region_pool
                && let Some(other) = pick(pool)
            {
                return Ok((other, PlacementKind::Cascade));
            }
            return Ok((id, PlacementKind::Stay));
        }
        let id = match region_pool.and_then(|pool| pick(pool)) {
            Some(id) => id,
            None => pick(&self.all).ok_or(PlacementError::NoCapacity)?,
        };
        let kind = if hosted {
            PlacementKind::Cascade
        } else {
            PlacementKind::New
        };
        Ok((id, kind))
    }
}

/// The less loaded of two random eligible nodes of `pool` (the only one, if one is eligible).
/// Samples first; scans `pool` only when sampling finds fewer than two eligible nodes.
fn two_choices<R: Rng + ?Sized>(
    slots: &[Slot],
    pool: &[u32],
    avoid: Option<u32>,
    now: Instant,
    timeout: Duration,
    rng: &mut R,
    scratch: &mut Vec<u32>,
) -> Option<u32> {
    if pool.is_empty() {
        return None;
    }
    let usable = |id: u32| Some(id) != avoid && slots[id as usize].eligible(now, timeout);
    let lighter = |a: u32, b: u32| {
        if slots[b as usize].load_fraction() < slots[a as usize].load_fraction() {
            b
        } else {
            a
        }
    };
    let mut first = None;
    for _ in 0..SAMPLES {
        let id = pool[rng.random_range(0..pool.len())];
        if !usable(id) {
            continue;
        }
        match first {
            None => first = Some(id),
            Some(f) if f != id => return Some(lighter(f, id)),
            Some(_) => {}
        }
    }
    scratch.clear();
    scratch.extend(pool.iter().copied().filter(|&id| usable(id)));
    match scratch.len() {
        0 => None,
        1 => Some(scratch[0]),
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            Some(lighter(scratch[a], scratch[b]))
        }
    }
}

#[cfg(test)]
mod tests;
