//! The transport of a participant relayed from another node: its media arrives over the
//! cascade link to its node.
//!
//! A relayed participant is an ordinary participant of the room here: it publishes what its
//! node announced, subscribers get slots for it, its audio level counts for the active speaker
//! and its group of pictures is cached when its source cannot be asked for keyframes. Only its
//! transport differs. The link is shared by every participant of that node, so the core opens
//! the link's datagrams and hands each relayed packet to the fan-out; this transport says what
//! the participant publishes and turns a keyframe request into
//! [`TransportEvent::KeyframeWanted`] naming the SSRC (so the simulcast layer) it is for, which
//! the core sends over the link to the participant's node (which asks the participant,
//! throttled there too).

use crate::media::transport::{Inbound, Publication, Transport, TransportError, TransportEvent};
use rtc::shared::TaggedBytesMut;
use std::time::Instant;

/// A participant on another node, reached over a cascade link.
#[derive(Debug)]
pub struct LinkTransport {
    publication: Publication,
    /// The SSRCs keyframes were asked of, until their events are taken.
    keyframes_wanted: Vec<u32>,
    closed: bool,
}

impl LinkTransport {
    /// A relayed participant that publishes what `publication` says (as its node announced).
    pub fn new(publication: Publication) -> Self {
        Self {
            publication,
            keyframes_wanted: Vec::new(),
            closed: false,
        }
    }
}

impl Transport for LinkTransport {
    fn handle_datagram(&mut self, _datagram: TaggedBytesMut) -> Result<(), TransportError> {
        Err(TransportError(
            "a relayed participant's media arrives over its cascade link".into(),
        ))
    }

    fn poll_inbound(&mut self) -> Option<Inbound> {
        None
    }

    fn poll_event(&mut self, _now: Instant) -> Option<TransportEvent> {
        let media_ssrc = self.keyframes_wanted.pop()?;
        Some(TransportEvent::KeyframeWanted { media_ssrc })
    }

    fn is_connected(&self) -> bool {
        !self.closed
    }

    fn publication(&self) -> &Publication {
        &self.publication
    }

    fn request_keyframe(&mut self, _now: Instant, media_ssrc: u32) -> Result<bool, TransportError> {
        if self.closed {
            return Ok(false);
        }
        if !self.keyframes_wanted.contains(&media_ssrc) {
            self.keyframes_wanted.push(media_ssrc);
        }
        Ok(true)
    }

    fn close(&mut self) {
        self.closed = true;
        self.keyframes_wanted.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::forwarder::MediaKind;

    fn relayed() -> LinkTransport {
        LinkTransport::new(Publication {
            payload_kinds: vec![(111, MediaKind::Audio), (102, MediaKind::Video)],
            audio_level_ext: None,
            cache_gop: false,
        })
    }

    #[test]
    fn keyframe_requests_become_one_event_per_layer_until_drained_and_none_once_closed() {
        let mut t = relayed();
        let now = Instant::now();
        assert!(
            t.poll_event(now).is_none(),
            "nothing to tell before a request"
        );
        assert!(t.request_keyframe(now, 1).unwrap());
        assert!(t.request_keyframe(now, 1).unwrap());
        assert!(t.request_keyframe(now, 2).unwrap());
        let mut asked = Vec::new();
        while let Some(TransportEvent::KeyframeWanted { media_ssrc }) = t.poll_event(now) {
            asked.push(media_ssrc);
        }
        asked.sort_unstable();
        assert_eq!(asked, [1, 2], "one event per SSRC");
        assert!(t.request_keyframe(now, 1).unwrap());
        t.close();
        assert!(!t.request_keyframe(now, 1).unwrap());
        assert!(t.poll_event(now).is_none());
        assert!(!t.is_connected());
    }

    #[test]
    fn it_publishes_what_its_node_announced_and_takes_no_datagrams() {
        let mut t = relayed();
        assert!(t.publication().publishes(MediaKind::Video));
        assert_eq!(t.publication().kind_of(111), Some(MediaKind::Audio));
        assert_eq!(t.publication().kind_of(96), None);
        let datagram = TaggedBytesMut {
            now: Instant::now(),
            transport: Default::default(),
            message: bytes::BytesMut::from(&[0x80u8, 111, 0, 1][..]),
        };
        assert!(t.handle_datagram(datagram).is_err());
        assert!(t.poll_inbound().is_none() && t.consumers().is_empty());
    }
}
