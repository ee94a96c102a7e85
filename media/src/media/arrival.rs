//! Which sequence numbers of a stream arrived: a bitmap over the last [`LOG_SPAN`], so that a
//! repair (an RTX packet, a RED block) of something that already arrived is told from one that
//! fills a gap.

use crate::media::forwarder::seq_before;

/// Sequence numbers of a stream whose arrival is remembered, back from the highest: more than
/// the NACK generator asks for. A multiple of 64.
const LOG_SPAN: u16 = 1_024;

/// Which of a stream's last [`LOG_SPAN`] sequence numbers arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArrivalLog {
    highest: Option<u16>,
    bits: [u64; LOG_SPAN as usize / 64],
}

impl ArrivalLog {
    pub(crate) const EMPTY: Self = Self {
        highest: None,
        bits: [0; LOG_SPAN as usize / 64],
    };

    fn set(&mut self, seq: u16, on: bool) {
        let index = usize::from(seq % LOG_SPAN);
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if on {
            self.bits[word] |= bit;
        } else {
            self.bits[word] &= !bit;
        }
    }

    /// Notes `seq`'s arrival.
    pub(crate) fn note(&mut self, seq: u16) {
        match self.highest {
            Some(highest) if seq_before(highest, seq) => {
                // the sequence numbers jumped over have not arrived (yet)
                let jump = seq.wrapping_sub(highest).min(LOG_SPAN);
                for step in 1..jump {
                    self.set(seq.wrapping_sub(step), false);
                }
                self.highest = Some(seq);
            }
            Some(_) => {}
            None => self.highest = Some(seq),
        }
        self.set(seq, true);
    }

    /// Whether `seq` arrived already, or is too old to tell (then a repair is no use either).
    pub(crate) fn has(&self, seq: u16) -> bool {
        let Some(highest) = self.highest else {
            return false;
        };
        if seq_before(highest, seq) {
            return false;
        }
        if highest.wrapping_sub(seq) >= LOG_SPAN {
            return true;
        }
        let index = usize::from(seq % LOG_SPAN);
        self.bits[index / 64] & (1 << (index % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arrival_log_forgets_what_it_jumped_over_and_what_is_too_old() {
        let mut log = ArrivalLog::EMPTY;
        assert!(!log.has(5), "nothing arrived");
        log.note(65_530);
        log.note(3); // across the wrap: 65_531..=2 are missing
        assert!(log.has(65_530) && log.has(3));
        assert!(!log.has(65_535) && !log.has(0) && !log.has(4));
        log.note(0);
        assert!(log.has(0));
        // a jump of more than the span leaves none of the skipped ones marked
        log.note(3 + LOG_SPAN + 10);
        assert!(!log.has(3 + LOG_SPAN + 9) && !log.has(20 + LOG_SPAN));
        assert!(
            log.has(3),
            "older than the span counts as arrived: its repair is no use"
        );
    }
}
