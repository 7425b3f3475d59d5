//! The live engine at the edges of time (restarts, simultaneous events, contact changes, limits),
//! each over real TCP against the real server. Every test here failed on the engine it replaced.
//! Websocket hygiene (close handshake, protocol errors, dead peers) is in tests/cable_edges.rs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(600);

fn bodies(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect()
}

/// Every `message` body on `ident` that arrives within `wait` after the last one.
async fn collect_live(cable: &mut Cable, ident: &str, want: usize) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < want && Instant::now() < deadline {
        let m = cable.payload(ident, "message").await;
        out.push(m["body"].as_str().unwrap().to_string());
    }
    out
}

/// Observation 1: `systemctl restart` (SIGTERM) used to end every live chat.
#[tokio::test]
async fn a_graceful_restart_keeps_live_chats() {
    let mut s = Server::start(&[]);
    let (a, b) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
    );
    s.befriend(&a, &b).await;
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    let id = ca.create_chat("Kept").await;
    let ident = chat_ident(id);
    cb.event("chat").await;
    cb.subscribe(&ident).await;
    ca.subscribe(&ident).await;
    cb.perform(&ident, "speak", json!({"body": "before the restart"}))
        .await;
    ca.payload(&ident, "message").await;

    assert!(s.terminate().success());
    s.restart_same_port();
    // Both keep their new connections open: one closing would take its user offline.
    let mut back = Vec::new();
    for (user, other) in [(&a, &b), (&b, &a)] {
        let mut c = s.cable(user).await;
        c.subscribe(CHATS).await;
        let chats = c.payload(CHATS, "chats").await;
        assert_eq!(chats.as_array().unwrap().len(), 1, "{chats}");
        assert_eq!(chats[0]["id"], id);
        // Both members count as online (in the background) until they are back.
        let users: Vec<&str> = chats[0]["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["uuid"].as_str().unwrap())
            .collect();
        assert!(users.contains(&other.uuid.as_str()), "{chats}");
        c.subscribe(&ident).await;
        let history = c.payload(&ident, "messages").await;
        assert_eq!(bodies(&history), ["before the restart"]);
        back.push(c);
    }
    // The database agrees: the chat has not ended.
    let db = rusqlite::Connection::open(s.db_path()).unwrap();
    let ended: Option<i64> = db
        .query_row("SELECT ended_at FROM chats WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(ended, None);
}

/// Observation 2: two members speaking at once saw one live order and got another history.
/// One order per chat: commit order = live order for everyone = history order; a member who
/// joins in the middle of it gets history + live with every message exactly once, in order.
#[tokio::test]
async fn simultaneous_speakers_and_a_mid_join_see_one_order() {
    const EACH: usize = 150;
    let s = Server::start(&[("HANGIN_LIMITS__HISTORY_MESSAGES", "1000")]);
    let (a, b, c) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
        s.sign_up("Cat", "Cole").await,
    );
    s.befriend(&a, &b).await;
    s.befriend(&a, &c).await;
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    let mut cc = s.online(&c).await;
    let id = ca.create_chat("Race").await;
    let ident = chat_ident(id);
    ca.subscribe(&ident).await;
    cb.subscribe(&ident).await;

    // Two speakers on two connections, as fast as they can; C joins halfway through.
    let mut sa = s.cable(&a).await;
    let mut sb = s.cable(&b).await;
    sa.subscribe(&ident).await;
    sb.subscribe(&ident).await;
    let speak_a = async {
        for i in 0..EACH {
            sa.perform(&ident, "speak", json!({ "body": format!("a{i}") }))
                .await;
        }
        sa
    };
    let speak_b = async {
        for i in 0..EACH {
            sb.perform(&ident, "speak", json!({ "body": format!("b{i}") }))
                .await;
            if i == EACH / 2 {
                cc.command("subscribe", &ident, None).await;
            }
        }
        sb
    };
    let (_sa, _sb) = tokio::join!(speak_a, speak_b);
    let live_a = collect_live(&mut ca, &ident, 2 * EACH).await;
    let live_b = collect_live(&mut cb, &ident, 2 * EACH).await;
    assert_eq!(live_a.len(), 2 * EACH);
    assert_eq!(live_a, live_b, "members saw different live orders");

    // C: the history it was given, then what came live — each message once, in that order.
    let history = bodies(&cc.payload(&ident, "messages").await);
    let rest = collect_live(&mut cc, &ident, 2 * EACH - history.len()).await;
    let seen: Vec<String> = history.iter().chain(rest.iter()).cloned().collect();
    assert_eq!(seen, live_a, "history + live of the mid-join member");
    assert!(
        !history.is_empty() && history.len() < 2 * EACH,
        "C joined mid-way: {} in history",
        history.len()
    );

    // A later join's history is the live order.
    let mut late = s.cable(&c).await;
    late.subscribe(&ident).await;
    assert_eq!(bodies(&late.payload(&ident, "messages").await), live_a);
}

/// Observation 3: F, B's mutual contact (not A's), newly sees A's chat when B joins it: `chat`,
/// not `update_chat` (the iOS client adds chats only on `chat`).
#[tokio::test]
async fn a_newly_visible_chat_arrives_as_chat() {
    let s = Server::start(&[]);
    let (a, b, f) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
        s.sign_up("Fay", "Fox").await,
    );
    s.befriend(&a, &b).await;
    s.befriend(&b, &f).await;
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    assert_eq!(ca.event("contact_online").await["uuid"], b.uuid);
    let mut cf = s.online(&f).await;
    assert_eq!(cb.event("contact_online").await["uuid"], f.uuid);
    let id = ca.create_chat("Open").await;
    cb.event("chat").await;
    cf.assert_quiet(QUIET).await;
    cb.subscribe(&chat_ident(id)).await;
    let seen = cf.event("chat").await;
    assert_eq!(seen["id"], id);
    assert_eq!(seen["users"].as_array().unwrap().len(), 2, "{seen}");
    cf.assert_quiet(QUIET).await;
    // A and B, who saw it already, get one update each.
    assert_eq!(ca.event("update_chat").await["id"], id);
    ca.assert_quiet(QUIET).await;
}

/// Observation 4: an upload that makes A and B mutual contacts while both are online tells
/// both at once, and each gets `chat` for the chats the new pair makes visible.
#[tokio::test]
async fn contacts_change_live() {
    let s = Server::start(&[]);
    let (a, b) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
    );
    s.add_friends(&a, &[&b]).await; // one way only: not contacts yet
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    let id = cb.create_chat("B's").await;
    ca.assert_quiet(QUIET).await;

    s.add_friends(&b, &[&a]).await; // now mutual
    assert_eq!(ca.event("contact_online").await["uuid"], b.uuid);
    assert_eq!(cb.event("contact_online").await["uuid"], a.uuid);
    assert_eq!(ca.event("chat").await["id"], id);
    ca.assert_quiet(QUIET).await;
    cb.assert_quiet(QUIET).await;
    // Uploading the same number again changes nothing and tells nobody.
    s.add_friends(&b, &[&a]).await;
    ca.assert_quiet(QUIET).await;
    cb.assert_quiet(QUIET).await;
}

/// Observation 7: `speak` into an ended chat was stored and broadcast.
#[tokio::test]
async fn speaking_into_an_ended_chat_is_refused_and_stores_nothing() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Able").await;
    let mut ca = s.cable(&a).await;
    ca.subscribe(CHATS).await;
    let id = ca.create_chat("Short").await;
    let ident = chat_ident(id);
    ca.subscribe(&ident).await;
    // A's only ChatsChannel subscription goes: A is offline, the chat ends; the ChatChannel
    // subscription on the same socket stays.
    ca.command("unsubscribe", CHATS, None).await;
    tokio::time::sleep(QUIET).await;
    ca.perform(&ident, "speak", json!({"body": "anyone?"}))
        .await;
    let error = ca.payload(&ident, "error").await;
    assert_eq!(error["code"], "chat_ended", "{error}");
    let db = rusqlite::Connection::open(s.db_path()).unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM messages WHERE chat_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 0);
}

/// Observation 8: re-joins under distinct identifier strings each sent `update_chat` to every
/// viewer. A member's re-join changes nothing and sends nothing to anyone else.
#[tokio::test]
async fn rejoining_changes_nothing_and_tells_nobody() {
    let s = Server::start(&[]);
    let (a, b) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
    );
    s.befriend(&a, &b).await;
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    assert_eq!(ca.event("contact_online").await["uuid"], b.uuid);
    let id = ca.create_chat("Once").await;
    cb.event("chat").await;
    let mut joiner = s.cable(&a).await;
    for i in 0..60 {
        // The same chat under distinct identifier strings (key order, spacing, number form).
        let ident = format!(r#"{{"channel":"ChatChannel","id":"{id}","n":{i}}}"#);
        joiner.subscribe(&ident).await;
    }
    cb.assert_quiet(QUIET).await;
    ca.assert_quiet(QUIET).await;
}

/// Beyond `[limits] live_chats_per_user`, `createChat` answers an `error` payload.
#[tokio::test]
async fn live_chats_per_user_are_limited() {
    let s = Server::start(&[("HANGIN_LIMITS__LIVE_CHATS_PER_USER", "2")]);
    let a = s.sign_up("Ann", "Able").await;
    let mut ca = s.online(&a).await;
    for _ in 0..2 {
        ca.perform(CHATS, "createChat", json!({"name": "x"})).await;
        ca.event("own_chat").await;
    }
    ca.perform(CHATS, "createChat", json!({"name": "one too many"}))
        .await;
    let error = ca.event("error").await;
    assert_eq!(error["code"], "too_many_chats", "{error}");
    ca.assert_quiet(QUIET).await;
}

/// Observation 9: one account's mass of subscriptions held a global lock across database work
/// and delayed an unrelated user's `ChatsChannel` subscribe by seconds.
#[tokio::test]
async fn one_account_cannot_stall_another() {
    let s = Server::start(&[]);
    let hog = s.sign_up("Hog", "Hogg").await;
    let mut friends = Vec::new();
    for i in 0..5 {
        let f = s.sign_up("Friend", &format!("F{i}")).await;
        s.befriend(&hog, &f).await;
        friends.push(f);
    }
    let other = s.sign_up("Una", "Related").await;
    let mut hog_cable = s.online(&hog).await;
    // As in the issue, the hog asks for thousands of chats (the limit keeps 20 of them).
    for _ in 0..10_000 {
        hog_cable
            .perform(CHATS, "createChat", json!({"name": "mine"}))
            .await;
    }
    // 20 sockets, each subscribing ChatsChannel under 50 identifiers, all at once.
    let mut hogs = Vec::new();
    for _ in 0..20 {
        hogs.push(s.cable(&hog).await);
    }
    let flood = async {
        for (n, c) in hogs.iter_mut().enumerate() {
            for i in 0..50 {
                let ident = format!(r#"{{"channel":"ChatsChannel","n":"{n}-{i}"}}"#);
                c.command("subscribe", &ident, None).await;
            }
        }
    };
    let measure = async {
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let mut c = s.cable(&other).await;
            let t0 = Instant::now();
            c.subscribe(CHATS).await;
            worst = worst.max(t0.elapsed());
            c.close().await;
        }
        worst
    };
    let ((), worst) = tokio::join!(flood, measure);
    println!("worst unrelated ChatsChannel confirmation during the flood: {worst:?}");
    // Was 10.9 s with a global lock held across I/O; generous for a loaded CI machine.
    assert!(worst < Duration::from_secs(2), "{worst:?}");
}
