//! The two state stores answer alike: every test runs against the in-process store and
//! against a real `redis-server`.

mod common;

use common::{RedisServer, report, with_meeting};
use kaskade_locator::placement::{PlacementConfig, PlacementError, PlacementKind, Request};
use kaskade_locator::state::{MemoryStore, NodeState, Now, RedisStore, Registration, Store};
use std::time::Duration;

fn config() -> PlacementConfig {
    PlacementConfig {
        node_timeout: Duration::from_secs(3),
        max_meeting_size: 10,
    }
}

/// Both stores; the Redis one on its own server (kept alive by the returned guard).
async fn stores() -> (RedisServer, Vec<(&'static str, Box<dyn Store>)>) {
    let redis = RedisServer::start();
    let shared = RedisStore::connect(&redis.url, config())
        .await
        .expect("connect to redis");
    let stores: Vec<(&'static str, Box<dyn Store>)> = vec![
        ("memory", Box::new(MemoryStore::new(config()))),
        ("redis", Box::new(shared)),
    ];
    (redis, stores)
}

fn later(now: Now, ms: u64) -> Now {
    Now {
        instant: now.instant + Duration::from_millis(ms),
        unix_ms: now.unix_ms + ms,
    }
}

#[tokio::test]
async fn nodes_keep_their_index_across_reports_and_restarts() {
    let (redis, stores) = stores().await;
    for (name, store) in &stores {
        let now = Now::current();
        let registered = |index, new| Registration { index, new };
        let report_as = |node: &str, index: Option<u16>| {
            let mut r = report(node, 10);
            r.index = index;
            r
        };
        let cases = [
            (report_as("a", None), registered(1, true)),
            (report_as("b", None), registered(2, true)),
            (report_as("a", None), registered(1, false)),
            (report_as("c", Some(2)), registered(3, true)), // 2 is b's
            (report_as("d", Some(7)), registered(7, true)),
        ];
        for (r, want) in cases {
            assert_eq!(
                store.report(&r, now).await.unwrap(),
                want,
                "{name}: {}",
                r.node
            );
        }
        // a node dropped for silence registers anew, with its old index
        let back = later(now, 5_000);
        store.sweep(back).await.unwrap();
        let again = store.report(&report_as("a", None), back).await.unwrap();
        assert_eq!(again, registered(1, true), "{name}");
    }
    // a restarted locator: a node that says which index it holds keeps it
    let fresh: Vec<(&str, Box<dyn Store>)> = vec![
        ("memory", Box::new(MemoryStore::new(config()))),
        (
            "redis",
            Box::new(RedisStore::connect(&redis.url, config()).await.unwrap()),
        ),
    ];
    for (name, store) in &fresh {
        let mut back = report("d", 10);
        back.index = Some(7);
        let registration = store.report(&back, Now::current()).await.unwrap();
        assert_eq!(registration.index, 7, "{name}");
    }
}

#[tokio::test]
async fn a_node_whose_reports_stop_is_dropped() {
    let (_redis, stores) = stores().await;
    for (name, store) in &stores {
        let t0 = Now::current();
        store
            .report(&with_meeting(report("a", 10), "m", 2), t0)
            .await
            .unwrap();
        assert_eq!(store.nodes(t0).await.unwrap().len(), 1, "{name}");
        assert!(store.node("a", t0).await.unwrap().is_some(), "{name}");
        let late = later(t0, 2_000);
        assert_eq!(
            store.nodes(late).await.unwrap()[0].state,
            NodeState::Stale,
            "{name}"
        );
        let gone = later(t0, 3_000);
        assert!(store.node("a", gone).await.unwrap().is_none(), "{name}");
        assert!(store.nodes(gone).await.unwrap().is_empty(), "{name}");
        let placed = store.place("x", Request::default(), gone).await.unwrap();
        assert_eq!(placed.unwrap_err(), PlacementError::NoCapacity, "{name}");
        store.sweep(gone).await.unwrap();
        let meeting = store
            .meeting("m", gone)
            .await
            .unwrap()
            .expect("state lingers");
        assert!(meeting.nodes.is_empty(), "{name}");
        // a node that comes back is placed on again
        store.report(&report("a", 10), gone).await.unwrap();
        let placed = store.place("x", Request::default(), gone).await.unwrap();
        assert_eq!(&*placed.unwrap().placement.node, "a", "{name}");
    }
}

#[tokio::test]
async fn placements_count_until_the_next_report() {
    let (_redis, stores) = stores().await;
    for (name, store) in &stores {
        let now = Now::current();
        store.report(&report("a", 2), now).await.unwrap();
        for meeting in ["m1", "m2"] {
            let placed = store.place(meeting, Request::default(), now).await.unwrap();
            assert_eq!(placed.unwrap().placement.kind, PlacementKind::New, "{name}");
        }
        assert_eq!(
            store.nodes(now).await.unwrap()[0].corrected_participants,
            2,
            "{name}"
        );
        let full = store.place("m3", Request::default(), now).await.unwrap();
        assert_eq!(full.unwrap_err(), PlacementError::NoCapacity, "{name}");
        let m1 = store.meeting("m1", now).await.unwrap().unwrap();
        assert_eq!(m1.participants, 1, "{name}");
        // the report says one arrived in m1 and nobody in m2
        let next = later(now, 1_000);
        store
            .report(&with_meeting(report("a", 2), "m1", 1), next)
            .await
            .unwrap();
        assert_eq!(
            store.nodes(next).await.unwrap()[0].corrected_participants,
            1,
            "{name}"
        );
        let m2 = store.meeting("m2", next).await.unwrap().unwrap();
        assert_eq!(m2.participants, 0, "{name}");
        assert!(
            store
                .place("m3", Request::default(), next)
                .await
                .unwrap()
                .is_ok(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn hosting_nodes_learn_their_peers_and_share_one_key_per_pair() {
    let (_redis, stores) = stores().await;
    for (name, store) in &stores {
        let now = Now::current();
        for node in ["a", "b", "c"] {
            store.report(&report(node, 10), now).await.unwrap();
        }
        assert!(
            store.host("ghost", "m", now).await.unwrap().is_none(),
            "{name}"
        );
        let first = store.host("a", "m", now).await.unwrap().unwrap();
        assert!(first.peers.is_empty(), "{name}");
        let second = store.host("b", "m", now).await.unwrap().unwrap();
        assert_eq!(second.peers.len(), 1, "{name}");
        assert_eq!(second.peers[0].node, "a");
        assert_eq!(second.peers[0].index, 1);
        let key = second.peers[0].key.clone();
        assert_eq!(key.len(), 64, "{name}");
        let again = store.host("a", "m", now).await.unwrap().unwrap();
        assert_eq!(again.peers[0].node, "b");
        assert_eq!(again.peers[0].key, key, "{name}: one key for both ends");
        let link = store.link("b", "a", now).await.unwrap().unwrap();
        assert_eq!(link.key, key, "{name}");
        let other = store.link("c", "a", now).await.unwrap().unwrap();
        assert_ne!(other.key, key, "{name}: each pair has its own key");
        assert!(
            store.link("a", "ghost", now).await.unwrap().is_none(),
            "{name}"
        );
        assert!(store.link("a", "a", now).await.unwrap().is_none(), "{name}");
        // a join pinned to c cascades the meeting; then c learns a and b
        let pinned = Request {
            pinned: Some("c"),
            ..Request::default()
        };
        let placed = store.place("m", pinned, now).await.unwrap().unwrap();
        assert_eq!(placed.placement.kind, PlacementKind::Cascade, "{name}");
        let third = store.host("c", "m", now).await.unwrap().unwrap();
        assert_eq!(third.peers.len(), 2, "{name}");
    }
}

#[tokio::test]
async fn meeting_state_follows_reports_and_survives_its_node() {
    let (_redis, stores) = stores().await;
    for (name, store) in &stores {
        let now = Now::current();
        let mut locked = with_meeting(report("a", 10), "board", 3);
        locked.meetings[0].locked = true;
        locked.meetings[0].moderators = vec!["alice".into()];
        store.report(&locked, now).await.unwrap();
        store.add_moderator("board", "bob").await.unwrap();
        let view = store.meeting("board", now).await.unwrap().unwrap();
        assert!(view.locked, "{name}");
        assert_eq!(view.moderators, ["alice", "bob"], "{name}");
        assert_eq!(view.participants, 3, "{name}");
        assert_eq!(store.meetings(now).await.unwrap().len(), 1, "{name}");
        assert_eq!(store.counts(now).await.unwrap(), (1, 1), "{name}");
        store.mark_dead("a").await.unwrap();
        assert_eq!(store.counts(now).await.unwrap(), (0, 1), "{name}");
        assert!(store.nodes(now).await.unwrap().is_empty(), "{name}");
        let view = store.meeting("board", now).await.unwrap().unwrap();
        assert!(view.locked && view.nodes.is_empty(), "{name}: {view:?}");
        store.sweep(now).await.unwrap();
        assert!(
            store.meeting("board", now).await.unwrap().is_some(),
            "{name}"
        );
        // nobody came back for longer than the linger: the meeting is forgotten
        let much_later = later(now, 31_000);
        store.sweep(much_later).await.unwrap();
        store.sweep(much_later).await.unwrap();
        assert!(
            store.meeting("board", much_later).await.unwrap().is_none(),
            "{name}"
        );
        assert!(
            store.meeting("never", now).await.unwrap().is_none(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_one_time_token_is_spent_once_across_every_locator_of_the_store() {
    let (redis, stores) = stores().await;
    let second = RedisStore::connect(&redis.url, config())
        .await
        .expect("a second locator's connection");
    let now = Now::current();
    let exp = now.unix_ms / 1000 + 600;
    for (name, store) in &stores {
        let id = format!("token-of-{name}");
        assert!(store.spend_token(&id, exp, now).await.unwrap(), "{name}");
        assert!(!store.spend_token(&id, exp, now).await.unwrap(), "{name}");
        assert!(
            store.spend_token("another", exp, now).await.unwrap(),
            "{name}"
        );
    }
    // another locator on the same Redis sees it spent
    assert!(
        !second
            .spend_token("token-of-redis", exp, now)
            .await
            .unwrap()
    );
    assert!(
        second
            .spend_token("token-of-memory", exp, now)
            .await
            .unwrap()
    );
}
