//! Idempotency keys, following Stripe's contract.
//!
//! A key is scoped to the merchant and stored with the merchant's data. A
//! write claims it with its response already in it, in the write's own
//! transaction (`posd_claim`, called by the tenant functions of
//! [`super::sales`] and [`super::changes`]), so a key is only ever seen
//! with its response: a request that fails or dies leaves nothing behind
//! and the key may be retried. The read before the write reports what the
//! key holds, so a replay or a reused key answers before any work. A
//! duplicate arriving while the first request's write is in flight does
//! not wait for it: the claim takes a transaction-level advisory lock on
//! the key with `pg_try_advisory_xact_lock`, and a duplicate that cannot
//! take it is told the key is in use (409). Keys expire after the
//! configured retention: an expired key may be claimed again at once, and
//! the daily `expire_idempotency_keys` job (`crate::tenancy::jobs`) deletes
//! them ([`expire`]).

use std::time::Duration;

use diesel::{
    prelude::*,
    sql_types::{BigInt, Uuid as SqlUuid},
};

use super::TenantTx;
use crate::db::statement::statement;

pub(super) fn interval(d: Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    )
}

/// Deletes up to `batch` of the merchant's expired keys (one in flight is
/// skipped); answers how many.
pub fn expire(tx: &mut TenantTx<'_>, batch: i64) -> QueryResult<usize> {
    statement(
        "DELETE FROM idempotency_keys
          WHERE merchant_id = $1 AND key IN (
                SELECT key FROM idempotency_keys
                 WHERE merchant_id = $1 AND expires_at < now()
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED)",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<BigInt, _>(batch)
    .execute(tx.conn)
}
