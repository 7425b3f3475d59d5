//! `hangin restore PATH`: put a backup in place of the database (the server must be stopped).
//!
//! The backup is copied into the data dir first (SQLite's backup API, so a source with its own
//! WAL is copied whole), the copy is checked (`PRAGMA integrity_check`, a hangin schema no newer
//! than this binary's) and migrated, the current database is folded (WAL checkpoint) and kept
//! aside as `hangin.sqlite3.before-restore-<UTC time>`, and the copy takes its name.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::db;

#[derive(Debug, Serialize)]
pub struct Restored {
    pub from: PathBuf,
    /// Schema version of the backup; it was migrated to `migrated_to`.
    pub schema_version: usize,
    pub migrated_to: usize,
    pub users: i64,
    pub messages: i64,
    /// Where the database that was replaced now is (none when there was none).
    pub previous: Option<PathBuf>,
}

fn staging_path(db_path: &Path) -> PathBuf {
    let mut p = db_path.as_os_str().to_owned();
    p.push(".restoring");
    PathBuf::from(p)
}

/// Copy `source` next to the database as the restore candidate; returns its path.
pub fn stage(source: &Path, db_path: &Path) -> anyhow::Result<PathBuf> {
    if !source.is_file() {
        anyhow::bail!("{} is not a file", source.display());
    }
    let staged = staging_path(db_path);
    remove_db_files(&staged);
    db::backup(source, &staged)
        .with_context(|| format!("{} cannot be read as an SQLite database", source.display()))?;
    Ok(staged)
}

/// Check the staged copy and swap it in. `source` is only named in the report.
pub fn install(source: &Path, staged: &Path, db_path: &Path) -> anyhow::Result<Restored> {
    let checked = check(staged);
    let (schema_version, users, messages) = match checked {
        Ok(v) => v,
        Err(e) => {
            remove_db_files(staged);
            return Err(e.context(format!("refusing to restore {}", source.display())));
        }
    };
    db::migrate(staged).context("migrating the restored database")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o600))?;

    let previous = if db_path.exists() {
        // Fold the WAL into the file so the kept database is complete on its own.
        {
            let conn = Connection::open(db_path)?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_else(|_| crate::clock::system_now_ms().to_string());
        let mut aside = db_path.as_os_str().to_owned();
        aside.push(format!(".before-restore-{stamp}"));
        let aside = PathBuf::from(aside);
        std::fs::rename(db_path, &aside)
            .with_context(|| format!("cannot move {} aside", db_path.display()))?;
        // A WAL left beside the new file would be replayed into it: keep it with its database.
        for suffix in ["-wal", "-shm"] {
            let from = with_suffix(db_path, suffix);
            if from.exists() {
                std::fs::rename(&from, with_suffix(&aside, suffix))?;
            }
        }
        Some(aside)
    } else {
        None
    };
    std::fs::rename(staged, db_path)?;
    Ok(Restored {
        from: source.to_path_buf(),
        schema_version,
        migrated_to: db::latest_version(),
        users,
        messages,
        previous,
    })
}

/// Integrity and schema of a candidate: (schema version, users, messages).
fn check(path: &Path) -> anyhow::Result<(usize, i64, i64)> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if problems != ["ok"] {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        anyhow::bail!("integrity check failed: {}", shown.join("; "));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = db::latest_version() as i64;
    let has_users: bool = conn.query_row(
        "SELECT count(*) = 2 FROM sqlite_master WHERE type = 'table' AND name IN ('users', 'messages')",
        [],
        |r| r.get(0),
    )?;
    if version < 1 || !has_users {
        anyhow::bail!("not a hangin database (schema version {version}, no users/messages tables)");
    }
    if version > latest {
        anyhow::bail!(
            "made by a newer hangin: schema version {version}, this binary knows up to {latest}"
        );
    }
    let users = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
    let messages = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
    Ok((version as usize, users, messages))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(with_suffix(path, suffix));
    }
}
