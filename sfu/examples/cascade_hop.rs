//! Benchmark: what one cascade hop adds to a packet. Two link ends (as two nodes hold them)
//! exchange video-sized relayed RTP packets over real loopback UDP sockets at a steady rate;
//! each packet carries its send instant, so the receiver measures seal + UDP + open latency.
//! Also reports the time per packet of sealing (with the copy kept for NACKs), of the send
//! system call, and of opening.
//!
//! `cargo run --release -p sfu --example cascade_hop -- [packets] [rate_per_s]`

use bytes::Bytes;
use kaskade_protocol::ids::ParticipantId;
use kaskade_sfu::cascade::frame::{self, Frame, RelayedRtp};
use kaskade_sfu::cascade::link::{Link, LinkParams};
use kaskade_sfu::media::forwarder::MediaKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn params(index: u16, addr: std::net::SocketAddr) -> LinkParams {
    LinkParams {
        index,
        name: format!("node-{index}"),
        media_addr: addr,
        key: [42; 32],
    }
}

/// The relayed participant whose packets cross the link: participant 1 of node 1.
const PUBLISHER: ParticipantId = ParticipantId::from_wire(1 << 20 | 1);

fn main() {
    let mut args = std::env::args().skip(1);
    let packets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let rx_addr = rx.local_addr().unwrap();
    let tx_addr = tx.local_addr().unwrap();
    let origin = Instant::now();

    let receiver = std::thread::spawn(move || {
        let mut far = Link::new(2, params(1, tx_addr));
        let mut buf = vec![0u8; 2048];
        let mut latencies = Vec::with_capacity(packets);
        let mut opening = Duration::ZERO;
        while latencies.len() < packets {
            let Ok(n) = rx.recv(&mut buf) else { break };
            let before = Instant::now();
            let datagram = bytes::BytesMut::from(&buf[..n]);
            let header = frame::parse_header(&datagram).expect("a link datagram");
            let opened = far.open(datagram, header.counter);
            opening += before.elapsed();
            if let Ok(Frame::Rtp(rtp)) = opened {
                let sent = u64::from_be_bytes(rtp.payload[..8].try_into().unwrap());
                let now = origin.elapsed().as_nanos() as u64;
                latencies.push(now.saturating_sub(sent));
            }
        }
        (latencies, opening)
    });

    let mut near = Link::new(1, params(2, rx_addr));
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let mut payload = vec![0x41u8; 1100];
    let (mut sealing, mut sending) = (Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    for i in 0..packets {
        let due = start + interval * i as u32;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        payload[..8].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_be_bytes());
        let rtp = RelayedRtp {
            publisher: PUBLISHER,
            kind: MediaKind::Video,
            layer: 0,
            level: None,
            marker: i % 8 == 7,
            payload_type: 102,
            seq: i as u16,
            timestamp: (i / 8) as u32 * 6000,
            ssrc: 0x1234_5678,
            payload: Bytes::copy_from_slice(&payload),
        };
        let before = Instant::now();
        let datagram = near.relay(&rtp);
        let sealed = Instant::now();
        tx.send_to(&datagram, rx_addr).unwrap();
        sealing += sealed - before;
        sending += sealed.elapsed();
    }
    let (mut latencies, opening) = receiver.join().unwrap();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "cascade hop: {} of {packets} packets at {rate}/s, 1100-byte payloads",
        latencies.len()
    );
    println!(
        "latency (seal + loopback UDP + open) p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    let per_packet = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!(
        "per packet: seal (+ copy kept for NACKs) {:.2} us, sendto {:.2} us, open {:.2} us",
        per_packet(sealing, packets),
        per_packet(sending, packets),
        per_packet(opening, latencies.len())
    );
}
