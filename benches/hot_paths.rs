//! Criterion benches of the pure hot paths: cable frame parse/serialize, hub fan-out, presence
//! notes to many users, the presence engine in a join storm, number normalisation, and the SQL
//! the database writer runs for every stored message.
//! `cargo bench --bench hot_paths`; figures in docs/performance.md "Benches".

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use hangin::cable::protocol;
use hangin::channels::world::{Out, World};
use hangin::config::KeyStyle;
use hangin::db;
use hangin::db::chats::ChatId;
use hangin::db::users::{User, UserId};
use hangin::hub::{Hub, Outbound, Stream};
use hangin::outbox;
use hangin::people::numbers;
use hangin::wire::{self, Event};

const CHAT_IDENT: &str = r#"{"channel":"ChatChannel","id":"42"}"#;

fn speak_frame() -> String {
    let data = serde_json::json!({"action": "speak", "body": "see you at the park in ten minutes"});
    serde_json::json!({"command": "message", "identifier": CHAT_IDENT, "data": data.to_string()})
        .to_string()
}

fn message_payload() -> String {
    let m = wire::MessageObject {
        user_uuid: "6c1b7f0e-3f5e-4a8a-9a53-0f1f0f3c2b1a".into(),
        kind: "text".into(),
        first_name: "George".into(),
        last_name: "Harrison".into(),
        body: "see you at the park in ten minutes".into(),
    };
    wire::payload(Event::Message, KeyStyle::Snake, &m)
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("cable_frames");
    let speak = speak_frame();
    let subscribe =
        serde_json::json!({"command": "subscribe", "identifier": CHAT_IDENT}).to_string();
    g.bench_function("parse_speak", |b| {
        b.iter(|| protocol::parse_command(black_box(&speak)).unwrap())
    });
    g.bench_function("parse_subscribe", |b| {
        b.iter(|| protocol::parse_command(black_box(&subscribe)).unwrap())
    });
    g.bench_function("parse_identifier", |b| {
        b.iter(|| protocol::parse_identifier(black_box(CHAT_IDENT)).unwrap())
    });
    g.bench_function("serialize_confirm", |b| {
        b.iter(|| protocol::confirm(black_box(CHAT_IDENT)))
    });
    g.bench_function("serialize_ping", |b| {
        b.iter(|| protocol::ping(black_box(1_732_748_324)))
    });
    g.bench_function("serialize_message_payload", |b| b.iter(message_payload));
    let payload = message_payload();
    g.bench_function("serialize_channel_frame", |b| {
        b.iter(|| hangin::hub::channel_frame(black_box(CHAT_IDENT), black_box(&payload)))
    });
    g.finish();
}

/// A hub with `n` connections subscribed to one chat, each with its own identifier string
/// (as real connections have), and their receiving ends.
fn hub_with(n: usize) -> (Hub, Vec<outbox::Receiver<Outbound>>) {
    let hub = Hub::new();
    let mut rxs = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = outbox::channel(1 << 20);
        let conn = hub.register(UserId(i as i64), tx);
        hub.subscribe(
            Stream::Chat(ChatId(42)),
            &conn,
            Arc::from(CHAT_IDENT.to_string()),
        );
        rxs.push(rx);
    }
    (hub, rxs)
}

fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("hub_fan_out");
    let payload = message_payload();
    for n in [1usize, 100, 1000, 10_000] {
        let (hub, mut rxs) = hub_with(n);
        g.throughput(Throughput::Elements(n as u64));
        // One broadcast (frame built once, queued to every subscriber) plus draining the
        // queues, which a connection's writer task does in the server.
        g.bench_with_input(BenchmarkId::new("broadcast_and_drain", n), &n, |b, _| {
            b.iter(|| {
                hub.broadcast(Stream::Chat(ChatId(42)), black_box(&payload));
                for rx in rxs.iter_mut() {
                    while rx.try_recv().is_ok() {}
                }
            })
        });
    }
    g.finish();
}

/// `n` connections join one chat's stream one after the other, then leave it (a join storm,
/// or every member's connection closing at once).
fn subscribe_churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("hub_subscribe_churn");
    g.sample_size(10);
    for n in [1000usize, 10_000] {
        let hub = Hub::new();
        let conns: Vec<_> = (0..n)
            .map(|i| hub.register(UserId(i as i64), outbox::channel(1 << 10).0))
            .collect();
        let ident: Arc<str> = Arc::from(CHAT_IDENT);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("join_then_leave", n), &n, |b, _| {
            b.iter(|| {
                for conn in &conns {
                    hub.subscribe(Stream::Chat(ChatId(42)), conn, ident.clone());
                }
                for conn in &conns {
                    hub.unsubscribe(Stream::Chat(ChatId(42)), conn.id, CHAT_IDENT);
                }
            })
        });
    }
    g.finish();
}

fn normalise(c: &mut Criterion) {
    let mut g = c.benchmark_group("numbers");
    let us = numbers::Numbers::us();
    for raw in [
        "5551234567",
        "+1 (555) 123-4567",
        "1-555-123-4567",
        "+44 20 7946 0958",
    ] {
        g.bench_with_input(BenchmarkId::new("normalize", raw), raw, |b, raw| {
            b.iter(|| us.parse(black_box(raw)))
        });
    }
    g.finish();
}

const CHATS_IDENT: &str = r#"{"channel":"ChatsChannel"}"#;

/// One `update_chat` to the `ChatsChannel` of 1,000 users: the frame built once for all of
/// them (`deliver_to_users`, what the engine does) against once per user (one broadcast to
/// each user's stream, what it did before), queues drained as the writer tasks do.
fn notes(c: &mut Criterion) {
    let mut g = c.benchmark_group("presence_note_to_users");
    let n = 1000;
    let hub = Hub::new();
    let mut rxs = Vec::with_capacity(n);
    let users: Vec<UserId> = (0..n as i64).map(UserId).collect();
    for u in &users {
        let (tx, rx) = outbox::channel(1 << 20);
        let conn = hub.register(*u, tx);
        hub.subscribe(Stream::User(*u), &conn, Arc::from(CHATS_IDENT.to_string()));
        rxs.push(rx);
    }
    // A chat of 50 online members, as a viewer receives it.
    let members: Vec<serde_json::Value> = (0..50)
        .map(|i| serde_json::json!({"uuid": format!("6c1b7f0e-3f5e-4a8a-9a53-{i:012}"), "first_name": "Load", "last_name": format!("User{i}"), "number": "(555) 123-4567", "profile_pic": null}))
        .collect();
    let payload =
        serde_json::json!({"update_chat": {"id": 7, "name": "park", "users": members}}).to_string();
    g.throughput(Throughput::Elements(n as u64));
    let drain = |rxs: &mut [outbox::Receiver<Outbound>]| {
        for rx in rxs.iter_mut() {
            while rx.try_recv().is_ok() {}
        }
    };
    g.bench_function("one_frame_for_all/1000", |b| {
        b.iter(|| {
            hub.deliver_to_users(black_box(&users), black_box(&payload), None);
            drain(&mut rxs);
        })
    });
    g.bench_function("frame_per_user/1000", |b| {
        b.iter(|| {
            for u in &users {
                hub.broadcast(Stream::User(*u), black_box(&payload));
            }
            drain(&mut rxs);
        })
    });
    g.finish();
}

fn profile(id: i64) -> User {
    User {
        id: UserId(id),
        uuid: format!("6c1b7f0e-3f5e-4a8a-9a53-{id:012}"),
        number: format!("+1555{id:07}"),
        first_name: Some("Load".into()),
        last_name: Some(format!("User{id}")),
        picture_key: None,
        device_token: None,
        background_until: None,
    }
}

/// The presence engine's CPU in a join storm: an owner and `m` online mutual contacts; all of
/// them join the owner's chat one after the other (every join tells every viewer). Per join:
/// the state change and the notes it decides, before anything is rendered.
fn join_storm(c: &mut Criterion) {
    let mut g = c.benchmark_group("world_join_storm");
    for m in [100i64, 1000] {
        g.throughput(Throughput::Elements(m as u64));
        g.bench_with_input(BenchmarkId::from_parameter(m), &m, |b, &m| {
            b.iter_batched(
                || {
                    let mut world = World::new(60_000, 20);
                    let owner = UserId(0);
                    // Each admission is for the event right after it (`World::admit`).
                    world.admit(owner, profile(0), (1..=m).map(UserId).collect());
                    world.subscribe_chats(owner);
                    for i in 1..=m {
                        world.admit(UserId(i), profile(i), vec![owner]);
                        world.subscribe_chats(UserId(i));
                    }
                    let (chat, _) = world.create_chat(owner, "park".into()).expect("allowed");
                    (world, chat)
                },
                |(mut world, chat)| {
                    let mut notes = 0;
                    for i in 1..=m {
                        let (_, outs) = world.join(UserId(i), chat).expect("visible");
                        notes += outs
                            .iter()
                            .filter(|o| matches!(o, Out::Send { .. }))
                            .count();
                    }
                    black_box(notes)
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// The database writer's part of a `speak` (src/channels/chat.rs, src/db/mod.rs `run_batch`):
/// in a batch transaction, per message a savepoint, the chat row, the speaker, the insert and
/// the push targets, then the release. A commit every 256 messages, without fsync
/// (`synchronous=OFF`), so the figure is the CPU per message, not the disk's.
fn store_message(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite3");
    db::migrate(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA foreign_keys=ON;")
        .unwrap();
    let speaker = db::users::create(&conn, "+15551230001").unwrap().id;
    let listener = db::users::create(&conn, "+15551230002").unwrap().id;
    let chat = ChatId(1);
    db::chats::create(&conn, chat, speaker, "bench").unwrap();
    db::chats::add_member(&conn, chat, listener).unwrap();
    let body = "see you at the park in ten minutes";
    let mut g = c.benchmark_group("db_writer");
    g.throughput(Throughput::Elements(256));
    g.bench_function("store_message/256_per_commit", |b| {
        b.iter(|| {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            for _ in 0..256 {
                conn.prepare_cached("SAVEPOINT job")
                    .unwrap()
                    .execute([])
                    .unwrap();
                let name = db::chats::by_id(&conn, chat).unwrap().unwrap().name;
                let me = db::users::by_id(&conn, speaker).unwrap().unwrap();
                db::chats::insert_message(&conn, chat, speaker, "text", "sent", body).unwrap();
                let targets = db::chats::background_push_targets(&conn, chat, speaker, 0).unwrap();
                conn.prepare_cached("RELEASE job")
                    .unwrap()
                    .execute([])
                    .unwrap();
                black_box((name, me, targets));
            }
            conn.execute_batch("COMMIT").unwrap();
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    frames,
    fan_out,
    subscribe_churn,
    notes,
    join_storm,
    normalise,
    store_message
);
criterion_main!(benches);
