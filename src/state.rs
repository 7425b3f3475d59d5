//! What every handler and channel can reach.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::channels::Engine;
use crate::config::Config;
use crate::db::Db;
use crate::drivers::push::PushQueue;
use crate::hub::Hub;
use crate::net::Cidr;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub auth: Arc<Auth>,
    pub hub: Arc<Hub>,
    pub engine: Arc<Engine>,
    pub push: PushQueue,
    pub trusted_proxies: Arc<Vec<Cidr>>,
    /// Base of absolute URLs sent to anyone but the requester (`host::public_base`).
    pub public_base: Arc<str>,
    /// `/up`'s shared, briefly cached write check.
    pub write_probe: Arc<crate::db::health::WriteProbe>,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
}
