//! Raw bytes from a client after the websocket handshake, through tungstenite's frame parser
//! configured as `/cable` configures it (1 KiB read buffer, message and frame cap at twice
//! `frame_bytes`), and every text message on through the command parser, as `read_loop` does.
#![no_main]

use std::io::{self, Read, Write};

use hangin::cable::protocol;
use hangin::config::LimitsConfig;
use libfuzzer_sys::fuzz_target;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::Message;

/// The client's bytes, then end of stream; what the server writes goes nowhere.
struct Wire<'a> {
    input: &'a [u8],
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    // Small limits so the fuzzer reaches "too big" quickly; the ratio is the server's.
    let frame_limit = LimitsConfig::default().frame_bytes / 16;
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(frame_limit * 2))
        .max_frame_size(Some(frame_limit * 2));
    let mut ws = WebSocket::from_raw_socket(Wire { input: data }, Role::Server, Some(config));
    for _ in 0..1000 {
        match ws.read() {
            Ok(Message::Text(text)) => {
                assert!(text.len() <= frame_limit * 2);
                if text.len() <= frame_limit {
                    let _ = protocol::parse_command(&text);
                }
            }
            Ok(Message::Binary(b)) => assert!(b.len() <= frame_limit * 2),
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
