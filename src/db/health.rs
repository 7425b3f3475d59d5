//! Can the database still take writes, and is it still the file we opened (docs/hardening.md
//! "Storage faults")? A full disk, a read-only remount or a deleted database file must show as
//! such — `/up` 503, writes 503 with `Retry-After`, a restart — instead of acknowledged writes
//! that go nowhere.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;
use tokio_util::sync::CancellationToken;

use super::{Db, DbError};

/// How often the database file's identity is compared with the one opened.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// `/up` reuses a probe's answer this long.
const PROBE_FRESH: Duration = Duration::from_secs(1);
/// A probe that has not committed by then counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl DbError {
    /// A fault of the storage under the database (full, read-only, I/O error, gone), as opposed
    /// to a bug or bad input: the client may retry later, and `/up` should say so.
    pub fn is_storage_fault(&self) -> bool {
        match self {
            DbError::Sqlite(e)
            | DbError::Migration(rusqlite_migration::Error::RusqliteError { err: e, .. }) => {
                sqlite_is_storage_fault(e)
            }
            DbError::WriterGone | DbError::QueueFull => true,
            DbError::Io(e) => io_is_storage_fault(e),
            _ => false,
        }
    }
}

pub fn sqlite_is_storage_fault(e: &rusqlite::Error) -> bool {
    match e.sqlite_error_code() {
        Some(code) => matches!(
            code,
            ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::OutOfMemory
        ),
        None => false,
    }
}

/// ENOSPC, EDQUOT, EROFS, EIO, EACCES/EPERM (a data dir the service user lost).
pub fn io_is_storage_fault(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS | libc::EIO | libc::EACCES | libc::EPERM)
    ) || e.kind() == std::io::ErrorKind::StorageFull
}

/// A copy of a SQLite error that keeps its code (rusqlite's error is not `Clone`): every write of
/// a failed batch gets the commit's own error, so it can be told apart from a bug.
pub fn copy_sqlite_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// Device and inode of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

pub fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Compare the database file with the one we opened every second; when it is gone or another
/// file, call `lost` once with a sentence saying so. (Writes would otherwise be acknowledged into
/// an unlinked inode and vanish at the next start.)
pub async fn watch_file(
    path: PathBuf,
    opened: FileId,
    shutdown: CancellationToken,
    lost: impl FnOnce(String) + Send + 'static,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let path2 = path.clone();
        let now = tokio::task::spawn_blocking(move || file_id(&path2)).await;
        let why = match now {
            Ok(Ok(id)) if id == opened => continue,
            Ok(Ok(_)) => "was replaced by another file",
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => "was deleted",
            // Permission trouble or I/O errors on stat say nothing certain; look again.
            Ok(Err(_)) | Err(_) => continue,
        };
        lost(format!(
            "database file {} {why} while the server was running; stopping so that the \
             service manager restarts it on the file now there (restore a backup if that \
             was not intended)",
            path.display()
        ));
        return;
    }
}

/// The answer of the last write probe, shared by `/up` callers.
#[derive(Default)]
pub struct WriteProbe {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl WriteProbe {
    /// Whether a real write through the writer thread commits now (cached `PROBE_FRESH`).
    /// Concurrent callers wait for one probe instead of queueing many.
    pub async fn check(&self, db: &Db) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = &*last {
            if at.elapsed() < PROBE_FRESH {
                return result.clone();
            }
        }
        let result = probe(db).await;
        if let Err(e) = &result {
            log::warn!("health check: the database cannot commit a write: {e}");
        }
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

/// Store the time in a one-row table: one changed page through the WAL and an fsync, the
/// smallest real commit. (Rewriting an unchanged row would not do: SQLite skips identical
/// cells, and the probe would pass on a full disk.) The table is created here rather than in a
/// migration because it holds nothing anyone reads.
async fn probe(db: &Db) -> Result<(), String> {
    if !db.writer_alive() {
        return Err("the database writer has stopped".into());
    }
    let write = db.write(|c| {
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS health_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL)",
        )?;
        c.execute(
            "INSERT INTO health_probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            [super::now_ms()],
        )?;
        Ok(())
    });
    match tokio::time::timeout(PROBE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no commit within {PROBE_TIMEOUT:?}")),
    }
}

/// Data directory only the service user can enter; the files the server keeps there only it can
/// read, whatever mode an older version or a restore left them with.
pub fn secure_data_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for name in [
        "hangin.sqlite3",
        "hangin.sqlite3-wal",
        "hangin.sqlite3-shm",
        "client-credentials.json",
    ] {
        let path = dir.join(name);
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    for sub in ["pictures", "tls"] {
        let path = dir.join(sub);
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Files and directories created from now on are the service user's alone (0600 / 0700),
/// whatever umask the shell or unit gave us. Called at the start of every command.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_codes_are_faults_and_constraint_is_not() {
        let err = |code| {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(err(rusqlite::ffi::SQLITE_FULL).is_storage_fault());
        assert!(err(rusqlite::ffi::SQLITE_READONLY).is_storage_fault());
        assert!(err(rusqlite::ffi::SQLITE_IOERR).is_storage_fault());
        assert!(!err(rusqlite::ffi::SQLITE_CONSTRAINT).is_storage_fault());
        assert!(DbError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)).is_storage_fault());
        assert!(!DbError::Task("x".into()).is_storage_fault());
    }
}
