//! Meetings of real WebRTC clients (webrtc-rs, openh264-encoded H.264, libopus Opus) against a
//! real `kaskade-sfu` process on loopback.

use kaskade_client::{
    ErrorCode, JoinConfig, JoinError, MeetingState, ModerateAction, Participant, ParticipantId,
    RemoteStats,
};
use kaskade_e2e::{Node, start_node};
use kaskade_loadtest::LossyRelay;
use std::time::{Duration, Instant};

/// The machine has two cores: meetings run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn node(args: &[&str]) -> Node {
    start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), args)
}

fn config(node: &Node, meeting: &str, name: &str) -> JoinConfig {
    kaskade_e2e::small_media_config(node.http, meeting, name)
}

async fn join(node: &Node, meeting: &str, name: &str) -> Participant {
    Participant::join(config(node, meeting, name))
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

fn refused_code(result: Result<Participant, JoinError>) -> ErrorCode {
    match result {
        Err(JoinError::Refused { code, .. }) => code,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(p) => panic!("expected a refusal, but {} joined", p.id()),
    }
}

/// Everyone in `meeting` receives decodable video and audio from each of `others`.
fn receives_from(state: &MeetingState, others: &[ParticipantId], frames: u64) -> bool {
    others.iter().all(|id| {
        let r = state.stats.remote(*id);
        r.video_frames_decoded >= frames && r.audio_packets >= frames && r.decode_errors == 0
    })
}

fn ids(participants: &[Participant]) -> Vec<ParticipantId> {
    participants.iter().map(Participant::id).collect()
}

const WAIT: Duration = Duration::from_secs(20);

/// What `observer` received from `source` before and after one second, once half a second
/// has let packets already in flight arrive.
async fn settle_then_observe(
    observer: &Participant,
    source: ParticipantId,
) -> (RemoteStats, RemoteStats) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = observer.stats().remote(source);
    tokio::time::sleep(Duration::from_secs(1)).await;
    (before, observer.stats().remote(source))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_participants_receive_the_other_nine_and_the_eleventh_is_refused() {
    let _serial = SERIAL.lock().await;
    let mut node = node(&[]);
    let mut people = Vec::new();
    for i in 0..10 {
        people.push(join(&node, "full", &format!("p{i}")).await);
    }
    let all = ids(&people);
    for p in &people {
        let others: Vec<_> = all.iter().copied().filter(|id| *id != p.id()).collect();
        let state = p
            .wait_until(WAIT, |s| receives_from(s, &others, 30))
            .await
            .expect("every participant decodes the other nine");
        assert_eq!(state.stats.total_decode_errors(), 0);
    }
    let eleventh = Participant::join(config(&node, "full", "p10")).await;
    assert_eq!(refused_code(eleventh), ErrorCode::MeetingFull);

    // CPU per forwarded packet over 10 s of a full room.
    let cpu_before = node.cpu_seconds().expect("node CPU");
    let fwd_before = node.metric("kaskade_sfu_rtp_forwarded_total").unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = node.cpu_seconds().unwrap() - cpu_before;
    let forwarded = node.metric("kaskade_sfu_rtp_forwarded_total").unwrap() - fwd_before;
    let hist_sum = node.metric("kaskade_sfu_forward_seconds_sum").unwrap();
    let hist_count = node.metric("kaskade_sfu_forward_seconds_count").unwrap();
    println!(
        "FULL_ROOM forwarded_per_s={:.0} cpu_us_per_forwarded_packet={:.2} mean_fanout_us={:.1}",
        forwarded / 10.0,
        cpu * 1e6 / forwarded,
        hist_sum * 1e6 / hist_count
    );
    assert!(forwarded > 0.0);
    assert!(node.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_meeting_refuses_joins_until_unlocked() {
    let _serial = SERIAL.lock().await;
    let node = node(&[]);
    let moderator = join(&node, "locked", "mod").await;
    let guest = join(&node, "locked", "guest").await;
    guest
        .lock(true)
        .await
        .expect("a participant may ask, and is told no");
    guest
        .wait_until(WAIT, |s| {
            s.errors.iter().any(|(c, _)| *c == ErrorCode::Forbidden)
        })
        .await
        .expect("a participant cannot lock");
    moderator.lock(true).await.unwrap();
    guest
        .wait_until(WAIT, |s| s.locked)
        .await
        .expect("lock seen");
    let late = Participant::join(config(&node, "locked", "late")).await;
    assert_eq!(refused_code(late), ErrorCode::MeetingLocked);
    moderator.lock(false).await.unwrap();
    guest.wait_until(WAIT, |s| !s.locked).await.unwrap();
    join(&node, "locked", "late").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_state_propagates_and_a_moderator_mute_is_enforced_by_the_node() {
    let _serial = SERIAL.lock().await;
    let node = node(&[]);
    let moderator = join(&node, "mute", "mod").await;
    let b = join(&node, "mute", "b").await;
    let b_id = b.id();
    moderator
        .wait_until(WAIT, |s| receives_from(s, &[b_id], 10))
        .await
        .unwrap();

    // self-mute: everyone sees it
    b.mute(None, Some(true)).await.unwrap();
    moderator
        .wait_until(WAIT, |s| {
            s.participants.get(&b_id).is_some_and(|p| p.video_muted)
        })
        .await
        .expect("the moderator sees b's video muted");
    b.mute(None, Some(false)).await.unwrap();
    moderator
        .wait_until(WAIT, |s| {
            s.participants.get(&b_id).is_some_and(|p| !p.video_muted)
        })
        .await
        .expect("and unmuted");

    // a moderator mute: b's client keeps sending, the node stops forwarding
    moderator
        .moderate(ModerateAction::MuteAudio, b_id)
        .await
        .unwrap();
    b.wait_until(WAIT, |s| !s.muted_by_moderator.is_empty())
        .await
        .expect("b is told");
    moderator
        .wait_until(WAIT, |s| {
            s.participants.get(&b_id).is_some_and(|p| p.audio_muted)
        })
        .await
        .expect("the mute state propagates");
    let (before, after) = settle_then_observe(&moderator, b_id).await;
    assert_eq!(
        after.audio_packets, before.audio_packets,
        "muted audio still forwarded"
    );
    assert!(
        after.video_frames_decoded > before.video_frames_decoded,
        "video must keep flowing"
    );
    assert!(
        node.metric(r#"kaskade_sfu_dropped_total{reason="muted"}"#)
            .unwrap()
            > 0.0
    );

    // only b can unmute itself; its audio resumes on the same slot
    b.mute(Some(false), None).await.unwrap();
    let resumed = after.audio_packets + 20;
    moderator
        .wait_until(WAIT, |s| s.stats.remote(b_id).audio_packets >= resumed)
        .await
        .expect("audio resumes after unmute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_participant_is_gone_and_its_media_stops() {
    let _serial = SERIAL.lock().await;
    let node = node(&[]);
    let moderator = join(&node, "remove", "mod").await;
    let bob = join(&node, "remove", "bob").await;
    let carol = join(&node, "remove", "carol").await;
    let carol_id = carol.id();
    bob.wait_until(WAIT, |s| receives_from(s, &[carol_id], 10))
        .await
        .unwrap();
    bob.moderate(ModerateAction::Remove, moderator.id())
        .await
        .unwrap();
    bob.wait_until(WAIT, |s| {
        s.errors.iter().any(|(c, _)| *c == ErrorCode::Forbidden)
    })
    .await
    .expect("participants cannot remove");
    moderator
        .moderate(ModerateAction::Remove, carol_id)
        .await
        .unwrap();
    carol
        .wait_until(WAIT, |s| s.removed_by.is_some() && s.signaling_closed)
        .await
        .expect("carol is told and disconnected");
    bob.wait_until(WAIT, |s| !s.participants.contains_key(&carol_id))
        .await
        .expect("bob no longer lists carol");
    let (before, after) = settle_then_observe(&bob, carol_id).await;
    assert_eq!(
        before.video_packets, after.video_packets,
        "carol's video still arrives"
    );
    assert_eq!(
        before.audio_packets, after.audio_packets,
        "carol's audio still arrives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_retransmission_repairs_five_percent_loss() {
    let _serial = SERIAL.lock().await;
    let node = node(&[]);
    let udp = node.udp_addr;
    // the publisher's path and the subscriber's path each lose 5% of RTP/RTCP both ways
    let (pub_relay, pub_handle) = LossyRelay::start(udp, 0.05, 1).await.unwrap();
    let (sub_relay, sub_handle) = LossyRelay::start(udp, 0.05, 2).await.unwrap();
    let mut cfg = config(&node, "lossy", "publisher");
    cfg.media_via = Some(pub_relay);
    let publisher = Participant::join(cfg).await.unwrap();
    let mut cfg = config(&node, "lossy", "subscriber");
    cfg.media_via = Some(sub_relay);
    cfg.publish_video = false;
    let subscriber = Participant::join(cfg).await.unwrap();
    let pid = publisher.id();
    let state = subscriber
        .wait_until(Duration::from_secs(30), |s| {
            s.stats.remote(pid).video_frames_decoded >= 150
        })
        .await
        .expect("video keeps decoding through loss");
    let remote = state.stats.remote(pid);
    let (up, down) = (pub_handle.stats(), sub_handle.stats());
    println!(
        "LOSSY frames={} decode_errors={} dropped_frames={} relay_drops_pub={} relay_drops_sub={} node_nacks={} node_resent={}",
        remote.video_frames_decoded,
        remote.decode_errors,
        remote.video_frames_dropped,
        up.dropped_up + up.dropped_down,
        down.dropped_up + down.dropped_down,
        node.metric("kaskade_sfu_nacks_received_total").unwrap(),
        node.metric("kaskade_sfu_retransmitted_total").unwrap()
    );
    assert!(
        up.dropped_up > 10 && down.dropped_down > 10,
        "the relays dropped packets"
    );
    assert!(
        node.metric("kaskade_sfu_nacks_received_total").unwrap() > 0.0,
        "the subscriber asked for retransmissions"
    );
    assert!(
        node.metric("kaskade_sfu_retransmitted_total").unwrap() > 0.0,
        "the node resent from the publisher's ring"
    );
    assert_eq!(
        remote.decode_errors, 0,
        "NACK must keep the decoder error-free"
    );
    assert!(
        publisher.stats().nacked_packets_received > 0,
        "the node asked the publisher for retransmissions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscriber_gets_a_keyframe_within_a_second() {
    let _serial = SERIAL.lock().await;
    let node = node(&[]);
    let mut cfg = config(&node, "keyframe", "publisher");
    cfg.clip_seconds = 20; // one IDR per 20 s: only a keyframe request can produce another soon
    let publisher = Participant::join(cfg).await.unwrap();
    let pid = publisher.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut cfg = config(&node, "keyframe", "late");
    cfg.publish_video = false;
    let started = Instant::now();
    let late = Participant::join(cfg).await.unwrap();
    let state = late
        .wait_until(WAIT, |s| s.stats.remote(pid).first_frame_at.is_some())
        .await
        .unwrap();
    let connected = state.connected_at.expect("connected");
    let first = state.stats.remote(pid).first_frame_at.unwrap();
    let delay = first.saturating_duration_since(connected);
    println!(
        "KEYFRAME join_to_first_frame_ms={} connected_to_first_frame_ms={}",
        first.saturating_duration_since(started).as_millis(),
        delay.as_millis()
    );
    assert!(
        delay < Duration::from_secs(1),
        "first frame {delay:?} after connecting"
    );
    assert!(
        publisher.stats().plis_received > 0,
        "the node asked for the keyframe"
    );
}
