//! A UDP relay that drops RTP/RTCP packets at random, to simulate a lossy path.
//!
//! The relay listens on one socket. For each client address (5-tuple) it sees, it opens one
//! socket toward the upstream (the SFU) and forwards datagrams both ways. Each datagram whose
//! first byte is in 128..=191 (RTP or RTCP, RFC 7983 demultiplexing) is dropped with
//! probability `loss` in either direction; STUN (0..=3) and DTLS (20..=63) always pass, so ICE
//! and the handshake survive any loss rate. Drops use a seeded PRNG, so runs are repeatable.
//! Every datagram that passes may also be held for a fixed one-way delay
//! ([`RelayHandle::set_delay`]), in order, which makes a path's round trip (this machine's
//! kernel has no netem).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Counters of a running relay.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Datagrams forwarded client -> upstream.
    pub forwarded_up: AtomicU64,
    /// Datagrams forwarded upstream -> client.
    pub forwarded_down: AtomicU64,
    /// RTP/RTCP datagrams dropped client -> upstream.
    pub dropped_up: AtomicU64,
    /// RTP/RTCP datagrams dropped upstream -> client.
    pub dropped_down: AtomicU64,
    /// Client 5-tuples seen.
    pub clients: AtomicU64,
}

/// A snapshot of [`RelayCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams forwarded client -> upstream.
    pub forwarded_up: u64,
    /// Datagrams forwarded upstream -> client.
    pub forwarded_down: u64,
    /// RTP/RTCP datagrams dropped client -> upstream.
    pub dropped_up: u64,
    /// RTP/RTCP datagrams dropped upstream -> client.
    pub dropped_down: u64,
    /// Client 5-tuples seen.
    pub clients: u64,
}

impl RelayStats {
    /// Total dropped datagrams, both directions.
    pub fn dropped(&self) -> u64 {
        self.dropped_up + self.dropped_down
    }
}

struct Shared {
    counters: RelayCounters,
    /// Loss probability as `f64` bits.
    loss: AtomicU64,
    /// xorshift64* state.
    rng: AtomicU64,
    /// One-way delay of every datagram that passes, microseconds.
    delay_us: AtomicU64,
    /// The upstream socket of every client, for [`RelayHandle::inject_upstream`].
    upstreams: std::sync::Mutex<Vec<Arc<UdpSocket>>>,
}

impl Shared {
    fn should_drop(&self, datagram: &[u8]) -> bool {
        let Some(&first) = datagram.first() else {
            return false;
        };
        if !(128..=191).contains(&first) {
            return false; // STUN, DTLS, TURN channel data, ...: never dropped
        }
        let loss = f64::from_bits(self.loss.load(Ordering::Relaxed));
        if loss <= 0.0 {
            return false;
        }
        // Lock-free xorshift64* step; a lost race only repeats a number, which is harmless.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (r as f64 / (1u64 << 53) as f64) < loss
    }
}

/// Handle of a running relay; dropping it stops the relay.
pub struct RelayHandle {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    main: JoinHandle<()>,
}

impl RelayHandle {
    /// Current counters.
    pub fn stats(&self) -> RelayStats {
        let c = &self.shared.counters;
        RelayStats {
            forwarded_up: c.forwarded_up.load(Ordering::Relaxed),
            forwarded_down: c.forwarded_down.load(Ordering::Relaxed),
            dropped_up: c.dropped_up.load(Ordering::Relaxed),
            dropped_down: c.dropped_down.load(Ordering::Relaxed),
            clients: c.clients.load(Ordering::Relaxed),
        }
    }

    /// Holds every datagram that passes for `one_way` in each direction (the path's round trip
    /// grows by twice that); datagrams keep their order.
    pub fn set_delay(&self, one_way: std::time::Duration) {
        let us = u64::try_from(one_way.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(us, Ordering::Relaxed);
    }

    /// Changes the loss probability (0.0..=1.0) of the running relay.
    pub fn set_loss(&self, loss: f64) {
        self.shared
            .loss
            .store(loss.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// Sends `datagram` to the upstream from every client's upstream socket, as if the client
    /// had sent it (bad-input tests: garbage on an established participant's 5-tuple).
    /// Returns how many copies were sent.
    pub async fn inject_upstream(&self, datagram: &[u8]) -> usize {
        let upstreams = match self.shared.upstreams.lock() {
            Ok(list) => list.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut sent = 0;
        for up in upstreams {
            if up.send(datagram).await.is_ok() {
                sent += 1;
            }
        }
        sent
    }

    /// Stops the relay and all its per-client tasks.
    pub async fn stop(self) {
        self.main.abort();
        for task in self.tasks.lock().await.drain(..) {
            task.abort();
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.main.abort();
        if let Ok(mut tasks) = self.tasks.try_lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

/// The lossy UDP relay.
pub struct LossyRelay;

impl LossyRelay {
    /// Starts a relay toward `upstream` that drops RTP/RTCP with probability `loss`.
    ///
    /// Listens on the upstream's IP (loopback if it is unspecified) with an ephemeral port and
    /// returns that address: give it to a participant as `JoinConfig::media_via`.
    pub async fn start(
        upstream: SocketAddr,
        loss: f64,
        seed: u64,
    ) -> io::Result<(SocketAddr, RelayHandle)> {
        let ip = if upstream.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            upstream.ip()
        };
        let upstream = SocketAddr::new(ip, upstream.port());
        let listen = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0)).await?);
        let local = listen.local_addr()?;
        let shared = Arc::new(Shared {
            counters: RelayCounters::default(),
            loss: AtomicU64::new(loss.clamp(0.0, 1.0).to_bits()),
            rng: AtomicU64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            delay_us: AtomicU64::new(0),
            upstreams: std::sync::Mutex::new(Vec::new()),
        });
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let main = tokio::spawn(run_listener(
            listen,
            upstream,
            Arc::clone(&shared),
            Arc::clone(&tasks),
        ));
        Ok((
            local,
            RelayHandle {
                shared,
                tasks,
                main,
            },
        ))
    }
}

async fn run_listener(
    listen: Arc<UdpSocket>,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut clients: HashMap<SocketAddr, DelayLine> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = match listen.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // ICMP port unreachable and friends surface here on some systems: keep going.
                tracing::debug!("relay recv: {e}");
                continue;
            }
        };
        let up = match clients.get(&from) {
            Some(up) => up.clone(),
            None => {
                let up = match open_upstream(upstream).await {
                    Ok(up) => Arc::new(up),
                    Err(e) => {
                        tracing::warn!("relay: cannot open upstream socket: {e}");
                        continue;
                    }
                };
                shared.counters.clients.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut upstreams) = shared.upstreams.lock() {
                    upstreams.push(Arc::clone(&up));
                }
                let (up_line, up_task) =
                    DelayLine::start(Exit::Up(Arc::clone(&up)), Arc::clone(&shared));
                let (down_line, down_task) =
                    DelayLine::start(Exit::Down(Arc::clone(&listen), from), Arc::clone(&shared));
                clients.insert(from, up_line.clone());
                let task = tokio::spawn(run_downstream(up, down_line, Arc::clone(&shared)));
                tasks.lock().await.extend([task, up_task, down_task]);
                up_line
            }
        };
        let datagram = &buf[..len];
        if shared.should_drop(datagram) {
            shared.counters.dropped_up.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        up.pass(&shared, datagram);
    }
}

/// Where a direction's datagrams leave the relay.
enum Exit {
    /// Towards the upstream, on the client's own upstream socket.
    Up(Arc<UdpSocket>),
    /// Towards the client, from the listening socket.
    Down(Arc<UdpSocket>, SocketAddr),
}

/// One direction of one client's path: holds each datagram for the relay's delay, then sends
/// it, in order.
#[derive(Clone)]
struct DelayLine {
    queue: UnboundedSender<(Instant, Vec<u8>)>,
}

impl DelayLine {
    fn start(exit: Exit, shared: Arc<Shared>) -> (Self, JoinHandle<()>) {
        let (queue, mut held) = unbounded_channel::<(Instant, Vec<u8>)>();
        let task = tokio::spawn(async move {
            while let Some((due, datagram)) = held.recv().await {
                tokio::time::sleep_until(due).await;
                let (sent, counter) = match &exit {
                    Exit::Up(up) => (up.send(&datagram).await, &shared.counters.forwarded_up),
                    Exit::Down(listen, client) => (
                        listen.send_to(&datagram, *client).await,
                        &shared.counters.forwarded_down,
                    ),
                };
                if sent.is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        (Self { queue }, task)
    }

    /// Sends `datagram` once the relay's delay has passed.
    fn pass(&self, shared: &Shared, datagram: &[u8]) {
        let delay = std::time::Duration::from_micros(shared.delay_us.load(Ordering::Relaxed));
        let _ = self.queue.send((Instant::now() + delay, datagram.to_vec()));
    }
}

async fn open_upstream(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(upstream.ip(), 0)).await?;
    socket.connect(upstream).await?;
    Ok(socket)
}

async fn run_downstream(up: Arc<UdpSocket>, down: DelayLine, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let len = match up.recv(&mut buf).await {
            Ok(len) => len,
            Err(e) => {
                tracing::debug!("relay upstream recv: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let datagram = &buf[..len];
        if shared.should_drop(datagram) {
            shared.counters.dropped_down.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        down.pass(&shared, datagram);
    }
}
