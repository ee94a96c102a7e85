//! A cluster of real processes on loopback: locators, SFU nodes reporting to them, and
//! synthetic WebRTC participants joining through the locator's join API. Meetings cascade
//! across nodes, survive the loss of a node, and keep being placed when a locator dies.

use kaskade_client::{JoinConfig, MeetingState, Participant, ParticipantId};
use kaskade_e2e::{Node, RedisServer, Scratch, http_get, node_binary, parse_metric, sign_token};
use kaskade_protocol::signaling::ModerateAction;
use kaskade_protocol::token::Role;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// The machine has two cores: clusters run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &str = "cluster-secret-for-tests";
const WAIT: Duration = Duration::from_secs(30);

fn locator(extra: &[&str]) -> (Node, Scratch) {
    let scratch = Scratch::new("cluster");
    let db = scratch.path("cdr.sqlite");
    let mut args = vec!["--secret", SECRET, "--db", &db];
    args.extend_from_slice(extra);
    let node = Node::start_locator(
        Command::new(env!("CARGO_BIN_EXE_kaskade-locator-under-test")),
        &args,
    )
    .expect("locator starts");
    (node, scratch)
}

fn sfu(locators: &[&Node], name: &str, capacity: usize, extra: &[&str]) -> Node {
    let capacity = capacity.to_string();
    let urls: Vec<String> = locators.iter().map(|l| l.url()).collect();
    let mut args = vec![
        "--secret",
        SECRET,
        "--name",
        name,
        "--max-participants",
        &capacity,
    ];
    for url in &urls {
        args.extend_from_slice(&["--locator", url]);
    }
    args.extend_from_slice(extra);
    Node::start(
        Command::new(node_binary(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"))),
        &args,
    )
    .expect("node starts")
}

/// A participant token for `meeting`, signed with the cluster secret as an operator's backend
/// would sign it.
fn token(meeting: &str, name: &str) -> String {
    token_as(meeting, name, Role::Participant)
}

fn token_as(meeting: &str, name: &str, role: Role) -> String {
    sign_token(SECRET, meeting, name, role)
}

fn config(locator: &Node, meeting: &str, name: &str) -> JoinConfig {
    // the media of tests/meeting.rs, so CPU per packet compares with one node's
    let mut cfg = kaskade_e2e::small_media_config(locator.http, meeting, name);
    cfg.locator = Some(locator.url());
    cfg.token = Some(token(meeting, name));
    cfg
}

async fn join(locator: &Node, meeting: &str, name: &str) -> Participant {
    Participant::join(config(locator, meeting, name))
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

/// Decodable video and audio keep arriving from each of `others` after `since`.
fn receiving_from(state: &MeetingState, others: &[ParticipantId], since: Instant) -> bool {
    others.iter().all(|id| {
        let r = state.stats.remote(*id);
        r.audio_packets > 0 && r.decode_errors == 0 && r.last_frame_at.is_some_and(|t| t > since)
    })
}

/// Waits until every participant receives every other one's media (fresh after `since`).
async fn everyone_receives_everyone(people: &[Participant], since: Instant) {
    for p in people {
        let others: Vec<_> = people
            .iter()
            .map(Participant::id)
            .filter(|id| *id != p.id())
            .collect();
        p.wait_until(WAIT, |s| receiving_from(s, &others, since))
            .await
            .unwrap_or_else(|e| panic!("participant {} on {:?}: {e}", p.id(), p.node()));
    }
}

fn metric(node: &Node, sample: &str) -> f64 {
    let text = http_get(node.http, "/metrics").expect("metrics");
    parse_metric(&text, sample).unwrap_or(0.0)
}

fn placement(people: &[Participant]) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for p in people {
        *count.entry(p.node().unwrap_or_default()).or_default() += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_participants_on_three_nodes_receive_everyone_and_each_stream_crosses_a_link_once() {
    let _serial = SERIAL.lock().await;
    let (locator, _db) = locator(&[]);
    let names = ["n1", "n2", "n3"];
    let nodes: Vec<Node> = names.iter().map(|n| sfu(&[&locator], n, 4, &[])).collect();
    locator.wait_for_nodes(&names, WAIT).await;

    let mut people = Vec::new();
    for i in 0..10 {
        people.push(join(&locator, "cascade", &format!("p{i}")).await);
    }
    let placed = placement(&people);
    println!("PLACEMENT {placed:?}");
    assert_eq!(placed.len(), 3, "the meeting spans three nodes: {placed:?}");
    assert!(placed.values().all(|n| *n <= 4), "no node above capacity");
    let start = Instant::now();
    everyone_receives_everyone(&people, start).await;
    for p in &people {
        assert_eq!(p.stats().total_decode_errors(), 0);
        assert_eq!(p.participants().len(), 9, "everyone sees nine others");
    }

    // streams per link: exactly the sending node's own publishers' audio and video
    tokio::time::sleep(Duration::from_secs(2)).await;
    let local: BTreeMap<&str, usize> = names
        .iter()
        .map(|n| (*n, placed.get(*n).copied().unwrap_or(0)))
        .collect();
    let before: Vec<(f64, Vec<f64>)> = nodes
        .iter()
        .zip(names)
        .map(|(node, name)| {
            let sent = names
                .iter()
                .filter(|p| **p != name)
                .map(|peer| {
                    metric(
                        node,
                        &format!("kaskade_sfu_cascade_rtp_sent_total{{peer=\"{peer}\"}}"),
                    )
                })
                .collect();
            (metric(node, "kaskade_sfu_rtp_published_total"), sent)
        })
        .collect();
    let cpu_before: f64 = nodes.iter().map(|n| n.cpu_seconds().unwrap()).sum();
    let forwarded_before: f64 = nodes
        .iter()
        .map(|n| metric(n, "kaskade_sfu_rtp_forwarded_total"))
        .sum();
    let relayed = |nodes: &[Node]| -> f64 {
        nodes
            .iter()
            .zip(names)
            .map(|(n, name)| {
                names
                    .iter()
                    .filter(|p| **p != name)
                    .map(|peer| {
                        metric(
                            n,
                            &format!("kaskade_sfu_cascade_rtp_sent_total{{peer=\"{peer}\"}}"),
                        )
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    let relayed_before = relayed(&nodes);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu: f64 = nodes.iter().map(|n| n.cpu_seconds().unwrap()).sum::<f64>() - cpu_before;
    let forwarded: f64 = nodes
        .iter()
        .map(|n| metric(n, "kaskade_sfu_rtp_forwarded_total"))
        .sum::<f64>()
        - forwarded_before;
    println!(
        "CASCADE forwarded_per_s={:.0} relayed_per_s={:.0} cpu_us_per_forwarded_packet={:.2}",
        forwarded / 3.0,
        (relayed(&nodes) - relayed_before) / 3.0,
        cpu * 1e6 / forwarded
    );
    for ((node, name), (published_before, sent_before)) in nodes.iter().zip(names).zip(before) {
        let published = metric(node, "kaskade_sfu_rtp_published_total") - published_before;
        for (peer, sent_before) in names.iter().filter(|p| **p != name).zip(sent_before) {
            let streams = metric(
                node,
                &format!("kaskade_sfu_cascade_streams_sent{{peer=\"{peer}\"}}"),
            );
            assert_eq!(
                streams as usize,
                2 * local[name],
                "{name} relays each of its publishers' two streams to {peer}, once"
            );
            let sent = metric(
                node,
                &format!("kaskade_sfu_cascade_rtp_sent_total{{peer=\"{peer}\"}}"),
            ) - sent_before;
            let ratio = sent / published;
            println!("LINK {name}->{peer} streams={streams} rtp_sent/published={ratio:.3}");
            assert!(
                (0.9..=1.05).contains(&ratio),
                "{name}->{peer}: each packet crosses once ({sent} sent of {published} published)"
            );
        }
    }

    // every session leaves one call record at the locator, with its node and its bytes
    for p in people {
        p.leave().await.expect("leave");
    }
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let csv = http_get(locator.http, "/api/cdr.csv").unwrap_or_default();
        let rows: Vec<String> = csv
            .lines()
            .filter(|l| l.contains("cascade"))
            .map(str::to_string)
            .collect();
        if rows.len() == 10 {
            break rows;
        }
        assert!(Instant::now() < deadline, "call records: {csv}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for row in &rows {
        assert!(row.contains("synthetic"), "{row}");
        assert!(
            names.iter().any(|n| row.contains(&format!(",{n},"))),
            "{row}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_from_two_regions_meet_on_their_own_regions_nodes() {
    let _serial = SERIAL.lock().await;
    let (locator, _db) = locator(&[]);
    let _eu = sfu(&[&locator], "eu-1", 10, &["--region", "eu"]);
    let _us = sfu(&[&locator], "us-1", 10, &["--region", "us"]);
    locator.wait_for_nodes(&["eu-1", "us-1"], WAIT).await;
    let mut people = Vec::new();
    for (name, region) in [("anna", "eu"), ("bill", "us"), ("carl", "eu")] {
        let mut cfg = config(&locator, "transatlantic", name);
        cfg.region = Some(region.into());
        let p = Participant::join(cfg).await.expect("joins");
        assert_eq!(
            p.node().as_deref(),
            Some(format!("{region}-1").as_str()),
            "{name} is placed in {region}"
        );
        people.push(p);
    }
    everyone_receives_everyone(&people, Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_participants_of_a_killed_node_are_back_within_five_seconds() {
    let _serial = SERIAL.lock().await;
    let (locator, _db) = locator(&["--node-timeout", "3s"]);
    let names = ["k1", "k2", "k3"];
    let mut nodes: BTreeMap<String, Node> = names
        .iter()
        .map(|n| (n.to_string(), sfu(&[&locator], n, 4, &[])))
        .collect();
    locator.wait_for_nodes(&names, WAIT).await;
    let mut chair = config(&locator, "failover", "f0");
    chair.token = Some(token_as("failover", "f0", Role::Moderator));
    let mut people = vec![Participant::join(chair).await.expect("the moderator joins")];
    for i in 1..6 {
        people.push(join(&locator, "failover", &format!("f{i}")).await);
    }
    everyone_receives_everyone(&people, Instant::now()).await;
    people[0].lock(true).await.expect("lock");
    for p in &people {
        p.wait_until(WAIT, |s| s.locked)
            .await
            .expect("everyone sees the lock, on every node");
    }
    // the locator learns the lock from the nodes' next reports
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = people[0].node().expect("on a node");
    let moved: Vec<usize> = (0..people.len())
        .filter(|i| people[*i].node().as_deref() == Some(victim.as_str()))
        .collect();
    println!("KILLING {victim} with {} participants", moved.len());

    let killed_at = Instant::now();
    drop(nodes.remove(&victim));
    // everyone (moved or not) receives every other participant's fresh media again
    for p in &people {
        let deadline = killed_at + Duration::from_secs(5);
        loop {
            let state = p.state();
            let others: Vec<_> = state.participants.keys().copied().collect();
            if others.len() == people.len() - 1 && receiving_from(&state, &others, killed_at) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} not back within 5 s: sees {} others",
                p.node(),
                others.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("FAILOVER all_back_ms={}", killed_at.elapsed().as_millis());
    for i in moved {
        assert_ne!(people[i].node().as_deref(), Some(victim.as_str()));
        assert!(people[i].reconnects() >= 1);
    }
    // meeting state outlived the node: the moderator is still one, the meeting still locked
    let chair = people[0].state();
    assert_eq!(chair.me.map(|m| m.role), Some(Role::Moderator));
    assert!(people.iter().all(|p| p.state().locked));
    let latecomer = Participant::join(config(&locator, "failover", "late")).await;
    assert!(
        matches!(&latecomer, Err(e) if e.code() == Some("meeting_locked")),
        "a newcomer is refused: {:?}",
        latecomer.as_ref().err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_locators_share_redis_and_joins_go_on_when_one_dies() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let (first, _db1) = locator(&["--redis", &url]);
    let (second, _db2) = locator(&["--redis", &url]);
    let node = sfu(&[&first, &second], "r1", 10, &[]);
    first.wait_for_nodes(&["r1"], WAIT).await;
    second.wait_for_nodes(&["r1"], WAIT).await;

    let a = join(&first, "shared", "a").await;
    let b = join(&second, "shared", "b").await;
    assert_eq!(a.node(), b.node(), "both locators place the meeting alike");
    drop(first);
    let c = join(&second, "shared", "c").await;
    let people = [a, b, c];
    everyone_receives_everyone(&people, Instant::now()).await;
    let meetings = http_get(second.http, "/api/meetings").expect("meetings");
    assert!(meetings.contains("shared"), "{meetings}");
    assert!(metric(&node, "kaskade_sfu_participants") >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostor_nodes_and_forged_cascade_packets_are_refused_without_harm() {
    let _serial = SERIAL.lock().await;
    let (locator, _db) = locator(&[]);
    let honest = [
        sfu(&[&locator], "h1", 1, &[]),
        sfu(&[&locator], "h2", 1, &[]),
    ];
    let impostor = Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-sfu-under-test")),
        &[
            "--secret",
            "not-the-cluster-secret",
            "--name",
            "impostor",
            "--locator",
            &locator.url(),
        ],
    )
    .expect("impostor starts");
    locator.wait_for_nodes(&["h1", "h2"], WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let nodes = http_get(locator.http, "/api/nodes").unwrap();
    assert!(!nodes.contains("impostor"), "{nodes}");

    let a = join(&locator, "guarded", "a").await;
    let b = join(&locator, "guarded", "b").await;
    assert_ne!(a.node(), b.node(), "capacity 1: the meeting cascades");
    let people = [a, b];
    everyone_receives_everyone(&people, Instant::now()).await;

    // forged link datagrams: a made-up sender, and a real sender index with a wrong key
    use kaskade_sfu::cascade::frame::{MAGIC, VERSION};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for target in &honest {
        let mut forged = vec![MAGIC, VERSION, 0x0F, 0xFF];
        forged.extend_from_slice(&[0; 40]);
        socket.send_to(&forged, target.udp_addr).unwrap();
        for sender in 1..=3u16 {
            let mut wrong_key = vec![MAGIC, VERSION];
            wrong_key.extend_from_slice(&sender.to_be_bytes());
            wrong_key.extend_from_slice(&[7; 60]);
            socket.send_to(&wrong_key, target.udp_addr).unwrap();
        }
    }
    // a dial of the cascade socket by a name the locator does not know
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/cascade?from=nobody", honest[0].http))
            .await
            .expect("the upgrade itself succeeds");
    let mut ws = ws;
    use futures_util::StreamExt;
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(
        matches!(
            closed,
            Ok(None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))))
        ),
        "an unknown node's dial is closed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dropped: f64 = honest
        .iter()
        .map(|n| {
            metric(
                n,
                "kaskade_sfu_dropped_total{reason=\"cascade_unknown_link\"}",
            ) + metric(n, "kaskade_sfu_dropped_total{reason=\"cascade_forged\"}")
        })
        .sum();
    assert!(
        dropped >= 8.0,
        "forged link datagrams are counted ({dropped})"
    );
    everyone_receives_everyone(&people, Instant::now()).await;
    drop(impostor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_never_receives_or_touches_another_meetings_media_across_nodes() {
    let _serial = SERIAL.lock().await;
    let (locator, _db) = locator(&[]);
    let _nodes = [
        sfu(&[&locator], "n1", 10, &[]),
        sfu(&[&locator], "n2", 10, &[]),
    ];
    locator.wait_for_nodes(&["n1", "n2"], WAIT).await;
    // both meetings span both nodes: every stream shares the one n1-n2 link
    let pinned = |meeting: &str, name: &str, node: &str, role: Role| {
        let mut cfg = config(&locator, meeting, name);
        cfg.node = Some(node.to_string());
        cfg.token = Some(token_as(meeting, name, role));
        Participant::join(cfg)
    };
    let a1 = pinned("alpha", "a1", "n1", Role::Moderator)
        .await
        .expect("a1");
    let a2 = pinned("alpha", "a2", "n2", Role::Participant)
        .await
        .expect("a2");
    let b1 = pinned("beta", "b1", "n1", Role::Participant)
        .await
        .expect("b1");
    let b2 = pinned("beta", "b2", "n2", Role::Participant)
        .await
        .expect("b2");
    let (alpha, beta) = ([a1, a2], [b1, b2]);
    assert_eq!(placement(&alpha), placement(&beta));
    everyone_receives_everyone(&alpha, Instant::now()).await;
    everyone_receives_everyone(&beta, Instant::now()).await;

    // alpha's moderator goes after beta's participants by id, on its node and across the link
    let beta_ids: Vec<_> = beta.iter().map(Participant::id).collect();
    for target in &beta_ids {
        for action in [
            ModerateAction::MuteAudio,
            ModerateAction::MuteVideo,
            ModerateAction::Remove,
        ] {
            alpha[0].moderate(action, *target).await.expect("send");
        }
    }
    // a fence: once alpha is locked, n1 has handled every request a1 sent before
    alpha[0].lock(true).await.expect("lock");
    alpha[0]
        .wait_until(WAIT, |s| s.locked)
        .await
        .expect("alpha locked");
    // and alpha's token does not open beta
    let mut intruder = config(&locator, "beta", "a2");
    intruder.token = Some(token_as("alpha", "a2", Role::Moderator));
    assert!(
        Participant::join(intruder).await.is_err(),
        "alpha's token opened beta"
    );

    let after = Instant::now();
    everyone_receives_everyone(&beta, after).await;
    everyone_receives_everyone(&alpha, after).await;
    for (meeting, ids) in [
        (
            &alpha,
            alpha.iter().map(Participant::id).collect::<Vec<_>>(),
        ),
        (&beta, beta_ids.clone()),
    ] {
        for p in meeting {
            let state = p.state();
            let from: Vec<_> = state.stats.remotes.keys().copied().collect();
            assert!(
                from.iter().all(|id| ids.contains(id)),
                "{} received from {from:?}, its meeting is {ids:?}",
                p.id()
            );
            assert_eq!(state.stats.unattributed_packets, 0, "{}", p.id());
            assert!(
                state.participants.keys().all(|id| ids.contains(id)),
                "{} was told of {:?}",
                p.id(),
                state.participants.keys()
            );
            assert!(
                state
                    .participants
                    .values()
                    .all(|info| !info.audio_muted && !info.video_muted),
                "{} saw someone muted: {:?}",
                p.id(),
                state.participants
            );
        }
    }
}
