//! A token bucket: how many frames a connection, messages a user, or REST writes an
//! address may send, on average and in a burst.

use std::time::Duration;

use tokio::time::Instant;

/// Token bucket refilled continuously at `per_second`, holding at most `burst` tokens.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// A full bucket. A `per_second` of 0 or less disables limiting.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { per_second, burst, tokens: burst, refilled: Instant::now() }
    }

    fn unlimited(&self) -> bool {
        self.per_second <= 0.0
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
    }

    /// Whether the bucket is full again (nothing taken lately, or no limit at all).
    pub fn is_full(&mut self) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill();
        self.tokens >= self.burst
    }

    /// Takes a token if one is available.
    pub fn try_take(&mut self) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is available now (without taking it).
    pub fn has_token(&mut self) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill();
        self.tokens >= 1.0
    }

    /// When the next token will be available.
    pub fn next_token_at(&mut self) -> Instant {
        if self.unlimited() {
            return Instant::now();
        }
        self.refill();
        let missing = (1.0 - self.tokens).max(0.0);
        self.refilled + Duration::from_secs_f64(missing / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_a_burst_then_the_average_rate() {
        let mut rate = RateLimiter::new(10.0, 3);
        assert!((0..3).all(|_| rate.try_take()));
        assert!(!rate.try_take());
        let next = rate.next_token_at();
        assert_eq!(next.duration_since(Instant::now()), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(rate.try_take());
        assert!(!rate.try_take());
    }

    #[test]
    fn zero_means_unlimited() {
        let mut rate = RateLimiter::new(0.0, 1);
        assert!((0..10_000).all(|_| rate.try_take()));
    }
}
