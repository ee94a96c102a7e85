//! A locator under test: served on a loopback port over an in-process (or a given) store.

use kaskade_locator::api::{self, ApiConfig, AppState, Kept};
use kaskade_locator::cdr::CdrDb;
use kaskade_locator::dial_in::DialIns;
use kaskade_locator::directory::Directory;
use kaskade_locator::placement::PlacementConfig;
use kaskade_locator::server::{self, Running};
use kaskade_locator::state::{MemoryStore, Store};
use kaskade_protocol::cluster::{NodeReport, node_credential};
use kaskade_protocol::signaling::Role;
use kaskade_protocol::token::{Claims, TokenKey, unix_now};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// The cluster secret of every test locator.
pub const SECRET: &str = "cluster-secret";

/// How a test locator is configured.
pub struct Options {
    /// Open joins (no operator secret).
    pub open: bool,
    /// The operator's API key.
    pub api_key: Option<&'static str>,
    /// The node (and recorder) timeout.
    pub timeout: Duration,
    /// The state store (in-process by default).
    pub store: Option<Arc<dyn Store>>,
    /// The base URL of an embedded recorder.
    pub embedded_recorder: Option<String>,
    /// Per-client-address limits.
    pub ip_limits: kaskade_limits::IpLimitsConfig,
    /// The SIP directory (in the locator's SQLite file by default).
    pub directory: Option<Directory>,
    /// The dial-in numbers (in the locator's SQLite file by default).
    pub dial_ins: Option<DialIns>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            open: true,
            api_key: None,
            timeout: Duration::from_secs(3),
            store: None,
            embedded_recorder: None,
            ip_limits: kaskade_limits::IpLimitsConfig::default(),
            directory: None,
            dial_ins: None,
        }
    }
}

/// A locator serving on a loopback port, with its call records in a temporary file.
pub struct Locator {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client for it.
    pub http: reqwest::Client,
    _running: Running,
    db: PathBuf,
}

impl Drop for Locator {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.db);
    }
}

/// Placement limits with `timeout`.
pub fn placement(timeout: Duration) -> PlacementConfig {
    PlacementConfig {
        node_timeout: timeout,
        max_meeting_size: 10,
    }
}

/// Starts a locator configured by `options`.
pub async fn start(options: Options) -> Locator {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let db = std::env::temp_dir().join(format!(
        "kaskade-locator-test-{}-{}.sqlite",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&db);
    let store = options
        .store
        .unwrap_or_else(|| Arc::new(MemoryStore::new(placement(options.timeout))));
    let config = ApiConfig {
        secret: SECRET.as_bytes().to_vec(),
        open: options.open,
        api_key: options.api_key.map(str::to_string),
        node_timeout: options.timeout,
        embedded_recorder: options.embedded_recorder,
        ip_limits: options.ip_limits,
    };
    let directory = match options.directory {
        Some(directory) => directory,
        None => Directory::sqlite(&db).expect("directory db"),
    };
    let state = AppState::new(
        config,
        store.clone(),
        Kept {
            cdr: CdrDb::open(&db).expect("cdr db"),
            directory,
            dial_ins: match options.dial_ins {
                Some(dial_ins) => dial_ins,
                None => DialIns::sqlite(&db).expect("dial-in db"),
            },
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let running =
        server::spawn(listener, api::router(state), store, options.timeout).expect("serve");
    Locator {
        base: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        _running: running,
        db,
    }
}

impl Locator {
    /// Sends a node report with a credential made with `secret`.
    pub async fn send_report(&self, report: &NodeReport, secret: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/api/nodes/report", self.base))
            .header(
                "Authorization",
                node_credential(secret.as_bytes(), &report.node, unix_now()),
            )
            .json(report)
            .send()
            .await
            .expect("report");
        answer(response).await
    }

    /// A node request of `node`.
    pub async fn node_get(&self, node: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(
                "Authorization",
                node_credential(SECRET.as_bytes(), node, unix_now()),
            )
            .send()
            .await
            .expect("node request");
        answer(response).await
    }

    /// A join with `body`.
    pub async fn join(&self, meeting: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/api/meetings/{meeting}/join", self.base))
            .json(&body)
            .send()
            .await
            .expect("join");
        answer(response).await
    }

    /// A GET, with `key` as a bearer token when given.
    pub async fn get(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        answer(request.send().await.expect("get")).await
    }
}

/// The status and the JSON body (or the text as a JSON string) of `response`.
pub async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A token for `meeting` signed with [`SECRET`], valid for ten minutes.
pub fn token(meeting: &str, identity: &str, role: Role, rejoin: bool) -> String {
    TokenKey::from_secret(SECRET.as_bytes()).sign(&Claims {
        meeting: meeting.into(),
        sub: identity.into(),
        name: identity.into(),
        role,
        exp: unix_now() + 600,
        rejoin,
        jti: None,
        aud: None,
        dial: false,
    })
}
