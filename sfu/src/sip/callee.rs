//! Whom a dial request calls: an address typed in, or a room of the locator's SIP directory
//! with the digest credentials this node holds for it (`--sip-credential NAME=USER:PASSWORD`).
//!
//! The credentials an entry names go to that entry's address only: a participant who types an
//! address gets the node's own account (`--sip-password`, for a trunk or proxy) at most.

use super::ua::DigestCredential;
use crate::cluster::locator::LocatorClient;
use crate::signaling::protocol::{DialRequest, ErrorCode};
use kaskade_protocol::directory::{DirectoryEntry, DirectoryListing, check_sip_uri};
use std::collections::HashMap;
use tracing::warn;

/// Digest credentials under the name directory entries know them by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCredential {
    /// What a directory entry's `credentials` says.
    pub name: String,
    /// The user name and password.
    pub credential: DigestCredential,
}

impl NamedCredential {
    /// `NAME=USER:PASSWORD` (the password may hold `:` and `=`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, rest) = text
            .split_once('=')
            .ok_or("credentials are NAME=USER:PASSWORD")?;
        let (user, password) = rest
            .split_once(':')
            .ok_or("credentials are NAME=USER:PASSWORD")?;
        if !kaskade_protocol::directory::valid_id(name) {
            return Err("credential names are 1 to 64 characters of A-Z a-z 0-9 _ . -".into());
        }
        if user.is_empty() {
            return Err("the credential's user name is empty".into());
        }
        Ok(Self {
            name: name.into(),
            credential: DigestCredential {
                user: user.into(),
                password: password.into(),
            },
        })
    }

    /// Back to `NAME=USER:PASSWORD`.
    pub fn to_arg(&self) -> String {
        format!(
            "{}={}:{}",
            self.name, self.credential.user, self.credential.password
        )
    }
}

/// Whom a call goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callee {
    /// The address dialled.
    pub uri: String,
    /// What its tile shows.
    pub name: String,
    /// Credentials for this call's challenges (the node's own when `None`).
    pub credential: Option<DigestCredential>,
}

/// The SIP directory as this node reads it from the locator, and the credentials it holds.
pub struct Directory {
    locator: Option<LocatorClient>,
    credentials: HashMap<String, DigestCredential>,
}

impl Directory {
    /// The directory of the node's `locator` (none for a node without one), with `credentials`.
    pub fn new(locator: Option<LocatorClient>, credentials: Vec<NamedCredential>) -> Self {
        Self {
            locator,
            credentials: credentials
                .into_iter()
                .map(|named| (named.name, named.credential))
                .collect(),
        }
    }

    /// The rooms participants may pick, by name.
    pub async fn listing(&self) -> Result<Vec<DirectoryListing>, (ErrorCode, String)> {
        Ok(self
            .entries()
            .await?
            .iter()
            .map(DirectoryEntry::listing)
            .collect())
    }

    /// Whom `request` calls, or why it cannot be placed.
    pub async fn callee(&self, request: &DialRequest) -> Result<Callee, (ErrorCode, String)> {
        let Some(id) = request.entry.as_deref() else {
            let uri = request.uri.trim();
            check_sip_uri(uri).map_err(|why| (ErrorCode::BadRequest, why))?;
            return Ok(Callee {
                uri: uri.into(),
                name: display_name(uri, &request.name),
                credential: None,
            });
        };
        let entries = self.entries().await?;
        let entry = entries.iter().find(|e| e.id == id).ok_or_else(|| {
            (
                ErrorCode::NotFound,
                format!("no room {id:?} in the directory"),
            )
        })?;
        self.resolve(entry, &request.name)
    }

    /// The call to directory `entry`, named `asked` (the entry's name when empty).
    fn resolve(&self, entry: &DirectoryEntry, asked: &str) -> Result<Callee, (ErrorCode, String)> {
        let credential = match &entry.credentials {
            None => None,
            Some(name) => Some(self.credentials.get(name).cloned().ok_or_else(|| {
                (
                    ErrorCode::CallFailed,
                    format!(
                        "{}: the directory says it needs the credentials {name:?}, which this \
                         node is not given (--sip-credential {name}=USER:PASSWORD)",
                        entry.name
                    ),
                )
            })?),
        };
        let asked = asked.trim();
        Ok(Callee {
            uri: entry.uri.clone(),
            name: display_name(
                &entry.uri,
                if asked.is_empty() { &entry.name } else { asked },
            ),
            credential,
        })
    }

    /// The whole directory, from the locator.
    async fn entries(&self) -> Result<Vec<DirectoryEntry>, (ErrorCode, String)> {
        let locator = self.locator.as_ref().ok_or_else(|| {
            (
                ErrorCode::NotFound,
                "this node has no SIP directory: it runs without a locator".to_string(),
            )
        })?;
        locator.directory().await.map_err(|e| {
            warn!("reading the SIP directory: {e}");
            (
                ErrorCode::Unavailable,
                format!("the SIP directory could not be read: {e}"),
            )
        })
    }
}

/// The tile's name: the one asked for, or the address's user part (its host when it has none).
fn display_name(uri: &str, asked: &str) -> String {
    let asked = asked.trim();
    if !asked.is_empty() {
        return asked.chars().take(64).collect();
    }
    let address = &uri[4..];
    let address = address.split([';', '?']).next().unwrap_or(address);
    match address.split_once('@') {
        Some((user, _)) if !user.is_empty() => user.into(),
        Some((_, host)) => host.into(),
        None => address.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(credentials: Option<&str>) -> DirectoryEntry {
        DirectoryEntry {
            id: "oslo".into(),
            name: "Oslo MCU".into(),
            uri: "sip:8001@mcu.example.org".into(),
            credentials: credentials.map(Into::into),
        }
    }

    fn directory() -> Directory {
        Directory::new(
            None,
            vec![NamedCredential::parse("east=kaskade:pa:ss=word").unwrap()],
        )
    }

    #[test]
    fn credentials_parse_with_colons_and_equals_in_the_password() {
        let named = NamedCredential::parse("east=kaskade:pa:ss=word").unwrap();
        assert_eq!(named.name, "east");
        assert_eq!(named.credential.user, "kaskade");
        assert_eq!(named.credential.password, "pa:ss=word");
        assert_eq!(named.to_arg(), "east=kaskade:pa:ss=word");
        for bad in ["east", "east=kaskade", "=u:p", "east=:p", "a b=u:p"] {
            assert!(NamedCredential::parse(bad).is_err(), "{bad}");
        }
        assert!(
            !format!("{named:?}").contains("word"),
            "Debug hides the password"
        );
    }

    #[test]
    fn an_entry_brings_its_credentials_and_its_name() {
        let callee = directory().resolve(&entry(Some("east")), "").unwrap();
        assert_eq!(callee.uri, "sip:8001@mcu.example.org");
        assert_eq!(callee.name, "Oslo MCU");
        assert_eq!(callee.credential.unwrap().user, "kaskade");
        let callee = directory().resolve(&entry(None), "Board room").unwrap();
        assert_eq!(callee.name, "Board room");
        assert_eq!(callee.credential, None);
        let (code, why) = directory().resolve(&entry(Some("west")), "").unwrap_err();
        assert_eq!(code, ErrorCode::CallFailed);
        assert!(why.contains("--sip-credential west="), "{why}");
    }

    #[tokio::test]
    async fn typed_addresses_are_checked_and_get_no_directory_credentials() {
        let directory = directory();
        let typed = |uri: &str| DialRequest {
            uri: uri.into(),
            ..DialRequest::default()
        };
        let callee = directory.callee(&typed(" sip:7001@x ")).await.unwrap();
        assert_eq!(
            (callee.uri.as_str(), callee.name.as_str()),
            ("sip:7001@x", "7001")
        );
        assert_eq!(callee.credential, None);
        let (code, _) = directory.callee(&typed("tel:123")).await.unwrap_err();
        assert_eq!(code, ErrorCode::BadRequest);
        let by_entry = DialRequest {
            entry: Some("oslo".into()),
            ..DialRequest::default()
        };
        let (code, why) = directory.callee(&by_entry).await.unwrap_err();
        assert_eq!(code, ErrorCode::NotFound, "{why}");
    }

    #[test]
    fn a_call_is_named_as_asked_or_after_its_address() {
        assert_eq!(
            display_name("sip:boardroom@mcu.example.org", ""),
            "boardroom"
        );
        assert_eq!(
            display_name("sip:mcu.example.org;transport=tcp", " "),
            "mcu.example.org"
        );
        assert_eq!(display_name("sip:@host", ""), "host");
        assert_eq!(display_name("sip:7001@x", "Oslo office"), "Oslo office");
    }
}
