//! A standalone recorder tells the locator every second where it is and how busy it is, so the
//! locator can send it recordings to make.

use crate::service::Recorder;
use kaskade_protocol::cluster::node_credential;
use kaskade_protocol::recording::RecorderReport;
use kaskade_protocol::token::unix_now;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often the recorder reports.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Reports `recorder` as `name` at `url` to `locator` until the process ends.
pub async fn report_forever(recorder: Arc<Recorder>, locator: String, name: String, url: String) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let endpoint = format!("{}/api/recorders/report", locator.trim_end_matches('/'));
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    let mut reachable = None;
    loop {
        tick.tick().await;
        let report = RecorderReport {
            name: name.clone(),
            url: url.clone(),
            recordings: recorder.running() as u32,
        };
        let sent = http
            .post(&endpoint)
            .header(
                reqwest::header::AUTHORIZATION,
                node_credential(recorder.secret(), &name, unix_now()),
            )
            .json(&report)
            .send()
            .await;
        let ok = match sent {
            Ok(response) if response.status().is_success() => true,
            Ok(response) => {
                if reachable != Some(false) {
                    warn!(status = %response.status(), "the locator refused the recorder's report");
                }
                false
            }
            Err(e) => {
                if reachable != Some(false) {
                    warn!("cannot report to the locator: {e}");
                }
                false
            }
        };
        if ok && reachable != Some(true) {
            info!(%locator, "reporting to the locator");
        }
        reachable = Some(ok);
    }
}
