//! Access tokens (`kaskade_protocol::token`): `TokenKey::verify` of arbitrary strings, as the
//! node's signaling, the locator's join and recordings API and the recorder's playback call it
//! on what clients send; and signed tokens with arbitrary claims, then tampered with.
//!
//! Input: `mode | now (u64) | ...`. Mode bit 0 clear: the rest is a token (UTF-8) verified for
//! meeting `fuzz`: nothing the fuzzer writes may verify. Set: claims from the input (meeting,
//! subject, name, role, expiry, rejoin, a token id and an audience) are signed, must verify as
//! signed (or be refused as expired, or for a token id out of bounds), and after `edits`
//! (position, replacement byte) must either be refused or verify to the very same claims.
#![no_main]

use kaskade_fuzz::ops::Fields;
use kaskade_protocol::token::{Claims, MAX_JTI_LEN, Role, TokenError, TokenKey};
use libfuzzer_sys::fuzz_target;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let key = TokenKey::from_secret(b"fuzz-secret");
    let mut f = Fields::new(data);
    let mode = f.u8();
    let now = f.u64();
    if mode & 1 == 0 {
        let token = text(f.rest());
        assert!(
            key.verify(&token, "fuzz", now).is_err(),
            "a token not made with the key verified"
        );
        return;
    }
    let len = |f: &mut Fields| usize::from(f.u8() % 80);
    let meeting = {
        let n = len(&mut f);
        text(f.bytes(n))
    };
    let sub = {
        let n = len(&mut f);
        text(f.bytes(n))
    };
    let name = {
        let n = len(&mut f);
        text(f.bytes(n))
    };
    let role = match f.u8() % 3 {
        0 => Role::Participant,
        1 => Role::Moderator,
        _ => Role::Recorder,
    };
    let exp = f.u64();
    let flags = f.u8();
    let jti = (flags & 2 != 0).then(|| {
        let n = len(&mut f);
        text(f.bytes(n))
    });
    let aud = (flags & 4 != 0).then(|| {
        let n = len(&mut f);
        text(f.bytes(n))
    });
    let claims = Claims {
        meeting,
        sub,
        name,
        role,
        exp,
        rejoin: flags & 1 != 0,
        jti,
        aud,
        dial: false,
    };
    let token = key.sign(&claims);
    let verdict = key.verify(&token, &claims.meeting, now);
    let jti_ok = claims
        .jti
        .as_ref()
        .is_none_or(|id| (1..=MAX_JTI_LEN).contains(&id.len()));
    if claims.exp <= now {
        assert_eq!(verdict, Err(TokenError::Expired));
    } else if !jti_ok {
        assert_eq!(verdict, Err(TokenError::Malformed));
    } else {
        assert_eq!(verdict.as_ref(), Ok(&claims));
    }
    let mut bytes = token.clone().into_bytes();
    let edits = f.u8() % 4;
    for _ in 0..edits {
        let at = usize::from(f.u16()) % (bytes.len() + 1);
        let replacement = f.u8() & 0x7f; // stays ASCII, so the token stays UTF-8
        if at == bytes.len() {
            bytes.push(replacement);
        } else {
            bytes[at] = replacement;
        }
    }
    let tampered = String::from_utf8(bytes).expect("ASCII");
    if let Ok(got) = key.verify(&tampered, &claims.meeting, now) {
        assert_eq!(
            got, claims,
            "a tampered token verified to other claims: {tampered}"
        );
    }
});
