//! Whom a call goes to (the node's dial plan): an address typed in, a room of the locator's SIP
//! directory with the digest credentials this node holds for it (`--sip-credential
//! NAME=USER:PASSWORD`), or a participant's phone number through the phone trunk
//! (`--sip-phone-uri sip:{number}@trunk`).
//!
//! The credentials an entry names go to that entry's address only: a participant who types an
//! address or a number gets the node's own account (`--sip-password`, for a trunk or proxy) at
//! most.

use super::ua::DigestCredential;
use crate::cluster::locator::{LocatorClient, LocatorError};
use crate::signaling::protocol::{DialRequest, ErrorCode};
use kaskade_protocol::directory::{
    DialIn, DirectoryEntry, DirectoryListing, check_sip_uri, valid_pin,
};
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
    /// A phone: sound only, no video offered.
    pub phone: bool,
}

/// Longest phone number dialled (E.164 has 15 digits; trunks may want a prefix).
const MAX_DIGITS: usize = 20;

/// The node's dial plan: the SIP directory as it reads it from the locator, the credentials it
/// holds, and its phone trunk.
pub struct Dialplan {
    locator: Option<LocatorClient>,
    credentials: HashMap<String, DigestCredential>,
    trunk: Trunk,
}

/// The node's phone trunk: where phones are called, and the number that reaches its voice
/// menu.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trunk {
    /// Where phone numbers are called (call-me), if anywhere.
    pub phone_uri: Option<PhoneUri>,
    /// The phone number callers dial to reach the voice menu, as moderators are shown it.
    pub dial_in_number: Option<String>,
}

/// Where a phone number is called: a `sip:` URI template with `{number}` in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneUri(String);

impl PhoneUri {
    /// Checks a template such as `sip:{number}@trunk.example.org;user=phone`.
    pub fn parse(template: &str) -> Result<Self, String> {
        if !template.contains("{number}") {
            return Err("the phone URI needs {number} where the number goes".into());
        }
        check_sip_uri(&template.replace("{number}", "+4722000000"))?;
        Ok(Self(template.into()))
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address of `number` (already checked).
    fn address(&self, number: &str) -> String {
        self.0.replace("{number}", number)
    }
}

impl Dialplan {
    /// The dial plan with the directory of the node's `locator` (none for a node without one),
    /// `credentials` and the phone `trunk`.
    pub fn new(
        locator: Option<LocatorClient>,
        credentials: Vec<NamedCredential>,
        trunk: Trunk,
    ) -> Self {
        Self {
            locator,
            credentials: credentials
                .into_iter()
                .map(|named| (named.name, named.credential))
                .collect(),
            trunk,
        }
    }

    /// Whether phones can be called (call-me).
    pub fn calls_phones(&self) -> bool {
        self.trunk.phone_uri.is_some()
    }

    /// The phone number that reaches the voice menu, if the operator gave one.
    pub fn dial_in_phone(&self) -> Option<&str> {
        self.trunk.dial_in_number.as_deref()
    }

    /// The call to the phone `number` for the participant `name`.
    pub fn phone(&self, number: &str, name: &str) -> Result<Callee, (ErrorCode, String)> {
        let trunk = self.trunk.phone_uri.as_ref().ok_or_else(|| {
            (
                ErrorCode::CallFailed,
                "this node calls no phones (start it with --sip-phone-uri)".to_string(),
            )
        })?;
        let number = phone_number(number).map_err(|why| (ErrorCode::BadRequest, why))?;
        Ok(Callee {
            uri: trunk.address(&number),
            name: format!("{} (phone)", name.trim()),
            credential: None,
            phone: true,
        })
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
                phone: false,
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
            phone: false,
        })
    }

    /// The whole directory, from the locator.
    async fn entries(&self) -> Result<Vec<DirectoryEntry>, (ErrorCode, String)> {
        self.locator()?
            .directory()
            .await
            .map_err(unavailable("the SIP directory"))
    }

    /// Whether phones can dial in: meetings' numbers are the locator's.
    pub fn takes_dial_in(&self) -> bool {
        self.locator.is_some()
    }

    /// The meeting a phone reaches with `number`, if any.
    pub async fn dial_in(&self, number: &str) -> Result<Option<DialIn>, (ErrorCode, String)> {
        self.locator()?
            .dial_in_by_number(number)
            .await
            .map_err(unavailable("the dial-in numbers"))
    }

    /// The dial-in of `meeting` (numbered on first ask).
    pub async fn dial_in_of(&self, meeting: &str) -> Result<DialIn, (ErrorCode, String)> {
        self.locator()?
            .dial_in_of(meeting)
            .await
            .map_err(unavailable("the dial-in numbers"))
    }

    /// Sets (or clears) the PIN of `meeting`.
    pub async fn set_pin(
        &self,
        meeting: &str,
        pin: Option<String>,
    ) -> Result<DialIn, (ErrorCode, String)> {
        if pin.as_deref().is_some_and(|pin| !valid_pin(pin)) {
            return Err((ErrorCode::BadRequest, "a PIN is 4 to 8 digits".into()));
        }
        self.locator()?
            .set_pin(meeting, pin)
            .await
            .map_err(unavailable("the dial-in numbers"))
    }

    fn locator(&self) -> Result<&LocatorClient, (ErrorCode, String)> {
        self.locator.as_ref().ok_or_else(|| {
            (
                ErrorCode::NotFound,
                "this node has no SIP directory or dial-in numbers: it runs without a locator"
                    .to_string(),
            )
        })
    }
}

/// The refusal when the locator could not give `what`.
fn unavailable(what: &'static str) -> impl Fn(LocatorError) -> (ErrorCode, String) {
    move |e| {
        warn!("reading {what}: {e}");
        (
            ErrorCode::Unavailable,
            format!("{what} could not be read: {e}"),
        )
    }
}

/// `number` without its spaces, dashes, dots and parentheses: digits with an optional leading
/// `+`, or why not.
fn phone_number(number: &str) -> Result<String, String> {
    let kept: String = number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = kept.strip_prefix('+').unwrap_or(&kept);
    if (3..=MAX_DIGITS).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(kept)
    } else {
        Err(format!(
            "{number:?} is not a phone number: 3 to {MAX_DIGITS} digits, an optional leading +"
        ))
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

    fn directory() -> Dialplan {
        Dialplan::new(
            None,
            vec![NamedCredential::parse("east=kaskade:pa:ss=word").unwrap()],
            Trunk {
                phone_uri: Some(
                    PhoneUri::parse("sip:{number}@trunk.example.org;user=phone").unwrap(),
                ),
                dial_in_number: None,
            },
        )
    }

    #[test]
    fn phone_numbers_are_called_through_the_trunk() {
        let callee = directory().phone(" +47 (22) 00-00.00 ", "Alice").unwrap();
        assert_eq!(callee.uri, "sip:+4722000000@trunk.example.org;user=phone");
        assert_eq!(callee.name, "Alice (phone)");
        assert!(callee.phone && callee.credential.is_none());
        for bad in [
            "",
            "12",
            "+",
            "call me",
            "0049 30 1234x",
            &"1".repeat(21),
            "++47",
        ] {
            let (code, why) = directory().phone(bad, "A").unwrap_err();
            assert_eq!(code, ErrorCode::BadRequest, "{bad}: {why}");
        }
        let without = Dialplan::new(None, Vec::new(), Trunk::default());
        assert!(!without.calls_phones());
        let (code, why) = without.phone("+4722000000", "A").unwrap_err();
        assert_eq!(code, ErrorCode::CallFailed);
        assert!(why.contains("--sip-phone-uri"), "{why}");
        assert!(
            PhoneUri::parse("sip:trunk.example.org").is_err(),
            "no {{number}}"
        );
        assert!(PhoneUri::parse("tel:{number}").is_err(), "not sip:");
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
