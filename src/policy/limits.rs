//! Connection-count limits (global and per client address; IPv6 clients are counted per /64,
//! the block one subscriber usually holds) and the per-connection message rate limit (token
//! bucket). Owns no I/O: the handshake asks for a [`ConnectionSlot`] and the connection task
//! asks its [`TokenBucket`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Instant;

/// Why a handshake was refused by a connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitRefusal {
    /// `--max-connections` reached (503).
    Full {
        /// The limit.
        limit: usize,
    },
    /// The connection limit was lowered to what the open-files limit holds, and reached (503).
    OpenFiles {
        /// The lowered limit.
        limit: usize,
        /// The soft open-files limit (`RLIMIT_NOFILE`) that lowered it.
        open_files: u64,
    },
    /// `--max-connections-per-ip` reached for this address (429).
    PerIp {
        /// The limit.
        limit: usize,
    },
}

/// Counts open connections, overall and per client IP.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max: usize,
    per_ip: usize,
    open: AtomicUsize,
    /// The open-files limit when it, not `--max-connections`, set `max` (see
    /// [`ConnectionLimits::capped_by_open_files`]).
    open_files: Option<u64>,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimits {
    /// Limits of `max` connections and `per_ip` per address (0: no per-address limit).
    pub(crate) fn new(max: usize, per_ip: usize) -> Self {
        ConnectionLimits {
            max,
            per_ip,
            open: AtomicUsize::new(0),
            open_files: None,
            by_ip: Mutex::default(),
        }
    }

    /// Lowers the connection limit to `fit` when that is below it: the open-files limit
    /// `open_files` holds no more (the server computes `fit` from the open-files limit).
    pub(crate) fn capped_by_open_files(mut self, fit: usize, open_files: u64) -> Self {
        if fit < self.max {
            self.max = fit;
            self.open_files = Some(open_files);
        }
        self
    }

    /// Open connections now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new connection from `ip`, or says which limit refuses it.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> Result<ConnectionSlot, LimitRefusal> {
        let ip = subscriber(ip);
        let reserved = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(match self.open_files {
                Some(open_files) => LimitRefusal::OpenFiles {
                    limit: self.max,
                    open_files,
                },
                None => LimitRefusal::Full { limit: self.max },
            });
        }
        if self.per_ip > 0 {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = by_ip.entry(ip).or_insert(0);
            if *count >= self.per_ip {
                drop(by_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(LimitRefusal::PerIp { limit: self.per_ip });
            }
            *count += 1;
        }
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
        })
    }
}

/// The key a client address is counted under: IPv4 addresses (IPv4-mapped ones included) as
/// they are, IPv6 addresses by their /64, which one subscriber usually holds whole.
fn subscriber(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        v6 @ IpAddr::V6(_) => crate::policy::forwarded::mask(v6, 64),
    }
}

/// One open connection's place in the limits; released when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.limits.per_ip > 0 {
            let mut by_ip = self
                .limits
                .by_ip
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = by_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    by_ip.remove(&self.ip);
                }
            }
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A token bucket: `rate` tokens per second, holding at most one second's worth.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` per second.
    pub(crate) fn new(rate: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one at time `now`.
    pub(crate) fn take_at(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token at time `now`, going into debt if there is none, and returns how long
    /// to wait until the debt is repaid (`None`: no wait). A caller that waits that long
    /// before taking the next one holds its rate exactly.
    pub(crate) fn take_or_wait(&mut self, now: Instant) -> Option<std::time::Duration> {
        self.refill(now);
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| std::time::Duration::from_secs_f64(-self.tokens / self.rate))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_released() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let s1 = limits.try_acquire(a);
        let s2 = limits.try_acquire(a);
        assert!(s1.is_ok() && s2.is_ok());
        assert!(matches!(
            limits.try_acquire(a),
            Err(LimitRefusal::PerIp { limit: 2 })
        ));
        let s3 = limits.try_acquire(b);
        assert!(s3.is_ok());
        assert!(matches!(
            limits.try_acquire(b),
            Err(LimitRefusal::Full { limit: 3 })
        ));
        drop(s1);
        assert_eq!(limits.open(), 2);
        let s4 = limits.try_acquire(a);
        assert!(s4.is_ok());
        // IPv4-mapped IPv6 counts as the IPv4 address.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap_or(a);
        drop(s3);
        assert!(matches!(
            limits.try_acquire(mapped),
            Err(LimitRefusal::PerIp { .. })
        ));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let limits = Arc::new(ConnectionLimits::new(10, 2));
        let ip = |s: &str| -> IpAddr { s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])) };
        let _a = limits.try_acquire(ip("2001:db8:1:2::1"));
        let _b = limits.try_acquire(ip("2001:db8:1:2:ffff::9"));
        assert!(matches!(
            limits.try_acquire(ip("2001:db8:1:2:1234::7")),
            Err(LimitRefusal::PerIp { .. })
        ));
        assert!(limits.try_acquire(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn the_open_files_limit_lowers_the_limit_and_says_so() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let limits = Arc::new(ConnectionLimits::new(3, 0).capped_by_open_files(1, 256));
        let slot = limits.try_acquire(ip);
        assert!(slot.is_ok());
        assert!(matches!(
            limits.try_acquire(ip),
            Err(LimitRefusal::OpenFiles {
                limit: 1,
                open_files: 256,
            })
        ));
        // A budget above --max-connections changes nothing.
        let limits = Arc::new(ConnectionLimits::new(1, 0).capped_by_open_files(5, 20_000));
        let slot = limits.try_acquire(ip);
        assert!(slot.is_ok());
        assert!(matches!(
            limits.try_acquire(ip),
            Err(LimitRefusal::Full { limit: 1 })
        ));
    }

    #[test]
    fn the_bucket_allows_its_rate() {
        use std::time::Duration;
        let mut bucket = TokenBucket::new(10);
        let t0 = bucket.last;
        for _ in 0..10 {
            assert!(bucket.take_at(t0));
        }
        assert!(!bucket.take_at(t0));
        let t1 = t0 + Duration::from_millis(150);
        assert!(bucket.take_at(t1));
        assert!(!bucket.take_at(t1));
        let t2 = t1 + Duration::from_secs(5);
        for _ in 0..10 {
            assert!(bucket.take_at(t2));
        }
        assert!(!bucket.take_at(t2));
    }

    #[test]
    fn a_paused_taker_holds_the_rate() {
        use std::time::Duration;
        let mut bucket = TokenBucket::new(100);
        let mut now = bucket.last;
        for _ in 0..100 {
            assert_eq!(bucket.take_or_wait(now), None);
        }
        // Over the rate: each message waits a hundredth of a second, so 300 more take 3 s.
        let start = now;
        for _ in 0..300 {
            if let Some(wait) = bucket.take_or_wait(now) {
                now += wait;
            }
        }
        let spent = now - start;
        assert!(
            spent >= Duration::from_millis(2_980) && spent <= Duration::from_millis(3_020),
            "{spent:?}"
        );
    }
}
