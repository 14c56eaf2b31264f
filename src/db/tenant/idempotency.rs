//! Idempotency keys, following Stripe's contract.
//!
//! A key is scoped to the merchant and stored with the merchant's data.
//! [`begin`] claims it in the request's own transaction, and [`finish`]
//! stores the response there too, so a key is only ever seen with its
//! response: a request that fails or dies leaves nothing behind and the
//! key may be retried. A duplicate arriving while the first request is in
//! flight does not wait for it: the claim takes a transaction-level
//! advisory lock on the key with `pg_try_advisory_xact_lock`, and a
//! duplicate that cannot take it is told the key is in use (409). Keys
//! expire after the configured retention: an expired key may be claimed
//! again at once, and the daily `expire_idempotency_keys` job
//! (`crate::tenancy::jobs`) deletes them ([`expire`]).

use std::time::Duration;

use diesel::{
    prelude::*,
    sql_types::{BigInt, Bool, Integer, Interval, Jsonb, Text, Uuid as SqlUuid},
};
use serde_json::Value;

use super::{TenantTx, schema::idempotency_keys};
use crate::db::statement::statement;

/// What a claim found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The key is ours: run the request.
    Started,
    /// The same request already completed: answer its response again.
    Replay { status: u16, body: Value },
    /// The same key is being used by a request still in flight.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = Bool)]
    #[expect(dead_code, reason = "only the row's presence matters")]
    claimed: bool,
}

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

/// Claims `key` for a request whose method, path and body hash to `hash`,
/// in the request's transaction. A claim row left with no response (by an
/// earlier version of posd, which claimed in a transaction of its own) is
/// taken over by the same request.
pub fn begin(
    tx: &mut TenantTx<'_>,
    key: &str,
    hash: &str,
    retention: Duration,
) -> QueryResult<Claim> {
    let claimed: Option<Claimed> = statement(
        "INSERT INTO idempotency_keys AS k (merchant_id, key, request_hash, locked_at, expires_at)
         SELECT $1, $2, $3, now(), now() + $4
          WHERE pg_try_advisory_xact_lock(hashtextextended($1::text || ' ' || $2, 0))
         ON CONFLICT (merchant_id, key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, response_status = NULL,
                response_body = NULL, locked_at = now(), expires_at = EXCLUDED.expires_at
          WHERE k.expires_at < now()
             OR (k.response_status IS NULL AND k.request_hash = EXCLUDED.request_hash)
         RETURNING true AS claimed",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<Text, _>(key)
    .bind::<Text, _>(hash)
    .bind::<Interval, _>(interval(retention))
    .get_result(tx.conn)
    .optional()?;
    if claimed.is_some() {
        return Ok(Claim::Started);
    }
    // Not claimed: the key is stored (with this request or another one), or
    // a request holding its lock is still in flight.
    let stored: Option<(String, Option<i32>, Option<Value>)> = idempotency_keys::table
        .filter(idempotency_keys::merchant_id.eq(tx.merchant))
        .filter(idempotency_keys::key.eq(key))
        .filter(idempotency_keys::expires_at.ge(diesel::dsl::now))
        .select((
            idempotency_keys::request_hash,
            idempotency_keys::response_status,
            idempotency_keys::response_body,
        ))
        .first(tx.conn)
        .optional()?;
    Ok(match stored {
        Some((stored_hash, ..)) if stored_hash != hash => Claim::Mismatch,
        Some((_, Some(s), Some(body))) => Claim::Replay {
            status: u16::try_from(s).unwrap_or(200),
            body,
        },
        _ => Claim::InFlight,
    })
}

/// Stores the response of the request that claimed `key`, in that
/// request's transaction.
pub fn finish(tx: &mut TenantTx<'_>, key: &str, status: u16, body: &Value) -> QueryResult<()> {
    statement(
        "UPDATE idempotency_keys SET response_status = $3, response_body = $4
          WHERE merchant_id = $1 AND key = $2",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<Text, _>(key)
    .bind::<Integer, _>(i32::from(status))
    .bind::<Jsonb, _>(body)
    .execute(tx.conn)
    .map(drop)
}
