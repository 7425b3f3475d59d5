//! Time as a dependency. Everything that decides by the time of day (token and code expiry,
//! background windows) or waits for it (the sweeper, cable pings, the systemd watchdog, the OTP
//! purge) asks a [`Clock`]. The server runs on [`Clock::system`]; a test hands in a
//! [`Clock::manual`] one and moves it with its [`ClockHand`]: every sleep, tick and timeout
//! taken from that clock wakes when the hand passes its deadline, and at no other time, so a
//! five-minute window is tested in microseconds, in-process, without racing real time.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A handle to the time: the system clock, or a manual one that only moves when told. Cheap to
/// clone; clones of a manual clock share its hands.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    now_ms: AtomicI64,
    /// Bumped after every move, so sleepers look at the time again.
    moved: tokio::sync::watch::Sender<()>,
}

impl Manual {
    async fn sleep_until_ms(&self, at_ms: i64) {
        // Subscribe before reading the time: a move between the two is then still seen.
        let mut moved = self.moved.subscribe();
        while self.now_ms.load(Ordering::SeqCst) < at_ms {
            if moved.changed().await.is_err() {
                // Cannot happen while `self` (which owns the sender) is alive.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A deadline that passed before the work finished ([`Clock::timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl Clock {
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock standing at `start_ms` (Unix ms), and the hand that moves it.
    pub fn manual(start_ms: i64) -> (Clock, ClockHand) {
        let manual = Arc::new(Manual {
            now_ms: AtomicI64::new(start_ms),
            moved: tokio::sync::watch::Sender::new(()),
        });
        (
            Clock {
                manual: Some(manual.clone()),
            },
            ClockHand(manual),
        )
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(m) => m.now_ms.load(Ordering::SeqCst),
            None => system_now_ms(),
        }
    }

    /// Sleep until this clock reads `at_ms` or later.
    pub async fn sleep_until_ms(&self, at_ms: i64) {
        match &self.manual {
            Some(m) => m.sleep_until_ms(at_ms).await,
            None => {
                let wait = (at_ms - system_now_ms()).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await
            }
        }
    }

    /// Sleep for `span` of this clock's time.
    pub async fn sleep(&self, span: Duration) {
        match &self.manual {
            Some(_) => {
                self.sleep_until_ms(self.now_ms() + span.as_millis() as i64)
                    .await
            }
            None => tokio::time::sleep(span).await,
        }
    }

    /// `work`, unless `span` of this clock's time passes first.
    pub async fn timeout<F: Future>(&self, span: Duration, work: F) -> Result<F::Output, TimedOut> {
        match &self.manual {
            Some(_) => {
                tokio::select! {
                    out = work => Ok(out),
                    _ = self.sleep(span) => Err(TimedOut),
                }
            }
            None => tokio::time::timeout(span, work).await.map_err(|_| TimedOut),
        }
    }

    /// Ticks every `every`, the first one `every` from now; a tick that is late (the loop was
    /// busy) delays the later ones instead of bunching them up.
    pub fn ticker(&self, every: Duration) -> Ticker {
        match &self.manual {
            Some(m) => Ticker(TickerKind::Manual {
                clock: m.clone(),
                next_ms: self.now_ms() + every.as_millis() as i64,
                every_ms: every.as_millis() as i64,
            }),
            None => {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Ticker(TickerKind::System(tick))
            }
        }
    }
}

/// A periodic timer of a [`Clock`] ([`Clock::ticker`]).
#[derive(Debug)]
pub struct Ticker(TickerKind);

#[derive(Debug)]
enum TickerKind {
    System(tokio::time::Interval),
    Manual {
        clock: Arc<Manual>,
        next_ms: i64,
        every_ms: i64,
    },
}

impl Ticker {
    /// Wait for the next tick.
    pub async fn tick(&mut self) {
        match &mut self.0 {
            TickerKind::System(tick) => {
                tick.tick().await;
            }
            TickerKind::Manual {
                clock,
                next_ms,
                every_ms,
            } => {
                clock.sleep_until_ms(*next_ms).await;
                let now = clock.now_ms.load(Ordering::SeqCst);
                *next_ms = (*next_ms + *every_ms).max(now + *every_ms);
            }
        }
    }
}

/// Moves a manual [`Clock`] (and every clone of it), waking what sleeps on it.
#[derive(Debug, Clone)]
pub struct ClockHand(Arc<Manual>);

impl ClockHand {
    pub fn advance(&self, by: Duration) {
        self.0
            .now_ms
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        self.0.moved.send_replace(());
    }

    pub fn set_ms(&self, ms: i64) {
        self.0.now_ms.store(ms, Ordering::SeqCst);
        self.0.moved.send_replace(());
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

    /// Polls `f` once: whether it finished without the clock moving.
    fn ready_now<F: Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn a_manual_sleep_wakes_when_the_hand_passes_its_deadline_and_not_before() {
        let (clock, hand) = Clock::manual(0);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until_ms(5_000).await })
        };
        hand.advance(Duration::from_millis(4_999));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        hand.advance(Duration::from_millis(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken by the hand")
            .unwrap();
        // A deadline already passed does not wait at all.
        assert!(ready_now(clock.sleep_until_ms(1)).is_some());
    }

    #[tokio::test]
    async fn a_manual_ticker_ticks_once_per_period_and_delays_after_a_late_tick() {
        let (clock, hand) = Clock::manual(0);
        let mut ticker = clock.ticker(Duration::from_secs(3));
        assert!(ready_now(ticker.tick()).is_none());
        hand.advance(Duration::from_secs(3));
        assert!(ready_now(ticker.tick()).is_some());
        assert!(ready_now(ticker.tick()).is_none());
        // Ten periods late: one tick now, the next a whole period later (no burst of nine).
        hand.advance(Duration::from_secs(30));
        assert!(ready_now(ticker.tick()).is_some());
        assert!(ready_now(ticker.tick()).is_none());
        hand.advance(Duration::from_secs(3));
        assert!(ready_now(ticker.tick()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_timeout_fires_on_the_hand_not_on_the_runtime_s_time() {
        let (clock, hand) = Clock::manual(0);
        let waiting = {
            let clock = clock.clone();
            tokio::spawn(async move {
                clock
                    .timeout(Duration::from_secs(60), std::future::pending::<()>())
                    .await
            })
        };
        // Two minutes of the runtime's (paused) time pass: the manual clock does not move.
        tokio::time::advance(Duration::from_secs(120)).await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "only the hand moves a manual clock");
        hand.advance(Duration::from_secs(60));
        assert_eq!(waiting.await.unwrap(), Err(TimedOut));
        assert_eq!(
            clock.timeout(Duration::from_secs(1), async { 7 }).await,
            Ok(7)
        );
    }
}
