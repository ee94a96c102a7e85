//! The directory of SIP rooms (video MCUs, room systems) that participants pick from the
//! dialpad: kept by the locator, managed by the operator, read by nodes when someone dials;
//! and the dial-in numbers and PINs of meetings ([`DialIn`]), by which phones call in.
//!
//! An entry may name credentials by reference ([`DirectoryEntry::credentials`]): the user name
//! and password stay in the nodes' configuration (`--sip-credential NAME=USER:PASSWORD`) and
//! are only ever sent to that entry's address, never to a URI a participant typed.

use serde::{Deserialize, Serialize};

/// Longest SIP address kaskade dials.
pub const MAX_SIP_URI: usize = 256;
/// Longest entry id and credentials reference.
pub const MAX_ID: usize = 64;
/// Longest name an entry shows.
pub const MAX_NAME: usize = 64;
/// Entries a directory holds at most.
pub const MAX_ENTRIES: usize = 1000;

/// One room of the directory, as the locator keeps it and nodes read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// Stable id (`A-Z a-z 0-9 _ . -`), what a dial request names.
    pub id: String,
    /// What the dialpad shows, and the call's tile.
    pub name: String,
    /// The `sip:` address dialled.
    pub uri: String,
    /// Name of the digest credentials the nodes are configured with for this room, if it
    /// asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// A directory entry as participants see it (no credentials reference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryListing {
    /// What a dial request names.
    pub id: String,
    /// The room's name.
    pub name: String,
    /// Its address.
    pub uri: String,
}

impl DirectoryEntry {
    /// What is wrong with the entry, in words, if anything.
    pub fn check(&self) -> Result<(), String> {
        if !valid_id(&self.id) {
            return Err(format!(
                "ids are 1 to {MAX_ID} characters of A-Z a-z 0-9 _ . -"
            ));
        }
        if self.name.trim().is_empty()
            || self.name.chars().count() > MAX_NAME
            || self.name.chars().any(char::is_control)
        {
            return Err(format!("names are 1 to {MAX_NAME} printable characters"));
        }
        check_sip_uri(&self.uri)?;
        if let Some(reference) = &self.credentials
            && !valid_id(reference)
        {
            return Err(format!(
                "credentials references are 1 to {MAX_ID} characters of A-Z a-z 0-9 _ . -"
            ));
        }
        Ok(())
    }

    /// What participants see of it.
    pub fn listing(&self) -> DirectoryListing {
        DirectoryListing {
            id: self.id.clone(),
            name: self.name.clone(),
            uri: self.uri.clone(),
        }
    }
}

/// A meeting's dial-in: the number a phone enters at kaskade's voice menu, and the PIN it
/// then asks for, if the meeting has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialIn {
    /// The meeting.
    pub meeting: String,
    /// Its number: [`DIAL_IN_DIGITS`] digits, the first not 0.
    pub number: String,
    /// 4 to 8 digits, when the meeting has a PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

/// Digits of a meeting's dial-in number.
pub const DIAL_IN_DIGITS: usize = 9;

/// `PUT /api/nodes/{node}/meetings/{meeting}/dial-in`: a moderator sets or clears the PIN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRequest {
    /// The new PIN, or none to clear it.
    pub pin: Option<String>,
}

/// Whether `pin` is a PIN kaskade takes: 4 to 8 digits.
pub fn valid_pin(pin: &str) -> bool {
    (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `number` is a dial-in number: [`DIAL_IN_DIGITS`] digits, the first not 0.
pub fn valid_dial_in_number(number: &str) -> bool {
    number.len() == DIAL_IN_DIGITS
        && number.bytes().all(|b| b.is_ascii_digit())
        && !number.starts_with('0')
}

/// Whether `id` is 1 to [`MAX_ID`] characters of `A-Z a-z 0-9 _ . -`.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A SIP address kaskade dials: `sip:` or `sips:` (over TLS), something after it, no spaces
/// or control characters, at most [`MAX_SIP_URI`] bytes.
pub fn check_sip_uri(uri: &str) -> Result<(), String> {
    let scheme = |name: &str| {
        uri.get(..name.len())
            .filter(|s| s.eq_ignore_ascii_case(name))
            .map(|_| &uri[name.len()..])
    };
    let rest = scheme("sip:")
        .or_else(|| scheme("sips:"))
        .ok_or_else(|| format!("{uri:?} is not a sip: or sips: address"))?;
    if rest.is_empty()
        || uri.len() > MAX_SIP_URI
        || uri.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("{uri:?} is not a SIP address kaskade can dial"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, name: &str, uri: &str, credentials: Option<&str>) -> DirectoryEntry {
        DirectoryEntry {
            id: id.into(),
            name: name.into(),
            uri: uri.into(),
            credentials: credentials.map(Into::into),
        }
    }

    #[test]
    fn sip_addresses_are_checked() {
        for good in [
            "sip:mcu@127.0.0.1:5070",
            "SIP:8001@mcu.example.org",
            "sip:example.org",
            "sip:room@[::1]:5060;transport=tcp",
            "sips:room@mcu.example.org",
            "sip:room@192.0.2.7:5061;transport=tls",
        ] {
            assert!(check_sip_uri(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "sip:",
            "tel:+4930123456",
            "sips:",
            "sipx:room@example.org",
            "sip:a b@example.org",
            "sip:a\u{7}@example.org",
            "http://example.org",
            "si",
        ] {
            assert!(check_sip_uri(bad).is_err(), "{bad}");
        }
        assert!(check_sip_uri(&format!("sip:{}", "a".repeat(300))).is_err());
    }

    #[test]
    fn entries_are_checked_field_by_field() {
        let good = entry(
            "oslo-mcu",
            "Oslo MCU",
            "sip:8001@mcu.example.org",
            Some("east"),
        );
        assert_eq!(good.check(), Ok(()));
        let cases = [
            (entry("", "n", "sip:a@b", None), "ids"),
            (entry("a/b", "n", "sip:a@b", None), "ids"),
            (entry(&"x".repeat(65), "n", "sip:a@b", None), "ids"),
            (entry("a", " ", "sip:a@b", None), "names"),
            (entry("a", &"n".repeat(65), "sip:a@b", None), "names"),
            (entry("a", "n\n", "sip:a@b", None), "names"),
            (entry("a", "n", "tel:123", None), "sip:"),
            (
                entry("a", "n", "sip:a@b", Some("with space")),
                "credentials",
            ),
        ];
        for (bad, says) in cases {
            let why = bad.check().expect_err(&format!("{bad:?}"));
            assert!(why.contains(says), "{bad:?}: {why}");
        }
    }

    #[test]
    fn pins_and_dial_in_numbers_are_digits_of_their_length() {
        assert!(valid_pin("1234") && valid_pin("12345678"));
        for bad in ["", "123", "123456789", "12a4", " 1234"] {
            assert!(!valid_pin(bad), "{bad}");
        }
        assert!(valid_dial_in_number("123456789"));
        for bad in ["012345678", "12345678", "1234567890", "12345678x"] {
            assert!(!valid_dial_in_number(bad), "{bad}");
        }
    }

    #[test]
    fn listings_leave_the_credentials_out() {
        let listing = entry("a", "Room A", "sip:a@b", Some("secret-ref")).listing();
        let json = serde_json::to_string(&listing).unwrap();
        assert!(!json.contains("secret-ref"), "{json}");
        assert_eq!(
            json, r#"{"id":"a","name":"Room A","uri":"sip:a@b"}"#,
            "the wire form"
        );
    }
}
