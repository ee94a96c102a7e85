//! Recording a meeting of real synthetic participants through the all-in-one default (an
//! embedded locator, node and recorder) and through a cluster, then checking the files with the
//! real ffprobe and ffmpeg, and the playback surface.

mod common;

use common::{Recordings, WAIT, all_in_one, media_config};
use kaskade_client::{CameraRequest, Participant, RtspTransport};
use kaskade_e2e::media_file::{
    decode_errors, largest_video_gap, probe, probe_h264_and_opus, video_packets,
};
use kaskade_e2e::{Node, RtspCamera, Scratch, recorder_binary, sign_token};
use kaskade_protocol::recording::{RecordingInfo, RecordingState};
use kaskade_protocol::token::Role;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

async fn join(server: &Node, meeting: &str, name: &str) -> Participant {
    Participant::join(media_config(server, meeting, name))
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

/// Where the files of recording `id` of `meeting` are, below `recordings`.
fn recording_dir(recordings: impl AsRef<Path>, meeting: &str, id: &str) -> PathBuf {
    recordings.as_ref().join(meeting).join(id)
}

/// The video packets `subscriber` has received from `publisher` so far.
fn video_packets_from(subscriber: &Participant, publisher: &Participant) -> u64 {
    subscriber
        .stats()
        .remotes
        .get(&publisher.id())
        .map_or(0, |r| r.video_packets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_records_a_meeting_into_playable_files() {
    let scratch = Scratch::new("recording");
    let recordings = scratch.path("recordings");
    let server = all_in_one(&scratch, &recordings);
    let http = reqwest::Client::new();

    let chair = join(&server, "rec", "chair").await;
    let guest = join(&server, "rec", "guest").await;
    let api = Recordings::new(&server, "rec", &chair.welcome().token);

    // only a moderator may start
    let as_guest = Recordings::new(&server, "rec", &guest.welcome().token);
    assert_eq!(as_guest.start().await.status(), 403);
    let anonymous = http
        .post(format!("{}/api/meetings/rec/recordings", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let start_sent = Instant::now();
    let started = api.start().await;
    assert_eq!(started.status(), 201, "{:?}", started.text().await);
    let started: RecordingInfo = started.json().await.unwrap();
    let recording_started = Instant::now();
    for p in [&chair, &guest] {
        p.wait_until(WAIT, |s| s.recording)
            .await
            .expect("everyone sees the recording indicator");
    }
    // the guest turns video off for five seconds: a gap in their file, not a shift
    tokio::time::sleep(Duration::from_secs(1)).await;
    guest.mute(None, Some(true)).await.expect("mute");
    // a frame in flight at the mute is let through; from here on nothing leaves or arrives
    tokio::time::sleep(Duration::from_millis(300)).await;
    let muted_at = (guest.stats(), video_packets_from(&chair, &guest));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let late = join(&server, "rec", "late").await;
    let late_joined = recording_started.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (sent, received) = (guest.stats(), video_packets_from(&chair, &guest));
    assert_eq!(
        sent.video_frames_sent, muted_at.0.video_frames_sent,
        "the muted guest sends no video"
    );
    assert_eq!(
        received, muted_at.1,
        "the node forwards no video of the muted guest"
    );
    guest.mute(None, Some(false)).await.expect("unmute");
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(api.stop("no-such-recording").await.status(), 404);
    let stop_sent = Instant::now();
    let stopped = api.stop(&started.id).await;
    assert_eq!(stopped.status(), 200);
    let stopped: RecordingInfo = stopped.json().await.unwrap();
    // the recording's clock started between the start request and its answer, and stopped
    // between the stop request and its answer: its length lies between these two
    let length = (
        stop_sent.duration_since(recording_started).as_secs_f64(),
        start_sent.elapsed().as_secs_f64(),
    );
    let ends_in_time = |end: f64| length.0 - 0.5 < end && end < length.1 + 0.5;
    assert_ne!(stopped.state, RecordingState::Recording);
    // the composed video follows the per-participant files
    let stopped = api.wait_done(&started.id, Duration::from_secs(60)).await;
    assert!(stopped.incidents.is_empty(), "{:?}", stopped.incidents);
    for p in [&chair, &guest, &late] {
        p.wait_until(WAIT, |s| !s.recording)
            .await
            .expect("the indicator goes away");
    }

    // three participants, three playable files, each as long as its participant was there
    assert_eq!(stopped.participants.len(), 3, "{stopped:?}");
    let dir = recording_dir(&recordings, "rec", &stopped.id);
    for p in &stopped.participants {
        let file = dir.join(format!("{}.mp4", p.id));
        let probe = probe_h264_and_opus(&file);
        // every file is on the recording's timeline: it ends when the recording stopped, and a
        // late joiner's media starts at the moment they joined
        let (start, end) = (probe.start(), probe.end());
        let expected_start = if p.name == "late" {
            late_joined.as_secs_f64()
        } else {
            0.0
        };
        println!(
            "RECORDED {} start={start:.2}s (~{expected_start:.2}) end={end:.2}s ({:.2} to {:.2})",
            p.name, length.0, length.1
        );
        assert!(ends_in_time(end), "{} ends at {end}", p.name);
        assert!(
            (start - expected_start).abs() < 0.5,
            "{} starts at {start}",
            p.name
        );
        assert_eq!(decode_errors(&file), "", "{} decodes cleanly", p.name);
        let gap = largest_video_gap(&file);
        println!("RECORDED {} largest video gap {gap:.2}s", p.name);
        if p.name == "guest" {
            // if this fails, say whether the file holds the chair's packets (attributed to
            // the wrong publisher) or packets of its own
            let sizes = |f: &Path| video_packets(f).iter().map(|p| p.1).collect::<Vec<_>>();
            let chair = stopped.participants.iter().find(|c| c.name == "chair");
            let chairs_packets = chair.map(|c| sizes(&dir.join(format!("{}.mp4", c.id))));
            assert!(
                (4.0..6.0).contains(&gap),
                "the video mute is a gap: {gap}; {} video packets, the same sizes as the \
                 chair's file: {}",
                video_packets(&file).len(),
                chairs_packets.as_deref() == Some(sizes(&file).as_slice())
            );
        } else {
            assert!(gap < 1.0, "{}: no gap but the mute's: {gap}", p.name);
        }
    }

    // the composed meeting: one video and the mixed audio, as long as the recording
    assert!(stopped.composed.is_some(), "a composed video: {stopped:?}");
    let composed = dir.join("composed.mp4");
    let probe = probe(&composed);
    let streams = probe.codecs();
    assert_eq!(streams.len(), 2, "{streams:?}");
    assert!(
        streams.contains(&"h264") && streams.contains(&"opus"),
        "{streams:?}"
    );
    let end = probe.end();
    println!(
        "COMPOSED end={end:.2}s ({:.2} to {:.2})",
        length.0, length.1
    );
    assert!(ends_in_time(end), "composed ends at {end}");
    assert_eq!(
        decode_errors(&composed),
        "",
        "the composed video decodes cleanly"
    );

    // playback: the page, the list and a ranged read of a file
    let page = http
        .get(format!("{}/r/rec", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let list: Vec<RecordingInfo> = http
        .get(format!("{}/r/rec/recordings.json", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let file = list[0].participants[0].file.clone().expect("a file link");
    let ranged = http
        .get(format!("{}{file}", server.url()))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_camera_is_recorded_like_anyone_else() {
    let scratch = Scratch::new("camera-recording");
    let recordings = scratch.path("recordings");
    let server = all_in_one(&scratch, &recordings);
    // G.711 audio: the file holds the node's Opus of it
    let camera = RtspCamera::start(Command::new("/usr/bin/python3"), 0, &["--audio", "pcmu"]);
    let chair = join(&server, "camrec", "chair").await;
    let request = CameraRequest {
        url: camera.url(),
        name: "Lobby".into(),
        username: None,
        password: None,
        transport: RtspTransport::Tcp,
    };
    let id = chair
        .add_camera(request, WAIT)
        .await
        .unwrap()
        .expect("the camera is added");
    chair
        .wait_until(WAIT, |s| s.stats.remote(id).video_frames_decoded >= 15)
        .await
        .expect("the chair sees the camera");

    let api = Recordings::new(&server, "camrec", &chair.welcome().token);
    let started = start_once_a_recorder_is_there(&api).await;
    let recording_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(api.stop(&started.id).await.status(), 200);
    let length = recording_started.elapsed().as_secs_f64();
    let done = api.wait_done(&started.id, Duration::from_secs(60)).await;
    assert!(done.incidents.is_empty(), "{:?}", done.incidents);

    let lobby = done
        .participants
        .iter()
        .find(|p| p.name == "Lobby")
        .unwrap_or_else(|| panic!("the camera has a file: {done:?}"));
    let file = recording_dir(&recordings, "camrec", &done.id).join(format!("{}.mp4", lobby.id));
    let probe = probe_h264_and_opus(&file);
    let (start, end) = (probe.start(), probe.end());
    println!("RECORDED camera start={start:.2}s end={end:.2}s (recorded {length:.2}s)");
    assert!(
        start < 0.5,
        "the camera is recorded from the start: {start}"
    );
    assert!(end > length - 1.0, "to the end: {end} of {length}");
    assert_eq!(
        decode_errors(&file),
        "",
        "the camera's file decodes cleanly"
    );
    let gap = largest_video_gap(&file);
    assert!(gap < 1.0, "no gap in the camera's video: {gap}");
}

const SECRET: &str = "recording-cluster-secret";

fn token(meeting: &str, name: &str, role: Role) -> String {
    sign_token(SECRET, meeting, name, role)
}

/// A cluster that records: a locator, and SFU nodes and recorders that share [`SECRET`] with
/// it, recording into a scratch directory.
struct Cluster {
    locator: Node,
    scratch: Scratch,
}

impl Cluster {
    fn start(prefix: &str) -> Self {
        let scratch = Scratch::new(prefix);
        let db = scratch.path("cdr.sqlite");
        let locator = Node::start_locator(
            Command::new(env!("CARGO_BIN_EXE_kaskade-locator-under-test")),
            &["--secret", SECRET, "--db", &db],
        )
        .expect("locator starts");
        Self { locator, scratch }
    }

    /// An SFU node named `name`, once the locator knows it.
    async fn node(&self, name: &str) -> Node {
        let node = Node::start(
            Command::new(env!("CARGO_BIN_EXE_kaskade-sfu-under-test")),
            &[
                "--secret",
                SECRET,
                "--name",
                name,
                "--locator",
                &self.locator.url(),
            ],
        )
        .expect("node starts");
        self.locator.wait_for_nodes(&[name], WAIT).await;
        node
    }

    /// The recorder: always named `rec-1`, so that a restarted one takes over what the one
    /// before it left.
    fn recorder(&self) -> Node {
        Node::spawn(
            Command::new(recorder_binary(env!(
                "CARGO_BIN_EXE_kaskade-recorder-under-test"
            ))),
            &[
                "--locator",
                &self.locator.url(),
                "--out",
                &self.scratch.path("recordings"),
                "--secret",
                SECRET,
                "--listen",
                "127.0.0.1:0",
                "--name",
                "rec-1",
            ],
        )
        .expect("recorder starts")
    }

    /// A moderator `mod` and a participant `guest` in `meeting`.
    async fn join_mod_and_guest(&self, meeting: &str) -> Vec<Participant> {
        let mut people = Vec::new();
        for (name, role) in [("mod", Role::Moderator), ("guest", Role::Participant)] {
            let mut cfg = media_config(&self.locator, meeting, name);
            cfg.token = Some(token(meeting, name, role));
            people.push(Participant::join(cfg).await.expect("joins"));
        }
        people
    }

    /// The recordings API of `meeting`, as its moderator `mod`.
    fn recordings(&self, meeting: &str) -> Recordings {
        Recordings::new(
            &self.locator,
            meeting,
            &token(meeting, "mod", Role::Moderator),
        )
    }

    /// The files of recording `id` of `meeting`.
    fn dir(&self, meeting: &str, id: &str) -> PathBuf {
        recording_dir(self.scratch.path("recordings"), meeting, id)
    }
}

/// Starts a recording as soon as a recorder has registered (within a report interval).
async fn start_once_a_recorder_is_there(api: &Recordings) -> RecordingInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = api.start().await;
        if response.status() == 201 {
            return response.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no recorder: {:?}",
            response.text().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_cut_by_kill_9_is_recovered_to_within_two_seconds() {
    let cluster = Cluster::start("recording-crash");
    let _node = cluster.node("n1").await;
    let first = cluster.recorder();
    let _people = cluster.join_mod_and_guest("crash").await;
    let api = cluster.recordings("crash");
    let started = start_once_a_recorder_is_there(&api).await;
    let recording_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // CPU per recorded stream (two participants, audio and video each) over four seconds
    let cpu_before = first.cpu_seconds().expect("recorder CPU");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let cpu = first.cpu_seconds().expect("recorder CPU") - cpu_before;
    println!(
        "RECORDER cpu_percent_of_a_core_per_stream={:.2}",
        cpu / 4.0 / 4.0 * 100.0
    );
    let killed_at = recording_started.elapsed().as_secs_f64();
    drop(first); // SIGKILL
    let _second = cluster.recorder();

    let recovered = api.wait_done(&started.id, WAIT).await;
    assert!(
        recovered.incidents.iter().any(|i| i.contains("recovered")),
        "the manifest notes the recovery: {:?}",
        recovered.incidents
    );
    assert_eq!(recovered.participants.len(), 2);
    let mut identities: Vec<_> = recovered
        .participants
        .iter()
        .filter_map(|p| p.identity.as_deref())
        .collect();
    identities.sort();
    assert_eq!(
        identities,
        ["guest@example.com", "mod@example.com"],
        "the manifest names identities"
    );
    let dir = cluster.dir("crash", &started.id);
    for p in &recovered.participants {
        let file = dir.join(format!("{}.mp4", p.id));
        let end = probe(&file).end();
        println!(
            "RECOVERED {} end={end:.2}s killed_at={killed_at:.2}s",
            p.name
        );
        assert!(
            end > killed_at - 2.0 && end <= killed_at + 0.5,
            "{} ends at {end}, killed at {killed_at}",
            p.name
        );
        assert_eq!(decode_errors(&file), "", "{} decodes cleanly", p.name);
    }
}

/// A small tmpfs mounted for one test (needs root, like the namespace tests), unmounted on
/// drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &str, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir])
            .status()
            .expect("mount (needs root)");
        assert!(status.success(), "mounting a tmpfs at {dir}");
        Self(PathBuf::from(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_what_was_written_stays_playable() {
    let scratch = Scratch::new("recording-full");
    let disk = Tmpfs::mount(&scratch.path("tiny"), "320k");
    let server = all_in_one(&scratch, &disk.0.to_string_lossy());
    let chair = join(&server, "full", "chair").await;
    let _guest = join(&server, "full", "guest").await;
    let api = Recordings::new(&server, "full", &chair.welcome().token);
    let started = api.start().await;
    assert_eq!(started.status(), 201);
    let started: RecordingInfo = started.json().await.unwrap();
    // about 60 kB/s for the two of them: 320 kB is full after a few seconds
    tokio::time::sleep(Duration::from_secs(9)).await;
    let stopped = api.stop(&started.id).await;
    assert_eq!(stopped.status(), 200, "stopping still works");
    let stopped: RecordingInfo = stopped.json().await.unwrap();
    println!("FULL_DISK incidents={:?}", stopped.incidents);
    assert!(
        stopped
            .incidents
            .iter()
            .any(|i| i.contains("No space left") || i.contains("space")),
        "the full disk is named: {:?}",
        stopped.incidents
    );
    let dir = recording_dir(&disk.0, "full", &started.id);
    for p in &stopped.participants {
        let file = dir.join(format!("{}.mp4", p.id));
        let end = probe(&file).end();
        println!("FULL_DISK {} kept {end:.2}s", p.name);
        assert!(end > 1.0, "{} keeps what was written: {end}", p.name);
        assert_eq!(decode_errors(&file), "", "{} decodes cleanly", p.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_survives_the_loss_of_the_node_it_records_from() {
    let cluster = Cluster::start("recording-node-loss");
    let first_node = cluster.node("a1").await;
    let _recorder = cluster.recorder();
    let people = cluster.join_mod_and_guest("lossy").await;
    // a second node to fail over to, registered once everyone is on the first
    let _second_node = cluster.node("a2").await;
    let api = cluster.recordings("lossy");
    let started = start_once_a_recorder_is_there(&api).await;
    let recording_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let killed_at = recording_started.elapsed().as_secs_f64();
    drop(first_node); // SIGKILL: participants and recorder fail over to a2
    for p in &people {
        p.wait_until(WAIT, |s| s.reconnects >= 1 && s.recording)
            .await
            .expect("back on the other node, still recorded");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stopped: RecordingInfo = api.stop(&started.id).await.json().await.unwrap();
    println!("NODE_LOSS incidents={:?}", stopped.incidents);
    assert!(
        stopped
            .incidents
            .iter()
            .any(|i| i.contains("lost its node")),
        "the manifest notes the lost node"
    );
    // each person has a file up to the loss and one from their return, with at most ~2 s
    // missing in between
    let dir = cluster.dir("lossy", &started.id);
    for name in ["mod", "guest"] {
        let mut spans: Vec<(f64, f64)> = stopped
            .participants
            .iter()
            .filter(|p| p.name == name)
            .map(|p| {
                let probe = probe(&dir.join(format!("{}.mp4", p.id)));
                (probe.start(), probe.end())
            })
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        println!("NODE_LOSS {name} spans={spans:?} killed_at={killed_at:.2}");
        assert_eq!(spans.len(), 2, "{name}: before and after the loss");
        let missing = spans[1].0 - spans[0].1;
        assert!(
            spans[0].1 > killed_at - 2.0 && missing < 2.5,
            "{name}: {missing:.2} s missing around the loss"
        );
    }
}
