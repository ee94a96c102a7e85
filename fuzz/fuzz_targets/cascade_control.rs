//! The cascade link's control messages (`cascade::control`): `open` of arbitrary binary
//! WebSocket frames, as `cluster::links` calls it on everything the peer's `/cascade` socket
//! sends, and the JSON of a `LinkMessage` as an opened frame holds it (sealed, then opened).
//!
//! Input: `mode | ...`. Mode bit 0 clear: the rest is a frame from the network: it must be
//! refused. Set: the rest is parsed as a `LinkMessage`; one that parses must come back
//! unchanged through `seal` and `open`, and through its JSON.
#![no_main]

use kaskade_fuzz::ops::Fields;
use kaskade_sfu::cascade::cipher::{Channel, LinkCipher};
use kaskade_sfu::cascade::control::{self, LinkMessage};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x24; 32];

fuzz_target!(|data: &[u8]| {
    let mut sealer = LinkCipher::new(&KEY, 2, 1, Channel::Control).expect("a 32-byte key");
    let mut opener = LinkCipher::new(&KEY, 1, 2, Channel::Control).expect("a 32-byte key");
    let mut f = Fields::new(data);
    let mode = f.u8();
    let rest = f.rest();
    if mode & 1 == 0 {
        assert!(
            control::open(&mut opener, rest).is_err(),
            "a control frame not sealed with the key opened"
        );
        return;
    }
    let Ok(message) = serde_json::from_slice::<LinkMessage>(rest) else {
        return;
    };
    let json = serde_json::to_vec(&message).expect("a message serializes");
    assert_eq!(
        serde_json::from_slice::<LinkMessage>(&json).ok().as_ref(),
        Some(&message)
    );
    let frame = control::seal(&mut sealer, &message);
    assert_eq!(
        control::open(&mut opener, &frame).ok().as_ref(),
        Some(&message)
    );
    assert!(
        control::open(&mut opener, &frame).is_err(),
        "a replayed frame opened"
    );
});
