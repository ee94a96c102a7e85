//! The batches of commands the Redis store sends in one round trip: what a node's report
//! writes, what makes a node a meeting's host, and how a meeting hash is read.

use super::super::Now;
use super::keys::{
    EMPTY_MEETINGS, MEETINGS, NODE_PLACED, NODE_SEEN, NODES, meeting_key, moderators_key,
    node_meetings_key, placed_field, reported_field,
};
use kaskade_protocol::cluster::NodeReport;
use redis::Pipeline;
use std::collections::{HashMap, HashSet};

/// Whether a meeting hash says the meeting is locked.
pub(super) fn locked(hash: &HashMap<String, String>) -> bool {
    hash.get("locked").is_some_and(|v| v == "1")
}

/// Adds to `pipe` what makes `node` a host of `meeting`: its field in the meeting hash (one
/// more participant placed there when `placed`, else a reported count of 0 until the node's
/// next report), an unlocked lock if the meeting has none yet, and the meeting on the lists of
/// known meetings and of the node's meetings.
pub(super) fn add_host_cmds(pipe: &mut Pipeline, node: &str, meeting: &str, placed: bool) {
    let key = meeting_key(meeting);
    if placed {
        pipe.cmd("HINCRBY")
            .arg(&key)
            .arg(placed_field(node))
            .arg(1)
            .ignore();
    } else {
        pipe.cmd("HSETNX")
            .arg(&key)
            .arg(reported_field(node))
            .arg(0)
            .ignore();
    }
    pipe.cmd("HSETNX").arg(&key).arg("locked").arg(0).ignore();
    pipe.cmd("SADD")
        .arg(node_meetings_key(node))
        .arg(meeting)
        .ignore();
    pipe.cmd("SADD").arg(MEETINGS).arg(meeting).ignore();
    pipe.cmd("ZREM").arg(EMPTY_MEETINGS).arg(meeting).ignore();
}

/// The commands that store a node's report: its record and last-seen time, each meeting it
/// reports (participants, lock, moderators), and the meetings it no longer hosts (returned, so
/// the caller notes those nobody hosts any more). The pipeline's one answer is whether the
/// node's record is new.
pub(super) fn report_cmds(
    report: &NodeReport,
    json: &str,
    previous: &HashSet<String>,
    now: Now,
) -> (Pipeline, Vec<String>) {
    let node = report.node.as_str();
    let mut pipe = redis::pipe();
    pipe.cmd("HSET").arg(NODES).arg(node).arg(json);
    pipe.cmd("ZADD")
        .arg(NODE_SEEN)
        .arg(now.unix_ms)
        .arg(node)
        .ignore();
    pipe.cmd("HDEL").arg(NODE_PLACED).arg(node).ignore();
    let (reported, placed) = (reported_field(node), placed_field(node));
    for load in &report.meetings {
        let key = meeting_key(&load.meeting);
        pipe.cmd("HSET")
            .arg(&key)
            .arg(&reported)
            .arg(load.participants)
            .arg("locked")
            .arg(u8::from(load.locked))
            .ignore();
        pipe.cmd("HDEL").arg(&key).arg(&placed).ignore();
        pipe.cmd("SADD").arg(MEETINGS).arg(&load.meeting).ignore();
        pipe.cmd("SADD")
            .arg(node_meetings_key(node))
            .arg(&load.meeting)
            .ignore();
        pipe.cmd("ZREM")
            .arg(EMPTY_MEETINGS)
            .arg(&load.meeting)
            .ignore();
        if !load.moderators.is_empty() {
            pipe.cmd("SADD")
                .arg(moderators_key(&load.meeting))
                .arg(&load.moderators)
                .ignore();
        }
    }
    let current: HashSet<&str> = report.meetings.iter().map(|m| m.meeting.as_str()).collect();
    let ended: Vec<String> = previous
        .iter()
        .filter(|m| !current.contains(m.as_str()))
        .cloned()
        .collect();
    for meeting in &ended {
        pipe.cmd("HDEL")
            .arg(meeting_key(meeting))
            .arg(&reported)
            .arg(&placed)
            .ignore();
        pipe.cmd("SREM")
            .arg(node_meetings_key(node))
            .arg(meeting)
            .ignore();
    }
    (pipe, ended)
}
