//! The throttle controller shared by every request to one vault, and the request counters.
//!
//! Key Vault throttles per vault and region (about 4,000 transactions per 10 s for secrets) and
//! answers 429 with `Retry-After` when a client goes over. The budget is shared with every other
//! client of the vault, so a stray 429 now and then is normal and says nothing about the rate
//! this client may keep; a run of them does. [`Pacer`] tells the two apart:
//!
//! - A lone or rare 429 changes nothing shared: azure_core's retry policy waits out that
//!   request's `Retry-After` and sends it again, and every other request goes on at the same rate.
//! - Sustained throttling (a large share of 429s among the last answers: a run of them, or
//!   many interleaved with admitted ones) closes a gate that every request to the vault waits
//!   at until the latest `Retry-After` deadline, and sets the rate to what the vault really
//!   admitted: the answers that were not 429 over the last budget window, not what was sent.
//! - After such a pause the learned rate holds near that figure for a few seconds (growing 2 % a
//!   second), then doubles every second until it no longer binds, so a run is back at full speed
//!   seconds after the throttling stops. The next sustained throttling measures the budget again.
//!
//! `--max-rate` caps the rate by hand on top of all this. The decisions live in [`Controller`],
//! a pure state machine that is handed the time on every call, so it is tested on a simulated
//! clock against the traffic it meets (`simulation` tests: steady and changing budgets, 1 % and
//! 5 % stray 429s). [`PacingPolicy`] plugs the pacer into the azure_core pipeline as a per-try
//! policy, so it sees every attempt (retries and the authentication challenge included).
//! See <https://learn.microsoft.com/azure/key-vault/general/service-limits>.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use azure_core::http::{
    Context, Request,
    headers::{HeaderName, Headers},
    policies::{Policy, PolicyResult},
};
use tokio::time::Instant;

#[cfg(test)]
mod simulation;

/// The window Key Vault's budgets are expressed in; admitted answers are counted over it.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// The last this many answers are weighed to tell sustained throttling from stray 429s. Not a
/// count of consecutive 429s: a vault refuses before doing any work, so the 429s of requests
/// sent together come back before their admitted neighbours and a few stray ones arrive in a
/// row (the first requests of a run, all sent at once, would otherwise read as a spent budget).
const RECENT_ANSWERS: usize = 32;
/// This many 429s among the last [`RECENT_ANSWERS`] answers (31 %) is sustained throttling;
/// with 5 % stray 429s a window holds that many about once in 400,000.
const THROTTLED_AMONG_RECENT: usize = 10;
/// Share of the measured admitted rate the learned rate starts at: just under the budget, so
/// the next window is not spent before it ends.
const MARGIN: f64 = 0.95;
/// How long the learned rate holds near the measured budget before probing faster.
const HOLD: Duration = Duration::from_secs(5);
/// Growth per second while holding.
const HOLD_GROWTH_PER_SECOND: f64 = 1.02;
/// Growth per second after the hold: recovery to full speed takes seconds, not minutes.
const GROWTH_PER_SECOND: f64 = 2.0;
/// The learned rate never starts below this (requests per second).
const MIN_RATE: f64 = 1.0;
/// A learned rate above this no longer binds anything and is dropped (requests per second).
const MAX_RATE: f64 = 50_000.0;
/// Admitted answers are counted in slices this long, so memory stays small at any rate.
const SLICE: Duration = Duration::from_millis(100);
/// The admitted rate is never measured over less than this, so a pause right after the first
/// requests does not read a burst as a rate.
const MIN_SPAN: Duration = Duration::from_secs(1);
/// Used when a 429 carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A `Retry-After` longer than this is capped, so a wrong header cannot park a run for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// How a vault's requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingConfig {
    /// Learn a rate from sustained throttling. Without it, sustained throttling still pauses
    /// every request until its `Retry-After`, but the rate is not lowered afterwards.
    pub adaptive: bool,
    /// Never send more than this many requests per second (`--max-rate`); must be positive.
    pub max_rate: Option<f64>,
}

impl Default for PacingConfig {
    /// Adaptive, no cap.
    fn default() -> Self {
        Self {
            adaptive: true,
            max_rate: None,
        }
    }
}

/// Counters of the requests sent to one vault and the controller's state, for progress output,
/// the `--json` summary and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RequestStats {
    /// HTTP requests sent (every attempt, the authentication challenge included).
    pub requests: u64,
    /// 429 responses received.
    pub throttled: u64,
    /// 5xx responses received.
    pub server_errors: u64,
    /// Requests that got no response (connection refused, reset, timed out).
    pub transport_errors: u64,
    /// The request rate currently allowed (requests per second): the learned rate or
    /// `--max-rate`, whichever is lower; `None` when nothing limits it.
    pub rate_limit: Option<f64>,
    /// Times sustained throttling paused every request and set the learned rate.
    pub rate_cuts: u64,
    /// The lowest rate learned from sustained throttling during the run, if any.
    pub lowest_learned_rate: Option<f64>,
}

/// A request let through the pacer: hand it back with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendTicket {
    sent: Instant,
}

/// What became of one request, as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The vault answered anything but 429: it counted against the budget and was admitted.
    Admitted,
    /// 429, with the wait the vault asked for.
    Throttled(Duration),
    /// No answer (connection refused, reset, timed out): no evidence either way.
    Lost,
}

/// What [`Controller::reserve`] decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Go to [`Controller::confirm`] at this instant (now or later).
    SendAt(Instant),
    /// Every request is paused until this instant; reserve again then.
    GateUntil(Instant),
}

/// A rate learned from sustained throttling.
#[derive(Debug, Clone, Copy)]
struct Learned {
    /// Requests per second at `since`.
    base: f64,
    /// When the pause that taught it ended: growth counts from here.
    since: Instant,
}

/// The pacing decisions for one vault, on a clock the caller hands in (`now` in every call):
/// [`Pacer`] drives it with tokio's clock, the tests with a simulated one. Usage per request:
/// [`Controller::reserve`], wait until the instant it names, [`Controller::confirm`] (which may
/// send the request back to wait at a gate closed meanwhile), send, then
/// [`Controller::record`] the answer with the ticket.
#[derive(Debug)]
pub struct Controller {
    config: PacingConfig,
    /// Nobody sends before this instant (the latest `Retry-After` of sustained throttling).
    gate_until: Option<Instant>,
    learned: Option<Learned>,
    /// The next free send slot under the rate in force.
    next_slot: Instant,
    /// The first request sent, to know how long the admitted count covers.
    first_send: Option<Instant>,
    /// When the last pause began: 429s of requests sent before it are the same episode.
    episode_start: Option<Instant>,
    /// Admitted answers within the last budget window: (start of a slice, answers in it).
    admitted: VecDeque<(Instant, u32)>,
    /// The last answers, `true` for a 429.
    recent: VecDeque<bool>,
    /// 429s among `recent`.
    recent_throttled: usize,
    cuts: u64,
    lowest_learned: Option<f64>,
}

impl Controller {
    /// A controller with nothing learned.
    pub fn new(config: PacingConfig, now: Instant) -> Self {
        Self {
            config,
            gate_until: None,
            learned: None,
            next_slot: now,
            first_send: None,
            episode_start: None,
            admitted: VecDeque::new(),
            recent: VecDeque::with_capacity(RECENT_ANSWERS + 1),
            recent_throttled: 0,
            cuts: 0,
            lowest_learned: None,
        }
    }

    /// The rate in force at `now` (requests per second), `None` when nothing limits it.
    pub fn rate(&mut self, now: Instant) -> Option<f64> {
        let learned = self.learned_rate(now);
        match (learned, self.config.max_rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The learned rate grown by the time since its pause ended; dropped once it no longer
    /// binds anything.
    fn learned_rate(&mut self, now: Instant) -> Option<f64> {
        let learned = self.learned?;
        let t = now.saturating_duration_since(learned.since);
        let held = t.min(HOLD).as_secs_f64();
        let beyond = t.saturating_sub(HOLD).as_secs_f64();
        let rate = learned.base
            * HOLD_GROWTH_PER_SECOND.powf(held)
            * GROWTH_PER_SECOND.powf(beyond.min(64.0));
        if rate >= MAX_RATE {
            self.learned = None;
            return None;
        }
        Some(rate)
    }

    /// The gate, if it is closed at `now`.
    fn gate(&self, now: Instant) -> Option<Instant> {
        self.gate_until.filter(|gate| *gate > now)
    }

    /// Books a send slot for one request, or says the gate is closed.
    pub fn reserve(&mut self, now: Instant) -> Reservation {
        if let Some(gate) = self.gate(now) {
            return Reservation::GateUntil(gate);
        }
        match self.rate(now) {
            None => Reservation::SendAt(now),
            Some(rate) => {
                let slot = self.next_slot.max(now);
                self.next_slot = slot + Duration::from_secs_f64(1.0 / rate);
                Reservation::SendAt(slot)
            }
        }
    }

    /// At the booked instant: the request goes now (`Ok`), unless sustained throttling closed
    /// the gate while it waited (`Err(until)`: wait, then reserve again).
    pub fn confirm(&mut self, now: Instant) -> Result<SendTicket, Instant> {
        if let Some(gate) = self.gate(now) {
            return Err(gate);
        }
        self.first_send.get_or_insert(now);
        Ok(SendTicket { sent: now })
    }

    /// Learns from the answer to the request sent with `ticket`.
    pub fn record(&mut self, ticket: SendTicket, now: Instant, answer: Answer) {
        match answer {
            Answer::Admitted => {
                self.forget_old(now);
                match self.admitted.back_mut() {
                    Some((start, count)) if now < *start + SLICE => *count += 1,
                    _ => self.admitted.push_back((now, 1)),
                }
                self.remember(false);
            }
            Answer::Throttled(wait) => self.record_throttle(ticket.sent, now, wait),
            Answer::Lost => {}
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((start, _)) = self.admitted.front() {
            if now.saturating_duration_since(*start) > BUDGET_WINDOW {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
    }

    fn remember(&mut self, throttled: bool) {
        self.recent.push_back(throttled);
        self.recent_throttled += usize::from(throttled);
        if self.recent.len() > RECENT_ANSWERS
            && let Some(old) = self.recent.pop_front()
        {
            self.recent_throttled -= usize::from(old);
        }
    }

    fn record_throttle(&mut self, sent: Instant, now: Instant, wait: Duration) {
        let deadline = now + wait.min(MAX_RETRY_AFTER);
        if self.episode_start.is_some_and(|start| sent < start) {
            // In flight when this episode's pause began: the same evidence, already acted on.
            // It may still know a later deadline.
            if self.gate(now).is_some() {
                self.close_gate(deadline);
            }
            return;
        }
        self.remember(true);
        if self.recent_throttled < THROTTLED_AMONG_RECENT {
            // A stray 429: only its own request waits (azure_core's retry policy sleeps its
            // `Retry-After`); the rate stays.
            return;
        }
        self.episode_start = Some(now);
        self.close_gate(deadline);
        self.recent.clear();
        self.recent_throttled = 0;
        if !self.config.adaptive {
            return;
        }
        // What the vault admitted over the last window, per second. The window covers the
        // time the run has been sending plus the wait the vault asks for, at most the budget
        // window: a vault that spent its budget in the first second of a run and asks to wait
        // out the rest of its window admits that budget per window, not per second.
        self.forget_old(now);
        let sending = self
            .first_send
            .map_or(Duration::ZERO, |first| now.saturating_duration_since(first));
        let span = (sending + wait.min(MAX_RETRY_AFTER)).clamp(MIN_SPAN, BUDGET_WINDOW);
        let admitted: u32 = self.admitted.iter().map(|(_, count)| count).sum();
        let admitted = f64::from(admitted) / span.as_secs_f64();
        let base = (admitted * MARGIN).max(MIN_RATE);
        self.learned = Some(Learned {
            base,
            since: self.gate_until.unwrap_or(deadline),
        });
        self.cuts += 1;
        self.lowest_learned = Some(self.lowest_learned.map_or(base, |low| low.min(base)));
    }

    fn close_gate(&mut self, deadline: Instant) {
        let gate = self.gate_until.map_or(deadline, |gate| gate.max(deadline));
        self.gate_until = Some(gate);
        self.next_slot = self.next_slot.max(gate);
        if let Some(learned) = self.learned.as_mut() {
            // A later deadline in the same episode: growth starts when the pause really ends.
            learned.since = learned.since.max(gate);
        }
    }

    /// Times sustained throttling set the learned rate, and the lowest rate it set.
    fn cuts(&self) -> (u64, Option<f64>) {
        (self.cuts, self.lowest_learned)
    }
}

/// The shared controller and counters of one vault. Cheap to share (`Arc`), safe to use from
/// any number of tasks.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<Controller>,
    requests: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
}

impl Pacer {
    /// A pacer for one vault, paced as `config` says.
    pub fn new(config: PacingConfig) -> Self {
        Self {
            state: Mutex::new(Controller::new(config, Instant::now())),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            transport_errors: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Controller> {
        // A panic while holding this lock cannot leave the state inconsistent in a way that
        // matters (it only schedules sends), so a poisoned lock is used as is.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until this request may be sent: after every pause that sustained throttling
    /// announced, and in its turn under the rate in force. Hand the ticket back with the answer.
    pub async fn acquire(&self) -> SendTicket {
        loop {
            let decision = self.lock().reserve(Instant::now());
            match decision {
                Reservation::GateUntil(gate) => tokio::time::sleep_until(gate).await,
                Reservation::SendAt(at) => {
                    // A timer costs a tick (1 ms) even when due: unpaced requests skip it.
                    if at > Instant::now() {
                        tokio::time::sleep_until(at).await;
                    }
                    let confirmed = self.lock().confirm(Instant::now());
                    match confirmed {
                        Ok(ticket) => {
                            self.requests.fetch_add(1, Ordering::Relaxed);
                            return ticket;
                        }
                        Err(gate) => tokio::time::sleep_until(gate).await,
                    }
                }
            }
        }
    }

    /// Records the answer to the request sent with `ticket`: its status and, for a 429, the
    /// wait the vault asked for.
    pub fn record_status(&self, ticket: SendTicket, status: u16, retry_after: Option<Duration>) {
        let answer = match status {
            429 => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                Answer::Throttled(retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
            }
            500..=599 => {
                self.server_errors.fetch_add(1, Ordering::Relaxed);
                Answer::Admitted
            }
            _ => Answer::Admitted,
        };
        self.lock().record(ticket, Instant::now(), answer);
    }

    /// Records a request that got no response.
    pub fn record_transport_error(&self, ticket: SendTicket) {
        self.transport_errors.fetch_add(1, Ordering::Relaxed);
        self.lock().record(ticket, Instant::now(), Answer::Lost);
    }

    /// The counters so far, and the rate in force.
    pub fn stats(&self) -> RequestStats {
        let (rate_limit, (rate_cuts, lowest_learned_rate)) = {
            let mut state = self.lock();
            (state.rate(Instant::now()), state.cuts())
        };
        RequestStats {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
            rate_limit,
            rate_cuts,
            lowest_learned_rate,
        }
    }
}

/// Reads how long a throttled client must wait: `Retry-After` in seconds or as an HTTP date,
/// or the millisecond headers Azure services also send.
pub fn retry_after(headers: &Headers) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get_optional_str(&HeaderName::from_static(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    let value = headers.get_optional_str(&HeaderName::from_static("retry-after"))?;
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = azure_core::time::parse_rfc7231(value).ok()?;
    let wait = date - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// The azure_core per-try policy that puts every request to one vault through its [`Pacer`].
#[derive(Debug, Clone)]
pub struct PacingPolicy {
    pacer: Arc<Pacer>,
}

impl PacingPolicy {
    /// A policy feeding `pacer`; give every client of one vault the same pacer.
    pub fn new(pacer: Arc<Pacer>) -> Self {
        Self { pacer }
    }
}

#[async_trait::async_trait]
impl Policy for PacingPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "pacing policy placed last in the pipeline",
            ));
        };
        let ticket = self.pacer.acquire().await;
        let result = first.send(ctx, request, rest).await;
        match &result {
            Ok(response) => {
                let status = u16::from(response.status());
                let wait = (status == 429)
                    .then(|| retry_after(response.headers()))
                    .flatten();
                self.pacer.record_status(ticket, status, wait);
            }
            Err(_) => self.pacer.record_transport_error(ticket),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Sends one request at `at` and records `answer` for it at the same instant.
    fn exchange(c: &mut Controller, at: Instant, answer: Answer) {
        let ticket = c.confirm(at).expect("gate open");
        c.record(ticket, at, answer);
    }

    #[test]
    fn a_stray_429_neither_pauses_everyone_nor_lowers_the_rate() {
        let t0 = Instant::now();
        let mut c = Controller::new(PacingConfig::default(), t0);
        for i in 0..500 {
            exchange(&mut c, t0 + secs(f64::from(i) * 0.002), Answer::Admitted);
        }
        // The old pacer closed the gate for everyone and cut the rate to 90 % of what was sent.
        exchange(&mut c, t0 + secs(1.0), Answer::Throttled(secs(1.0)));
        assert_eq!(
            c.reserve(t0 + secs(1.0)),
            Reservation::SendAt(t0 + secs(1.0))
        );
        assert_eq!(c.rate(t0 + secs(1.0)), None);
        assert_eq!(c.cuts(), (0, None));
    }

    /// Sends `n` requests at `at` and records a 429 with `wait` for each at `at`.
    fn refused(c: &mut Controller, n: usize, at: Instant, wait: Duration) {
        for _ in 0..n {
            exchange(c, at, Answer::Throttled(wait));
        }
    }

    #[test]
    fn a_run_of_429s_pauses_everyone_until_the_latest_deadline() {
        let t0 = Instant::now();
        let mut c = Controller::new(PacingConfig::default(), t0);
        let at = t0 + secs(0.1);
        refused(&mut c, THROTTLED_AMONG_RECENT - 1, at, secs(3.0));
        assert_eq!(c.reserve(at), Reservation::SendAt(at), "not yet sustained");
        refused(&mut c, 1, at, secs(3.0));
        let deadline = at + secs(3.0);
        assert_eq!(c.reserve(t0 + secs(1.0)), Reservation::GateUntil(deadline));
        // An answer to a request sent before the pause may push the deadline later, never
        // earlier, and is not new evidence.
        let early = SendTicket { sent: t0 };
        c.record(early, t0 + secs(0.5), Answer::Throttled(secs(4.0)));
        c.record(early, t0 + secs(0.6), Answer::Throttled(secs(0.1)));
        assert_eq!(c.cuts().0, 1);
        assert_eq!(
            c.reserve(t0 + secs(2.9)),
            Reservation::GateUntil(t0 + secs(4.5))
        );
        assert!(matches!(c.reserve(t0 + secs(4.5)), Reservation::SendAt(_)));
    }

    #[test]
    fn stray_429s_answered_before_their_neighbours_are_not_a_run() {
        let t0 = Instant::now();
        let mut c = Controller::new(PacingConfig::default(), t0);
        // 64 requests sent at once, 5 of them refused: the refusals come back first.
        let tickets: Vec<_> = (0..64).map(|_| c.confirm(t0).unwrap()).collect();
        for ticket in &tickets[..5] {
            c.record(*ticket, t0 + secs(0.001), Answer::Throttled(secs(1.0)));
        }
        for ticket in &tickets[5..] {
            c.record(*ticket, t0 + secs(0.02), Answer::Admitted);
        }
        assert_eq!(c.cuts(), (0, None));
        assert_eq!(
            c.reserve(t0 + secs(0.02)),
            Reservation::SendAt(t0 + secs(0.02))
        );
    }

    #[test]
    fn a_closed_gate_sends_a_booked_request_back_to_wait() {
        let t0 = Instant::now();
        let mut c = Controller::new(PacingConfig::default(), t0);
        assert_eq!(c.reserve(t0), Reservation::SendAt(t0));
        refused(&mut c, THROTTLED_AMONG_RECENT, t0, secs(2.0));
        assert_eq!(c.confirm(t0 + secs(0.1)), Err(t0 + secs(2.0)));
    }

    #[test]
    fn an_absurd_retry_after_is_capped() {
        let t0 = Instant::now();
        let mut c = Controller::new(PacingConfig::default(), t0);
        refused(
            &mut c,
            THROTTLED_AMONG_RECENT,
            t0,
            Duration::from_secs(86_400),
        );
        assert_eq!(c.reserve(t0), Reservation::GateUntil(t0 + MAX_RETRY_AFTER));
    }

    #[test]
    fn a_share_of_429s_without_a_run_is_sustained_throttling() {
        let t0 = Instant::now();
        let mut c = Controller::new(PacingConfig::default(), t0);
        // Two answers in five are 429, never two in a row.
        let mut at = t0;
        for i in 0..RECENT_ANSWERS {
            if c.cuts().0 > 0 {
                break;
            }
            at = t0 + secs(i as f64 * 0.01);
            let answer = if i % 5 == 1 || i % 5 == 3 {
                Answer::Throttled(secs(1.0))
            } else {
                Answer::Admitted
            };
            exchange(&mut c, at, answer);
        }
        assert_eq!(c.cuts().0, 1);
        assert!(matches!(c.reserve(at), Reservation::GateUntil(_)));
    }

    #[test]
    fn sustained_throttling_learns_what_the_vault_admitted_not_what_was_sent() {
        let t0 = Instant::now();
        let mut c = Controller::new(PacingConfig::default(), t0);
        // 2,000 admitted in the first second, 1,000 more sent and refused, and the vault asks
        // to wait out the 9 s left of its 10 s window: 200 requests per second.
        for i in 0..2000 {
            exchange(&mut c, t0 + secs(f64::from(i) * 0.0005), Answer::Admitted);
        }
        let in_flight = SendTicket {
            sent: t0 + secs(0.99),
        };
        for _ in 0..1000 {
            c.record(in_flight, t0 + secs(1.0), Answer::Throttled(secs(9.0)));
        }
        let (cuts, lowest) = c.cuts();
        assert_eq!(cuts, 1);
        let learned = lowest.unwrap();
        assert!((learned - 200.0 * MARGIN).abs() < 1.0, "{learned}");
        // After the pause, sends are spaced by the learned rate.
        let open = t0 + secs(10.0);
        let Reservation::SendAt(a) = c.reserve(open) else {
            panic!("gate open")
        };
        let Reservation::SendAt(b) = c.reserve(open) else {
            panic!("gate open")
        };
        let gap = b.duration_since(a).as_secs_f64();
        assert!((gap - 1.0 / learned).abs() < 1e-4, "{gap}");
    }

    #[test]
    fn the_learned_rate_holds_then_recovers_within_seconds() {
        let t0 = Instant::now();
        let mut c = Controller::new(PacingConfig::default(), t0);
        c.learned = Some(Learned {
            base: 100.0,
            since: t0,
        });
        let held = c.rate(t0 + HOLD).unwrap();
        assert!((100.0..115.0).contains(&held), "{held}");
        let probing = c.rate(t0 + HOLD + secs(3.0)).unwrap();
        assert!(probing > 8.0 * 100.0, "{probing}");
        // Gone after about 9 s of doubling: it no longer limits anything.
        assert_eq!(c.rate(t0 + HOLD + secs(15.0)), None);
        assert_eq!(c.learned.map(|l| l.base), None);
    }

    #[test]
    fn max_rate_spaces_requests_without_any_throttling() {
        let t0 = Instant::now();
        let mut c = Controller::new(
            PacingConfig {
                adaptive: true,
                max_rate: Some(4.0),
            },
            t0,
        );
        let slots: Vec<_> = (0..4).map(|_| c.reserve(t0)).collect();
        assert_eq!(
            slots,
            (0..4)
                .map(|i| Reservation::SendAt(t0 + secs(f64::from(i) * 0.25)))
                .collect::<Vec<_>>()
        );
        // A learned rate above the cap does not lift it; one below it wins.
        c.learned = Some(Learned {
            base: 40.0,
            since: t0,
        });
        assert_eq!(c.rate(t0), Some(4.0));
        c.learned = Some(Learned {
            base: 2.0,
            since: t0,
        });
        assert_eq!(c.rate(t0), Some(2.0));
    }

    #[test]
    fn without_adaptation_sustained_throttling_pauses_but_teaches_nothing() {
        let t0 = Instant::now();
        let mut c = Controller::new(
            PacingConfig {
                adaptive: false,
                max_rate: None,
            },
            t0,
        );
        refused(&mut c, THROTTLED_AMONG_RECENT, t0, secs(1.0));
        assert_eq!(c.reserve(t0), Reservation::GateUntil(t0 + secs(1.0)));
        assert_eq!(c.rate(t0 + secs(2.0)), None);
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let mut headers = Headers::new();
        headers.insert(HeaderName::from_static("retry-after"), "7");
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let mut headers = Headers::new();
        headers.insert(HeaderName::from_static("retry-after-ms"), "250");
        headers.insert(HeaderName::from_static("retry-after"), "7");
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut headers = Headers::new();
        headers.insert(
            HeaderName::from_static("retry-after"),
            "Fri, 01 Jan 2021 00:00:00 GMT",
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        assert_eq!(retry_after(&Headers::new()), None);
    }

    #[tokio::test]
    async fn paused_workers_wait_for_the_deadline() {
        // Without adaptation, so that the test measures the pause alone.
        let pacer = Arc::new(Pacer::new(PacingConfig {
            adaptive: false,
            max_rate: None,
        }));
        for _ in 0..THROTTLED_AMONG_RECENT {
            let ticket = pacer.acquire().await;
            pacer.record_status(ticket, 429, Some(Duration::from_millis(300)));
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let pacer = pacer.clone();
            tasks.push(tokio::spawn(async move {
                pacer.acquire().await;
                Instant::now()
            }));
        }
        for task in tasks {
            let sent = task.await.unwrap();
            assert!(sent.duration_since(start) >= Duration::from_millis(250));
        }
        let stats = pacer.stats();
        assert_eq!(stats.requests, THROTTLED_AMONG_RECENT as u64 + 4);
        assert_eq!(stats.throttled, THROTTLED_AMONG_RECENT as u64);
        assert_eq!(stats.rate_limit, None);
    }
}
