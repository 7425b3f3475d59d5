//! Wall-clock time as a dependency. Everything that decides by the time of day (token and code
//! expiry, background windows, rate-limit windows) asks a [`Clock`]; the server runs on
//! [`Clock::system`], a test can hand in a [`Clock::manual`] one and move it with its
//! [`ClockHand`] instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A handle to the time: the system clock, or a manual one that only moves when told. Cheap to
/// clone; clones of a manual clock share its hands.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock standing at `start_ms` (Unix ms), and the hand that moves it.
    pub fn manual(start_ms: i64) -> (Clock, ClockHand) {
        let t = Arc::new(AtomicI64::new(start_ms));
        (
            Clock {
                manual: Some(t.clone()),
            },
            ClockHand(t),
        )
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => system_now_ms(),
        }
    }
}

/// Moves a manual [`Clock`] (and every clone of it).
#[derive(Debug, Clone)]
pub struct ClockHand(Arc<AtomicI64>);

impl ClockHand {
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

/// The system clock's Unix ms, for what must be real time whatever the server's clock says
/// (signatures other servers check, log and metric stamps).
pub fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let (clock, hand) = Clock::manual(1_000);
        let other = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        hand.advance(Duration::from_secs(2));
        assert_eq!(other.now_ms(), 3_000);
        hand.set_ms(5);
        assert_eq!(clock.now_ms(), 5);
    }

    #[test]
    fn the_system_clock_is_unix_time() {
        let t = Clock::system().now_ms();
        // After 2020-01-01 and within a second of the standard library's reading.
        assert!(t > 1_577_836_800_000);
        assert!((system_now_ms() - t).abs() < 1_000);
    }
}
