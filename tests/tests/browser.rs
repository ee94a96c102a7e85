//! Real browsers: three headless Chromium participants in one meeting, driven by
//! playwright-core (tests/browser/meeting.test.mjs), against a real node, all inside a private
//! network namespace.

use kaskade_e2e::{Netns, Node};

#[test]
fn three_browsers_meet_mute_speak_and_get_removed() {
    let ns = Netns::new("kb").expect("network namespace (needs root)");
    let node = Node::start(
        ns.command(env!("CARGO_BIN_EXE_kaskade-sfu-under-test")),
        &[],
    )
    .expect("node starts");
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/browser");
    let output = ns
        .command("node")
        .args(["--test", "--test-reporter=spec", "meeting.test.mjs"])
        .current_dir(browser_dir)
        .env("KASKADE_URL", node.url())
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stdout
        .lines()
        .filter(|l| l.contains("JOIN_TO_FIRST_FRAME_MS") || l.contains("SRTP_CIPHER"))
    {
        println!("{line}");
    }
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
}
