//! The Redis store's key names, the field layout of a meeting hash, and the Lua script that
//! claims node indexes.

use super::super::{NodeRecord, StoreError, pair};
use std::collections::HashMap;

pub(super) const NODES: &str = "kaskade:nodes";
pub(super) const NODE_PLACED: &str = "kaskade:node-placed";
pub(super) const NODE_SEEN: &str = "kaskade:node-seen";
pub(super) const MEETINGS: &str = "kaskade:meetings";
pub(super) const EMPTY_MEETINGS: &str = "kaskade:empty-meetings";
pub(super) const LINKS: &str = "kaskade:links";

/// Claims a node index: the wanted one, else the one the node held before, else one never
/// held, else one whose lease expired. Returns 0 when every index is leased to another node.
pub(super) const CLAIM_INDEX: &str = r"
local node, lease, wanted, max = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local function try(i, nx)
  if i == nil or i < 1 or i > max then return false end
  local key = 'kaskade:index:' .. i
  local holder = redis.call('GET', key)
  if holder == false or holder == node then
    if nx and redis.call('HEXISTS', 'kaskade:index-owner', i) == 1 then return false end
    redis.call('SET', key, node, 'PX', lease)
    local old = redis.call('HGET', 'kaskade:node-index', node)
    if old and tonumber(old) ~= i and redis.call('HGET', 'kaskade:index-owner', old) == node then
      redis.call('HDEL', 'kaskade:index-owner', old)
    end
    redis.call('HSET', 'kaskade:node-index', node, i)
    redis.call('HSET', 'kaskade:index-owner', i, node)
    return true
  end
  return false
end
if try(wanted, false) then return wanted end
local held = tonumber(redis.call('HGET', 'kaskade:node-index', node) or '0')
if try(held, false) then return held end
for i = 1, max do if try(i, true) then return i end end
for i = 1, max do if try(i, false) then return i end end
return 0
";

pub(super) fn node_meetings_key(node: &str) -> String {
    format!("kaskade:node-meetings:{node}")
}

pub(super) fn meeting_key(meeting: &str) -> String {
    format!("kaskade:meeting:{meeting}")
}

/// The key that marks the one-time token `jti` used (it expires with the token).
pub(super) fn spent_token_key(jti: &str) -> String {
    format!("kaskade:spent-token:{jti}")
}

pub(super) fn moderators_key(meeting: &str) -> String {
    format!("kaskade:moderators:{meeting}")
}

pub(super) fn reported_field(node: &str) -> String {
    format!("n:{node}")
}

pub(super) fn placed_field(node: &str) -> String {
    format!("p:{node}")
}

pub(super) fn link_field(a: &str, b: &str) -> String {
    let (x, y) = pair(a, b);
    format!("{x}\n{y}")
}

/// `(node, reported, placed)` of every host field of a meeting hash.
pub(super) fn hosts(hash: &HashMap<String, String>) -> Vec<(String, u32, u32)> {
    let mut hosts: Vec<(String, u32, u32)> = Vec::new();
    for (field, value) in hash {
        let (node, reported) = if let Some(node) = field.strip_prefix("n:") {
            (node, true)
        } else if let Some(node) = field.strip_prefix("p:") {
            (node, false)
        } else {
            continue;
        };
        let count = value.parse::<u32>().unwrap_or(0);
        let entry = match hosts.iter_mut().find(|h| h.0 == node) {
            Some(entry) => entry,
            None => {
                hosts.push((node.to_string(), 0, 0));
                let last = hosts.len() - 1;
                &mut hosts[last]
            }
        };
        if reported {
            entry.1 = count;
        } else {
            entry.2 = count;
        }
    }
    hosts.sort();
    hosts
}

pub(super) fn parse_record(json: &str) -> Result<NodeRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("node record: {e}")))
}
