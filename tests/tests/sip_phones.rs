//! Phones and diallers through the SIP gateway against real SIP peers on loopback: a
//! participant with the dial right calls a room of the locator's directory with the credentials
//! it names; the meeting calls a participant's phone (call-me), which talks and is hung up by
//! them; a phone dials in through the voice menu with the meeting's number and PIN, over UDP
//! and over TLS.

#[allow(dead_code)]
mod sip_common;

use kaskade_client::{
    ClientMessage, DialRequest, ErrorCode, ModerateAction, Participant, ParticipantId,
    ParticipantInfo, SourceKind,
};
use kaskade_e2e::sip_peers::{Sipp, TlsCaller, self_signed};
use kaskade_protocol::token::{Claims, Role, TokenKey};
use kaskade_sfu::transcode::Law;
use sip_common::*;
use std::process::Command;
use std::time::Duration;

/// A token for `name` in `meeting` signed with the all-in-one's `secret`, with the dial right
/// when `dial`.
fn token(secret: &str, meeting: &str, name: &str, dial: bool) -> String {
    let claims = Claims {
        dial,
        ..kaskade_e2e::claims(meeting, name, Role::Participant)
    };
    TokenKey::from_secret(secret.as_bytes()).sign(&claims)
}

/// Runs the all-in-one's `directory` tool on `db`; its stdout.
fn directory_tool(db: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kaskade-under-test"))
        .args(["directory", "--db", db])
        .args(args)
        .output()
        .expect("the directory tool runs");
    assert!(
        output.status.success(),
        "directory {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialler_calls_a_room_of_the_directory_with_the_credentials_it_names() {
    let _serial = SERIAL.lock().await;
    const SECRET: &str = "directory-secret";
    let scratch = kaskade_e2e::Scratch::new("sip-directory");
    let db = scratch.path(DB);
    let room = Sipp::serve("auth_answer_pcmu");
    // the operator's directory: a room that needs the credentials "mcu", one that names
    // credentials no node holds
    directory_tool(
        &db,
        &["set", "oslo", "--name", "Oslo MCU", "--uri", &room.uri()],
    );
    let replaced = directory_tool(
        &db,
        &[
            "set",
            "oslo",
            "--name",
            "Oslo MCU",
            "--uri",
            &room.uri(),
            "--credentials",
            "mcu",
        ],
    );
    assert!(replaced.starts_with("replaced oslo"), "{replaced}");
    directory_tool(
        &db,
        &[
            "set",
            "bergen",
            "--name",
            "Bergen room",
            "--uri",
            "sip:room@192.0.2.1",
            "--credentials",
            "west",
        ],
    );
    let listed = directory_tool(&db, &["list"]);
    assert!(
        listed.contains("\"credentials\": \"mcu\""),
        "the operator sees the references: {listed}"
    );

    // the node holds the credentials by name only: no --sip-password
    let (server, _) = all_in_one(
        &scratch,
        &[
            "--secret",
            SECRET,
            "--sip-credential",
            "mcu=mcu-user:s3cret",
        ],
    );
    let join_as = |name: &str, dial: bool| {
        let mut config = kaskade_e2e::small_media_config(server.http, "dir", name);
        config.locator = Some(server.url());
        config.token = Some(token(SECRET, "dir", name, dial));
        config
    };
    let guest = Participant::join(join_as("guest", false))
        .await
        .expect("a participant without the right joins");
    let dialler = Participant::join(join_as("dialler", true))
        .await
        .expect("a participant with the dial right joins");
    assert!(!guest.welcome().may_dial, "no dialpad without the right");
    assert!(dialler.welcome().may_dial, "the right shows in the welcome");

    // without the right: no directory, no call
    let refused = guest.directory(WAIT).await.unwrap().unwrap_err();
    assert_eq!(refused.0, ErrorCode::Forbidden, "{refused:?}");
    let request = DialRequest {
        entry: Some("oslo".into()),
        ..DialRequest::default()
    };
    let refused = guest
        .dial(request.clone(), WAIT)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.0, ErrorCode::Forbidden, "{refused:?}");

    // the dialler's dialpad lists the rooms by name
    let rooms = dialler
        .directory(WAIT)
        .await
        .unwrap()
        .expect("the directory");
    let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Bergen room", "Oslo MCU"]);
    assert_eq!(rooms[1].uri, room.uri());

    // a room whose credentials this node lacks, and one that is not there, say why
    let bergen = DialRequest {
        entry: Some("bergen".into()),
        ..DialRequest::default()
    };
    let (code, why) = dialler.dial(bergen, WAIT).await.unwrap().unwrap_err();
    assert_eq!(code, ErrorCode::CallFailed, "{why}");
    assert!(why.contains("--sip-credential west="), "{why}");
    let missing = DialRequest {
        entry: Some("tromso".into()),
        ..DialRequest::default()
    };
    let (code, why) = dialler.dial(missing, WAIT).await.unwrap().unwrap_err();
    assert_eq!(code, ErrorCode::NotFound, "{why}");

    // the room: sipp checks the digest made with the credentials the entry names
    let id = dialler
        .dial(request, WAIT)
        .await
        .unwrap()
        .expect("the room is dialled");
    let state = live(&dialler, id, "answered after the challenge").await;
    assert_eq!(state.participants[&id].name, "Oslo MCU");

    // a dialler hangs up SIP calls, and removes nobody else
    let errors = dialler.state().errors.len();
    dialler
        .moderate(ModerateAction::Remove, guest.welcome().you.id)
        .await
        .unwrap();
    let state = dialler
        .wait_until(WAIT, |s| s.errors.len() > errors)
        .await
        .expect("refused");
    assert_eq!(state.errors[errors].0, ErrorCode::Forbidden);
    dialler.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&guest, id).await;
    assert!(
        room.finish(WAIT).is_some_and(|s| s.success()),
        "sipp verified the credentials and got the BYE"
    );
}

/// Sends `duration` of a loud 440 Hz PCMU tone to `to` from `socket`, paced at 20 ms.
async fn talk(socket: &tokio::net::UdpSocket, to: std::net::SocketAddr, duration: Duration) {
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for n in 0..duration.as_millis() / 20 {
        pace.tick().await;
        let mut packet = vec![0x80, 0x00];
        packet.extend_from_slice(&(n as u16).to_be_bytes());
        packet.extend_from_slice(&((n * 160) as u32).to_be_bytes());
        packet.extend_from_slice(&0x5EED_u32.to_be_bytes());
        packet.extend((0..160).map(|i| {
            let t = (n * 160 + i) as f64 / 8_000.0;
            Law::MuLaw.compress((12_000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16)
        }));
        socket.send_to(&packet, to).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meeting_calls_a_participants_phone_that_talks_and_that_they_hang_up() {
    let _serial = SERIAL.lock().await;
    // the phone behind the trunk: sipp answers with PCMU to this test's socket
    let (phone_rtp, port) = rtp_socket().await;
    let phone = Sipp::serve_with("phone_answer_pcmu_to_port", &[("rtp_port", &port)]);
    let trunk = format!("sip:{{number}}@127.0.0.1:{}", phone.port);
    let node = node_with(&["--sip-phone-uri", &trunk]);
    let chair = join(&node, "callme", "chair").await;
    let bob = join(&node, "callme", "bob").await;
    assert!(bob.welcome().call_me, "the node offers call-me");
    assert!(!bob.welcome().may_dial, "bob is no dialler");

    let refused = bob
        .call_me("call me maybe", WAIT)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.0, ErrorCode::BadRequest, "{refused:?}");
    let id = bob
        .call_me("+47 22 00 00 00", WAIT)
        .await
        .unwrap()
        .expect("bob's phone is called");
    let state = live(&chair, id, "the phone answered").await;
    let info = &state.participants[&id];
    assert_eq!(info.name, "bob (phone)");
    assert_eq!(info.source.as_ref().unwrap().kind, SourceKind::Phone);
    let again = bob.call_me("+4722000000", WAIT).await.unwrap().unwrap_err();
    assert_eq!(
        again.0,
        ErrorCode::BadRequest,
        "one phone at a time: {again:?}"
    );

    // the phone hears the meeting from the leg's RTP socket, and talks back to it
    let mut buf = [0u8; 2_048];
    let (_, leg) = tokio::time::timeout(WAIT, phone_rtp.recv_from(&mut buf))
        .await
        .expect("kaskade sends the phone the meeting's sound")
        .unwrap();
    talk(&phone_rtp, leg, Duration::from_secs(3)).await;
    let state = chair
        .wait_until(WAIT, |s| {
            s.speaker == Some(id) && s.stats.remote(id).audio_packets >= 100
        })
        .await
        .expect("the meeting hears the phone and sees it talk");
    assert_eq!(state.stats.remote(id).decode_errors, 0);

    // a moderator mutes it like anyone else; bob hangs his phone up
    chair.moderate(ModerateAction::MuteAudio, id).await.unwrap();
    chair
        .wait_until(WAIT, |s| {
            s.participants.get(&id).is_some_and(|p| p.audio_muted)
        })
        .await
        .expect("the phone is muted");
    bob.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(
        phone.finish(WAIT).is_some_and(|s| s.success()),
        "sipp was offered sound only and got the BYE"
    );
}

/// Presses `keys` on a phone's keypad: RFC 4733 events (payload type 101) from `socket` to
/// `to`, each key three packets of one event, 20 ms apart, then 80 ms of quiet.
async fn press(
    socket: &tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    keys: &str,
    timestamp: &mut u32,
) {
    for key in keys.chars() {
        let code = match key {
            '*' => 10,
            '#' => 11,
            digit => digit.to_digit(10).unwrap() as u8,
        };
        *timestamp = timestamp.wrapping_add(2_000);
        for (n, duration) in [160u16, 320, 480].into_iter().enumerate() {
            let end = if n == 2 { 0x80 } else { 0 };
            let marker = if n == 0 { 0x80 } else { 0 };
            let mut packet = vec![0x80, marker | 101];
            packet.extend_from_slice(&(*timestamp as u16).wrapping_add(n as u16).to_be_bytes());
            packet.extend_from_slice(&timestamp.to_be_bytes());
            packet.extend_from_slice(&0x0000_7E1Eu32.to_be_bytes());
            packet.extend_from_slice(&[code, end | 10]);
            packet.extend_from_slice(&duration.to_be_bytes());
            socket.send_to(&packet, to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
}

/// Where kaskade's first packet to a phone's socket came from (the leg's RTP socket), its
/// SSRC, and how loud the PCMU `socket` then hears for `duration` is at most.
async fn listen(
    socket: &tokio::net::UdpSocket,
    duration: Duration,
) -> (std::net::SocketAddr, u32, f64) {
    let mut buf = [0u8; 2_048];
    let (n, from) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("kaskade sends the phone sound")
        .unwrap();
    assert!(n >= 12);
    let ssrc = u32::from_be_bytes(buf[8..12].try_into().unwrap());
    let loudest = far_end_hears(socket, duration)
        .await
        .iter()
        .filter(|(pt, _)| *pt == 0)
        .map(|(_, p)| pcmu_rms(p))
        .fold(0.0, f64::max);
    (from, ssrc, loudest)
}

/// The chair of `meeting` on the all-in-one `server`, having set the meeting's PIN to `pin`, and
/// the meeting's number as the chair is shown it (with that PIN).
async fn chair_with_pin(
    server: &kaskade_e2e::Node,
    meeting: &str,
    pin: &str,
) -> (Participant, String) {
    let mut config = kaskade_e2e::small_media_config(server.http, meeting, "chair");
    config.locator = Some(server.url());
    let chair = Participant::join(config).await.expect("the chair joins");
    chair
        .send(&ClientMessage::SetPin {
            pin: Some(pin.into()),
        })
        .await
        .unwrap();
    let state = chair
        .wait_until(WAIT, |s| s.dial_in.is_some())
        .await
        .expect("the moderator sees the meeting's dial-in");
    let (number, shown_pin) = state.dial_in.clone().unwrap();
    assert_eq!(shown_pin.as_deref(), Some(pin));
    (chair, number)
}

/// The phone that joins the meeting `chair` sees: its id and what the chair is told of it.
async fn phone_joined(chair: &Participant) -> (ParticipantId, ParticipantInfo) {
    let state = chair
        .wait_until(WAIT, |s| {
            s.participants.values().any(|p| {
                p.source
                    .as_ref()
                    .is_some_and(|s| s.kind == SourceKind::Phone)
            })
        })
        .await
        .expect("the phone joins the meeting");
    let (id, info) = state
        .participants
        .iter()
        .find(|(_, p)| p.source.is_some())
        .unwrap();
    (*id, info.clone())
}

/// Whether the meeting `chair` sees has no source participant (no phone got in).
fn no_phone_joined(chair: &Participant) -> bool {
    chair
        .state()
        .participants
        .values()
        .all(|p| p.source.is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_dials_in_with_the_meetings_number_and_pin_after_a_wrong_pin_and_a_guesser_is_locked_out()
 {
    let _serial = SERIAL.lock().await;
    let scratch = kaskade_e2e::Scratch::new("sip-dial-in");
    let (server, sip) = all_in_one(&scratch, &["--sip-dial-in-number", "+47 21 00 00 00"]);
    let (chair, number) = chair_with_pin(&server, "dialin", "2468").await;

    // the phone: the welcome, the number, a wrong PIN, the right one
    let (phone_rtp, port) = rtp_socket().await;
    let phone = Sipp::call("dial_in_pcmu_from_port", &sip, &[("rtp_port", &port)]);
    let (leg, ssrc, welcome) = listen(&phone_rtp, Duration::from_secs(2)).await;
    assert!(welcome > 1_000.0, "the welcome is heard: rms {welcome}");
    let mut timestamp = 0;
    press(&phone_rtp, leg, &format!("{number}#"), &mut timestamp).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    press(&phone_rtp, leg, "1111#", &mut timestamp).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(no_phone_joined(&chair), "a wrong PIN joins nobody");
    press(&phone_rtp, leg, "2468#", &mut timestamp).await;
    let (id, info) = phone_joined(&chair).await;
    assert_eq!(info.name, "Phone …1234");
    // the phone hears the meeting in the stream the menu spoke in
    let (from, joined_ssrc, _) = listen(&phone_rtp, Duration::from_millis(200)).await;
    assert_eq!(
        (from, joined_ssrc),
        (leg, ssrc),
        "one stream from menu to meeting"
    );
    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(
        phone.finish(WAIT).is_some_and(|s| s.success()),
        "sipp dialled in, was answered and got the BYE"
    );

    // two wrong PINs: goodbye, and kaskade hangs up
    let (phone_rtp, port) = rtp_socket().await;
    let phone = Sipp::call("dial_in_pcmu_from_port", &sip, &[("rtp_port", &port)]);
    let (leg, _, _) = listen(&phone_rtp, Duration::from_millis(100)).await;
    press(&phone_rtp, leg, &format!("{number}#"), &mut timestamp).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    press(&phone_rtp, leg, "1111#", &mut timestamp).await;
    press(&phone_rtp, leg, "2222#", &mut timestamp).await;
    assert!(
        phone.finish(WAIT).is_some_and(|s| s.success()),
        "kaskade said goodbye and hung up"
    );
    assert!(no_phone_joined(&chair), "nobody joined");

    // three unknown numbers make six failures from this phone: goodbye, and its next call is
    // turned away before it is answered
    let (phone_rtp, port) = rtp_socket().await;
    let phone = Sipp::call("dial_in_pcmu_from_port", &sip, &[("rtp_port", &port)]);
    let (leg, _, _) = listen(&phone_rtp, Duration::from_millis(100)).await;
    for _ in 0..3 {
        press(&phone_rtp, leg, "1#", &mut timestamp).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        phone.finish(WAIT).is_some_and(|s| s.success()),
        "kaskade said goodbye after three unknown numbers"
    );
    let refused = Sipp::call("dial_in_refused", &sip, &[]);
    assert!(
        refused.finish(WAIT).is_some_and(|s| s.success()),
        "a phone with six failed attempts is refused with 403"
    );
}

/// A phone dials in over SIP over TLS: it checks the node's certificate, is answered by the
/// voice menu, gets in with the meeting's number and PIN, and the BYE comes back over the same
/// TLS connection when a moderator removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_dials_in_over_tls() {
    let _serial = SERIAL.lock().await;
    let scratch = kaskade_e2e::Scratch::new("sip-dial-in-tls");
    let (certificate, key) = self_signed(&scratch, "kaskade");
    let tls = format!("127.0.0.1:{}", kaskade_e2e::free_port());
    let (server, _) = all_in_one(
        &scratch,
        &[
            "--sip-tls-listen",
            &tls,
            "--sip-tls-cert",
            &certificate,
            "--sip-tls-key",
            &key,
        ],
    );
    let (chair, number) = chair_with_pin(&server, "dialin-tls", "1357").await;

    let (phone_rtp, port) = rtp_socket().await;
    let mut phone = TlsCaller::call(
        tls.parse().unwrap(),
        &certificate,
        "kaskade",
        port.parse().unwrap(),
    )
    .await
    .expect("the voice menu answers over TLS");
    let (leg, _, welcome) = listen(&phone_rtp, Duration::from_secs(2)).await;
    assert!(welcome > 1_000.0, "the welcome is heard: rms {welcome}");
    let mut timestamp = 0;
    press(&phone_rtp, leg, &format!("{number}#"), &mut timestamp).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    press(&phone_rtp, leg, "1357#", &mut timestamp).await;
    let (id, _) = phone_joined(&chair).await;
    chair.moderate(ModerateAction::Remove, id).await.unwrap();
    wait_gone(&chair, id).await;
    assert!(phone.hung_up(WAIT).await, "the BYE came over TLS");
}
