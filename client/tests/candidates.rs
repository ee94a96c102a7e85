//! The answer's candidates are pointed at a lossy relay when a participant asks for one.

use kaskade_client::rewrite_candidates;

#[test]
fn answer_candidates_are_rewritten_to_the_relay() {
    let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
               a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n\
               a=candidate:2 1 tcp 1671430143 10.0.0.5 40000 typ host tcptype passive\r\n\
               a=end-of-candidates\r\n";
    let out = rewrite_candidates(sdp, "127.0.0.1:5555".parse().unwrap());
    assert!(
        out.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 5555 typ host\r\n"),
        "{out}"
    );
    assert!(!out.contains("tcp"), "{out}");
    assert!(out.contains("a=end-of-candidates\r\n"));
}
