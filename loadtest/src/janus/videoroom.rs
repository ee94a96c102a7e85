//! The VideoRoom plugin's requests and events, as pure functions of JSON: the room a meeting
//! maps to, the requests a synthetic participant sends, and what it reads from the plugin's
//! events (publishers coming and going, the subscription's mid → feed layout).

use serde_json::{Value, json};

use kaskade_client::signaling::{MediaKind, ParticipantId};

/// The plugin's package name.
pub const PLUGIN: &str = "janus.plugin.videoroom";
/// `error_code` of a `create` for a room that already exists.
pub const ERROR_ROOM_EXISTS: u64 = 427;
/// `error_code` of a subscription to a feed that is gone or not yet publishing.
pub const ERROR_NO_SUCH_FEED: u64 = 428;
/// `error_code` of a publisher `join` whose id is taken.
pub const ERROR_ID_EXISTS: u64 = 436;

/// The numeric room id of a meeting name: FNV-1a over its bytes, cut to 52 bits (an exact
/// number in JSON anywhere), never 0.
pub fn room_id(meeting: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in meeting.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash & ((1 << 52) - 1)).max(1)
}

/// Asks whether `room` exists (a synchronous request: `exists: true|false`).
pub fn exists(room: u64) -> Value {
    json!({"request": "exists", "room": room})
}

/// How a room is created: H.264 constrained baseline 42e01f and Opus only, the RFC 6464
/// audio level extension negotiated (no talking events), no recording, no periodic keyframe
/// requests, and a REMB cap of `bitrate_bps` for `publishers` publishers.
pub fn create_room(room: u64, publishers: u32, bitrate_bps: u32) -> Value {
    json!({
        "request": "create",
        "room": room,
        "description": "kaskade-loadtest",
        "permanent": false,
        "is_private": true,
        "publishers": publishers,
        "bitrate": bitrate_bps,
        "fir_freq": 0,
        "audiocodec": "opus",
        "videocodec": "h264",
        "h264_profile": "42e01f",
        "audiolevel_ext": true,
        "audiolevel_event": false,
        "videoorient_ext": false,
        "playoutdelay_ext": false,
        "record": false,
    })
}

/// Joins `room` as publisher `id` named `display`.
pub fn join_publisher(room: u64, id: ParticipantId, display: &str) -> Value {
    json!({
        "request": "join",
        "ptype": "publisher",
        "room": room,
        "id": id,
        "display": display,
    })
}

/// Publishes (with the offer as jsep).
pub fn publish() -> Value {
    json!({"request": "publish", "audiocodec": "opus", "videocodec": "h264"})
}

/// Every stream of each of `feeds`, as a `streams` list.
fn streams(feeds: &[ParticipantId]) -> Value {
    feeds.iter().map(|feed| json!({"feed": feed})).collect()
}

/// Opens a subscription in `room` to every stream of `feeds` (one PeerConnection for all).
pub fn join_subscriber(room: u64, private_id: Option<u64>, feeds: &[ParticipantId]) -> Value {
    let mut body = json!({
        "request": "join",
        "ptype": "subscriber",
        "room": room,
        "streams": streams(feeds),
    });
    if let Some(private_id) = private_id {
        body["private_id"] = json!(private_id);
    }
    body
}

/// Adds every stream of `feeds` to the subscription.
pub fn subscribe(feeds: &[ParticipantId]) -> Value {
    json!({"request": "subscribe", "streams": streams(feeds)})
}

/// Answers a subscription offer (with the answer as jsep).
pub fn start() -> Value {
    json!({"request": "start"})
}

/// Leaves the room.
pub fn leave() -> Value {
    json!({"request": "leave"})
}

/// A feed id as a [`ParticipantId`]: only ids that fit in 32 bits (the load generator's do).
fn feed_id(value: &Value) -> Option<ParticipantId> {
    value
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .map(ParticipantId::from)
}

/// The publishers listed in a `joined` or `event` (`publishers: [{id, ...}]`).
pub fn publishers(data: &Value) -> Vec<ParticipantId> {
    data["publishers"]
        .as_array()
        .map(|list| list.iter().filter_map(|p| feed_id(&p["id"])).collect())
        .unwrap_or_default()
}

/// The publisher an event says left or stopped publishing (`leaving` / `unpublished` with an
/// id; `"ok"` is the answer to one's own request).
pub fn departed(data: &Value) -> Option<ParticipantId> {
    ["leaving", "unpublished"]
        .iter()
        .find_map(|key| feed_id(&data[*key]))
}

/// One stream of a subscription: its mid in the subscriber's PeerConnection and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedStream {
    /// The mid of the m-line in Janus's offer.
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The publisher it carries.
    pub feed: ParticipantId,
}

/// The subscription's active audio and video streams from an `attached` or `updated` event;
/// `None` when the event lists none (`updated` without a change).
pub fn subscribed_streams(data: &Value) -> Option<Vec<SubscribedStream>> {
    let list = data["streams"].as_array()?;
    Some(
        list.iter()
            .filter(|s| s["active"].as_bool() != Some(false))
            .filter_map(|s| {
                let kind = match s["type"].as_str()? {
                    "audio" => MediaKind::Audio,
                    "video" => MediaKind::Video,
                    _ => return None,
                };
                Some(SubscribedStream {
                    mid: s["mid"].as_str()?.to_owned(),
                    kind,
                    feed: feed_id(&s["feed_id"])?,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_stable_small_and_distinct() {
        let a = room_id("loadtest-1-room0");
        assert_eq!(a, room_id("loadtest-1-room0"));
        assert_ne!(a, room_id("loadtest-1-room1"));
        assert!(a > 0 && a < 1 << 52);
        assert!(room_id("") > 0);
    }

    #[test]
    fn publishers_and_departures_are_read_from_events() {
        let joined = json!({
            "videoroom": "joined",
            "publishers": [{"id": 7, "display": "a"}, {"id": 1u64 << 40}, {"display": "x"}],
        });
        assert_eq!(publishers(&joined), vec![ParticipantId::from(7)]);
        assert_eq!(
            publishers(&json!({"videoroom": "event"})),
            Vec::<ParticipantId>::new()
        );
        assert_eq!(
            departed(&json!({"leaving": 9})),
            Some(ParticipantId::from(9))
        );
        assert_eq!(
            departed(&json!({"unpublished": 9})),
            Some(ParticipantId::from(9))
        );
        assert_eq!(departed(&json!({"leaving": "ok"})), None);
        assert_eq!(departed(&json!({"publishers": []})), None);
    }

    #[test]
    fn the_subscription_layout_maps_mids_to_feeds() {
        let updated = json!({
            "videoroom": "updated",
            "streams": [
                {"mid": "0", "type": "audio", "active": true, "feed_id": 5},
                {"mid": "1", "type": "video", "active": true, "feed_id": 5},
                {"mid": "2", "type": "video", "active": false},
                {"mid": "3", "type": "data", "active": true},
                {"mid": "4", "type": "audio", "feed_id": "not a number"},
            ],
        });
        assert_eq!(
            subscribed_streams(&updated),
            Some(vec![
                SubscribedStream {
                    mid: "0".into(),
                    kind: MediaKind::Audio,
                    feed: ParticipantId::from(5)
                },
                SubscribedStream {
                    mid: "1".into(),
                    kind: MediaKind::Video,
                    feed: ParticipantId::from(5)
                },
            ])
        );
        assert_eq!(subscribed_streams(&json!({"videoroom": "updated"})), None);
    }

    #[test]
    fn requests_carry_what_the_plugin_needs() {
        let create = create_room(12, 10, 2_000_000);
        assert_eq!(create["videocodec"], "h264");
        assert_eq!(create["h264_profile"], "42e01f");
        assert_eq!(create["publishers"], 10);
        let join = join_subscriber(
            12,
            Some(99),
            &[ParticipantId::from(3), ParticipantId::from(4)],
        );
        assert_eq!(join["streams"], json!([{"feed": 3}, {"feed": 4}]));
        assert_eq!(join["private_id"], 99);
        assert_eq!(
            subscribe(&[ParticipantId::from(8)])["streams"],
            json!([{"feed": 8}])
        );
    }
}
