//! The node's driver shares its runtime: flooded with datagrams, it must still leave time to the
//! runtime's other tasks (signaling, HTTP, the reports to the locator). On a one-worker runtime
//! (a node pinned to one core) a driver that never yields froze all of them for as long as the
//! flood lasted: joins and health checks timed out and the locator dropped the node as silent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kaskade_sfu::media::core::{CoreConfig, MediaCore};
use kaskade_sfu::media::peer::PeerSettings;
use kaskade_sfu::media::surroundings::Surroundings;
use kaskade_sfu::metrics::Metrics;
use kaskade_sfu::node::{self, MediaSockets};

/// A STUN binding request whose USERNAME names no participant of this node: read, parsed and
/// dropped as unroutable, a few microseconds each.
fn stray_binding_request() -> Vec<u8> {
    let username = b"zzzzzzzz:remote";
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(&[0x00, 0x06, 0x00, username.len() as u8]);
    m.extend_from_slice(username);
    m.resize(m.len().div_ceil(4) * 4, 0);
    let length = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&length.to_be_bytes());
    m
}

/// Sends `datagram` to `to` from a few threads until `stop` or `until`.
fn flood(
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    until: Instant,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..3)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a socket");
                let datagram = stray_binding_request();
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    let _ = socket.send_to(&datagram, to);
                }
            })
        })
        .collect()
}

/// Keeps this thread, and the threads it starts from now on, on the first CPU.
fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t is an empty set; the call only reads it
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Gives this thread (only) less CPU than the threads beside it on its CPU.
fn lower_this_thread() {
    // SAFETY: plain system calls on this thread's own id
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS as _, libc::gettid() as libc::id_t, 10);
    }
}

#[test]
fn a_flooded_driver_leaves_time_to_the_other_tasks() {
    // the runtime's thread and the senders share one CPU and the runtime's thread gets the
    // smaller share, so the flood outruns the driver whatever the machine's speed
    pin_to_one_cpu();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let metrics = Arc::new(Metrics::new());
        let sockets = MediaSockets::bind("127.0.0.1:0".parse().unwrap(), None)
            .await
            .expect("sockets");
        let addr = sockets.udp.local_addr().expect("an address");
        let core = MediaCore::new(
            CoreConfig {
                max_room_size: 10,
                max_participants: 10,
                first_is_moderator: true,
                peer: Arc::new(PeerSettings {
                    udp_candidates: vec![addr],
                    tcp_candidates: vec![],
                    legacy_srtp: false,
                    max_slots: 9,
                }),
                node_name: "fairness".into(),
            },
            Arc::clone(&metrics),
            Surroundings::seeded(Instant::now(), 1_700_000_000_000, 7),
        );
        let _node = node::spawn(core, sockets, Arc::clone(&metrics), None);
        let stop = Arc::new(AtomicBool::new(false));
        // the senders stop by themselves: a driver that never yields never lets this task
        // tell them to
        let senders = flood(
            addr,
            Arc::clone(&stop),
            Instant::now() + Duration::from_secs(3),
        );
        lower_this_thread();
        // this task (on the driver's one thread) counts 5 ms ticks for a second of the flood
        let start = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_millis(5));
        let mut count = 0u32;
        while start.elapsed() < Duration::from_secs(1) {
            ticks.tick().await;
            count += 1;
        }
        let flooded = start.elapsed();
        eprintln!(
            "ticks {count} in {flooded:?}, {} datagrams",
            metrics.packets_in.get()
        );
        stop.store(true, Ordering::Relaxed);
        for sender in senders {
            let _ = sender.join();
        }
        assert!(
            metrics.packets_in.get() > 1000,
            "the flood reached the driver"
        );
        // 200 ticks if it never waited; a driver that kept the thread gave it one or two
        assert!(
            count >= 20 && flooded < Duration::from_millis(2500),
            "{count} ticks in {flooded:?} of flood"
        );
    });
}
