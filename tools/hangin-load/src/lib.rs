//! `hangin-load`: drives a real `hangin` server over real TCP and websockets and measures it.
//!
//! It starts the server binary itself (fresh data directory, `HANGIN_MDNS__ENABLED=false`,
//! 127.0.0.1 only), so it can also read the server's memory from `/proc`, its start→`READY=1`
//! time from a `NOTIFY_SOCKET` it owns, and OTP codes from the log driver's lines on stderr.
//! Users, address books and tokens are minted with the hidden `hangin loadtest-users` command.
//! Scenarios: `idle`, `fanout`, `storm`, `login`, `ready`, `lockhog`, `reconnect`, `joinstorm`,
//! `broadcast`, and `all` (every target in one run). `--fsync-delay-ms` slows the server's
//! flushes (`slowfs`), `--pi` adds one pinned core and 10 ms flushes with the Pi targets.

pub mod broadcast;
pub mod cable;
pub mod joinstorm;
pub mod lockhog;
pub mod reconnect;
pub mod report;
pub mod scenarios;
pub mod server;
pub mod slowfs;
pub mod stats;

use std::sync::OnceLock;
use std::time::Instant;

/// One monotonic clock for the whole process: senders stamp messages with it, receivers in the
/// same process subtract, so latencies need no clock sync.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Raise this process's open-file limit (inherited by the server we start): 10,000 connections
/// need 10,000 descriptors on each side, `broadcast` beyond 20,000. Tries 262,144 first (allowed
/// with CAP_SYS_RESOURCE, e.g. as root), else the hard limit.
pub fn raise_nofile() -> u64 {
    const WANT: libc::rlim_t = 262_144;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            if lim.rlim_max < WANT {
                let more = libc::rlimit {
                    rlim_cur: WANT,
                    rlim_max: WANT,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &more);
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
            if lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Progress lines go to stderr so `--json` output on stdout stays clean.
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {{
        eprintln!("[{:>7.2}s] {}", $crate::now_ns() as f64 / 1e9, format!($($arg)*));
    }};
}
