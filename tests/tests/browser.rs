//! Real browsers: headless Chromium participants driven by playwright-core (scripts in
//! tests/browser/) against a real node, each test inside a private network namespace.

use kaskade_e2e::{Netns, Node, node_binary};

fn start_node(ns: &Netns) -> Node {
    Node::start(
        ns.command(&node_binary(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"))),
        &[],
    )
    .expect("node starts")
}

/// Runs one playwright-core script against `node` inside `ns` and asserts it passed; prints
/// its measurement lines.
fn run_script(ns: &Netns, node: &Node, script: &str) {
    let browser_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/browser");
    let output = ns
        .command("node")
        .args(["--test", "--test-reporter=spec", script])
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
        "{script} failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn three_browsers_meet_mute_speak_and_get_removed() {
    let ns = Netns::new("kb").expect("network namespace (needs root)");
    let node = start_node(&ns);
    run_script(&ns, &node, "meeting.test.mjs");
}

#[test]
fn browsers_meet_over_ice_tcp_when_udp_is_blocked() {
    let ns = Netns::new("kt").expect("network namespace (needs root)");
    let node = start_node(&ns);
    let port = node.udp_addr.port().to_string();
    let chain = "{ type filter hook output priority 0 ; }";
    for rule in [
        vec!["add", "table", "inet", "kaskade"],
        vec!["add", "chain", "inet", "kaskade", "out", chain],
        vec![
            "add", "rule", "inet", "kaskade", "out", "udp", "dport", &port, "drop",
        ],
    ] {
        let status = ns.command("nft").args(&rule).status().expect("nft");
        assert!(status.success(), "nft {rule:?}");
    }
    // the script asserts that the selected candidate pair is TCP and that video decodes
    run_script(&ns, &node, "ice_tcp.test.mjs");
}
