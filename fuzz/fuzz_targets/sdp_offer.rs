//! The SDP offer a client sends in its `offer` frame, as the node answers it
//! (`MediaCore::offer` -> `media::peer::WebRtcPeer::answer`: rtc's SDP parser, counting the
//! recvonly m-lines into receive slots, the answer, the negotiated payload types and the
//! audio level extension), for a participant joined a moment before.
//!
//! Input: the SDP text (UTF-8; the signaling frame is JSON text). An answer the node gives
//! must carry what a client needs to connect: ICE credentials, a fingerprint, a UDP candidate
//! (an offer with nothing the node can negotiate is refused).
#![no_main]

use std::cell::RefCell;
use std::time::Instant;

use kaskade_fuzz::node;
use kaskade_loadtest::lean::sdp::Answer;
use kaskade_protocol::signaling::{LeaveReason, Role};
use kaskade_sfu::media::core::{JoinRequest, MediaCore};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static CORE: RefCell<Option<MediaCore>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    CORE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let core = cell.get_or_insert_with(|| node::core(4, 3));
        let now = Instant::now();
        let Ok(admitted) = core.join(
            now,
            JoinRequest {
                meeting: node::MEETING.into(),
                identity: "fuzz".into(),
                name: "Fuzz".into(),
                role: Role::Participant,
                rejoin: false,
                kind: "synthetic".into(),
            },
        ) else {
            panic!("the core refused a join");
        };
        if let Ok(answer) = core.offer(now, admitted.id, sdp.to_owned()) {
            if let Err(e) = Answer::parse(&answer) {
                panic!("the node's answer is unusable ({e}):\n{answer}");
            }
        }
        core.leave(now, admitted.id, LeaveReason::Left);
        while core.poll_output().is_some() {}
        while core.poll_transmit().is_some() {}
        assert_eq!(core.participant_count(), 0);
    });
});
