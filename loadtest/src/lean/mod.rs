//! [`LeanParticipant`]: a kaskade participant for the load generator that does its media path
//! itself instead of going through `RTCPeerConnection`, so that one core of load generator
//! drives more than one core of node.
//!
//! Signaling is the ordinary participant's (join API, `join`/`welcome`, one offer and its
//! answer, then the frames applied to the same [`crate::MeetingState`]); the offer is written
//! by hand ([`sdp`]). Media is one UDP socket and one task per participant ([`driver`]): STUN
//! checks towards the ICE-lite node ([`ice`]), a DTLS client handshake and the SRTP keys it
//! exports ([`dtls`]), then the task sends the same synthetic media as the ordinary participant
//! (the looped H.264 clip with a latency stamp ahead of each frame, as one stream or, with
//! `simulcast`, three layers paused as the node's `layers` says; the Opus clip at 50
//! packets/s with its audio level), answers PLI/FIR with a keyframe (of the layer named), and,
//! with a tile height, reports its room-mates' tiles ([`tiles`]); it decrypts, counts,
//! decodes (if asked) and hands to the sink everything the node sends, attributed through the
//! slot map. No interceptors: no NACKs (loss is measured from sequence numbers), no reports,
//! no congestion control; a PLI only after a gap in a video slot, like the ordinary client.
//! Unlike it, a lean participant does not fail over when its node is lost.

mod driver;
pub mod dtls;
pub mod ice;
pub mod sdp;
mod tiles;

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use async_trait::async_trait;
use ring::rand::SecureRandom;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::load_peer::{LoadPeer, LoadSpec};
use driver::{Driver, DriverConfig};
use kaskade_client::join::JoinError;
use kaskade_client::peer::{SIMULCAST_RIDS, Shared, random_u32};
use kaskade_client::session::{Media, join_signaling, locate, offer_answer, read_signaling};
use kaskade_client::signaling::{ClientMessage, ParticipantId, SignalWriter};
use kaskade_client::state::ParticipantStats;
use sdp::{Answer, OfferParams};

/// The socket receive buffer asked for (bursts of nine publishers' frames arrive at once).
const RECEIVE_BUFFER: usize = 2 << 20;

/// A synthetic kaskade participant with its own lean media path (a [`LoadPeer`]).
pub struct LeanParticipant {
    id: ParticipantId,
    shared: Arc<Shared>,
    writer: Arc<Mutex<SignalWriter>>,
    tasks: Vec<JoinHandle<()>>,
}

impl LeanParticipant {
    /// Joins `spec.meeting` through the join API at `base` (a locator or a standalone node):
    /// encodes (or fetches) the clips, joins over signaling, offers and applies the answer,
    /// then starts the participant's task, which connects and publishes by itself.
    pub async fn join(spec: LoadSpec, base: &str) -> Result<Self, JoinError> {
        let cfg = spec.kaskade_config(base);
        let shared = Arc::new(Shared::new(&cfg));
        let media = Media::prepare(&cfg).await?;
        let target = locate(&cfg, cfg.token.clone(), None, None).await?;
        let (mut writer, mut reader, session, welcome) =
            join_signaling(&cfg, &shared, &target).await?;
        shared.update(None, |s| s.node = target.node.clone());

        let local_ip = writer.local_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let socket = UdpSocket::bind((local_ip, 0))
            .await
            .context("binding the media socket")?;
        // best effort: the kernel's default also works, with more drops under bursts
        let _ = crate::raw::shell::set_socket_option(
            socket.as_raw_fd(),
            libc::SO_RCVBUF,
            RECEIVE_BUFFER,
        );
        let (_, fingerprint) = dtls::identity()?;
        let offer = OfferParams {
            ufrag: random_token(8),
            pwd: random_token(24),
            fingerprint: fingerprint.clone(),
            audio_ssrc: media.audio().map(|_| random_u32()),
            video_ssrc: media.video().map(|_| random_u32()),
            video_rids: media
                .simulcast_layers()
                .map(|_| SIMULCAST_RIDS.iter().map(|r| r.to_string()).collect())
                .unwrap_or_default(),
            cname: random_token(16),
            recv_slots: welcome.recv_slots,
            // the load generator only counts what arrives; retransmissions come as originals
            rtx: false,
            red: false,
            congestion_feedback: false,
        };
        let answer = offer_answer(
            &cfg,
            &mut writer,
            &mut reader,
            &shared,
            session,
            sdp::offer(&offer),
        )
        .await?;
        let answer = Answer::parse(&answer).context("the node's answer")?;
        let driver = Driver::new(DriverConfig {
            socket,
            shared: Arc::clone(&shared),
            session,
            offer,
            answer,
            media,
        })?;
        let writer = Arc::new(Mutex::new(writer));
        let mut tasks = vec![
            tokio::spawn(read_signaling(reader, Arc::clone(&shared), session)),
            tokio::spawn(driver.run()),
        ];
        if let Some(height) = spec.tile_height {
            let (shared, writer) = (Arc::clone(&shared), Arc::clone(&writer));
            tasks.push(tokio::spawn(tiles::report(shared, writer, height)));
        }
        Ok(Self {
            id: welcome.you.id,
            shared,
            writer,
            tasks,
        })
    }

    /// Sends a frame on the signaling socket.
    async fn send(&self, msg: &ClientMessage) -> anyhow::Result<()> {
        self.writer.lock().await.send(msg).await
    }
}

impl Drop for LeanParticipant {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl LoadPeer for LeanParticipant {
    fn id(&self) -> ParticipantId {
        self.id
    }

    fn stats(&self) -> ParticipantStats {
        let mut stats = self.shared.with_state(|s| s.stats.clone());
        self.shared.add_counters(&mut stats);
        stats
    }

    fn sees(&self, other: ParticipantId) -> bool {
        self.shared
            .with_state(|s| s.participants.contains_key(&other))
    }

    async fn stop_sending(&self) -> anyhow::Result<()> {
        self.shared.send_audio.store(false, Ordering::Relaxed);
        self.shared.send_video.store(false, Ordering::Relaxed);
        self.send(&ClientMessage::Mute {
            audio: Some(true),
            video: Some(true),
        })
        .await
    }

    async fn leave(self: Box<Self>) -> anyhow::Result<()> {
        let sent = self.send(&ClientMessage::Leave).await;
        let _ = self.writer.lock().await.close().await;
        sent
    }
}

/// `len` random characters of `[A-Za-z0-9]` (ICE credentials, CNAMEs).
fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // the system's source failing is next to impossible; the hasher's keys still vary
        bytes.iter_mut().for_each(|b| *b = random_u32() as u8);
    }
    bytes
        .iter()
        .map(|b| char::from(CHARS[usize::from(*b) % CHARS.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_ice_characters() {
        let token = random_token(24);
        assert_eq!(token.len(), 24);
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(token, random_token(24));
    }
}
