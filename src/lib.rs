//! hangin: a self-hosted server for the Hangin chat app. See ARCHITECTURE.md for the map.

// Every system call goes through a safe wrapper (rustix, socket2, time); Cargo.toml [lints].
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cable;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod discovery;
pub mod drivers;
pub mod host;
pub mod http;
pub mod hub;
pub mod loadtest;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod people;
pub mod private_file;
pub mod secret;
pub mod server;
pub mod service;
pub mod state;
pub mod tasks;
pub mod tls;
pub mod wire;
