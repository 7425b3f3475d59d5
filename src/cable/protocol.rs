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
    Subscribe {
        identifier: String,
    },
    Unsubscribe {
        identifier: String,
    },
    /// `data` stays whole: the channel validates the fields of its action (`speak`'s body,
    /// kind and status answer with their own `error` payloads).
    Message {
        identifier: String,
        action: Action,
        data: Value,
    },
}

/// The `action` of a `message` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `ChatChannel`: send a message.
    Speak,
    /// `ChatsChannel`: start a chat.
    CreateChat,
    /// `ChatsChannel`: the app goes to the background.
    GoToBackground,
    /// Anything else, including a missing or non-string `action` (as ""): ignored once the
    /// subscription is found, like an action the channel does not define.
    Unknown(String),
}

impl Action {
    fn of(data: &Value) -> Action {
        match data.get("action").and_then(Value::as_str).unwrap_or("") {
            "speak" => Action::Speak,
            "createChat" => Action::CreateChat,
            "go_to_background" => Action::GoToBackground,
            other => Action::Unknown(other.to_string()),
        }
    }

    /// The action as the client named it.
    pub fn name(&self) -> &str {
        match self {
            Action::Speak => "speak",
            Action::CreateChat => "createChat",
            Action::GoToBackground => "go_to_background",
            Action::Unknown(name) => name,
        }
    }
}

/// The `command` of a frame.
#[derive(Clone, Copy)]
enum CommandKind {
    Subscribe,
    Unsubscribe,
    Message,
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
    // A missing identifier is reported before an unknown command name, as before the enum.
    let kind = match command.as_str() {
        "subscribe" => CommandKind::Subscribe,
        "unsubscribe" => CommandKind::Unsubscribe,
        "message" => CommandKind::Message,
        _ => return Err(BadFrame::UnknownCommand(command)),
    };
    match kind {
        CommandKind::Subscribe => Ok(Command::Subscribe { identifier }),
        CommandKind::Unsubscribe => Ok(Command::Unsubscribe { identifier }),
        CommandKind::Message => {
            let data = match raw.data {
                Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => return Err(BadFrame::BadData),
                },
                _ => return Err(BadFrame::BadData),
            };
            Ok(Command::Message {
                identifier,
                action: Action::of(&data),
                data,
            })
        }
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
                action: Action::Speak,
                data: serde_json::json!({"action":"speak"})
            }
        );
        let action = |data: &str| match parse_command(
            &serde_json::json!({
                "command": "message", "identifier": "{}", "data": data
            })
            .to_string(),
        ) {
            Ok(Command::Message { action, .. }) => action,
            other => panic!("{other:?}"),
        };
        assert_eq!(action(r#"{"action":"createChat"}"#), Action::CreateChat);
        assert_eq!(
            action(r#"{"action":"go_to_background"}"#),
            Action::GoToBackground
        );
        assert_eq!(
            action(r#"{"action":"subscribed"}"#),
            Action::Unknown("subscribed".into())
        );
        assert_eq!(action(r#"{"action":7}"#), Action::Unknown(String::new()));
        assert_eq!(action("{}"), Action::Unknown(String::new()));
        assert_eq!(
            parse_command(r#"{"command":"explode","identifier":"{}"}"#),
            Err(BadFrame::UnknownCommand("explode".into()))
        );
        assert_eq!(
            parse_command(r#"{"command":"explode"}"#),
            Err(BadFrame::NoIdentifier)
        );
        assert_eq!(
            parse_command(r#"{"command":"subscribe","identifier":{}}"#),
            Err(BadFrame::NoIdentifier)
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
