//! The recorders this locator knows: each reports every second (`POST /api/recorders/report`)
//! and is live while its reports keep coming within the node timeout. An embedded recorder (the
//! all-in-one) is live for good.
//!
//! The registry is in-process, also with `--redis`: a locator uses the recorders that report to
//! it. Time is an argument, never read here.

use kaskade_protocol::recording::RecorderReport;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The name under which the embedded recorder is listed.
pub const EMBEDDED: &str = "embedded";

/// A live recorder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorder {
    /// Its unique name.
    pub name: String,
    /// Its HTTP base URL, without a trailing `/`.
    pub url: String,
    /// Recordings it runs: the last report's, plus those started here since.
    pub recordings: u32,
}

struct Entry {
    url: String,
    recordings: u32,
    /// The last report's arrival; `None` for the embedded recorder, which never expires.
    reported_at: Option<Instant>,
}

/// The live recorders, behind one mutex never held across an await.
pub struct Recorders {
    timeout: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Recorders {
    /// A registry dropping recorders silent for `timeout`, holding `embedded` (a base URL) for
    /// good under the name [`EMBEDDED`].
    pub fn new(timeout: Duration, embedded: Option<String>) -> Self {
        let entries = embedded
            .map(|url| {
                let entry = Entry {
                    url: url.trim_end_matches('/').to_string(),
                    recordings: 0,
                    reported_at: None,
                };
                (EMBEDDED.to_string(), entry)
            })
            .into_iter()
            .collect();
        Self {
            timeout,
            entries: Mutex::new(entries),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a report received at `now`; true when it registers a recorder not live before.
    pub fn report(&self, report: &RecorderReport, now: Instant) -> bool {
        let mut entries = self.entries();
        let new = !entries
            .get(&report.name)
            .is_some_and(|e| self.is_live(e, now));
        let entry = entries.entry(report.name.clone()).or_insert(Entry {
            url: String::new(),
            recordings: 0,
            reported_at: Some(now),
        });
        entry.url = report.url.trim_end_matches('/').to_string();
        entry.recordings = report.recordings;
        entry.reported_at = entry.reported_at.map(|_| now);
        new
    }

    /// Recorders in the registry, live or not yet forgotten (metrics).
    pub fn registered(&self) -> usize {
        self.entries().len()
    }

    /// Counts a recording started on `name` until its next report says so itself, so starts
    /// within one report interval spread over the recorders.
    pub fn started(&self, name: &str) {
        if let Some(entry) = self.entries().get_mut(name) {
            entry.recordings = entry.recordings.saturating_add(1);
        }
    }

    /// The live recorders at `now`, least busy first (ties by name); forgets the others.
    pub fn live(&self, now: Instant) -> Vec<Recorder> {
        let mut entries = self.entries();
        entries.retain(|_, e| self.is_live(e, now));
        let mut live: Vec<Recorder> = entries
            .iter()
            .map(|(name, e)| Recorder {
                name: name.clone(),
                url: e.url.clone(),
                recordings: e.recordings,
            })
            .collect();
        live.sort_by(|a, b| (a.recordings, &a.name).cmp(&(b.recordings, &b.name)));
        live
    }

    fn is_live(&self, entry: &Entry, now: Instant) -> bool {
        entry
            .reported_at
            .is_none_or(|at| now.saturating_duration_since(at) < self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, recordings: u32) -> RecorderReport {
        RecorderReport {
            name: name.into(),
            url: format!("http://{name}.test/"),
            recordings,
        }
    }

    fn names(live: &[Recorder]) -> Vec<&str> {
        live.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn the_least_busy_recorder_comes_first_and_starts_count_until_the_next_report() {
        let t0 = Instant::now();
        let recorders = Recorders::new(Duration::from_secs(3), None);
        assert!(recorders.report(&report("a", 2), t0));
        assert!(recorders.report(&report("b", 1), t0));
        assert!(!recorders.report(&report("b", 1), t0), "already live");
        let live = recorders.live(t0);
        assert_eq!(names(&live), ["b", "a"]);
        assert_eq!(live[0].url, "http://b.test", "without the trailing slash");
        recorders.started("b");
        recorders.started("b");
        assert_eq!(names(&recorders.live(t0)), ["a", "b"], "a and b tie at 2");
        recorders.report(&report("b", 0), t0);
        assert_eq!(names(&recorders.live(t0)), ["b", "a"]);
    }

    #[test]
    fn a_silent_recorder_is_gone_after_the_timeout_and_new_when_it_comes_back() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(3);
        let recorders = Recorders::new(timeout, None);
        recorders.report(&report("a", 0), t0);
        assert_eq!(
            recorders
                .live(t0 + timeout - Duration::from_millis(1))
                .len(),
            1
        );
        assert!(recorders.live(t0 + timeout).is_empty());
        assert!(recorders.report(&report("a", 0), t0 + timeout));
    }

    #[test]
    fn the_embedded_recorder_is_live_for_good_and_its_reports_set_its_load() {
        let t0 = Instant::now();
        let recorders =
            Recorders::new(Duration::from_secs(3), Some("http://127.0.0.1:8080".into()));
        let far = t0 + Duration::from_secs(3600);
        assert_eq!(
            recorders.live(far),
            [Recorder {
                name: EMBEDDED.into(),
                url: "http://127.0.0.1:8080".into(),
                recordings: 0,
            }]
        );
        recorders.report(&report(EMBEDDED, 4), t0);
        let live = recorders.live(far + Duration::from_secs(3600));
        assert_eq!(live[0].recordings, 4);
    }
}
