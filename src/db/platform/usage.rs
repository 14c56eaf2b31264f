//! What each merchant used per UTC day (`merchant_usage`): counters that
//! instances add to in batches, and storage gauges that the measuring pass
//! sets (see `tenancy::usage`).

use chrono::NaiveDate;
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Date, Uuid as SqlUuid},
    upsert::excluded,
};

use super::{Platform, schema::merchant_usage as mu};
use crate::db::ids::MerchantId;

/// One merchant's usage on one day.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mu, check_for_backend(diesel::pg::Pg))]
pub struct UsageDay {
    pub day: NaiveDate,
    pub api_calls: i64,
    pub orders: i64,
    pub db_time_us: i64,
    /// `None` until the storage of the merchant was measured that day.
    pub rows_stored: Option<i64>,
    pub bytes_stored: Option<i64>,
}

/// Counters to add to one merchant's day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDelta {
    pub merchant: MerchantId,
    pub day: NaiveDate,
    pub api_calls: i64,
    pub orders: i64,
    pub db_time_us: i64,
}

impl UsageDay {
    /// The merchant's days from `from` to `to` (inclusive), oldest first;
    /// a day without usage has no row.
    pub fn list(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> QueryResult<Vec<UsageDay>> {
        mu::table
            .filter(mu::merchant_id.eq(merchant))
            .filter(mu::day.between(from, to))
            .order(mu::day.asc())
            .select(UsageDay::as_select())
            .load(p.conn)
    }

    /// Adds `deltas` (one per merchant and day) in one statement. Deltas of
    /// merchants deleted since are dropped, so that one deleted merchant
    /// cannot fail every later batch.
    pub fn add(p: &mut Platform<'_>, deltas: &[UsageDelta]) -> QueryResult<usize> {
        if deltas.is_empty() {
            return Ok(0);
        }
        let merchants: Vec<uuid::Uuid> = deltas.iter().map(|d| d.merchant.0).collect();
        let days: Vec<NaiveDate> = deltas.iter().map(|d| d.day).collect();
        let calls: Vec<i64> = deltas.iter().map(|d| d.api_calls).collect();
        let orders: Vec<i64> = deltas.iter().map(|d| d.orders).collect();
        let times: Vec<i64> = deltas.iter().map(|d| d.db_time_us).collect();
        diesel::sql_query(
            "INSERT INTO merchant_usage (merchant_id, day, api_calls, orders, db_time_us)
             SELECT u.merchant_id, u.day, u.api_calls, u.orders, u.db_time_us
             FROM unnest($1, $2, $3, $4, $5) AS u (merchant_id, day, api_calls, orders, db_time_us)
             WHERE EXISTS (SELECT 1 FROM merchants m WHERE m.id = u.merchant_id)
             ON CONFLICT (merchant_id, day) DO UPDATE SET
                 api_calls = merchant_usage.api_calls + EXCLUDED.api_calls,
                 orders = merchant_usage.orders + EXCLUDED.orders,
                 db_time_us = merchant_usage.db_time_us + EXCLUDED.db_time_us",
        )
        .bind::<Array<SqlUuid>, _>(merchants)
        .bind::<Array<Date>, _>(days)
        .bind::<Array<BigInt>, _>(calls)
        .bind::<Array<BigInt>, _>(orders)
        .bind::<Array<BigInt>, _>(times)
        .execute(p.conn)
    }

    /// The merchant's storage in bytes as last measured, if ever.
    pub fn last_bytes(p: &mut Platform<'_>, merchant: MerchantId) -> QueryResult<Option<i64>> {
        mu::table
            .filter(mu::merchant_id.eq(merchant))
            .filter(mu::bytes_stored.is_not_null())
            .order(mu::day.desc())
            .select(mu::bytes_stored)
            .first::<Option<i64>>(p.conn)
            .optional()
            .map(Option::flatten)
    }

    /// Tells every instance that the merchant's tenant context changed
    /// (`posd_context`, as the control plane's triggers do).
    pub fn notify_context(p: &mut Platform<'_>, merchant: MerchantId) -> QueryResult<()> {
        diesel::sql_query("SELECT pg_notify('posd_context', $1)")
            .bind::<diesel::sql_types::Text, _>(merchant.to_string())
            .execute(p.conn)
            .map(drop)
    }

    /// Sets the merchant's storage on `day` to what was just measured.
    pub fn set_storage(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        day: NaiveDate,
        rows: i64,
        bytes: i64,
    ) -> QueryResult<()> {
        diesel::insert_into(mu::table)
            .values((
                mu::merchant_id.eq(merchant),
                mu::day.eq(day),
                mu::rows_stored.eq(rows),
                mu::bytes_stored.eq(bytes),
            ))
            .on_conflict((mu::merchant_id, mu::day))
            .do_update()
            .set((
                mu::rows_stored.eq(excluded(mu::rows_stored)),
                mu::bytes_stored.eq(excluded(mu::bytes_stored)),
            ))
            .execute(p.conn)
            .map(drop)
    }
}
