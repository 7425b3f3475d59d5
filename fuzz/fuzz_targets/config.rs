//! Configuration loading: a TOML file merged with `HANGIN_*` environment variables. Any input
//! loads or gives a `ConfigError`; a loaded configuration validates and renders.
//!
//! Input: the TOML text, then after the first NUL byte `KEY=VALUE` lines that become
//! `HANGIN_KEY=VALUE` variables.
#![no_main]

use std::path::PathBuf;

use hangin::config::{Config, Sources};
use libfuzzer_sys::fuzz_target;

fn file() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hangin.toml");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let (toml, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(env) = std::str::from_utf8(env) else {
        return;
    };
    let path = file();
    std::fs::write(path, toml).expect("write the config file");
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("HANGIN_{k}"), v.to_string()))
        .collect();
    let sources = Sources {
        file: Some(path.clone()),
        file_required: true,
        ..Default::default()
    };
    if let Ok((config, _warnings)) = Config::load_with_env(&sources, env) {
        config.validate().expect("a loaded configuration is valid");
        let shown = config.masked_toml();
        assert!(!shown.starts_with("# cannot render"), "{shown}");
    }
});
