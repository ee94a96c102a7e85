//! The run's final report from its entries, snapshots and process usage.

use std::collections::BTreeMap;
use std::time::Instant;

use kaskade_client::{ParticipantId, ParticipantStats};
use kaskade_loadtest::report::{ParticipantReport, ProcessUsage, RemoteReport, Report, RunParams};

use super::{Entry, Run};

/// Ends freeze tracking: a trailing gap counts when the remote was still in the meeting.
pub(crate) fn finish_freezes(run: &mut Run, at: Instant) {
    let at = at.saturating_duration_since(run.origin);
    for (i, entry) in run.entries.iter().enumerate() {
        let Some(p) = &entry.peer else {
            continue;
        };
        for ((receiver, remote), tracker) in &mut run.freezes {
            if *receiver == i {
                tracker.finish(at, p.sees(*remote));
            }
        }
    }
}

/// Every participant's statistics at the end of the window and after the drain (a leaver's
/// as it left).
pub(crate) struct Snapshots<'a> {
    pub window_end: &'a [Option<ParticipantStats>],
    pub finals: &'a [Option<ParticipantStats>],
}

/// The processes' usage during the window, and the server's RSS before the first join.
pub(crate) struct Usage {
    pub server: Option<ProcessUsage>,
    pub server_idle_rss: Option<u64>,
    pub generator: ProcessUsage,
}

/// When the measurement window opened and closed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    /// Whether `entry` was in its room from the window's start to its end.
    fn spans(&self, entry: &Entry) -> bool {
        entry.joined_at.is_some_and(|t| t <= self.start)
            && entry.left_at.is_none_or(|t| t >= self.end)
    }
}

/// Whether `a` and `b` were in the room at the same time.
fn overlapped(a: &Entry, b: &Entry) -> bool {
    let (Some(a_in), Some(b_in)) = (a.joined_at, b.joined_at) else {
        return false;
    };
    let joined = a_in.max(b_in);
    let left = match (a.left_at, b.left_at) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    left.is_none_or(|left| joined < left)
}

pub(crate) fn build_report(
    run: &Run,
    snapshots: Snapshots,
    window: Window,
    usage: Usage,
) -> Report {
    let args = &run.args;
    let mut latency_ms = Vec::new();
    let participants = (0..run.entries.len())
        .map(|i| participant(run, i, &snapshots, window, &mut latency_ms))
        .collect();
    let params = RunParams {
        rooms: args.rooms,
        participants_per_room: args.participants,
        video_bitrate_kbps: args.video_bitrate,
        width: args.resolution.0,
        height: args.resolution.1,
        fps: args.fps,
        duration_s: args.duration.as_secs_f64(),
        ramp: args.ramp,
        target: run.target.url().to_owned(),
    };
    let mut report = Report::new(
        params,
        participants,
        &latency_ms,
        window.end - window.start,
        usage.server,
        usage.server_idle_rss,
        usage.generator,
    );
    report.churn = run
        .churn
        .as_ref()
        .zip(args.churn_every)
        .map(|(churn, every)| churn.finish(every));
    report
}

/// Entry `i`'s report (its latency samples appended to `latency_ms`).
fn participant(
    run: &Run,
    i: usize,
    snapshots: &Snapshots,
    window: Window,
    latency_ms: &mut Vec<f64>,
) -> ParticipantReport {
    let entry = &run.entries[i];
    let mut report = ParticipantReport {
        name: entry.name.clone(),
        room: entry.room,
        joined: entry.join_ms.is_some(),
        error: entry.error.clone(),
        join_ms: entry.join_ms,
        churn_joined: entry.churned,
        churn_left: entry.left_at.is_some(),
        ..ParticipantReport::default()
    };
    let Some(stats) = &snapshots.finals[i] else {
        return report;
    };
    report.bytes_sent = sent_in_window(run, snapshots, i);
    report.packets_received = snapshots.window_end[i].as_ref().map_or(0, |s| {
        s.packets_received
            .saturating_sub(entry.window_start.packets_received)
    });
    report.nacks_sent = stats.nacks_sent;
    report.plis_sent = stats.plis_sent;
    latency_ms.extend_from_slice(&entry.received.lock().expect("sink lock").latency_ms);
    let mut remotes = BTreeMap::new();
    for (j, mate) in run.entries.iter().enumerate() {
        if j == i || mate.room != entry.room || mate.id.is_none() || !overlapped(entry, mate) {
            continue;
        }
        let remote = remote(run, snapshots, window, (i, stats), j);
        remotes.insert(mate.name.clone(), remote);
    }
    report.remotes = remotes;
    report
}

/// What entry `i` (with final statistics `stats`) received from room-mate `j`.
fn remote(
    run: &Run,
    snapshots: &Snapshots,
    window: Window,
    (i, stats): (usize, &ParticipantStats),
    j: usize,
) -> RemoteReport {
    let (entry, mate) = (&run.entries[i], &run.entries[j]);
    let id = mate.id.unwrap_or(ParticipantId::NOBODY);
    let received = entry.received.lock().expect("sink lock");
    let now = stats.remote(id);
    let before = entry.window_start.remote(id);
    let bytes = |r: &kaskade_client::RemoteStats| r.video_bytes + r.audio_bytes;
    let from_mate = received.streams.iter().filter(|((from, _), _)| *from == id);
    let frames = received.frames.get(&id).copied().unwrap_or_default();
    let both_joined = entry
        .joined_at
        .max(mate.joined_at)
        .map(|t| t.saturating_duration_since(run.origin));
    let tracker = run.freezes.get(&(i, id)).cloned().unwrap_or_default();
    let partial = !(window.spans(entry) && window.spans(mate));
    RemoteReport {
        name: mate.name.clone(),
        bytes_expected: if partial {
            0
        } else {
            sent_in_window(run, snapshots, j)
        },
        bytes_received: bytes(&now).saturating_sub(bytes(&before)),
        packets_expected: from_mate.clone().map(|(_, c)| c.expected()).sum(),
        packets_lost: from_mate.map(|(_, c)| c.lost()).sum(),
        frames_received: frames.frames(),
        frames_decoded: now.video_frames_decoded,
        decode_errors: now.decode_errors,
        picture: now.picture_size,
        first_frame_ms: frames
            .first_at()
            .zip(both_joined)
            .map(|(f, j)| f.saturating_sub(j).as_secs_f64() * 1000.0),
        freezes: tracker.freezes(),
        longest_gap_ms: tracker.longest_gap().as_secs_f64() * 1000.0,
        partial,
    }
}

/// Bytes entry `i` sent from the window's start (or its join) to the end of the drain (or
/// its leave).
fn sent_in_window(run: &Run, snapshots: &Snapshots, i: usize) -> u64 {
    snapshots.finals[i].as_ref().map_or(0, |s| {
        s.bytes_sent
            .saturating_sub(run.entries[i].window_start.bytes_sent)
    })
}
