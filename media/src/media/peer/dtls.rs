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

    /// When [`Self::handle_timeout`] is due (a flight to send again).
    pub fn poll_timeout(&self) -> Option<Instant> {
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
