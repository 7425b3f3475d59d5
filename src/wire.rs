//! One serializer per JSON shape the clients see (wire.md), and the JSON encoding itself.
//! REST handlers and cable channels both build their payloads here.

use serde::Serialize;
use serde_json::ser::Formatter;

use crate::config::KeyStyle;
use crate::db::chats::{Chat, Message};
use crate::db::users::{Friend, User};

/// JSON the way Rails' encoder writes it: compact, with `<`, `>`, `&`, U+2028 and U+2029
/// escaped (so a message body can never close a `<script>` when a web client inlines it).
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(128);
    write_json(&mut out, value);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// [`to_json`], appended to `out`.
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut ser = serde_json::Serializer::with_formatter(out, RailsFormatter);
    value
        .serialize(&mut ser)
        .expect("serializing plain data cannot fail");
}

struct RailsFormatter;

impl Formatter for RailsFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let escaped = match ch {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(escaped.as_bytes())?;
            start = i + ch.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// Absolute URL of a stored picture.
pub fn picture_url(base_url: &str, key: &str) -> String {
    format!("{}/blobs/{key}", base_url.trim_end_matches('/'))
}

/// A user as other users see them. Names are never null: the iOS client cannot decode a frame
/// holding a null name, so a user who has not set one shows as "".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contact {
    pub uuid: String,
    pub first_name: String,
    pub last_name: String,
    pub number: String,
    pub profile_pic: Option<String>,
}

pub fn contact(user: &User, base_url: &str) -> Contact {
    Contact {
        uuid: user.uuid.clone(),
        first_name: user.first_name.clone().unwrap_or_default(),
        last_name: user.last_name.clone().unwrap_or_default(),
        number: crate::people::numbers::display(&user.number),
        profile_pic: user
            .picture_key
            .as_deref()
            .map(|k| picture_url(base_url, k)),
    }
}

/// `GET /user`: the user's own profile (names as stored, null until set).
#[derive(Debug, Serialize)]
pub struct Profile {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub profile_pic: Option<String>,
    pub uuid: String,
    pub number: String,
}

pub fn profile(user: &User, base_url: &str) -> Profile {
    Profile {
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        profile_pic: user
            .picture_key
            .as_deref()
            .map(|k| picture_url(base_url, k)),
        uuid: user.uuid.clone(),
        number: crate::people::numbers::display(&user.number),
    }
}

/// `PATCH /user` and picture upload answers.
#[derive(Debug, Serialize)]
pub struct Names {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_pic: Option<String>,
}

/// An address-book row as `POST /friends` returns it (all columns, Rails timestamps).
#[derive(Debug, Serialize)]
pub struct FriendRow {
    pub id: i64,
    pub first_name: String,
    pub last_name: String,
    pub number: String,
    pub user_id: i64,
    pub created_at: String,
    pub updated_at: String,
}

pub fn friend_row(f: &Friend) -> FriendRow {
    FriendRow {
        id: f.id,
        first_name: f.first_name.clone(),
        last_name: f.last_name.clone(),
        number: crate::people::numbers::display(&f.number),
        user_id: f.owner_id.0,
        created_at: iso_ms(f.created_at),
        updated_at: iso_ms(f.updated_at),
    }
}

/// An address-book entry as `GET /friends` lists it.
#[derive(Debug, Serialize)]
pub struct FriendEntry {
    pub first_name: String,
    pub last_name: String,
    pub number: String,
}

pub fn friend_entry(f: &Friend) -> FriendEntry {
    FriendEntry {
        first_name: f.first_name.clone(),
        last_name: f.last_name.clone(),
        number: crate::people::numbers::display(&f.number),
    }
}

/// `2024-11-27T23:24:50.993Z` from Unix milliseconds.
pub fn iso_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// A chat: `users` are its online members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatObject {
    pub id: i64,
    pub name: String,
    pub users: Vec<Contact>,
}

pub fn chat(chat: &Chat, online_members: &[User], base_url: &str) -> ChatObject {
    ChatObject {
        id: chat.id.0,
        name: chat.name.clone(),
        users: online_members
            .iter()
            .map(|u| contact(u, base_url))
            .collect(),
    }
}

/// A message (snake keys in both key styles).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageObject {
    pub user_uuid: String,
    pub kind: String,
    pub first_name: String,
    pub last_name: String,
    pub body: String,
}

pub fn message(m: &Message) -> MessageObject {
    MessageObject {
        user_uuid: m.user_uuid.clone(),
        kind: m.kind.clone(),
        first_name: m.first_name.clone().unwrap_or_default(),
        last_name: m.last_name.clone().unwrap_or_default(),
        body: m.body.clone(),
    }
}

/// The channel events whose top-level key depends on `[cable] key_style`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Chats,
    ContactsOnline,
    ContactOnline,
    ContactOffline,
    OwnChat,
    Chat,
    UpdateChat,
    DeleteChat,
    Messages,
    Message,
    Error,
}

impl Event {
    pub fn key(self, style: KeyStyle) -> &'static str {
        use Event::*;
        match (self, style) {
            (Chats, _) => "chats",
            (Chat, _) => "chat",
            (Messages, _) => "messages",
            (Message, _) => "message",
            (Error, _) => "error",
            (ContactsOnline, KeyStyle::Snake) => "contacts_online",
            (ContactsOnline, KeyStyle::Camel) => "contactsOnline",
            (ContactOnline, KeyStyle::Snake) => "contact_online",
            (ContactOnline, KeyStyle::Camel) => "contactOnline",
            (ContactOffline, KeyStyle::Snake) => "contact_offline",
            (ContactOffline, KeyStyle::Camel) => "contactOffline",
            (OwnChat, KeyStyle::Snake) => "own_chat",
            (OwnChat, KeyStyle::Camel) => "ownChat",
            (UpdateChat, KeyStyle::Snake) => "update_chat",
            (UpdateChat, KeyStyle::Camel) => "updateChat",
            (DeleteChat, KeyStyle::Snake) => "delete_chat",
            (DeleteChat, KeyStyle::Camel) => "deleteChat",
        }
    }
}

/// A channel payload `{"<event key>": value}`, encoded once.
/// Serialized straight into the one buffer it is returned in: a `speak`'s payload is ≈ 200 B,
/// and growing two buffers (the value's, then the payload's) cost four `realloc`s per message,
/// each under the allocator arena's lock, on the thread that publishes in commit order.
pub fn payload<T: Serialize + ?Sized>(event: Event, style: KeyStyle, value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(event.key(style).as_bytes());
    out.extend_from_slice(b"\":");
    write_json(&mut out, value);
    out.push(b'}');
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_rails() {
        assert_eq!(
            to_json("a<b&c>\u{2028}/é"),
            "\"a\\u003cb\\u0026c\\u003e\\u2028/é\""
        );
    }

    #[test]
    fn iso_timestamps_have_milliseconds() {
        assert_eq!(iso_ms(1732749890993), "2024-11-27T23:24:50.993Z");
    }

    #[test]
    fn payload_keys_follow_the_style() {
        assert_eq!(
            payload(Event::DeleteChat, KeyStyle::Snake, &6),
            "{\"delete_chat\":6}"
        );
        assert_eq!(
            payload(Event::DeleteChat, KeyStyle::Camel, &6),
            "{\"deleteChat\":6}"
        );
        assert_eq!(
            payload(Event::Message, KeyStyle::Camel, &1),
            "{\"message\":1}"
        );
    }

    #[test]
    fn contact_key_order_matches_the_contract() {
        let u = User {
            id: crate::db::users::UserId(1),
            uuid: "u".into(),
            number: "5551234567".into(),
            first_name: Some("George".into()),
            last_name: None,
            picture_key: None,
            device_token: None,
            background_until: None,
        };
        assert_eq!(
            to_json(&contact(&u, "http://x")),
            r#"{"uuid":"u","first_name":"George","last_name":"","number":"5551234567","profile_pic":null}"#
        );
    }
}
