//! Timing on virtual time: the server runs in this test process (`server::start_with_clock`) on
//! a manual clock, over real TCP, websockets and a real SQLite file, and the tests move the
//! clock's hand instead of sleeping. Five-minute background windows, ten-minute codes and
//! two-hour tokens are tested at their exact boundaries, the default settings unchanged, in
//! milliseconds of real time; a test cannot flake on a loaded machine because nothing it checks
//! depends on how fast real time passes. (The systemd watchdog's loop is tested the same way in
//! `service::tests`.)

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hangin::clock::{self, Clock, ClockHand};
use hangin::config::{Config, Sources};
use hangin::server::Running;
use serde_json::{json, Value};

use common::{confirm, on, Api, Cable, User, CHATS};

/// Log lines of every in-process server of this test binary (the `log` OTP driver's codes
/// among them), captured by a logger installed once per process.
fn captured_log() -> Arc<Mutex<Vec<String>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        log::set_boxed_logger(Box::new(Capture(lines.clone()))).expect("the only logger");
        log::set_max_level(log::LevelFilter::Info);
        lines
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<String>>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("hangin") && m.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("{:5} {}", record.level(), record.args());
            if std::env::var_os("HANGIN_TEST_LOG").is_some() {
                eprintln!("[server] {line}");
            }
            self.0.lock().unwrap().push(line);
        }
    }

    fn flush(&self) {}
}

/// A server running inside this process on a manual clock.
struct InProcess {
    api: Api,
    hand: ClockHand,
    clock: Clock,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for InProcess {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl InProcess {
    /// Defaults plus the test environment of `common` (loopback, no mDNS) and `extra`; the clock
    /// stands at the real time of day and moves only by `advance`.
    async fn start(extra: &[(&str, &str)]) -> InProcess {
        let log = captured_log();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut env = common::base_env(&data_dir);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (config, _) = Config::load_with_env(&Sources::default(), env).expect("config");
        let (clock, hand) = Clock::manual(clock::system_now_ms());
        let running = hangin::server::start_with_clock(config, clock.clone())
            .await
            .expect("server starts");
        // First start: the server made its own OAuth client, as for an operator.
        let creds: Value = serde_json::from_str(
            &std::fs::read_to_string(data_dir.join("client-credentials.json")).unwrap(),
        )
        .unwrap();
        let addr = running.http_addr.expect("plain listener");
        InProcess {
            api: Api {
                base: format!("http://{addr}"),
                port: addr.port(),
                client_id: creds["client_id"].as_str().unwrap().into(),
                client_secret: creds["client_secret"].as_str().unwrap().into(),
                log,
            },
            hand,
            clock,
            running: Some(running),
            _dir: dir,
        }
    }

    fn advance(&self, by: Duration) {
        self.hand.advance(by);
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// End every background window that is over by the clock, as the sweeper does; how many
    /// ended. A direct call makes "nothing ends yet" checkable without waiting: had the window
    /// been over, this call would have ended it.
    fn sweep(&self) -> usize {
        self.running().state.engine.sweep_background()
    }

    async fn stop(mut self) {
        self.running
            .take()
            .unwrap()
            .stop()
            .await
            .expect("clean stop");
    }
}

async fn expect(c: &mut Cable, who: &str, want: Vec<Value>) {
    let got = c.frames(want.len()).await;
    assert_eq!(got, want, "frames of {who}");
}

/// `doorkeeper_authorize!`'s refusal of an expired token: 401, the reason in
/// `WWW-Authenticate`, `no-store`, an empty body.
async fn assert_expired(r: reqwest::Response) {
    assert_eq!(r.status(), 401);
    let header = |name: &str| r.headers()[name].to_str().unwrap().to_string();
    assert_eq!(
        header("www-authenticate"),
        r#"Bearer realm="Doorkeeper", error="invalid_token", error_description="The access token expired""#
    );
    assert_eq!(header("cache-control"), "no-store");
    assert!(r.bytes().await.unwrap().is_empty());
}

/// A and B, mutual contacts, both online; A starts a chat named `name` that B sees; then A
/// goes to the background and A's connection ends. (a, b, B's connection, the chat's id.)
async fn a_in_the_background_with_a_chat(s: &InProcess, name: &str) -> (User, User, Cable, i64) {
    let (a, b) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
    );
    s.befriend(&a, &b).await;
    let mut cb = s.online(&b).await;
    let mut ca = s.online(&a).await;
    assert_eq!(cb.event("contact_online").await, a.contact());
    let id = ca.create_chat(name).await;
    assert_eq!(cb.event("chat").await["id"], id);
    ca.perform(CHATS, "go_to_background", json!({})).await;
    ca.next_frame(|f| f["type"] == "disconnect").await;
    ca.wait_closed().await;
    (a, b, cb, id)
}

/// A, in the background, stays online to B for exactly the window (300 s by default); at its
/// last millisecond nothing has ended, one millisecond later the sweeper ends it and B is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_window_ends_exactly_when_the_clock_passes_it() {
    let s = InProcess::start(&[]).await;
    let (a, _b, mut cb, id) = a_in_the_background_with_a_chat(&s, "Lunch?").await;
    s.advance(Duration::from_secs(300) - Duration::from_millis(1));
    assert_eq!(s.sweep(), 0, "the window is still open at 299.999 s");
    assert_eq!(s.running().state.engine.online_count(), 2);

    s.advance(Duration::from_millis(1));
    // The sweeper wakes on the clock's move; these frames are its work (nothing else happens).
    expect(
        &mut cb,
        "B",
        vec![
            on(CHATS, json!({"contact_offline": a.uuid})),
            on(CHATS, json!({"delete_chat": id})),
        ],
    )
    .await;
    assert_eq!(s.running().state.engine.online_count(), 1);
    s.stop().await;
}

/// Back within the window: the chat lives on and contacts are told nothing, neither at the
/// return nor when the old window would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_within_the_window_is_silent_and_keeps_the_chat() {
    let s = InProcess::start(&[]).await;
    let (a, b, mut cb, id) = a_in_the_background_with_a_chat(&s, "Stay").await;

    s.advance(Duration::from_secs(299));
    let mut back = s.cable(&a).await;
    back.command("subscribe", CHATS, None).await;
    expect(
        &mut back,
        "A back",
        vec![
            on(
                CHATS,
                json!({"chats": [{"id": id, "name": "Stay", "users": [a.contact()]}]}),
            ),
            on(CHATS, json!({"contacts_online": [b.contact()]})),
            confirm(CHATS),
        ],
    )
    .await;
    // Past the old window's end: nothing ends, and the next frame B gets is the marker below,
    // not a contact_offline or delete_chat.
    s.advance(Duration::from_secs(10));
    assert_eq!(s.sweep(), 0);
    let marker = back.create_chat("Marker").await;
    assert_eq!(
        cb.frames(1).await,
        vec![on(
            CHATS,
            json!({"chat": {"id": marker, "name": "Marker", "users": [a.contact()]}})
        )]
    );
    s.stop().await;
}

/// A login code (600 s by default) works at 599.999 s and is refused at 600 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_code_expires_at_its_ttl() {
    let s = InProcess::start(&[]).await;
    let number = common::fresh_number();
    assert_eq!(s.request_code(&number).await.status(), 204);
    let code = s.nth_otp(&number, 1).await;
    s.advance(Duration::from_secs(600) - Duration::from_millis(1));
    assert_eq!(s.password_grant(&number, &code).await.status(), 200);

    assert_eq!(s.request_code(&number).await.status(), 204);
    let stale = s.nth_otp(&number, 2).await;
    s.advance(Duration::from_secs(600));
    let r = s.password_grant(&number, &stale).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    s.stop().await;
}

/// An access token (7,200 s by default) works at its last millisecond and is refused from its
/// ttl on, over HTTP and at the cable's door; the refresh token still renews it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_expires_at_its_ttl_and_the_refresh_token_renews_it() {
    let s = InProcess::start(&[]).await;
    let u: User = s.sign_up("Ann", "Able").await;
    s.advance(Duration::from_secs(7200) - Duration::from_millis(1));
    assert_eq!(s.get_user(&u.token).await.status(), 200);

    s.advance(Duration::from_millis(1));
    assert_expired(s.get_user(&u.token).await).await;
    let in_query = s
        .http()
        .get(s.url("/friends"))
        .query(&[("access_token", &u.token)])
        .send()
        .await
        .unwrap();
    assert_expired(in_query).await;
    let mut refused = Cable::connect_raw(&format!("{}?access_token={}", s.ws_url(), u.token)).await;
    assert_eq!(
        refused.next_frame(|_| true).await,
        json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false})
    );

    let r = s.refresh_grant(&u.refresh).await;
    assert_eq!(r.status(), 200);
    let renewed: Value = r.json().await.unwrap();
    assert_eq!(renewed["expires_in"], 7200);
    let fresh = renewed["access_token"].as_str().unwrap();
    assert_eq!(s.get_user(fresh).await.status(), 200);
    s.stop().await;
}

/// Cable pings come every `ping_seconds` of the clock, stamped with its Unix seconds, and not a
/// millisecond early. 30 s rather than the default 3: real time alone could not produce a ping
/// within the test's waits, so only the clock's hand can have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cable_pings_follow_the_clock() {
    let s = InProcess::start(&[("HANGIN_CABLE__PING_SECONDS", "30")]).await;
    let u = s.sign_up("Ann", "Able").await;
    let mut c = s.cable(&u).await;
    // The welcome came from the connection's writer, so its ping schedule has started.
    let started = s.clock.now_ms();
    s.advance(Duration::from_secs(30));
    c.wait_pings(1).await;
    s.advance(Duration::from_secs(30) - Duration::from_millis(1));
    // Nothing is due: a ping now would be early. The next frame must be the subscription's.
    c.subscribe(CHATS).await;
    assert_eq!(c.pings.len(), 1, "a ping came early: {:?}", c.pings);
    s.advance(Duration::from_millis(1));
    let pings = c.wait_pings(2).await.to_vec();
    let second = |n: i64| json!({"type": "ping", "message": (started + n * 30_000) / 1000});
    assert_eq!(pings, vec![second(1), second(2)]);
    s.stop().await;
}
