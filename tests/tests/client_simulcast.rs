//! Simulcast from kaskade's own WebRTC client (webrtc-rs, issue 13's item 1): Alice publishes
//! her 320x240 picture in three layers (80x60, 160x120, 320x240, rids q/h/f on one m-line).
//! Bob shows her 60 px tall and decodes 80x60 pictures; Carol says nothing of her tiles and
//! decodes 320x240. Alice is told to pause the middle layer, which nobody receives; when Bob's
//! tile grows to 120 px he decodes 160x120 and she sends that layer again.

use std::time::Duration;

use kaskade_client::signaling::TileView;
use kaskade_client::{ClientMessage, Participant, ParticipantId};
use kaskade_e2e::start_node;

const WAIT: Duration = Duration::from_secs(20);

/// Waits until `viewer` decodes pictures of `publisher` of `size`.
async fn decodes(viewer: &Participant, publisher: ParticipantId, size: (u32, u32)) {
    let seen = viewer
        .wait_until(WAIT, |s| {
            s.stats.remote(publisher).picture_size == Some(size)
        })
        .await;
    assert!(
        seen.is_ok(),
        "{} decodes {size:?} pictures of the publisher, not {:?}",
        viewer.state().me.map(|m| m.name).unwrap_or_default(),
        viewer.stats().remote(publisher).picture_size,
    );
}

/// Waits until the node told `publisher` to send just the `layers` (lowest first).
async fn told(publisher: &Participant, layers: [bool; 3], why: &str) {
    let told = publisher
        .wait_until(WAIT, |s| s.active_layers == layers)
        .await;
    let now = publisher.state().active_layers;
    assert!(told.is_ok(), "{why}: told {now:?}");
}

/// Bob's tile of `publisher`, `height` pixels tall.
fn viewing(publisher: ParticipantId, height: u32) -> ClientMessage {
    ClientMessage::Viewing {
        tiles: vec![TileView {
            participant: publisher,
            height,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_decodes_the_layer_its_tile_asks_for() {
    let node = start_node(env!("CARGO_BIN_EXE_kaskade-sfu-under-test"), &[]);
    let mut cfg = kaskade_e2e::small_media_config(node.http, "simulcast", "alice");
    cfg.simulcast = true;
    let alice = Participant::join(cfg).await.expect("alice joins");
    let viewer = |name: &str| {
        let mut cfg = kaskade_e2e::small_media_config(node.http, "simulcast", name);
        cfg.publish_video = false;
        Participant::join(cfg)
    };
    let bob = viewer("bob").await.expect("bob joins");
    bob.send(&viewing(alice.id(), 60))
        .await
        .expect("bob's tiles");
    let carol = viewer("carol").await.expect("carol joins");

    decodes(&bob, alice.id(), (80, 60)).await;
    decodes(&carol, alice.id(), (320, 240)).await;
    told(
        &alice,
        [true, false, true],
        "alice pauses the layer nobody receives",
    )
    .await;

    bob.send(&viewing(alice.id(), 120))
        .await
        .expect("bob's tiles");
    decodes(&bob, alice.id(), (160, 120)).await;
    let why = "alice sends the middle layer again and pauses the lowest";
    told(&alice, [false, true, true], why).await;
    let sent = alice.stats();
    assert!(
        sent.keyframes_sent >= 3,
        "each layer starts (and resumes) at a keyframe: {sent:?}"
    );
}
