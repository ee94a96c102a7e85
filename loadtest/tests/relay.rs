//! The lossy relay forwards both ways per client and drops only RTP/RTCP (RFC 7983 ranges).

use std::net::SocketAddr;
use std::time::Duration;

use kaskade_loadtest::LossyRelay;
use tokio::net::UdpSocket;

async fn echo_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

async fn roundtrip(client: &UdpSocket, relay: SocketAddr, datagram: &[u8]) -> bool {
    client.send_to(datagram, relay).await.unwrap();
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            assert_eq!(from, relay, "replies come from the relay address");
            assert_eq!(&buf[..n], datagram);
            true
        }
        _ => false,
    }
}

#[tokio::test]
async fn total_loss_drops_rtp_but_never_stun_or_dtls() {
    let upstream = echo_server().await;
    let (relay, handle) = LossyRelay::start(upstream, 1.0, 7).await.unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert!(
        roundtrip(&client, relay, &[0x00, 0x01, 0, 0]).await,
        "STUN passes"
    );
    assert!(
        roundtrip(&client, relay, &[22, 0xfe, 0xfd]).await,
        "DTLS passes"
    );
    assert!(
        !roundtrip(&client, relay, &[0x80, 96, 0, 1]).await,
        "RTP dropped"
    );
    assert!(
        !roundtrip(&client, relay, &[0x81, 200, 0, 1]).await,
        "RTCP dropped"
    );
    let stats = handle.stats();
    assert_eq!(stats.dropped_up, 2);
    assert_eq!(stats.clients, 1);
    handle.set_loss(0.0);
    assert!(
        roundtrip(&client, relay, &[0x80, 96, 0, 2]).await,
        "no loss after set_loss(0)"
    );
    handle.stop().await;
}

#[tokio::test]
async fn partial_loss_is_roughly_the_configured_rate_in_both_directions() {
    let upstream = echo_server().await;
    let (relay, handle) = LossyRelay::start(upstream, 0.2, 42).await.unwrap();
    let client = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let reader = {
        let client = std::sync::Arc::clone(&client);
        tokio::spawn(async move {
            let (mut ok, mut buf) = (0u64, [0u8; 64]);
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await
            {
                ok += 1;
            }
            ok
        })
    };
    for i in 0..500u16 {
        let d = [0x80, 96, (i >> 8) as u8, i as u8];
        client.send_to(&d, relay).await.unwrap();
        tokio::task::yield_now().await;
    }
    let ok = reader.await.unwrap();
    let s = handle.stats();
    // Each direction drops ~20%; a round trip survives with p = 0.8 * 0.8 = 0.64.
    assert!((340..=460).contains(&s.forwarded_up), "{s:?}");
    assert_eq!(s.forwarded_up + s.dropped_up, 500, "{s:?}");
    assert!((270..=370).contains(&s.forwarded_down), "{s:?}");
    assert_eq!(ok, s.forwarded_down, "{s:?}");
}

#[tokio::test]
async fn each_client_gets_its_own_upstream_socket() {
    let upstream = echo_server().await;
    let (relay, handle) = LossyRelay::start(upstream, 0.0, 1).await.unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert!(roundtrip(&a, relay, b"\x80aaaa").await);
    assert!(roundtrip(&b, relay, b"\x80bbbb").await);
    assert_eq!(handle.stats().clients, 2);
}

#[tokio::test]
async fn a_delay_holds_every_datagram_both_ways_in_order() {
    let upstream = echo_server().await;
    let (relay, handle) = LossyRelay::start(upstream, 0.0, 3).await.unwrap();
    handle.set_delay(Duration::from_millis(60));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = std::time::Instant::now();
    for n in 0..5u8 {
        client.send_to(&[0x80, 96, 0, n], relay).await.unwrap();
    }
    let mut buf = [0u8; 64];
    for n in 0..5u8 {
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
            .await
            .expect("the echo comes back")
            .unwrap();
        assert_eq!(&buf[..len], &[0x80, 96, 0, n], "in order");
    }
    let round_trip = started.elapsed();
    assert!(
        round_trip >= Duration::from_millis(120),
        "held 60 ms each way: {round_trip:?}"
    );
    assert_eq!(handle.stats().forwarded_up, 5);
}
