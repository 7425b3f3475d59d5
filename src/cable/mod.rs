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
use futures_util::stream::{FuturesOrdered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Map;
use tokio_util::sync::CancellationToken;

use self::protocol::{Action, ChannelRef, Command};
use crate::auth::TokenProblem;
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
/// How long closing a socket may take: sending our Close and reading the client's answering
/// Close (docs/websocket.md "Closing"). A client that does not answer is cut off after this.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

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
        Some(t) => state.auth.authenticate(&t).await,
        None => Err(TokenProblem::Invalid),
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
                Ok(user) => {
                    tokio::spawn(Connection::run(state, socket, user));
                }
                // The token could not be checked (database fault): not the client's fault, so
                // it must come back rather than give up for good. ActionCable has no reason for
                // a server fault; `server_restart` (as after a failed subscribe) is the one
                // clients already come back on.
                Err(TokenProblem::Unavailable) => refuse(socket, "server_restart", true).await,
                Err(_) => refuse(socket, "unauthorized", false).await,
            }
        })
}

/// No connection for this upgrade: the upgrade succeeds, then one disconnect frame and close.
async fn refuse(socket: WebSocket, reason: &'static str, reconnect: bool) {
    let (mut sink, stream) = socket.split();
    if send_close(
        &mut sink,
        Closing::Send(disconnect_frames(reason, reconnect)),
    )
    .await
    {
        await_close(sink, stream).await;
    }
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
        let pings = Pings {
            clock: state.db.clock().clone(),
            every: state.config.cable.ping,
        };
        let writer = tokio::spawn(write_loop(sink, rx, handle.kill.clone(), pings));
        handle.send(Utf8Bytes::from_static(protocol::WELCOME));
        let conn = Connection {
            state,
            handle,
            subscriptions: HashMap::new(),
        };
        conn.read_loop(stream, writer)
    }

    async fn read_loop(mut self, mut stream: Stream, writer: tokio::task::JoinHandle<WriterDone>) {
        let conn = &mut self;
        let frame_limit = conn.state.config.limits.frame_bytes;
        // `speak`s being committed, oldest first. Consecutive speaks of one connection commit
        // together (one group commit instead of one fsync each) and are published in order;
        // any other command waits until they are published, so every frame keeps its order.
        let mut speaking: FuturesOrdered<PendingSpeech> = FuturesOrdered::new();
        // One wait for the whole loop, not one registration with the token per frame.
        let killed = conn.handle.kill.clone().cancelled_owned();
        tokio::pin!(killed);
        let end = loop {
            let next = tokio::select! {
                _ = &mut killed => break ReaderEnd::Stopped,
                Some(()) = speaking.next(), if !speaking.is_empty() => continue,
                m = stream.next(), if speaking.len() < MAX_SPEAKS_IN_FLIGHT => m,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    if text.len() > frame_limit {
                        conn.close_with(1009, "frame too large");
                        break ReaderEnd::Stopped;
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
                Some(Ok(Message::Binary(binary))) => {
                    // Like the original, binary frames mean nothing; oversized ones are refused
                    // like oversized text.
                    if binary.len() > frame_limit {
                        conn.close_with(1009, "frame too large");
                        break ReaderEnd::Stopped;
                    }
                    log::debug!("ignoring a binary frame");
                }
                Some(Ok(Message::Close(_))) => break ReaderEnd::PeerClosed,
                None => break ReaderEnd::Gone,
                Some(Ok(_)) => {} // ping/pong are answered by tungstenite
                Some(Err(e)) => match read_error_close_code(&e) {
                    Some((code, why)) => {
                        log::debug!("websocket read error: {e}");
                        conn.close_with(code, why);
                        break ReaderEnd::Stopped;
                    }
                    None => {
                        log::debug!("websocket read error: {e}");
                        break ReaderEnd::Gone;
                    }
                },
            }
        };
        Box::pin(self.finish(stream, speaking, writer, end)).await;
    }

    /// The connection has ended: close the socket, then commit what was read and leave every
    /// channel.
    async fn finish(
        self,
        stream: Stream,
        mut speaking: FuturesOrdered<PendingSpeech>,
        mut writer: tokio::task::JoinHandle<WriterDone>,
        end: ReaderEnd,
    ) {
        // The writer stops at once and hands its half of the socket back.
        self.handle.kill.cancel();
        let written = match tokio::time::timeout(CLOSE_WAIT, &mut writer).await {
            Ok(Ok(done)) => Some(done),
            _ => {
                writer.abort();
                None
            }
        };
        if let Some((mut sink, writer_end)) = written {
            let closing = match (writer_end, self.handle.close_code(), end) {
                (WriterEnd::Disconnect { reason, reconnect }, _, _) => {
                    Closing::Send(disconnect_frames(reason, reconnect))
                }
                (WriterEnd::Broken, _, _) => Closing::Drop,
                (WriterEnd::Stopped, Some(code), _) => Closing::Send(vec![close_frame(code)]),
                (WriterEnd::Stopped, None, ReaderEnd::PeerClosed) => Closing::Reply,
                (WriterEnd::Stopped, None, ReaderEnd::Gone) => Closing::Drop,
                (WriterEnd::Stopped, None, ReaderEnd::Stopped) => {
                    Closing::Send(vec![close_frame(1000)])
                }
            };
            // Our frames go out before the connection counts as gone (a graceful shutdown
            // waits for that), the wait for the client's answer does not hold anything up.
            if send_close(&mut sink, closing).await {
                tokio::spawn(await_close(sink, stream));
            } else {
                drop((sink, stream));
            }
        } else {
            drop(stream);
        }
        // What was read is committed and published, as if handled one by one.
        while speaking.next().await.is_some() {}
        // `self` drops here, and with it the subscriptions and the registration (`Drop`).
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
        let Command::Message {
            identifier,
            action: Action::Speak,
            data,
        } = command
        else {
            return Err(command);
        };
        let (identifier, chat) = match self.subscriptions.get_key_value(identifier.as_str()) {
            Some((ident, ChannelRef::Chat(chat))) => (ident.clone(), *chat),
            _ => {
                return Err(Command::Message {
                    identifier,
                    action: Action::Speak,
                    data,
                })
            }
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
            Command::Message {
                identifier,
                action,
                data,
            } => self.perform(&identifier, action, data).await,
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
        if self.subscriptions.len() >= self.state.config.limits.subscriptions_per_connection {
            log::debug!("refusing a subscribe beyond [limits] subscriptions_per_connection");
            self.handle.send(protocol::reject(&identifier).into());
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
        action: Action,
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
        let engine = self.state.engine.clone();
        match (channel, action) {
            (ChannelRef::Chats, Action::CreateChat) => {
                engine.create_chat(&self.handle, identifier, &data);
                Ok(())
            }
            (ChannelRef::Chats, Action::GoToBackground) => {
                engine.go_to_background(&self.handle).await
            }
            (ChannelRef::Chat(id), Action::Speak) => {
                engine.speak(&self.handle, ident, id, &data).await;
                Ok(())
            }
            (_, other) => {
                log::debug!("ignoring unknown action {:?}", other.name());
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

/// Subscriptions and the hub registration end with the connection however its task ends: a
/// normal close, an error path, or the task being dropped at shutdown.
impl Drop for Connection {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Why the reader stopped.
#[derive(Debug, Clone, Copy)]
enum ReaderEnd {
    /// The client sent Close.
    PeerClosed,
    /// The stream ended or broke (EOF without Close, I/O error): nobody to talk to.
    Gone,
    /// Killed, or failed with a close code set on the handle.
    Stopped,
}

/// Why the writer stopped.
#[derive(Debug)]
enum WriterEnd {
    /// Killed, or every sender is gone.
    Stopped,
    /// Writing failed: the socket is broken.
    Broken,
    /// Asked to send `{"type":"disconnect",…}` and close.
    Disconnect {
        reason: &'static str,
        reconnect: bool,
    },
}

type WriterDone = (Sink, WriterEnd);

/// How a socket is closed (docs/websocket.md "Closing").
enum Closing {
    /// The client sent Close: flush the echo tungstenite queued, then close TCP at once.
    Reply,
    /// We end the connection: send these frames (the last one a Close), then read until the
    /// client answers with its Close, then close TCP. Closing with unread input would make the
    /// kernel reset the connection, which can discard our Close before the client reads it.
    Send(Vec<Message>),
    /// The connection is broken already: just close TCP.
    Drop,
}

/// Send what closing takes, within `CLOSE_WAIT`; whether the client's answering Close is still
/// to be read (`await_close`).
async fn send_close(sink: &mut Sink, closing: Closing) -> bool {
    let sent = async {
        match closing {
            Closing::Reply => {
                let _ = sink.close().await;
                false
            }
            Closing::Send(frames) => {
                for frame in frames {
                    if sink.send(frame).await.is_err() {
                        // The client closed meanwhile: answer its Close instead.
                        let _ = sink.close().await;
                        return false;
                    }
                }
                true
            }
            Closing::Drop => false,
        }
    };
    tokio::time::timeout(CLOSE_WAIT, sent)
        .await
        .unwrap_or(false)
}

/// Read until the client answers our Close (at most `CLOSE_WAIT`), then close TCP.
async fn await_close(sink: Sink, mut stream: Stream) {
    let answered = async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, answered).await;
    // Dropping both halves closes the TCP connection.
    drop(sink);
}

fn close_frame(code: u16) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::default(),
    }))
}

/// `{"type":"disconnect",…}` then a normal close.
fn disconnect_frames(reason: &str, reconnect: bool) -> Vec<Message> {
    vec![
        Message::Text(protocol::disconnect(reason, reconnect).into()),
        close_frame(1000),
    ]
}

/// The close code for a failed read (RFC 6455 §7.4.1), or `None` when the connection is simply
/// gone and there is nobody to tell.
fn read_error_close_code(e: &axum::Error) -> Option<(u16, &'static str)> {
    use std::error::Error as _;
    use tungstenite::error::ProtocolError;
    let inner = e.source()?.downcast_ref::<tungstenite::Error>()?;
    match inner {
        tungstenite::Error::Capacity(_) => Some((1009, "frame too large")),
        tungstenite::Error::Utf8(_) => Some((1007, "invalid UTF-8 in a text frame")),
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(_) => Some((1002, "websocket protocol error")),
        _ => None,
    }
}

/// The ping frames' period, and the clock that times them and stamps them.
struct Pings {
    clock: crate::clock::Clock,
    every: Duration,
}

async fn write_loop(
    mut sink: Sink,
    mut rx: crate::outbox::Receiver<Outbound>,
    kill: CancellationToken,
    pings: Pings,
) -> WriterDone {
    // Killing also interrupts a write stuck on a client that does not read.
    let end = tokio::select! {
        biased;
        _ = kill.cancelled() => WriterEnd::Stopped,
        end = serve(&mut sink, &mut rx, pings) => end,
    };
    // The reader stops too and closes the socket with this half (`Connection::finish`).
    kill.cancel();
    (sink, end)
}

async fn serve(
    sink: &mut Sink,
    rx: &mut crate::outbox::Receiver<Outbound>,
    pings: Pings,
) -> WriterEnd {
    let mut ping = pings.clock.ticker(pings.every);
    loop {
        tokio::select! {
            item = rx.recv() => match item.map(Outbound::into_frame) {
                Some(Ok(frame)) => {
                    // Feed what is queued already, then flush once: a burst costs one write.
                    let mut pending = Some(frame);
                    let mut then = None;
                    let mut fed = 0;
                    while let Some(f) = pending.take() {
                        if sink.feed(Message::Text(f)).await.is_err() {
                            return WriterEnd::Broken;
                        }
                        fed += 1;
                        if fed < MAX_COALESCED {
                            match rx.try_recv().map(Outbound::into_frame) {
                                Ok(Ok(f)) => pending = Some(f),
                                Ok(Err(disconnect)) => then = Some(disconnect),
                                Err(_) => {}
                            }
                        }
                    }
                    if sink.flush().await.is_err() {
                        return WriterEnd::Broken;
                    }
                    if let Some((reason, reconnect)) = then {
                        return WriterEnd::Disconnect { reason, reconnect };
                    }
                }
                Some(Err((reason, reconnect))) => {
                    return WriterEnd::Disconnect { reason, reconnect };
                }
                None => return WriterEnd::Stopped,
            },
            _ = ping.tick() => {
                let now = pings.clock.now_ms() / 1000;
                if sink.send(Message::Text(protocol::ping(now).into())).await.is_err() {
                    return WriterEnd::Broken;
                }
            }
        }
    }
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

    /// What tungstenite reports for each violation (reached through axum's error) becomes the
    /// RFC 6455 §7.4.1 close code; a connection that is simply gone gets none.
    #[test]
    fn read_errors_map_to_close_codes() {
        use tungstenite::error::{CapacityError, ProtocolError};
        let code = |e: tungstenite::Error| read_error_close_code(&axum::Error::new(e)).map(|c| c.0);
        assert_eq!(code(tungstenite::Error::Utf8("bad".into())), Some(1007));
        assert_eq!(
            code(tungstenite::Error::Capacity(
                CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1
                }
            )),
            Some(1009)
        );
        for p in [
            ProtocolError::UnmaskedFrameFromClient,
            ProtocolError::NonZeroReservedBits,
            ProtocolError::UnknownDataFrameType(3),
            ProtocolError::UnknownControlFrameType(11),
            ProtocolError::ControlFrameTooBig,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::UnexpectedContinueFrame,
            ProtocolError::InvalidCloseSequence,
        ] {
            assert_eq!(
                code(tungstenite::Error::Protocol(p.clone())),
                Some(1002),
                "{p}"
            );
        }
        assert_eq!(
            code(tungstenite::Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            None
        );
        assert_eq!(code(tungstenite::Error::ConnectionClosed), None);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(code(tungstenite::Error::Io(reset)), None);
    }
}
