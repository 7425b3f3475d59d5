//! Issue "Cable": the ActionCable protocol and both channels over real websockets, frame by frame.

mod common;

use std::time::Duration;

use futures_util::SinkExt;

use common::{assert_all_quiet, chat_ident, confirm, on, Cable, Server, User, CHATS, QUIET_WINDOW};
use serde_json::{json, Value};

/// Exactly these frames (pings aside), in this order, arrive next on the connection. The frames
/// are waited for, not a fixed time: a surplus frame shows up at the connection's next
/// `expect`, and each scenario ends with `assert_all_quiet` over its connections. An empty
/// list means nothing arrives (`assert_all_quiet`).
async fn expect(c: &mut Cable, who: &str, want: Vec<Value>) {
    if want.is_empty() {
        return assert_all_quiet(&mut [(c, who)]).await;
    }
    let got = c.frames(want.len()).await;
    assert_eq!(got, want, "frames of {who}");
}

fn chat_obj(id: i64, name: &str, users: &[&User]) -> Value {
    json!({"id": id, "name": name, "users": users.iter().map(|u| u.contact()).collect::<Vec<_>>()})
}

fn msg(u: &User, body: &str) -> Value {
    json!({"user_uuid": u.uuid, "kind": "text", "first_name": u.first, "last_name": u.last, "body": body})
}

/// The issue's three-user scenario (plus D, A's contact only, to watch a chat disappear):
/// every frame each user receives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_users_every_frame_in_order() {
    let s = Server::start(&[("HANGIN_CABLE__BACKGROUND_WINDOW_SECONDS", "2")]);
    let a = s.sign_up("Ann", "Able").await;
    let b = s.sign_up("Bob", "Baker").await;
    let c = s.sign_up("Cat", "Cole").await;
    let d = s.sign_up("Dee", "Dunn").await;
    s.befriend(&a, &b).await;
    s.befriend(&a, &d).await;
    // One-way: C holds A's number, A does not hold C's. Not mutual, so C sees nothing of A.
    s.add_friends(&c, &[&a]).await;

    let mut cb = s.online(&b).await;
    let mut cc = s.online(&c).await;
    let mut cd = s.online(&d).await;

    // A's phone comes online: chats, contacts_online (mutual contacts only), confirm.
    let mut phone = s.cable(&a).await;
    phone.command("subscribe", CHATS, None).await;
    expect(
        &mut phone,
        "A's phone",
        vec![
            on(CHATS, json!({"chats": []})),
            on(
                CHATS,
                json!({"contacts_online": [b.contact(), d.contact()]}),
            ),
            confirm(CHATS),
        ],
    )
    .await;
    expect(
        &mut cb,
        "B",
        vec![on(CHATS, json!({"contact_online": a.contact()}))],
    )
    .await;
    expect(
        &mut cd,
        "D",
        vec![on(CHATS, json!({"contact_online": a.contact()}))],
    )
    .await;
    expect(&mut cc, "C", vec![]).await;

    // A's second device: no new announcement; offline only when the last device leaves.
    let mut web = s.cable(&a).await;
    web.command("subscribe", CHATS, None).await;
    expect(
        &mut web,
        "A's web",
        vec![
            on(CHATS, json!({"chats": []})),
            on(
                CHATS,
                json!({"contacts_online": [b.contact(), d.contact()]}),
            ),
            confirm(CHATS),
        ],
    )
    .await;
    expect(&mut cb, "B", vec![]).await;
    phone.close().await;
    expect(&mut cb, "B", vec![]).await;
    web.close().await;
    expect(
        &mut cb,
        "B",
        vec![on(CHATS, json!({"contact_offline": a.uuid}))],
    )
    .await;
    expect(
        &mut cd,
        "D",
        vec![on(CHATS, json!({"contact_offline": a.uuid}))],
    )
    .await;

    // A back, creates a chat: own_chat to A, chat to online mutual contacts, nothing to C.
    let mut ca = s.online(&a).await;
    expect(
        &mut cb,
        "B",
        vec![on(CHATS, json!({"contact_online": a.contact()}))],
    )
    .await;
    expect(
        &mut cd,
        "D",
        vec![on(CHATS, json!({"contact_online": a.contact()}))],
    )
    .await;
    ca.perform(CHATS, "createChat", json!({"name": "Lunch?"}))
        .await;
    let own = ca.event("own_chat").await;
    let id = own["id"].as_i64().unwrap();
    assert_eq!(own, chat_obj(id, "Lunch?", &[&a]));
    expect(
        &mut cb,
        "B",
        vec![on(CHATS, json!({"chat": chat_obj(id, "Lunch?", &[&a])}))],
    )
    .await;
    expect(
        &mut cd,
        "D",
        vec![on(CHATS, json!({"chat": chat_obj(id, "Lunch?", &[&a])}))],
    )
    .await;
    assert_all_quiet(&mut [(&mut ca, "A"), (&mut cc, "C")]).await;

    // C, a stranger, is refused; nobody hears of it.
    let ident = chat_ident(id);
    assert_eq!(cc.subscribe_result(&ident).await, "reject_subscription");
    assert_all_quiet(&mut [
        (&mut ca, "A"),
        (&mut cb, "B"),
        (&mut cc, "C"),
        (&mut cd, "D"),
    ])
    .await;

    // B joins: update_chat to every viewer (members and their online mutual contacts), then
    // B's history and confirmation.
    let both = chat_obj(id, "Lunch?", &[&a, &b]);
    cb.command("subscribe", &ident, None).await;
    expect(
        &mut cb,
        "B",
        vec![
            on(CHATS, json!({"update_chat": both})),
            on(&ident, json!({"messages": []})),
            confirm(&ident),
        ],
    )
    .await;
    expect(&mut ca, "A", vec![on(CHATS, json!({"update_chat": both}))]).await;
    expect(&mut cd, "D", vec![on(CHATS, json!({"update_chat": both}))]).await;
    expect(&mut cc, "C", vec![]).await;

    // A joins its own chat too (already a member: nothing changes, so nobody is told); then
    // both speak and both receive, each on its own identifier.
    ca.command("subscribe", &ident, None).await;
    expect(
        &mut ca,
        "A",
        vec![on(&ident, json!({"messages": []})), confirm(&ident)],
    )
    .await;
    assert_all_quiet(&mut [(&mut cb, "B"), (&mut cd, "D")]).await;
    ca.perform(
        &ident,
        "speak",
        json!({"body": "hi", "kind": "text", "status": "sent"}),
    )
    .await;
    // One speak at a time: two speaks racing on separate connections may reach members in
    // different orders (each is broadcast after its own commit), which is not this test's point.
    let hi = on(&ident, json!({"message": msg(&a, "hi")}));
    expect(&mut ca, "A", vec![hi.clone()]).await;
    expect(&mut cb, "B", vec![hi]).await;
    cb.perform(&ident, "speak", json!({"body": "yo"})).await;
    let yo = on(&ident, json!({"message": msg(&b, "yo")}));
    expect(&mut ca, "A", vec![yo.clone()]).await;
    expect(&mut cb, "B", vec![yo]).await;
    expect(&mut cd, "D (not streaming the chat)", vec![]).await;

    // B's second device joins late: the chat list shows the chat, the history is oldest first.
    let mut b2 = s.cable(&b).await;
    b2.command("subscribe", CHATS, None).await;
    expect(
        &mut b2,
        "B's second device",
        vec![
            on(CHATS, json!({"chats": [both.clone()]})),
            on(CHATS, json!({"contacts_online": [a.contact()]})),
            confirm(CHATS),
        ],
    )
    .await;
    b2.command("subscribe", &ident, None).await;
    expect(
        &mut b2,
        "B's second device",
        vec![
            on(&ident, json!({"messages": [msg(&a, "hi"), msg(&b, "yo")]})),
            confirm(&ident),
        ],
    )
    .await;
    // B was a member already: the re-join and the device leaving change nothing anyone sees.
    expect(&mut cb, "B", vec![]).await;
    b2.close().await;
    assert_all_quiet(&mut [(&mut ca, "A"), (&mut cb, "B"), (&mut cd, "D")]).await;

    // Background: A's connections end with disconnect/remote; A stays online to contacts, and
    // messages reach A as pushes while the window is open.
    let device = "a1".repeat(32);
    let r = s
        .http()
        .post(s.url("/user/registerIOSDevice"))
        .json(&json!({"device_token": device, "access_token": a.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    ca.perform(CHATS, "go_to_background", json!({})).await;
    expect(
        &mut ca,
        "A",
        vec![json!({"type": "disconnect", "reason": "remote", "reconnect": true})],
    )
    .await;
    ca.wait_closed().await;
    assert_all_quiet(&mut [(&mut cb, "B"), (&mut cd, "D")]).await;
    cb.perform(&ident, "speak", json!({"body": "wake up"}))
        .await;
    expect(
        &mut cb,
        "B",
        vec![on(&ident, json!({"message": msg(&b, "wake up")}))],
    )
    .await;
    let push = format!(
        "push to {} ({device}): title=\"Lunch?\" subtitle=Some(\"Bob Baker\") body=\"wake up\"",
        a.uuid
    );
    // The push for A, in the background, is logged by the `log` driver after the broadcast.
    s.wait_log_lines(&push, 1).await;

    // The window ends: A goes offline exactly as in Presence. B still sees the chat (member),
    // D no longer does (A was D's only way in). The window (2 s) ends within FRAME_TIMEOUT of
    // now, so the frames are simply waited for.
    expect(
        &mut cb,
        "B",
        vec![
            on(CHATS, json!({"contact_offline": a.uuid})),
            on(CHATS, json!({"update_chat": chat_obj(id, "Lunch?", &[&b])})),
        ],
    )
    .await;
    expect(
        &mut cd,
        "D",
        vec![
            on(CHATS, json!({"contact_offline": a.uuid})),
            on(CHATS, json!({"delete_chat": id})),
        ],
    )
    .await;

    // B, the last online member, leaves: the chat ends; A, back, finds no chats.
    cb.close().await;
    // Nobody is told that the chat ended (its only viewers are gone), so there is no frame to
    // wait for: the quiet window lets the departure land before A comes back.
    common::quiet_window().await;
    let mut back = s.cable(&a).await;
    back.command("subscribe", CHATS, None).await;
    expect(
        &mut back,
        "A back",
        vec![
            on(CHATS, json!({"chats": []})),
            on(CHATS, json!({"contacts_online": [d.contact()]})),
            confirm(CHATS),
        ],
    )
    .await;
    expect(
        &mut cd,
        "D",
        vec![on(CHATS, json!({"contact_online": a.contact()}))],
    )
    .await;
    assert_all_quiet(&mut [
        (&mut back, "A back"),
        (&mut cc, "C (stranger, all along)"),
        (&mut cd, "D"),
    ])
    .await;
}

#[tokio::test]
async fn camel_key_style_renames_the_event_keys_only() {
    let s = Server::start(&[("HANGIN_CABLE__KEY_STYLE", "camel")]);
    let (a, b) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
    );
    s.befriend(&a, &b).await;
    let mut cb = s.cable(&b).await;
    cb.subscribe(CHATS).await;
    cb.payload(CHATS, "chats").await;
    assert_eq!(cb.payload(CHATS, "contactsOnline").await, json!([]));
    let mut ca = s.cable(&a).await;
    ca.subscribe(CHATS).await;
    assert_eq!(
        ca.payload(CHATS, "contactsOnline").await,
        json!([b.contact()])
    );
    assert_eq!(cb.event("contactOnline").await, a.contact());
    ca.perform(CHATS, "createChat", json!({"name": "camel"}))
        .await;
    let own = ca.event("ownChat").await;
    assert_eq!(cb.event("chat").await, own);
    let ident = format!(r#"{{"channel":"ChatChannel","id":{}}}"#, own["id"]);
    cb.subscribe(&ident).await;
    assert_eq!(cb.payload(&ident, "messages").await, json!([]));
    assert_eq!(
        ca.event("updateChat").await["users"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    cb.perform(&ident, "speak", json!({"body": "snake inside"}))
        .await;
    assert_eq!(cb.payload(&ident, "message").await, msg(&b, "snake inside"));
    cb.close().await;
    assert_eq!(ca.event("contactOffline").await, json!(b.uuid));
}

#[tokio::test]
async fn malformed_input_never_disturbs_anyone() {
    let s = Server::start(&[]);
    let (a, b) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
    );
    s.befriend(&a, &b).await;
    let mut cb = s.online(&b).await;
    cb.perform(CHATS, "createChat", json!({"name": "calm"}))
        .await;
    let id = cb.event("own_chat").await["id"].as_i64().unwrap();
    let ident = chat_ident(id);
    cb.subscribe(&ident).await;
    cb.payload(&ident, "messages").await;

    let mut ca = s.online(&a).await;
    cb.event("contact_online").await;
    let garbage = [
        "not json",
        "[]",
        "{}",
        "\"just a string\"",
        r#"{"command":"explode","identifier":"{}"}"#,
        r#"{"command":"subscribe","identifier":"not json"}"#,
        r#"{"command":"subscribe","identifier":{"channel":"ChatsChannel"}}"#,
        r#"{"command":"message","identifier":"{\"channel\":\"ChatChannel\",\"id\":\"999\"}","data":"{\"action\":\"speak\",\"body\":\"x\"}"}"#,
        r#"{"command":"message","identifier":"{\"channel\":\"ChatsChannel\"}","data":"not json"}"#,
        r#"{"command":"message","identifier":"{\"channel\":\"ChatsChannel\"}","data":{"action":"createChat"}}"#,
        r#"{"command":"unsubscribe","identifier":"{\"channel\":\"Nope\"}"}"#,
    ];
    for g in garbage {
        ca.send_raw(g).await;
    }
    // Unknown channel and invisible/absent chat ids are rejected; an unknown action is ignored;
    // a duplicate subscribe gets no second confirmation.
    assert_eq!(
        ca.subscribe_result(r#"{"channel":"NoSuchChannel"}"#).await,
        "reject_subscription"
    );
    assert_eq!(
        ca.subscribe_result(&chat_ident(999_999)).await,
        "reject_subscription"
    );
    ca.command("subscribe", CHATS, None).await;
    ca.perform(CHATS, "noSuchAction", json!({})).await;
    ca.perform(CHATS, "subscribed", json!({})).await; // the original's callable callbacks are not actions
    let stray = ca.drain(QUIET_WINDOW).await;
    assert!(
        stray
            .iter()
            .all(|f| f["type"] != "confirm_subscription" && f["message"].get("error").is_none()),
        "{stray:?}"
    );
    // Binary frames are ignored too.
    ca.ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![0u8, 1, 2].into(),
        ))
        .await
        .unwrap();
    // The connection still works.
    ca.subscribe(&ident).await;
    ca.payload(&ident, "messages").await;
    cb.event("update_chat").await;

    // A 100 KiB frame closes only that connection, with 1009.
    let flood = json!({"command": "message", "identifier": CHATS, "data": "x".repeat(100 * 1024)})
        .to_string();
    ca.send_raw(&flood).await;
    let _ = ca.drain(Duration::from_secs(2)).await;
    assert_eq!(ca.closed, Some(Some(1009)));
    // B is undisturbed: speaks and receives.
    assert_eq!(cb.event("contact_offline").await, json!(a.uuid));
    cb.perform(&ident, "speak", json!({"body": "still here"}))
        .await;
    assert_eq!(cb.payload(&ident, "message").await, msg(&b, "still here"));
    assert!(s.child.try_wait_ref().is_none(), "server alive");
}

trait TryWaitRef {
    fn try_wait_ref(&self) -> Option<()>;
}

impl TryWaitRef for std::process::Child {
    fn try_wait_ref(&self) -> Option<()> {
        // Alive when /proc has it and it is not a zombie.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.id())).ok()?;
        stat.contains(" Z ").then_some(())
    }
}

#[tokio::test]
async fn bad_tokens_get_unauthorized_disconnect_after_the_upgrade() {
    let s = Server::start(&[]);
    for url in [s.ws_url(), format!("{}?access_token=nope", s.ws_url())] {
        let mut c = Cable::connect_raw(&url).await;
        let frames = c.drain(Duration::from_secs(1)).await;
        assert_eq!(
            frames,
            vec![json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false})]
        );
        assert!(c.closed.is_some());
    }
}

#[tokio::test]
async fn a_message_any_client_received_survives_kill_9() {
    let mut s = Server::start(&[("HANGIN_CABLE__BACKGROUND_WINDOW_SECONDS", "60")]);
    let (a, b) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
    );
    s.befriend(&a, &b).await;
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    ca.perform(CHATS, "createChat", json!({"name": "Durable"}))
        .await;
    let id = ca.event("own_chat").await["id"].as_i64().unwrap();
    let ident = chat_ident(id);
    ca.subscribe(&ident).await;
    cb.subscribe(&ident).await;
    cb.payload(&ident, "messages").await;
    let bodies: Vec<String> = (0..300).map(|i| format!("durable-{i}")).collect();
    for body in &bodies {
        ca.perform(&ident, "speak", json!({ "body": body })).await;
    }
    let mut received = Vec::new();
    while received.len() < bodies.len() {
        received.push(
            cb.payload(&ident, "message").await["body"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(received, bodies);
    s.kill9_and_restart();
    // A restart counts as everyone going to the background: the chat is still there.
    let mut again = s.cable(&b).await;
    again.subscribe(CHATS).await;
    let chats = again.payload(CHATS, "chats").await;
    assert_eq!(chats[0]["id"], id, "{chats}");
    again.subscribe(&ident).await;
    let history: Vec<String> = again
        .payload(&ident, "messages")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    // History on join is the newest `[limits] history_messages` (200 by default).
    assert_eq!(history, bodies[bodies.len() - 200..]);
}

#[tokio::test]
async fn sigterm_sends_server_restart_and_exits_zero() {
    let mut s = Server::start(&[]);
    let u = s.sign_up("Sig", "Term").await;
    let mut c = s.online(&u).await;
    let status = s.terminate();
    let frames = c.drain(Duration::from_secs(1)).await;
    assert_eq!(
        frames,
        vec![json!({"type": "disconnect", "reason": "server_restart", "reconnect": true})]
    );
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn plain_http_to_cable_is_a_json_404() {
    let s = Server::start(&[]);
    let r = s.http().get(s.url("/cable")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    let r = s.http().delete(s.url("/friends")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
}

/// A client that stops reading is cut off once its queue fills; everyone else keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected_without_slowing_others() {
    let s = Server::start(&[("HANGIN_LIMITS__SEND_QUEUE_BYTES", "65536")]);
    let (a, b, z) = (
        s.sign_up("Ann", "Able").await,
        s.sign_up("Bob", "Baker").await,
        s.sign_up("Zed", "Slow").await,
    );
    s.befriend(&a, &b).await;
    s.befriend(&a, &z).await;
    let mut ca = s.online(&a).await;
    ca.perform(CHATS, "createChat", json!({"name": "firehose"}))
        .await;
    let id = ca.event("own_chat").await["id"].as_i64().unwrap();
    let ident = chat_ident(id);
    let mut cb = s.online(&b).await;
    cb.subscribe(&ident).await;
    cb.payload(&ident, "messages").await;
    let mut slow = s.online(&z).await;
    slow.subscribe(&ident).await;
    slow.payload(&ident, "messages").await;
    // From here on `slow` reads nothing: its socket buffers fill, then its 64 KiB queue. B
    // speaks and reads each message back: it must get every one, at full speed.
    let body = "x".repeat(4000);
    let total = 1500;
    let started = std::time::Instant::now();
    for i in 0..total {
        cb.perform(&ident, "speak", json!({ "body": format!("{i} {body}") }))
            .await;
        let got = cb.payload(&ident, "message").await;
        assert!(got["body"].as_str().unwrap().starts_with(&format!("{i} ")));
    }
    eprintln!("{total} round trips in {:?}", started.elapsed());
    let log = s.log_text();
    assert!(log.contains("is too slow; disconnecting it"), "log:\n{log}");
    let frames = slow.drain(Duration::from_secs(3)).await;
    assert!(
        frames.len() < total,
        "the slow client was cut off ({} frames)",
        frames.len()
    );
    assert!(slow.closed.is_some());
}
