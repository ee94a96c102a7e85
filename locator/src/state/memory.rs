//! In-process state: the default, for one locator.
//!
//! Everything sits behind one mutex that no await ever holds: every operation is a short,
//! synchronous critical section, so placement always sees a consistent table.

use super::{
    Hosting, MEETING_LINGER, MeetingNode, MeetingView, NodeRecord, NodeView, Now, Placed,
    Registration, Store, StoreError, StoreFuture, millis, new_link_key, node_views, pair,
};
use crate::placement::{PlacementConfig, PlacementError, Placer, Request};
use kaskade_protocol::cluster::{MAX_NODE_INDEX, NodeReport};
use kaskade_protocol::token::SpentTokens;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The locator's state in this process.
pub struct MemoryStore {
    timeout: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    placer: Placer,
    records: HashMap<String, NodeRecord>,
    /// Index -> the node that holds (or last held) it.
    index_holder: HashMap<u16, String>,
    /// Node -> the index it holds (or last held).
    node_index: HashMap<String, u16>,
    meetings: HashMap<String, Meeting>,
    links: HashMap<(String, String), String>,
    spent_tokens: SpentTokens,
}

#[derive(Default)]
struct Meeting {
    locked: bool,
    moderators: BTreeSet<String>,
    empty_since_ms: Option<u64>,
}

impl MemoryStore {
    /// An empty state with these placement limits.
    pub fn new(config: PlacementConfig) -> Self {
        Self {
            timeout: config.node_timeout,
            inner: Mutex::new(Inner {
                placer: Placer::new(config),
                records: HashMap::new(),
                index_holder: HashMap::new(),
                node_index: HashMap::new(),
                meetings: HashMap::new(),
                links: HashMap::new(),
                spent_tokens: SpentTokens::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn live(&self, node: &str, now: Now, timeout: Duration) -> Option<&NodeRecord> {
        self.records
            .get(node)
            .filter(|record| record.is_live(now, timeout))
    }

    /// The index for `node`: the one it asks for or held before unless another live node
    /// holds it, else one nobody has held, else one no live node holds.
    fn claim_index(
        &mut self,
        node: &str,
        wanted: Option<u16>,
        now: Now,
        timeout: Duration,
    ) -> Result<u16, StoreError> {
        let held_by_other = |i: u16| match self.index_holder.get(&i) {
            Some(holder) if holder != node => self.live(holder, now, timeout).is_some(),
            _ => false,
        };
        let valid = |i: &u16| (1..=MAX_NODE_INDEX).contains(i);
        let index = [wanted, self.node_index.get(node).copied()]
            .into_iter()
            .flatten()
            .filter(valid)
            .find(|&i| !held_by_other(i))
            .or_else(|| (1..=MAX_NODE_INDEX).find(|i| !self.index_holder.contains_key(i)))
            .or_else(|| (1..=MAX_NODE_INDEX).find(|&i| !held_by_other(i)))
            .ok_or(StoreError::NoFreeIndex)?;
        if let Some(old) = self.node_index.insert(node.to_string(), index)
            && old != index
            && self.index_holder.get(&old).is_some_and(|h| h == node)
        {
            self.index_holder.remove(&old);
        }
        if let Some(previous) = self.index_holder.insert(index, node.to_string())
            && previous != node
        {
            self.node_index.remove(&previous);
        }
        Ok(index)
    }

    fn meeting_mut(&mut self, meeting: &str) -> &mut Meeting {
        self.meetings.entry(meeting.to_string()).or_default()
    }

    fn link_key(&mut self, a: &str, b: &str) -> Result<String, StoreError> {
        let (x, y) = pair(a, b);
        if let Some(key) = self.links.get(&(x.to_string(), y.to_string())) {
            return Ok(key.clone());
        }
        let key = new_link_key()?;
        self.links
            .insert((x.to_string(), y.to_string()), key.clone());
        Ok(key)
    }

    fn view(&self, meeting: &str, state: &Meeting, now: Now) -> MeetingView {
        let nodes = self
            .placer
            .meeting_nodes(meeting, now.instant)
            .into_iter()
            .map(|(node, participants)| MeetingNode {
                node: node.to_string(),
                participants,
            })
            .collect();
        let moderators = state.moderators.iter().cloned().collect();
        MeetingView::new(meeting, state.locked, moderators, nodes)
    }

    /// [`Store::add_host`] under the lock.
    fn add_host(
        &mut self,
        node: &str,
        meeting: &str,
        now: Now,
        timeout: Duration,
    ) -> Option<Hosting> {
        self.live(node, now, timeout)?;
        self.placer.host(meeting, node);
        let state = self.meeting_mut(meeting);
        state.empty_since_ms = None;
        let locked = state.locked;
        let others = self
            .placer
            .meeting_nodes(meeting, now.instant)
            .into_iter()
            .filter(|(peer, _)| &**peer != node)
            .filter_map(|(peer, _)| self.live(&peer, now, timeout).cloned())
            .collect();
        Some(Hosting { locked, others })
    }

    fn drop_node(&mut self, node: &str) {
        self.records.remove(node);
        self.placer.remove_node(node);
    }
}

impl Store for MemoryStore {
    fn report<'a>(&'a self, report: &'a NodeReport, now: Now) -> StoreFuture<'a, Registration> {
        Box::pin(async move {
            let mut inner = self.lock();
            let index = inner.claim_index(&report.node, report.index, now, self.timeout)?;
            let record = NodeRecord::from_report(report, index, now);
            let load = record.load();
            let new = inner
                .records
                .insert(report.node.clone(), record)
                .is_none_or(|old| !old.is_live(now, self.timeout));
            let meetings = report
                .meetings
                .iter()
                .map(|m| (m.meeting.as_str(), m.participants));
            inner
                .placer
                .report(&report.node, load, meetings, now.instant);
            for load in &report.meetings {
                let meeting = inner.meeting_mut(&load.meeting);
                meeting.locked = load.locked;
                meeting.moderators.extend(load.moderators.iter().cloned());
                meeting.empty_since_ms = None;
            }
            Ok(Registration { index, new })
        })
    }

    fn node<'a>(&'a self, node: &'a str, now: Now) -> StoreFuture<'a, Option<NodeRecord>> {
        Box::pin(async move { Ok(self.lock().live(node, now, self.timeout).cloned()) })
    }

    fn mark_dead<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.lock().drop_node(node);
            Ok(())
        })
    }

    fn nodes(&self, now: Now) -> StoreFuture<'_, Vec<NodeView>> {
        Box::pin(async move {
            let inner = self.lock();
            let placed = |record: &NodeRecord| {
                let corrected = inner
                    .placer
                    .corrected_participants(&record.node)
                    .unwrap_or(record.participants);
                corrected.saturating_sub(record.participants)
            };
            let records = inner.records.values().cloned();
            Ok(node_views(records, placed, now, self.timeout))
        })
    }

    fn meeting<'a>(&'a self, meeting: &'a str, now: Now) -> StoreFuture<'a, Option<MeetingView>> {
        Box::pin(async move {
            let inner = self.lock();
            Ok(inner
                .meetings
                .get(meeting)
                .map(|state| inner.view(meeting, state, now)))
        })
    }

    fn meetings(&self, now: Now) -> StoreFuture<'_, Vec<MeetingView>> {
        Box::pin(async move {
            let inner = self.lock();
            let mut views: Vec<MeetingView> = inner
                .meetings
                .iter()
                .map(|(meeting, state)| inner.view(meeting, state, now))
                .collect();
            views.sort_by(|a, b| a.meeting.cmp(&b.meeting));
            Ok(views)
        })
    }

    fn counts(&self, now: Now) -> StoreFuture<'_, (usize, usize)> {
        Box::pin(async move {
            let inner = self.lock();
            let nodes = inner
                .records
                .values()
                .filter(|record| record.is_live(now, self.timeout))
                .count();
            Ok((nodes, inner.meetings.len()))
        })
    }

    fn place<'a>(
        &'a self,
        meeting: &'a str,
        request: Request<'a>,
        now: Now,
    ) -> StoreFuture<'a, Result<Placed, PlacementError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let placed = inner
                .placer
                .place(meeting, request, now.instant, &mut rand::rng());
            let placement = match placed {
                Ok(placement) => placement,
                Err(e) => return Ok(Err(e)),
            };
            let node = inner
                .records
                .get(&*placement.node)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("no record of {}", placement.node)))?;
            inner.meeting_mut(meeting).empty_since_ms = None;
            Ok(Ok(Placed { placement, node }))
        })
    }

    fn add_moderator<'a>(&'a self, meeting: &'a str, identity: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.lock()
                .meeting_mut(meeting)
                .moderators
                .insert(identity.to_string());
            Ok(())
        })
    }

    fn add_host<'a>(
        &'a self,
        node: &'a str,
        meeting: &'a str,
        now: Now,
    ) -> StoreFuture<'a, Option<Hosting>> {
        Box::pin(async move { Ok(self.lock().add_host(node, meeting, now, self.timeout)) })
    }

    fn link_key<'a>(&'a self, a: &'a str, b: &'a str) -> StoreFuture<'a, String> {
        Box::pin(async move { self.lock().link_key(a, b) })
    }

    fn map_sizes(&self) -> Vec<(&'static str, usize)> {
        let inner = self.lock();
        let mut sizes = vec![
            ("node_records", inner.records.len()),
            ("node_index_holders", inner.index_holder.len()),
            ("node_indexes", inner.node_index.len()),
            ("meetings", inner.meetings.len()),
            (
                "meeting_moderators",
                inner.meetings.values().map(|m| m.moderators.len()).sum(),
            ),
            ("link_keys", inner.links.len()),
            ("spent_tokens", inner.spent_tokens.len()),
        ];
        sizes.extend(inner.placer.sizes());
        sizes
    }

    fn spend_token<'a>(&'a self, jti: &'a str, exp_secs: u64, now: Now) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            Ok(self
                .lock()
                .spent_tokens
                .spend(jti, exp_secs, now.unix_ms / 1000))
        })
    }

    fn sweep(&self, now: Now) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut inner = self.lock();
            inner.spent_tokens.sweep(now.unix_ms / 1000);
            let stale: Vec<String> = inner
                .records
                .values()
                .filter(|record| !record.is_live(now, self.timeout))
                .map(|record| record.node.clone())
                .collect();
            for node in stale {
                inner.drop_node(&node);
            }
            let Inner {
                placer, meetings, ..
            } = &mut *inner;
            let linger = millis(MEETING_LINGER);
            meetings.retain(|meeting, state| {
                if placer.hosted(meeting) {
                    state.empty_since_ms = None;
                    return true;
                }
                let since = *state.empty_since_ms.get_or_insert(now.unix_ms);
                now.unix_ms.saturating_sub(since) < linger
            });
            Ok(())
        })
    }
}
