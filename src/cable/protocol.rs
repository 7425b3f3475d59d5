//! The ActionCable JSON protocol (wire.md "Cable"): frames we send, commands we accept.

use serde::Deserialize;
use serde_json::Value;

use crate::db::chats::ChatId;

pub const SUBPROTOCOL: &str = "actioncable-v1-json";

pub const WELCOME: &str = r#"{"type":"welcome"}"#;

pub fn ping(unix_seconds: i64) -> String {
    format!(r#"{{"type":"ping","message":{unix_seconds}}}"#)
}

pub fn disconnect(reason: &str, reconnect: bool) -> String {
    format!(r#"{{"type":"disconnect","reason":"{reason}","reconnect":{reconnect}}}"#)
}

fn typed(identifier: &str, kind: &str) -> String {
    let ident = serde_json::to_string(identifier).expect("strings serialize");
    format!(r#"{{"identifier":{ident},"type":"{kind}"}}"#)
}

pub fn confirm(identifier: &str) -> String {
    typed(identifier, "confirm_subscription")
}

pub fn reject(identifier: &str) -> String {
    typed(identifier, "reject_subscription")
}

/// A client command as sent: the identifier is kept as the exact string for echoing.
#[derive(Debug, PartialEq)]
pub enum Command {
    Subscribe { identifier: String },
    Unsubscribe { identifier: String },
    Message { identifier: String, data: Value },
}

/// Why a frame was ignored (logged, never answered).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BadFrame {
    #[error("frame is not a JSON object")]
    NotAnObject,
    #[error("unrecognized command {0:?}")]
    UnknownCommand(String),
    #[error("identifier missing or not a string")]
    NoIdentifier,
    #[error("data missing or not a JSON string holding an object")]
    BadData,
}

#[derive(Deserialize)]
struct RawCommand {
    command: Option<Value>,
    identifier: Option<Value>,
    data: Option<Value>,
}

pub fn parse_command(text: &str) -> Result<Command, BadFrame> {
    let raw: RawCommand = match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => serde_json::from_value(v).map_err(|_| BadFrame::NotAnObject)?,
        _ => return Err(BadFrame::NotAnObject),
    };
    let command = match raw.command {
        Some(Value::String(c)) => c,
        other => {
            return Err(BadFrame::UnknownCommand(
                other.map(|v| v.to_string()).unwrap_or_default(),
            ))
        }
    };
    let identifier = match raw.identifier {
        Some(Value::String(s)) => s,
        _ => return Err(BadFrame::NoIdentifier),
    };
    match command.as_str() {
        "subscribe" => Ok(Command::Subscribe { identifier }),
        "unsubscribe" => Ok(Command::Unsubscribe { identifier }),
        "message" => {
            let data = match raw.data {
                Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => return Err(BadFrame::BadData),
                },
                _ => return Err(BadFrame::BadData),
            };
            Ok(Command::Message { identifier, data })
        }
        other => Err(BadFrame::UnknownCommand(other.to_string())),
    }
}

/// The channel an identifier names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChannelRef {
    Chats,
    Chat(ChatId),
}

/// `None` for an identifier that is not JSON, names no known channel, or has a bad chat id.
pub fn parse_identifier(identifier: &str) -> Option<ChannelRef> {
    let v: Value = serde_json::from_str(identifier).ok()?;
    match v.get("channel")?.as_str()? {
        "ChatsChannel" => Some(ChannelRef::Chats),
        "ChatChannel" => {
            let id = match v.get("id")? {
                Value::Number(n) => n.as_i64()?,
                Value::String(s) => s.trim().parse::<i64>().ok()?,
                _ => return None,
            };
            (id > 0).then_some(ChannelRef::Chat(ChatId(id)))
        }
        _ => None,
    }
}

/// Is the identifier at least JSON naming some channel (else the frame is malformed)?
pub fn names_a_channel(identifier: &str) -> bool {
    serde_json::from_str::<Value>(identifier)
        .ok()
        .is_some_and(|v| v.get("channel").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_byte_exact() {
        assert_eq!(ping(1732748324), r#"{"type":"ping","message":1732748324}"#);
        assert_eq!(
            disconnect("unauthorized", false),
            r#"{"type":"disconnect","reason":"unauthorized","reconnect":false}"#
        );
        assert_eq!(
            confirm(r#"{"channel":"ChatChannel", "id":"6"}"#),
            r#"{"identifier":"{\"channel\":\"ChatChannel\", \"id\":\"6\"}","type":"confirm_subscription"}"#
        );
    }

    #[test]
    fn commands_parse_or_are_refused() {
        assert_eq!(
            parse_command(
                r#"{"command":"message","identifier":"{}","data":"{\"action\":\"speak\"}"}"#
            )
            .unwrap(),
            Command::Message {
                identifier: "{}".into(),
                data: serde_json::json!({"action":"speak"})
            }
        );
        assert_eq!(parse_command("not json"), Err(BadFrame::NotAnObject));
        assert_eq!(parse_command("[]"), Err(BadFrame::NotAnObject));
        assert!(matches!(
            parse_command("{}"),
            Err(BadFrame::UnknownCommand(_))
        ));
        assert_eq!(
            parse_command(r#"{"command":"message","identifier":"{}","data":"{}x"}"#),
            Err(BadFrame::BadData)
        );
    }

    #[test]
    fn identifiers() {
        assert_eq!(
            parse_identifier(r#"{"channel":"ChatsChannel"}"#),
            Some(ChannelRef::Chats)
        );
        assert_eq!(
            parse_identifier(r#"{"channel":"ChatChannel", "id":"6"}"#),
            Some(ChannelRef::Chat(ChatId(6)))
        );
        assert_eq!(
            parse_identifier(r#"{"channel":"ChatChannel","id":6}"#),
            Some(ChannelRef::Chat(ChatId(6)))
        );
        assert_eq!(
            parse_identifier(r#"{"channel":"ChatChannel","id":""}"#),
            None
        );
        assert_eq!(parse_identifier(r#"{"channel":"Nope"}"#), None);
        assert_eq!(parse_identifier("not json"), None);
    }
}
