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
        let now = crate::wire::iso_ms(crate::db::now_ms());
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{now} {:5} {}", record.level(), record.args());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// `READY=1`: migrations ran and listeners are bound.
pub fn notify_ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// Pet the watchdog at half its interval, but only while the database writer is alive: a
/// wedged writer means lost messages, and systemd should restart us.
pub fn spawn_watchdog(db: Db, shutdown: tokio_util::sync::CancellationToken) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    log::info!("systemd watchdog every {:?}", every);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let healthy = db.writer_alive() && db.write(|_| Ok(())).await.is_ok();
                    if healthy {
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    } else {
                        log::error!("database writer is not answering; withholding the watchdog ping");
                    }
                }
            }
        }
    });
}
