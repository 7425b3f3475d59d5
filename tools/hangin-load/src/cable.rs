//! A lean ActionCable client: one websocket with 4 KiB buffers, setup steps that wait for
//! their answer frame, and a cheap scan of message frames for the timestamps we put in bodies.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

pub const CHATS: &str = r#"{"channel":"ChatsChannel"}"#;

pub fn chat_identifier(id: i64) -> String {
    format!(r#"{{"channel":"ChatChannel","id":"{id}"}}"#)
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Open `/cable` with the token in the query (as the web client does) and read `welcome`.
/// `source` spreads many connections over several loopback addresses (127.0.0.2, …).
pub async fn connect(ws_url: &str, token: &str, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let url = format!("{ws_url}?access_token={token}");
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "actioncable-v1-json".parse().expect("valid header"),
    );
    let host = request
        .uri()
        .authority()
        .context("no host in the url")?
        .as_str()
        .to_string();
    let addr: SocketAddr = host.parse().context("the load tool targets IP:port only")?;
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    let welcome = next_json(&mut ws).await?;
    if welcome["type"] != "welcome" {
        bail!("expected welcome, got {welcome}");
    }
    Ok(ws)
}

/// The next non-ping JSON frame.
pub async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(SETUP_TIMEOUT, ws.next())
            .await
            .map_err(|_| anyhow!("no frame within {SETUP_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow!("connection closed"))??;
        match msg {
            Message::Text(t) => {
                if is_ping(&t) {
                    continue;
                }
                return Ok(serde_json::from_str(&t)?);
            }
            Message::Close(f) => bail!("closed by the server: {f:?}"),
            _ => {}
        }
    }
}

/// The next text frame that is not a ping, within `timeout` (`Ok(None)` on timeout).
pub async fn next_text(ws: &mut Ws, timeout: Duration) -> anyhow::Result<Option<String>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => bail!("connection closed"),
            Ok(Some(m)) => m?,
        };
        match msg {
            Message::Text(t) if !is_ping(&t) => return Ok(Some(t.to_string())),
            Message::Close(f) => bail!("closed by the server: {f:?}"),
            _ => {}
        }
    }
}

/// A short frame's `"type"` (`confirm_subscription`, `reject_subscription`, `disconnect`, …)
/// without parsing it: long frames (chat lists, history) never carry one.
pub fn frame_type(text: &str) -> Option<&str> {
    if text.len() > 512 {
        return None;
    }
    let at = text.find(r#""type":""#)? + r#""type":""#.len();
    let rest = &text[at..];
    Some(&rest[..rest.find('"')?])
}

/// How an identifier appears inside a server frame (a JSON string, quotes escaped).
pub fn escaped(identifier: &str) -> String {
    let quoted = serde_json::to_string(identifier).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_string()
}

pub fn is_ping(text: &str) -> bool {
    text.starts_with(r#"{"type":"ping""#)
}

/// Read frames until `pick` returns something.
pub async fn until<T>(ws: &mut Ws, mut pick: impl FnMut(&Value) -> Option<T>) -> anyhow::Result<T> {
    loop {
        let v = next_json(ws).await?;
        if let Some(t) = pick(&v) {
            return Ok(t);
        }
    }
}

pub async fn send(ws: &mut Ws, v: &Value) -> anyhow::Result<()> {
    ws.send(Message::Text(v.to_string().into())).await?;
    Ok(())
}

/// Subscribe and wait for the confirmation (an error on rejection).
pub async fn subscribe(ws: &mut Ws, identifier: &str) -> anyhow::Result<()> {
    send(
        ws,
        &json!({"command": "subscribe", "identifier": identifier}),
    )
    .await?;
    let kind = until(ws, |f| {
        (f["identifier"] == identifier && f["type"].is_string())
            .then(|| f["type"].as_str().unwrap_or_default().to_string())
    })
    .await?;
    if kind != "confirm_subscription" {
        bail!("subscription {identifier} answered {kind}");
    }
    Ok(())
}

pub fn perform_frame(identifier: &str, data: Value) -> String {
    json!({"command": "message", "identifier": identifier, "data": data.to_string()}).to_string()
}

/// `createChat` on `ChatsChannel` (already subscribed); the new chat's id from `own_chat`.
pub async fn create_chat(ws: &mut Ws, name: &str) -> anyhow::Result<i64> {
    ws.send(Message::Text(
        perform_frame(CHATS, json!({"action": "createChat", "name": name})).into(),
    ))
    .await?;
    until(ws, |f| {
        let m = &f["message"];
        m.get("own_chat")
            .or_else(|| m.get("ownChat"))
            .and_then(|c| c["id"].as_i64())
    })
    .await
}

/// A `speak` frame whose body carries the send time and a sequence number:
/// `t<ns> s<seq> <padding>`.
pub fn speak_frame(identifier: &str, sent_ns: u64, seq: u64, padding: &str) -> String {
    perform_frame(
        identifier,
        json!({"action": "speak", "body": format!("t{sent_ns} s{seq} {padding}")}),
    )
}

/// From a broadcast message frame, the (send time, sequence) our `speak_frame` put in its body.
/// A scan rather than a JSON parse, so receivers stay cheap at thousands of frames per second.
pub fn stamp_of(frame: &str) -> Option<(u64, u64)> {
    let at = frame.find(r#""body":"t"#)? + r#""body":"t"#.len();
    let rest = &frame[at..];
    let end = rest.find(' ')?;
    let sent: u64 = rest[..end].parse().ok()?;
    let rest = rest[end + 1..].strip_prefix('s')?;
    let end = rest.find(' ')?;
    let seq: u64 = rest[..end].parse().ok()?;
    Some((sent, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_found_without_parsing() {
        let ident = r#"{"channel":"ChatsChannel","hog":"s1k2"}"#;
        let frame = json!({"identifier": ident, "type": "confirm_subscription"}).to_string();
        assert_eq!(frame_type(&frame), Some("confirm_subscription"));
        assert!(frame.contains(&escaped(ident)));
        assert_eq!(
            frame_type(r#"{"identifier":"x","message":{"chats":[]}}"#),
            None
        );
    }

    #[test]
    fn stamps_survive_the_server_frame() {
        let sent = speak_frame(&chat_identifier(3), 123456789, 42, "xx");
        let v: Value = serde_json::from_str(&sent).unwrap();
        let data: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        let body = data["body"].as_str().unwrap();
        // What the server broadcasts (wire.md message object).
        let frame = json!({"identifier": chat_identifier(3), "message": {"message": {
            "user_uuid": "u", "kind": "text", "first_name": "a", "last_name": "b", "body": body}}})
        .to_string();
        assert_eq!(stamp_of(&frame), Some((123456789, 42)));
        assert_eq!(stamp_of(r#"{"type":"ping","message":1}"#), None);
    }
}
