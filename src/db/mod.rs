//! The SQLite store: one writer thread with group commit, a pool of read connections, embedded
//! migrations, online backup. All SQL lives below this module; callers use the repository
//! functions in the submodules through [`Db::write`] and [`Db::read`].
//!
//! Durability: WAL with `synchronous=FULL`, so a commit has reached the disk (fsync of the WAL)
//! before [`Db::write`] returns. The writer takes every write that is queued when it wakes,
//! runs each in its own savepoint inside one transaction and commits once: many writes, one fsync.

pub mod admin;
pub mod chats;
pub mod clients;
pub mod health;
pub mod otp;
pub mod tokens;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use include_dir::{include_dir, Dir};
use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::Migrations;
use tokio::sync::oneshot;

use crate::clock::Clock;

static MIGRATIONS_DIR: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 4096;
/// Read connections kept open between reads.
const READERS: usize = 4;
/// Most read connections open at once: a burst beyond [`READERS`] opens short-lived extra ones
/// up to here, then waits for one to come back rather than opening connections without end.
const MAX_READERS: usize = 16;
/// Most writes queued for the writer. [`Db::submit`] is called under the engine's lock and must
/// never block, so a full queue refuses at once ([`DbError::QueueFull`], a storage fault: the
/// client is told to retry later) instead of waiting. The bound sits far above what a healthy
/// server has in flight — every connection awaits its own writes, the engine queues a few per
/// event, 10 000 connections at most — so it is only reached when the disk has stopped
/// committing, and then refusing beats growing the queue until the OOM killer ends the server.
/// Counted beside an unbounded channel rather than by a bounded one: std's bounded channel
/// allocates and touches all its slots up front (1.5 MB resident from the start for this bound).
pub const WRITE_QUEUE: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migrations: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("the database write queue is full")]
    QueueFull,
    #[error("database task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type DbResult<T> = Result<T, DbError>;

type Finish = Box<dyn FnOnce(DbResult<()>) + Send>;
/// A queued write: runs inside the batch transaction, says whether its savepoint stays, and
/// returns what to do once the batch's commit is known.
/// `None` means the batch could not start: the job only reports the failure.
type WriteJob = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

/// Counters for tests and the load tool (group-commit effectiveness).
#[derive(Debug, Default)]
pub struct WriteStats {
    pub transactions: AtomicU64,
    pub writes: AtomicU64,
}

#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    /// Writes sent to the writer and not yet taken up by it (at most [`WRITE_QUEUE`]).
    queued: Arc<AtomicUsize>,
    writer_alive: Arc<AtomicBool>,
    readers: Mutex<ReadPool>,
    reader_returned: Condvar,
    clock: Clock,
    stats: Arc<WriteStats>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn migrations() -> Migrations<'static> {
    Migrations::from_directory(&MIGRATIONS_DIR).expect("migrations directory is well-formed")
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// A read-only connection of the pool.
fn open_reader(path: &Path) -> DbResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    Ok(conn)
}

fn open_rw(path: &Path) -> DbResult<Connection> {
    let conn = Connection::open(path)?;
    // WAL is a property of the file; set it from the read-write side.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!(
            "SQLite refused WAL mode (got {mode}); durability still holds, concurrency less"
        );
    }
    configure(&conn)?;
    Ok(conn)
}

/// Migration state of a database file: (applied, latest).
pub fn migration_status(path: &Path) -> DbResult<(usize, usize)> {
    let conn = open_rw(path)?;
    let applied = match migrations().current_version(&conn)? {
        rusqlite_migration::SchemaVersion::Inside(n) => n.get(),
        _ => 0,
    };
    Ok((applied, latest_version()))
}

pub fn latest_version() -> usize {
    MIGRATIONS_DIR.dirs().count()
}

/// Apply pending migrations; returns how many ran.
pub fn migrate(path: &Path) -> DbResult<usize> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut conn = open_rw(path)?;
    let before = match migrations().current_version(&conn)? {
        rusqlite_migration::SchemaVersion::Inside(n) => n.get(),
        _ => 0,
    };
    if before < latest_version() && before > 0 {
        // Some migrations copy a table (04 rebuilds `messages`): say so before a long silence.
        log::info!(
            "database {}: migrating from schema version {before} to {}",
            path.display(),
            latest_version()
        );
    }
    migrations().to_latest(&mut conn)?;
    Ok(latest_version().saturating_sub(before))
}

impl Db {
    /// Open (creating and migrating as needed) the database at `path` and start the writer.
    pub fn open(path: &Path) -> DbResult<Db> {
        Db::open_with_clock(path, Clock::system())
    }

    /// [`Db::open`] with the clock the server's decisions take their time from.
    pub fn open_with_clock(path: &Path, clock: Clock) -> DbResult<Db> {
        let ran = migrate(path)?;
        if ran > 0 {
            log::info!("database {}: applied {ran} migration(s)", path.display());
        }
        let writer_conn = open_rw(path)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_reader(path)?);
        }
        let (tx, rx) = mpsc::channel::<WriteJob>();
        let queued = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(WriteStats::default());
        let alive = Arc::new(AtomicBool::new(true));
        let thread = {
            let stats = stats.clone();
            let alive = alive.clone();
            let queued = queued.clone();
            std::thread::Builder::new()
                .name("hangin-db-writer".into())
                .spawn(move || {
                    writer_loop(writer_conn, rx, &queued, &stats);
                    alive.store(false, Ordering::SeqCst);
                })?
        };
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(Some(tx)),
                queued,
                writer_alive: alive,
                readers: Mutex::new(ReadPool {
                    open: readers.len(),
                    idle: readers,
                }),
                reader_returned: Condvar::new(),
                clock,
                stats,
                writer_thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn stats(&self) -> &WriteStats {
        &self.inner.stats
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Unix ms by the server's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Writes waiting for the writer (not counting the batch it runs).
    pub fn queued_writes(&self) -> usize {
        self.inner.queued.load(Ordering::SeqCst)
    }

    pub fn writer_alive(&self) -> bool {
        self.inner.writer_alive.load(Ordering::SeqCst)
    }

    /// Run `f` inside the writer's next batch. Resolves after the batch has been committed (and
    /// so is on disk). An `Err` from `f` rolls back only `f`'s own changes.
    pub async fn write<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        self.write_then(f, |outcome| outcome).await?
    }

    /// Like [`Db::write`], and `then` runs on the publishing thread once the batch's commit is
    /// known, before any later write's `then`: effects that must follow commit order (a
    /// message's broadcast, a chat's history handed to a joining subscriber) happen there.
    pub async fn write_then<T, R, F, D>(&self, f: F, then: D) -> DbResult<R>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
        D: FnOnce(DbResult<T>) -> R + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<R>();
        self.submit(f, move |outcome| {
            let _ = reply_tx.send(then(outcome));
        })?;
        reply_rx.await.map_err(|_| DbError::WriterGone)
    }

    /// Queue a write without waiting for it: `done` runs on the publishing thread with the outcome
    /// once the batch's commit is known, in queue order. Never blocks, so it may be called
    /// under a lock; the engine queues its presence changes this way. Fails at once with
    /// [`DbError::QueueFull`] when [`WRITE_QUEUE`] writes are waiting.
    pub fn submit<T, F, D>(&self, f: F, done: D) -> DbResult<()>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
        D: FnOnce(DbResult<T>) + Send + 'static,
    {
        let job: WriteJob = Box::new(move |conn: Option<&Connection>| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(DbError::Task("could not begin a transaction".into())),
            };
            let keep = result.is_ok();
            let finish: Finish = Box::new(move |commit| {
                // A failed commit stored nothing, whatever the job said: its error wins (it
                // carries the storage fault's code).
                let outcome = match (commit, result) {
                    (Ok(()), r) => r,
                    (Err(e), _) => Err(e),
                };
                done(outcome);
            });
            (keep, finish)
        });
        let guard = self.inner.writer.lock();
        let sender = guard.as_ref().ok_or(DbError::WriterGone)?;
        let queued = &self.inner.queued;
        if queued.fetch_add(1, Ordering::SeqCst) >= WRITE_QUEUE {
            queued.fetch_sub(1, Ordering::SeqCst);
            return Err(DbError::QueueFull);
        }
        sender.send(job).map_err(|_| {
            queued.fetch_sub(1, Ordering::SeqCst);
            DbError::WriterGone
        })
    }

    /// Resolves once every write queued before it has been committed.
    pub async fn flush(&self) -> DbResult<()> {
        self.write(|_| Ok(())).await
    }

    /// Run `f` on a read connection, off the async runtime's worker threads.
    pub async fn read<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f))
            .await
            .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Stop accepting writes, let the writer commit what is queued, and wait for it.
    pub fn close(&self) {
        self.inner.writer.lock().take();
        if let Some(handle) = self.inner.writer_thread.lock().take() {
            let _ = handle.join();
        }
    }
}

/// The read connections: those idle, and how many exist (idle or in use).
struct ReadPool {
    idle: Vec<Connection>,
    open: usize,
}

/// One read's claim on a place in the pool; gives it back however the read ends (a failed
/// open or a panic included), keeping [`READERS`] connections and closing the extras.
struct Lease<'a> {
    inner: &'a Inner,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut pool = self.inner.readers.lock();
        match self.conn.take() {
            Some(c) if pool.idle.len() < READERS => pool.idle.push(c),
            _ => pool.open -= 1,
        }
        drop(pool);
        self.inner.reader_returned.notify_one();
    }
}

impl Inner {
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> DbResult<T>) -> DbResult<T> {
        let mut lease = Lease {
            inner: self,
            conn: None,
        };
        {
            let mut pool = self.readers.lock();
            loop {
                if let Some(c) = pool.idle.pop() {
                    lease.conn = Some(c);
                    break;
                }
                if pool.open < MAX_READERS {
                    pool.open += 1;
                    break;
                }
                // Reads run on blocking threads (`Db::read`), never on the runtime.
                self.reader_returned.wait(&mut pool);
            }
        }
        let conn = match lease.conn.take() {
            Some(c) => c,
            // All kept readers busy: a short-lived extra connection beats waiting.
            None => self.open_reader()?,
        };
        f(lease.conn.insert(conn))
    }

    fn open_reader(&self) -> DbResult<Connection> {
        open_reader(&self.path)
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<WriteJob>,
    queued: &AtomicUsize,
    stats: &WriteStats,
) {
    // What follows a commit (a message's broadcast, a joiner's history, the engine applying a
    // change) runs on a second thread, one batch after the other in commit order, while this
    // one already runs and commits the next batch: the writer's time per batch is the SQL and
    // the fsync, not also the publishing.
    std::thread::scope(|scope| {
        let (publish, batches) = mpsc::channel::<(Result<(), rusqlite::Error>, Vec<Finish>)>();
        std::thread::Builder::new()
            .name("hangin-db-publish".into())
            .spawn_scoped(scope, move || {
                for (commit, finishers) in batches {
                    for finish in finishers {
                        let result = match &commit {
                            Ok(()) => Ok(()),
                            Err(e) => Err(DbError::Sqlite(health::copy_sqlite_error(e))),
                        };
                        finish(result);
                    }
                }
            })
            .expect("spawning the publishing thread");
        let mut batch: Vec<WriteJob> = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            queued.fetch_sub(batch.len(), Ordering::SeqCst);
            let count = batch.len() as u64;
            let started = std::time::Instant::now();
            let finished = run_batch(&mut conn, batch.drain(..));
            crate::metrics::db_commit(started.elapsed(), count as usize);
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            stats.writes.fetch_add(count, Ordering::Relaxed);
            if publish.send(finished).is_err() {
                log::error!("the publishing thread has stopped");
            }
        }
    });
    // Channel closed: everything sent has been committed and published. Fold the WAL back
    // into the file.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        log::warn!("WAL checkpoint at shutdown failed: {e}");
    }
}

fn run_batch(
    conn: &mut Connection,
    jobs: impl Iterator<Item = WriteJob>,
) -> (Result<(), rusqlite::Error>, Vec<Finish>) {
    let mut finishers = Vec::new();
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            for job in jobs {
                log::error!("cannot begin a write transaction: {e}");
                let (_, finish) = job(None);
                finishers.push(finish);
            }
            return (Err(e), finishers);
        }
    };
    for job in jobs {
        // Cached statements rather than rusqlite's `Savepoint`, which re-parses its SQL on
        // every use: the savepoint pair is on the path of every message.
        match tx
            .prepare_cached("SAVEPOINT job")
            .and_then(|mut s| s.execute([]))
        {
            Ok(_) => {
                let (keep, finish) = job(Some(&tx));
                let end = if keep {
                    tx.prepare_cached("RELEASE job")
                        .and_then(|mut s| s.execute([]))
                } else {
                    tx.prepare_cached("ROLLBACK TO job")
                        .and_then(|mut s| s.execute([]))
                        .and_then(|_| tx.prepare_cached("RELEASE job"))
                        .and_then(|mut s| s.execute([]))
                };
                if let Err(e) = end {
                    log::error!("savepoint release failed: {e}");
                }
                finishers.push(finish);
            }
            Err(e) => {
                log::error!("savepoint failed: {e}");
                let (_, finish) = job(None);
                finishers.push(finish);
            }
        }
    }
    (tx.commit(), finishers)
}

/// SQLite online backup of `src` into `dest`, page by page, safe against a concurrent writer.
pub fn backup(src: &Path, dest: &Path) -> DbResult<()> {
    let from = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    from.busy_timeout(Duration::from_secs(5))?;
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    {
        let mut to = Connection::open(&tmp)?;
        let backup = rusqlite::backup::Backup::new(&from, &mut to)?;
        backup.run_to_completion(256, Duration::from_millis(5), None)?;
    }
    std::fs::rename(&tmp, dest)?;
    Ok(())
}

/// Hand the connection's page cache back to the allocator: after a one-off scan (the engine's
/// load at start) that would otherwise keep up to SQLite's 2 MB cache resident for good.
pub fn release_page_cache(conn: &Connection) -> DbResult<()> {
    conn.execute_batch("PRAGMA shrink_memory;")?;
    Ok(())
}

/// Unix ms by the system clock, for the repository functions' record-keeping stamps. Decisions
/// by time take it from the server's [`Clock`] ([`Db::now_ms`]) instead.
pub fn now_ms() -> i64 {
    crate::clock::system_now_ms()
}

/// The server's persistent identity (created on first use).
pub fn server_uuid(conn: &Connection) -> DbResult<String> {
    let existing: Option<String> = conn
        .query_row("SELECT uuid FROM server WHERE id = 1", [], |r| r.get(0))
        .ok();
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4().to_string();
    conn.execute(
        "INSERT OR IGNORE INTO server (id, uuid) VALUES (1, ?1)",
        [&id],
    )?;
    Ok(conn.query_row("SELECT uuid FROM server WHERE id = 1", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("test.sqlite3")).unwrap();
        (dir, db)
    }

    /// Migration 04 rebuilds `messages` with its CHECKs as comparisons: every row and id
    /// survives, the same values are refused, the index is back.
    #[test]
    fn migration_04_keeps_every_message_and_refuses_what_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.sqlite3");
        {
            let mut conn = open_rw(&path).unwrap();
            migrations().to_version(&mut conn, 3).unwrap();
            conn.execute_batch(
                "INSERT INTO users (id, uuid, number, created_at, updated_at)
                     VALUES (1, 'u1', '+15550000001', 0, 0);
                 INSERT INTO chats (id, starter_id, name, created_at) VALUES (7, 1, 'c', 0);
                 INSERT INTO messages (id, chat_id, user_id, kind, status, body, created_at)
                     VALUES (41, 7, 1, 'text', 'sent', 'hi', 1),
                            (42, 7, 1, 'image', 'delivered', 'k', 2);",
            )
            .unwrap();
        }
        assert_eq!(migrate(&path).unwrap(), latest_version() - 3);
        let conn = open_rw(&path).unwrap();
        let rows: Vec<(i64, String, String)> = conn
            .prepare("SELECT id, kind, body FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (41, "text".into(), "hi".into()),
                (42, "image".into(), "k".into())
            ]
        );
        let insert = |kind: &str, status: &str| {
            conn.execute(
                "INSERT INTO messages (chat_id, user_id, kind, status, body, created_at)
                 VALUES (7, 1, ?1, ?2, 'x', 3)",
                [kind, status],
            )
        };
        for kind in ["text", "image", "audio", "video"] {
            insert(kind, "sent").unwrap();
        }
        for status in ["draft", "sent", "delivered"] {
            insert("text", status).unwrap();
        }
        for (kind, status) in [
            ("Text", "sent"),
            ("file", "sent"),
            ("text", "read"),
            ("text", ""),
        ] {
            assert!(insert(kind, status).is_err(), "{kind}/{status} accepted");
        }
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'messages_by_chat'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1);
        let fk: Vec<String> = conn
            .prepare("PRAGMA foreign_key_check")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(fk.is_empty(), "{fk:?}");
    }

    #[test]
    fn a_full_write_queue_refuses_at_once() {
        let (_dir, db) = open();
        // Hold the writer inside one job, so nothing more leaves the queue.
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        db.submit(
            move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(())
            },
            |_: DbResult<()>| {},
        )
        .unwrap();
        started_rx.recv().unwrap();
        for _ in 0..WRITE_QUEUE {
            db.submit(|_| Ok(()), |_: DbResult<()>| {}).unwrap();
        }
        let asked = Instant::now();
        let refused = db.submit(|_| Ok(()), |_: DbResult<()>| {});
        assert!(matches!(refused, Err(DbError::QueueFull)), "{refused:?}");
        assert!(asked.elapsed() < Duration::from_secs(1), "submit waited");
        assert!(DbError::QueueFull.is_storage_fault());
        release_tx.send(()).unwrap();
        db.close();
        assert_eq!(
            db.stats().writes.load(Ordering::Relaxed),
            WRITE_QUEUE as u64 + 1
        );
    }

    #[test]
    fn reads_beyond_the_pool_wait_instead_of_opening_more() {
        let (_dir, db) = open();
        let inner = db.inner.clone();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let readers: Vec<_> = (0..MAX_READERS * 3)
            .map(|_| {
                let (inner, now, most) = (inner.clone(), now.clone(), most.clone());
                std::thread::spawn(move || {
                    inner.with_reader(|c| {
                        let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(at_once, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)
                    })
                })
            })
            .collect();
        for r in readers {
            assert_eq!(r.join().unwrap().unwrap(), 1);
        }
        assert!(most.load(Ordering::SeqCst) <= MAX_READERS);
        let pool = inner.readers.lock();
        assert_eq!(pool.idle.len(), READERS, "the extras are closed again");
        assert_eq!(pool.open, READERS);
        drop(pool);
        db.close();
    }
}
