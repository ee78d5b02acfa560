//! Messages per user across all its connections and REST: one token bucket per user
//! (`--user-rate-per-second`, `--user-rate-burst`), shared by its connections, which
//! each hold it for their lifetime, so a send takes one uncontended lock. A bucket
//! outlives its user's connections until it is full again: reconnecting does not
//! refill it (a flooder closed with 4029 that reconnected at once got a fresh burst
//! each time: 664 messages/s through a limit of 10, measured with `bavard-bench flood`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::rate::RateLimiter;

/// One user's bucket.
#[derive(Debug)]
pub struct Quota(Mutex<RateLimiter>);

impl Quota {
    /// Takes one message from the bucket, or says no.
    pub fn try_take(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).try_take()
    }

    fn is_full(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_full()
    }
}

/// Every connected user's bucket.
pub(super) struct Quotas {
    per_second: f64,
    burst: u32,
    users: Mutex<HashMap<String, Arc<Quota>>>,
}

impl Quotas {
    pub(super) fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst, users: Mutex::new(HashMap::new()) }
    }

    /// The user's bucket (the one its other connections share), or None without a limit.
    pub(super) fn of(&self, user: &str) -> Option<Arc<Quota>> {
        if self.per_second <= 0.0 {
            return None;
        }
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(quota) = users.get(user) {
            return Some(Arc::clone(quota));
        }
        // Buckets nobody holds and full again (their users gone and quiet for a while)
        // are dropped when the map doubles, so it stays proportional to the users
        // connected or recently active.
        if users.len() >= 1024 && users.len().is_power_of_two() {
            users.retain(|_, quota| Arc::strong_count(quota) > 1 || !quota.is_full());
        }
        let quota = Arc::new(Quota(Mutex::new(RateLimiter::new(self.per_second, self.burst))));
        users.insert(user.to_owned(), Arc::clone(&quota));
        Some(quota)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_shares_one_bucket_across_connections() {
        let quotas = Quotas::new(0.001, 2);
        let (a1, a2) = (quotas.of("a").unwrap(), quotas.of("a").unwrap());
        assert!(a1.try_take() && a2.try_take());
        assert!(!a1.try_take() && !a2.try_take(), "two connections, one burst");
        assert!(quotas.of("b").unwrap().try_take(), "another user has its own");
        drop((a1, a2));
        assert!(!quotas.of("a").unwrap().try_take(), "reconnecting does not refill the bucket");
        assert!(Quotas::new(0.0, 1).of("a").is_none(), "0 is no limit");
    }
}
