//! The real `kaskade-loadtest` binary against a real standalone node on loopback (issue 5's CI
//! run, see `kaskade_e2e::loadtest`): 2 rooms x 4 participants for 10 s. Its JSON report must
//! show everyone joined, no packet lost, every participant receiving (and decoding) from its
//! 3 room-mates, bytes received consistent with bytes sent, latency measured from the stamps,
//! and the server's CPU measured. Performance is never asserted here.

use std::process::Command;

use kaskade_e2e::loadtest::{Expect, check_report, run};

#[test]
fn two_rooms_of_four_on_loopback_lose_nothing_and_account_for_every_byte() {
    let node = kaskade_e2e::start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), &[]);
    let pid = node.pid().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kaskade-loadtest-under-test"));
    command.args(["--sfu", &node.url(), "--server-pid", &pid]);
    let report = run(command);
    let expect = Expect {
        max_loss: 0.0,
        bytes_tolerance: 0.05,
    };
    check_report(&report, expect);
}
