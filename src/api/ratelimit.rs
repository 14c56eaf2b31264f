//! Per-merchant request rate limits: a token bucket per merchant, sized by
//! the merchant's `requestsPerMinute` limit (its plan's, or its override),
//! in front of every staff request.
//!
//! A merchant allowed `n` requests a minute may send a burst of `n / 6`
//! (ten seconds' worth, at least one) and then one more every `60 / n`
//! seconds; a request past that is 429 `rate_limited` with `Retry-After`
//! and the limit in `error.details`. A limit of 0 refuses every staff
//! request; an unset limit (`null`, the enterprise plan's) none.
//!
//! The buckets are governor's (GCRA, one atomic compare-and-swap per
//! request), in one keyed limiter per rate, so a merchant whose limit
//! changes starts a full bucket at its new rate at once. They live in this
//! process: with several instances behind a load balancer each instance
//! keeps its own buckets, so a merchant may get up to its limit from each
//! instance it reaches (see the README).

use std::{collections::HashMap, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use parking_lot::RwLock;

use crate::db::ids::MerchantId;

/// Keys a keyed limiter holds before forgetting those whose bucket has
/// refilled.
const MAX_KEYS: usize = 100_000;

/// Takes one from `key`'s bucket, or says how long to wait; forgets
/// refilled buckets first when `limiter` holds more than `MAX_KEYS`, so
/// made-up keys cannot grow it without bound.
pub fn take<K: Clone + Eq + std::hash::Hash>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), Duration> {
    if limiter.len() > MAX_KEYS {
        limiter.retain_recent();
    }
    limiter
        .check_key(key)
        .map_err(|n| n.wait_time_from(governor::clock::DefaultClock::default().now()))
}

/// What a refused request waits at least, when the limit is 0.
const CLOSED_WAIT: Duration = Duration::from_secs(60);

/// The buckets of every merchant, by rate.
#[derive(Default)]
pub struct RequestLimiter {
    by_rate: RwLock<HashMap<NonZeroU32, Arc<DefaultKeyedRateLimiter<MerchantId>>>>,
}

/// A merchant's bucket: `per_minute` a minute, a burst of a sixth of it.
fn quota(per_minute: NonZeroU32) -> Quota {
    let burst = NonZeroU32::new(per_minute.get() / 6).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl RequestLimiter {
    /// Takes one request from the merchant's bucket at `per_minute`
    /// (`None`: no limit), or says how long to wait.
    pub fn check(&self, merchant: MerchantId, per_minute: Option<i64>) -> Result<(), Duration> {
        let Some(per_minute) = per_minute else {
            return Ok(());
        };
        let rate = u32::try_from(per_minute.max(0)).unwrap_or(u32::MAX);
        let Some(rate) = NonZeroU32::new(rate) else {
            return Err(CLOSED_WAIT);
        };
        take(&self.limiter(rate), &merchant)
    }

    fn limiter(&self, rate: NonZeroU32) -> Arc<DefaultKeyedRateLimiter<MerchantId>> {
        if let Some(l) = self.by_rate.read().get(&rate) {
            return l.clone();
        }
        self.by_rate
            .write()
            .entry(rate)
            .or_insert_with(|| Arc::new(DefaultKeyedRateLimiter::keyed(quota(rate))))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn merchant() -> MerchantId {
        MerchantId(uuid::Uuid::new_v4())
    }

    #[test]
    fn a_bucket_holds_a_sixth_of_the_minute_then_refuses() {
        let limiter = RequestLimiter::default();
        let m = merchant();
        // 60 a minute: a burst of 10, then one a second.
        for i in 0..10 {
            assert!(limiter.check(m, Some(60)).is_ok(), "request {i}");
        }
        let wait = limiter.check(m, Some(60)).expect_err("the 11th is refused");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        // Another merchant at the same rate has its own bucket.
        assert!(limiter.check(merchant(), Some(60)).is_ok());
    }

    #[test]
    fn a_new_rate_starts_a_full_bucket_and_zero_or_none_are_absolute() {
        let limiter = RequestLimiter::default();
        let m = merchant();
        assert!(limiter.check(m, Some(6)).is_ok());
        assert!(limiter.check(m, Some(6)).is_err(), "a burst of one");
        assert!(
            limiter.check(m, Some(600)).is_ok(),
            "a raised limit applies at once"
        );
        assert_eq!(limiter.check(m, Some(0)), Err(CLOSED_WAIT));
        assert_eq!(limiter.check(m, Some(-5)), Err(CLOSED_WAIT));
        for _ in 0..1000 {
            assert!(limiter.check(m, None).is_ok());
        }
        assert!(limiter.check(m, Some(i64::MAX)).is_ok());
    }
}
