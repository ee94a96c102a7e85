//! State in Redis, so several locators serve one cluster (`--redis redis://...`).
//!
//! Key layout (all under `kaskade:`; docs/CLUSTER.md has the table):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `nodes` | hash | node -> [`NodeRecord`] JSON (last report, index, arrival in Unix ms) |
//! | `node-seen` | sorted set | node scored by its last report's arrival (ms), for the sweep |
//! | `node-placed` | hash | node -> participants placed since its last report |
//! | `node-meetings:{node}` | set | meetings the node hosts |
//! | `meetings` | set | every known meeting |
//! | `meeting:{m}` | hash | `locked` 0/1, `n:{node}` reported participants, `p:{node}` placed since |
//! | `moderators:{m}` | set | moderator identities |
//! | `empty-meetings` | sorted set | meetings nobody hosts, scored by since when (ms) |
//! | `links` | hash | `"{a}\n{b}"` (a < b) -> the pair's key, 64 hex digits, set once (HSETNX) |
//! | `index:{i}` | string | the node holding index `i`, with a lease of one node timeout |
//! | `node-index` / `index-owner` | hash | node -> index it last held, and back |
//!
//! Each locator mirrors the node table (not the meetings) in a local [`Placer`] refreshed at
//! most every [`CACHE_TTL`]; a placement re-reads the meeting's hosts, places on that view, and
//! then adds its correction in Redis (HINCRBY), so other locators count it too.

use super::{
    Hosting, MEETING_LINGER, MeetingNode, MeetingView, NodeRecord, NodeView, Now, Placed,
    Registration, Store, StoreError, StoreFuture, millis, new_link_key, node_views,
};
use crate::placement::{PlacementConfig, PlacementError, Placer, Request};
use kaskade_protocol::cluster::{MAX_NODE_INDEX, NodeReport};
use redis::aio::ConnectionManager;
use redis::{Pipeline, Script};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::warn;

mod commands;
mod keys;

use commands::{add_host_cmds, locked, report_cmds};
use keys::{
    CLAIM_INDEX, EMPTY_MEETINGS, LINKS, MEETINGS, NODE_PLACED, NODE_SEEN, NODES, hosts, link_field,
    meeting_key, moderators_key, node_meetings_key, parse_record, placed_field, reported_field,
    spent_token_key,
};

/// How long a locator places on its mirror of the node table before reading it again.
pub const CACHE_TTL: Duration = Duration::from_millis(250);

struct Cache {
    placer: Placer,
    records: HashMap<String, NodeRecord>,
    refreshed: Option<Instant>,
}

/// The locator's state in Redis.
pub struct RedisStore {
    con: ConnectionManager,
    timeout: Duration,
    claim: Script,
    cache: Mutex<Cache>,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`); reconnects by itself later.
    pub async fn connect(url: &str, config: PlacementConfig) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let con = client.get_connection_manager().await?;
        Ok(Self {
            con,
            timeout: config.node_timeout,
            claim: Script::new(CLAIM_INDEX),
            cache: Mutex::new(Cache {
                placer: Placer::new(config),
                records: HashMap::new(),
                refreshed: None,
            }),
        })
    }

    /// Reports at or before this Unix millisecond are stale.
    fn stale_before(&self, now: Now) -> u64 {
        now.unix_ms.saturating_sub(millis(self.timeout))
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn run<T: redis::FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut con = self.con.clone();
        Ok(pipe.query_async(&mut con).await?)
    }

    /// Every stored node record and placement count.
    async fn load_nodes(&self) -> Result<(Vec<NodeRecord>, HashMap<String, u32>), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg(NODES)
            .cmd("HGETALL")
            .arg(NODE_PLACED);
        let (records, placed): (HashMap<String, String>, HashMap<String, u32>) =
            self.run(&pipe).await?;
        let mut parsed = Vec::with_capacity(records.len());
        for (node, json) in records {
            match parse_record(&json) {
                Ok(record) => parsed.push(record),
                Err(e) => warn!(%node, "skipping node: {e}"),
            }
        }
        Ok((parsed, placed))
    }

    /// Reads the node table into the local mirror unless it is fresher than [`CACHE_TTL`].
    async fn refresh(&self, now: Now) -> Result<(), StoreError> {
        let fresh = self
            .cache()
            .refreshed
            .is_some_and(|at| now.instant.saturating_duration_since(at) < CACHE_TTL);
        if fresh {
            return Ok(());
        }
        let (records, placed) = self.load_nodes().await?;
        let mut cache = self.cache();
        let known: HashSet<&str> = records.iter().map(|r| r.node.as_str()).collect();
        let gone: Vec<String> = cache
            .placer
            .live_nodes()
            .filter(|node| !known.contains(node))
            .map(str::to_string)
            .collect();
        for node in gone {
            cache.placer.remove_node(&node);
        }
        let mut by_name = HashMap::with_capacity(records.len());
        for record in records {
            if let Some(at) = now.instant_of(record.reported_at_ms) {
                let placed = placed.get(&record.node).copied().unwrap_or(0);
                cache
                    .placer
                    .set_node(&record.node, record.load(), at, placed);
            }
            by_name.insert(record.node.clone(), record);
        }
        cache.records = by_name;
        cache.refreshed = Some(now.instant);
        Ok(())
    }

    /// Live records of `nodes`.
    async fn live_records(
        &self,
        nodes: &[&str],
        now: Now,
    ) -> Result<HashMap<String, NodeRecord>, StoreError> {
        if nodes.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(NODES).arg(nodes);
        let (jsons,): (Vec<Option<String>>,) = self.run(&pipe).await?;
        let mut records = HashMap::new();
        for json in jsons.into_iter().flatten() {
            let record = parse_record(&json)?;
            if record.is_live(now, self.timeout) {
                records.insert(record.node.clone(), record);
            }
        }
        Ok(records)
    }

    /// Whether any node hosts (or was placed on for) each of `meetings`.
    async fn hosted(&self, meetings: &[String]) -> Result<Vec<bool>, StoreError> {
        let mut pipe = redis::pipe();
        for meeting in meetings {
            pipe.cmd("HKEYS").arg(meeting_key(meeting));
        }
        let fields: Vec<Vec<String>> = self.run(&pipe).await?;
        Ok(fields
            .iter()
            .map(|fields| {
                fields
                    .iter()
                    .any(|f| f.starts_with("n:") || f.starts_with("p:"))
            })
            .collect())
    }

    /// Puts the meetings that no node hosts any more on the list of empty meetings.
    async fn note_if_empty(&self, meetings: &[String], now: Now) -> Result<(), StoreError> {
        if meetings.is_empty() {
            return Ok(());
        }
        let hosted = self.hosted(meetings).await?;
        let mut pipe = redis::pipe();
        for (meeting, hosted) in meetings.iter().zip(hosted) {
            if !hosted {
                pipe.cmd("ZADD")
                    .arg(EMPTY_MEETINGS)
                    .arg("NX")
                    .arg(now.unix_ms)
                    .arg(meeting)
                    .ignore();
            }
        }
        self.run::<()>(&pipe).await
    }

    async fn drop_node(&self, node: &str, now: Now) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(node_meetings_key(node));
        let (meetings,): (Vec<String>,) = self.run(&pipe).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL").arg(NODES).arg(node).ignore();
        pipe.cmd("ZREM").arg(NODE_SEEN).arg(node).ignore();
        pipe.cmd("HDEL").arg(NODE_PLACED).arg(node).ignore();
        pipe.cmd("DEL").arg(node_meetings_key(node)).ignore();
        for meeting in &meetings {
            pipe.cmd("HDEL")
                .arg(meeting_key(meeting))
                .arg(reported_field(node))
                .arg(placed_field(node))
                .ignore();
        }
        self.run::<()>(&pipe).await?;
        {
            let mut cache = self.cache();
            cache.placer.remove_node(node);
            cache.records.remove(node);
        }
        self.note_if_empty(&meetings, now).await
    }

    fn view(
        &self,
        meeting: &str,
        hash: &HashMap<String, String>,
        moderators: Vec<String>,
        records: &HashMap<String, NodeRecord>,
    ) -> MeetingView {
        let nodes = hosts(hash)
            .into_iter()
            .filter(|(node, _, _)| records.contains_key(node))
            .map(|(node, reported, placed)| MeetingNode {
                node,
                participants: reported.saturating_add(placed),
            })
            .collect();
        MeetingView::new(meeting, locked(hash), moderators, nodes)
    }
}

impl Store for RedisStore {
    fn report<'a>(&'a self, report: &'a NodeReport, now: Now) -> StoreFuture<'a, Registration> {
        Box::pin(async move {
            let node = report.node.as_str();
            let lease = millis(self.timeout);
            let mut con = self.con.clone();
            let index: u16 = self
                .claim
                .arg(node)
                .arg(lease)
                .arg(report.index.unwrap_or(0))
                .arg(MAX_NODE_INDEX)
                .invoke_async(&mut con)
                .await?;
            if index == 0 {
                return Err(StoreError::NoFreeIndex);
            }
            let record = NodeRecord::from_report(report, index, now);
            let json = serde_json::to_string(&record)
                .map_err(|e| StoreError::Corrupt(format!("node record: {e}")))?;
            let mut pipe = redis::pipe();
            pipe.cmd("SMEMBERS").arg(node_meetings_key(node));
            let (previous,): (HashSet<String>,) = self.run(&pipe).await?;
            let (pipe, ended) = report_cmds(report, &json, &previous, now);
            let (added,): (u32,) = self.run(&pipe).await?;
            {
                let mut cache = self.cache();
                cache.placer.set_node(node, record.load(), now.instant, 0);
                cache.records.insert(node.to_string(), record);
            }
            self.note_if_empty(&ended, now).await?;
            Ok(Registration {
                index,
                new: added == 1,
            })
        })
    }

    fn node<'a>(&'a self, node: &'a str, now: Now) -> StoreFuture<'a, Option<NodeRecord>> {
        Box::pin(async move { Ok(self.live_records(&[node], now).await?.remove(node)) })
    }

    fn mark_dead<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.drop_node(node, Now::current()).await })
    }

    fn nodes(&self, now: Now) -> StoreFuture<'_, Vec<NodeView>> {
        Box::pin(async move {
            let (records, placed) = self.load_nodes().await?;
            let placed = |record: &NodeRecord| placed.get(&record.node).copied().unwrap_or(0);
            Ok(node_views(records, placed, now, self.timeout))
        })
    }

    fn meeting<'a>(&'a self, meeting: &'a str, now: Now) -> StoreFuture<'a, Option<MeetingView>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("HGETALL")
                .arg(meeting_key(meeting))
                .cmd("SMEMBERS")
                .arg(moderators_key(meeting));
            let (hash, moderators): (HashMap<String, String>, Vec<String>) =
                self.run(&pipe).await?;
            if hash.is_empty() && moderators.is_empty() {
                return Ok(None);
            }
            let names: Vec<String> = hosts(&hash).into_iter().map(|h| h.0).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let records = self.live_records(&names, now).await?;
            Ok(Some(self.view(meeting, &hash, moderators, &records)))
        })
    }

    fn meetings(&self, now: Now) -> StoreFuture<'_, Vec<MeetingView>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SMEMBERS").arg(MEETINGS);
            let (mut names,): (Vec<String>,) = self.run(&pipe).await?;
            names.sort();
            let (records, _) = self.load_nodes().await?;
            let records: HashMap<String, NodeRecord> = records
                .into_iter()
                .filter(|r| r.is_live(now, self.timeout))
                .map(|r| (r.node.clone(), r))
                .collect();
            let mut pipe = redis::pipe();
            for meeting in &names {
                pipe.cmd("HGETALL")
                    .arg(meeting_key(meeting))
                    .cmd("SMEMBERS")
                    .arg(moderators_key(meeting));
            }
            let answers: Vec<redis::Value> = self.run(&pipe).await?;
            let mut views = Vec::with_capacity(names.len());
            let mut answers = answers.into_iter();
            for meeting in &names {
                let (Some(hash), Some(moderators)) = (answers.next(), answers.next()) else {
                    break;
                };
                let corrupt = |e: redis::ParsingError| StoreError::Corrupt(e.to_string());
                let hash: HashMap<String, String> =
                    redis::from_redis_value(hash).map_err(corrupt)?;
                let moderators: Vec<String> =
                    redis::from_redis_value(moderators).map_err(corrupt)?;
                views.push(self.view(meeting, &hash, moderators, &records));
            }
            Ok(views)
        })
    }

    fn counts(&self, now: Now) -> StoreFuture<'_, (usize, usize)> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("ZCOUNT")
                .arg(NODE_SEEN)
                .arg(format!("({}", self.stale_before(now)))
                .arg("+inf")
                .cmd("SCARD")
                .arg(MEETINGS);
            self.run(&pipe).await
        })
    }

    fn place<'a>(
        &'a self,
        meeting: &'a str,
        request: Request<'a>,
        now: Now,
    ) -> StoreFuture<'a, Result<Placed, PlacementError>> {
        Box::pin(async move {
            self.refresh(now).await?;
            let key = meeting_key(meeting);
            let mut pipe = redis::pipe();
            pipe.cmd("HGETALL").arg(&key);
            let (hash,): (HashMap<String, String>,) = self.run(&pipe).await?;
            let hosts = hosts(&hash);
            let placed = {
                let mut cache = self.cache();
                cache
                    .placer
                    .set_hosts(meeting, hosts.iter().map(|(n, r, p)| (n.as_str(), *r, *p)));
                let placed =
                    match cache
                        .placer
                        .place(meeting, request, now.instant, &mut rand::rng())
                    {
                        Ok(placement) => match cache.records.get(&*placement.node) {
                            Some(node) => Ok(Placed {
                                node: node.clone(),
                                placement,
                            }),
                            None => Err(PlacementError::UnknownNode),
                        },
                        Err(e) => Err(e),
                    };
                // the meeting's hosts are re-read from Redis at its next join: keep the
                // mirror to the node table, so it does not grow with every meeting ever seen
                cache.placer.set_hosts(meeting, []);
                placed
            };
            let placed = match placed {
                Ok(placed) => placed,
                Err(e) => return Ok(Err(e)),
            };
            let node = placed.node.node.as_str();
            let mut pipe = redis::pipe();
            pipe.cmd("HINCRBY")
                .arg(NODE_PLACED)
                .arg(node)
                .arg(1)
                .ignore();
            add_host_cmds(&mut pipe, node, meeting, true);
            self.run::<()>(&pipe).await?;
            Ok(Ok(placed))
        })
    }

    fn spend_token<'a>(&'a self, jti: &'a str, exp_secs: u64, now: Now) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            // SET NX is the one atomic test-and-set every locator shares; the key lives as
            // long as the token would verify.
            let ttl = exp_secs.saturating_sub(now.unix_ms / 1000).max(1);
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(spent_token_key(jti))
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(ttl);
            let (set,): (Option<String>,) = self.run(&pipe).await?;
            Ok(set.is_some())
        })
    }

    fn add_moderator<'a>(&'a self, meeting: &'a str, identity: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SADD")
                .arg(moderators_key(meeting))
                .arg(identity)
                .ignore();
            self.run::<()>(&pipe).await
        })
    }

    fn add_host<'a>(
        &'a self,
        node: &'a str,
        meeting: &'a str,
        now: Now,
    ) -> StoreFuture<'a, Option<Hosting>> {
        Box::pin(async move {
            if self.live_records(&[node], now).await?.is_empty() {
                return Ok(None);
            }
            let mut pipe = redis::pipe();
            add_host_cmds(&mut pipe, node, meeting, false);
            pipe.cmd("HGETALL").arg(meeting_key(meeting));
            let (hash,): (HashMap<String, String>,) = self.run(&pipe).await?;
            let others: Vec<String> = hosts(&hash)
                .into_iter()
                .map(|h| h.0)
                .filter(|peer| peer != node)
                .collect();
            let others: Vec<&str> = others.iter().map(String::as_str).collect();
            let mut others: Vec<NodeRecord> = self
                .live_records(&others, now)
                .await?
                .into_values()
                .collect();
            others.sort_by(|a, b| a.node.cmp(&b.node));
            Ok(Some(Hosting {
                locked: locked(&hash),
                others,
            }))
        })
    }

    /// The key of the pair `a`-`b`, created by whichever locator asks first.
    fn link_key<'a>(&'a self, a: &'a str, b: &'a str) -> StoreFuture<'a, String> {
        Box::pin(async move {
            let field = link_field(a, b);
            let mut pipe = redis::pipe();
            pipe.cmd("HSETNX")
                .arg(LINKS)
                .arg(&field)
                .arg(new_link_key()?)
                .ignore()
                .cmd("HGET")
                .arg(LINKS)
                .arg(&field);
            let (key,): (String,) = self.run(&pipe).await?;
            Ok(key)
        })
    }

    fn map_sizes(&self) -> Vec<(&'static str, usize)> {
        let cache = self.cache();
        let mut sizes = vec![("node_records", cache.records.len())];
        sizes.extend(cache.placer.sizes());
        sizes
    }

    fn sweep(&self, now: Now) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("ZRANGEBYSCORE")
                .arg(NODE_SEEN)
                .arg("-inf")
                .arg(self.stale_before(now));
            let (stale,): (Vec<String>,) = self.run(&pipe).await?;
            for node in stale {
                self.drop_node(&node, now).await?;
            }
            let linger = millis(MEETING_LINGER);
            let mut pipe = redis::pipe();
            pipe.cmd("ZRANGEBYSCORE")
                .arg(EMPTY_MEETINGS)
                .arg("-inf")
                .arg(now.unix_ms.saturating_sub(linger));
            let (expired,): (Vec<String>,) = self.run(&pipe).await?;
            if expired.is_empty() {
                return Ok(());
            }
            let hosted = self.hosted(&expired).await?;
            let mut pipe = redis::pipe();
            for (meeting, hosted) in expired.iter().zip(hosted) {
                pipe.cmd("ZREM").arg(EMPTY_MEETINGS).arg(meeting).ignore();
                if !hosted {
                    pipe.cmd("DEL")
                        .arg(meeting_key(meeting))
                        .arg(moderators_key(meeting))
                        .ignore();
                    pipe.cmd("SREM").arg(MEETINGS).arg(meeting).ignore();
                }
            }
            self.run::<()>(&pipe).await
        })
    }
}
