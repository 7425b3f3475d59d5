//! Prometheus metrics (`[metrics] listen`, docs/administration.md "Metrics").
//!
//! One process-wide registry. Other modules report events with one call each (`metrics::…()`);
//! every such call is an atomic add, or a short map look-up where a label is needed (HTTP
//! route, driver result), never a lock on the cable fan-out path. Figures that exist anyway
//! (connections, online users, live chats, fan-out deliveries, RSS) are read when scraped.
//!
//! No label ever carries a phone number, uuid, name or raw path: routes are the router's
//! templates, everything else is a fixed word.

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, OtpDriverKind, PushDriverKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverResult {
    driver: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Dropped {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

/// How a delivery driver has been doing since the start (for `hangin status`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DriverHealth {
    pub driver: String,
    pub ok: u64,
    pub failed: u64,
    /// Unix ms of the last success / failure.
    pub last_ok_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    pub last_error: Option<String>,
}

impl DriverHealth {
    /// "ok" until the newest outcome is a failure.
    pub fn state(&self) -> &'static str {
        match (self.last_ok_at, self.last_failure_at) {
            (_, None) => "ok",
            (Some(ok), Some(bad)) if ok > bad => "ok",
            _ => "failing",
        }
    }

    fn record(&mut self, error: Option<String>) {
        let now = crate::clock::system_now_ms();
        match error {
            None => {
                self.ok += 1;
                self.last_ok_at = Some(now);
            }
            Some(e) => {
                self.failed += 1;
                self.last_failure_at = Some(now);
                self.last_error = Some(e);
            }
        }
    }
}

struct Metrics {
    registry: Registry,
    connections: Gauge,
    online_users: Gauge,
    live_chats: Gauge,
    rss_bytes: Gauge,
    messages_stored: Counter,
    fanout_deliveries: Counter,
    fanout_dropped_full: Counter,
    fanout_dropped_closed: Counter,
    slow_disconnects: Counter,
    otp: Family<DriverResult, Counter>,
    push: Family<PushResult, Counter>,
    http: Family<HttpLabels, Counter>,
    db_commit_seconds: Histogram,
    db_group_size: Histogram,
    otp_health: Mutex<DriverHealth>,
    push_health: Mutex<DriverHealth>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut root = Registry::default();
        let dropped = Family::<Dropped, Counter>::default();
        let m = Metrics {
            connections: Gauge::default(),
            online_users: Gauge::default(),
            live_chats: Gauge::default(),
            rss_bytes: Gauge::default(),
            messages_stored: Counter::default(),
            fanout_deliveries: Counter::default(),
            // Handles sharing the family's counters: a drop is one atomic add, no look-up.
            fanout_dropped_full: dropped.get_or_create_owned(&Dropped {
                reason: "queue_full",
            }),
            fanout_dropped_closed: dropped.get_or_create_owned(&Dropped { reason: "closed" }),
            slow_disconnects: Counter::default(),
            otp: Family::default(),
            push: Family::default(),
            http: Family::default(),
            // 0.25 ms … 4 s: an fsync on an SD card takes a few ms; a stalled one is the story.
            db_commit_seconds: Histogram::new(exponential_buckets(0.00025, 2.0, 15)),
            // 1 … 4096 (the writer's largest batch).
            db_group_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            otp_health: Mutex::default(),
            push_health: Mutex::default(),
            registry: Registry::default(),
        };
        m.register_all(&mut root, dropped);
        Metrics {
            registry: root,
            ..m
        }
    }

    /// Every metric under its exposition name and help text.
    fn register_all(&self, root: &mut Registry, dropped: Family<Dropped, Counter>) {
        root.register(
            "process_resident_memory_bytes",
            "Resident set size of the server process",
            self.rss_bytes.clone(),
        );
        let r = root.sub_registry_with_prefix("hangin");
        r.register(
            "connections",
            "Open cable (websocket) connections",
            self.connections.clone(),
        );
        r.register(
            "online_users",
            "Users online (a ChatsChannel subscription or an open background window)",
            self.online_users.clone(),
        );
        r.register(
            "live_chats",
            "Chats that have not ended",
            self.live_chats.clone(),
        );
        r.register(
            "messages_stored",
            "Messages committed to the database",
            self.messages_stored.clone(),
        );
        r.register(
            "fanout_deliveries",
            "Frames handed to subscribers' send queues by the fan-out",
            self.fanout_deliveries.clone(),
        );
        r.register(
            "fanout_dropped",
            "Frames not queued: the connection's queue was full (slow client) or already closed",
            dropped,
        );
        r.register(
            "slow_client_disconnects",
            "Connections cut off because their send queue was full",
            self.slow_disconnects.clone(),
        );
        r.register(
            "otp_sends",
            "OTP codes handed to the delivery driver, by driver and result",
            self.otp.clone(),
        );
        r.register(
            "push_sends",
            "Push notifications by result (delivered, invalid_token, failed, dropped)",
            self.push.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            self.http.clone(),
        );
        r.register(
            "db_commit_seconds",
            "Time of one group commit (one transaction, one fsync)",
            self.db_commit_seconds.clone(),
        );
        r.register(
            "db_commit_group_size",
            "Writes folded into one group commit",
            self.db_group_size.clone(),
        );
    }
}

// ---- hooks: one call from the module where the event happens ----

/// A chat message was committed.
pub fn message_stored() {
    METRICS.messages_stored.inc();
}

/// The fan-out could not queue a frame: `full` (slow client) or the connection already closed.
pub fn fanout_dropped(full: bool) {
    if full {
        METRICS.fanout_dropped_full.inc();
    } else {
        METRICS.fanout_dropped_closed.inc();
    }
}

/// A connection was cut off for not keeping up.
pub fn slow_client_disconnected() {
    METRICS.slow_disconnects.inc();
}

/// An OTP driver finished a send.
pub fn otp_sent<E: std::fmt::Display>(driver: &'static str, result: &Result<(), E>) {
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    METRICS
        .otp
        .get_or_create(&DriverResult {
            driver,
            result: outcome,
        })
        .inc();
    let mut health = METRICS.otp_health.lock();
    health.driver = driver.to_string();
    health.record(result.as_ref().err().map(|e| e.to_string()));
}

/// Outcome of one push notification: `delivered`, `invalid_token`, `failed` or `dropped`.
pub fn push_sent(result: &'static str, error: Option<&dyn std::fmt::Display>) {
    METRICS.push.get_or_create(&PushResult { result }).inc();
    if result != "dropped" {
        METRICS
            .push_health
            .lock()
            .record(error.map(|e| e.to_string()));
    }
}

/// One group commit of the database writer.
pub fn db_commit(elapsed: Duration, group: usize) {
    METRICS.db_commit_seconds.observe(elapsed.as_secs_f64());
    METRICS.db_group_size.observe(group as f64);
}

/// Router middleware: count the request by route template (never the raw path) and status.
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let res = next.run(req).await;
    METRICS
        .http
        .get_or_create(&HttpLabels {
            route,
            method,
            status: res.status().as_u16(),
        })
        .inc();
    res
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

// ---- reading ----

/// Health of the OTP and push drivers since the start.
pub fn driver_health() -> (DriverHealth, DriverHealth) {
    (
        METRICS.otp_health.lock().clone(),
        METRICS.push_health.lock().clone(),
    )
}

/// Name the drivers before anything was sent, so `status` shows them from the start, and
/// start their series at zero (a rate needs a first sample).
pub fn set_driver_names(config: &Config) {
    let driver = otp_driver(config);
    for result in ["ok", "failed"] {
        METRICS
            .otp
            .get_or_create_owned(&DriverResult { driver, result });
    }
    for result in ["delivered", "invalid_token", "failed", "dropped"] {
        METRICS.push.get_or_create_owned(&PushResult { result });
    }
    METRICS.otp_health.lock().driver = driver.to_string();
    METRICS.push_health.lock().driver = match config.push.driver {
        PushDriverKind::Log => "log",
        PushDriverKind::Apns => "apns",
        PushDriverKind::Webhook => "webhook",
    }
    .to_string();
}

/// The configured OTP driver as a label value.
pub fn otp_driver(config: &Config) -> &'static str {
    match config.otp.driver {
        OtpDriverKind::Log => "log",
        OtpDriverKind::Modem => "modem",
        OtpDriverKind::Webhook => "webhook",
        OtpDriverKind::Exec => "exec",
    }
}

/// Resident set size of this process in bytes (Linux `/proc/self/statm`).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// What exists anyway and is read at scrape time, from the hub and the engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub connections: usize,
    pub online_users: usize,
    pub live_chats: usize,
    /// The hub's monotonic count of fan-out deliveries.
    pub deliveries: u64,
}

/// The Prometheus text exposition, with the scrape-time figures.
pub fn render(figures: Figures) -> String {
    let m = &*METRICS;
    m.connections.set(figures.connections as i64);
    m.online_users.set(figures.online_users as i64);
    m.live_chats.set(figures.live_chats as i64);
    m.rss_bytes.set(rss_bytes().unwrap_or(0) as i64);
    // The hub counts its deliveries itself; follow its monotonic total.
    let seen = m.fanout_deliveries.get();
    if figures.deliveries > seen {
        m.fanout_deliveries.inc_by(figures.deliveries - seen);
    }
    let mut out = String::with_capacity(8 * 1024);
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry) {
        log::warn!("encoding metrics failed: {e}");
    }
    out
}

/// Serve `GET /metrics` on its own listener until `shutdown`; `figures` reads the live ones at
/// each scrape (a callback, so this module needs nothing above the config).
pub async fn serve<F>(listener: tokio::net::TcpListener, shutdown: CancellationToken, figures: F)
where
    F: Fn() -> Figures + Clone + Send + Sync + 'static,
{
    let scrape = move || {
        let figures = figures.clone();
        async move {
            let mut res = (StatusCode::OK, render(figures())).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            res
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        log::warn!("metrics listener stopped: {e}");
    }
}
