//! A connection that sends many `speak`s without waiting: the server commits them together
//! (group commit) yet every frame keeps its order: echoes in send order, a refused message's
//! `error` in its place, an `unsubscribe` after them only once they are published, and every
//! message durable (in the history a new subscriber gets).

mod common;

use std::time::Duration;

use common::{chat_ident, quiet_window, Server, CHATS};
use serde_json::{json, Value};

fn body_of(frame: &Value) -> Option<&str> {
    frame["message"]["message"]["body"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_speaks_keeps_its_order_and_is_durable() {
    let server = Server::start(&[]);
    let a = server.sign_up("Ann", "A").await;
    let b = server.sign_up("Bob", "B").await;
    server.befriend(&a, &b).await;
    let mut ca = server.online(&a).await;
    let mut cb = server.online(&b).await;
    ca.perform(CHATS, "createChat", json!({"name": "burst"}))
        .await;
    let id = ca.event("own_chat").await["id"].as_i64().unwrap();
    let ident = chat_ident(id);
    ca.subscribe(&ident).await;
    cb.subscribe(&ident).await;
    // The (empty) histories come before the confirmations: out of the way.
    ca.payload(&ident, "messages").await;
    cb.payload(&ident, "messages").await;

    // 40 speaks back to back, one invalid in the middle, then an unsubscribe and a speak that
    // must be ignored (no longer subscribed) — all written before reading anything.
    for i in 0..40 {
        if i == 20 {
            ca.perform(&ident, "speak", json!({"body": "  "})).await;
        }
        ca.perform(&ident, "speak", json!({"body": format!("m{i}")}))
            .await;
    }
    ca.command("unsubscribe", &ident, None).await;
    ca.perform(&ident, "speak", json!({"body": "after"})).await;

    let label = |f: &Value| match body_of(f) {
        Some(b) => b.to_string(),
        None => format!(
            "error:{}",
            f["message"]["error"]["code"].as_str().unwrap_or("?")
        ),
    };
    let mut expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    expected.push("error:blank_body".into());
    expected.extend((20..40).map(|i| format!("m{i}")));
    let mut mine = Vec::new();
    while mine.len() < expected.len() {
        mine.push(label(
            &ca.next_frame(|f| f["identifier"] == ident.as_str()).await,
        ));
    }
    assert_eq!(mine, expected);

    let sent: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let mut heard = Vec::new();
    while heard.len() < sent.len() {
        let f = cb.next_frame(|f| body_of(f).is_some()).await;
        heard.push(body_of(&f).unwrap().to_string());
    }
    assert_eq!(heard, sent, "the other member hears them in order, once");
    // Nothing more: not "after" (sent once unsubscribed), no message twice.
    quiet_window().await;
    let more: Vec<Value> = ca
        .drain(Duration::from_millis(5))
        .await
        .into_iter()
        .chain(cb.drain(Duration::from_millis(5)).await)
        .filter(|f| f["identifier"] == ident.as_str())
        .collect();
    assert!(more.is_empty(), "{more:?}");

    // Durable and in order: a new subscription's history has exactly the 40.
    let mut again = server.cable(&a).await;
    again.subscribe(CHATS).await;
    again.subscribe(&ident).await;
    let history = again.payload(&ident, "messages").await;
    let bodies: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, sent.iter().map(String::as_str).collect::<Vec<_>>());
}
