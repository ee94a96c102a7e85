//! The voice menu's recorded prompts: 8 kHz G.711 µ-law, made with flite and ffmpeg by
//! `scripts/make-prompts` and built into the binary.

use crate::transcode::Law;

/// What the voice menu says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// "Welcome to kaskade. Please enter your meeting number, then press the pound key."
    Welcome,
    /// "Please enter the meeting PIN, then press the pound key."
    Pin,
    /// "That meeting number is not known. Please try again."
    Unknown,
    /// "That PIN is not right. Please try again."
    WrongPin,
    /// "Thank you. You are joining the meeting now."
    Joining,
    /// "Goodbye."
    Goodbye,
}

impl Prompt {
    /// Its samples, 8 kHz.
    pub fn pcm(self) -> Vec<i16> {
        let recorded: &[u8] = match self {
            Prompt::Welcome => include_bytes!("prompts/welcome.ulaw"),
            Prompt::Pin => include_bytes!("prompts/pin.ulaw"),
            Prompt::Unknown => include_bytes!("prompts/unknown.ulaw"),
            Prompt::WrongPin => include_bytes!("prompts/wrong_pin.ulaw"),
            Prompt::Joining => include_bytes!("prompts/joining.ulaw"),
            Prompt::Goodbye => include_bytes!("prompts/goodbye.ulaw"),
        };
        recorded.iter().map(|&b| Law::MuLaw.expand(b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prompt_is_speech_of_a_few_seconds() {
        for prompt in [
            Prompt::Welcome,
            Prompt::Pin,
            Prompt::Unknown,
            Prompt::WrongPin,
            Prompt::Joining,
            Prompt::Goodbye,
        ] {
            let pcm = prompt.pcm();
            let seconds = pcm.len() as f64 / 8_000.0;
            assert!((0.5..8.0).contains(&seconds), "{prompt:?}: {seconds} s");
            let rms =
                (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
            assert!(rms > 500.0, "{prompt:?} is audible: rms {rms}");
        }
    }
}
