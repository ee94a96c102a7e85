//! The real `kaskade-loadtest` binary against a real standalone node on loopback (issue 5's CI
//! run, see `kaskade_e2e::loadtest`): 2 rooms x 4 participants for 10 s, once with each kaskade
//! client (`--client lean`, the load generator's default, and `--client webrtc`, the webrtc
//! crate's peer connection). Its JSON report must show everyone joined, no packet lost, every
//! participant receiving (and decoding) from its 3 room-mates, bytes received consistent with
//! bytes sent, latency measured from the stamps, and the server's CPU measured. Then lean
//! clients publish simulcast: with tiles reported 60 px tall each receives the lowest layer,
//! without a report the top one, and nobody sends a layer nobody receives. Performance is
//! never asserted here.

use std::process::Command;

use kaskade_e2e::loadtest::{Expect, check_report, run};
use serde_json::Value;

/// Runs the CI run with `extra` options against a fresh node, checks its report and returns
/// it.
fn ci_run(extra: &[&str]) -> Value {
    let node = kaskade_e2e::start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), &[]);
    let pid = node.pid().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kaskade-loadtest-under-test"));
    command.args(["--sfu", &node.url(), "--server-pid", &pid]);
    command.args(extra);
    let report = run(command);
    let expect = Expect {
        max_loss: 0.0,
        bytes_tolerance: 0.05,
    };
    check_report(&report, expect);
    report
}

#[test]
fn two_rooms_of_four_on_loopback_lose_nothing_and_account_for_every_byte() {
    ci_run(&["--client", "webrtc"]);
}

#[test]
fn lean_clients_on_loopback_lose_nothing_and_account_for_every_byte() {
    ci_run(&["--client", "lean"]);
}

/// The CI run (which decodes) with lean simulcast publishers (`extra` on top): the size of
/// the last picture each receiver decoded of each room-mate. The report's delivery check
/// then also shows that the publishers sent only the layers someone received: a paused layer
/// still sent would count as sent and never received.
fn simulcast_run(extra: &[&str]) -> Vec<Value> {
    let report = ci_run(&[&["--simulcast"], extra].concat());
    let participants = report["participants"].as_array().expect("participants");
    participants
        .iter()
        .flat_map(|p| p["remotes"].as_object().expect("remotes").values())
        .map(|r| r["picture"].clone())
        .collect()
}

#[test]
fn lean_simulcast_publishers_send_each_receiver_the_layer_its_tiles_ask_for() {
    // the CI run's 320x240 goes out as 80x60, 160x120 and 320x240 layers
    let tiny_tiles = simulcast_run(&["--tile-height", "60"]);
    assert!(
        tiny_tiles.iter().all(|p| *p == serde_json::json!([80, 60])),
        "60 px tiles receive the 80x60 layer: {tiny_tiles:?}"
    );
    let unreported = simulcast_run(&[]);
    assert!(
        unreported
            .iter()
            .all(|p| *p == serde_json::json!([320, 240])),
        "tiles of no reported size receive the top layer: {unreported:?}"
    );
}
