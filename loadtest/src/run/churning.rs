//! Churn in the run (`--churn-every`): at each event of the [`ChurnSchedule`] the oldest member
//! of the next room stops sending, leaves [`LEAVE_DRAIN`] later (what it sent has arrived by
//! then), and a fresh participant joins that room at once, tried again while the room still
//! looks full. A newcomer's stamps count once media flows both ways between it and every
//! room-mate (see [`Received::settled`](super::Received)).

use std::time::{Duration, Instant};

use kaskade_client::ParticipantId;
use kaskade_loadtest::churn::{ChurnReport, ChurnSchedule, oldest};
use kaskade_loadtest::measure::Summary;
use tokio::task::JoinSet;

use super::{Entry, Run};
use crate::JOIN_TIMEOUT;

/// How long a leaver stays after it stopped sending, so its last packets arrive.
const LEAVE_DRAIN: Duration = Duration::from_millis(500);
/// How soon a refused join is tried again (the locator counts a leaver until its node's next
/// report, a second at most).
pub(super) const JOIN_RETRY_EVERY: Duration = Duration::from_millis(250);
/// How long a newcomer may take to exchange media with every room-mate.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The churn state of a run.
pub(crate) struct Churn {
    schedule: ChurnSchedule,
    /// The counts so far (`settle_ms` filled in at the end).
    pub report: ChurnReport,
    settle_ms: Vec<f64>,
    /// Leave requests on their way.
    leaving: JoinSet<()>,
}

impl Churn {
    pub fn new(schedule: ChurnSchedule) -> Self {
        Self {
            schedule,
            report: ChurnReport::default(),
            settle_ms: Vec::new(),
            leaving: JoinSet::new(),
        }
    }

    /// A newcomer's join finished.
    pub fn joined(&mut self, ok: bool, retries: u32) {
        if ok {
            self.report.joins += 1;
        } else {
            self.report.join_failures += 1;
        }
        self.report.join_retries += u64::from(retries);
    }

    /// The report, with `every` the interval.
    pub fn finish(&self, every: Duration) -> ChurnReport {
        ChurnReport {
            every_s: every.as_secs_f64(),
            events: u64::from(self.schedule.events()),
            settle_ms: Summary::of(&self.settle_ms),
            ..self.report.clone()
        }
    }
}

impl Run {
    /// Starts the events that fell due, completes the leaves whose drain is over, and settles
    /// newcomers.
    pub(super) async fn churn_step(&mut self, now: Instant) {
        if self.churn.is_none() {
            return;
        }
        if let Some(start) = self.window_start.filter(|_| self.measuring())
            && let Some(churn) = &mut self.churn
        {
            let mut due = Vec::new();
            while let Some(room) = churn.schedule.due(now.saturating_duration_since(start)) {
                due.push(room);
            }
            for room in due {
                self.start_leave(room, now).await;
            }
        }
        let drained: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                e.peer.is_some() && e.leaving_since.is_some_and(|t| now >= t + LEAVE_DRAIN)
            })
            .collect();
        for i in drained {
            self.finish_leave(i, now);
        }
        self.settle(now);
    }

    fn measuring(&self) -> bool {
        self.measuring.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The oldest settled member of `room` stops sending (or, with nobody to leave, the event
    /// is skipped).
    async fn start_leave(&mut self, room: usize, now: Instant) {
        let candidates = self.entries.iter().enumerate().filter(|(_, e)| {
            e.room == room && e.active() && (!e.churned || e.settled_at.is_some())
        });
        let leaver = oldest(candidates.filter_map(|(i, e)| Some((i, e.joined_at?))));
        let Some(i) = leaver else {
            if let Some(churn) = &mut self.churn {
                churn.report.skipped += 1;
            }
            return;
        };
        let entry = &mut self.entries[i];
        entry.leaving_since = Some(now);
        if let Some(peer) = &entry.peer
            && let Err(e) = peer.stop_sending().await
        {
            eprintln!("{}: stopping media before leaving failed: {e}", entry.name);
        }
    }

    /// Entry `i` leaves (its statistics kept as they are now) and a newcomer joins its room.
    fn finish_leave(&mut self, i: usize, now: Instant) {
        let entry = &mut self.entries[i];
        let Some(peer) = entry.peer.take() else {
            return;
        };
        entry.last_stats = Some(peer.stats());
        entry.left_at = Some(now);
        let (name, room) = (entry.name.clone(), entry.room);
        if let Some(churn) = &mut self.churn {
            churn.report.leaves += 1;
            churn.leaving.spawn(async move {
                if let Err(e) = peer.leave().await {
                    eprintln!("{name}: leaving failed: {e}");
                }
            });
        }
        let index = self.entries.iter().filter(|e| e.room == room).count();
        let name = format!("lt{}-r{room}p{index}", std::process::id());
        let mut newcomer = Entry::new(name, room);
        newcomer.churned = true;
        self.entries.push(newcomer);
        self.spawn_join(self.entries.len() - 1, Some(now + JOIN_TIMEOUT));
    }

    /// Settles every newcomer whose media flows both ways with every room-mate (or that waited
    /// too long: counted as unsettled).
    fn settle(&mut self, now: Instant) {
        let waiting: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                e.churned && e.active() && e.settled_at.is_none()
            })
            .collect();
        for i in waiting {
            let started = self.entries[i].join_started.unwrap_or(now);
            let flows = self.flows_both_ways(i);
            let late = now.saturating_duration_since(started) > SETTLE_TIMEOUT;
            if !flows && !late {
                continue;
            }
            let mates: Vec<usize> = (0..self.entries.len())
                .filter(|&j| j != i && self.is_mate(i, j))
                .collect();
            let id = self.entries[i].id.unwrap_or(ParticipantId::NOBODY);
            let mate_ids: Vec<ParticipantId> =
                mates.iter().filter_map(|&j| self.entries[j].id).collect();
            if let Ok(mut r) = self.entries[i].received.lock() {
                r.settled.extend(mate_ids);
            }
            for &j in &mates {
                if let Ok(mut r) = self.entries[j].received.lock() {
                    r.settled.insert(id);
                }
            }
            self.entries[i].settled_at = Some(now);
            if let Some(churn) = &mut self.churn {
                churn
                    .settle_ms
                    .push(now.duration_since(started).as_secs_f64() * 1000.0);
                if !flows {
                    churn.report.unsettled += 1;
                    eprintln!(
                        "{}: media does not flow with every room-mate",
                        self.entries[i].name
                    );
                }
            }
        }
    }

    /// Whether `j` is an active room-mate of `i`.
    fn is_mate(&self, i: usize, j: usize) -> bool {
        let (a, b) = (&self.entries[i], &self.entries[j]);
        a.room == b.room && b.active()
    }

    /// Whether `i` receives audio and video from every active room-mate, and each of them from
    /// `i`.
    fn flows_both_ways(&self, i: usize) -> bool {
        let entry = &self.entries[i];
        let (Some(peer), Some(id)) = (&entry.peer, entry.id) else {
            return false;
        };
        let mine = peer.stats();
        let receives = |stats: &kaskade_client::ParticipantStats, from: ParticipantId| {
            let r = stats.remote(from);
            r.audio_bytes > 0 && r.video_bytes > 0
        };
        self.room_mates(entry).all(|mate| {
            let theirs = mate.peer.as_ref().map(|p| p.stats()).unwrap_or_default();
            receives(&mine, mate.id.unwrap_or(ParticipantId::NOBODY)) && receives(&theirs, id)
        })
    }

    /// Whether churn still has leaves or joins under way.
    pub fn churn_busy(&self) -> bool {
        self.churn.is_some()
            && (self.joining()
                || self
                    .entries
                    .iter()
                    .any(|e| e.peer.is_some() && e.leaving_since.is_some()))
    }

    /// Waits for the leave requests sent to go out.
    pub async fn finish_leaves(&mut self) {
        if let Some(churn) = &mut self.churn {
            while churn.leaving.join_next().await.is_some() {}
        }
    }
}
