//! The format's guarantees: round trips with random access in both layouts, and every kind of
//! damage (a flipped byte, a cut, moved or foreign chunks, the wrong key) is an error.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use super::*;

const KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const OLD_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const FULL: usize = CHUNK_SIZE as usize;

fn keys() -> Keyring {
    Keyring::parse(KEY).unwrap()
}

/// Deterministic content of `len` bytes.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// `data` encrypted with `layout`, flushed after each prefix length in `flushes`.
fn encrypt(data: &[u8], layout: Layout, flushes: &[usize]) -> Vec<u8> {
    let mut writer = EncryptingWriter::new(Vec::new(), &keys(), layout).unwrap();
    let mut at = 0;
    for &flush in flushes.iter().chain([&data.len()]) {
        writer.write_all(&data[at..flush]).unwrap();
        writer.flush().unwrap();
        at = flush;
    }
    writer.finish().unwrap()
}

fn reader(file: &[u8], expect: Expect) -> Result<DecryptingReader<Cursor<&[u8]>>, AtRestError> {
    DecryptingReader::new(Cursor::new(file), &keys(), expect)
}

/// Everything a reader of `file` gives, or the first error.
fn decrypt(file: &[u8], expect: Expect) -> Result<Vec<u8>, String> {
    let mut reader = reader(file, expect).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn assert_random_access(file: &[u8], data: &[u8]) {
    let mut reader = reader(file, Expect::Complete).unwrap();
    assert_eq!(reader.len(), data.len() as u64);
    let mut state = 7u64;
    for _ in 0..200 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let start = (state >> 33) as usize % (data.len() + 1);
        let len = ((state >> 13) as usize % (3 * FULL)).min(data.len() - start);
        reader.seek(SeekFrom::Start(start as u64)).unwrap();
        let mut got = vec![0; len];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(got, &data[start..start + len], "{len} bytes at {start}");
    }
    let mut tail = Vec::new();
    let back = data.len().min(5);
    reader.seek(SeekFrom::End(-(back as i64))).unwrap();
    reader.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, &data[data.len() - back..]);
}

#[test]
fn fixed_files_round_trip_with_random_access() {
    for len in [0, 1, FULL - 1, FULL, FULL + 1, 3 * FULL + 17] {
        let data = content(len);
        let file = encrypt(&data, Layout::Fixed, &[len / 3, len / 2]);
        let chunks = len.div_ceil(FULL).max(1);
        assert_eq!(file.len(), HEADER_LEN + len + chunks * (WORD_LEN + TAG_LEN));
        assert_eq!(decrypt(&file, Expect::Complete).unwrap(), data);
        assert_eq!(decrypt(&file, Expect::Interrupted).unwrap(), data);
        if len > 0 {
            assert_random_access(&file, &data);
        }
    }
}

#[test]
fn streaming_files_seal_a_chunk_at_each_flush() {
    let data = content(5 * FULL / 2);
    let flushes = [10, 10, 1000, FULL + 1000, FULL + 1001, 2 * FULL + 5];
    let file = encrypt(&data, Layout::Streaming, &flushes);
    // 10, 990, a full chunk, 1, the rest to the flush, the rest, and an empty final chunk
    let chunks = 7;
    assert_eq!(
        file.len(),
        HEADER_LEN + data.len() + chunks * (WORD_LEN + TAG_LEN)
    );
    assert_eq!(decrypt(&file, Expect::Complete).unwrap(), data);
    assert_random_access(&file, &data);
}

#[test]
fn every_flipped_byte_is_an_error() {
    for layout in [Layout::Fixed, Layout::Streaming] {
        let data = content(2 * FULL + 100);
        let file = encrypt(&data, layout, &[FULL / 2]);
        let positions = (0..HEADER_LEN + 2 * WORD_LEN).chain((HEADER_LEN..file.len()).step_by(997));
        for position in positions.chain([file.len() - 1]) {
            let mut damaged = file.clone();
            damaged[position] ^= 0x20;
            for expect in [Expect::Complete, Expect::Interrupted] {
                match decrypt(&damaged, expect) {
                    // an interrupted file ends before the damaged chunk, never reads through it
                    Ok(kept) if expect == Expect::Interrupted => {
                        assert!(
                            data.starts_with(&kept),
                            "{layout:?}: a flip at {position} kept other bytes"
                        );
                    }
                    Ok(_) => panic!("{layout:?}: a flip at {position} went unnoticed"),
                    Err(_) => {}
                }
            }
        }
    }
}

#[test]
fn a_cut_file_is_truncated_unless_read_as_interrupted() {
    let data = content(3 * FULL);
    let stride = FULL + WORD_LEN + TAG_LEN;
    let fixed = encrypt(&data, Layout::Fixed, &[]);
    for cut in [
        HEADER_LEN + stride,
        HEADER_LEN + 2 * stride,
        fixed.len() - 1,
        30,
    ] {
        assert!(
            decrypt(&fixed[..cut], Expect::Complete).is_err(),
            "cut at {cut}"
        );
    }
    let streaming = encrypt(&data, Layout::Streaming, &[100, FULL + 100]);
    let first_two = HEADER_LEN + 100 + FULL + 2 * (WORD_LEN + TAG_LEN);
    for cut in [first_two, first_two + 7] {
        assert!(decrypt(&streaming[..cut], Expect::Complete).is_err());
        let reader = reader(&streaming[..cut], Expect::Interrupted).unwrap();
        assert_eq!(reader.len(), FULL as u64 + 100);
        assert_eq!(reader.dropped_bytes(), (cut - first_two) as u64);
        assert_eq!(
            decrypt(&streaming[..cut], Expect::Interrupted).unwrap(),
            &data[..FULL + 100]
        );
    }
    let mut padded = streaming[..first_two].to_vec();
    padded.resize(first_two + 4096, 0);
    assert_eq!(
        decrypt(&padded, Expect::Interrupted).unwrap(),
        &data[..FULL + 100]
    );
}

#[test]
fn chunks_cannot_be_moved_or_swapped_between_files() {
    let data = content(3 * FULL);
    let stride = FULL + WORD_LEN + TAG_LEN;
    let file = encrypt(&data, Layout::Fixed, &[]);
    let chunk = |file: &[u8], n: usize| file[HEADER_LEN + n * stride..][..stride].to_vec();
    let mut reordered = file[..HEADER_LEN].to_vec();
    for n in [1, 0, 2] {
        reordered.extend(chunk(&file, n));
    }
    let error = decrypt(&reordered, Expect::Complete).unwrap_err();
    assert!(error.contains("fails authentication"), "{error}");
    let other = encrypt(&data, Layout::Fixed, &[]);
    let mut mixed = file.clone();
    mixed[HEADER_LEN..HEADER_LEN + stride].copy_from_slice(&chunk(&other, 0));
    assert!(decrypt(&mixed, Expect::Complete).is_err());
    // the same content never encrypts the same way twice
    assert_ne!(file, other);
}

#[test]
fn keys_are_found_by_id() {
    let file = encrypt(&content(1000), Layout::Fixed, &[]);
    let other = Keyring::parse(OLD_KEY).unwrap();
    assert!(matches!(
        DecryptingReader::new(Cursor::new(&file), &other, Expect::Complete),
        Err(AtRestError::UnknownKey(id)) if id == keys().current_id()
    ));
    let rotated = Keyring::parse(&format!("{OLD_KEY}\n{KEY}")).unwrap();
    let mut reader = DecryptingReader::new(Cursor::new(&file), &rotated, Expect::Complete).unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert_eq!(out, content(1000));
}
