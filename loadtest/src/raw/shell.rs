//! The raw forwarder's I/O shell (Linux): one UDP socket, one thread, `recvmmsg` batches in,
//! [`Forwarder::handle`] for each datagram, `sendmmsg` batches out. Every buffer is allocated
//! at start. It prints a ready line, a stats line each second in which something happened, and
//! its totals when SIGINT or SIGTERM stops it:
//!
//! ```text
//! kaskade raw forwarder ready: udp 127.0.0.1:10100
//! raw-forwarder stats {"uptime_s":1.0,"cpu_s":0.02,"participants":8,...,"forwarded":4410,...}
//! raw-forwarder totals {...,"forwarded_per_cpu_s":251234.5}
//! ```
//!
//! The libc calls are the only unsafe code: each passes pointers into buffers owned by the
//! batch structures below, which outlive the call.

use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use super::forwarder::{Forwarder, ForwarderStats, MAX_FANOUT, Outbox};
use super::wire::Secret;

/// Datagrams per `recvmmsg`.
const RECV_BATCH: usize = 64;
/// Datagrams per `sendmmsg` at most (the outbox's size).
const SEND_BATCH: usize = 256;
/// Receive buffer per datagram: longer than [`MAX_DATAGRAM`](super::wire::MAX_DATAGRAM), so an oversized datagram
/// arrives oversized and is counted as malformed.
const RECV_BUF: usize = 2048;
/// Socket buffer sizes asked for (the kernel may cap them).
const SOCKET_BUFFER: usize = 8 << 20;
/// How long a `recvmmsg` waits at most, so stats and signals are seen in time.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);

/// Set by SIGINT and SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

/// `kaskade-raw-forwarder`: the minimal forwarder kaskade's forwarding rate is compared with.
#[derive(Debug, Parser)]
#[command(name = "kaskade-raw-forwarder", version, about)]
pub struct ForwarderArgs {
    /// UDP address to listen on (port 0: any free port; the ready line names it).
    #[arg(long, default_value = "127.0.0.1:10100")]
    pub listen: SocketAddr,
    /// The secret every participant's key derives from (the load generator's `--secret`).
    #[arg(long, env = "KASKADE_RAW_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Participants at once, at most.
    #[arg(long, default_value_t = 10_000)]
    pub max_participants: usize,
}

/// One stats or totals line.
#[derive(Debug, Serialize)]
struct StatsLine {
    uptime_s: f64,
    cpu_s: f64,
    participants: usize,
    rooms: usize,
    #[serde(flatten)]
    stats: ForwarderStats,
    send_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    forwarded_per_cpu_s: Option<f64>,
}

/// The binary's `main`: parses the command line and serves until SIGINT or SIGTERM.
pub fn main() -> anyhow::Result<()> {
    serve(&ForwarderArgs::parse()).map(|_| ())
}

/// Serves until SIGINT or SIGTERM; returns the totals (also printed).
pub fn serve(args: &ForwarderArgs) -> anyhow::Result<ForwarderStats> {
    let socket =
        UdpSocket::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    socket.set_read_timeout(Some(RECV_TIMEOUT))?;
    let fd = socket.as_raw_fd();
    for (force, normal) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_socket_option(fd, force, SOCKET_BUFFER).is_err() {
            let _ = set_socket_option(fd, normal, SOCKET_BUFFER);
        }
    }
    install_signal_handlers()?;
    let mut forwarder = Forwarder::new(Secret::new(args.secret.as_bytes()), args.max_participants);
    let mut recv = RecvBatch::new();
    let mut send = SendBatch::new();
    let mut outbox = Outbox::new(SEND_BATCH);
    let started = Instant::now();
    println!("kaskade raw forwarder ready: udp {}", socket.local_addr()?);
    let mut next_stats = started + Duration::from_secs(1);
    let mut last_printed = ForwarderStats::default();
    while !STOP.load(Ordering::Relaxed) {
        let received = recv.receive(fd)?;
        let now = Instant::now();
        for i in 0..received {
            if outbox.free() < MAX_FANOUT + 1 {
                send.flush(fd, &mut outbox);
            }
            let (from, datagram) = recv.datagram(i);
            if let Some(from) = from {
                forwarder.handle(now, from, datagram, &mut outbox);
            }
        }
        send.flush(fd, &mut outbox);
        if now >= next_stats {
            forwarder.tick(now);
            let stats = forwarder.stats();
            if stats != last_printed {
                let line = stats_line(&forwarder, started, send.errors, false);
                println!("raw-forwarder stats {}", serde_json::to_string(&line)?);
                last_printed = stats;
            }
            next_stats = now + Duration::from_secs(1);
        }
    }
    let line = stats_line(&forwarder, started, send.errors, true);
    println!("raw-forwarder totals {}", serde_json::to_string(&line)?);
    Ok(forwarder.stats())
}

fn stats_line(
    forwarder: &Forwarder,
    started: Instant,
    send_errors: u64,
    totals: bool,
) -> StatsLine {
    let stats = forwarder.stats();
    let cpu_s = cpu_seconds();
    StatsLine {
        uptime_s: started.elapsed().as_secs_f64(),
        cpu_s,
        participants: forwarder.participants(),
        rooms: forwarder.rooms(),
        stats,
        send_errors,
        forwarded_per_cpu_s: (totals && cpu_s > 0.0).then(|| stats.forwarded as f64 / cpu_s),
    }
}

/// User and system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed value it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores into an atomic (async-signal-safe); without
        // SA_RESTART a blocked recvmmsg returns EINTR, so the loop sees the flag at once.
        let result = unsafe {
            let mut action: libc::sigaction = zeroed();
            action.sa_sigaction =
                on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error()).context("installing a signal handler");
        }
    }
    Ok(())
}

pub(crate) fn set_socket_option(
    fd: RawFd,
    option: libc::c_int,
    value: usize,
) -> std::io::Result<()> {
    let value = value as libc::c_int;
    // SAFETY: the option value is a c_int that lives across the call, its size given.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The buffers of one `recvmmsg`: datagrams, source addresses, and the headers pointing at
/// them (built once; the boxed slices never move).
struct RecvBatch {
    bufs: Box<[[u8; RECV_BUF]]>,
    names: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
}

impl RecvBatch {
    fn new() -> Self {
        let mut bufs = vec![[0u8; RECV_BUF]; RECV_BATCH].into_boxed_slice();
        // SAFETY: sockaddr_storage is a plain C struct.
        let mut names: Box<[libc::sockaddr_storage]> = unsafe { zeroed_slice(RECV_BATCH) };
        let mut iovecs: Box<[libc::iovec]> = bufs
            .iter_mut()
            .map(|buf| libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            })
            .collect();
        let headers = iovecs
            .iter_mut()
            .zip(names.iter_mut())
            .map(|(iovec, name)| {
                // SAFETY: as above.
                let mut header: libc::mmsghdr = unsafe { zeroed() };
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
                header.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
                header
            })
            .collect();
        Self {
            bufs,
            names,
            iovecs,
            headers,
        }
    }

    /// Waits for datagrams (at most [`RECV_TIMEOUT`]); returns how many arrived (0 on
    /// timeout or signal).
    fn receive(&mut self, fd: RawFd) -> anyhow::Result<usize> {
        for header in self.headers.iter_mut() {
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_len = 0;
        }
        debug_assert_eq!(self.iovecs.len(), self.headers.len());
        // SAFETY: every header points at a buffer, an iovec and a name owned by `self`, of
        // the sizes given; MSG_WAITFORONE blocks for the first datagram only.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted => Ok(0),
            // an ICMP error queued for an earlier send: not this socket's failure
            std::io::ErrorKind::ConnectionRefused => Ok(0),
            _ => Err(error).context("recvmmsg"),
        }
    }

    /// Datagram `i` of the last batch and its source.
    fn datagram(&mut self, i: usize) -> (Option<SocketAddr>, &mut [u8]) {
        let len = (self.headers[i].msg_len as usize).min(RECV_BUF);
        let from = from_sockaddr(&self.names[i]);
        (from, &mut self.bufs[i][..len])
    }
}

/// `len` zeroed values.
///
/// # Safety
///
/// All zero bytes must be a valid `T` (plain C structs of integers and raw pointers).
unsafe fn zeroed_slice<T>(len: usize) -> Box<[T]> {
    // SAFETY: the caller's promise.
    (0..len).map(|_| unsafe { zeroed() }).collect()
}

/// The headers of one `sendmmsg`, built from an [`Outbox`] at each flush.
struct SendBatch {
    names: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    /// Datagrams the kernel refused.
    errors: u64,
}

impl SendBatch {
    fn new() -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs.
        Self {
            names: unsafe { zeroed_slice(SEND_BATCH) },
            iovecs: unsafe { zeroed_slice(SEND_BATCH) },
            headers: unsafe { zeroed_slice(SEND_BATCH) },
            errors: 0,
        }
    }

    /// Sends everything in `outbox` (skipping datagrams the kernel refuses) and clears it.
    fn flush(&mut self, fd: RawFd, outbox: &mut Outbox) {
        let count = outbox.len().min(SEND_BATCH);
        for i in 0..count {
            let (to, datagram) = outbox.get(i);
            let name_len = to_sockaddr(to, &mut self.names[i]);
            self.iovecs[i] = libc::iovec {
                iov_base: datagram.as_ptr().cast_mut().cast(),
                iov_len: datagram.len(),
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = name_len;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers `sent..count` point at names and iovecs owned by `self` and at
            // datagrams owned by `outbox`, all alive and unmoved during the call; the kernel
            // only reads the datagrams.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                sent += n as usize;
                continue;
            }
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // the first unsent datagram was refused (unreachable, too large...): skip it
            self.errors += 1;
            sent += 1;
        }
        outbox.clear();
    }
}

/// A socket address from what `recvmmsg` wrote (`None` for families other than IP).
fn from_sockaddr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in, which sockaddr_storage can hold.
            let v4 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6.
            let v6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `name`; returns its length.
fn to_sockaddr(addr: SocketAddr, name: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(addr) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let v4 =
                unsafe { &mut *(name as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            v4.sin_family = libc::AF_INET as libc::sa_family_t;
            v4.sin_port = addr.port().to_be();
            v4.sin_addr = libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(addr) => {
            // SAFETY: as above, for a sockaddr_in6.
            let v6 =
                unsafe { &mut *(name as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            v6.sin6_port = addr.port().to_be();
            v6.sin6_flowinfo = addr.flowinfo();
            v6.sin6_addr = libc::in6_addr {
                s6_addr: addr.ip().octets(),
            };
            v6.sin6_scope_id = addr.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip_through_sockaddr() {
        for addr in ["127.0.0.1:5004", "[::1]:40000", "[fe80::1%2]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            // SAFETY: a plain C struct, valid zeroed.
            let mut name: libc::sockaddr_storage = unsafe { zeroed() };
            to_sockaddr(addr, &mut name);
            assert_eq!(from_sockaddr(&name), Some(addr));
        }
    }
}
