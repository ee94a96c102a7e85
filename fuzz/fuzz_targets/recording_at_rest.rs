//! Encryption at rest of recordings (`at_rest`): `DecryptingReader` on arbitrary file bytes
//! (the header, the key id, the chunk walk of both layouts, expecting a complete or an
//! interrupted file), and files the recorder's own `EncryptingWriter` wrote, then damaged.
//! Recordings are served from these files with range requests, and recovered from them after
//! a crash.
//!
//! Input: `mode | ...`. Mode bit 0 clear: the rest is a file, opened as complete (bit 1 clear)
//! or interrupted, and read whole and at a few offsets. Set: `layout (bit 1) | repeat | piece |
//! edits | (position u32, xor)* | cut (u32) | plaintext`: the plaintext (repeated) is written in
//! pieces (flushed after each, which seals a chunk in the streaming layout), then `edits` bytes
//! are flipped and the file cut. An intact file must read back exactly; a damaged one may be
//! refused, but never read as other bytes: a complete read is the plaintext, an interrupted
//! one a prefix of it.
#![no_main]

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use kaskade_fuzz::ops::Fields;
use kaskade_recorder::at_rest::{DecryptingReader, EncryptingWriter, Expect, Keyring, Layout};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn read_all(reader: &mut DecryptingReader<Cursor<Vec<u8>>>) -> Option<Vec<u8>> {
    reader.seek(SeekFrom::Start(0)).ok()?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).ok()?;
    Some(out)
}

fn read_at(reader: &mut DecryptingReader<Cursor<Vec<u8>>>, at: u64, n: usize) -> Option<Vec<u8>> {
    reader.seek(SeekFrom::Start(at)).ok()?;
    let mut out = vec![0; n];
    let mut filled = 0;
    while filled < n {
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(_) => return None,
        }
    }
    out.truncate(filled);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::parse(KEY).expect("a key");
    let mut f = Fields::new(data);
    let mode = f.u8();
    let expect = if mode & 2 == 0 {
        Expect::Complete
    } else {
        Expect::Interrupted
    };
    if mode & 1 == 0 {
        let file = f.rest().to_vec();
        if let Ok(mut reader) = DecryptingReader::new(Cursor::new(file), &keys, expect) {
            let len = reader.len();
            let _ = read_all(&mut reader);
            for at in [0, len / 2, len.saturating_sub(1), len, len + 1] {
                let _ = read_at(&mut reader, at, 100);
            }
        }
        return;
    }
    let layout = if mode & 4 == 0 {
        Layout::Fixed
    } else {
        Layout::Streaming
    };
    let repeat = usize::from(f.u8() % 8) + 1;
    let piece = usize::from(f.u16() % 20_000) + 1;
    let edits: Vec<(u32, u8)> = (0..f.u8() % 4).map(|_| (f.u32(), f.u8())).collect();
    let cut = f.u32();
    let unit = f.rest();
    let plaintext: Vec<u8> = std::iter::repeat_n(unit, if unit.is_empty() { 1 } else { repeat })
        .flatten()
        .copied()
        .collect();
    let mut writer = EncryptingWriter::new(Vec::new(), &keys, layout).expect("a writer");
    for chunk in plaintext.chunks(piece) {
        writer.write_all(chunk).expect("writing to memory");
        writer.flush().expect("flushing to memory");
    }
    let mut file = writer.finish().expect("finishing in memory");
    let mut damaged = false;
    for (at, xor) in edits {
        let at = at as usize % file.len();
        file[at] ^= xor;
        damaged |= xor != 0;
    }
    let cut = cut as usize % (file.len() + 1);
    if cut > 0 && cut < file.len() {
        file.truncate(cut);
        damaged = true;
    }
    let opened = DecryptingReader::new(Cursor::new(file), &keys, expect);
    if !damaged {
        let mut reader = opened.expect("an intact file opens");
        assert_eq!(reader.len(), plaintext.len() as u64);
        assert_eq!(reader.dropped_bytes(), 0);
        assert_eq!(read_all(&mut reader).as_deref(), Some(&plaintext[..]));
        let len = plaintext.len();
        for at in [0, len / 3, len / 2, len.saturating_sub(7)] {
            let got = read_at(&mut reader, at as u64, 70_000).expect("an intact file reads");
            assert_eq!(got, &plaintext[at..(at + 70_000).min(len)]);
        }
        return;
    }
    let Ok(mut reader) = opened else {
        return;
    };
    let len = reader.len() as usize;
    match expect {
        Expect::Complete => {
            if let Some(content) = read_all(&mut reader) {
                assert_eq!(content, plaintext, "a damaged file read as other bytes");
            }
        }
        Expect::Interrupted => {
            let content = read_all(&mut reader).expect("an interrupted file's kept chunks read");
            assert_eq!(content.len(), len);
            assert!(
                plaintext.starts_with(&content),
                "an interrupted file read as other bytes"
            );
        }
    }
});
