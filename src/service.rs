//! Service integration: logging to journald or stderr, and systemd's notify protocol
//! (`READY=1`, `WATCHDOG=1`, `STOPPING=1`).

use std::io::Write;
use std::time::Duration;

use crate::db::Db;

/// Journald when systemd connected our output to the journal, stderr lines otherwise.
pub fn init_logging(level: &str) {
    let filter = parse_level(level);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journal) = systemd_journal_logger::JournalLog::new() {
            if journal
                .with_syslog_identifier("hangin".into())
                .install()
                .is_ok()
            {
                log::set_max_level(filter);
                return;
            }
        }
    }
    if log::set_boxed_logger(Box::new(StderrLogger { filter })).is_ok() {
        log::set_max_level(filter);
    }
}

/// `info`, `debug`, … or `RUST_LOG` style `hangin=debug` (the level after the last `=` of the
/// first directive that names hangin or none).
pub fn parse_level(spec: &str) -> log::LevelFilter {
    let mut level = log::LevelFilter::Info;
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, lvl) = match directive.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, directive),
        };
        if target.is_none_or(|t| t.starts_with("hangin")) {
            if let Ok(l) = lvl.parse() {
                level = l;
            }
        }
    }
    level
}

struct StderrLogger {
    filter: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.filter
            && (metadata.target().starts_with("hangin") || metadata.level() <= log::Level::Warn)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = crate::wire::iso_ms(crate::clock::system_now_ms());
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{now} {:5} {}", record.level(), record.args());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// `READY=1` (with a human-readable `STATUS=`): migrations ran and listeners are bound.
pub fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// `STOPPING=1`: shutdown has begun.
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// Send to `$NOTIFY_SOCKET` if systemd gave us one; a failure is worth a warning, nothing more.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// The watchdog interval systemd asks for: `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another
/// process (absent `WATCHDOG_PID` means us, as in `sd_watchdog_enabled(3)`).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => {}
        Some(Ok(p)) if p == own_pid => {}
        Some(_) => return None,
    }
    Some(Duration::from_micros(usec))
}

/// How often to pet systemd's watchdog: half the interval it asks for, `None` when it asks for
/// no pings (logged when it does).
pub fn watchdog_period() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    let interval = watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())?;
    let every = interval / 2;
    log::info!("systemd watchdog: pinging every {every:?}");
    Some(every)
}

/// `WATCHDOG=1` after a healthy probe, nothing after another.
pub fn pet_when_healthy(healthy: bool) {
    if healthy {
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

/// Every `every` of the database's clock (the first `every` after this call), probe the writer
/// and tell `probed` whether it is healthy: alive, and committing within `every`. The server
/// pets systemd's watchdog only then ([`pet_when_healthy`]): a wedged writer means lost
/// messages, and systemd should restart us.
pub fn watchdog(
    db: Db,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut probed: impl FnMut(bool) + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // The schedule starts now (after READY=1), not whenever the task is first polled.
    let clock = db.clock().clone();
    let mut tick = clock.ticker(every);
    async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    // An empty write goes through the writer thread's queue and a commit.
                    let probe = clock.timeout(every, db.write(|_| Ok(())));
                    let healthy = db.writer_alive() && matches!(probe.await, Ok(Ok(())));
                    if !healthy {
                        log::error!("database writer is not answering; withholding the watchdog ping");
                    }
                    probed(healthy);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_follows_sd_watchdog_enabled() {
        let d = Duration::from_micros;
        assert_eq!(watchdog_interval(Some("400000"), None, 7), Some(d(400000)));
        assert_eq!(
            watchdog_interval(Some("400000"), Some("7"), 7),
            Some(d(400000))
        );
        assert_eq!(watchdog_interval(Some("400000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    /// The watchdog on virtual time: no probe before its period, a pet after each healthy one,
    /// none while the writer is wedged (the probe times out after one period), and pets again
    /// once the writer moves. Real SQLite file and writer thread; only the clock is manual.
    #[tokio::test]
    async fn the_watchdog_pets_on_the_clock_and_withholds_while_the_writer_is_wedged() {
        let dir = tempfile::tempdir().unwrap();
        let (clock, hand) = crate::clock::Clock::manual(1_000_000);
        let db = Db::open_with_clock(&dir.path().join("db.sqlite3"), clock).unwrap();
        let every = Duration::from_secs(15);
        let (probes_tx, mut probes) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(watchdog(db.clone(), every, shutdown.clone(), move |ok| {
            let _ = probes_tx.send(ok);
        }));
        async fn next(probes: &mut tokio::sync::mpsc::UnboundedReceiver<bool>) -> bool {
            let probe = tokio::time::timeout(Duration::from_secs(10), probes.recv());
            probe.await.expect("a probe").expect("watchdog running")
        }

        // Nothing can happen before the first period ends: the ticker waits on the hand.
        hand.advance(every - Duration::from_millis(1));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(probes.try_recv().is_err(), "probed before its period");
        hand.advance(Duration::from_millis(1));
        assert!(next(&mut probes).await, "a healthy writer is petted");

        // Wedge the writer: a write that blocks its thread until released.
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let wedge = {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |_| {
                    entered_tx.send(()).unwrap();
                    released.recv().ok();
                    Ok(())
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || entered.recv().unwrap())
            .await
            .unwrap();
        hand.advance(every);
        // The probe is queued behind the wedge; one more period and it has timed out.
        let queued = tokio::time::Instant::now();
        while db.queued_writes() < 1 {
            assert!(
                queued.elapsed() < Duration::from_secs(10),
                "no probe queued"
            );
            tokio::task::yield_now().await;
        }
        hand.advance(every);
        assert!(!next(&mut probes).await, "a wedged writer is not petted");

        // Released: the next probe (already due) commits and the pets resume.
        release.send(()).unwrap();
        wedge.await.unwrap().unwrap();
        assert!(
            next(&mut probes).await,
            "petted again once the writer moves"
        );
        shutdown.cancel();
        task.await.unwrap();
        db.close();
    }
}
