//! The peer's datagrams: the node holds the DTLS association and the SRTP keys of the
//! participant itself, and keeps rtc's `RTCPeerConnection` behind them on an in-process leg.
//!
//! The connection still does ICE (STUN goes to it and its answers go out as they are) and the
//! receive side: binding the participant's streams (declared SSRCs, simulcast rids, repair
//! streams), NACKs and TWCC feedback to it, receiver reports, the RTCP filters and taps. rtc
//! 0.21 keeps its SRTP keys to itself, so the leg is keyed by a DTLS handshake of its own
//! between a client association here and the connection's server: what the participant sends
//! is opened with its key and sealed again with the leg's for the connection; what the
//! connection sends (its RTCP) is opened with the leg's key and sealed with the participant's.
//! What the node sends of its own (forwarded media, resends, sender reports; `peer::send`)
//! never enters the connection.

use super::WebRtcPeer;
use super::dtls::{self, Association, Progress, SrtpKeys};
use crate::media::transport::TransportError;
use bytes::BytesMut;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext};
use std::time::Instant;

/// What the participant sent, opened, before the leg was keyed: held for the connection, up
/// to [`MAX_EARLY`] datagrams (a publisher's first keyframe among them).
const MAX_EARLY: usize = 64;

/// The in-process leg: its DTLS association with the connection, its keys once keyed, and
/// what waits for them.
#[derive(Default)]
pub(super) struct Leg {
    dtls: Option<Association>,
    keys: Option<SrtpKeys>,
    early: Vec<Early>,
}

/// A datagram of the participant's, opened before the leg was keyed.
struct Early {
    now: Instant,
    transport: TransportContext,
    plain: BytesMut,
    rtcp: bool,
}

impl Leg {
    /// Whether it was started.
    pub(super) fn started(&self) -> bool {
        self.dtls.is_some()
    }

    /// When its handshake's next retransmission is due.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.dtls.as_ref()?.poll_timeout()
    }

    /// Sends its lost handshake flight again when due.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> Result<(), TransportError> {
        match &mut self.dtls {
            Some(dtls) => dtls.handle_timeout(now).map_err(rtc_error),
            None => Ok(()),
        }
    }
}

/// What kind of datagram it is, by its first byte (RFC 7983).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

/// The kind of `datagram`.
pub(super) fn kind_of(datagram: &[u8]) -> Kind {
    match datagram {
        [0..=3, ..] => Kind::Stun,
        [20..=63, ..] => Kind::Dtls,
        // an RTP-range first byte and an RTCP packet type in the second, which SRTCP leaves in
        // the clear (RFC 5761)
        [128..=191, 192..=223, ..] => Kind::Rtcp,
        [128..=191, ..] => Kind::Rtp,
        _ => Kind::Other,
    }
}

fn rtc_error(e: rtc::shared::error::Error) -> TransportError {
    TransportError(e.to_string())
}

impl WebRtcPeer {
    /// One datagram of the participant.
    pub(super) fn read_datagram(&mut self, datagram: TaggedBytesMut) -> Result<(), TransportError> {
        let (now, transport) = (datagram.now, datagram.transport);
        match kind_of(&datagram.message) {
            Kind::Stun => {
                if self.keys.is_none() {
                    self.tuple = Some(transport);
                }
                self.pc.handle_read(datagram).map_err(rtc_error)
            }
            Kind::Dtls => self.read_dtls(now, transport, &datagram.message),
            Kind::Rtp => self.read_srtp(now, transport, &datagram.message, false),
            Kind::Rtcp => self.read_srtp(now, transport, &datagram.message, true),
            Kind::Other => Err(TransportError("not a WebRTC datagram".into())),
        }
    }

    fn read_dtls(
        &mut self,
        now: Instant,
        transport: TransportContext,
        datagram: &[u8],
    ) -> Result<(), TransportError> {
        let Some(association) = self.participant.as_mut() else {
            return Err(TransportError("DTLS before the offer".into()));
        };
        self.tuple = Some(transport);
        let progress = association.handle(now, transport.peer_addr, datagram);
        while let Some(flight) = association.poll_transmit() {
            self.transmits.push_back(TaggedBytesMut {
                now,
                transport,
                message: flight,
            });
        }
        match progress.map_err(rtc_error)? {
            Progress::Keyed(keys) => {
                self.keys = Some(*keys);
                self.start_leg(now)
            }
            Progress::Closed => {
                let _ = self.pc.close();
                Ok(())
            }
            Progress::Nothing => Ok(()),
        }
    }

    fn read_srtp(
        &mut self,
        now: Instant,
        transport: TransportContext,
        datagram: &[u8],
        rtcp: bool,
    ) -> Result<(), TransportError> {
        let Some(keys) = self.keys.as_mut() else {
            return Err(TransportError("SRTP before the keys".into()));
        };
        let plain = if rtcp {
            keys.remote.decrypt_rtcp(datagram)
        } else {
            keys.remote.decrypt_rtp(datagram)
        }
        .map_err(rtc_error)?;
        self.tuple = Some(transport);
        if rtcp && let Ok(mut packets) = rtc::rtcp::packet::unmarshal(&mut plain.clone().freeze()) {
            self.read_rtcp(now, &mut packets);
            self.send.handle_rtcp(now, packets);
        }
        if self.leg.keys.is_none() {
            if self.leg.early.len() == MAX_EARLY {
                return Err(TransportError(
                    "SRTP long before the peer connection's leg".into(),
                ));
            }
            self.leg.early.push(Early {
                now,
                transport,
                plain,
                rtcp,
            });
            return Ok(());
        }
        self.hand_to_connection(now, transport, &plain, rtcp)
    }

    /// An opened datagram of the participant's, sealed on the leg for the connection.
    fn hand_to_connection(
        &mut self,
        now: Instant,
        transport: TransportContext,
        plain: &[u8],
        rtcp: bool,
    ) -> Result<(), TransportError> {
        let Some(leg_keys) = self.leg.keys.as_mut() else {
            return Ok(());
        };
        let resealed = if rtcp {
            leg_keys.local.encrypt_rtcp(plain)
        } else {
            leg_keys.local.encrypt_rtp(plain)
        }
        .map_err(rtc_error)?;
        self.pc
            .handle_read(TaggedBytesMut {
                now,
                transport,
                message: resealed,
            })
            .map_err(rtc_error)
    }

    /// Starts the leg once both the participant's keys and the connection's ICE are there.
    pub(super) fn start_leg(&mut self, now: Instant) -> Result<(), TransportError> {
        if self.leg.started() || self.keys.is_none() || !self.ice_connected {
            return Ok(());
        }
        let Some(tuple) = self.tuple else {
            return Ok(());
        };
        let identity = dtls::identity().map_err(rtc_error)?;
        self.leg.dtls =
            Some(Association::client(now, identity, tuple.peer_addr).map_err(rtc_error)?);
        self.feed_leg_flights(now)?;
        self.pump(now)
    }

    /// Carries everything the connection has to send to where it goes: its STUN answers out
    /// as they are, its DTLS to the leg's association (and that one's answers back), its SRTCP
    /// out sealed with the participant's key.
    pub(super) fn pump(&mut self, now: Instant) -> Result<(), TransportError> {
        while let Some(datagram) = self.pc.poll_write() {
            match kind_of(&datagram.message) {
                Kind::Stun => self.transmits.push_back(datagram),
                Kind::Dtls => self.hand_to_leg(now, &datagram)?,
                kind @ (Kind::Rtp | Kind::Rtcp) => {
                    let (Some(keys), Some(leg_keys)) = (self.keys.as_mut(), self.leg.keys.as_mut())
                    else {
                        continue;
                    };
                    let message = reseal(
                        &mut leg_keys.remote,
                        &mut keys.local,
                        &datagram.message,
                        kind,
                    )
                    .map_err(rtc_error)?;
                    self.transmits.push_back(TaggedBytesMut {
                        message,
                        ..datagram
                    });
                }
                Kind::Other => {}
            }
        }
        Ok(())
    }

    /// A DTLS datagram of the connection's for the leg's association; what it answers goes
    /// back to the connection as though the participant had sent it.
    fn hand_to_leg(
        &mut self,
        now: Instant,
        datagram: &TaggedBytesMut,
    ) -> Result<(), TransportError> {
        let (Some(association), Some(tuple)) = (self.leg.dtls.as_mut(), self.tuple) else {
            return Ok(());
        };
        let progress = association
            .handle(now, tuple.peer_addr, &datagram.message)
            .map_err(rtc_error)?;
        let keyed = matches!(progress, Progress::Keyed(_));
        if let Progress::Keyed(keys) = progress {
            self.leg.keys = Some(*keys);
        }
        self.feed_leg_flights(now)?;
        if keyed {
            for early in std::mem::take(&mut self.leg.early) {
                self.hand_to_connection(early.now, early.transport, &early.plain, early.rtcp)?;
            }
        }
        Ok(())
    }

    /// Sends the leg's handshake flight again when due, into the connection.
    pub(super) fn leg_timeout(&mut self, now: Instant) -> Result<(), TransportError> {
        self.leg.handle_timeout(now)?;
        self.feed_leg_flights(now)
    }

    /// Hands what the leg's association has to send to the connection, as though the
    /// participant had sent it.
    fn feed_leg_flights(&mut self, now: Instant) -> Result<(), TransportError> {
        let (Some(association), Some(tuple)) = (self.leg.dtls.as_mut(), self.tuple) else {
            return Ok(());
        };
        let mut flights = Vec::new();
        while let Some(flight) = association.poll_transmit() {
            flights.push(flight);
        }
        for message in flights {
            self.pc
                .handle_read(TaggedBytesMut {
                    now,
                    transport: tuple,
                    message,
                })
                .map_err(rtc_error)?;
        }
        Ok(())
    }
}

/// A datagram opened with `from` and sealed again with `to`.
fn reseal(
    from: &mut rtc::srtp::context::Context,
    to: &mut rtc::srtp::context::Context,
    datagram: &[u8],
    kind: Kind,
) -> Result<BytesMut, rtc::shared::error::Error> {
    if kind == Kind::Rtcp {
        to.encrypt_rtcp(&from.decrypt_rtcp(datagram)?)
    } else {
        to.encrypt_rtp(&from.decrypt_rtp(datagram)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_told_apart_by_their_first_bytes() {
        assert_eq!(kind_of(&[0, 1, 0, 0]), Kind::Stun);
        assert_eq!(kind_of(&[22, 254, 253]), Kind::Dtls);
        assert_eq!(kind_of(&[0x80, 102, 0, 1]), Kind::Rtp);
        assert_eq!(
            kind_of(&[0x80, 0x80 | 102, 0, 1]),
            Kind::Rtp,
            "a marker bit"
        );
        assert_eq!(kind_of(&[0x81, 205, 0, 4]), Kind::Rtcp);
        assert_eq!(kind_of(&[0x80, 200, 0, 6]), Kind::Rtcp);
        assert_eq!(kind_of(&[0xCA, 2]), Kind::Other, "a cascade link's");
        assert_eq!(kind_of(&[]), Kind::Other);
    }
}
