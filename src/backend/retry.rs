//! How transient backend failures are retried: which statuses count as transient, the backoff
//! (exponential, capped, jittered) and the backend's own `Retry-After`. Pure functions.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderValue;

/// First backoff; doubles with each retry.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest backoff.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Statuses worth retrying: 429, 502, 503, 504.
pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt.
    pub(crate) retries: u32,
    /// Longest time from the first attempt to the start of the last retry.
    pub(crate) budget: Duration,
    /// First backoff; doubles with each retry.
    pub(crate) base: Duration,
    /// Longest backoff.
    pub(crate) cap: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): exponential, capped, with jitter over
    /// its upper half so that many connections failing at once do not retry in lockstep.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.cap);
        let half = exp / 2;
        let jitter = random_u64() % (half.as_micros() as u64 + 1);
        half + Duration::from_micros(jitter)
    }
}

/// A random number from the standard library's per-process random hash keys: plenty for
/// jitter, which needs no cryptographic strength.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    hasher.finish()
}

/// Parses `Retry-After` (delay in seconds or an HTTP date).
pub(crate) fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let value = value?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let policy = RetryPolicy {
            retries: 10,
            budget: Duration::from_secs(60),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        for retry in 1..=10 {
            let exp = (Duration::from_millis(100) * (1 << (retry - 1))).min(Duration::from_secs(2));
            let wait = policy.backoff(retry);
            assert!(
                wait >= exp / 2 && wait <= exp,
                "retry {retry}: {wait:?} vs {exp:?}"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(retry_after(Some(&v("3"))), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(Some(&v("Wed, 21 Oct 2015 07:28:00 GMT"))),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(Some(&v("soon"))), None);
        assert_eq!(
            retry_after(Some(&v("18446744073709551615"))),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn transient_statuses() {
        for s in [429, 502, 503, 504] {
            assert!(is_transient_status(
                StatusCode::from_u16(s).unwrap_or_default()
            ));
        }
        for s in [400, 404, 500, 301] {
            assert!(!is_transient_status(
                StatusCode::from_u16(s).unwrap_or_default()
            ));
        }
    }
}
