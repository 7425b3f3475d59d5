//! The server under test: a `hangin` process we start (preferred) or one already running.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

/// What we learn from the server's stderr.
#[derive(Default)]
struct LogState {
    listening: Option<String>,
    otp: HashMap<String, String>,
    warnings: usize,
    slow_disconnects: usize,
    /// The slow-disk shim announced its first delayed flush.
    slowfs_active: bool,
    /// The shim's count at exit.
    slowfs_flushes: Option<u64>,
    tail: VecDeque<String>,
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub bin: PathBuf,
    /// `None`: a fresh temporary directory, removed afterwards.
    pub data_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Pin the server to these CPUs (sched_setaffinity), e.g. `[0]`.
    pub cpus: Vec<usize>,
}

pub struct Server {
    child: Option<Child>,
    pub pid: Option<u32>,
    /// `http://127.0.0.1:PORT`
    pub http: String,
    /// `ws://127.0.0.1:PORT/cable`
    pub ws: String,
    pub data_dir: Option<PathBuf>,
    pub bin: PathBuf,
    /// spawn → `READY=1` on our notify socket.
    pub ready_after: Option<Duration>,
    /// spawn → the "listening on" log line.
    pub listening_after: Option<Duration>,
    log: Arc<Mutex<LogState>>,
    /// Reads the server's stderr until EOF (joined on stop, so the exit lines are in).
    log_thread: Option<std::thread::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// `hangin loadtest-users` output.
#[derive(Debug, Clone, Deserialize)]
pub struct Minted {
    pub client_id: String,
    pub client_secret: String,
    pub users: Vec<MintedUser>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MintedUser {
    pub uuid: String,
    pub number: String,
    pub group: usize,
    pub token: String,
}

/// A fresh data directory (kept in a tempdir unless `dir` is given).
pub fn data_dir(dir: Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            Ok((d, None))
        }
        None => {
            let tmp = tempfile::Builder::new().prefix("hangin-load-").tempdir()?;
            Ok((tmp.path().join("data"), Some(tmp)))
        }
    }
}

/// Mint users into `data_dir` with `hangin loadtest-users` (the server may be running).
pub fn mint(
    bin: &Path,
    data_dir: &Path,
    count: usize,
    group: usize,
    star: bool,
    first_number: u64,
) -> anyhow::Result<Minted> {
    let mut cmd = Command::new(bin);
    cmd.args(["loadtest-users", "--out", "-", "--data-dir"])
        .arg(data_dir)
        .args(["--count", &count.to_string(), "--group", &group.to_string()])
        .args(["--first-number", &first_number.to_string()])
        .env("HANGIN_MDNS__ENABLED", "false")
        .env("HANGIN_LOG_LEVEL", "warn")
        .env_remove("HANGIN_CONFIG")
        .env_remove("JOURNAL_STREAM");
    if star {
        cmd.arg("--star");
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "hangin loadtest-users failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing loadtest-users output")
}

/// `hangin client create NAME --json` → (client_id, client_secret).
pub fn create_client(bin: &Path, data_dir: &Path) -> anyhow::Result<(String, String)> {
    let out = Command::new(bin)
        .args(["client", "create", "loadtest", "--json", "--data-dir"])
        .arg(data_dir)
        .env("HANGIN_MDNS__ENABLED", "false")
        .env_remove("HANGIN_CONFIG")
        .env_remove("JOURNAL_STREAM")
        .output()?;
    if !out.status.success() {
        bail!(
            "hangin client create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["client_id"].as_str().unwrap_or_default().to_string(),
        v["client_secret"].as_str().unwrap_or_default().to_string(),
    ))
}

impl Server {
    /// Start `hangin serve` on 127.0.0.1 (ephemeral port), wait for `READY=1`.
    pub fn start(launch: &Launch) -> anyhow::Result<Server> {
        let (data_dir, tmp) = data_dir(launch.data_dir.clone())?;
        Self::start_in(launch, data_dir, tmp)
    }

    pub fn start_in(
        launch: &Launch,
        data_dir: PathBuf,
        tmp: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Server> {
        let sock_dir = tempfile::Builder::new()
            .prefix("hangin-notify-")
            .tempdir()?;
        let sock_path = sock_dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&sock_path)?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;

        let mut cmd = Command::new(&launch.bin);
        cmd.arg("serve")
            .env_remove("JOURNAL_STREAM")
            .env_remove("HANGIN_CONFIG")
            .env("HANGIN_LISTEN", "127.0.0.1:0")
            .env("HANGIN_DATA_DIR", &data_dir)
            .env("HANGIN_MDNS__ENABLED", "false")
            .env("HANGIN_LOG_LEVEL", "info")
            // Thousands of clients from one loopback address are the point here.
            .env("HANGIN_LIMITS__MAX_CONNECTIONS", "0")
            .env("HANGIN_LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "0")
            .env("NOTIFY_SOCKET", &sock_path)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !launch.cpus.is_empty() {
            let cpus = launch.cpus.clone();
            // SAFETY: only async-signal-safe libc calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    for c in &cpus {
                        libc::CPU_SET(*c, &mut set);
                    }
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                    Ok(())
                });
            }
        }
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", launch.bin.display()))?;
        let log = Arc::new(Mutex::new(LogState::default()));
        let listening_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let log_thread = {
            let stderr = child.stderr.take().expect("stderr is piped");
            let log = log.clone();
            let listening_at = listening_at.clone();
            Some(std::thread::spawn(move || {
                read_log(stderr, log, listening_at)
            }))
        };
        let mut ready_after = None;
        let mut buf = [0u8; 512];
        let deadline = spawned + Duration::from_secs(60);
        while ready_after.is_none() {
            if let Some(status) = child.try_wait()? {
                let tail: Vec<String> = log.lock().unwrap().tail.iter().cloned().collect();
                bail!("hangin exited with {status}:\n{}", tail.join("\n"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("hangin did not report READY=1 within 60 s");
            }
            if let Ok(n) = notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    ready_after = Some(spawned.elapsed());
                }
            }
        }
        // The log line can trail READY by a moment (separate pipe).
        let addr = loop {
            if let Some(a) = log.lock().unwrap().listening.clone() {
                break a;
            }
            if Instant::now() > deadline {
                bail!("no \"listening on\" line from hangin");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let listening_after = listening_at.lock().unwrap().map(|t| t - spawned);
        let pid = child.id();
        Ok(Server {
            child: Some(child),
            pid: Some(pid),
            http: format!("http://{addr}"),
            ws: format!("ws://{addr}/cable"),
            data_dir: Some(data_dir),
            bin: launch.bin.clone(),
            ready_after,
            listening_after,
            log,
            log_thread,
            _tmp: tmp,
        })
    }

    /// A server someone else runs; no /proc figures unless `pid` is given.
    pub fn attach(
        url: &str,
        bin: PathBuf,
        data_dir: Option<PathBuf>,
        pid: Option<u32>,
        otp_log: Option<PathBuf>,
    ) -> Server {
        let http = url.trim_end_matches('/').to_string();
        let ws = format!(
            "{}/cable",
            http.replacen("http://", "ws://", 1)
                .replacen("https://", "wss://", 1)
        );
        let log = Arc::new(Mutex::new(LogState::default()));
        if let Some(path) = otp_log {
            let log = log.clone();
            std::thread::spawn(move || follow_file(&path, log));
        }
        Server {
            child: None,
            pid,
            http,
            ws,
            data_dir,
            bin,
            ready_after: None,
            listening_after: None,
            log,
            log_thread: None,
            _tmp: None,
        }
    }

    pub fn data_dir(&self) -> anyhow::Result<&Path> {
        self.data_dir
            .as_deref()
            .context("this scenario needs the server's --data-dir")
    }

    /// Resident memory (VmRSS) in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status(self.pid?, "VmRSS:")
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn hwm_kib(&self) -> Option<u64> {
        proc_status(self.pid?, "VmHWM:")
    }

    /// The CPUs the server may run on (`Cpus_allowed_list`, e.g. `0` when pinned).
    pub fn cpus_allowed(&self) -> Option<String> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let line = text.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
        Some(line.split_whitespace().nth(1)?.to_string())
    }

    pub fn threads(&self) -> Option<u64> {
        proc_status(self.pid?, "Threads:")
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(self.pid?)
    }

    /// The code the log driver printed for `number` (waits up to `timeout`).
    pub fn otp(&self, number: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.log.lock().unwrap().otp.remove(number) {
                return Some(c);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Log lines at WARN or above so far, and how many were "too slow" disconnects.
    pub fn warnings(&self) -> (usize, usize) {
        let l = self.log.lock().unwrap();
        (l.warnings, l.slow_disconnects)
    }

    /// Slow-disk shim: (a flush was delayed, the shim's count of delayed flushes at exit).
    pub fn slowfs(&self) -> (bool, Option<u64>) {
        let l = self.log.lock().unwrap();
        (l.slowfs_active, l.slowfs_flushes)
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> &str {
        self.http.trim_start_matches("http://")
    }

    pub fn log_tail(&self) -> Vec<String> {
        self.log.lock().unwrap().tail.iter().cloned().collect()
    }

    /// SIGTERM and wait (SIGKILL after 15 s).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                if let Some(t) = self.log_thread.take() {
                    let _ = t.join();
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill()?;
        child.wait()?;
        bail!("hangin did not stop within 15 s of SIGTERM")
    }

    /// Keep the data directory after the server stops (for a restart on an existing database).
    pub fn take_tempdir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_log(
    stderr: std::process::ChildStderr,
    log: Arc<Mutex<LogState>>,
    listening_at: Arc<Mutex<Option<Instant>>>,
) {
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            *listening_at.lock().unwrap() = Some(Instant::now());
            let addr = rest.split_whitespace().next().unwrap_or("").to_string();
            log.lock().unwrap().listening = Some(addr);
        }
        note_line(&log, line);
    }
}

fn note_line(log: &Mutex<LogState>, line: String) {
    let mut l = log.lock().unwrap();
    if let Some(rest) = line.split("OTP for ").nth(1) {
        if let Some((number, code)) = rest.split_once(": ") {
            l.otp.insert(number.to_string(), code.trim().to_string());
        }
    }
    if line.starts_with("hangin-load slowfs: first flush") {
        l.slowfs_active = true;
    }
    if let Some(n) = line
        .strip_prefix("hangin-load slowfs: ")
        .and_then(|r| r.strip_suffix(" flushes delayed"))
    {
        l.slowfs_flushes = n.parse().ok();
    }
    if line.contains(" WARN ") || line.contains(" ERROR ") {
        l.warnings += 1;
        if line.contains("too slow") {
            l.slow_disconnects += 1;
        }
    }
    if std::env::var_os("HANGIN_LOAD_SERVER_LOG").is_some() {
        eprintln!("[server] {line}");
    }
    l.tail.push_back(line);
    if l.tail.len() > 40 {
        l.tail.pop_front();
    }
}

/// `tail -f` for a log file an external server writes (OTP codes for `login`).
fn follow_file(path: &Path, log: Arc<Mutex<LogState>>) {
    let Ok(file) = std::fs::File::open(path) else {
        eprintln!("cannot open {}", path.display());
        return;
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => note_line(&log, line.trim_end().to_string()),
            Err(_) => return,
        }
    }
}

fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz)
}

/// This process's own CPU seconds (the load generator's share of the machine).
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds_of(std::process::id()).unwrap_or(0.0)
}

/// `/proc/loadavg`'s first three numbers.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Pages of TCP buffer memory the kernel holds (`/proc/net/sockstat` "TCP: … mem N"), in KiB.
pub fn tcp_mem_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "mem" {
            let pages: u64 = it.next()?.parse().ok()?;
            return Some(pages * 4);
        }
    }
    None
}
