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

/// Pet the watchdog at half its interval, but only while the database writer is alive and
/// commits: a wedged writer means lost messages, and systemd should restart us. `None` when
/// systemd does not ask for pings.
pub fn watchdog(
    db: Db,
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    let interval = watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())?;
    let every = interval / 2;
    log::info!("systemd watchdog: pinging every {every:?}");
    Some(async move {
        // The first ping follows READY=1 by half an interval, like every later one.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    // An empty write goes through the writer thread's queue and a commit.
                    let probe = tokio::time::timeout(every, db.write(|_| Ok(())));
                    let healthy = db.writer_alive() && matches!(probe.await, Ok(Ok(())));
                    if healthy {
                        notify(&[sd_notify::NotifyState::Watchdog]);
                    } else {
                        log::error!("database writer is not answering; withholding the watchdog ping");
                    }
                }
            }
        }
    })
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
}
