//! In-memory sliding-window limit per client address (`create_per_address_per_hour`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct AddressLimiter {
    limit: u32,
    window: Duration,
    hits: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// Addresses remembered before stale ones are swept.
const SWEEP_ABOVE: usize = 10_000;

impl AddressLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        AddressLimiter {
            limit,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Count one request; `Err(seconds)` when the address is over its limit.
    pub fn check(&self, addr: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut hits = self.hits.lock();
        if hits.len() > SWEEP_ABOVE {
            let window = self.window;
            hits.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let queue = hits.entry(addr).or_default();
        while queue
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            queue.pop_front();
        }
        if queue.len() as u32 >= self.limit {
            let oldest = *queue.front().expect("limit > 0 means a hit is queued");
            let wait = self.window.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        queue.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address() {
        let l = AddressLimiter::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        let wait = l.check(a).unwrap_err();
        assert!(wait > 0 && wait <= 60);
        assert!(l.check(b).is_ok());
    }
}
