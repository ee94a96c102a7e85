//! Phones dialling in: kaskade answers (sound only), its voice menu asks for the meeting's
//! number and, when the meeting has one, its PIN, by DTMF (RFC 4733 events or SIP INFO); an
//! unknown number is asked again (three tries), a wrong PIN once more, then the menu says
//! goodbye and hangs up. A phone that gets in joins the meeting as a participant with source
//! kind `phone` and goes on as any SIP leg.
//!
//! [`Menu`] is the menu's logic, keys in and steps out, without I/O or time; [`run`] drives it
//! with the call, its sockets and the locator's numbers.

use super::dtmf::MAX_DIGITS;
use super::leg::Leg;
use super::media::IntoMeeting;
use super::metrics::Direction;
use super::mix::Mixer;
use super::prompts::Prompt;
use super::sdp::{self, AudioLine};
use super::sockets::LegSockets;
use super::ua::{Call, CallEvent, Incoming};
use super::{Callee, SipGateway};
use crate::node::NodeHandle;
use kaskade_protocol::directory::DialIn;
use rand::Rng;
use rsipstack::sip::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Unknown numbers a caller may enter before the menu gives up.
const NUMBER_TRIES: u8 = 3;
/// Wrong PINs a caller may enter before the menu gives up: one retry.
const PIN_TRIES: u8 = 2;
/// A caller who presses nothing this long after a prompt ends is said goodbye to.
const KEY_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest a caller stays in the menu.
const MENU_TIMEOUT: Duration = Duration::from_secs(180);

/// What the menu does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Play a prompt, then wait for keys.
    Say(Prompt),
    /// Find the meeting with this number ([`Menu::found`] takes the answer).
    Lookup(String),
    /// Say "joining", then join this meeting.
    Join(DialIn),
    /// Say goodbye, then hang up.
    HangUp,
}

/// Where the caller is in the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Entering the meeting's number.
    Number,
    /// Entering the PIN of this meeting.
    Pin(DialIn),
    /// Waiting for a lookup, or done.
    Waiting,
}

/// The voice menu's logic.
#[derive(Debug)]
pub struct Menu {
    stage: Stage,
    digits: String,
    number_tries: u8,
    pin_tries: u8,
    /// The meeting whose PIN was just entered wrong, until [`Menu::take_wrong_pin`].
    wrong_pin: Option<String>,
}

impl Menu {
    /// The menu, and its first step (the welcome, which asks for the number).
    pub fn start() -> (Self, Step) {
        let menu = Self {
            stage: Stage::Number,
            digits: String::new(),
            number_tries: 0,
            pin_tries: 0,
            wrong_pin: None,
        };
        (menu, Step::Say(Prompt::Welcome))
    }

    /// The caller pressed `key`: digits gather, `*` starts over, `#` ends the entry.
    pub fn key(&mut self, key: char) -> Option<Step> {
        match key {
            '0'..='9' if self.digits.len() < MAX_DIGITS => {
                self.digits.push(key);
                None
            }
            '*' => {
                self.digits.clear();
                None
            }
            '#' => self.entered(),
            _ => None,
        }
    }

    /// What the meeting lookup of the entered number found.
    pub fn found(&mut self, meeting: Option<DialIn>) -> Step {
        match meeting {
            None => {
                self.number_tries += 1;
                self.stage = Stage::Number;
                if self.number_tries >= NUMBER_TRIES {
                    Step::HangUp
                } else {
                    Step::Say(Prompt::Unknown)
                }
            }
            Some(meeting) if meeting.pin.is_some() => {
                self.stage = Stage::Pin(meeting);
                Step::Say(Prompt::Pin)
            }
            Some(meeting) => Step::Join(meeting),
        }
    }

    /// The meeting whose PIN the last key completed wrong, once (failed attempts are counted).
    pub fn take_wrong_pin(&mut self) -> Option<String> {
        self.wrong_pin.take()
    }

    fn entered(&mut self) -> Option<Step> {
        let digits = std::mem::take(&mut self.digits);
        match std::mem::replace(&mut self.stage, Stage::Waiting) {
            Stage::Number => Some(Step::Lookup(digits)),
            Stage::Pin(meeting) if meeting.pin.as_deref() == Some(digits.as_str()) => {
                Some(Step::Join(meeting))
            }
            Stage::Pin(meeting) => {
                self.pin_tries += 1;
                self.wrong_pin = Some(meeting.meeting.clone());
                if self.pin_tries >= PIN_TRIES {
                    Some(Step::HangUp)
                } else {
                    self.stage = Stage::Pin(meeting);
                    Some(Step::Say(Prompt::WrongPin))
                }
            }
            Stage::Waiting => None,
        }
    }
}

/// Answers a call dialling in, runs the menu, and joins the caller to the meeting they chose.
pub(super) async fn run(gateway: Arc<SipGateway>, node: NodeHandle, incoming: Incoming) {
    let caller = incoming.caller();
    let caller_key = incoming.caller_key();
    if gateway
        .attempts()
        .caller_locked(&caller_key, Instant::now())
    {
        info!(%caller, "dial-in refused: too many failed attempts");
        incoming.refuse(StatusCode::Forbidden);
        gateway
            .metrics
            .outcome(Direction::In, "refused: too many failed attempts");
        return;
    }
    let Ok(mut sockets) = LegSockets::bind(&gateway).await else {
        incoming.refuse(StatusCode::ServiceUnavailable);
        return;
    };
    let local = sockets.local_media(&gateway, true);
    let (ssrc, seq, timestamp, session_id): (u32, u16, u32, u64) = {
        let mut rng = rand::rng();
        let session_id = rng.random_range(1..1 << 48);
        (rng.random(), rng.random(), rng.random(), session_id)
    };
    let answered = sdp::answer(&incoming.offer(), &local, session_id, 1)
        .map_err(|e| e.to_string())
        .and_then(|(answer, agreement)| {
            let line = agreement.audio.clone().ok_or("no sound agreed")?;
            let mixer = Mixer::new(&line, ssrc, seq, timestamp)?;
            let into = IntoMeeting::new(&agreement, ssrc, 0)?;
            sockets.protect(&agreement).map_err(|e| e.to_string())?;
            Ok((answer, agreement, line, mixer, into))
        });
    let (answer, agreement, line, mixer, into) = match answered {
        Ok(answered) => answered,
        Err(why) => {
            info!(%caller, "dial-in refused: {why}");
            incoming.refuse(StatusCode::NotAcceptableHere);
            gateway.metrics.outcome(Direction::In, "no common codec");
            return;
        }
    };
    let call = match incoming.accept(answer.clone()) {
        Ok(call) => call,
        Err(failure) => {
            warn!(%caller, "dial-in: {failure}");
            return;
        }
    };
    info!(%caller, "a phone dialled in");
    let mut menu = MenuCall {
        gateway: &gateway,
        caller: caller_key,
        call,
        sockets,
        line,
        mixer,
        into,
    };
    gateway.metrics.answered(&agreement);
    let Some(meeting) = menu.run().await else {
        menu.call.hang_up().await;
        gateway.metrics.outcome(Direction::In, "left the menu");
        return;
    };
    let MenuCall {
        call,
        sockets,
        mixer,
        ..
    } = menu;
    let callee = Callee {
        uri: caller.clone(),
        name: phone_name(&caller),
        credential: None,
        phone: true,
    };
    let placed = (meeting.meeting.clone(), caller.as_str());
    let mut leg = match Leg::join(&gateway, node, placed, &callee, sockets).await {
        Ok(leg) => leg,
        Err(why) => {
            warn!(%caller, meeting = meeting.meeting, "dial-in could not join: {why}");
            call.hang_up().await;
            gateway.metrics.outcome(Direction::In, "could not join");
            return;
        }
    };
    leg.continue_sound(mixer);
    leg.continue_session(session_id, answer);
    leg.note(&caller, "dialled in").await;
    gateway.metrics.outcome(Direction::In, "dialled in");
    if let Some(ended) = leg.converse(call, agreement, gateway.policy.media).await {
        leg.note(&caller, ended).await;
    }
    leg.leave().await;
}

/// The tile's name of a phone that dialled in: the last digits of its number.
fn phone_name(caller: &str) -> String {
    let user = caller
        .split_once(':')
        .map_or(caller, |(_, rest)| rest)
        .split(['@', ';'])
        .next()
        .unwrap_or_default();
    let digits: String = user.chars().filter(char::is_ascii_digit).collect();
    match digits.len() {
        0 => "Phone".into(),
        n => format!("Phone …{}", &digits[n.saturating_sub(4)..]),
    }
}

/// A call in the voice menu: what it hears, and what it presses.
struct MenuCall<'a> {
    gateway: &'a SipGateway,
    /// Who calls ([`Incoming::caller_key`]), what failed attempts are counted by.
    caller: String,
    call: Call,
    sockets: LegSockets,
    line: AudioLine,
    mixer: Mixer,
    into: IntoMeeting,
}

impl MenuCall<'_> {
    /// Runs the menu: the meeting the caller may join, or `None` to hang up (or when the
    /// caller did).
    async fn run(&mut self) -> Option<DialIn> {
        let (mut menu, first) = Menu::start();
        let mut pending = Some(first);
        let mut ending: Option<Option<DialIn>> = None;
        let started = Instant::now();
        let mut last_heard = Instant::now();
        let mut packets = Vec::new();
        let mut frames = tokio::time::interval(Duration::from_millis(20));
        frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            if let Some(step) = pending.take() {
                pending = self.take(step, &mut menu, &mut ending).await;
                continue;
            }
            tokio::select! {
                _ = self.sockets.receive(&mut self.into, &mut packets) => {
                    // nothing of the caller reaches a meeting before they joined one
                    packets.clear();
                    for key in self.into.take_keys() {
                        last_heard = Instant::now();
                        pending = self.pressed(&mut menu, key, ending.is_some());
                    }
                }
                _ = frames.tick() => {
                    let mut out = Vec::new();
                    self.mixer.tick(Instant::now(), &mut out);
                    for packet in out {
                        self.sockets.send_audio(&packet, self.line.remote).await;
                    }
                    if self.mixer.saying() {
                        last_heard = Instant::now();
                    } else if let Some(outcome) = ending.take() {
                        return outcome;
                    } else if last_heard.elapsed() > KEY_TIMEOUT
                        || started.elapsed() > MENU_TIMEOUT
                    {
                        pending = Some(Step::HangUp);
                    }
                }
                event = self.call.next() => match event {
                    CallEvent::Ended(_) | CallEvent::Lost(_) => return None,
                    CallEvent::Key(key) => {
                        last_heard = Instant::now();
                        pending = self.pressed(&mut menu, key, ending.is_some());
                    }
                    CallEvent::Reoffer(_, reply) => reply.refuse(StatusCode::NotAcceptableHere).await,
                    CallEvent::KeyframeWanted => {}
                },
            }
        }
    }

    /// A key: it silences the prompt playing and goes to the menu (not once it is ending); a
    /// wrong PIN it completes is counted.
    fn pressed(&mut self, menu: &mut Menu, key: char, ending: bool) -> Option<Step> {
        if ending {
            return None;
        }
        self.mixer.hush();
        let step = menu.key(key);
        if let Some(meeting) = menu.take_wrong_pin() {
            let mut attempts = self.gateway.attempts();
            attempts.wrong_pin(&self.caller, &meeting, Instant::now());
        }
        step
    }

    /// Does `step`: the step that follows at once (a lookup's answer), if any.
    async fn take(
        &mut self,
        step: Step,
        menu: &mut Menu,
        ending: &mut Option<Option<DialIn>>,
    ) -> Option<Step> {
        match step {
            Step::Say(prompt) => self.mixer.say(&prompt.pcm()),
            Step::Lookup(number) => {
                let found = self.gateway.dialplan.dial_in(&number).await;
                let found = found.unwrap_or_else(|(_, why)| {
                    warn!("dial-in lookup: {why}");
                    None
                });
                let now = Instant::now();
                let mut attempts = self.gateway.attempts();
                match &found {
                    None => attempts.unknown_number(&self.caller, now),
                    Some(meeting)
                        if meeting.pin.is_some()
                            && attempts.meeting_locked(&meeting.meeting, now) =>
                    {
                        info!(caller = %self.caller, meeting = meeting.meeting, "dial-in: the meeting's PIN entry is locked");
                        return Some(Step::HangUp);
                    }
                    Some(_) => {}
                }
                return Some(menu.found(found));
            }
            Step::Join(meeting) => {
                self.mixer.say(&Prompt::Joining.pcm());
                *ending = Some(Some(meeting));
            }
            Step::HangUp => {
                self.mixer.say(&Prompt::Goodbye.pcm());
                *ending = Some(None);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(pin: Option<&str>) -> DialIn {
        DialIn {
            meeting: "board".into(),
            number: "123456789".into(),
            pin: pin.map(Into::into),
        }
    }

    fn press(menu: &mut Menu, keys: &str) -> Option<Step> {
        keys.chars().fold(None, |_, key| menu.key(key))
    }

    #[test]
    fn a_number_then_a_pin_joins_and_star_starts_an_entry_over() {
        let (mut menu, first) = Menu::start();
        assert_eq!(first, Step::Say(Prompt::Welcome));
        assert_eq!(press(&mut menu, "99*123456789"), None);
        assert_eq!(
            press(&mut menu, "#"),
            Some(Step::Lookup("123456789".into()))
        );
        assert_eq!(press(&mut menu, "5#"), None, "nothing while it looks up");
        assert_eq!(
            menu.found(Some(board(Some("2468")))),
            Step::Say(Prompt::Pin)
        );
        assert_eq!(
            press(&mut menu, "2468#"),
            Some(Step::Join(board(Some("2468"))))
        );
    }

    #[test]
    fn a_wrong_pin_gets_one_retry_then_goodbye() {
        let (mut menu, _) = Menu::start();
        press(&mut menu, "123456789#");
        menu.found(Some(board(Some("2468"))));
        assert_eq!(press(&mut menu, "1111#"), Some(Step::Say(Prompt::WrongPin)));
        assert_eq!(
            menu.take_wrong_pin().as_deref(),
            Some("board"),
            "counted once"
        );
        assert_eq!(menu.take_wrong_pin(), None);
        assert_eq!(
            press(&mut menu, "2468#"),
            Some(Step::Join(board(Some("2468"))))
        );
        assert_eq!(menu.take_wrong_pin(), None, "the right PIN is no failure");
        let (mut menu, _) = Menu::start();
        press(&mut menu, "123456789#");
        menu.found(Some(board(Some("2468"))));
        press(&mut menu, "1111#");
        assert_eq!(press(&mut menu, "2222#"), Some(Step::HangUp));
    }

    #[test]
    fn unknown_numbers_are_asked_again_three_times_and_no_pin_joins_at_once() {
        let (mut menu, _) = Menu::start();
        for _ in 0..NUMBER_TRIES - 1 {
            press(&mut menu, "1#");
            assert_eq!(menu.found(None), Step::Say(Prompt::Unknown));
        }
        press(&mut menu, "1#");
        assert_eq!(menu.found(None), Step::HangUp);
        let (mut menu, _) = Menu::start();
        press(&mut menu, "123456789#");
        assert_eq!(menu.found(Some(board(None))), Step::Join(board(None)));
    }

    #[test]
    fn phones_are_named_after_the_last_digits_of_their_number() {
        assert_eq!(
            phone_name("sip:+4722001234@trunk.example.org"),
            "Phone …1234"
        );
        assert_eq!(phone_name("sip:12@x;user=phone"), "Phone …12");
        assert_eq!(phone_name("sip:anonymous@anonymous.invalid"), "Phone");
    }
}
