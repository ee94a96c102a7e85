//! Why a SIP call failed, in words for the person who dialled: the SIP status class (busy,
//! declined, not found, no answer, unreachable, authentication refused, no common codec) with
//! the far end's own status line beside it.

use rsipstack::sip::StatusCode;
use std::fmt;

const NO_COMMON_CODEC: &str = "no common codec";

/// A failed call: a short reason and, when the far end answered, its status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// What went wrong, in words ("busy", "no answer", ...).
    pub reason: String,
    /// The far end's final status (`486 Busy Here`), or what kaskade saw instead.
    pub detail: Option<String>,
}

impl CallFailure {
    fn new(reason: &str, detail: Option<String>) -> Self {
        Self {
            reason: reason.into(),
            detail,
        }
    }

    /// The far end's final response `status` (with the reason phrase it wrote, if its own).
    pub fn from_status(status: &StatusCode, phrase: Option<&str>) -> Self {
        let line = match phrase {
            Some(phrase) => format!("{} {phrase}", status.code()),
            None => status.to_string(),
        };
        let reason = match status.code() {
            486 | 600 => "busy",
            603 | 403 => "declined",
            404 | 604 | 410 | 484 => "not found",
            480 => "not available",
            408 => "no answer",
            487 => "cancelled",
            401 | 407 => "authentication refused",
            415 | 488 | 606 => NO_COMMON_CODEC,
            500..=599 => "unreachable",
            _ => "failed",
        };
        Self::new(reason, Some(line))
    }

    /// Nobody answered in time.
    pub fn no_answer() -> Self {
        Self::new("no answer", None)
    }

    /// Cancelled before it was answered (hung up while ringing).
    pub fn cancelled() -> Self {
        Self::new("cancelled", None)
    }

    /// The far end could not be reached at all.
    pub fn unreachable(detail: impl Into<String>) -> Self {
        Self::new("unreachable", Some(detail.into()))
    }

    /// The address dialled is not one.
    pub fn bad_address(detail: impl Into<String>) -> Self {
        Self::new("bad address", Some(detail.into()))
    }

    /// The answer's SDP has nothing kaskade takes.
    pub fn no_common_codec(detail: impl Into<String>) -> Self {
        Self::new(NO_COMMON_CODEC, Some(detail.into()))
    }

    /// Whether the far end found nothing it takes in kaskade's offer (415, 488, 606), or
    /// kaskade nothing in its answer: another offer may do.
    pub fn is_no_common_codec(&self) -> bool {
        self.reason == NO_COMMON_CODEC
    }

    /// Something on kaskade's side.
    pub fn local(detail: impl Into<String>) -> Self {
        Self::new("failed", Some(detail.into()))
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{} ({detail})", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_responses_read_as_what_happened() {
        let said = |status: StatusCode, phrase: Option<&str>| {
            CallFailure::from_status(&status, phrase).to_string()
        };
        assert_eq!(said(StatusCode::BusyHere, None), "busy (486 Busy Here)");
        assert_eq!(said(StatusCode::Decline, None), "declined (603 Decline)");
        assert_eq!(
            said(StatusCode::NotFound, None),
            "not found (404 Not Found)"
        );
        assert_eq!(
            said(StatusCode::RequestTimeout, None),
            "no answer (408 Request Timeout)"
        );
        assert_eq!(
            said(StatusCode::ProxyAuthenticationRequired, None),
            "authentication refused (407 Proxy Authentication Required)"
        );
        assert_eq!(
            said(StatusCode::NotAcceptableHere, None),
            "no common codec (488 Not Acceptable Here)"
        );
        assert_eq!(
            said(StatusCode::ServiceUnavailable, Some("Conference Full")),
            "unreachable (503 Conference Full)",
            "the far end's own phrase is kept"
        );
        assert_eq!(
            said(StatusCode::Other(499, "Odd".into()), None),
            "failed (499 Odd)"
        );
        assert_eq!(CallFailure::no_answer().to_string(), "no answer");
    }
}
