//! `/metrics` (docs/administration.md "Metrics"): scraped from the real server after real
//! traffic, parsed as Prometheus text, every family present, no personal data anywhere.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::json;

/// (series with labels, value) per sample line; TYPE per family.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = HashMap::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else {
                let (series, value) = line.rsplit_once(' ').expect("sample line");
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
                samples.insert(series.to_string(), value);
            }
        }
        Scrape {
            text,
            samples,
            types,
        }
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series} in\n{}", self.text))
    }
}

async fn scrape(s: &Server, base: &str) -> Scrape {
    let r = s
        .http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(r.text().await.unwrap())
}

#[tokio::test]
async fn metrics_cover_every_family_and_carry_no_personal_data() {
    let s = Server::start(&[("HANGIN_METRICS__LISTEN", "127.0.0.1:0")]);
    let line = s.wait_log_lines("metrics at http://", 1).await.remove(0);
    let addr = line
        .split("metrics at http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let base = format!("http://{addr}");

    let a = s.sign_up("Zelda", "Quuxington").await;
    let b = s.sign_up("Yorick", "Pemberton").await;
    s.befriend(&a, &b).await;
    let device = "b2".repeat(32);
    let r = s
        .http()
        .post(s.url("/user/registerIOSDevice"))
        .json(&json!({"device_token": device, "access_token": b.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    ca.event("contact_online").await;
    ca.perform(CHATS, "createChat", json!({"name": "Secret Plans"}))
        .await;
    let id = ca.event("own_chat").await["id"].as_i64().unwrap();
    let ident = chat_ident(id);
    ca.subscribe(&ident).await;
    cb.event("chat").await;
    cb.subscribe(&ident).await;
    for body in ["one", "two"] {
        ca.perform(&ident, "speak", json!({ "body": body })).await;
        cb.payload(&ident, "message").await;
    }
    // B in the background: the next message is a push (log driver: delivered).
    cb.perform(CHATS, "go_to_background", json!({})).await;
    cb.next_frame(|f| f["type"] == "disconnect").await;
    ca.perform(&ident, "speak", json!({"body": "three"})).await;
    ca.payload(&ident, "message").await;
    s.wait_log_lines("push to", 1).await;
    // Requests whose raw paths carry a number or key must still be labelled by template.
    let key = format!("k{}", a.number);
    let r = s
        .http()
        .get(s.url(&format!("/blobs/{key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .http()
        .get(s.url(&format!("/no/such/{}", b.uuid)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(s.request_code("12").await.status(), 422);

    let m = scrape(&s, &base).await;
    let families = [
        ("process_resident_memory_bytes", "gauge"),
        ("hangin_connections", "gauge"),
        ("hangin_online_users", "gauge"),
        ("hangin_live_chats", "gauge"),
        ("hangin_messages_stored_total", "counter"),
        ("hangin_fanout_deliveries_total", "counter"),
        ("hangin_fanout_dropped_total", "counter"),
        ("hangin_slow_client_disconnects_total", "counter"),
        ("hangin_otp_sends_total", "counter"),
        ("hangin_push_sends_total", "counter"),
        ("hangin_http_requests_total", "counter"),
        ("hangin_db_commit_seconds", "histogram"),
        ("hangin_db_commit_group_size", "histogram"),
    ];
    for (name, kind) in families {
        assert_eq!(
            m.types.get(name).map(String::as_str),
            Some(kind),
            "family {name}:\n{}",
            m.text
        );
    }
    assert_eq!(m.get("hangin_connections"), 1.0);
    assert_eq!(m.get("hangin_online_users"), 2.0, "B is in the background");
    assert_eq!(m.get("hangin_live_chats"), 1.0);
    assert_eq!(m.get("hangin_messages_stored_total"), 3.0);
    assert!(m.get("hangin_fanout_deliveries_total") >= 5.0);
    assert_eq!(
        m.get(r#"hangin_fanout_dropped_total{reason="queue_full"}"#),
        0.0
    );
    assert_eq!(m.get("hangin_slow_client_disconnects_total"), 0.0);
    assert_eq!(
        m.get(r#"hangin_otp_sends_total{driver="log",result="ok"}"#),
        2.0
    );
    assert_eq!(
        m.get(r#"hangin_otp_sends_total{driver="log",result="failed"}"#),
        0.0
    );
    assert_eq!(m.get(r#"hangin_push_sends_total{result="delivered"}"#), 1.0);
    assert_eq!(m.get(r#"hangin_push_sends_total{result="dropped"}"#), 0.0);
    assert_eq!(
        m.get(r#"hangin_http_requests_total{route="/create",method="POST",status="204"}"#),
        2.0
    );
    assert_eq!(
        m.get(r#"hangin_http_requests_total{route="/create",method="POST",status="422"}"#),
        1.0
    );
    assert_eq!(
        m.get(r#"hangin_http_requests_total{route="/blobs/{key}",method="GET",status="404"}"#),
        1.0
    );
    assert_eq!(
        m.get(r#"hangin_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        1.0
    );
    assert_eq!(
        m.get(r#"hangin_http_requests_total{route="/cable",method="GET",status="101"}"#),
        2.0
    );
    let commits = m.get("hangin_db_commit_seconds_count");
    assert!(commits >= 10.0, "{commits}");
    assert_eq!(
        m.get(r#"hangin_db_commit_seconds_bucket{le="+Inf"}"#),
        commits
    );
    assert_eq!(m.get("hangin_db_commit_group_size_count"), commits);
    assert!(m.get("hangin_db_commit_group_size_sum") >= commits);
    assert!(m.get("process_resident_memory_bytes") > 1e6);

    // Nothing that names or identifies a person, nor a secret, anywhere in the text.
    for user in [&a, &b] {
        for needle in [
            &user.number,
            &user.uuid,
            &user.first,
            &user.last,
            &user.token,
            &user.refresh,
        ] {
            assert!(!m.text.contains(needle.as_str()), "{needle} in metrics");
        }
    }
    for needle in [&key, &device, &"Secret Plans".to_string()] {
        assert!(!m.text.contains(needle.as_str()), "{needle} in metrics");
    }
    // Only /metrics is served there.
    let r = s.http().get(format!("{base}/up")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Gauges follow the live state.
    ca.close().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while scrape(&s, &base).await.get("hangin_connections") != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "hangin_connections stayed above 0 after the last socket closed"
        );
    }
}

#[tokio::test]
async fn metrics_are_off_by_default_and_loopback_unless_allowed() {
    let s = Server::start(&[]);
    assert!(s.log_lines("metrics at").is_empty());
    drop(s);
    let (code, _, err) = run_cli(
        &["config", "check"],
        &[("HANGIN_METRICS__LISTEN", "0.0.0.0:9184")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("metrics.listen"), "{err}");
    let (code, out, err) = run_cli(
        &["config", "check"],
        &[
            ("HANGIN_METRICS__LISTEN", "0.0.0.0:9184"),
            ("HANGIN_METRICS__ALLOW_REMOTE", "true"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[metrics]"), "{out}");
}
