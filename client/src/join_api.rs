//! The join API from the client's side: `POST {base}/api/meetings/{meeting}/join`
//! (`kaskade_protocol::cluster`), served by the locator and by a node that runs without one.
//! One HTTP/1.1 request on a fresh connection; bases are `http://host:port[/prefix]`.

use hyper::Method;

pub use kaskade_protocol::cluster::{ApiError, JoinRequest, JoinResponse};

use crate::http_client;
use crate::join::JoinError;

/// Answers are a few hundred bytes; anything past this is not a join API.
const MAX_BODY: usize = 64 * 1024;

/// Asks `base` where to join `meeting`: the node's signaling URL and the token to present.
/// An error status comes back as [`JoinError::Api`].
pub async fn request_join(
    base: &str,
    meeting: &str,
    request: &JoinRequest,
) -> Result<JoinResponse, JoinError> {
    let url = format!(
        "{}/api/meetings/{}/join",
        base.trim_end_matches('/'),
        percent_encode(meeting)
    );
    let body = serde_json::to_vec(request).map_err(anyhow::Error::from)?;
    let (status, body) = http_client::request(Method::POST, &url, Some(body), MAX_BODY)
        .await
        .map_err(|e| JoinError::Other(e.context(format!("POST {url}"))))?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map_err(|e| JoinError::Other(anyhow::anyhow!("POST {url}: malformed answer: {e}")));
    }
    let error = serde_json::from_slice(&body).unwrap_or_else(|_| ApiError {
        error: format!("http_{}", status.as_u16()),
        message: String::from_utf8_lossy(&body).chars().take(200).collect(),
    });
    Err(JoinError::Api {
        status: status.as_u16(),
        error,
    })
}

/// `text` with every byte outside RFC 3986's unreserved set percent-encoded, for a path segment.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_names_are_one_path_segment() {
        assert_eq!(percent_encode("stand-up_1.x~"), "stand-up_1.x~");
        assert_eq!(percent_encode("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }
}
