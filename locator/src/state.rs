//! The locator's shared state behind one trait: the node registry (reports, stable indexes),
//! meeting state (hosting nodes, participants, lock, moderators), the cascade link keys of node
//! pairs, and placement on a consistent view of all of it.
//!
//! [`MemoryStore`] keeps everything in-process (one locator); [`RedisStore`] keeps it in Redis
//! so several locators serve one cluster. Both answer the same questions the same way; races
//! between locators are harmless (two placements of a new meeting on two nodes just make the
//! meeting cascade).

mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::placement::{NodeLoad, Placement, PlacementError, Request};
use futures_util::future::BoxFuture;
use kaskade_protocol::cluster::{LinkInfo, MeetingInfo, NodeReport, hex};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a meeting nobody hosts keeps its lock and moderators (so they survive a node's
/// death while its participants reconnect elsewhere).
pub const MEETING_LINGER: Duration = Duration::from_secs(30);

/// The answer of every store operation.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Every node index is held by a live node.
    #[error(
        "every node index (1..={}) is held by a live node",
        kaskade_protocol::cluster::MAX_NODE_INDEX
    )]
    NoFreeIndex,
    /// The system's secure random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// A stored record does not parse.
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
}

/// The clock of one request: monotonic for placement, Unix milliseconds for what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// The current time.
    pub fn current() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            instant: Instant::now(),
            unix_ms,
        }
    }

    /// The instant `unix_ms` stands for, if the monotonic clock reaches back that far.
    pub fn instant_of(&self, unix_ms: u64) -> Option<Instant> {
        self.instant
            .checked_sub(Duration::from_millis(self.unix_ms.saturating_sub(unix_ms)))
    }

    /// Seconds from `unix_ms` to now.
    pub fn seconds_since(&self, unix_ms: u64) -> f64 {
        self.unix_ms.saturating_sub(unix_ms) as f64 / 1000.0
    }
}

/// What the locator keeps of a node: its last report without the meeting list, its index,
/// and when the report arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's name.
    pub node: String,
    /// The node's index in the cluster.
    pub index: u16,
    /// The node's region.
    pub region: Option<String>,
    /// Where clients open signaling.
    pub signaling_url: String,
    /// The node's HTTP base URL.
    pub http_url: String,
    /// The node's UDP media address.
    pub media_addr: SocketAddr,
    /// Participants the node carries at most.
    pub capacity: u32,
    /// Outbound bitrate the node carries at most.
    pub max_bitrate_out_bps: Option<u64>,
    /// Participants reported.
    pub participants: u32,
    /// Meetings reported.
    pub meetings: u32,
    /// Streams received.
    pub streams_in: u32,
    /// Streams sent.
    pub streams_out: u32,
    /// Inbound bitrate.
    pub bitrate_in_bps: u64,
    /// Outbound bitrate.
    pub bitrate_out_bps: u64,
    /// CPU in cores.
    pub cpu_cores: f64,
    /// The node wants no new participants.
    pub overloaded: bool,
    /// When the report arrived, Unix milliseconds.
    pub reported_at_ms: u64,
}

impl NodeRecord {
    /// The record of `report`, given the node's index and the arrival time.
    pub fn from_report(report: &NodeReport, index: u16, now: Now) -> Self {
        Self {
            node: report.node.clone(),
            index,
            region: report.region.clone(),
            signaling_url: report.signaling_url.clone(),
            http_url: report.http_url.clone(),
            media_addr: report.media_addr,
            capacity: report.capacity,
            max_bitrate_out_bps: report.max_bitrate_out_bps,
            participants: report.participants,
            meetings: u32::try_from(report.meetings.len()).unwrap_or(u32::MAX),
            streams_in: report.streams_in,
            streams_out: report.streams_out,
            bitrate_in_bps: report.bitrate_in_bps,
            bitrate_out_bps: report.bitrate_out_bps,
            cpu_cores: report.cpu_cores,
            overloaded: report.overloaded,
            reported_at_ms: now.unix_ms,
        }
    }

    /// The load placement weighs.
    pub fn load(&self) -> NodeLoad {
        NodeLoad {
            region: self.region.clone(),
            capacity: self.capacity,
            max_bitrate_out_bps: self.max_bitrate_out_bps,
            participants: self.participants,
            bitrate_out_bps: self.bitrate_out_bps,
            overloaded: self.overloaded,
        }
    }

    /// Whether the last report is fresher than `timeout`.
    pub fn is_live(&self, now: Now, timeout: Duration) -> bool {
        u128::from(now.unix_ms.saturating_sub(self.reported_at_ms)) < timeout.as_millis()
    }

    /// The link description of this node with a pair key (64 hex digits).
    pub fn link(&self, key: String) -> LinkInfo {
        LinkInfo {
            node: self.node.clone(),
            index: self.index,
            http_url: self.http_url.clone(),
            media_addr: self.media_addr,
            key,
        }
    }
}

/// How a node looks to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Reporting and taking participants.
    Up,
    /// Reporting overload: no new participants.
    Overloaded,
    /// Its reports are late (older than half the node timeout); dropped at the timeout.
    Stale,
}

/// A live node with its load, for `GET /api/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node's last report.
    #[serde(flatten)]
    pub record: NodeRecord,
    /// Participants reported plus those placed since.
    pub corrected_participants: u32,
    /// Seconds since the last report.
    pub seconds_since_report: f64,
    /// Up, overloaded or stale.
    pub state: NodeState,
}

impl NodeView {
    /// The view of `record` with `placed` participants placed since its report.
    pub fn new(record: NodeRecord, placed: u32, now: Now, timeout: Duration) -> Self {
        let age = now.seconds_since(record.reported_at_ms);
        let state = if age * 2.0 > timeout.as_secs_f64() {
            NodeState::Stale
        } else if record.overloaded {
            NodeState::Overloaded
        } else {
            NodeState::Up
        };
        Self {
            corrected_participants: record.participants.saturating_add(placed),
            seconds_since_report: age,
            state,
            record,
        }
    }
}

/// One node of a meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingNode {
    /// The node.
    pub node: String,
    /// The meeting's participants there, corrected for placements since the node's report.
    pub participants: u32,
}

/// A meeting's state, for the join decision and `GET /api/meetings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingView {
    /// The meeting.
    pub meeting: String,
    /// Nobody new may join.
    pub locked: bool,
    /// Identities that join as moderators.
    pub moderators: Vec<String>,
    /// The live nodes hosting it.
    pub nodes: Vec<MeetingNode>,
    /// Participants over every node.
    pub participants: u32,
}

impl MeetingView {
    /// The view of `meeting` hosted on `nodes`; sorts the moderators and adds up the
    /// participants.
    pub fn new(
        meeting: &str,
        locked: bool,
        mut moderators: Vec<String>,
        nodes: Vec<MeetingNode>,
    ) -> Self {
        moderators.sort();
        Self {
            meeting: meeting.to_string(),
            locked,
            moderators,
            participants: nodes.iter().map(|n| n.participants).sum(),
            nodes,
        }
    }
}

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The node's index.
    pub index: u16,
    /// The node was not registered (or had been dropped) before this report.
    pub new: bool,
}

/// A meeting a node has just started to host, as [`Store::add_host`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hosting {
    /// Nobody new may join.
    pub locked: bool,
    /// The other live nodes hosting the meeting, in the order the node learns of them.
    pub others: Vec<NodeRecord>,
}

/// A placed join: where it goes and how to reach that node.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The placement.
    pub placement: Placement,
    /// The chosen node.
    pub node: NodeRecord,
}

/// The locator's state, shared by every request (and, with Redis, every locator).
pub trait Store: Send + Sync + 'static {
    /// Records a node's report (registering the node on its first).
    fn report<'a>(&'a self, report: &'a NodeReport, now: Now) -> StoreFuture<'a, Registration>;

    /// A live node's record.
    fn node<'a>(&'a self, node: &'a str, now: Now) -> StoreFuture<'a, Option<NodeRecord>>;

    /// Drops a node at once (its health check failed): no placements, no meetings.
    fn mark_dead<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()>;

    /// Every live node with its load.
    fn nodes(&self, now: Now) -> StoreFuture<'_, Vec<NodeView>>;

    /// A meeting's state, if the locator knows the meeting.
    fn meeting<'a>(&'a self, meeting: &'a str, now: Now) -> StoreFuture<'a, Option<MeetingView>>;

    /// Every meeting the locator knows.
    fn meetings(&self, now: Now) -> StoreFuture<'_, Vec<MeetingView>>;

    /// How many live nodes and known meetings there are (cheaper than listing them).
    fn counts(&self, now: Now) -> StoreFuture<'_, (usize, usize)>;

    /// Places one more participant of `meeting` on a consistent view of nodes and meeting, and
    /// counts it there until the node's next report.
    fn place<'a>(
        &'a self,
        meeting: &'a str,
        request: Request<'a>,
        now: Now,
    ) -> StoreFuture<'a, Result<Placed, PlacementError>>;

    /// Marks the one-time token `jti` (expiring at `exp_secs`) used; false when it was already,
    /// here or (with Redis) at any other locator.
    fn spend_token<'a>(&'a self, jti: &'a str, exp_secs: u64, now: Now) -> StoreFuture<'a, bool>;

    /// Makes `identity` a moderator of `meeting` (they keep the role when they rejoin).
    fn add_moderator<'a>(&'a self, meeting: &'a str, identity: &'a str) -> StoreFuture<'a, ()>;

    /// Records that `node` hosts `meeting`; returns the meeting's lock and the other live
    /// nodes hosting it with each pair's link key. `None` when `node` is not a live node.
    fn host<'a>(
        &'a self,
        node: &'a str,
        meeting: &'a str,
        now: Now,
    ) -> StoreFuture<'a, Option<MeetingInfo>> {
        let hosting = self.add_host(node, meeting, now);
        Box::pin(async move {
            let Some(Hosting { locked, others }) = hosting.await? else {
                return Ok(None);
            };
            let mut peers = Vec::with_capacity(others.len());
            for record in others {
                let key = self.link_key(node, &record.node).await?;
                peers.push(record.link(key));
            }
            Ok(Some(MeetingInfo {
                meeting: meeting.to_string(),
                locked,
                peers,
            }))
        })
    }

    /// The part of [`Store::host`] each store does its own way: records that a live `node`
    /// hosts `meeting` and reads the meeting's lock and the other live nodes hosting it.
    /// `None` when `node` is not a live node.
    fn add_host<'a>(
        &'a self,
        node: &'a str,
        meeting: &'a str,
        now: Now,
    ) -> StoreFuture<'a, Option<Hosting>>;

    /// The key of the pair `a`-`b` (either order), created on first use.
    fn link_key<'a>(&'a self, a: &'a str, b: &'a str) -> StoreFuture<'a, String>;

    /// How `node` reaches `peer`, with the pair's key; `None` when `peer` is not a live node.
    fn link<'a>(
        &'a self,
        node: &'a str,
        peer: &'a str,
        now: Now,
    ) -> StoreFuture<'a, Option<LinkInfo>> {
        if node == peer {
            return Box::pin(async { Ok(None) });
        }
        Box::pin(async move {
            let Some(record) = self.node(peer, now).await? else {
                return Ok(None);
            };
            let key = self.link_key(node, peer).await?;
            Ok(Some(record.link(key)))
        })
    }

    /// Drops nodes whose reports stopped and forgets meetings nobody has hosted for
    /// [`MEETING_LINGER`].
    fn sweep(&self, now: Now) -> StoreFuture<'_, ()>;

    /// `(map, entries)` of the maps this process keeps (for the map-size gauges; what lives in
    /// Redis is not counted).
    fn map_sizes(&self) -> Vec<(&'static str, usize)>;
}

/// The live ones of `records`, as the operator sees them, by index; `placed` tells how many
/// participants were placed on a node since its report.
fn node_views(
    records: impl IntoIterator<Item = NodeRecord>,
    placed: impl Fn(&NodeRecord) -> u32,
    now: Now,
    timeout: Duration,
) -> Vec<NodeView> {
    let mut nodes: Vec<NodeView> = records
        .into_iter()
        .filter(|record| record.is_live(now, timeout))
        .map(|record| {
            let placed = placed(&record);
            NodeView::new(record, placed, now, timeout)
        })
        .collect();
    nodes.sort_by_key(|n| n.record.index);
    nodes
}

/// `duration` in whole milliseconds (saturating).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A new link key: 32 random bytes from the system's secure generator, in hex.
fn new_link_key() -> Result<String, StoreError> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| StoreError::Random)?;
    Ok(hex(&key))
}

/// The two names of a pair in a fixed order, so both ends find the same key.
fn pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b { (a, b) } else { (b, a) }
}
