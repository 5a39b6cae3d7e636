//! A token bucket shared by the connections it limits: uploads (bytes sent) and
//! downloads (piece data read from peers and web seeds), each with its own limiter,
//! shared by every torrent given the same one.

use std::time::{Duration, Instant};

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// At most `bytes_per_sec` on average, in bursts of up to a tenth of a second.
    pub fn new(bytes_per_sec: u64) -> RateLimiter {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 10.0).max(128.0 * 1024.0);
        RateLimiter {
            rate,
            burst,
            state: std::sync::Mutex::new((burst, Instant::now())),
        }
    }

    /// The average rate allowed, in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// How long the bytes already taken keep the bucket in debt: the wait a new taker
    /// would have before its first byte.
    pub fn backlog(&self) -> Duration {
        let s = self.state.lock().expect("rate limiter");
        let tokens = s.0 + Instant::now().duration_since(s.1).as_secs_f64() * self.rate;
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-tokens / self.rate).unwrap_or(Duration::MAX)
        }
    }

    /// How long to wait before sending `n` bytes; the bytes are counted at once, so
    /// callers queue up fairly behind each other.
    pub fn reserve(&self, n: u64) -> Duration {
        let mut s = self.state.lock().expect("rate limiter");
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
        s.1 = now;
        s.0 -= n as f64;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate)
        }
    }

    pub async fn acquire(&self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_grows_with_what_is_taken() {
        let r = RateLimiter::new(1 << 20);
        // The burst (128 KiB) is free; each further MiB costs a second.
        assert_eq!(r.reserve(128 << 10), Duration::ZERO);
        let w = r.reserve(1 << 20);
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_secs(1),
            "{w:?}"
        );
        let w2 = r.reserve(1 << 20);
        assert!(w2 > Duration::from_millis(1900), "{w2:?}");
        // The debt as a new taker sees it, without taking anything.
        let b = r.backlog();
        assert!(b > Duration::from_millis(1800) && b <= w2, "{b:?}");
        assert!(r.backlog() <= b);
        assert_eq!(RateLimiter::new(1 << 20).backlog(), Duration::ZERO);
    }
}
