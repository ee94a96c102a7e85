//! The AES-256-GCM sealing of cascade links (`cascade::cipher::LinkCipher`) and its replay
//! window, as the node opens every 0xCA datagram on its media socket.
//!
//! Input: records `op | len | body`. Op 0: the body is a datagram from the network, opened
//! after `frame::parse_header`: it must be refused (nothing the fuzzer writes is sealed with
//! the key). Op 1: the peer seals the body (kept, not yet delivered). Op 2: the body picks a
//! sealed message (`index | position (u16) | xor | cut (u16)`) and delivers it, tampered with
//! when `xor` is not 0 or `cut` shortens it: a tampered message is refused, an intact one is
//! accepted exactly when a model of the replay window (the highest counter seen, and which of
//! the 1024 before it were accepted) says it is fresh, and then opens to what was sealed.
#![no_main]

use std::collections::HashSet;

use bytes::BytesMut;
use kaskade_fuzz::ops::{Fields, Records};
use kaskade_sfu::cascade::cipher::{Channel, LinkCipher, OpenError};
use kaskade_sfu::cascade::frame::{self, COUNTER_AT, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

const WINDOW: u64 = 1024;
const KEY: [u8; 32] = [0x42; 32];

#[derive(Default)]
struct Model {
    highest: Option<u64>,
    accepted: HashSet<u64>,
}

impl Model {
    fn fresh(&self, counter: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if counter > h => true,
            Some(h) => h - counter < WINDOW && !self.accepted.contains(&counter),
        }
    }

    fn accept(&mut self, counter: u64) {
        self.accepted.insert(counter);
        self.highest = Some(self.highest.map_or(counter, |h| h.max(counter)));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut sealer = LinkCipher::new(&KEY, 2, 1, Channel::Media).expect("a 32-byte key");
    let mut opener = LinkCipher::new(&KEY, 1, 2, Channel::Media).expect("a 32-byte key");
    let mut sealed: Vec<(BytesMut, u64, Vec<u8>)> = Vec::new();
    let mut model = Model::default();
    for (op, body) in Records::new(data) {
        match op % 3 {
            0 => {
                let mut datagram = body.to_vec();
                if let Ok(header) = frame::parse_header(&datagram) {
                    let verdict = opener.open(&mut datagram, HEADER_LEN, header.counter);
                    assert!(
                        verdict.is_err(),
                        "a datagram not sealed with the key opened"
                    );
                }
            }
            1 => {
                if sealed.len() < 4096 {
                    let mut buf = frame::start_datagram(2, body.len());
                    buf.extend_from_slice(body);
                    let counter = sealer.seal(&mut buf, HEADER_LEN, COUNTER_AT);
                    assert_eq!(frame::parse_header(&buf).map(|h| h.counter), Ok(counter));
                    sealed.push((buf, counter, body.to_vec()));
                }
            }
            _ => {
                if sealed.is_empty() {
                    continue;
                }
                let mut f = Fields::new(body);
                let (datagram, counter, plain) = &sealed[usize::from(f.u8()) % sealed.len()];
                let mut datagram = datagram.to_vec();
                let at = usize::from(f.u16()) % datagram.len();
                let xor = f.u8();
                datagram[at] ^= xor;
                let cut = usize::from(f.u16());
                let cut = if cut == 0 || cut >= datagram.len() {
                    datagram.len()
                } else {
                    cut
                };
                let tampered = xor != 0 || cut < datagram.len();
                datagram.truncate(cut);
                let Ok(header) = frame::parse_header(&datagram) else {
                    continue;
                };
                let result = opener.open(&mut datagram, HEADER_LEN, header.counter);
                if tampered {
                    assert!(result.is_err(), "a tampered datagram opened");
                    continue;
                }
                if model.fresh(*counter) {
                    let len = result.expect("a fresh, intact datagram is accepted");
                    assert_eq!(&datagram[HEADER_LEN..HEADER_LEN + len], &plain[..]);
                    model.accept(*counter);
                } else {
                    assert_eq!(result, Err(OpenError::Replayed));
                }
            }
        }
    }
});
