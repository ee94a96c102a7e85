//! The byte layout shared by the fuzz targets that take a sequence of operations, and by the
//! seed generator that writes such sequences.
//!
//! An input is a list of records, each `op (u8) | length (u16 BE) | body`; a record cut short by
//! the end of the input takes what is left as its body. Every byte string is a valid input:
//! decoding never fails, it only runs out.

/// Reads records off a fuzz input.
pub struct Records<'a> {
    data: &'a [u8],
}

impl<'a> Records<'a> {
    /// The records of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&op, rest) = self.data.split_first()?;
        let (len, rest) = match rest {
            [hi, lo, rest @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (body, rest) = rest.split_at(len.min(rest.len()));
        self.data = rest;
        Some((op, body))
    }
}

/// Appends one record to `out` (a body longer than 65535 bytes is cut).
pub fn record(out: &mut Vec<u8>, op: u8, body: &[u8]) {
    let body = &body[..body.len().min(usize::from(u16::MAX))];
    out.push(op);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Reads fixed-size fields off a byte string, with zeros once it runs out.
pub struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Fields of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next eight bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) << 32 | u64::from(self.u32())
    }

    /// The next byte's low bit.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// Up to `n` next bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_truncate() {
        let mut out = Vec::new();
        record(&mut out, 1, b"abc");
        record(&mut out, 2, b"");
        out.extend_from_slice(&[3, 0, 9, b'x']);
        let got: Vec<_> = Records::new(&out).collect();
        assert_eq!(got, [(1, &b"abc"[..]), (2, &b""[..]), (3, &b"x"[..])]);
        assert_eq!(Records::new(&[7]).collect::<Vec<_>>(), [(7, &b""[..])]);
        assert_eq!(Records::new(&[7, 1]).collect::<Vec<_>>(), [(7, &[1u8][..])]);
    }

    #[test]
    fn fields_read_zeros_past_the_end() {
        let mut f = Fields::new(&[1, 2, 3]);
        assert_eq!(f.u16(), 0x0102);
        assert_eq!(f.u32(), 0x0300_0000);
        assert!(f.rest().is_empty());
    }
}
