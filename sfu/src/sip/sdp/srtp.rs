//! Which lines of a SIP leg's SDP go by SRTP, and with which keys: the node's policy, the
//! protection of each offer kaskade makes, the `a=crypto` lines it writes, and how it reads the
//! far end's (RFC 4568).

use super::{Agreement, LocalMedia};
use crate::sip::sdes::{Crypto, CryptoSuite, MasterKey, Sdes};
use rand::Rng;
use sdp_types::Media;

/// When a node's SIP legs use SRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SrtpPolicy {
    /// Plain RTP only: `RTP/SAVP` lines are refused, `a=crypto` ignored.
    Off,
    /// SRTP whenever the far end takes it, plain RTP with those that do not: kaskade offers
    /// `RTP/AVP` with `a=crypto` (taken by endpoints that do best-effort SRTP, ignored by those
    /// without SRTP) and, when that is refused as unacceptable, `RTP/SAVP`.
    #[default]
    BestEffort,
    /// SRTP only: kaskade offers `RTP/SAVP` and refuses lines without keys.
    Mandatory,
}

/// How one offer of kaskade's protects its media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferedProtection {
    /// `RTP/AVP`, no keys.
    Plain,
    /// `RTP/AVP` with `a=crypto`: SRTP if the answer brings keys, plain RTP if not.
    BestEffort,
    /// `RTP/SAVP` with `a=crypto`.
    Secure,
}

impl SrtpPolicy {
    /// The offers kaskade tries when it dials, in order: the next is sent only when the far
    /// end refused the one before as unacceptable (488, 415, 606).
    pub fn offers(self) -> &'static [OfferedProtection] {
        match self {
            SrtpPolicy::Off => &[OfferedProtection::Plain],
            SrtpPolicy::BestEffort => &[OfferedProtection::BestEffort, OfferedProtection::Secure],
            SrtpPolicy::Mandatory => &[OfferedProtection::Secure],
        }
    }
}

/// The keys kaskade sends a leg's audio and video with, when they are sent by SRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalKeys {
    /// The audio line's.
    pub audio: MasterKey,
    /// The video line's.
    pub video: MasterKey,
}

impl LocalKeys {
    /// Fresh keys from `rng` (a cryptographically secure one: `rand::rng()`).
    pub fn random(rng: &mut impl Rng) -> Self {
        Self {
            audio: MasterKey::random(rng),
            video: MasterKey::random(rng),
        }
    }

    /// Keeps the keys `agreement` sends with, so that answers to later re-offers in the call
    /// send with the same ones.
    pub fn keep(&mut self, agreement: &Agreement) {
        if let Some(keys) = agreement.audio.as_ref().and_then(|l| l.srtp) {
            self.audio = keys.local;
        }
        if let Some(keys) = agreement.video.as_ref().and_then(|l| l.srtp) {
            self.video = keys.local;
        }
    }

    pub(super) fn of(&self, kind: &str) -> MasterKey {
        if kind == "video" {
            self.video
        } else {
            self.audio
        }
    }
}

/// Whether an m-line is RTP kaskade takes: `Some(false)` for plain RTP (`RTP/AVP`, or
/// `RTP/AVPF` whose feedback kaskade also takes), `Some(true)` for SRTP (`RTP/SAVP`,
/// `RTP/SAVPF`), `None` for anything else (BFCP over TCP, DTLS-SRTP, ...).
fn secure_rtp(media: &Media) -> Option<bool> {
    let proto = media.proto.to_ascii_uppercase();
    match proto.as_str() {
        "RTP/AVP" | "RTP/AVPF" => Some(false),
        "RTP/SAVP" | "RTP/SAVPF" => Some(true),
        _ => None,
    }
}

/// The `a=crypto` lines of an m-line that kaskade can honour, in their writer's order.
fn cryptos(media: &Media) -> impl Iterator<Item = Crypto> + '_ {
    media
        .attributes
        .iter()
        .filter(|a| a.attribute.eq_ignore_ascii_case("crypto"))
        .filter_map(|a| Crypto::parse(a.value.as_deref()?))
}

/// kaskade offers each suite under its place in [`CryptoSuite::ALL`], from 1.
pub(super) fn offer_keys(media: &mut Media, protection: OfferedProtection, key: MasterKey) {
    if protection == OfferedProtection::Plain {
        return;
    }
    for (tag, suite) in (1..).zip(CryptoSuite::ALL) {
        let crypto = Crypto { tag, suite, key };
        media.add_attribute_with_value("crypto", crypto.to_string());
    }
}

/// How a line of the far end's answer is protected: `Some(None)` for plain RTP,
/// `Some(Some(keys))` for SRTP, `None` when the line cannot be used (SRTP without keys kaskade
/// offered, plain RTP under a mandatory policy, not RTP at all).
pub(super) fn answered_keys(
    media: &Media,
    local: &LocalMedia,
    offered: OfferedProtection,
) -> Option<Option<Sdes>> {
    let secure = secure_rtp(media)?;
    let chosen = cryptos(media).next();
    match chosen {
        Some(crypto) if offered != OfferedProtection::Plain => {
            let ours = CryptoSuite::ALL.get(usize::try_from(crypto.tag).ok()?.checked_sub(1)?);
            (ours == Some(&crypto.suite)).then_some(Some(Sdes {
                suite: crypto.suite,
                local: local.keys.of(&media.media),
                remote: crypto.key,
            }))
        }
        _ if secure || local.srtp == SrtpPolicy::Mandatory => None,
        _ => Some(None),
    }
}

/// How kaskade answers an offered line under its policy: `Some((None, None))` plain RTP,
/// `Some((Some(crypto), Some(keys)))` SRTP with the far end's preferred suite kaskade takes
/// (the crypto line to answer with), `None` when the line is refused.
pub(super) fn answering_keys(
    media: &Media,
    local: &LocalMedia,
) -> Option<(Option<Crypto>, Option<Sdes>)> {
    let secure = secure_rtp(media)?;
    let theirs = cryptos(media).next();
    match (local.srtp, theirs) {
        (SrtpPolicy::Off, _) if secure => None,
        (SrtpPolicy::Off, _) => Some((None, None)),
        (_, Some(theirs)) => {
            let ours = Crypto {
                key: local.keys.of(&media.media),
                ..theirs
            };
            let keys = Sdes {
                suite: theirs.suite,
                local: ours.key,
                remote: theirs.key,
            };
            Some((Some(ours), Some(keys)))
        }
        (SrtpPolicy::Mandatory, None) => None,
        (SrtpPolicy::BestEffort, None) => (!secure).then_some((None, None)),
    }
}
