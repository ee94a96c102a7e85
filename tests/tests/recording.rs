//! Recording a meeting of real synthetic participants through the all-in-one default (an
//! embedded locator, node and recorder), then checking the files with the real ffprobe and
//! ffmpeg, and the playback surface.

use kaskade_e2e::{Node, Scratch, recorder_binary};
use kaskade_loadtest::{JoinConfig, Participant};
use kaskade_protocol::recording::{RecordingInfo, RecordingState};
use kaskade_protocol::token::{Claims, Role, TokenKey, unix_now};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn all_in_one(scratch: &Scratch) -> Node {
    let db = scratch.path("cdr.sqlite");
    let recordings = scratch.path("recordings");
    Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-locator-under-test")),
        &["--db", &db, "--recordings", &recordings],
    )
    .expect("all-in-one starts")
}

async fn join(server: &Node, meeting: &str, name: &str) -> Participant {
    let mut cfg = JoinConfig::new(server.http, meeting, name);
    cfg.locator = Some(server.url());
    cfg.width = 320;
    cfg.height = 240;
    cfg.fps = 15;
    cfg.video_bitrate_bps = 200_000;
    Participant::join(cfg)
        .await
        .unwrap_or_else(|e| panic!("{name} joins: {e}"))
}

/// ffprobe's JSON view of a file's streams and format.
fn probe(file: &Path) -> Value {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(file)
        .output()
        .expect("ffprobe is installed");
    assert!(
        output.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe JSON")
}

/// The longest time between two consecutive video frames of a file, in seconds.
fn largest_video_gap(file: &Path) -> f64 {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe is installed");
    let mut times: Vec<f64> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// `ffmpeg -v error -i FILE -f null -` prints nothing for a clean file.
fn decode_errors(file: &Path) -> String {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_records_a_meeting_into_playable_files() {
    let scratch = Scratch::new("recording");
    let server = all_in_one(&scratch);
    let http = reqwest::Client::new();
    let api = format!("{}/api/meetings/rec/recordings", server.url());

    let chair = join(&server, "rec", "chair").await;
    let guest = join(&server, "rec", "guest").await;
    let moderator_token = chair.welcome().token;
    let guest_token = guest.welcome().token;

    // only a moderator may start
    let refused = http
        .post(&api)
        .bearer_auth(&guest_token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let anonymous = http.post(&api).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let started = http
        .post(&api)
        .bearer_auth(&moderator_token)
        .send()
        .await
        .unwrap();
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    let late = join(&server, "rec", "late").await;
    let late_joined = recording_started.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    guest.mute(None, Some(false)).await.expect("unmute");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let unknown = http
        .delete(format!("{api}/no-such-recording"))
        .bearer_auth(&moderator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let stopped = http
        .delete(format!("{api}/{}", started.id))
        .bearer_auth(&moderator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    let stopped: RecordingInfo = stopped.json().await.unwrap();
    let length = recording_started.elapsed();
    assert_ne!(stopped.state, RecordingState::Recording);
    // the composed video follows the per-participant files
    let deadline = Instant::now() + Duration::from_secs(60);
    let stopped = loop {
        let list: Vec<RecordingInfo> = http
            .get(&api)
            .bearer_auth(&moderator_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(done) = list.into_iter().find(|r| r.state == RecordingState::Done) {
            break done;
        }
        assert!(Instant::now() < deadline, "the recording never finished");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(stopped.incidents.is_empty(), "{:?}", stopped.incidents);
    for p in [&chair, &guest, &late] {
        p.wait_until(WAIT, |s| !s.recording)
            .await
            .expect("the indicator goes away");
    }

    // three participants, three playable files, each as long as its participant was there
    assert_eq!(stopped.participants.len(), 3, "{stopped:?}");
    let dir = PathBuf::from(scratch.path("recordings"))
        .join("rec")
        .join(&stopped.id);
    for p in &stopped.participants {
        let file = dir.join(format!("{}.mp4", p.id));
        let probe = probe(&file);
        let codecs: Vec<&str> = probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["codec_name"].as_str())
            .collect();
        assert!(
            codecs.contains(&"h264") && codecs.contains(&"opus"),
            "{codecs:?}"
        );
        // every file is on the recording's timeline: it ends when the recording stopped, and a
        // late joiner's media starts at the moment they joined
        let seconds = |v: &Value| v.as_str().and_then(|t| t.parse::<f64>().ok());
        let end = seconds(&probe["format"]["duration"]).expect("a duration");
        let start = probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| seconds(&s["start_time"]))
            .fold(f64::MAX, f64::min);
        let expected_start = if p.name == "late" {
            late_joined.as_secs_f64()
        } else {
            0.0
        };
        let expected_end = length.as_secs_f64();
        println!(
            "RECORDED {} start={start:.2}s (~{expected_start:.2}) end={end:.2}s (~{expected_end:.2})",
            p.name
        );
        assert!((end - expected_end).abs() < 0.5, "{} ends at {end}", p.name);
        assert!(
            (start - expected_start).abs() < 0.5,
            "{} starts at {start}",
            p.name
        );
        assert_eq!(decode_errors(&file), "", "{} decodes cleanly", p.name);
        let gap = largest_video_gap(&file);
        println!("RECORDED {} largest video gap {gap:.2}s", p.name);
        if p.name == "guest" {
            assert!((4.0..6.0).contains(&gap), "the video mute is a gap: {gap}");
        } else {
            assert!(gap < 1.0, "{}: no gap but the mute's: {gap}", p.name);
        }
    }

    // the composed meeting: one video and the mixed audio, as long as the recording
    assert!(stopped.composed.is_some(), "a composed video: {stopped:?}");
    let composed = dir.join("composed.mp4");
    let probe = probe(&composed);
    let streams: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["codec_name"].as_str())
        .collect();
    assert_eq!(streams.len(), 2, "{streams:?}");
    assert!(
        streams.contains(&"h264") && streams.contains(&"opus"),
        "{streams:?}"
    );
    let end: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    println!("COMPOSED end={end:.2}s (~{:.2})", length.as_secs_f64());
    assert!(
        (end - length.as_secs_f64()).abs() < 0.5,
        "composed ends at {end}"
    );
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

const SECRET: &str = "recording-cluster-secret";

fn token(meeting: &str, name: &str, role: Role) -> String {
    TokenKey::from_secret(SECRET.as_bytes()).sign(&Claims {
        meeting: meeting.into(),
        sub: format!("{name}@example.com"),
        name: name.into(),
        role,
        exp: unix_now() + 600,
        rejoin: false,
    })
}

fn recorder(locator: &Node, out: &str) -> Node {
    Node::spawn(
        Command::new(recorder_binary(env!(
            "CARGO_BIN_EXE_kaskade-recorder-under-test"
        ))),
        &[
            "--locator",
            &locator.url(),
            "--out",
            out,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_cut_by_kill_9_is_recovered_to_within_two_seconds() {
    let scratch = Scratch::new("recording-crash");
    let db = scratch.path("cdr.sqlite");
    let locator = Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-locator-under-test")),
        &["--cluster", "--secret", SECRET, "--db", &db],
    )
    .expect("locator starts");
    let _node = Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-sfu-under-test")),
        &[
            "--secret",
            SECRET,
            "--name",
            "n1",
            "--locator",
            &locator.url(),
        ],
    )
    .expect("node starts");
    let out = scratch.path("recordings");
    let first = recorder(&locator, &out);

    let mut people = Vec::new();
    for (name, role) in [("mod", Role::Moderator), ("guest", Role::Participant)] {
        let mut cfg = JoinConfig::new(locator.http, "crash", name);
        cfg.locator = Some(locator.url());
        cfg.token = Some(token("crash", name, role));
        cfg.width = 320;
        cfg.height = 240;
        cfg.fps = 15;
        cfg.video_bitrate_bps = 200_000;
        people.push(Participant::join(cfg).await.expect("joins"));
    }
    let http = reqwest::Client::new();
    let api = format!("{}/api/meetings/crash/recordings", locator.url());
    let moderator = token("crash", "mod", Role::Moderator);
    // the recorder registers within a report interval
    let deadline = Instant::now() + WAIT;
    let started: RecordingInfo = loop {
        let response = http
            .post(&api)
            .bearer_auth(&moderator)
            .send()
            .await
            .unwrap();
        if response.status() == 201 {
            break response.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no recorder: {:?}",
            response.text().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
    let _second = recorder(&locator, &out);

    let dir = PathBuf::from(&out).join("crash").join(&started.id);
    let deadline = Instant::now() + WAIT;
    let recovered: RecordingInfo = loop {
        let list: Vec<RecordingInfo> = http
            .get(&api)
            .bearer_auth(&moderator)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if let Some(r) = list
            .into_iter()
            .find(|r| r.id == started.id && r.state == RecordingState::Done)
        {
            break r;
        }
        assert!(Instant::now() < deadline, "the recording was not recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
    for p in &recovered.participants {
        let file = dir.join(format!("{}.mp4", p.id));
        let probe = probe(&file);
        let end: f64 = probe["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
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
    let db = scratch.path("cdr.sqlite");
    let recordings = disk.0.to_string_lossy().into_owned();
    let server = Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-locator-under-test")),
        &["--db", &db, "--recordings", &recordings],
    )
    .expect("all-in-one starts");
    let chair = join(&server, "full", "chair").await;
    let _guest = join(&server, "full", "guest").await;
    let http = reqwest::Client::new();
    let api = format!("{}/api/meetings/full/recordings", server.url());
    let token = chair.welcome().token;
    let started = http.post(&api).bearer_auth(&token).send().await.unwrap();
    assert_eq!(started.status(), 201);
    let started: RecordingInfo = started.json().await.unwrap();
    // about 60 kB/s for the two of them: 320 kB is full after a few seconds
    tokio::time::sleep(Duration::from_secs(9)).await;
    let stopped = http
        .delete(format!("{api}/{}", started.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
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
    let dir = disk.0.join("full").join(&started.id);
    for p in &stopped.participants {
        let file = dir.join(format!("{}.mp4", p.id));
        let probe = probe(&file);
        let end: f64 = probe["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        println!("FULL_DISK {} kept {end:.2}s", p.name);
        assert!(end > 1.0, "{} keeps what was written: {end}", p.name);
        assert_eq!(decode_errors(&file), "", "{} decodes cleanly", p.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_survives_the_loss_of_the_node_it_records_from() {
    let scratch = Scratch::new("recording-node-loss");
    let db = scratch.path("cdr.sqlite");
    let locator = Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-locator-under-test")),
        &["--cluster", "--secret", SECRET, "--db", &db],
    )
    .expect("locator starts");
    let sfu = |name: &str| {
        Node::start(
            Command::new(env!("CARGO_BIN_EXE_kaskade-sfu-under-test")),
            &[
                "--secret",
                SECRET,
                "--name",
                name,
                "--locator",
                &locator.url(),
            ],
        )
        .expect("node starts")
    };
    let first_node = sfu("a1");
    let out = scratch.path("recordings");
    let _recorder = recorder(&locator, &out);
    let mut people = Vec::new();
    for (name, role) in [("mod", Role::Moderator), ("guest", Role::Participant)] {
        let mut cfg = JoinConfig::new(locator.http, "lossy", name);
        cfg.locator = Some(locator.url());
        cfg.token = Some(token("lossy", name, role));
        cfg.width = 320;
        cfg.height = 240;
        cfg.fps = 15;
        cfg.video_bitrate_bps = 200_000;
        people.push(Participant::join(cfg).await.expect("joins"));
    }
    // a second node to fail over to, registered once everyone is on the first
    let _second_node = sfu("a2");
    let http = reqwest::Client::new();
    let api = format!("{}/api/meetings/lossy/recordings", locator.url());
    let moderator = token("lossy", "mod", Role::Moderator);
    let deadline = Instant::now() + WAIT;
    let started: RecordingInfo = loop {
        let response = http
            .post(&api)
            .bearer_auth(&moderator)
            .send()
            .await
            .unwrap();
        if response.status() == 201 {
            break response.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no recorder: {:?}",
            response.text().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
    let stopped: RecordingInfo = http
        .delete(format!("{api}/{}", started.id))
        .bearer_auth(&moderator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let dir = PathBuf::from(&out).join("lossy").join(&started.id);
    for name in ["mod", "guest"] {
        let mut spans: Vec<(f64, f64)> = stopped
            .participants
            .iter()
            .filter(|p| p.name == name)
            .map(|p| {
                let probe = probe(&dir.join(format!("{}.mp4", p.id)));
                let seconds = |v: &Value| v.as_str().and_then(|t| t.parse::<f64>().ok());
                let end = seconds(&probe["format"]["duration"]).unwrap();
                let start = probe["streams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|s| seconds(&s["start_time"]))
                    .fold(f64::MAX, f64::min);
                (start, end)
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
