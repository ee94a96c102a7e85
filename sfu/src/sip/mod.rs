//! The SIP gateway: room systems, video MCUs and phones as participants of a meeting.

pub mod sdp;
