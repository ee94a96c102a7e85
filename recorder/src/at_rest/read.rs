//! Reading: a decrypting [`Read`] + [`Seek`], and a recording's file opened plain or not.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::{
    AtRestError, FINAL, FileCipher, HEADER_LEN, Header, Keyring, Layout, MAGIC, TAG_LEN, WORD_LEN,
};

/// What the reader expects of the end of an encrypted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A finished file: it must end with its final chunk. Chunks are authenticated when read.
    Complete,
    /// A file a crash may have cut: every chunk is authenticated at open, and the file ends
    /// before the first chunk that is torn or fails.
    Interrupted,
}

/// Where one chunk is.
#[derive(Debug, Clone, Copy)]
struct ChunkAt {
    /// Offset of its word in the file.
    offset: u64,
    /// Offset of its first byte in the plaintext.
    plain_start: u64,
    /// Its word (plaintext length and final flag).
    word: u32,
}

impl ChunkAt {
    fn len(&self) -> u64 {
        u64::from(self.word & !FINAL)
    }

    fn sealed_len(&self) -> u64 {
        (WORD_LEN + TAG_LEN) as u64 + self.len()
    }
}

/// How the reader finds chunks.
enum Chunks {
    /// Full chunks but the last ([`Layout::Fixed`], complete): found by arithmetic.
    Fixed { count: u64, last_len: u64 },
    /// Found by walking the file at open.
    Listed(Vec<ChunkAt>),
}

/// Decrypts an encrypted file, with random access. Reading a chunk that does not
/// authenticate is an [`io::ErrorKind::InvalidData`] error carrying [`AtRestError::Tampered`].
pub struct DecryptingReader<R> {
    source: R,
    cipher: FileCipher,
    chunks: Chunks,
    len: u64,
    position: u64,
    /// The index of the chunk whose plaintext the buffer holds.
    cached: Option<u64>,
    buffer: Vec<u8>,
    /// Bytes at the end of an interrupted file that were left out.
    dropped: u64,
}

impl<R: Read + Seek> DecryptingReader<R> {
    /// Opens the encrypted file `source` (positioned anywhere) with the key of `keys` it
    /// names.
    pub fn new(mut source: R, keys: &Keyring, expect: Expect) -> Result<Self, AtRestError> {
        let file_len = source.seek(SeekFrom::End(0))?;
        let mut header = [0; HEADER_LEN];
        source.seek(SeekFrom::Start(0))?;
        source
            .read_exact(&mut header)
            .map_err(|_| AtRestError::Truncated("the header is cut off"))?;
        if header[..MAGIC.len()] != MAGIC {
            return Err(AtRestError::BadHeader("not an encrypted recording"));
        }
        let header = Header::decode(&header)?;
        let key = keys
            .find(header.key_id)
            .ok_or(AtRestError::UnknownKey(header.key_id))?;
        let mut reader = Self {
            source,
            cipher: FileCipher::new(key, header),
            chunks: Chunks::Listed(Vec::new()),
            len: 0,
            position: 0,
            cached: None,
            buffer: Vec::new(),
            dropped: 0,
        };
        match (header.layout, expect) {
            (Layout::Fixed, Expect::Complete) => reader.count_fixed_chunks(file_len)?,
            _ => reader.walk(file_len, expect)?,
        }
        if let Some(index) = reader.chunk_count().checked_sub(1) {
            let last = reader.chunk(index);
            reader.len = last.plain_start + last.len();
            if expect == Expect::Complete {
                reader.load(index, last)?;
            }
        }
        Ok(reader)
    }

    /// The plaintext length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes at the end of an [`Expect::Interrupted`] file that did not authenticate and
    /// were left out (0 for a whole file).
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped
    }

    /// Finds the chunks of a complete fixed-layout file from its length.
    fn count_fixed_chunks(&mut self, file_len: u64) -> Result<(), AtRestError> {
        let body = file_len - HEADER_LEN as u64;
        let full = u64::from(self.cipher.header.chunk_size);
        let stride = full + (WORD_LEN + TAG_LEN) as u64;
        let count = body.div_ceil(stride);
        let last_len = (body + stride - count * stride)
            .checked_sub((WORD_LEN + TAG_LEN) as u64)
            .filter(|_| count > 0)
            .ok_or(AtRestError::Truncated("the last chunk is cut off"))?;
        self.chunks = Chunks::Fixed { count, last_len };
        Ok(())
    }

    /// Finds the chunks by walking them from the first.
    fn walk(&mut self, file_len: u64, expect: Expect) -> Result<(), AtRestError> {
        let mut chunks = Vec::new();
        let mut next = ChunkAt {
            offset: HEADER_LEN as u64,
            plain_start: 0,
            word: 0,
        };
        let ended = loop {
            if next.offset == file_len {
                break false;
            }
            let mut word = [0; WORD_LEN];
            self.source.seek(SeekFrom::Start(next.offset))?;
            if self.source.read_exact(&mut word).is_err() {
                break false;
            }
            next.word = u32::from_be_bytes(word);
            let fits = next.len() <= u64::from(self.cipher.header.chunk_size)
                && next.offset + next.sealed_len() <= file_len;
            if !fits {
                break false;
            }
            if expect == Expect::Interrupted {
                match self.load(chunks.len() as u64, next) {
                    Ok(()) => {}
                    Err(AtRestError::Tampered(_)) => break false,
                    Err(other) => return Err(other),
                }
            }
            chunks.push(next);
            next.offset += next.sealed_len();
            next.plain_start += next.len();
            if next.word & FINAL != 0 {
                break true;
            }
        };
        if expect == Expect::Complete && !(ended && next.offset == file_len) {
            return Err(AtRestError::Truncated(
                "the file does not end with its final chunk",
            ));
        }
        self.dropped = file_len - next.offset;
        self.chunks = Chunks::Listed(chunks);
        Ok(())
    }

    /// Chunk `index`, which exists.
    fn chunk(&self, index: u64) -> ChunkAt {
        match &self.chunks {
            Chunks::Fixed { count, last_len } => {
                let full = u64::from(self.cipher.header.chunk_size);
                let last = index + 1 == *count;
                let len = if last { *last_len } else { full };
                ChunkAt {
                    offset: HEADER_LEN as u64 + index * (full + (WORD_LEN + TAG_LEN) as u64),
                    plain_start: index * full,
                    word: super::chunk_word(len as usize, last),
                }
            }
            Chunks::Listed(chunks) => chunks[index as usize],
        }
    }

    /// The chunk holding plaintext byte `position` (< `len`).
    fn chunk_index_at(&self, position: u64) -> u64 {
        match &self.chunks {
            Chunks::Fixed { .. } => position / u64::from(self.cipher.header.chunk_size),
            Chunks::Listed(chunks) => {
                chunks.partition_point(|c| c.plain_start + c.len() <= position) as u64
            }
        }
    }

    fn chunk_count(&self) -> u64 {
        match &self.chunks {
            Chunks::Fixed { count, .. } => *count,
            Chunks::Listed(chunks) => chunks.len() as u64,
        }
    }

    /// Reads and decrypts `chunk`, number `index`, into the buffer (unless it is there).
    fn load(&mut self, index: u64, chunk: ChunkAt) -> Result<(), AtRestError> {
        if self.cached == Some(index) {
            return Ok(());
        }
        self.cached = None;
        self.buffer.resize(chunk.sealed_len() as usize, 0);
        self.source.seek(SeekFrom::Start(chunk.offset))?;
        self.source
            .read_exact(&mut self.buffer)
            .map_err(|_| AtRestError::Truncated("a chunk is cut off"))?;
        if self.buffer[..WORD_LEN] != chunk.word.to_be_bytes() {
            // a fixed-layout file cut short has a last chunk that is not its final one
            return Err(if chunk.word & FINAL != 0 {
                AtRestError::Truncated("the file does not end with its final chunk")
            } else {
                AtRestError::Tampered(index)
            });
        }
        self.cipher
            .open(index, chunk.word, &mut self.buffer[WORD_LEN..])?;
        self.cached = Some(index);
        Ok(())
    }
}

impl<R: Read + Seek> Read for DecryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.len || out.is_empty() {
            return Ok(0);
        }
        let index = self.chunk_index_at(self.position);
        let chunk = self.chunk(index);
        self.load(index, chunk)?;
        let plaintext = &self.buffer[WORD_LEN..WORD_LEN + chunk.len() as usize];
        let from = &plaintext[(self.position - chunk.plain_start) as usize..];
        let n = from.len().min(out.len());
        out[..n].copy_from_slice(&from[..n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for DecryptingReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.position)
    }
}

/// A recording's file opened for reading: plain, or decrypted on the fly.
pub enum FileReader {
    /// A plain file and its length.
    Plain(File, u64),
    /// An encrypted file.
    Encrypted(Box<DecryptingReader<File>>),
}

/// Opens the file at `path`: an encrypted file (recognized by its header) is decrypted with
/// `keys`, any other file is read as it is.
pub fn open(
    path: &Path,
    keys: Option<&Keyring>,
    expect: Expect,
) -> Result<FileReader, AtRestError> {
    let mut file = File::open(path)?;
    let mut magic = [0; MAGIC.len()];
    let encrypted = file.read_exact(&mut magic).is_ok() && magic == MAGIC;
    if !encrypted {
        file.seek(SeekFrom::Start(0))?;
        let len = file.metadata()?.len();
        return Ok(FileReader::Plain(file, len));
    }
    let keys = keys.ok_or(AtRestError::KeyRequired)?;
    Ok(FileReader::Encrypted(Box::new(DecryptingReader::new(
        file, keys, expect,
    )?)))
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Plain(..) => "plain",
            Self::Encrypted(_) => "encrypted",
        };
        f.debug_struct("FileReader")
            .field("kind", &kind)
            .field("len", &self.len())
            .finish()
    }
}

impl FileReader {
    /// The length of the (plaintext) content.
    pub fn len(&self) -> u64 {
        match self {
            Self::Plain(_, len) => *len,
            Self::Encrypted(reader) => reader.len(),
        }
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes at the end of an interrupted encrypted file that did not authenticate and were
    /// left out.
    pub fn dropped_bytes(&self) -> u64 {
        match self {
            Self::Plain(..) => 0,
            Self::Encrypted(reader) => reader.dropped_bytes(),
        }
    }
}

impl Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(file, _) => file.read(out),
            Self::Encrypted(reader) => reader.read(out),
        }
    }
}

impl Seek for FileReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match self {
            Self::Plain(file, _) => file.seek(to),
            Self::Encrypted(reader) => reader.seek(to),
        }
    }
}
