//! What one TCP connection may take from the server (docs/hardening.md "Connections"): admission
//! against a total and a per-address cap, and the timeouts that close connections which do not
//! move — a request head that does not arrive, an idle keep-alive, a response the client does not
//! read, a request body that stops, a websocket handshake that does not finish.
//!
//! hyper's own `header_read_timeout` is one timer for "idle" and "reading a head" alike, and the
//! auto (HTTP/1 + HTTP/2) builder's protocol sniffing has none at all, so the phases are tracked
//! here: the I/O wrapper sees bytes, the service wrapper sees requests begin and responses end.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::LimitsConfig;
use crate::net::Cidr;

/// Refused connections kept open at once while their 503 is read.
const LINGER_MAX: usize = 32;
/// Descriptors kept free beyond `max_connections`: the database (writer and readers, each with
/// its -wal and -shm), pictures being served or stored, logs, listeners, the runtime's own, and
/// the lingering refusals. Without them a full server would hit EMFILE and stop accepting — and
/// so stop refusing — altogether.
pub const FD_RESERVE: u64 = 128 + LINGER_MAX as u64;

/// Raise the soft open-file limit to the hard limit; (before, after).
// `rlim_t` is 32 bits wide on some 32-bit ARM targets: the casts are not idle there.
pub fn raise_nofile() -> (u64, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    // `None` is RLIM_INFINITY.
    let figure = |v: Option<u64>| v.unwrap_or(u64::MAX);
    let mut lim = getrlimit(Resource::Nofile);
    let before = figure(lim.current);
    if figure(lim.current) < figure(lim.maximum) {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    (before, figure(getrlimit(Resource::Nofile).current))
}

/// The caps and timeouts in force, resolved once at start.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_connections: usize,
    pub max_per_address: usize,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub upgrade_timeout: Duration,
}

impl Policy {
    /// `0` means "as many as the open-file limit allows" for the total and "no cap" per address.
    pub fn resolve(limits: &LimitsConfig, nofile: u64) -> Policy {
        let by_fds = nofile.saturating_sub(FD_RESERVE).max(1) as usize;
        let max_connections = match limits.max_connections {
            0 => by_fds,
            n if n > by_fds => {
                log::warn!(
                    "[limits] max_connections = {n} exceeds what the open-file limit {nofile} allows; using {by_fds}"
                );
                by_fds
            }
            n => n,
        };
        Policy {
            max_connections,
            max_per_address: limits.max_connections_per_address,
            header_timeout: limits.header_timeout,
            keepalive_timeout: limits.keepalive_timeout,
            upgrade_timeout: limits.upgrade_timeout,
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    PerAddress,
}

/// Counts of open connections (plain, TLS, and websockets they became).
pub struct Admission {
    policy: Policy,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Addresses that carry many clients (reverse proxies) are not capped per address.
    exempt: Arc<Vec<Cidr>>,
    /// Refused sockets kept open briefly so their 503 is read, not reset.
    lingering: Arc<tokio::sync::Semaphore>,
}

impl Admission {
    pub fn new(policy: Policy, exempt: Arc<Vec<Cidr>>) -> Arc<Admission> {
        Arc::new(Admission {
            policy,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            exempt,
            lingering: Arc::new(tokio::sync::Semaphore::new(LINGER_MAX)),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn open_connections(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Count a new connection from `ip`, or say why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refusal> {
        let ip = canonical(ip);
        let previous = self.total.fetch_add(1, Ordering::AcqRel);
        if previous >= self.policy.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full);
        }
        let capped = self.policy.max_per_address > 0 && !self.exempt.iter().any(|c| c.contains(ip));
        if capped {
            let mut map = self.per_address.lock();
            let n = map.entry(ip).or_insert(0);
            if *n >= self.policy.max_per_address {
                drop(map);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerAddress);
            }
            *n += 1;
        }
        Ok(ConnGuard {
            admission: self.clone(),
            ip: capped.then_some(ip),
        })
    }

    /// Answer a refused plain-HTTP connection with a 503 in the JSON error shape and close it;
    /// past `LINGER_MAX` refusals in flight, close without a word (an attacker gets no extra
    /// sockets).
    pub fn refuse_plain(&self, stream: tokio::net::TcpStream, why: Refusal) {
        let Ok(permit) = self.lingering.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = stream;
            let body = refusal_body(why);
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\n\
                 retry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let linger = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                stream.shutdown().await?;
                // Read what the client sends until it closes, so our close is not a reset that
                // could discard the 503 before the client reads it.
                let mut sink = [0u8; 4096];
                while stream.read(&mut sink).await? > 0 {}
                io::Result::Ok(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), linger).await;
            drop(permit);
        });
    }
}

pub fn refusal_body(why: Refusal) -> String {
    let description = match why {
        Refusal::Full => "The server has too many open connections. Try again shortly.",
        Refusal::PerAddress => {
            "Too many open connections from your address. Close some and try again."
        }
    };
    serde_json::json!({"error": "too_many_connections", "error_description": description})
        .to_string()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// One admitted connection; dropping it (when the socket closes, websocket or not) frees its slot.
pub struct ConnGuard {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut map = self.admission.per_address.lock();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
    }
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// The phase of one connection, shared by its I/O wrapper, service wrapper and watchdog.
#[derive(Default)]
pub struct ConnState {
    phase: AtomicU8,
    since: AtomicU64,
    in_flight: AtomicUsize,
    /// Set when the peer speaks HTTP/2: its control frames (PING, WINDOW_UPDATE) while idle are
    /// not the start of a request head.
    h2: std::sync::atomic::AtomicBool,
    /// Since when a write has been waiting for the client to read (0 = not blocked).
    write_blocked: AtomicU64,
    /// The websocket handshake must be handed over by then (0 = no handshake under way).
    upgrade_deadline: AtomicU64,
    /// Tells the supervisor that a deadline earlier than the one it sleeps towards appeared.
    wake: tokio::sync::Notify,
}

impl ConnState {
    /// A new connection: the client is expected to send a request head right away.
    pub fn new() -> Arc<ConnState> {
        let s = ConnState::default();
        s.phase.store(HEAD, Ordering::Relaxed);
        s.since.store(now_ms(), Ordering::Relaxed);
        Arc::new(s)
    }

    fn on_read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE && !self.h2.load(Ordering::Relaxed) {
            self.since.store(now_ms(), Ordering::Relaxed);
            self.phase.store(HEAD, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// A request head has been parsed and handed to the router.
    pub fn begin(self: &Arc<Self>, upgrade: bool, h2: bool, policy: &Policy) -> Busy {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        if upgrade && !h2 {
            // The handshake's clock started with its request head.
            let started = if self.phase.load(Ordering::Acquire) == HEAD {
                self.since.load(Ordering::Relaxed)
            } else {
                now_ms()
            };
            self.upgrade_deadline.store(
                started + policy.upgrade_timeout.as_millis() as u64,
                Ordering::Relaxed,
            );
            self.wake.notify_one();
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.phase.store(BUSY, Ordering::Release);
        Busy(self.clone())
    }

    /// Which timeout, if any, has run out; else when to look again.
    fn check(&self, policy: &Policy) -> Result<u64, &'static str> {
        let now = now_ms();
        let mut next = u64::MAX;
        let mut deadline = |at: u64, what: &'static str| {
            if now >= at {
                Err(what)
            } else {
                next = next.min(at);
                Ok(())
            }
        };
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != 0 {
            deadline(
                blocked + policy.keepalive_timeout.as_millis() as u64,
                "the client did not read its response",
            )?;
        }
        let upgrade = self.upgrade_deadline.load(Ordering::Relaxed);
        if upgrade != 0 {
            deadline(upgrade, "the websocket handshake did not finish")?;
        }
        let since = self.since.load(Ordering::Relaxed);
        match self.phase.load(Ordering::Acquire) {
            HEAD => deadline(
                since + policy.header_timeout.as_millis() as u64,
                "no complete request head",
            )?,
            IDLE => deadline(
                since + policy.keepalive_timeout.as_millis() as u64,
                "idle keep-alive",
            )?,
            _ => {}
        }
        Ok(next)
    }

    /// Drive `conn` until it ends or a timeout of `policy` runs out (then it is dropped, which
    /// closes the socket).
    pub async fn supervise<F: Future>(
        self: Arc<Self>,
        policy: &Policy,
        conn: F,
    ) -> Option<F::Output> {
        tokio::pin!(conn);
        loop {
            let next = match self.check(policy) {
                Ok(next) => next,
                Err(why) => {
                    log::debug!("closing a connection: {why}");
                    return None;
                }
            };
            let wait = Duration::from_millis(next.saturating_sub(now_ms()).max(1));
            tokio::select! {
                out = &mut conn => return Some(out),
                _ = tokio::time::sleep(wait), if next != u64::MAX => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// A request in flight; dropped with its response body, i.e. once the response is written.
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.since.store(now_ms(), Ordering::Relaxed);
            self.0.phase.store(IDLE, Ordering::Release);
        }
    }
}

/// The socket (or TLS stream) of an admitted connection, telling its [`ConnState`] about bytes.
pub struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
    _guard: ConnGuard,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, state: Arc<ConnState>, guard: ConnGuard) -> Self {
        Tracked {
            inner,
            state,
            _guard: guard,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.state.on_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Tracked<S> {
    fn note_write<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &poll {
            Poll::Pending => {
                let started = self.state.write_blocked.compare_exchange(
                    0,
                    now_ms(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                if started.is_ok() {
                    // A request in flight has no other deadline the supervisor sleeps towards.
                    self.state.wake.notify_one();
                }
            }
            Poll::Ready(_) => self.state.write_blocked.store(0, Ordering::Relaxed),
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.note_write(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until it has been sent.
pub struct Finishing {
    inner: Body,
    _busy: Busy,
}

impl Finishing {
    pub fn wrap(inner: Body, busy: Busy) -> Body {
        Body::new(Finishing { inner, _busy: busy })
    }
}

impl HttpBody for Finishing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body a handler reads: a gap of more than `gap` between two pieces of it is an
/// error (a slow-drip upload cannot hold a handler and its connection forever).
pub struct Paced<B> {
    inner: B,
    gap: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving")]
pub struct BodyStalled;

impl<B> Paced<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    pub fn wrap(inner: B, gap: Duration) -> Body {
        if inner.is_end_stream() {
            return Body::new(inner.map_err(Into::into));
        }
        Body::new(Paced {
            inner,
            gap,
            timer: None,
        })
    }
}

impl<B> HttpBody for Paced<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let gap = this.gap;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(total: usize, per: usize) -> Policy {
        Policy {
            max_connections: total,
            max_per_address: per,
            header_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            upgrade_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn phases_pick_their_own_timeouts() {
        let mut p = policy(1, 1);
        p.header_timeout = Duration::from_millis(50);
        p.keepalive_timeout = Duration::from_secs(30);
        p.upgrade_timeout = Duration::from_millis(50);
        // A new connection must send a head: the short timeout.
        let s = ConnState::new();
        assert!(s.check(&p).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(&p), Err("no complete request head"));
        // A request in flight is not timed; once answered, idle gets the long timeout.
        let s = ConnState::new();
        let busy = s.begin(false, false, &p);
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.check(&p).is_ok());
        drop(busy);
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.check(&p).is_ok(), "idle is not the header timeout");
        // A websocket handshake is timed even while its request is in flight.
        let s = ConnState::new();
        let _busy = s.begin(true, false, &p);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(&p), Err("the websocket handshake did not finish"));
    }

    #[test]
    fn caps_count_and_release() {
        let exempt = Arc::new(vec![Cidr::parse("10.0.0.1").unwrap()]);
        let a = Admission::new(policy(3, 1), exempt);
        let one: IpAddr = "192.168.1.2".parse().unwrap();
        let g1 = a.admit(one).unwrap();
        assert_eq!(
            a.admit("::ffff:192.168.1.2".parse().unwrap()).err(),
            Some(Refusal::PerAddress)
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let p1 = a.admit(proxy).unwrap();
        let _p2 = a.admit(proxy).unwrap();
        assert_eq!(a.admit(proxy).err(), Some(Refusal::Full));
        drop(g1);
        drop(p1);
        assert_eq!(a.open_connections(), 1);
        let _g = a.admit(one).unwrap();
    }
}
