//! ICE against the node, from the controlling side: the client sends STUN binding requests
//! (USERNAME `nodeUfrag:ourUfrag`, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY
//! with the node's password, FINGERPRINT) to the node's candidates until one answers, then keeps
//! sending them to that address as consent checks (RFC 7675). Only the answers to our own
//! requests, with the node's integrity, count.
//!
//! The node announces ICE-lite, but rtc's agent still checks a pair before it accepts its
//! nomination: it answers a USE-CANDIDATE request only once its own check of that pair (a
//! request keyed with our password) has been answered. So the client answers the node's
//! requests too, as every full agent does.

use super::sdp::{Answer, OfferParams};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::crypto::RTCCrypto;
use rtc::ice::attributes::control::AttrControlling;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, TransactionId};
use rtc::stun::textattrs::{TextAttribute, Username};
use rtc::stun::xoraddr::XorMappedAddress;

/// How often checks go out before the node has answered.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How often consent checks go out once the node has answered.
pub const CONSENT_INTERVAL: Duration = Duration::from_secs(2);
/// Transactions remembered (older answers are ignored).
const PENDING: usize = 16;
/// The priority of our (host, UDP) candidate: RFC 8445 5.1.2.1 with type preference 126.
const PRIORITY: u32 = (126 << 24) | (65_535 << 8) | 255;

/// The credentials of both sides.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Our ufrag.
    pub local_ufrag: String,
    /// The node's ufrag.
    pub remote_ufrag: String,
    /// Our password (keys the node's requests and our answers).
    pub local_pwd: String,
    /// The node's password (keys our requests and its answers).
    pub remote_pwd: String,
}

impl Credentials {
    /// Ours from our `offer`, the node's from its `answer`.
    pub fn of(offer: &OfferParams, answer: &Answer) -> Self {
        Self {
            local_ufrag: offer.ufrag.clone(),
            remote_ufrag: answer.ufrag.clone(),
            local_pwd: offer.pwd.clone(),
            remote_pwd: answer.pwd.clone(),
        }
    }
}

/// The controlling agent's side of the checks.
pub struct IceChecks {
    credentials: Credentials,
    tie_breaker: u64,
    pending: Vec<TransactionId>,
    /// When the node last answered.
    pub last_answer: Option<Instant>,
}

impl IceChecks {
    /// Checks with `credentials` and our random `tie_breaker`.
    pub fn new(credentials: Credentials, tie_breaker: u64) -> Self {
        Self {
            credentials,
            tie_breaker,
            pending: Vec::with_capacity(PENDING),
            last_answer: None,
        }
    }

    /// The next binding request (a new transaction, remembered).
    pub fn request(&mut self, crypto: &dyn RTCCrypto) -> anyhow::Result<Vec<u8>> {
        let c = &self.credentials;
        let transaction = TransactionId::new();
        let mut msg = Message::new();
        let setters: [Box<dyn Setter + '_>; 8] = [
            Box::new(BINDING_REQUEST),
            Box::new(transaction),
            Box::new(Username::new(
                ATTR_USERNAME,
                format!("{}:{}", c.remote_ufrag, c.local_ufrag),
            )),
            Box::new(PriorityAttr(PRIORITY)),
            Box::new(AttrControlling(self.tie_breaker)),
            Box::<UseCandidateAttr>::default(),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                c.remote_pwd.clone(),
                crypto,
            )),
            Box::new(FINGERPRINT),
        ];
        msg.build(&setters)?;
        if self.pending.len() == PENDING {
            self.pending.remove(0);
        }
        self.pending.push(transaction);
        Ok(msg.raw)
    }

    /// Our answer to `datagram` from `from` if it is the node's binding request to us (its
    /// username and integrity checked).
    pub fn answer_request(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        crypto: &dyn RTCCrypto,
    ) -> Option<Vec<u8>> {
        let c = &self.credentials;
        let mut msg = Message::new();
        msg.unmarshal_binary(datagram).ok()?;
        if msg.typ != BINDING_REQUEST {
            return None;
        }
        let username = TextAttribute::get_from_as(&msg, ATTR_USERNAME).ok()?;
        let (to, _) = username.text.split_once(':')?;
        if to != c.local_ufrag
            || MessageIntegrity::check(&mut msg, c.local_pwd.as_bytes(), crypto).is_err()
        {
            return None;
        }
        let mut answer = Message::new();
        let setters: [Box<dyn Setter + '_>; 5] = [
            Box::new(BINDING_SUCCESS),
            Box::new(msg.transaction_id),
            Box::new(XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                c.local_pwd.clone(),
                crypto,
            )),
            Box::new(FINGERPRINT),
        ];
        answer.build(&setters).ok()?;
        Some(answer.raw)
    }

    /// Whether `datagram` is the node's success answer to one of our pending requests (its
    /// integrity checked); notes the time of the answer.
    pub fn is_answer(&mut self, datagram: &[u8], now: Instant, crypto: &dyn RTCCrypto) -> bool {
        let mut msg = Message::new();
        if msg.unmarshal_binary(datagram).is_err() || msg.typ != BINDING_SUCCESS {
            return false;
        }
        let Some(index) = self.pending.iter().position(|t| *t == msg.transaction_id) else {
            return false;
        };
        let key = self.credentials.remote_pwd.as_bytes();
        if MessageIntegrity::check(&mut msg, key, crypto).is_err() {
            return false;
        }
        self.pending.remove(index);
        self.last_answer = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::attributes::ATTR_PRIORITY;
    use rtc::stun::message::Getter;

    fn checks() -> IceChecks {
        IceChecks::new(
            Credentials {
                local_ufrag: "mine".into(),
                local_pwd: "my-password-my-password".into(),
                remote_ufrag: "7node".into(),
                remote_pwd: "node-password-node-password".into(),
            },
            42,
        )
    }

    /// The node's answer to `request`, keyed with `pwd`.
    fn answer_to(request: &[u8], pwd: &str, crypto: &dyn RTCCrypto) -> Vec<u8> {
        let mut req = Message::new();
        req.unmarshal_binary(request).unwrap();
        let mut msg = Message::new();
        let setters: [Box<dyn Setter + '_>; 4] = [
            Box::new(BINDING_SUCCESS),
            Box::new(req.transaction_id),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.into(),
                crypto,
            )),
            Box::new(FINGERPRINT),
        ];
        msg.build(&setters).unwrap();
        msg.raw
    }

    #[test]
    fn requests_carry_what_an_ice_lite_node_checks() {
        let provider = rtc::crypto::default_provider().unwrap();
        let crypto = provider.crypto();
        let raw = checks().request(crypto).unwrap();
        assert!(raw[0] < 4, "RFC 7983: STUN starts with 0..=3");
        let mut msg = Message::new();
        msg.unmarshal_binary(&raw).unwrap();
        assert_eq!(msg.typ, BINDING_REQUEST);
        let username = TextAttribute::get_from_as(&msg, ATTR_USERNAME).unwrap();
        assert_eq!(username.text, "7node:mine");
        assert!(UseCandidateAttr::is_set(&msg));
        let mut control = AttrControlling::default();
        control.get_from(&msg).unwrap();
        assert_eq!(control.0, 42);
        assert!(msg.get(ATTR_PRIORITY).is_ok());
        MessageIntegrity::check(&mut msg, b"node-password-node-password", crypto).unwrap();
        FINGERPRINT.check(&msg).unwrap();
    }

    #[test]
    fn only_keyed_answers_to_our_requests_count() {
        let provider = rtc::crypto::default_provider().unwrap();
        let crypto = provider.crypto();
        let mut ice = checks();
        let request = ice.request(crypto).unwrap();
        let now = Instant::now();
        assert!(!ice.is_answer(&answer_to(&request, "wrong", crypto), now, crypto));
        assert!(
            !ice.is_answer(&request, now, crypto),
            "a request is no answer"
        );
        assert!(!ice.is_answer(b"\x00\x01garbage", now, crypto));
        assert!(!ice.is_answer(&[], now, crypto));
        let good = answer_to(&request, "node-password-node-password", crypto);
        assert!(ice.is_answer(&good, now, crypto));
        assert_eq!(ice.last_answer, Some(now));
        assert!(
            !ice.is_answer(&good, now, crypto),
            "each transaction answers once"
        );
        let mut other = checks();
        let foreign = answer_to(
            &other.request(crypto).unwrap(),
            "node-password-node-password",
            crypto,
        );
        assert!(!ice.is_answer(&foreign, now, crypto));
    }

    #[test]
    fn the_nodes_checks_are_answered_when_keyed_for_us() {
        let provider = rtc::crypto::default_provider().unwrap();
        let crypto = provider.crypto();
        let ice = checks();
        let from: SocketAddr = "127.0.0.1:18000".parse().unwrap();
        // the node's request: USERNAME ours:its, keyed with our password
        let request = |username: &str, pwd: &str| {
            let mut msg = Message::new();
            let setters: [Box<dyn Setter + '_>; 5] = [
                Box::new(BINDING_REQUEST),
                Box::new(TransactionId::new()),
                Box::new(Username::new(ATTR_USERNAME, username.into())),
                Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                    pwd.into(),
                    crypto,
                )),
                Box::new(FINGERPRINT),
            ];
            msg.build(&setters).unwrap();
            msg
        };
        let good = request("mine:7node", "my-password-my-password");
        let raw = ice.answer_request(&good.raw, from, crypto).unwrap();
        let mut answer = Message::new();
        answer.unmarshal_binary(&raw).unwrap();
        assert_eq!(answer.typ, BINDING_SUCCESS);
        assert_eq!(answer.transaction_id, good.transaction_id);
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&answer).unwrap();
        assert_eq!((mapped.ip, mapped.port), (from.ip(), from.port()));
        MessageIntegrity::check(&mut answer, b"my-password-my-password", crypto).unwrap();
        let wrong_key = request("mine:7node", "node-password-node-password");
        assert!(ice.answer_request(&wrong_key.raw, from, crypto).is_none());
        let not_us = request("other:7node", "my-password-my-password");
        assert!(ice.answer_request(&not_us.raw, from, crypto).is_none());
        assert!(
            ice.answer_request(&raw, from, crypto).is_none(),
            "answers are not answered"
        );
        assert!(ice.answer_request(b"\x00\x01", from, crypto).is_none());
    }
}
