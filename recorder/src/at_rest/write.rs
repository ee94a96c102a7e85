//! Writing: an encrypting [`Write`], and the file a recording is written to (plain or not).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};

use super::{CHUNK_SIZE, FileCipher, Header, Keyring, Layout, TAG_LEN, WORD_LEN, chunk_word};

/// Encrypts what is written to it into chunks (see the [module](super) documentation).
///
/// Bytes are buffered up to a chunk; [`finish`](Self::finish) seals the last chunk, which
/// marks the file complete. With [`Layout::Streaming`], [`flush`](Write::flush) seals the
/// chunk so far, so everything written before it can then be synced; with [`Layout::Fixed`],
/// `flush` only reaches the whole chunks and the rest waits for `finish`. After a failed
/// write the writer refuses further writes, so the file stays readable up to its last whole
/// chunk.
pub struct EncryptingWriter<W: Write> {
    out: W,
    cipher: FileCipher,
    /// The open chunk: room for its word, then its plaintext (then its tag while sealing).
    chunk: Vec<u8>,
    index: u64,
    failed: bool,
}

impl<W: Write> EncryptingWriter<W> {
    /// Starts an encrypted file on `out` with the current key of `keys`: writes its header.
    pub fn new(mut out: W, keys: &Keyring, layout: Layout) -> io::Result<Self> {
        let mut salt = [0; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| io::Error::other("no randomness for an encrypted file"))?;
        let key = keys.current();
        let cipher = FileCipher::new(
            key,
            Header {
                layout,
                chunk_size: CHUNK_SIZE,
                key_id: key.id(),
                salt,
            },
        );
        out.write_all(&cipher.header_bytes)?;
        let mut chunk = Vec::with_capacity(WORD_LEN + CHUNK_SIZE as usize + TAG_LEN);
        chunk.resize(WORD_LEN, 0);
        Ok(Self {
            out,
            cipher,
            chunk,
            index: 0,
            failed: false,
        })
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Seals the last chunk (marked final), flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn buffered(&self) -> usize {
        self.chunk.len() - WORD_LEN
    }

    /// Encrypts the open chunk and writes it.
    fn seal(&mut self, last: bool) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier write to this encrypted file failed",
            ));
        }
        // until the chunk is out whole, the file ends at the previous chunk
        self.failed = true;
        let word = chunk_word(self.buffered(), last);
        let tag = self
            .cipher
            .seal(self.index, word, &mut self.chunk[WORD_LEN..])?;
        self.chunk[..WORD_LEN].copy_from_slice(&word.to_be_bytes());
        self.chunk.extend_from_slice(tag.as_ref());
        self.out.write_all(&self.chunk)?;
        self.chunk.truncate(WORD_LEN);
        self.index += 1;
        self.failed = false;
        Ok(())
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // a full chunk is sealed only once more bytes come, so `finish` never seals an empty
        // final chunk after full ones
        if self.buffered() == self.cipher.header.chunk_size as usize {
            self.seal(false)?;
        }
        let room = self.cipher.header.chunk_size as usize - self.buffered();
        let taken = data.len().min(room);
        self.chunk.extend_from_slice(&data[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.cipher.header.layout == Layout::Streaming && self.buffered() > 0 {
            self.seal(false)?;
        }
        self.out.flush()
    }
}

/// The file a recording is written to: plain, or encrypted when a key is configured.
pub enum FileWriter {
    /// A plain file.
    Plain(File),
    /// An encrypted file.
    Encrypted(Box<EncryptingWriter<File>>),
}

/// Creates (or truncates) the file at `path`: encrypted with `layout` when `keys` is given.
pub fn create(path: &Path, keys: Option<&Keyring>, layout: Layout) -> io::Result<FileWriter> {
    let file = File::create(path)?;
    Ok(match keys {
        None => FileWriter::Plain(file),
        Some(keys) => FileWriter::Encrypted(Box::new(EncryptingWriter::new(file, keys, layout)?)),
    })
}

impl FileWriter {
    /// Makes what was flushed durable (`File::sync_data`). With [`Layout::Streaming`], a
    /// flush followed by this keeps everything written so far across a crash.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file().sync_data()
    }

    /// Ends the file (an encrypted one with its final chunk) and syncs it to disk.
    pub fn finish(self) -> io::Result<()> {
        let file = match self {
            Self::Plain(mut file) => {
                file.flush()?;
                file
            }
            Self::Encrypted(writer) => writer.finish()?,
        };
        file.sync_all()
    }

    /// Cuts a plain file back to its first `len` bytes (a failed write's torn tail: this frees
    /// space and needs none); returns false for an encrypted file, whose torn last chunk
    /// readers drop on their own.
    pub fn truncate_plain(&self, len: u64) -> io::Result<bool> {
        match self {
            Self::Plain(file) => file.set_len(len).map(|()| true),
            Self::Encrypted(_) => Ok(false),
        }
    }

    fn file(&self) -> &File {
        match self {
            Self::Plain(file) => file,
            Self::Encrypted(writer) => writer.get_ref(),
        }
    }
}

impl Write for FileWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(file) => file.write(data),
            Self::Encrypted(writer) => writer.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(file) => file.flush(),
            Self::Encrypted(writer) => writer.flush(),
        }
    }
}
