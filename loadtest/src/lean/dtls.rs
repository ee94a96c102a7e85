//! DTLS-SRTP from the client's side (RFC 5764), on rtc-dtls's sans-IO endpoint: the client
//! offers only SRTP_AEAD_AES_256_GCM, checks the node's certificate against the answer's
//! fingerprint, and once the handshake completes exports the keying material
//! (`EXTRACTOR-dtls_srtp`) into two rtc-srtp contexts: ours (encrypting what we send) and the
//! node's (decrypting what it sends, with replay windows), exactly as rtc does for a peer
//! connection.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::{ConfigBuilder, ExtendedMasterSecretType, VerifyPeerCertificateFn};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::TransportProtocol;
use rtc::srtp::config::{Config as SrtpConfig, LABEL_EXTRACTOR_DTLS_SRTP};
use rtc::srtp::context::Context;
use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc::srtp::protection_profile::ProtectionProfile;

/// Replay windows of the node's streams (rtc's default).
const REPLAY_WINDOW: usize = 64;

/// The process's DTLS identity: a self-signed certificate and its SHA-256 fingerprint
/// (`AB:CD:...`), made once and shared by every lean participant.
pub fn identity() -> anyhow::Result<&'static (Certificate, String)> {
    static IDENTITY: OnceLock<(Certificate, String)> = OnceLock::new();
    if let Some(identity) = IDENTITY.get() {
        return Ok(identity);
    }
    let provider = provider()?;
    let certificate =
        Certificate::generate_self_signed(vec!["kaskade-loadtest".to_owned()], provider.crypto())
            .map_err(|e| anyhow!("generating the DTLS certificate: {e}"))?;
    let der = certificate
        .certificate
        .first()
        .context("the certificate has no DER")?;
    let fingerprint = fingerprint(der.as_ref());
    Ok(IDENTITY.get_or_init(|| (certificate, fingerprint)))
}

/// The crypto provider of rtc (ring).
pub fn provider() -> anyhow::Result<Arc<dyn RTCCryptoProvider>> {
    rtc::crypto::default_provider().map_err(|e| anyhow!("crypto provider: {e}"))
}

/// The SHA-256 fingerprint of a DER certificate, as SDP writes it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// The two SRTP contexts of a completed handshake.
pub struct SrtpContexts {
    /// Encrypts what we send.
    pub local: Context,
    /// Decrypts what the node sends.
    pub remote: Context,
}

/// One DTLS client association with the node.
pub struct DtlsClient {
    endpoint: Endpoint,
    remote: SocketAddr,
    provider: Arc<dyn RTCCryptoProvider>,
    done: bool,
}

impl DtlsClient {
    /// Starts the handshake with the node at `remote` (its first flight is then ready in
    /// [`DtlsClient::poll_transmit`]); the node's certificate must hash to `node_fingerprint`.
    pub fn connect(
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        node_fingerprint: &str,
    ) -> anyhow::Result<Self> {
        let provider = provider()?;
        let (certificate, _) = identity()?;
        let expected = node_fingerprint.to_ascii_uppercase();
        let verify: VerifyPeerCertificateFn =
            Arc::new(move |certs: &[Vec<u8>], _| match certs.first() {
                Some(der) if fingerprint(der) == expected => Ok(()),
                Some(_) => Err(rtc::shared::error::Error::ErrNoMatchingCertificateFingerprint),
                None => Err(rtc::shared::error::Error::ErrNonCertificate),
            });
        let config = ConfigBuilder::default()
            .with_crypto_provider(Arc::clone(&provider))
            .with_certificates(vec![certificate.clone()])
            .with_srtp_protection_profiles(vec![SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm])
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(true, Some(remote))
            .map_err(|e| anyhow!("DTLS configuration: {e}"))?;
        let mut endpoint = Endpoint::new(local, TransportProtocol::UDP, None);
        endpoint
            .connect(now, remote, Arc::new(config), None)
            .map_err(|e| anyhow!("DTLS connect: {e}"))?;
        Ok(Self {
            endpoint,
            remote,
            provider,
            done: false,
        })
    }

    /// Feeds one datagram from the node; returns the SRTP contexts when it completes the
    /// handshake.
    pub fn handle(
        &mut self,
        now: Instant,
        datagram: &[u8],
    ) -> anyhow::Result<Option<SrtpContexts>> {
        let events = self
            .endpoint
            .read(now, self.remote, None, BytesMut::from(datagram))
            .map_err(|e| anyhow!("DTLS: {e}"))?;
        let completed = events
            .iter()
            .any(|e| matches!(e, EndpointEvent::HandshakeComplete));
        if !completed || self.done {
            return Ok(None);
        }
        self.done = true;
        let state = self
            .endpoint
            .get_connection_state(self.remote)
            .context("DTLS: no connection state after the handshake")?;
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => ProtectionProfile::AeadAes256Gcm,
            other => return Err(anyhow!("the node chose SRTP profile {other:?}")),
        };
        let mut config = SrtpConfig {
            profile,
            ..SrtpConfig::default()
        };
        let material = state
            .export_keying_material(LABEL_EXTRACTOR_DTLS_SRTP, &[], config.keying_material_len())
            .map_err(|e| anyhow!("exporting keying material: {e}"))?;
        config
            .set_session_keys_from_keying_material(material.as_ref(), true)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Some(contexts(&config, self.provider.as_ref())?))
    }

    /// The next datagram to send to the node.
    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.endpoint.poll_transmit().map(|t| t.message)
    }

    /// When [`DtlsClient::handle_timeout`] is due (handshake retransmissions).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout(&self.remote)
    }

    /// Retransmits a lost flight when due; an error once the handshake gave up.
    pub fn handle_timeout(&mut self, now: Instant) -> anyhow::Result<()> {
        self.endpoint
            .handle_timeout(self.remote, now)
            .map_err(|e| anyhow!("DTLS handshake: {e}"))
    }
}

/// Our context and the node's from the session keys of `config`.
fn contexts(config: &SrtpConfig, provider: &dyn RTCCryptoProvider) -> anyhow::Result<SrtpContexts> {
    let keys = &config.keys;
    let local = Context::new(
        &keys.local_master_key,
        &keys.local_master_salt,
        config.profile,
        None,
        None,
        provider.crypto(),
    )
    .map_err(|e| anyhow!("local SRTP context: {e}"))?;
    let remote = Context::new(
        &keys.remote_master_key,
        &keys.remote_master_salt,
        config.profile,
        Some(srtp_replay_protection(REPLAY_WINDOW)),
        Some(srtcp_replay_protection(REPLAY_WINDOW)),
        provider.crypto(),
    )
    .map_err(|e| anyhow!("remote SRTP context: {e}"))?;
    Ok(SrtpContexts { local, remote })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_uppercase_colon_hex_of_sha256() {
        let fp = fingerprint(b"abc");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("BA:78:16:BF:8F:01:CF:EA"), "{fp}");
        let (certificate, fp) = identity().unwrap();
        assert_eq!(*fp, fingerprint(certificate.certificate[0].as_ref()));
        assert!(std::ptr::eq(identity().unwrap(), identity().unwrap()));
    }

    #[test]
    fn contexts_of_both_ends_interoperate() {
        let provider = provider().unwrap();
        let material: Vec<u8> = (0..88).collect();
        let end = |is_client| {
            let mut config = SrtpConfig {
                profile: ProtectionProfile::AeadAes256Gcm,
                ..SrtpConfig::default()
            };
            assert_eq!(config.keying_material_len(), 88);
            config
                .set_session_keys_from_keying_material(&material, is_client)
                .unwrap();
            contexts(&config, provider.as_ref()).unwrap()
        };
        let (mut client, mut server) = (end(true), end(false));
        let rtp = [0x80, 102, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xaa, 0xbb, 0xcc];
        let sealed = client.local.encrypt_rtp(&rtp).unwrap();
        assert_ne!(&sealed[12..15], &rtp[12..]);
        assert_eq!(&server.remote.decrypt_rtp(&sealed).unwrap()[..], &rtp);
        let back = server.local.encrypt_rtp(&rtp).unwrap();
        assert_eq!(&client.remote.decrypt_rtp(&back).unwrap()[..], &rtp);
        assert!(
            client.remote.decrypt_rtp(&back).is_err(),
            "replays are refused"
        );
        assert!(
            client.remote.decrypt_rtp(&sealed).is_err(),
            "our own keys do not open"
        );
    }
}
