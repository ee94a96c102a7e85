//! Recordings on the wire: what the locator asks a recorder, and how a recording is described
//! to moderators, players and the recording's manifest.

use crate::ids::ParticipantId;
use serde::{Deserialize, Serialize};

/// `POST /recordings` on a recorder: record a meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecording {
    /// The meeting.
    pub meeting: String,
    /// Base URL of the join API to join through (the locator).
    pub join_url: String,
    /// A recorder-role token for the meeting.
    pub token: String,
}

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Recording now.
    Recording,
    /// Stopped; files are being finalized.
    Finalizing,
    /// Finished: every file is playable.
    Done,
    /// Could not record (the reason is in `incidents`).
    Failed,
}

/// One recording of a meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingInfo {
    /// Recording id (unique on its recorder).
    pub id: String,
    /// The meeting.
    pub meeting: String,
    /// Where it is in its life.
    pub state: RecordingState,
    /// Start, Unix milliseconds.
    pub started_at_ms: u64,
    /// Stop, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at_ms: Option<u64>,
    /// Everyone recorded.
    pub participants: Vec<RecordedParticipant>,
    /// The composed meeting video, once there is one (URL path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composed: Option<String>,
    /// The recording's manifest (URL path).
    pub manifest: String,
    /// What went wrong or was repaired (a lost node, a recovered file, a full disk).
    #[serde(default)]
    pub incidents: Vec<String>,
}

/// One participant of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedParticipant {
    /// Participant id in the meeting.
    pub id: ParticipantId,
    /// Stable identity from their token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Display name.
    pub name: String,
    /// When they appeared, from the recording's start, in milliseconds.
    pub joined_offset_ms: u64,
    /// When they left, from the recording's start, if they left before it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_offset_ms: Option<u64>,
    /// Their file (URL path), once it has media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Length of their file in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
}

/// `POST /api/recorders/report` on the locator, every second from every recorder (with a node
/// credential named after the recorder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderReport {
    /// The recorder's unique name.
    pub name: String,
    /// Its HTTP base URL: recording control (`/recordings`) and playback (`/r/{meeting}`).
    pub url: String,
    /// Recordings running now.
    pub recordings: u32,
}
