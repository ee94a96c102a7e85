//! The real `kaskade-loadtest` binary against a real standalone node on loopback (issue 5's CI
//! run, see `kaskade_e2e::loadtest`): 2 rooms x 4 participants for 10 s, once with each kaskade
//! client (`--client lean`, the load generator's default, and `--client webrtc`, the webrtc
//! crate's peer connection). Its JSON report must show everyone joined, no packet lost, every
//! participant receiving (and decoding) from its 3 room-mates, bytes received consistent with
//! bytes sent, latency measured from the stamps, and the server's CPU measured. Performance is
//! never asserted here.

use std::process::Command;

use kaskade_e2e::loadtest::{Expect, check_report, run};

/// Runs the CI run with `client` against a fresh node and checks its report.
fn ci_run_with(client: &str) {
    let node = kaskade_e2e::start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), &[]);
    let pid = node.pid().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kaskade-loadtest-under-test"));
    command.args([
        "--sfu",
        &node.url(),
        "--server-pid",
        &pid,
        "--client",
        client,
    ]);
    let report = run(command);
    let expect = Expect {
        max_loss: 0.0,
        bytes_tolerance: 0.05,
    };
    check_report(&report, expect);
}

#[test]
fn two_rooms_of_four_on_loopback_lose_nothing_and_account_for_every_byte() {
    ci_run_with("webrtc");
}

#[test]
fn lean_clients_on_loopback_lose_nothing_and_account_for_every_byte() {
    ci_run_with("lean");
}
