//! The circuit breaker in front of every dedicated tenant database: after
//! `threshold` failures in a row, the merchant's requests fail fast with 503
//! and `Retry-After` for `cooldown`, so a database that is down ties up no
//! thread and slows nobody else. One success closes it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::{
    db::ids::MerchantId,
    error::{ApiError, ErrorCode},
};

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
}

pub struct Breakers {
    states: Mutex<HashMap<MerchantId, State>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            states: Mutex::new(HashMap::new()),
            threshold,
            cooldown,
        }
    }

    /// Fails fast while the merchant's breaker is open.
    pub fn check(&self, merchant: MerchantId) -> Result<(), ApiError> {
        let states = self.states.lock();
        if let Some(until) = states.get(&merchant).and_then(|b| b.open_until) {
            let now = Instant::now();
            if until > now {
                return Err(unavailable((until - now).as_secs() + 1));
            }
        }
        Ok(())
    }

    /// Counts a failure, opening the breaker at the threshold.
    pub fn failure(&self, merchant: MerchantId) {
        let mut states = self.states.lock();
        let b = states.entry(merchant).or_default();
        b.failures += 1;
        if b.failures >= self.threshold {
            b.open_until = Some(Instant::now() + self.cooldown);
            tracing::warn!(%merchant, failures = b.failures, "tenant database breaker open");
        }
    }

    /// The answer to a request whose tenant database did not answer.
    pub fn error(&self) -> ApiError {
        unavailable(self.cooldown.as_secs())
    }

    pub fn success(&self, merchant: MerchantId) {
        let mut states = self.states.lock();
        if !states.is_empty() {
            states.remove(&merchant);
        }
    }

    pub fn open(&self) -> usize {
        let now = Instant::now();
        self.states
            .lock()
            .values()
            .filter(|b| b.open_until.is_some_and(|u| u > now))
            .count()
    }
}

fn unavailable(retry_after: u64) -> ApiError {
    ApiError::unavailable(
        ErrorCode::TenantDatabaseUnavailable,
        "this merchant's database is not reachable; try again shortly",
        retry_after,
    )
}
