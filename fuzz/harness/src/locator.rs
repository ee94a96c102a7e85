//! The locator's HTTP API in-process: its real router over an in-process store and an
//! in-memory call record database, fed requests without a socket (`tower::ServiceExt`).
//!
//! Two locators: an open one (joins without a token) and one that requires tokens and has an
//! operator API key. Three nodes are registered through the store; they are re-registered
//! before every input ([`Locator::refresh`]), so a join that reports one of them lost (and makes
//! the locator probe it, at a closed port) does not leave the next input without nodes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use kaskade_limits::IpLimitsConfig;
use kaskade_locator::api::{self, ApiConfig, AppState, Kept};
use kaskade_locator::cdr::CdrDb;
use kaskade_locator::dial_in::DialIns;
use kaskade_locator::directory::Directory;
use kaskade_locator::placement::PlacementConfig;
use kaskade_locator::state::{MemoryStore, Now, Store};
use kaskade_protocol::cluster::{MeetingLoad, NodeReport};
use std::net::SocketAddr;
use tower::ServiceExt;

/// The cluster secret of both locators.
pub const SECRET: &[u8] = b"fuzz-cluster-secret";
/// The operator API key of the closed locator.
pub const API_KEY: &str = "fuzz-api-key";
/// The client address of requests (loopback: exempt from the per-address limits).
pub const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50_000);
/// Names of the registered nodes.
pub const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// One locator: its router and store.
pub struct Instance {
    /// The router, as the server serves it.
    pub router: Router,
    /// Its store.
    pub store: Arc<MemoryStore>,
}

/// The two locators and the runtime their handlers run on.
pub struct Locator {
    runtime: tokio::runtime::Runtime,
    /// Joins without a token, no API key.
    pub open: Instance,
    /// Tokens required, operator API key [`API_KEY`].
    pub closed: Instance,
}

/// What a registered node reports.
pub fn node_report(i: usize) -> NodeReport {
    NodeReport {
        node: NODES[i % NODES.len()].to_string(),
        index: None,
        signaling_url: format!("ws://127.0.0.1:9/{i}/ws"),
        // a closed port: a health probe fails at once
        http_url: "http://127.0.0.1:9".into(),
        media_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
        region: Some(["eu", "us", "eu"][i % 3].into()),
        capacity: 20,
        max_bitrate_out_bps: None,
        participants: i as u32,
        meetings: vec![MeetingLoad {
            meeting: "standup".into(),
            participants: 1,
            locked: false,
            moderators: vec!["alice".into()],
        }],
        streams_in: 0,
        streams_out: 0,
        bitrate_in_bps: 0,
        bitrate_out_bps: 0,
        cpu_cores: 0.1,
        overloaded: false,
    }
}

fn instance(open: bool) -> Instance {
    let store = Arc::new(MemoryStore::new(PlacementConfig {
        node_timeout: Duration::from_secs(3600),
        max_meeting_size: 10,
    }));
    let memory = std::path::Path::new(":memory:");
    let cdr = CdrDb::open(memory).expect("an in-memory database");
    let directory = Directory::sqlite(memory).expect("an in-memory database");
    let state = AppState::new(
        ApiConfig {
            secret: SECRET.to_vec(),
            open,
            api_key: (!open).then(|| API_KEY.to_string()),
            node_timeout: Duration::from_secs(3600),
            embedded_recorder: None,
            ip_limits: IpLimitsConfig::default(),
        },
        store.clone(),
        Kept {
            cdr,
            directory,
            dial_ins: DialIns::sqlite(memory).expect("an in-memory database"),
        },
    );
    Instance {
        router: api::router(state),
        store,
    }
}

impl Locator {
    /// Both locators, with their nodes registered.
    pub fn new() -> Self {
        let locator = Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            open: instance(true),
            closed: instance(false),
        };
        locator.refresh();
        locator
    }

    /// Registers (again) the three nodes on both locators.
    pub fn refresh(&self) {
        self.runtime.block_on(async {
            for instance in [&self.open, &self.closed] {
                for i in 0..NODES.len() {
                    let _ = instance.store.report(&node_report(i), Now::current()).await;
                }
            }
        });
    }

    /// Sends `request` to `instance` from a loopback client; returns the status and the body.
    pub fn send(
        &self,
        instance: &Instance,
        request: http::Request<Body>,
    ) -> (http::StatusCode, bytes::Bytes) {
        self.send_from(instance, request, CLIENT)
    }

    /// Sends `request` to `instance` from the client address `client`.
    pub fn send_from(
        &self,
        instance: &Instance,
        mut request: http::Request<Body>,
        client: SocketAddr,
    ) -> (http::StatusCode, bytes::Bytes) {
        request.extensions_mut().insert(ConnectInfo(client));
        self.runtime.block_on(async {
            let response = instance
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, body)
        })
    }
}

impl Default for Locator {
    fn default() -> Self {
        Self::new()
    }
}

/// `bytes` as one URL path segment: every byte but the unreserved ones percent-encoded.
pub fn path_segment(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `bytes` as a query string value (like [`path_segment`]).
pub fn query_value(bytes: &[u8]) -> String {
    path_segment(bytes)
}

/// Checks what every answer of the API must be: a JSON [`ApiError`] for every error status, no
/// 5xx but `503` (the store or placement says no capacity).
///
/// [`ApiError`]: kaskade_protocol::cluster::ApiError
pub fn check_answer(status: http::StatusCode, body: &[u8]) {
    assert!(
        !status.is_server_error() || status == http::StatusCode::SERVICE_UNAVAILABLE,
        "the locator answered {status}: {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() || status.is_server_error() {
        let error: Result<kaskade_protocol::cluster::ApiError, _> = serde_json::from_slice(body);
        assert!(
            error.is_ok(),
            "an error answer {status} that is not an ApiError: {}",
            String::from_utf8_lossy(body)
        );
    }
}
