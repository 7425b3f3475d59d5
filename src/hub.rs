//! Pub/sub between channels and websocket connections. Streams are a user's home stream (their
//! `ChatsChannel` subscriptions) and a chat's stream (its `ChatChannel` subscriptions).
//!
//! Fan-out never holds a lock while delivering: each stream's subscriber list is an immutable
//! `Arc<Vec<_>>` replaced on change (copy-on-write), so a broadcast clones one `Arc` under a
//! short read lock and then delivers lock-free. A payload is encoded once; the frame around it
//! (`{"identifier":…,"message":…}`) is built once per distinct identifier and shared by
//! reference count, never copied per subscriber. Delivery is `try_send` into each connection's
//! bounded queue: a connection whose queue is full is too slow and is cut off, so it can never
//! slow down anyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::db::chats::ChatId;
use crate::db::users::UserId;
use crate::outbox::{self, TrySendError};

pub type ConnId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    User(UserId),
    Chat(ChatId),
}

/// What a connection's writer task is asked to do.
#[derive(Debug)]
pub enum Outbound {
    Frame(Utf8Bytes),
    /// A `ChatsChannel` frame about one chat, for the subscription with identifier `sub`.
    ChatFrame {
        frame: Utf8Bytes,
        chat: ChatId,
        note: ChatNote,
        sub: Arc<str>,
    },
    /// Send `{"type":"disconnect",…}` and close.
    Disconnect {
        reason: &'static str,
        reconnect: bool,
    },
}

/// What a `ChatsChannel` frame says about its chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatNote {
    /// `chat`: the viewer newly sees it.
    Added,
    /// `update_chat`: its new state; an unsent older one is moot.
    Updated,
    /// `delete_chat`.
    Removed,
}

impl Outbound {
    /// The text to write, or a disconnect's `(reason, reconnect)`.
    pub fn into_frame(self) -> Result<Utf8Bytes, (&'static str, bool)> {
        match self {
            Outbound::Frame(frame) | Outbound::ChatFrame { frame, .. } => Ok(frame),
            Outbound::Disconnect { reason, reconnect } => Err((reason, reconnect)),
        }
    }
}

impl outbox::Weigh for Outbound {
    /// A frame's bytes count in full in every queue holding it, even though the allocation is
    /// shared: what matters is what one slow reader can pin, and it can pin all of them.
    fn weight(&self) -> usize {
        match self {
            Outbound::Frame(f) | Outbound::ChatFrame { frame: f, .. } => f.len(),
            Outbound::Disconnect { .. } => 0,
        }
    }

    fn may_replace(&self) -> bool {
        matches!(
            self,
            Outbound::ChatFrame {
                note: ChatNote::Updated,
                ..
            }
        )
    }

    /// An unsent `update_chat` of the same chat on the same subscription is superseded; a
    /// `chat` or `delete_chat` of it must stay, and with it everything queued before.
    fn replaces(&self, queued: &Self) -> Option<bool> {
        let (
            Outbound::ChatFrame { chat, sub, .. },
            Outbound::ChatFrame {
                chat: queued_chat,
                sub: queued_sub,
                note,
                ..
            },
        ) = (self, queued)
        else {
            return None;
        };
        let same = chat == queued_chat && (Arc::ptr_eq(sub, queued_sub) || sub == queued_sub);
        same.then_some(*note == ChatNote::Updated)
    }
}

/// A live websocket as the rest of the server sees it.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub id: ConnId,
    pub user: UserId,
    tx: outbox::Sender<Outbound>,
    /// Cancelled when the connection must die at once (too slow, oversized frame).
    pub kill: CancellationToken,
    /// Close code to send when killed (0 = none).
    close_code: Arc<AtomicU16>,
}

impl ConnHandle {
    pub fn new(id: ConnId, user: UserId, tx: outbox::Sender<Outbound>) -> Self {
        ConnHandle {
            id,
            user,
            tx,
            kill: CancellationToken::new(),
            close_code: Arc::new(AtomicU16::new(0)),
        }
    }

    /// End the connection now with a close frame carrying `code`.
    pub fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.kill.cancel();
    }

    /// The close code asked for by [`ConnHandle::close`], if any.
    pub fn close_code(&self) -> Option<u16> {
        Some(self.close_code.load(Ordering::SeqCst)).filter(|c| *c != 0)
    }

    /// Queue a frame; a queue over its byte budget (`[limits] send_queue_bytes`) means the
    /// client does not keep up: close that connection alone with 1013.
    pub fn send(&self, frame: Utf8Bytes) {
        self.queue(Outbound::Frame(frame))
    }

    fn queue(&self, item: Outbound) {
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                crate::metrics::fanout_dropped(true);
                if !self.kill.is_cancelled() {
                    crate::metrics::slow_client_disconnected();
                    log::warn!(
                        "connection {} of user {} is too slow; disconnecting it",
                        self.id,
                        self.user.0
                    );
                    self.close(1013); // "try again later"
                }
            }
            Err(TrySendError::Closed(_)) => crate::metrics::fanout_dropped(false),
        }
    }

    pub fn disconnect(&self, reason: &'static str, reconnect: bool) {
        if self
            .tx
            .try_send(Outbound::Disconnect { reason, reconnect })
            .is_err()
        {
            self.kill.cancel();
        }
    }
}

/// `{"identifier":"<id>","message":<payload>}` with the identifier echoed verbatim.
pub fn channel_frame(identifier: &str, payload: &str) -> String {
    let ident = serde_json::to_string(identifier).expect("strings serialize");
    let mut out = String::with_capacity(ident.len() + payload.len() + 26);
    out.push_str("{\"identifier\":");
    out.push_str(&ident);
    out.push_str(",\"message\":");
    out.push_str(payload);
    out.push('}');
    out
}

/// The frames of one payload, built once per distinct identifier and shared by reference
/// count. Most subscriptions share one identifier, so the last one is checked first; the map
/// keeps many distinct identifiers (one client may choose a hundred) from costing a scan each.
struct FrameCache<'a> {
    payload: &'a str,
    last: Option<(Arc<str>, Utf8Bytes)>,
    built: HashMap<Arc<str>, Utf8Bytes>,
}

impl<'a> FrameCache<'a> {
    fn new(payload: &'a str) -> Self {
        FrameCache {
            payload,
            last: None,
            built: HashMap::new(),
        }
    }

    fn frame(&mut self, identifier: &Arc<str>) -> Utf8Bytes {
        if let Some((id, frame)) = &self.last {
            if Arc::ptr_eq(id, identifier) || **id == **identifier {
                return frame.clone();
            }
        }
        let payload = self.payload;
        let build = || Utf8Bytes::from(channel_frame(identifier, payload));
        // The map is only allocated once a second identifier shows up (a plain fan-out never
        // needs it).
        let frame = match self.last.take() {
            None => build(),
            Some((id, frame)) => {
                self.built.entry(id).or_insert(frame);
                self.built
                    .entry(identifier.clone())
                    .or_insert_with(build)
                    .clone()
            }
        };
        self.last = Some((identifier.clone(), frame.clone()));
        frame
    }
}

#[derive(Clone)]
struct Subscriber {
    conn: ConnHandle,
    identifier: Arc<str>,
}

#[derive(Default)]
pub struct Hub {
    streams: RwLock<HashMap<Stream, Arc<Vec<Subscriber>>>>,
    conns: RwLock<HashMap<ConnId, ConnHandle>>,
    next_id: AtomicU64,
    /// Deliveries made (frames queued), for the load tool and tests.
    pub deliveries: AtomicU64,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&self, user: UserId, tx: outbox::Sender<Outbound>) -> ConnHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = ConnHandle::new(id, user, tx);
        self.conns.write().insert(id, handle.clone());
        handle
    }

    pub fn unregister(&self, id: ConnId) {
        self.conns.write().remove(&id);
    }

    pub fn connection_count(&self) -> usize {
        self.conns.read().len()
    }

    /// Subscriber lists are shared with broadcasts in flight (`Arc`); a change is made in
    /// place unless a broadcast holds the list right then (`Arc::make_mut` copies only then).
    /// Copying on every change made a join storm quadratic: the 10,000th join of one chat
    /// copied 10,000 subscribers (`hub_subscribe_churn` bench: 10.3 s for 10,000 joins and
    /// leaves before).
    pub fn subscribe(&self, stream: Stream, conn: &ConnHandle, identifier: Arc<str>) {
        let mut streams = self.streams.write();
        Arc::make_mut(streams.entry(stream).or_default()).push(Subscriber {
            conn: conn.clone(),
            identifier,
        });
    }

    pub fn unsubscribe(&self, stream: Stream, conn: ConnId, identifier: &str) {
        let mut streams = self.streams.write();
        if let Some(entry) = streams.get_mut(&stream) {
            let list = Arc::make_mut(entry);
            list.retain(|s| !(s.conn.id == conn && &*s.identifier == identifier));
            if list.is_empty() {
                streams.remove(&stream);
            }
        }
    }

    /// Publish `payload` (an encoded channel message) to every subscription of `stream`.
    pub fn broadcast(&self, stream: Stream, payload: &str) {
        self.deliver_local(stream, payload);
    }

    /// Publish to every subscription of `stream` but one (`own_chat` goes to the creating
    /// subscription, `chat` to the creator's others).
    pub fn broadcast_except(&self, stream: Stream, payload: &str, conn: ConnId, identifier: &str) {
        self.deliver(stream, payload, Some((conn, identifier)));
    }

    /// Deliver to this server's subscribers only.
    pub fn deliver_local(&self, stream: Stream, payload: &str) {
        self.deliver(stream, payload, None);
    }

    fn deliver(&self, stream: Stream, payload: &str, except: Option<(ConnId, &str)>) {
        let subscribers = match self.streams.read().get(&stream) {
            Some(list) => list.clone(),
            None => return,
        };
        let mut frames = FrameCache::new(payload);
        let mut delivered = 0;
        for sub in subscribers.iter() {
            if except.is_some_and(|(conn, id)| sub.conn.id == conn && &*sub.identifier == id) {
                continue;
            }
            sub.conn.send(frames.frame(&sub.identifier));
            delivered += 1;
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }

    /// Publish one `ChatsChannel` payload to the home streams of `users` (one engine note).
    /// The frame for each distinct identifier is built once for all of them: a change seen by
    /// a thousand viewers costs one frame, not a thousand copies of a chat with a thousand
    /// members. A frame `about` a chat may replace the same subscription's unsent older state.
    pub fn deliver_to_users(
        &self,
        users: &[UserId],
        payload: &str,
        about: Option<(ChatId, ChatNote)>,
    ) {
        let lists: Vec<Arc<Vec<Subscriber>>> = {
            let streams = self.streams.read();
            users
                .iter()
                .filter_map(|u| streams.get(&Stream::User(*u)).cloned())
                .collect()
        };
        let mut frames = FrameCache::new(payload);
        let mut delivered = 0;
        for sub in lists.iter().flat_map(|list| list.iter()) {
            let frame = frames.frame(&sub.identifier);
            match about {
                Some((chat, note)) => sub.conn.queue(Outbound::ChatFrame {
                    frame,
                    chat,
                    note,
                    sub: sub.identifier.clone(),
                }),
                None => sub.conn.send(frame),
            }
            delivered += 1;
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }

    /// Open connections of `user` (the admin commands wait for them to be gone).
    pub fn user_connection_count(&self, user: UserId) -> usize {
        self.conns
            .read()
            .values()
            .filter(|c| c.user == user)
            .count()
    }

    /// Send a disconnect frame to every connection of `user`.
    pub fn disconnect_user(&self, user: UserId, reason: &'static str, reconnect: bool) {
        for conn in self.conns.read().values().filter(|c| c.user == user) {
            conn.disconnect(reason, reconnect);
        }
    }

    pub fn disconnect_all(&self, reason: &'static str, reconnect: bool) {
        for conn in self.conns.read().values() {
            conn.disconnect(reason, reconnect);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fan_out_shares_one_frame_per_identifier() {
        let hub = Hub::new();
        let (tx1, mut rx1) = outbox::channel(4096);
        let (tx2, mut rx2) = outbox::channel(4096);
        let a = hub.register(UserId(1), tx1);
        let b = hub.register(UserId(2), tx2);
        let ident: Arc<str> = Arc::from(r#"{"channel":"ChatChannel", "id":"6"}"#);
        hub.subscribe(Stream::Chat(ChatId(6)), &a, ident.clone());
        hub.subscribe(Stream::Chat(ChatId(6)), &b, Arc::from(ident.to_string()));
        hub.broadcast(Stream::Chat(ChatId(6)), r#"{"message":{"body":"hi"}}"#);
        let (Some(Outbound::Frame(f1)), Some(Outbound::Frame(f2))) =
            (rx1.recv().await, rx2.recv().await)
        else {
            panic!("no frames")
        };
        assert_eq!(
            f1.as_str(),
            r#"{"identifier":"{\"channel\":\"ChatChannel\", \"id\":\"6\"}","message":{"message":{"body":"hi"}}}"#
        );
        // The same allocation reaches both subscribers.
        assert_eq!(f1.as_str().as_ptr(), f2.as_str().as_ptr());
    }

    #[test]
    fn each_distinct_identifier_is_framed_once() {
        let mut frames = FrameCache::new("1");
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let first_a = frames.frame(&a);
        let first_b = frames.frame(&b);
        let again_a = frames.frame(&Arc::from("a"));
        assert_eq!(first_a.as_str(), r#"{"identifier":"a","message":1}"#);
        assert_eq!(first_b.as_str(), r#"{"identifier":"b","message":1}"#);
        assert_eq!(first_a.as_str().as_ptr(), again_a.as_str().as_ptr());
        assert_eq!(
            first_b.as_str().as_ptr(),
            frames.frame(&b).as_str().as_ptr()
        );
    }

    #[tokio::test]
    async fn a_note_to_many_users_is_one_frame_and_an_unsent_update_gives_way() {
        let hub = Hub::new();
        let ident: Arc<str> = Arc::from(r#"{"channel":"ChatsChannel"}"#);
        let mut queues = Vec::new();
        for user in 1..=3 {
            let (tx, rx) = outbox::channel(1 << 20);
            let conn = hub.register(UserId(user), tx);
            hub.subscribe(Stream::User(UserId(user)), &conn, Arc::from(&*ident));
            queues.push(rx);
        }
        let users = [UserId(1), UserId(2), UserId(3)];
        let chat = ChatId(6);
        hub.deliver_to_users(&users, r#"{"chat":1}"#, Some((chat, ChatNote::Added)));
        for version in 2..=4 {
            let update = format!(r#"{{"update_chat":{version}}}"#);
            hub.deliver_to_users(&users, &update, Some((chat, ChatNote::Updated)));
        }
        let mut firsts = Vec::new();
        for rx in &mut queues {
            // `chat` stays; the three updates are one, the newest.
            let frames: Vec<Utf8Bytes> = std::iter::from_fn(|| rx.try_recv().ok())
                .map(|item| item.into_frame().unwrap())
                .collect();
            assert_eq!(frames.len(), 2, "{frames:?}");
            assert!(frames[0].as_str().contains(r#"{"chat":1}"#));
            assert!(frames[1].as_str().contains(r#"{"update_chat":4}"#));
            firsts.push(frames[0].as_str().as_ptr());
        }
        // One allocation for all three users.
        assert!(firsts.windows(2).all(|w| w[0] == w[1]));
    }

    #[tokio::test]
    async fn a_queue_over_its_byte_budget_cuts_off_only_that_connection() {
        let hub = Hub::new();
        // Room for a few small frames, not for two big ones.
        let (slow_tx, _slow_rx) = outbox::channel(4000);
        let (fast_tx, mut fast_rx) = outbox::channel(1 << 20);
        let slow = hub.register(UserId(1), slow_tx);
        let fast = hub.register(UserId(2), fast_tx);
        for c in [&slow, &fast] {
            hub.subscribe(Stream::User(UserId(9)), c, Arc::from("{}"));
        }
        for _ in 0..20 {
            hub.broadcast(Stream::User(UserId(9)), "1");
        }
        assert!(
            !slow.kill.is_cancelled(),
            "20 small frames fit in 4000 bytes"
        );
        let big = format!("\"{}\"", "x".repeat(3000));
        hub.broadcast(Stream::User(UserId(9)), &big);
        assert!(slow.kill.is_cancelled());
        assert_eq!(slow.close_code(), Some(1013));
        assert!(!fast.kill.is_cancelled());
        for _ in 0..21 {
            assert!(matches!(fast_rx.recv().await, Some(Outbound::Frame(_))));
        }
    }
}
