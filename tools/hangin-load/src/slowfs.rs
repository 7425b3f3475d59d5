//! Slow-disk mode (`--fsync-delay-ms N`): an `LD_PRELOAD` shim, built here with the system `cc`
//! from `slowfs.c`, that delays the server's real `fsync`/`fdatasync`/`sync_file_range`/`syncfs`
//! calls by N ms. SQLite (bundled, unix VFS) flushes with `fsync`: `strace -f -c -e
//! trace=fsync,fdatasync,sync_file_range,syncfs` on the server counts only `fsync` calls. A Pi's
//! SD card takes 5-20 ms per flush; this VM's disk well under 1 ms.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context};

const SOURCE: &str = include_str!("slowfs.c");

/// The env var the shim reads its delay from.
pub const DELAY_ENV: &str = "HANGIN_LOAD_FSYNC_DELAY_MS";

/// The shim's path, built once per source version and cached in the temp directory.
pub fn shim() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build() -> anyhow::Result<PathBuf> {
    // FNV-1a of the source: a changed shim gets a new file, an unchanged one is reused.
    let hash = SOURCE.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir();
    let out = dir.join(format!("hangin-load-slowfs-{uid}-{hash:016x}.so"));
    if out.exists() {
        return Ok(out);
    }
    let work = tempfile::Builder::new()
        .prefix("hangin-load-slowfs-")
        .tempdir_in(&dir)?;
    let src = work.path().join("slowfs.c");
    std::fs::write(&src, SOURCE)?;
    let tmp_out = work.path().join("slowfs.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&tmp_out)
        .arg(&src)
        .arg("-ldl")
        .status()
        .with_context(|| {
            format!("running `{cc}` to build the slow-disk shim (install a C compiler)")
        })?;
    if !status.success() {
        bail!("`{cc}` failed to build the slow-disk shim ({status})");
    }
    // Rename into place: concurrent builders each produce a whole file.
    std::fs::rename(&tmp_out, &out)?;
    Ok(out)
}

/// The server's environment for a delay of `ms` (nothing for 0).
pub fn env(ms: f64) -> anyhow::Result<Vec<(String, String)>> {
    if ms <= 0.0 {
        return Ok(Vec::new());
    }
    let shim = shim()?;
    Ok(vec![
        ("LD_PRELOAD".into(), shim.display().to_string()),
        (DELAY_ENV.into(), ms.to_string()),
    ])
}
