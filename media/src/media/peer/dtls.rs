//! DTLS-SRTP (RFC 5764) run by the node itself, on rtc-dtls's sans-IO endpoint: the node's
//! certificate, and one association per DTLS conversation, which exports the SRTP keys when
//! its handshake completes.
//!
//! A peer has two: the *server* association with its participant (the browser or client
//! offers `a=setup:actpass`, the node answers `passive`), checked against the fingerprint of
//! its offer, whose keys protect everything between the node and the participant; and the
//! *client* association with the peer's own `RTCPeerConnection` (see `peer::leg`), which keys
//! the in-process leg on which rtc still does ICE and the receive side.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, VerifyPeerCertificateFn,
};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::TransportProtocol;
use rtc::shared::error::Error as RtcError;
use rtc::srtp::config::{Config as SrtpConfig, LABEL_EXTRACTOR_DTLS_SRTP};
use rtc::srtp::context::Context;
use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc::srtp::protection_profile::ProtectionProfile;

/// Replay windows of what the other end sends (rtc's default).
const REPLAY_WINDOW: usize = 64;

/// The node's DTLS certificate: one self-signed certificate for every peer of the process
/// (the SDP answers carry its fingerprint), made at its first use.
pub fn identity() -> Result<&'static Certificate, RtcError> {
    static IDENTITY: OnceLock<Certificate> = OnceLock::new();
    if let Some(certificate) = IDENTITY.get() {
        return Ok(certificate);
    }
    let certificate =
        Certificate::generate_self_signed(vec!["kaskade".to_owned()], provider()?.crypto())?;
    Ok(IDENTITY.get_or_init(|| certificate))
}

fn provider() -> Result<Arc<dyn RTCCryptoProvider>, RtcError> {
    rtc::crypto::default_provider().map_err(|e| RtcError::Crypto(e.to_string()))
}

/// The SHA-256 fingerprint of a DER certificate, as SDP writes it (upper-case hex, colons).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// The SRTP contexts a completed handshake keys, and the profile it chose.
pub struct SrtpKeys {
    /// Protects what this end sends.
    pub local: Context,
    /// Opens what the other end sends (with replay windows).
    pub remote: Context,
    /// The profile, named as browsers' statistics name it (`SRTP_AEAD_AES_256_GCM`).
    pub profile: &'static str,
}

/// What a datagram did to an association.
pub enum Progress {
    /// Nothing the caller must act on.
    Nothing,
    /// The handshake completed: these are the SRTP keys.
    Keyed(Box<SrtpKeys>),
    /// The other end closed the association.
    Closed,
}

/// One DTLS conversation with one remote address.
pub struct Association {
    endpoint: Endpoint,
    remote: Option<SocketAddr>,
    is_client: bool,
    keyed: bool,
}

impl Association {
    /// The node's side of a participant's handshake: it answers the participant's first
    /// flight, offers `profiles`, and accepts only a certificate whose SHA-256 fingerprint is
    /// `expected` (from the participant's offer).
    pub fn server(
        identity: &Certificate,
        expected: String,
        profiles: Vec<SrtpProtectionProfile>,
    ) -> Result<Self, RtcError> {
        let expected = expected.to_ascii_uppercase();
        let verify: VerifyPeerCertificateFn =
            Arc::new(move |certs: &[Vec<u8>], _| match certs.first() {
                Some(der) if fingerprint(der) == expected => Ok(()),
                Some(_) => Err(RtcError::ErrNoMatchingCertificateFingerprint),
                None => Err(RtcError::ErrNonCertificate),
            });
        let config = ConfigBuilder::default()
            .with_crypto_provider(provider()?)
            .with_certificates(vec![identity.clone()])
            .with_srtp_protection_profiles(profiles)
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(false, None)?;
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Ok(Self {
            endpoint: Endpoint::new(unspecified, TransportProtocol::UDP, Some(Arc::new(config))),
            remote: None,
            is_client: false,
            keyed: false,
        })
    }

    /// A client handshake with `remote`, trusting whatever certificate it shows (it is the
    /// node's own peer connection, in process); its first flight is then ready in
    /// [`Self::poll_transmit`].
    pub fn client(
        now: Instant,
        identity: &Certificate,
        remote: SocketAddr,
    ) -> Result<Self, RtcError> {
        let config = ConfigBuilder::default()
            .with_crypto_provider(provider()?)
            .with_certificates(vec![identity.clone()])
            .with_srtp_protection_profiles(vec![SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm])
            .with_insecure_skip_verify(true)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(true, Some(remote))?;
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut endpoint = Endpoint::new(unspecified, TransportProtocol::UDP, None);
        endpoint.connect(now, remote, Arc::new(config), None)?;
        Ok(Self {
            endpoint,
            remote: Some(remote),
            is_client: true,
            keyed: false,
        })
    }

    /// Feeds one DTLS datagram from `remote`.
    pub fn handle(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        datagram: &[u8],
    ) -> Result<Progress, RtcError> {
        self.remote = Some(remote);
        let events = self
            .endpoint
            .read(now, remote, None, BytesMut::from(datagram))?;
        if events
            .iter()
            .any(|e| matches!(e, EndpointEvent::PeerClosed))
        {
            return Ok(Progress::Closed);
        }
        let completed = events
            .iter()
            .any(|e| matches!(e, EndpointEvent::HandshakeComplete));
        if !completed || self.keyed {
            return Ok(Progress::Nothing);
        }
        self.keyed = true;
        Ok(Progress::Keyed(Box::new(self.export_keys(remote)?)))
    }

    /// The next datagram to send to the other end.
    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.endpoint.poll_transmit().map(|t| t.message)
    }

    /// When [`Self::handle_timeout`] is due (a flight to send again); never once keyed (a
    /// lost last flight is sent again when the other end repeats its own).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.keyed {
            return None;
        }
        self.endpoint.poll_timeout(self.remote.as_ref()?)
    }

    /// Sends a lost flight again when due; an error once the handshake gave up.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RtcError> {
        match self.remote {
            Some(remote) => self.endpoint.handle_timeout(remote, now),
            None => Ok(()),
        }
    }

    fn export_keys(&self, remote: SocketAddr) -> Result<SrtpKeys, RtcError> {
        let state = self
            .endpoint
            .get_connection_state(remote)
            .ok_or(RtcError::ErrConnClosed)?;
        let (profile, name) = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => {
                (ProtectionProfile::AeadAes256Gcm, "SRTP_AEAD_AES_256_GCM")
            }
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => {
                (ProtectionProfile::AeadAes128Gcm, "SRTP_AEAD_AES_128_GCM")
            }
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => (
                ProtectionProfile::Aes128CmHmacSha1_80,
                "SRTP_AES128_CM_HMAC_SHA1_80",
            ),
            _ => return Err(RtcError::ErrNoSuchSrtpProfile),
        };
        let mut config = SrtpConfig {
            profile,
            ..SrtpConfig::default()
        };
        let material = state.export_keying_material(
            LABEL_EXTRACTOR_DTLS_SRTP,
            &[],
            config.keying_material_len(),
        )?;
        config.set_session_keys_from_keying_material(material.as_ref(), self.is_client)?;
        let crypto = provider()?;
        let keys = &config.keys;
        let local = Context::new(
            &keys.local_master_key,
            &keys.local_master_salt,
            profile,
            None,
            None,
            crypto.crypto(),
        )?;
        let remote = Context::new(
            &keys.remote_master_key,
            &keys.remote_master_salt,
            profile,
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
            crypto.crypto(),
        )?;
        Ok(SrtpKeys {
            local,
            remote,
            profile: name,
        })
    }
}

/// The SHA-256 fingerprint an offer gives for its DTLS certificate (media level or session
/// level), or `None` when it gives none of that algorithm.
pub fn offered_fingerprint(offer: &rtc::sdp::SessionDescription) -> Option<String> {
    let sha256 = |value: &str| {
        let (algorithm, fingerprint) = value.trim().split_once(' ')?;
        algorithm
            .eq_ignore_ascii_case("sha-256")
            .then(|| fingerprint.trim().to_owned())
    };
    offer
        .media_descriptions
        .iter()
        .filter_map(|m| m.attribute("fingerprint").flatten())
        .chain(offer.attribute("fingerprint").map(String::as_str))
        .find_map(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(name: &str) -> Certificate {
        Certificate::generate_self_signed(vec![name.to_owned()], provider().unwrap().crypto())
            .unwrap()
    }

    /// Carries every flight between `client` and `server` until neither has more to say;
    /// returns what each handshake ended in, once keyed.
    fn handshake(
        now: Instant,
        client: &mut Association,
        server: &mut Association,
    ) -> (Option<SrtpKeys>, Option<SrtpKeys>) {
        let (client_addr, server_addr): (SocketAddr, SocketAddr) = (
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:6000".parse().unwrap(),
        );
        let (mut client_keys, mut server_keys) = (None, None);
        for _ in 0..10 {
            let mut quiet = true;
            while let Some(flight) = client.poll_transmit() {
                quiet = false;
                if let Ok(Progress::Keyed(keys)) = server.handle(now, client_addr, &flight) {
                    server_keys = Some(*keys);
                }
            }
            while let Some(flight) = server.poll_transmit() {
                quiet = false;
                if let Ok(Progress::Keyed(keys)) = client.handle(now, server_addr, &flight) {
                    client_keys = Some(*keys);
                }
            }
            if quiet {
                break;
            }
        }
        (client_keys, server_keys)
    }

    #[test]
    fn a_participant_whose_certificate_matches_its_offer_gets_keys_that_interoperate() {
        let now = Instant::now();
        let participant = certificate("participant");
        let expected = fingerprint(participant.certificate[0].as_ref());
        let mut server = Association::server(
            identity().unwrap(),
            expected,
            vec![SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm],
        )
        .unwrap();
        let mut client =
            Association::client(now, &participant, "10.0.0.2:6000".parse().unwrap()).unwrap();
        let (Some(mut client_keys), Some(mut server_keys)) =
            handshake(now, &mut client, &mut server)
        else {
            panic!("both ends keyed");
        };
        assert_eq!(server_keys.profile, "SRTP_AEAD_AES_256_GCM");
        assert_eq!(server.poll_timeout(), None, "no timer once keyed");
        let rtp = [0x80, 102, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xaa, 0xbb, 0xcc];
        let sealed = client_keys.local.encrypt_rtp(&rtp).unwrap();
        assert_eq!(&server_keys.remote.decrypt_rtp(&sealed).unwrap()[..], &rtp);
        let back = server_keys.local.encrypt_rtp(&rtp).unwrap();
        assert_eq!(&client_keys.remote.decrypt_rtp(&back).unwrap()[..], &rtp);
    }

    #[test]
    fn a_certificate_other_than_the_offer_names_is_refused() {
        let now = Instant::now();
        let offered = fingerprint(certificate("offered").certificate[0].as_ref());
        let mut server = Association::server(
            identity().unwrap(),
            offered,
            vec![SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm],
        )
        .unwrap();
        let mut client = Association::client(
            now,
            &certificate("impostor"),
            "10.0.0.2:6000".parse().unwrap(),
        )
        .unwrap();
        let (_, server_keys) = handshake(now, &mut client, &mut server);
        assert!(server_keys.is_none(), "the impostor gets no keys");
    }

    #[test]
    fn the_offer_names_its_sha256_fingerprint_at_media_or_session_level() {
        let parse = |sdp: &str| {
            let offer =
                rtc::sdp::SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp)).unwrap();
            offered_fingerprint(&offer)
        };
        let head = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
        let media = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n";
        assert_eq!(
            parse(&format!("{head}{media}a=fingerprint:sha-256 AB:CD\r\n")),
            Some("AB:CD".to_owned())
        );
        assert_eq!(
            parse(&format!("{head}a=fingerprint:sha-256 EF:01\r\n{media}")),
            Some("EF:01".to_owned())
        );
        assert_eq!(
            parse(&format!("{head}{media}a=fingerprint:sha-1 AB:CD\r\n")),
            None
        );
        assert_eq!(parse(&format!("{head}{media}")), None);
    }
}
