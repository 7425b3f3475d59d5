//! `/cable`: the websocket endpoint speaking ActionCable's JSON protocol. This module owns the
//! connection (handshake, auth, pings, limits, per-connection send queue); what a subscription
//! or action means is decided in `channels`.

pub mod protocol;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use serde_json::Map;

use self::protocol::{ChannelRef, Command};
use crate::channels::ChannelError;
use crate::http::error::ApiError;
use crate::http::params::{bearer_token, parse_query};
use crate::hub::{ConnHandle, Outbound};
use crate::state::AppState;

/// tungstenite allocates its read buffer per connection up front (128 KiB by default) and
/// zero-fills it on every read. Client frames are a few hundred bytes; a larger one (up to the
/// frame limit) grows the buffer for that frame only. 1 KiB instead of 4 KiB saves 3 KiB of
/// every idle connection (README "Performance").
const READ_BUFFER: usize = 1024;
/// Frames queued for a connection at the same moment (a burst of messages) are fed into
/// tungstenite's write buffer and written with one syscall per this many bytes; a lone frame
/// is still written at once (the writer flushes when its queue is empty).
const WRITE_BUFFER: usize = 8 * 1024;
/// `speak`s of one connection committing at once (then it is not read until one completes).
const MAX_SPEAKS_IN_FLIGHT: usize = 16;

/// A `speak` being committed; it resolves once its message was broadcast (or refused).
type PendingSpeech = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Most frames fed before a flush.
const MAX_COALESCED: usize = 64;

pub async fn upgrade(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Ok(ws) = ws else {
        // Like the original: a plain HTTP request to /cable is not found.
        return ApiError::not_found("/cable speaks the ActionCable websocket protocol only.")
            .into_response();
    };
    let mut query = Map::new();
    parse_query(uri.query(), &mut query);
    let token = bearer_token(&headers, &query);
    let user = match token {
        Some(t) => state.auth.authenticate(&t).await.ok(),
        None => None,
    };
    let frame_limit = state.config.limits.frame_bytes;
    ws.protocols([protocol::SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Frames above the limit are closed with 1009 by us; tungstenite's own cap sits above it
        // so the oversize frame is read (bounded) and answered properly.
        .max_message_size(frame_limit * 2)
        .max_frame_size(frame_limit * 2)
        .on_upgrade(move |socket| async move {
            match user {
                // A task of its own: axum's upgrade task (about 2 KiB of handshake state) ends
                // here instead of living as long as the connection.
                Some(user) => {
                    tokio::spawn(Connection::run(state, socket, user));
                }
                None => refuse(socket).await,
            }
        })
}

/// Invalid, expired or missing token: the upgrade succeeds, then one disconnect frame and close.
async fn refuse(mut socket: WebSocket) {
    let _ = socket
        .send(Message::Text(
            protocol::disconnect("unauthorized", false).into(),
        ))
        .await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: Utf8Bytes::default(),
        })))
        .await;
}

struct Connection {
    state: AppState,
    handle: ConnHandle,
    /// Subscriptions by the exact identifier string the client sent.
    subscriptions: HashMap<Arc<str>, ChannelRef>,
}

impl Connection {
    /// Set the connection up; the returned future is its reader. A plain `fn` so that future
    /// holds the split halves rather than the 368-byte `WebSocket` (the arguments of an
    /// `async fn` stay in its future for its whole life).
    fn run(
        state: AppState,
        socket: WebSocket,
        user: crate::db::users::UserId,
    ) -> impl Future<Output = ()> + Send {
        let (tx, rx) = crate::outbox::channel(state.config.limits.send_queue_bytes);
        let handle = state.hub.register(user, tx);
        let (sink, stream) = socket.split();
        let writer = tokio::spawn(write_loop(
            sink,
            rx,
            handle.clone(),
            Duration::from_secs(state.config.cable.ping_seconds),
        ));
        handle.send(Utf8Bytes::from_static(protocol::WELCOME));
        let conn = Connection {
            state,
            handle,
            subscriptions: HashMap::new(),
        };
        conn.read_loop(stream, writer)
    }

    async fn read_loop(
        mut self,
        mut stream: futures_util::stream::SplitStream<WebSocket>,
        writer: tokio::task::JoinHandle<()>,
    ) {
        let conn = &mut self;
        let frame_limit = conn.state.config.limits.frame_bytes;
        // `speak`s being committed, oldest first. Consecutive speaks of one connection commit
        // together (one group commit instead of one fsync each) and are published in order;
        // any other command waits until they are published, so every frame keeps its order.
        let mut speaking: FuturesOrdered<PendingSpeech> = FuturesOrdered::new();
        // One wait for the whole loop, not one registration with the token per frame.
        let killed = conn.handle.kill.clone().cancelled_owned();
        tokio::pin!(killed);
        loop {
            let next = tokio::select! {
                _ = &mut killed => break,
                Some(()) = speaking.next(), if !speaking.is_empty() => continue,
                m = stream.next(), if speaking.len() < MAX_SPEAKS_IN_FLIGHT => m,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    if text.len() > frame_limit {
                        conn.close_with(1009, "frame too large");
                        break;
                    }
                    let command = match protocol::parse_command(&text) {
                        Ok(c) => c,
                        Err(e) => {
                            log::debug!("ignoring a malformed cable frame: {e}");
                            continue;
                        }
                    };
                    match conn.pending_speech(command) {
                        Ok(speech) => speaking.push_back(speech),
                        Err(command) => {
                            while speaking.next().await.is_some() {}
                            // Boxed: the engine's futures are large, and an idle connection's
                            // task should not carry their state (README "Performance").
                            Box::pin(conn.dispatch(command)).await;
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => log::debug!("ignoring a binary frame"),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {} // ping/pong are answered by tungstenite
                Some(Err(e)) => {
                    if is_capacity_error(&e) {
                        conn.close_with(1009, "frame too large");
                    } else {
                        log::debug!("websocket read error: {e}");
                    }
                    break;
                }
            }
        }
        Box::pin(self.finish(speaking, writer)).await;
    }

    async fn finish(
        mut self,
        mut speaking: FuturesOrdered<PendingSpeech>,
        writer: tokio::task::JoinHandle<()>,
    ) {
        // What was read is committed and published, as if handled one by one.
        while speaking.next().await.is_some() {}
        self.cleanup();
        // Let the writer send what is queued (close frames, disconnect) and finish.
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }

    fn close_with(&self, code: u16, why: &'static str) {
        log::info!(
            "closing connection {} of user {}: {why}",
            self.handle.id,
            self.handle.user.0
        );
        self.handle.close(code);
    }

    /// A `speak` on a subscribed chat becomes a commit to await (`Ok`); anything else is
    /// handed back to be dispatched in order.
    fn pending_speech(&self, command: Command) -> Result<PendingSpeech, Command> {
        let Command::Message { identifier, data } = command else {
            return Err(command);
        };
        let (identifier, chat) = match self.subscriptions.get_key_value(identifier.as_str()) {
            Some((ident, ChannelRef::Chat(chat)))
                if data.get("action").and_then(|a| a.as_str()) == Some("speak") =>
            {
                (ident.clone(), *chat)
            }
            _ => return Err(Command::Message { identifier, data }),
        };
        let engine = self.state.engine.clone();
        let handle = self.handle.clone();
        Ok(Box::pin(async move {
            engine.speak(&handle, identifier, chat, &data).await;
        }))
    }

    async fn dispatch(&mut self, command: Command) {
        let result = match command {
            Command::Subscribe { identifier } => self.subscribe(identifier).await,
            Command::Unsubscribe { identifier } => {
                self.unsubscribe(&identifier);
                Ok(())
            }
            Command::Message { identifier, data } => self.perform(&identifier, data).await,
        };
        if let Err(e) = result {
            log::warn!("cable action failed for user {}: {e}", self.handle.user.0);
            if matches!(e, ChannelError::Db(_)) {
                // A fault of ours, not of the client: let it come back once we recover.
                self.handle.disconnect("server_restart", true);
            }
        }
    }

    /// The engine transmits the snapshot or history and then the confirmation itself, so
    /// nothing of the channel can reach the client before it; a refusal is answered here.
    async fn subscribe(&mut self, identifier: String) -> Result<(), ChannelError> {
        if self.subscriptions.contains_key(identifier.as_str()) {
            log::debug!("ignoring a duplicate subscribe");
            return Ok(());
        }
        if !protocol::names_a_channel(&identifier) {
            log::debug!("ignoring a subscribe with a malformed identifier");
            return Ok(());
        }
        let engine = self.state.engine.clone();
        let ident: Arc<str> = Arc::from(identifier.as_str());
        let outcome = match protocol::parse_identifier(&identifier) {
            Some(ChannelRef::Chats) => engine
                .subscribe_chats(&self.handle, ident.clone())
                .await
                .map(|_| ChannelRef::Chats),
            Some(ChannelRef::Chat(id)) => engine
                .join_chat(&self.handle, ident.clone(), id)
                .await
                .map(|_| ChannelRef::Chat(id)),
            None => Err(ChannelError::NotVisible(0)),
        };
        match outcome {
            Ok(channel) => {
                self.subscriptions.insert(ident, channel);
                Ok(())
            }
            Err(ChannelError::NotVisible(_)) => {
                self.handle.send(protocol::reject(&identifier).into());
                Ok(())
            }
            Err(e) => {
                self.handle.send(protocol::reject(&identifier).into());
                Err(e)
            }
        }
    }

    fn unsubscribe(&mut self, identifier: &str) {
        let Some(channel) = self.subscriptions.remove(identifier) else {
            log::debug!("ignoring unsubscribe for an identifier that is not subscribed");
            return;
        };
        self.leave(identifier, channel);
    }

    fn leave(&self, identifier: &str, channel: ChannelRef) {
        match channel {
            ChannelRef::Chats => self
                .state
                .engine
                .unsubscribe_chats(&self.handle, identifier),
            ChannelRef::Chat(id) => self.state.engine.leave_chat(&self.handle, identifier, id),
        }
    }

    async fn perform(
        &mut self,
        identifier: &str,
        data: serde_json::Value,
    ) -> Result<(), ChannelError> {
        let Some((ident, channel)) = self
            .subscriptions
            .get_key_value(identifier)
            .map(|(i, c)| (i.clone(), *c))
        else {
            log::debug!("ignoring a message for an identifier that is not subscribed");
            return Ok(());
        };
        let action = data.get("action").and_then(|a| a.as_str()).unwrap_or("");
        let engine = self.state.engine.clone();
        match (channel, action) {
            (ChannelRef::Chats, "createChat") => {
                engine.create_chat(&self.handle, identifier, &data);
                Ok(())
            }
            (ChannelRef::Chats, "go_to_background") => engine.go_to_background(&self.handle).await,
            (ChannelRef::Chat(id), "speak") => {
                engine.speak(&self.handle, ident, id, &data).await;
                Ok(())
            }
            (_, other) => {
                log::debug!("ignoring unknown action {other:?}");
                Ok(())
            }
        }
    }

    fn cleanup(&mut self) {
        let subscriptions: Vec<(Arc<str>, ChannelRef)> = self.subscriptions.drain().collect();
        for (identifier, channel) in subscriptions {
            self.leave(&identifier, channel);
        }
        self.state.hub.unregister(self.handle.id);
    }
}

fn is_capacity_error(e: &axum::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("space limit exceeded") || text.contains("too long") || text.contains("capacity")
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: crate::outbox::Receiver<Outbound>,
    handle: ConnHandle,
    ping_every: Duration,
) {
    let kill = handle.kill.clone();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One wait for the whole loop, not one registration with the token per frame.
    let killed = kill.clone().cancelled_owned();
    tokio::pin!(killed);
    'serve: loop {
        tokio::select! {
            biased;
            _ = &mut killed => {
                if let Some(code) = handle.close_code() {
                    let frame = CloseFrame { code, reason: Utf8Bytes::default() };
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(Some(frame)))).await;
                }
                break;
            }
            item = rx.recv() => match item {
                Some(Outbound::Frame(frame)) => {
                    // Feed what is queued already, then flush once: a burst costs one write.
                    let mut pending = Some(frame);
                    let mut then = None;
                    let mut fed = 0;
                    while let Some(f) = pending.take() {
                        if sink.feed(Message::Text(f)).await.is_err() {
                            break 'serve;
                        }
                        fed += 1;
                        if fed < MAX_COALESCED {
                            match rx.try_recv() {
                                Ok(Outbound::Frame(f)) => pending = Some(f),
                                Ok(other) => then = Some(other),
                                Err(_) => {}
                            }
                        }
                    }
                    if sink.flush().await.is_err() {
                        break;
                    }
                    if let Some(Outbound::Disconnect { reason, reconnect }) = then {
                        disconnect(&mut sink, reason, reconnect).await;
                        kill.cancel();
                        return;
                    }
                }
                Some(Outbound::Disconnect { reason, reconnect }) => {
                    disconnect(&mut sink, reason, reconnect).await;
                    kill.cancel();
                    return;
                }
                None => break,
            },
            _ = ping.tick() => {
                let now = crate::db::now_ms() / 1000;
                if sink.send(Message::Text(protocol::ping(now).into())).await.is_err() {
                    break;
                }
            }
        }
    }
    kill.cancel();
}

/// `{"type":"disconnect",…}` then a normal close.
async fn disconnect(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    reason: &'static str,
    reconnect: bool,
) {
    let _ = sink
        .send(Message::Text(
            protocol::disconnect(reason, reconnect).into(),
        ))
        .await;
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: Utf8Bytes::default(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_size<F, A, B, C, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every idle connection holds these two futures; 10,000 connections must fit in 120 MB
    /// (README "Performance"). Engine work is boxed, so it does not count here.
    #[test]
    fn an_idle_connection_s_futures_stay_small() {
        let reader = output_size(Connection::read_loop);
        let writer = {
            fn size4<F, A, B, C, D, R>(_: F) -> usize
            where
                F: FnOnce(A, B, C, D) -> R,
            {
                std::mem::size_of::<R>()
            }
            size4(write_loop)
        };
        assert!(reader <= 1024, "reader future is {reader} bytes");
        assert!(writer <= 1024, "writer future is {writer} bytes");
    }
}
