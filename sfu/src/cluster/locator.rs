//! The node's client of the locator's node API: reports, meeting and link lookups, call
//! records, the SIP directory, meetings' dial-in numbers. Each call carries a fresh node credential; when a locator stops answering, the
//! next configured one is tried.

use kaskade_protocol::cluster::{
    ApiError, CallRecord, LinkInfo, MeetingInfo, NodeReport, ReportAck, node_credential,
};
use kaskade_protocol::directory::{DialIn, DirectoryEntry, PinRequest};
use kaskade_protocol::token::unix_now;
use reqwest::{Client, Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a locator call failed.
#[derive(Debug, thiserror::Error)]
pub enum LocatorError {
    /// No locator answered.
    #[error("no locator answered: {0}")]
    Unreachable(String),
    /// A locator answered with an error.
    #[error("locator refused ({status}): {error}: {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// Error code.
        error: String,
        /// Explanation.
        message: String,
    },
    /// A locator answered with something that is not the expected JSON.
    #[error("locator answered nonsense: {0}")]
    BadAnswer(String),
}

/// A client of one or more locators.
pub struct LocatorClient {
    http: Client,
    urls: Vec<String>,
    current: AtomicUsize,
    secret: Vec<u8>,
    node: String,
}

impl LocatorClient {
    /// A client for `urls` (tried in turn), calling as `node` with the cluster `secret`.
    pub fn new(urls: Vec<String>, secret: Vec<u8>, node: String) -> Self {
        Self {
            http: Client::builder()
                .timeout(CALL_TIMEOUT)
                .build()
                .unwrap_or_default(),
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
            secret,
            node,
        }
    }

    /// Reports the node's load (registers it on first call).
    pub async fn report(&self, report: &NodeReport) -> Result<ReportAck, LocatorError> {
        self.call(Method::POST, "/api/nodes/report".into(), Some(report))
            .await
    }

    /// What this node needs to host `meeting`: lock state and the other nodes hosting it.
    pub async fn meeting(&self, meeting: &str) -> Result<MeetingInfo, LocatorError> {
        let path = format!("/api/nodes/{}/meetings/{meeting}", self.node);
        self.call::<(), _>(Method::GET, path, None).await
    }

    /// How to reach `peer` and the key of the link with it.
    pub async fn link(&self, peer: &str) -> Result<LinkInfo, LocatorError> {
        let path = format!("/api/nodes/{}/links/{peer}", self.node);
        self.call::<(), _>(Method::GET, path, None).await
    }

    /// The SIP directory, credentials references included.
    pub async fn directory(&self) -> Result<Vec<DirectoryEntry>, LocatorError> {
        let path = format!("/api/nodes/{}/directory", self.node);
        self.call::<(), _>(Method::GET, path, None).await
    }

    /// The meeting (and its PIN) whose dial-in number is `number`, if any.
    pub async fn dial_in_by_number(&self, number: &str) -> Result<Option<DialIn>, LocatorError> {
        let path = format!("/api/nodes/{}/dial-in/{number}", self.node);
        match self.call::<(), _>(Method::GET, path, None).await {
            Ok(entry) => Ok(Some(entry)),
            Err(LocatorError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The dial-in of `meeting` (numbered on first ask).
    pub async fn dial_in_of(&self, meeting: &str) -> Result<DialIn, LocatorError> {
        let path = format!("/api/nodes/{}/meetings/{meeting}/dial-in", self.node);
        self.call::<(), _>(Method::GET, path, None).await
    }

    /// Sets (or clears) the PIN of `meeting`.
    pub async fn set_pin(
        &self,
        meeting: &str,
        pin: Option<String>,
    ) -> Result<DialIn, LocatorError> {
        let path = format!("/api/nodes/{}/meetings/{meeting}/dial-in", self.node);
        self.call(Method::PUT, path, Some(&PinRequest { pin }))
            .await
    }

    /// Hands over finished sessions' call records.
    pub async fn call_records(&self, records: &[CallRecord]) -> Result<(), LocatorError> {
        let path = format!("/api/nodes/{}/cdr", self.node);
        self.call::<_, serde::de::IgnoredAny>(Method::POST, path, Some(records))
            .await
            .map(|_| ())
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<&B>,
    ) -> Result<T, LocatorError> {
        let mut last = String::from("no locator configured");
        for attempt in 0..self.urls.len() {
            let index = (self.current.load(Ordering::Relaxed) + attempt) % self.urls.len();
            let url = format!("{}{path}", self.urls[index]);
            let mut request = self.http.request(method.clone(), &url).header(
                reqwest::header::AUTHORIZATION,
                node_credential(&self.secret, &self.node, unix_now()),
            );
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            self.current.store(index, Ordering::Relaxed);
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| LocatorError::BadAnswer(e.to_string()))?;
            if !status.is_success() {
                let error: ApiError = serde_json::from_slice(&bytes).unwrap_or(ApiError {
                    error: "unknown".into(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                });
                return Err(LocatorError::Refused {
                    status,
                    error: error.error,
                    message: error.message,
                });
            }
            let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(body)
                .map_err(|e| LocatorError::BadAnswer(e.to_string()));
        }
        Err(LocatorError::Unreachable(last))
    }
}
