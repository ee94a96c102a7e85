//! The SIP gateway's Prometheus metrics, beside the node's: the calls running, how each call
//! was set up (placed from a meeting: answered or why not; dialled in: joined a meeting, left
//! the menu, refused), and whether answered calls' media went by SRTP.

use super::RUNNING;
use super::sdp::Agreement;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Which way a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Placed from a meeting (a room system, a participant's phone).
    Out,
    /// A phone dialling in to the voice menu.
    In,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    direction: &'static str,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MediaLabels {
    protection: &'static str,
}

/// The gateway's metrics; cheap to clone (the handles are shared).
#[derive(Clone, Debug, Default)]
pub struct SipMetrics {
    running: Gauge,
    outcomes: Family<OutcomeLabels, Counter>,
    media: Family<MediaLabels, Counter>,
}

impl SipMetrics {
    /// Registers the metrics (`kaskade_sfu_sip_calls`, `kaskade_sfu_sip_call_outcomes_total`,
    /// `kaskade_sfu_sip_media_total`) in the node's registry.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("sip_calls", "SIP calls running", metrics.running.clone());
        registry.register(
            "sip_call_outcomes",
            "How SIP calls were set up, by direction (out: placed from a meeting; in: dialled in) and result",
            metrics.outcomes.clone(),
        );
        registry.register(
            "sip_media",
            "Answered SIP calls by their media's protection (srtp, or rtp)",
            metrics.media.clone(),
        );
        metrics
    }

    /// Sets the gauge of calls running (before a scrape).
    pub fn sample(&self) {
        self.running
            .set(i64::try_from(RUNNING.taken()).unwrap_or(i64::MAX));
    }

    /// How a call was set up: `answered`, a failure's reason, `dialled in`, `left the menu`...
    pub(super) fn outcome(&self, direction: Direction, result: &str) {
        let direction = match direction {
            Direction::Out => "out",
            Direction::In => "in",
        };
        let labels = OutcomeLabels {
            direction,
            result: result.to_string(),
        };
        self.outcomes.get_or_create(&labels).inc();
    }

    /// A call was answered with `agreement`: SRTP when any of its lines is.
    pub(super) fn answered(&self, agreement: &Agreement) {
        let audio = agreement.audio.as_ref().is_some_and(|l| l.srtp.is_some());
        let video = agreement.video.as_ref().is_some_and(|l| l.srtp.is_some());
        let protection = if audio || video { "srtp" } else { "rtp" };
        self.media.get_or_create(&MediaLabels { protection }).inc();
    }
}
