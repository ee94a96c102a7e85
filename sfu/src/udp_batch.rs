//! Batched UDP I/O on the node's one media socket: `recvmmsg` reads up to [`BATCH`] datagrams
//! and `sendmmsg` sends up to [`BATCH`] in one system call each, through tokio's readiness
//! (`try_io`), so a busy node makes one receive and a few send calls per wake-up instead of
//! one per packet. The message headers and the receive area are allocated once; received
//! datagrams are copied out of it into one shared arena (`BytesMut::split`), so a datagram
//! costs no allocation of its own.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use socket2::SockAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Receive slot per datagram: larger than any datagram the node accepts (ICE, DTLS, SRTP and
/// link datagrams all stay under the path MTU); a longer one is truncated and dropped.
const SLOT: usize = 2048;
/// The arena grows by this much when it runs low.
const ARENA: usize = 1 << 18;

/// One received datagram: its sender and its bytes.
pub type Received = (SocketAddr, BytesMut);

/// `recvmmsg` with buffers allocated once.
pub struct BatchReceiver {
    area: Vec<u8>,
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    arena: BytesMut,
}

impl Default for BatchReceiver {
    fn default() -> Self {
        Self {
            area: vec![0; BATCH * SLOT],
            // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs for which all
            // zero bytes is a valid (empty) value.
            headers: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovecs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            names: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            arena: BytesMut::with_capacity(ARENA),
        }
    }
}

// SAFETY: the raw pointers inside the headers only ever point into the receiver's own buffers
// and are rewritten before every call; nothing is shared between threads.
unsafe impl Send for BatchReceiver {}

impl BatchReceiver {
    /// Reads the datagrams waiting on `socket` (up to [`BATCH`], without waiting) into `out`;
    /// returns how many, or `WouldBlock` when none is waiting (tokio's readiness is then
    /// cleared, so the next `readable().await` waits for new data). Truncated datagrams and
    /// ones from unknown address families are counted in the return value but not passed on.
    pub fn try_recv(&mut self, socket: &UdpSocket, out: &mut Vec<Received>) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.area[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&raw mut self.names[i]).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &raw mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        let fd = socket.as_raw_fd();
        let headers = self.headers.as_mut_ptr();
        let count = socket.try_io(Interest::READABLE, || {
            // SAFETY: every header points at a live slot of `area` of SLOT bytes and at a
            // sockaddr_storage of `names`, all owned by self and not moved during the call.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    headers,
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })?;
        for i in 0..count {
            let header = &self.headers[i];
            let len = header.msg_len as usize;
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > SLOT {
                continue;
            }
            // SAFETY: the kernel wrote msg_namelen bytes of a socket address into names[i].
            let name = unsafe { SockAddr::new(self.names[i], header.msg_hdr.msg_namelen) };
            let Some(peer) = name.as_socket() else {
                continue;
            };
            if self.arena.capacity() < len {
                self.arena.reserve(ARENA);
            }
            self.arena
                .extend_from_slice(&self.area[i * SLOT..i * SLOT + len]);
            out.push((peer, self.arena.split()));
        }
        Ok(count)
    }
}

/// `sendmmsg` with headers allocated once.
pub struct BatchSender {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    names: Vec<SockAddr>,
}

impl Default for BatchSender {
    fn default() -> Self {
        let any = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        Self {
            // SAFETY: as in BatchReceiver::default.
            headers: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovecs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            names: vec![any; BATCH],
        }
    }
}

// SAFETY: the raw pointers inside the headers are rewritten before every call and never read
// after it returns; the sender owns nothing another thread could see.
unsafe impl Send for BatchSender {}

impl BatchSender {
    /// Sends the first (up to [`BATCH`]) of `datagrams` on `socket` without waiting; returns
    /// how many left, or the error of the first (`WouldBlock` when the socket buffer is full:
    /// await `writable()` and call again).
    pub fn try_send<'a>(
        &mut self,
        socket: &UdpSocket,
        datagrams: impl Iterator<Item = (SocketAddr, &'a [u8])>,
    ) -> io::Result<usize> {
        let mut count = 0;
        for (i, (peer, bytes)) in datagrams.take(BATCH).enumerate() {
            self.names[i] = SockAddr::from(peer);
            self.iovecs[i] = libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = self.names[i].as_ptr().cast_mut().cast();
            header.msg_namelen = self.names[i].len();
            header.msg_iov = &raw mut self.iovecs[i];
            header.msg_iovlen = 1;
            count = i + 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let fd = socket.as_raw_fd();
        let headers = self.headers.as_mut_ptr();
        socket.try_io(Interest::WRITABLE, || {
            // SAFETY: the first `count` headers point at live addresses in `names` and at
            // iovecs over the caller's byte slices, which outlive this call; the kernel only
            // reads them.
            let n = unsafe { libc::sendmmsg(fd, headers, count as libc::c_uint, 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_goes_out_and_comes_back_in_order() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..100u8)
            .map(|i| vec![i; 1 + usize::from(i) * 10])
            .collect();
        let mut sender = BatchSender::default();
        let mut sent = 0;
        while sent < payloads.len() {
            a.writable().await.unwrap();
            match sender.try_send(&a, payloads[sent..].iter().map(|p| (to, p.as_slice()))) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let mut receiver = BatchReceiver::default();
        let mut received = Vec::new();
        while received.len() < payloads.len() {
            b.readable().await.unwrap();
            match receiver.try_recv(&b, &mut received) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let from = a.local_addr().unwrap();
        for ((peer, bytes), expected) in received.iter().zip(&payloads) {
            assert_eq!(*peer, from);
            assert_eq!(&bytes[..], &expected[..]);
        }
    }

    #[tokio::test]
    async fn nothing_waiting_is_would_block() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut out = Vec::new();
        let e = BatchReceiver::default()
            .try_recv(&socket, &mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn oversized_datagrams_are_dropped() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        a.send_to(&[7; SLOT + 1], to).unwrap();
        a.send_to(&[8; 10], to).unwrap();
        let mut out = Vec::new();
        let mut receiver = BatchReceiver::default();
        while out.is_empty() {
            b.readable().await.unwrap();
            let _ = receiver.try_recv(&b, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].1[..], &[8; 10]);
    }
}
