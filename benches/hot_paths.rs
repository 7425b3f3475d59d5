//! Criterion benches of the pure hot paths: cable frame parse/serialize, hub fan-out, number
//! normalisation. `cargo bench --bench hot_paths`; figures in README "Performance".

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hangin::cable::protocol;
use hangin::config::KeyStyle;
use hangin::db::chats::ChatId;
use hangin::db::users::UserId;
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

criterion_group!(benches, frames, fan_out, normalise);
criterion_main!(benches);
