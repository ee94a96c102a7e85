//! What the recording tests share: the all-in-one server, participants with the small media of
//! the end-to-end tests, and the recordings API of one meeting.

use kaskade_client::JoinConfig;
use kaskade_e2e::{Node, Scratch};
use kaskade_protocol::recording::{RecordingInfo, RecordingState};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a participant may take to see a change.
pub const WAIT: Duration = Duration::from_secs(20);

/// The all-in-one default (an embedded locator, node and recorder) with its call records in
/// `scratch`, recording into `recordings`.
pub fn all_in_one(scratch: &Scratch, recordings: &str) -> Node {
    let db = scratch.path("cdr.sqlite");
    Node::start(
        Command::new(env!("CARGO_BIN_EXE_kaskade-under-test")),
        &["--db", &db, "--recordings", recordings],
    )
    .expect("all-in-one starts")
}

/// Joining `meeting` as `name` through `server`'s locator with 320x240 video at 15 fps and
/// 200 kbit/s.
pub fn media_config(server: &Node, meeting: &str, name: &str) -> JoinConfig {
    let mut cfg = kaskade_e2e::small_media_config(server.http, meeting, name);
    cfg.locator = Some(server.url());
    cfg
}

/// The recordings API of one meeting, called with one bearer token.
pub struct Recordings {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Recordings {
    pub fn new(server: &Node, meeting: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: format!("{}/api/meetings/{meeting}/recordings", server.url()),
            token: token.to_string(),
        }
    }

    /// `POST`: starts a recording.
    pub async fn start(&self) -> reqwest::Response {
        self.http
            .post(&self.url)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("POST recordings")
    }

    /// `DELETE`: stops recording `id`.
    pub async fn stop(&self, id: &str) -> reqwest::Response {
        self.http
            .delete(format!("{}/{id}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("DELETE recording")
    }

    /// Waits until the list shows recording `id` done (an answer that is not a list counts as
    /// not yet).
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> RecordingInfo {
        let deadline = Instant::now() + timeout;
        loop {
            let list: Vec<RecordingInfo> = self
                .http
                .get(&self.url)
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("GET recordings")
                .json()
                .await
                .unwrap_or_default();
            if let Some(done) = list
                .into_iter()
                .find(|r| r.id == id && r.state == RecordingState::Done)
            {
                return done;
            }
            assert!(
                Instant::now() < deadline,
                "recording {id} did not finish within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
