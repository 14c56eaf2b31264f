//! Aggregates over a period, for the daily report.

use chrono::{DateTime, Utc};
use diesel::{
    pg::Pg,
    prelude::*,
    sql_types::{BigInt, Text, Timestamptz, Uuid as SqlUuid},
};

use super::TenantTx;
use crate::db::kinds::Method;

/// A sum of amounts over any number of rows. PostgreSQL sums `bigint` into
/// `numeric`, which cannot overflow; it crosses as text into an `i128`,
/// which holds the sum of more rows than a table can have.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sum(pub i128);

impl diesel::deserialize::FromSql<Text, Pg> for Sum {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as diesel::deserialize::FromSql<Text, Pg>>::from_sql(bytes)?;
        Ok(Sum(text.parse()?))
    }
}

impl Queryable<Text, Pg> for Sum {
    type Row = Self;
    fn build(row: Self) -> diesel::deserialize::Result<Self> {
        Ok(row)
    }
}

#[derive(Debug, Default, QueryableByName)]
pub struct SalesTotals {
    #[diesel(sql_type = BigInt)]
    pub orders: i64,
    #[diesel(sql_type = Text)]
    pub gross: Sum,
    #[diesel(sql_type = Text)]
    pub discount: Sum,
    #[diesel(sql_type = Text)]
    pub tax: Sum,
    #[diesel(sql_type = Text)]
    pub total: Sum,
    /// The orders' cash rounding.
    #[diesel(sql_type = Text)]
    pub rounding: Sum,
    #[diesel(sql_type = BigInt)]
    pub voided: i64,
    /// Orders made in the period but recorded after it ended (offline
    /// bills that arrived late).
    #[diesel(sql_type = BigInt)]
    pub late: i64,
}

#[derive(Debug, QueryableByName)]
pub struct ByMethod {
    #[diesel(sql_type = Text)]
    pub method: Method,
    #[diesel(sql_type = Text)]
    pub amount: Sum,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// Orders made in `[from, to)`; voided orders are counted apart and add
/// nothing to the sums.
pub fn sales(
    tx: &mut TenantTx<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> QueryResult<SalesTotals> {
    diesel::sql_query(
        "SELECT count(*) FILTER (WHERE status <> 'voided') AS orders,
                coalesce(sum(gross_minor) FILTER (WHERE status <> 'voided'), 0)::text AS gross,
                coalesce(sum(discount_minor) FILTER (WHERE status <> 'voided'), 0)::text AS discount,
                coalesce(sum(tax_minor) FILTER (WHERE status <> 'voided'), 0)::text AS tax,
                coalesce(sum(total_minor) FILTER (WHERE status <> 'voided'), 0)::text AS total,
                coalesce(sum(rounding_minor) FILTER (WHERE status <> 'voided'), 0)::text AS rounding,
                count(*) FILTER (WHERE status = 'voided') AS voided,
                count(*) FILTER (WHERE status <> 'voided' AND recorded_at >= $3) AS late
           FROM orders
          WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .get_result(tx.conn)
}

/// What the payments of the orders made in `[from, to)` left with the
/// merchant, per method (voided orders excluded).
pub fn payments(
    tx: &mut TenantTx<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> QueryResult<Vec<ByMethod>> {
    diesel::sql_query(
        "SELECT p.method, sum(p.amount_minor)::text AS amount, count(*) AS count
           FROM payments p
           JOIN orders o ON o.merchant_id = p.merchant_id AND o.id = p.order_id
          WHERE p.merchant_id = $1 AND o.created_at >= $2 AND o.created_at < $3
            AND o.status <> 'voided'
          GROUP BY p.method ORDER BY p.method",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .load(tx.conn)
}

/// Refunds given in `[from, to)`, per method, whenever their order was made.
pub fn refunds(
    tx: &mut TenantTx<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> QueryResult<Vec<ByMethod>> {
    diesel::sql_query(
        "SELECT method, sum(amount_minor)::text AS amount, count(*) AS count
           FROM refunds
          WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3
          GROUP BY method ORDER BY method",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .load(tx.conn)
}
