//! Link-time choice for native glibc builds; no code is generated here.
//!
//! The server is a position-independent executable with ≈ 38,000 relative relocations. As a
//! classic `.rela.dyn` table they take 0.9 MB that the dynamic loader reads, and keeps resident,
//! at every start; packed (`-z pack-relative-relocs`, DT_RELR) they take a few KB. RSS after
//! start drops by that much (docs/performance.md "Memory at start"). The loader needs glibc
//! ≥ 2.36 (it then requires the `GLIBC_ABI_DT_RELR` version), so the flag is used only when
//! building natively on such a system: a binary built there needs that glibc anyway. Cross
//! builds and the static musl builds for the Pi are left as they are.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    if target == host && target.ends_with("-linux-gnu") && glibc_loads_dt_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// `getconf GNU_LIBC_VERSION` says e.g. "glibc 2.36".
fn glibc_loads_dt_relr() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
