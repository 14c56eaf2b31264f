//! Idempotency keys, following Stripe's contract.
//!
//! A key is scoped to the merchant and stored with the merchant's data.
//! [`begin`] claims it in a short transaction of its own, so that a
//! duplicate arriving while the first request is in flight sees the claim
//! (409) instead of waiting. The request's own transaction stores the
//! response with [`finish`], atomically with the work. A request that
//! fails changed nothing: its claim is [`release`]d and the key may be
//! retried. A claim left by a crashed process is taken over once it is
//! older than [`STALE_CLAIM`]. Keys expire after the configured retention.

use std::time::Duration;

use diesel::{
    prelude::*,
    sql_types::{Interval, Text, Uuid as SqlUuid},
};
use serde_json::Value;

use super::{TenantTx, schema::idempotency_keys};

/// An in-flight claim older than this belongs to a request that died
/// (requests are bounded by the statement timeout, far shorter).
pub const STALE_CLAIM: Duration = Duration::from_secs(60);

/// Expired keys of the merchant removed by each claim, at most.
const PURGE_BATCH: i64 = 20;

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
    #[diesel(sql_type = diesel::sql_types::Bool)]
    #[expect(dead_code, reason = "only the row's presence matters")]
    claimed: bool,
}

fn interval(d: Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    )
}

/// Claims `key` for a request whose method, path and body hash to `hash`.
pub fn begin(
    tx: &mut TenantTx<'_>,
    key: &str,
    hash: &str,
    retention: Duration,
) -> QueryResult<Claim> {
    let claimed: Option<Claimed> = diesel::sql_query(
        "WITH purge AS (
             DELETE FROM idempotency_keys
              WHERE merchant_id = $1 AND key IN (
                    SELECT key FROM idempotency_keys
                     WHERE merchant_id = $1 AND expires_at < now() AND key <> $2
                     LIMIT $6)
         )
         INSERT INTO idempotency_keys AS k (merchant_id, key, request_hash, locked_at, expires_at)
         VALUES ($1, $2, $3, now(), now() + $4)
         ON CONFLICT (merchant_id, key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, response_status = NULL,
                response_body = NULL, locked_at = now(), expires_at = EXCLUDED.expires_at
          WHERE k.expires_at < now()
             OR (k.response_status IS NULL AND k.request_hash = EXCLUDED.request_hash
                 AND k.locked_at < now() - $5)
         RETURNING true AS claimed",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<Text, _>(key)
    .bind::<Text, _>(hash)
    .bind::<Interval, _>(interval(retention))
    .bind::<Interval, _>(interval(STALE_CLAIM))
    .bind::<diesel::sql_types::BigInt, _>(PURGE_BATCH)
    .get_result(tx.conn)
    .optional()?;
    if claimed.is_some() {
        return Ok(Claim::Started);
    }
    let (stored_hash, status, body): (String, Option<i32>, Option<Value>) = idempotency_keys::table
        .filter(idempotency_keys::merchant_id.eq(tx.merchant))
        .filter(idempotency_keys::key.eq(key))
        .select((
            idempotency_keys::request_hash,
            idempotency_keys::response_status,
            idempotency_keys::response_body,
        ))
        .first(tx.conn)?;
    Ok(if stored_hash != hash {
        Claim::Mismatch
    } else {
        match (status, body) {
            (Some(s), Some(body)) => Claim::Replay {
                status: u16::try_from(s).unwrap_or(200),
                body,
            },
            _ => Claim::InFlight,
        }
    })
}

/// Stores the response of the request that claimed `key`, in that
/// request's transaction.
pub fn finish(tx: &mut TenantTx<'_>, key: &str, status: u16, body: &Value) -> QueryResult<()> {
    diesel::update(
        idempotency_keys::table
            .filter(idempotency_keys::merchant_id.eq(tx.merchant))
            .filter(idempotency_keys::key.eq(key)),
    )
    .set((
        idempotency_keys::response_status.eq(Some(i32::from(status))),
        idempotency_keys::response_body.eq(Some(body)),
    ))
    .execute(tx.conn)
    .map(drop)
}

/// Gives up an in-flight claim after a failed request.
pub fn release(tx: &mut TenantTx<'_>, key: &str) -> QueryResult<()> {
    diesel::delete(
        idempotency_keys::table
            .filter(idempotency_keys::merchant_id.eq(tx.merchant))
            .filter(idempotency_keys::key.eq(key))
            .filter(idempotency_keys::response_status.is_null()),
    )
    .execute(tx.conn)
    .map(drop)
}
