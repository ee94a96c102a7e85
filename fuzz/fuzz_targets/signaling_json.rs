//! The signaling WebSocket's text frames as `signaling::session` reads them: `session::parse`
//! (a `ClientMessage`, telling unknown types apart from malformed frames), then what a `join`
//! goes through before the core sees it: `valid_meeting`, `display_name`, and the token.
//!
//! Checked: a parsed frame survives a round trip through JSON unchanged; refusals are
//! `bad_request` or `unknown_type`; a meeting name that passes `valid_meeting` has its
//! documented shape; `display_name` always yields 1 to 64 printable characters, trimmed.
#![no_main]

use kaskade_protocol::signaling::{ClientMessage, ErrorCode, display_name, valid_meeting};
use kaskade_protocol::token::TokenKey;
use kaskade_sfu::signaling::session::parse;
use libfuzzer_sys::fuzz_target;

fn check_meeting(meeting: &str) {
    if valid_meeting(meeting) {
        assert!((1..=64).contains(&meeting.len()));
        assert!(
            meeting
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        );
    }
}

fn check_name(name: &str) {
    let shown = display_name(name);
    assert!(!shown.is_empty(), "an empty display name");
    assert!(
        shown.chars().count() <= 64,
        "a display name over 64 characters"
    );
    assert!(
        !shown.chars().any(char::is_control),
        "a control character kept"
    );
    assert_eq!(shown.trim(), shown, "a display name not trimmed: {shown:?}");
}

fuzz_target!(|data: &[u8]| {
    // axum hands the session only valid UTF-8 text frames
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_meeting(text);
    check_name(text);
    match parse(text) {
        Ok(message) => {
            let json = serde_json::to_string(&message).expect("a frame serializes");
            assert_eq!(parse(&json).ok().as_ref(), Some(&message), "{json}");
            if let ClientMessage::Join {
                meeting,
                name,
                token,
                ..
            } = &message
            {
                check_meeting(meeting);
                check_name(name);
                if let Some(token) = token {
                    let key = TokenKey::from_secret(b"fuzz-secret");
                    assert!(
                        key.verify(token, meeting, 0).is_err(),
                        "a forged token verified"
                    );
                }
            }
        }
        Err((code, _)) => assert!(matches!(
            code,
            ErrorCode::BadRequest | ErrorCode::UnknownType
        )),
    }
});
