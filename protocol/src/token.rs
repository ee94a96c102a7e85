//! Access tokens: JWT (HS256) that name a meeting, an identity, a display name and a role.
//!
//! Verification is constant-time (ring's HMAC verify) and every failure maps to one
//! [`TokenError`] variant, so callers can log the cause while telling the client only that the
//! token was refused.

pub use crate::signaling::Role;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The claims a kaskade token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The meeting the token admits to.
    pub meeting: String,
    /// The stable identity of the holder (an e-mail address, a user id, ...).
    pub sub: String,
    /// The display name shown to others.
    pub name: String,
    /// The holder's role.
    pub role: Role,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// A reconnect token: its holder was admitted to the meeting, so a lock does not keep
    /// them out when they come back (after a lost connection or a lost node).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rejoin: bool,
    /// Token id (JWT `jti`). A token with an id is a one-time token: kaskade admits it once and
    /// refuses it ever after, even once its participant has left (the participant's reconnects
    /// use the one-time reconnect tokens of each `welcome`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The node the token is for (JWT `aud`): a token the locator hands out with a placement
    /// admits on that node only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The holder may place SIP calls from the meeting (moderators may anyway).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dial: bool,
}

impl Claims {
    /// A fresh random token id, for a one-time token.
    pub fn new_jti() -> String {
        let id: [u8; 16] = rand::random();
        URL_SAFE_NO_PAD.encode(id)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("token is malformed")]
    Malformed,
    /// The header names an algorithm other than HS256.
    #[error("token algorithm is not HS256")]
    WrongAlgorithm,
    /// The signature does not verify under this key.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token's `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// The token is valid but for another meeting.
    #[error("token is for another meeting")]
    WrongMeeting,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// Signs and verifies tokens with one HMAC-SHA256 key.
pub struct TokenKey {
    key: hmac::Key,
}

impl TokenKey {
    /// A key from an operator secret.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A random key that lives as long as the process (open joins: only tokens this process
    /// issued verify).
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self::from_secret(&secret)
    }

    /// Encodes and signs `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "HS256".into(),
            typ: Some("JWT".into()),
        };
        let mut token = String::with_capacity(256);
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(&header).unwrap_or_default(), &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims).unwrap_or_default(), &mut token);
        let signature = hmac::sign(&self.key, token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        token
    }

    /// Verifies `token` at time `now_secs` (Unix seconds) for `meeting`.
    pub fn verify(&self, token: &str, meeting: &str, now_secs: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(header)?;
        if header.alg != "HS256" {
            return Err(TokenError::WrongAlgorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let signed_len = header_and_payload_len(token);
        hmac::verify(&self.key, &token.as_bytes()[..signed_len], &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = decode_json(payload)?;
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        if claims.meeting != meeting {
            return Err(TokenError::WrongMeeting);
        }
        if claims
            .jti
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > MAX_JTI_LEN)
        {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }
}

/// Longest token id accepted: ids are kept until their token expires, so they stay small.
pub const MAX_JTI_LEN: usize = 64;

/// The ids of one-time tokens already used, each kept until its token expires (an expired
/// token is refused anyway), so the set holds at most the live one-time tokens.
#[derive(Debug, Default)]
pub struct SpentTokens {
    /// id -> expiry, Unix seconds.
    spent: HashMap<String, u64>,
    /// Size at which expired ids are swept out next.
    sweep_at: usize,
}

impl SpentTokens {
    /// Marks `jti` (of a token expiring at `exp`) used at `now_secs`; false when it was
    /// already.
    pub fn spend(&mut self, jti: &str, exp: u64, now_secs: u64) -> bool {
        if self.spent.len() >= self.sweep_at {
            self.sweep(now_secs);
            self.sweep_at = (self.spent.len() * 2).max(1024);
        }
        match self.spent.get_mut(jti) {
            Some(until) if *until > now_secs => false,
            Some(until) => {
                *until = exp;
                true
            }
            None => {
                self.spent.insert(jti.to_string(), exp);
                true
            }
        }
    }

    /// Forgets `jti`: its use did not admit anyone, so it may be presented again.
    pub fn forget(&mut self, jti: &str) {
        self.spent.remove(jti);
    }

    /// Forgets the ids of tokens expired at `now_secs`.
    pub fn sweep(&mut self, now_secs: u64) {
        self.spent.retain(|_, exp| *exp > now_secs);
    }

    /// Ids kept now.
    pub fn len(&self) -> usize {
        self.spent.len()
    }

    /// No id kept.
    pub fn is_empty(&self) -> bool {
        self.spent.is_empty()
    }
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Seconds since the Unix epoch, for token expiry.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            meeting: "standup".into(),
            sub: "alice@example.com".into(),
            name: "Alice".into(),
            role: Role::Moderator,
            exp,
            rejoin: false,
            jti: None,
            aud: None,
            dial: false,
        }
    }

    #[test]
    fn a_one_time_token_is_spent_once_and_forgotten_when_it_expires() {
        let mut spent = SpentTokens::default();
        assert!(spent.spend("a", 2_000, 1_000));
        assert!(!spent.spend("a", 2_000, 1_001), "replayed");
        assert!(spent.spend("b", 3_000, 1_001), "another id");
        spent.sweep(2_500);
        assert_eq!(spent.len(), 1, "a expired, b kept");
        assert!(!spent.spend("b", 3_000, 2_600));
    }

    #[test]
    fn token_ids_are_bounded() {
        let key = TokenKey::from_secret(b"s3cret");
        let mut c = claims(2_000);
        c.jti = Some(Claims::new_jti());
        let token = key.sign(&c);
        assert_eq!(key.verify(&token, "standup", 1_000), Ok(c.clone()));
        for bad in [String::new(), "x".repeat(MAX_JTI_LEN + 1)] {
            c.jti = Some(bad);
            let token = key.sign(&c);
            assert_eq!(
                key.verify(&token, "standup", 1_000),
                Err(TokenError::Malformed)
            );
        }
    }

    #[test]
    fn round_trips() {
        let key = TokenKey::from_secret(b"s3cret");
        let token = key.sign(&claims(2_000));
        assert_eq!(key.verify(&token, "standup", 1_000), Ok(claims(2_000)));
    }

    #[test]
    fn refuses_each_kind_of_bad_token() {
        let key = TokenKey::from_secret(b"s3cret");
        let token = key.sign(&claims(2_000));
        let other_key = TokenKey::from_secret(b"other");
        let (head, _) = token.rsplit_once('.').unwrap();
        let forged_payload = {
            let mut c = claims(2_000);
            c.role = Role::Moderator;
            c.meeting = "board".into();
            let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
            let header = head.split('.').next().unwrap();
            let sig = token.rsplit('.').next().unwrap();
            format!("{header}.{payload}.{sig}")
        };
        let none_alg = {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
            let payload = head.split('.').nth(1).unwrap();
            format!("{header}.{payload}.")
        };
        let cases: &[(&str, &str, u64, TokenError)] = &[
            ("", "standup", 1_000, TokenError::Malformed),
            ("a.b", "standup", 1_000, TokenError::Malformed),
            ("a.b.c.d", "standup", 1_000, TokenError::Malformed),
            (&none_alg, "standup", 1_000, TokenError::WrongAlgorithm),
            (&forged_payload, "board", 1_000, TokenError::BadSignature),
            (&token, "standup", 2_000, TokenError::Expired),
            (&token, "board", 1_000, TokenError::WrongMeeting),
        ];
        for (token, meeting, now, want) in cases {
            assert_eq!(
                key.verify(token, meeting, *now),
                Err(want.clone()),
                "{token}"
            );
        }
        assert_eq!(
            other_key.verify(&token, "standup", 1_000),
            Err(TokenError::BadSignature)
        );
    }
}
