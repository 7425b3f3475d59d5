//! Fan-out must not copy the payload per subscriber: one broadcast to 1,000 subscriptions
//! allocates one frame (plus a constant), whatever the number of subscribers. Counted with a
//! global allocator in this test binary (one test, so no other thread allocates meanwhile).

// A global allocator is `unsafe` by its nature; it only forwards to the system one.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hangin::db::chats::ChatId;
use hangin::db::users::UserId;
use hangin::hub::{Hub, Outbound, Stream};
use hangin::outbox;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn one_broadcast_allocates_one_frame_not_one_per_subscriber() {
    const N: usize = 1000;
    let ident = r#"{"channel":"ChatChannel","id":"42"}"#;
    let hub = Hub::new();
    let mut rxs = Vec::with_capacity(N);
    for i in 0..N {
        let (tx, rx) = outbox::channel(1 << 20);
        let conn = hub.register(UserId(i as i64), tx);
        // Each connection has its own copy of the identifier, as real subscriptions do.
        hub.subscribe(
            Stream::Chat(ChatId(42)),
            &conn,
            Arc::from(ident.to_string()),
        );
        rxs.push(rx);
    }
    let payload = format!(r#"{{"message":{{"body":"{}"}}}}"#, "x".repeat(2000));
    // A first broadcast gives every queue its (small) slot storage, kept while short.
    hub.broadcast(Stream::Chat(ChatId(42)), &payload);
    for rx in rxs.iter_mut() {
        assert!(rx.try_recv().is_ok());
    }

    let (a0, b0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    hub.broadcast(Stream::Chat(ChatId(42)), &payload);
    let (allocs, bytes) = (
        ALLOCS.load(Ordering::SeqCst) - a0,
        BYTES.load(Ordering::SeqCst) - b0,
    );

    for rx in rxs.iter_mut() {
        match rx.try_recv() {
            Ok(Outbound::Frame(f)) => assert!(f.as_str().ends_with("\"}}}")),
            other => panic!("subscriber got {other:?}"),
        }
    }
    // A per-subscriber copy would be ≥ 2 MB and ≥ 1000 allocations.
    assert!(allocs <= 8, "{allocs} allocations for one broadcast to {N}");
    assert!(
        bytes <= 3 * payload.len(),
        "{bytes} bytes allocated for one broadcast of {} bytes to {N}",
        payload.len()
    );
}
