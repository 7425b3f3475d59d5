//! hangin: a self-hosted server for the Hangin chat app. See ARCHITECTURE.md for the map.

// No sync lock may be held across an await (the send path takes none; README "Performance").
#![deny(clippy::await_holding_lock, clippy::await_holding_refcell_ref)]

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
pub mod secret;
pub mod server;
pub mod service;
pub mod state;
pub mod tls;
pub mod wire;
