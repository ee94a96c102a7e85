//! SRTP for SIP legs keyed by SDES (RFC 4568): the `a=crypto` attribute read and written, the
//! keys each side sends with, and the SRTP contexts that seal what kaskade sends to the far end
//! and open what it sends.
//!
//! The far end's media is opened here and enters the meeting as plain RTP; the core then seals
//! it for each WebRTC subscriber with that subscriber's own DTLS-SRTP keys (AES-256-GCM). So a
//! packet is re-keyed between the two legs, and no key of one side ever reaches the other.
//!
//! Only the suites room systems use are taken: `AES_CM_128_HMAC_SHA1_80` and `_32`, one inline
//! key each, no MKI and no session parameters (a crypto line asking for more is passed over for
//! the next one).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use rand::Rng;
use rtc::srtp::context::Context;
use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc::srtp::protection_profile::ProtectionProfile;
use std::fmt;
use sync_wrapper::SyncWrapper;

/// Packets of the far end's numbering a replay window spans: room systems reorder little, but
/// a jitter of a whole video frame's packets must not be taken for a replay.
const REPLAY_WINDOW: usize = 256;
/// Bytes of an AES-128 master key and of its salt.
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;

/// The SDES crypto suites kaskade takes, in its order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoSuite {
    /// AES-128 counter mode, HMAC-SHA1 tag of 80 bits: what every SRTP room system speaks.
    AesCm128HmacSha1_80,
    /// The same with a 32-bit tag (some phones, to save bytes).
    AesCm128HmacSha1_32,
}

impl CryptoSuite {
    /// Every suite, kaskade's preference first.
    pub const ALL: [CryptoSuite; 2] = [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
    ];

    /// The suite's name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    fn of_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            CryptoSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

/// A master key and its salt (30 bytes, as `inline:` carries them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_LEN + SALT_LEN]);

impl MasterKey {
    /// A fresh key from `rng` (a cryptographically secure one: `rand::rng()`).
    pub fn random(rng: &mut impl Rng) -> Self {
        let mut bytes = [0; KEY_LEN + SALT_LEN];
        rng.fill(&mut bytes[..]);
        Self(bytes)
    }

    fn inline(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn of_inline(text: &str) -> Option<Self> {
        let bytes = STANDARD.decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    fn key(&self) -> &[u8] {
        &self.0[..KEY_LEN]
    }

    fn salt(&self) -> &[u8] {
        &self.0[KEY_LEN..]
    }
}

/// Keys are never written to logs.
impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// One `a=crypto` attribute: its tag, suite and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crypto {
    /// The tag the answer names the chosen line by.
    pub tag: u32,
    /// The suite.
    pub suite: CryptoSuite,
    /// The key whoever wrote the line sends with.
    pub key: MasterKey,
}

impl Crypto {
    /// Reads the value of an `a=crypto` attribute (`1 AES_CM_128_HMAC_SHA1_80
    /// inline:KEY[|2^31]`); `None` for a suite, key form or parameter kaskade does not take.
    pub fn parse(value: &str) -> Option<Self> {
        let mut fields = value.split_whitespace();
        let tag = fields.next()?;
        if tag.is_empty() || tag.len() > 9 {
            return None;
        }
        let tag = tag.parse().ok()?;
        let suite = CryptoSuite::of_name(fields.next()?)?;
        let key_params = fields.next()?;
        // session parameters (UNENCRYPTED_SRTP, KDR, ...) change what the keys mean
        if fields.next().is_some() || key_params.contains(';') {
            return None;
        }
        let mut parts = key_params.strip_prefix("inline:")?.split('|');
        let key = MasterKey::of_inline(parts.next()?)?;
        // a lifetime is fine (kaskade re-keys long before it); an MKI is not taken
        if parts.any(|p| p.contains(':')) {
            return None;
        }
        Some(Self { tag, suite, key })
    }
}

impl fmt::Display for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            self.key.inline()
        )
    }
}

/// The SRTP of one media line as agreed: the suite and each side's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes {
    /// The suite both sides use.
    pub suite: CryptoSuite,
    /// What kaskade sends with.
    pub local: MasterKey,
    /// What the far end sends with.
    pub remote: MasterKey,
}

/// Why an SRTP packet was not sealed or opened.
#[derive(Debug, thiserror::Error)]
#[error("SRTP: {0}")]
pub struct SrtpError(String);

fn srtp_error(e: impl fmt::Display) -> SrtpError {
    SrtpError(e.to_string())
}

/// The SRTP contexts of one media line: RTP and RTCP both ways. Used through `&mut` only, so
/// a leg that holds them may be shared while it waits (rtc's contexts are not `Sync`).
pub struct Srtp {
    agreed: Sdes,
    outbound: SyncWrapper<Context>,
    inbound: SyncWrapper<Context>,
}

impl Srtp {
    /// Contexts for what `agreed` says.
    pub fn new(agreed: Sdes) -> Result<Self, SrtpError> {
        Ok(Self {
            agreed,
            outbound: SyncWrapper::new(context(agreed.suite, &agreed.local, false)?),
            inbound: SyncWrapper::new(context(agreed.suite, &agreed.remote, true)?),
        })
    }

    /// Takes the keys of a new offer and answer: a direction whose key and suite did not
    /// change keeps its context, and with it its streams' rollover counts (a re-INVITE after
    /// the far end's sequence numbers wrapped must not lose its stream).
    pub fn rekey(&mut self, agreed: Sdes) -> Result<(), SrtpError> {
        let suite_changed = agreed.suite != self.agreed.suite;
        if suite_changed || agreed.local != self.agreed.local {
            self.outbound = SyncWrapper::new(context(agreed.suite, &agreed.local, false)?);
        }
        if suite_changed || agreed.remote != self.agreed.remote {
            self.inbound = SyncWrapper::new(context(agreed.suite, &agreed.remote, true)?);
        }
        self.agreed = agreed;
        Ok(())
    }

    /// The keys in use.
    pub fn agreed(&self) -> &Sdes {
        &self.agreed
    }

    /// Seals an RTP packet for the far end.
    pub fn seal_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.outbound
            .get_mut()
            .encrypt_rtp(packet)
            .map_err(srtp_error)
    }

    /// Seals an RTCP compound packet for the far end.
    pub fn seal_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.outbound
            .get_mut()
            .encrypt_rtcp(packet)
            .map_err(srtp_error)
    }

    /// Opens the far end's SRTP packet (authenticated, not a replay).
    pub fn open_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.inbound
            .get_mut()
            .decrypt_rtp(packet)
            .map_err(srtp_error)
    }

    /// Opens the far end's SRTCP packet.
    pub fn open_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.inbound
            .get_mut()
            .decrypt_rtcp(packet)
            .map_err(srtp_error)
    }
}

/// One direction's context; the far end's (`inbound`) refuses replays.
fn context(suite: CryptoSuite, key: &MasterKey, inbound: bool) -> Result<Context, SrtpError> {
    let provider = rtc::crypto::default_provider().map_err(srtp_error)?;
    let (srtp, srtcp) = match inbound {
        true => (
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
        ),
        false => (None, None),
    };
    Context::new(
        key.key(),
        key.salt(),
        suite.profile(),
        srtp,
        srtcp,
        provider.crypto(),
    )
    .map_err(srtp_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn key(seed: u64) -> MasterKey {
        MasterKey::random(&mut StdRng::seed_from_u64(seed))
    }

    #[test]
    fn crypto_lines_read_back_what_they_wrote() {
        let crypto = Crypto {
            tag: 7,
            suite: CryptoSuite::AesCm128HmacSha1_32,
            key: key(1),
        };
        let written = crypto.to_string();
        assert!(
            written.starts_with("7 AES_CM_128_HMAC_SHA1_32 inline:"),
            "{written}"
        );
        assert_eq!(Crypto::parse(&written), Some(crypto));
    }

    #[test]
    fn room_systems_lines_are_read_and_what_kaskade_cannot_honour_is_not() {
        // RFC 4568's example key, with a lifetime as Polycom and Cisco write it
        let inline = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20";
        let line = format!("1 AES_CM_128_HMAC_SHA1_80 {inline}");
        let crypto = Crypto::parse(&line).expect("a lifetime is fine");
        assert_eq!(
            (crypto.tag, crypto.suite),
            (1, CryptoSuite::AesCm128HmacSha1_80)
        );
        for refused in [
            format!("1 AES_CM_128_HMAC_SHA1_80 {inline}|1:4"),
            format!("1 AES_CM_128_HMAC_SHA1_80 {inline} UNENCRYPTED_SRTP"),
            format!("1 AES_256_CM_HMAC_SHA1_80 {inline}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 {inline};inline:AAAA"),
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=".to_string(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:not base64!".to_string(),
            "1 AES_CM_128_HMAC_SHA1_80 key:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR".into(),
            format!("1234567890 AES_CM_128_HMAC_SHA1_80 {inline}"),
            format!("x AES_CM_128_HMAC_SHA1_80 {inline}"),
            "1 AES_CM_128_HMAC_SHA1_80".into(),
            String::new(),
        ] {
            assert_eq!(Crypto::parse(&refused), None, "{refused}");
        }
    }

    #[test]
    fn keys_are_not_logged() {
        let crypto = Crypto::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        )
        .unwrap();
        let shown = format!("{crypto:?}");
        assert!(
            !shown.contains("PS1u") && shown.contains("MasterKey(..)"),
            "{shown}"
        );
    }

    /// Both ends of a line, as the offer and answer leave them.
    fn ends(suite: CryptoSuite) -> (Srtp, Srtp) {
        let (ours, theirs) = (key(2), key(3));
        let kaskade = Srtp::new(Sdes {
            suite,
            local: ours,
            remote: theirs,
        })
        .unwrap();
        let far = Srtp::new(Sdes {
            suite,
            local: theirs,
            remote: ours,
        })
        .unwrap();
        (kaskade, far)
    }

    #[test]
    fn both_suites_seal_and_open_rtp_and_rtcp_both_ways() {
        for (suite, tag) in [
            (CryptoSuite::AesCm128HmacSha1_80, 10),
            (CryptoSuite::AesCm128HmacSha1_32, 4),
        ] {
            let (mut kaskade, mut far) = ends(suite);
            let rtp = [0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9, 1, 2, 3, 4];
            let sealed = kaskade.seal_rtp(&rtp).unwrap();
            assert_eq!(sealed.len(), rtp.len() + tag, "{suite:?}");
            assert_ne!(&sealed[12..16], &rtp[12..], "the payload is encrypted");
            assert_eq!(&far.open_rtp(&sealed).unwrap()[..], &rtp);
            assert!(far.open_rtp(&sealed).is_err(), "a replay is refused");
            let back = far.seal_rtp(&rtp).unwrap();
            assert_eq!(&kaskade.open_rtp(&back).unwrap()[..], &rtp);

            let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 9];
            let sealed = kaskade.seal_rtcp(&pli).unwrap();
            assert_eq!(&far.open_rtcp(&sealed).unwrap()[..], &pli);
        }
    }

    #[test]
    fn a_rekey_replaces_only_the_direction_whose_key_changed() {
        let (mut kaskade, mut far) = ends(CryptoSuite::AesCm128HmacSha1_80);
        let rtp = |seq: u16| {
            [
                0x80,
                0,
                (seq >> 8) as u8,
                seq as u8,
                0,
                0,
                0,
                160,
                0,
                0,
                0,
                9,
                7,
            ]
        };
        let first = far.seal_rtp(&rtp(1)).unwrap();
        kaskade.open_rtp(&first).unwrap();
        // a re-offer answered with a new key of kaskade's; the far end keeps its own
        let renewed = Sdes {
            local: key(4),
            ..*kaskade.agreed()
        };
        kaskade.rekey(renewed).unwrap();
        assert!(
            kaskade.open_rtp(&first).is_err(),
            "the far end's stream kept its context: the old packet is still a replay"
        );
        kaskade.open_rtp(&far.seal_rtp(&rtp(2)).unwrap()).unwrap();
        let sealed = kaskade.seal_rtp(&rtp(3)).unwrap();
        assert!(
            far.open_rtp(&sealed).is_err(),
            "kaskade sends with the new key"
        );
        far.rekey(Sdes {
            remote: key(4),
            ..*far.agreed()
        })
        .unwrap();
        assert_eq!(&far.open_rtp(&sealed).unwrap()[..], &rtp(3));
    }

    #[test]
    fn a_tampered_or_foreign_packet_is_refused() {
        let (mut kaskade, mut far) = ends(CryptoSuite::AesCm128HmacSha1_80);
        let rtp = [0x80, 0, 0, 2, 0, 0, 0, 160, 0, 0, 0, 9, 1, 2, 3, 4];
        let mut sealed = kaskade.seal_rtp(&rtp).unwrap();
        sealed[13] ^= 1;
        assert!(far.open_rtp(&sealed).is_err());
        let own = kaskade.seal_rtp(&rtp).unwrap();
        assert!(
            kaskade.open_rtp(&own).is_err(),
            "kaskade's own key does not open"
        );
        assert!(far.open_rtp(&rtp[..5]).is_err(), "nor does a fragment");
    }
}
