//! The receive path of the lean participant: RTCP from the node (keyframe requests, NACKs),
//! and RTP on its receive slots, counted, stamped for latency and reassembled into frames.

use super::*;

impl Driver {
    pub(super) fn on_rtcp(&mut self, len: usize) {
        let Some(srtp) = &mut self.srtp else {
            return;
        };
        let Ok(plain) = srtp.remote.decrypt_rtcp(&self.buf[..len]) else {
            return;
        };
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut plain.freeze()) else {
            return;
        };
        let rtcp = &self.shared.rtcp;
        for packet in packets {
            let any = packet.as_any();
            let keyframe_for = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                rtcp.plis_received.fetch_add(1, Ordering::Relaxed);
                Some(pli.media_ssrc)
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                rtcp.firs_received.fetch_add(1, Ordering::Relaxed);
                fir.fir.first().map(|e| e.ssrc).or(Some(fir.media_ssrc))
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                rtcp.nacks_received.fetch_add(1, Ordering::Relaxed);
                let nacked = kaskade_rtcp_tap::nacked_packets(nack);
                rtcp.nacked_packets_received
                    .fetch_add(nacked, Ordering::Relaxed);
                None
            } else {
                None
            };
            if let (Some(ssrc), Some(senders)) = (keyframe_for, &mut self.senders)
                && let Some((camera, _, _)) = &mut senders.video
            {
                camera.request_keyframe(ssrc);
            }
        }
    }

    pub(super) fn on_rtp(&mut self, now: Instant, len: usize) {
        let datagram = &self.buf[..len];
        let Ok(header) = rtp::Header::unmarshal(&mut &datagram[..]) else {
            return;
        };
        let (Some(srtp), Some(&index)) = (&mut self.srtp, self.slot_by_ssrc.get(&header.ssrc))
        else {
            return;
        };
        let Ok(plain) = srtp.remote.decrypt_rtp_with_header(datagram, &header) else {
            return;
        };
        let plain = plain.freeze();
        let mut end = plain.len();
        if header.padding {
            end = end.saturating_sub(plain.last().map_or(0, |&n| usize::from(n)));
        }
        let start = header.marshal_size();
        if start > end {
            return;
        }
        let payload = plain.slice(start..end);
        let slot = &mut self.slots[index];
        let level = slot
            .level_ext
            .and_then(|id| header.get_extension(id))
            .and_then(|p| parse_audio_level(&p))
            .map(|(level, _voice)| level);
        let sequence = header.sequence_number;
        let outcome = slot.decoder.as_mut().map(|d| {
            d.push(
                now,
                sequence,
                header.timestamp,
                header.marker,
                payload.clone(),
            )
        });
        let keyframe_start = slot.kind == MediaKind::Video && starts_keyframe(&payload);
        let pli_due =
            slot.keyframes
                .pli_due(now, slot.kind, sequence, keyframe_start, outcome.as_ref());
        let len = payload.len() as u64;
        let sunk = self
            .shared
            .sink
            .as_ref()
            .map(|_| sink_packet(&header, payload));
        self.batch.push(Arrival {
            slot: index,
            len,
            outcome,
            level,
            arrival: now,
            sunk,
        });
        if pli_due {
            self.send_pli(header.ssrc);
        }
    }

    /// Counts the burst's packets under one lock, then hands them to the sink.
    pub(super) fn flush_arrivals(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let slots = &self.slots;
        let batch = &mut self.batch;
        let owners = self.shared.with_session(self.session, |s| {
            batch
                .iter()
                .map(|a| {
                    let slot = &slots[a.slot];
                    let owner = s.slot_owner(&slot.mid);
                    s.stats.count_received(
                        owner,
                        slot.kind,
                        a.len,
                        a.outcome.as_ref(),
                        a.level,
                        a.arrival,
                    );
                    owner
                })
                .collect::<Vec<_>>()
        });
        if let (Some(sink), Some(owners)) = (&self.shared.sink, owners) {
            for (a, owner) in batch.drain(..).zip(owners) {
                if let (Some(from), Some(packet)) = (owner, a.sunk) {
                    (sink.0)(ReceivedPacket {
                        from,
                        kind: slots[a.slot].kind,
                        packet,
                        arrival: a.arrival,
                    });
                }
            }
        }
        batch.clear();
    }
}
