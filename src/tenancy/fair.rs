//! A merchant's fair share of the global pool: at most
//! `POSD_MERCHANT_POOL_SHARE` of its connections (half by default) run one
//! merchant's transactions at once. Shared and schema merchants all ride
//! the global pool; without a cap, one merchant flooding posd holds every
//! connection and every other merchant queues behind it. With it, the
//! flooding merchant queues behind itself (and gets 503 `database_busy`
//! once it waits longer than `POSD_POOL_CONNECT_TIMEOUT`), while the rest
//! of the pool stays free for the others. Dedicated merchants have pools
//! of their own and no cap.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    db::ids::MerchantId,
    error::{ApiError, ErrorCode},
};

/// Merchants kept before the idle ones are forgotten.
const MAX_IDLE: usize = 10_000;

/// The per-merchant caps on the global pool.
pub struct FairShare {
    cap: usize,
    merchants: Mutex<HashMap<MerchantId, Arc<Semaphore>>>,
}

impl FairShare {
    /// `share` (0 to 1) of a pool of `pool_size`, at least one connection;
    /// `None` when that is the whole pool (no cap).
    pub fn new(pool_size: u32, share: f64) -> Option<FairShare> {
        let size = usize::try_from(pool_size).unwrap_or(usize::MAX);
        let cap = cap(size, share);
        (cap < size).then(|| FairShare {
            cap,
            merchants: Mutex::new(HashMap::new()),
        })
    }

    /// How many transactions of one merchant may run at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Waits (at most `wait`) until the merchant has fewer than the cap
    /// running; the permit is its place until dropped.
    pub async fn acquire(
        &self,
        merchant: MerchantId,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, ApiError> {
        let slots = {
            let mut merchants = self.merchants.lock();
            if merchants.len() > MAX_IDLE {
                let cap = self.cap;
                merchants.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < cap);
            }
            merchants
                .entry(merchant)
                .or_insert_with(|| Arc::new(Semaphore::new(self.cap)))
                .clone()
        };
        tokio::time::timeout(wait, slots.acquire_owned())
            .await
            .map_err(|_| {
                ApiError::unavailable(
                    ErrorCode::DatabaseBusy,
                    "this merchant already uses its share of the database connections",
                    1,
                )
            })?
            .map_err(|_| super::pools::shutting_down())
    }
}

/// `share` of `size`, rounded up, at least 1, at most `size`.
fn cap(size: usize, share: f64) -> usize {
    #[expect(
        clippy::as_conversions,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a pool of at most a few thousand connections times a share in (0, 1]"
    )]
    let n = (size as f64 * share.clamp(0.0, 1.0)).ceil() as usize;
    n.clamp(1, size.max(1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_cap_is_the_share_rounded_up() {
        assert_eq!(cap(16, 0.5), 8);
        assert_eq!(cap(10, 0.25), 3);
        assert_eq!(cap(4, 0.01), 1);
        assert!(FairShare::new(16, 1.0).is_none(), "the whole pool: no cap");
        assert!(FairShare::new(1, 0.5).is_none(), "a pool of one");
        assert_eq!(FairShare::new(16, 0.5).unwrap().cap(), 8);
    }

    #[test]
    fn a_merchant_at_its_cap_waits_and_others_do_not() {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(at_its_cap());
    }

    async fn at_its_cap() {
        let fair = FairShare::new(4, 0.5).unwrap();
        let (a, b) = (
            MerchantId(uuid::Uuid::new_v4()),
            MerchantId(uuid::Uuid::new_v4()),
        );
        let short = Duration::from_millis(20);
        let held = [
            fair.acquire(a, short).await.unwrap(),
            fair.acquire(a, short).await.unwrap(),
        ];
        let refused = fair.acquire(a, short).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::DatabaseBusy);
        assert!(fair.acquire(b, short).await.is_ok(), "another merchant");
        drop(held);
        assert!(fair.acquire(a, short).await.is_ok(), "freed");
    }
}
