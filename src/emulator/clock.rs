//! The one clock of the emulator: everything time-based (timestamps, delete latency, purge
//! windows, retention, token expiry, throttle budgets) reads it, and the admin endpoint can
//! freeze, advance or set it.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
struct ClockState {
    /// Added to the system time.
    offset_ms: i64,
    /// When frozen, the instant the clock shows.
    frozen_at_ms: Option<i64>,
}

/// A controllable wall clock in Unix milliseconds.
#[derive(Debug, Default)]
pub struct Clock {
    state: Mutex<ClockState>,
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Clock {
    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .frozen_at_ms
            .unwrap_or_else(|| system_ms() + state.offset_ms)
    }

    /// Now, in Unix seconds.
    pub fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Stops the clock where it is.
    pub fn freeze(&self) {
        let now = self.now_ms();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .frozen_at_ms = Some(now);
    }

    /// Lets the clock run again from where it shows.
    pub fn unfreeze(&self) {
        let now = self.now_ms();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.frozen_at_ms = None;
        state.offset_ms = now - system_ms();
    }

    /// Moves the clock by `ms` (frozen or not).
    pub fn advance_ms(&self, ms: i64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.frozen_at_ms.as_mut() {
            Some(at) => *at += ms,
            None => state.offset_ms += ms,
        }
    }

    /// Sets the clock to `at_ms` (frozen or not).
    pub fn set_ms(&self, at_ms: i64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.frozen_at_ms.as_mut() {
            Some(at) => *at = at_ms,
            None => state.offset_ms = at_ms - system_ms(),
        }
    }

    /// Back to the system time, running.
    pub fn reset(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = ClockState::default();
    }

    /// True while frozen.
    pub fn is_frozen(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .frozen_at_ms
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_when_told() {
        let clock = Clock::default();
        clock.freeze();
        let at = clock.now_ms();
        clock.advance_ms(5_000);
        assert_eq!(clock.now_ms(), at + 5_000);
        clock.set_ms(1_000);
        assert_eq!(clock.now_s(), 1);
        clock.unfreeze();
        assert!(clock.now_ms() >= 1_000 && clock.now_ms() < 60_000);
    }
}
