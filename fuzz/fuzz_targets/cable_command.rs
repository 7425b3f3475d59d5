//! A client's websocket text frame through the command parser, as `read_loop` does, plus the
//! identifier helpers; and the echo of an identifier must give back the exact string.
#![no_main]

use hangin::cable::protocol::{self, Command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // tungstenite hands the server only valid UTF-8 text frames.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(command) = protocol::parse_command(text) {
        let identifier = match &command {
            Command::Subscribe { identifier }
            | Command::Unsubscribe { identifier }
            | Command::Message { identifier, .. } => identifier,
        };
        let _ = protocol::parse_identifier(identifier);
        let _ = protocol::names_a_channel(identifier);
        let echoed: serde_json::Value =
            serde_json::from_str(&protocol::confirm(identifier)).expect("confirm is JSON");
        assert_eq!(echoed["identifier"].as_str(), Some(identifier.as_str()));
        if let Command::Message { data, .. } = &command {
            assert!(data.is_object());
        }
    }
    let _ = protocol::parse_identifier(text);
});
