//! The throttle gate shared by every request to one vault, and the request counters.
//!
//! Key Vault throttles per vault and region (about 4,000 transactions per 10 s for secrets) and
//! answers 429 with `Retry-After` when a client goes over. azure_core's retry policy already
//! retries a 429 after its `Retry-After`, but only for the request that got it: the other
//! workers keep hammering the vault and collect their own 429s. [`Pacer`] makes them slow down
//! together: a 429 closes a gate that every request to that vault waits at until the
//! `Retry-After` deadline. It also learns a request rate from the throttling it sees (an
//! additive-increase / multiplicative-decrease limiter): when a 429 opens a new throttle period,
//! the rate is capped just under what was sent in the last 10 s, then grows again a few percent
//! per second while no 429 comes, so a self-pacing client stays near the budget with few 429s.
//! [`PacingPolicy`] plugs the pacer into the azure_core pipeline as a per-try policy, so it sees
//! every attempt (retries and the authentication challenge included) and counts them.
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

/// The window Key Vault's budgets are expressed in.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Fewer requests than this in a window is no evidence of a budget: a lone 429 (a fault, a
/// neighbour's burst) must not cut the rate.
const MIN_EVIDENCE: usize = 100;
/// Share of the observed rate kept after a throttle period starts.
const DECREASE: f64 = 0.9;
/// Growth per second without throttling.
const INCREASE_PER_SECOND: f64 = 1.03;
/// The learned rate never drops below this (requests per second).
const MIN_RATE: f64 = 5.0;
/// Above this the limiter steps aside (requests per second).
const MAX_RATE: f64 = 50_000.0;
/// Used when a 429 carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A `Retry-After` longer than this is capped, so a wrong header cannot park a run for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Counters of the requests sent to one vault, for progress output and the benchmark.
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
    /// The request rate the limiter currently allows (requests per second), if it has
    /// learned one.
    pub rate_limit: Option<f64>,
}

/// The shared gate and counters of one vault. Cheap to share (`Arc`), safe to use from any
/// number of tasks.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<PacerState>,
    requests: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
}

#[derive(Debug)]
struct PacerState {
    adaptive: bool,
    /// Nobody sends before this instant (the latest `Retry-After` deadline).
    gate_until: Option<Instant>,
    /// The learned rate, requests per second.
    limit: Option<f64>,
    /// When the limit last changed (decrease, or growth applied).
    limit_changed: Instant,
    /// The next free send slot under the limit.
    next_slot: Instant,
    /// Send times within the last budget window.
    recent: VecDeque<Instant>,
}

/// What [`PacerState::reserve`] decided for one request.
#[derive(Debug, PartialEq, Eq)]
enum Reservation {
    /// Send at this instant (now or later).
    SendAt(Instant),
    /// The gate is closed until this instant; ask again then.
    GateUntil(Instant),
}

impl PacerState {
    fn new(adaptive: bool, now: Instant) -> Self {
        Self {
            adaptive,
            gate_until: None,
            limit: None,
            limit_changed: now,
            next_slot: now,
            recent: VecDeque::new(),
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(front) = self.recent.front() {
            if now.saturating_duration_since(*front) > BUDGET_WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// Applies the growth earned by whole seconds without throttling.
    fn grow(&mut self, now: Instant) {
        let Some(limit) = self.limit else { return };
        let clean = now.saturating_duration_since(self.limit_changed).as_secs();
        if clean == 0 {
            return;
        }
        let grown = limit * INCREASE_PER_SECOND.powi(i32::try_from(clean).unwrap_or(i32::MAX));
        self.limit = (grown < MAX_RATE).then_some(grown);
        self.limit_changed += Duration::from_secs(clean);
    }

    fn reserve(&mut self, now: Instant) -> Reservation {
        if let Some(gate) = self.gate_until {
            if gate > now {
                return Reservation::GateUntil(gate);
            }
            self.gate_until = None;
        }
        self.grow(now);
        match self.limit {
            None => Reservation::SendAt(now),
            Some(limit) => {
                let slot = self.next_slot.max(now);
                self.next_slot = slot + Duration::from_secs_f64(1.0 / limit);
                Reservation::SendAt(slot)
            }
        }
    }

    fn record_send(&mut self, now: Instant) {
        self.forget_old(now);
        self.recent.push_back(now);
    }

    fn record_throttle(&mut self, now: Instant, retry_after: Duration) {
        let new_period = self.gate_until.is_none_or(|gate| gate <= now);
        let deadline = now + retry_after.min(MAX_RETRY_AFTER);
        self.gate_until = Some(self.gate_until.map_or(deadline, |gate| gate.max(deadline)));
        self.next_slot = self.next_slot.max(deadline);
        if !(self.adaptive && new_period) {
            return;
        }
        self.forget_old(now);
        if self.recent.len() < MIN_EVIDENCE {
            return;
        }
        let observed = self.recent.len() as f64 / BUDGET_WINDOW.as_secs_f64();
        let candidate = (observed * DECREASE).max(MIN_RATE);
        self.limit = Some(match self.limit {
            Some(limit) => limit.min(candidate).max(MIN_RATE),
            None => candidate,
        });
        self.limit_changed = deadline;
    }
}

impl Pacer {
    /// A pacer with the gate, and with the adaptive rate limiter when `adaptive` is set.
    pub fn new(adaptive: bool) -> Self {
        Self {
            state: Mutex::new(PacerState::new(adaptive, Instant::now())),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            transport_errors: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PacerState> {
        // A panic while holding this lock cannot leave the state inconsistent in a way that
        // matters (it only schedules sends), so a poisoned lock is used as is.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until this request may be sent: after every `Retry-After` deadline announced so
    /// far, and in its turn under the learned rate.
    pub async fn acquire(&self) {
        loop {
            let decision = self.lock().reserve(Instant::now());
            match decision {
                Reservation::GateUntil(gate) => tokio::time::sleep_until(gate).await,
                Reservation::SendAt(at) => {
                    tokio::time::sleep_until(at).await;
                    // A 429 may have closed the gate while this request waited for its slot.
                    let closed_until = {
                        let mut state = self.lock();
                        let now = Instant::now();
                        match state.gate_until {
                            Some(gate) if gate > now => Some(gate),
                            _ => {
                                state.record_send(now);
                                None
                            }
                        }
                    };
                    if let Some(gate) = closed_until {
                        tokio::time::sleep_until(gate).await;
                        self.lock().record_send(Instant::now());
                    }
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Records a response: a 429 closes the gate for everyone until its `Retry-After`.
    pub fn record_status(&self, status: u16, retry_after: Option<Duration>) {
        match status {
            429 => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                self.lock()
                    .record_throttle(Instant::now(), retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
            }
            500..=599 => {
                self.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Records a request that got no response.
    pub fn record_transport_error(&self) {
        self.transport_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters so far.
    pub fn stats(&self) -> RequestStats {
        RequestStats {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
            rate_limit: self.lock().limit,
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
        self.pacer.acquire().await;
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "pacing policy placed last in the pipeline",
            ));
        };
        let result = first.send(ctx, request, rest).await;
        match &result {
            Ok(response) => {
                let status = u16::from(response.status());
                let wait = (status == 429)
                    .then(|| retry_after(response.headers()))
                    .flatten();
                self.pacer.record_status(status, wait);
            }
            Err(_) => self.pacer.record_transport_error(),
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

    #[test]
    fn a_throttle_closes_the_gate_for_everyone_until_the_deadline() {
        let t0 = Instant::now();
        let mut state = PacerState::new(false, t0);
        assert_eq!(state.reserve(t0), Reservation::SendAt(t0));
        state.record_throttle(t0, secs(3.0));
        let deadline = t0 + secs(3.0);
        assert_eq!(
            state.reserve(t0 + secs(1.0)),
            Reservation::GateUntil(deadline)
        );
        assert_eq!(
            state.reserve(t0 + secs(2.9)),
            Reservation::GateUntil(deadline)
        );
        assert_eq!(
            state.reserve(t0 + secs(3.0)),
            Reservation::SendAt(t0 + secs(3.0))
        );
    }

    #[test]
    fn a_shorter_retry_after_never_reopens_the_gate_early() {
        let t0 = Instant::now();
        let mut state = PacerState::new(false, t0);
        state.record_throttle(t0, secs(5.0));
        state.record_throttle(t0 + secs(1.0), secs(1.0));
        assert_eq!(
            state.reserve(t0 + secs(2.5)),
            Reservation::GateUntil(t0 + secs(5.0))
        );
    }

    #[test]
    fn the_gate_caps_absurd_retry_after() {
        let t0 = Instant::now();
        let mut state = PacerState::new(false, t0);
        state.record_throttle(t0, Duration::from_secs(86_400));
        assert_eq!(
            state.reserve(t0),
            Reservation::GateUntil(t0 + MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn a_lone_throttle_does_not_teach_a_rate() {
        let t0 = Instant::now();
        let mut state = PacerState::new(true, t0);
        for i in 0..10 {
            state.record_send(t0 + secs(f64::from(i) * 0.01));
        }
        state.record_throttle(t0 + secs(0.2), secs(1.0));
        assert_eq!(state.limit, None);
    }

    #[test]
    fn throttling_after_a_burst_learns_a_rate_under_the_budget() {
        let t0 = Instant::now();
        let mut state = PacerState::new(true, t0);
        // 4,000 requests in 2 s, then the vault answers 429 for the rest of its window.
        for i in 0..4000 {
            state.record_send(t0 + secs(f64::from(i) * 0.0005));
        }
        state.record_throttle(t0 + secs(2.0), secs(8.0));
        let limit = state.limit.unwrap();
        assert!((limit - 360.0).abs() < 1e-6, "{limit}");
        // The in-flight requests' 429s in the same period do not cut it again.
        state.record_throttle(t0 + secs(2.01), secs(8.0));
        assert!((state.limit.unwrap() - 360.0).abs() < 1e-6);
        // After the gate, sends are spaced 1/360 s apart.
        let open = t0 + secs(10.5);
        let Reservation::SendAt(a) = state.reserve(open) else {
            panic!("gate should be open")
        };
        let Reservation::SendAt(b) = state.reserve(open) else {
            panic!("gate should be open")
        };
        let gap = b.duration_since(a).as_secs_f64();
        assert!((gap - 1.0 / 360.0).abs() < 1e-4, "{gap}");
    }

    #[test]
    fn the_rate_grows_back_while_nothing_is_throttled() {
        let t0 = Instant::now();
        let mut state = PacerState::new(true, t0);
        state.limit = Some(100.0);
        state.limit_changed = t0;
        state.grow(t0 + secs(10.5));
        let limit = state.limit.unwrap();
        assert!((limit - 100.0 * 1.03f64.powi(10)).abs() < 1e-6, "{limit}");
        state.limit = Some(MAX_RATE * 0.99);
        state.grow(t0 + secs(20.0));
        assert_eq!(state.limit, None);
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
    async fn waiting_workers_are_released_together_at_the_deadline() {
        let pacer = Arc::new(Pacer::new(false));
        pacer.acquire().await;
        pacer.record_status(429, Some(Duration::from_millis(300)));
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
            assert!(sent.duration_since(start) >= Duration::from_millis(290));
        }
        let stats = pacer.stats();
        assert_eq!(stats.requests, 5);
        assert_eq!(stats.throttled, 1);
    }
}
