//! A sale in one round trip, or two: [`read()`] answers what pricing needs,
//! [`write()`] records the priced sale. Each is one call of a function of
//! the tenant migrations (`posd_sale_read`, `posd_sale_write`,
//! `posd_bill_write` for an offline bill, in the merchant's schema), which
//! binds the merchant itself before it touches a table.
//!
//! # Why functions, and why one call
//!
//! A sale used to be seven round trips: `BEGIN` with the binding, the
//! idempotency claim, the products, the order with its lines and payments,
//! the stock, the stored response, `COMMIT`. Diesel cannot pipeline
//! statements nor read the results of a multi-statement query, and pricing
//! stays in Rust (`crate::pos::checkout`), so a sale needs the catalog
//! before it writes: read, then write. A till sale whose products posd
//! already knows (`KnownProducts` in `crate::pos::checkout`: what this
//! process's sales last read) skips the read: the write is handed the
//! catalog as priced and checks it against the products (sku, name, price,
//! tax rate, stock tracking, for sale, not deleted) and the customer before
//! it claims the key; if anything differs it answers `Stale` having written
//! nothing, and the sale is read and priced again. On
//! [`TenantCalls`](super::TenantCalls) each call is its own transaction (no
//! `BEGIN`, no `COMMIT` sent); in a [`TenantTx`](super::TenantTx) (offline
//! batches) the calls join the caller's transaction.
//!
//! Measured (BENCHMARKS.md, "Writes in fewer round trips"; 2 cores, posd
//! and PostgreSQL on the same machine, 8 connections): two calls did not
//! raise orders/s over seven statements (0.96-1.05×); one call did,
//! 1.25-1.28×, to as many orders as pgbench sending the same call
//! (0.88-1.10 of it). What is left is PostgreSQL's own work per order
//! (executor start-up per statement, index insertion, check constraints,
//! foreign-key checks, the commit), which fewer round trips do not reduce.
//! The sale's statements are in `posd_sale_write` itself rather than in a
//! nested function (about 6% more calls/s under pgbench). A data-modifying
//! statement over all products was planned again at every call; one simple
//! `UPDATE` per product (`posd_stock_move`) is planned once per session.
//!
//! # What stays as it was
//!
//! - The binding is in the transaction that reads or writes: each function
//!   sets `posd.merchant_id` first, runs as the caller's role (row-level
//!   security applies) and pins `search_path` to its own schema.
//! - Idempotency: the write claims the key under its advisory lock with the
//!   response already stored, so a duplicate in flight gets `InFlight`
//!   (409), one that arrives after the commit a replay, one with another
//!   body a mismatch (422), and the key is only ever seen with its
//!   response. When the sale is read first, the read reports what the key
//!   holds, so a replay or a mismatch answers before any pricing; a sale
//!   priced from known products whose pricing fails is read before it
//!   answers, so a replay still wins over today's error.
//! - Stock: levels are locked in product id order and a level never goes
//!   below zero unless allowed (offline bills); a sale short of stock
//!   writes nothing.
//! - Prices: a sale from known products is written only at the catalog's
//!   current values. One read first sees them outside the write's
//!   transaction, as before: a price changed between the two is the same
//!   race as a price changed just before the sale.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error},
    sql_types::{
        Array, Bool, Int4, Int8, Integer, Interval, Jsonb, Nullable, Text, Timestamptz,
        Uuid as SqlUuid,
    },
};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Bound,
    changes::{Changed, key_outcome, short_stock},
    function_call, idempotency,
    orders::{Order, OrderLine, Payment},
};
use crate::db::ids::{CustomerId, OrderId, ProductId};

/// A product as a sale prices it (for an offline bill, as it was at the
/// bill's time).
#[derive(Debug, Clone)]
pub struct CatalogItem {
    pub id: ProductId,
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub tax_rate_bps: i32,
    pub active: bool,
    pub track_stock: bool,
}

/// What an unexpired idempotency key holds.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub request_hash: String,
    /// The response, once its request committed.
    pub response: Option<(u16, Value)>,
}

/// What [`read()`] found.
#[derive(Debug, Default)]
pub struct SaleRead {
    pub products: Vec<CatalogItem>,
    pub customer_exists: bool,
    /// The order an offline bill already made.
    pub bill_order: Option<OrderId>,
    pub key: Option<StoredKey>,
}

#[derive(QueryableByName)]
struct ReadRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    sku: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
    #[diesel(sql_type = Nullable<Int8>)]
    price_minor: Option<i64>,
    #[diesel(sql_type = Nullable<Int4>)]
    tax_rate_bps: Option<i32>,
    #[diesel(sql_type = Nullable<Bool>)]
    active: Option<bool>,
    #[diesel(sql_type = Nullable<Bool>)]
    track_stock: Option<bool>,
    #[diesel(sql_type = Nullable<Text>)]
    request_hash: Option<String>,
    #[diesel(sql_type = Nullable<Int4>)]
    response_status: Option<i32>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    response_body: Option<Value>,
}

fn unexpected(what: &str) -> Error {
    Error::DeserializationError(format!("posd_sale_read answered an incomplete {what} row").into())
}

/// Reads what pricing a sale needs, in one call: the products `ids` that
/// are not deleted (priced as at `at`, for an offline bill), whether
/// `customer` exists, the order made from the offline bill `bill`, and what
/// `key` holds.
pub fn read(
    b: &mut impl Bound,
    key: Option<&str>,
    ids: &[Uuid],
    at: Option<DateTime<Utc>>,
    customer: Option<CustomerId>,
    bill: Option<Uuid>,
) -> QueryResult<SaleRead> {
    let (conn, merchant, schema) = b.parts();
    let rows: Vec<ReadRow> = function_call(schema, "posd_sale_read", 6)
        .bind::<SqlUuid, _>(merchant.0)
        .bind::<Nullable<Text>, _>(key)
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<Nullable<Timestamptz>, _>(at)
        .bind::<Nullable<SqlUuid>, _>(customer.map(|c| c.0))
        .bind::<Nullable<SqlUuid>, _>(bill)
        .load(conn)?;
    let mut out = SaleRead::default();
    for r in rows {
        match r.kind.as_str() {
            "product" => out.products.push(CatalogItem {
                id: ProductId(r.id.ok_or_else(|| unexpected("product"))?),
                sku: r.sku.ok_or_else(|| unexpected("product"))?,
                name: r.name.ok_or_else(|| unexpected("product"))?,
                price_minor: r.price_minor.ok_or_else(|| unexpected("product"))?,
                tax_rate_bps: r.tax_rate_bps.ok_or_else(|| unexpected("product"))?,
                active: r.active.ok_or_else(|| unexpected("product"))?,
                track_stock: r.track_stock.ok_or_else(|| unexpected("product"))?,
            }),
            "customer" => out.customer_exists = true,
            "bill" => out.bill_order = r.id.map(OrderId),
            "key" => {
                out.key = Some(StoredKey {
                    request_hash: r.request_hash.ok_or_else(|| unexpected("key"))?,
                    response: match (r.response_status, r.response_body) {
                        (Some(s), Some(body)) => Some((u16::try_from(s).unwrap_or(200), body)),
                        _ => None,
                    },
                });
            }
            other => return Err(unexpected(other)),
        }
    }
    Ok(out)
}

/// The idempotency key a sale is written under, with the response to store
/// with it.
#[derive(Debug)]
pub struct KeyClaim<'a> {
    pub key: &'a str,
    pub hash: &'a str,
    pub retention: std::time::Duration,
    pub status: u16,
    pub body: &'a Value,
}

/// The sale to write: the order with its lines and payments, and the stock
/// it takes.
#[derive(Debug)]
pub struct SaleWrite<'a> {
    pub order: &'a Order,
    pub lines: &'a [OrderLine],
    pub payments: &'a [Payment],
    /// The units taken per product.
    pub take: &'a BTreeMap<ProductId, i64>,
    /// Record the movement even if the level goes below zero (offline
    /// bills, sales that already happened).
    pub allow_negative: bool,
    /// The products the sale was priced from, when they did not come from
    /// a [`read()`] just before: the write checks them against the catalog
    /// and answers `Stale`, writing nothing, if any differs.
    pub priced_from: Option<&'a [CatalogItem]>,
}

#[derive(QueryableByName)]
struct WriteRow {
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    order_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    short_product: Option<Uuid>,
    #[diesel(sql_type = Nullable<Int4>)]
    response_status: Option<i32>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    response_body: Option<Value>,
}

fn col<T, U>(rows: &[T], f: impl Fn(&T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

/// Writes `sale` in one call: claims `claim`'s key (if any) with its
/// response, then the order, its lines and payments and the stock, all or
/// nothing. `Done` once written; `Duplicate` for an offline bill applied
/// already.
pub fn write(
    b: &mut impl Bound,
    claim: Option<&KeyClaim<'_>>,
    sale: &SaleWrite<'_>,
) -> QueryResult<Changed<()>> {
    let (conn, merchant, schema) = b.parts();
    let (o, lines, pays) = (sale.order, sale.lines, sale.payments);
    // The catalog as priced, one entry per line (none at all if a line's
    // product is missing: the write then finds every line stale).
    let priced: Option<Vec<&CatalogItem>> = sale.priced_from.map(|items| {
        lines
            .iter()
            .map(|l| items.iter().find(|p| p.id == l.product_id))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    });
    // An offline bill is written in a subtransaction of the batch's.
    let function = if o.client_bill_id.is_some() {
        "posd_bill_write"
    } else {
        "posd_sale_write"
    };
    let row: Result<WriteRow, Error> = function_call(schema, function, 46)
        .bind::<SqlUuid, _>(merchant.0)
        .bind::<Nullable<Text>, _>(claim.map(|c| c.key))
        .bind::<Nullable<Text>, _>(claim.map(|c| c.hash))
        .bind::<Nullable<Interval>, _>(claim.map(|c| idempotency::interval(c.retention)))
        .bind::<Nullable<Integer>, _>(claim.map(|c| i32::from(c.status)))
        .bind::<Nullable<Jsonb>, _>(claim.map(|c| c.body))
        .bind::<SqlUuid, _>(o.id.0)
        .bind::<Text, _>(o.source)
        .bind::<Nullable<SqlUuid>, _>(o.client_bill_id)
        .bind::<Nullable<SqlUuid>, _>(o.customer_id.map(|c| c.0))
        .bind::<SqlUuid, _>(o.staff_id.0)
        .bind::<Text, _>(&o.currency)
        .bind::<Bool, _>(o.prices_include_tax)
        .bind::<Int8, _>(o.gross_minor)
        .bind::<Int8, _>(o.discount_minor)
        .bind::<Int8, _>(o.tax_minor)
        .bind::<Int8, _>(o.total_minor)
        .bind::<Int8, _>(o.rounding_minor)
        .bind::<Int8, _>(o.tendered_minor)
        .bind::<Int8, _>(o.change_minor)
        .bind::<Nullable<Text>, _>(&o.note)
        .bind::<Timestamptz, _>(o.created_at)
        .bind::<Timestamptz, _>(o.recorded_at)
        .bind::<Array<Int4>, _>(col(lines, |l| l.line_no))
        .bind::<Array<SqlUuid>, _>(col(lines, |l| l.product_id.0))
        .bind::<Array<Text>, _>(col(lines, |l| l.sku.clone()))
        .bind::<Array<Text>, _>(col(lines, |l| l.name.clone()))
        .bind::<Array<Int4>, _>(col(lines, |l| l.quantity))
        .bind::<Array<Int8>, _>(col(lines, |l| l.unit_price_minor))
        .bind::<Array<Int4>, _>(col(lines, |l| l.tax_rate_bps))
        .bind::<Array<Int8>, _>(col(lines, |l| l.gross_minor))
        .bind::<Array<Int8>, _>(col(lines, |l| l.discount_minor))
        .bind::<Array<Int8>, _>(col(lines, |l| l.tax_minor))
        .bind::<Array<Int8>, _>(col(lines, |l| l.total_minor))
        .bind::<Array<SqlUuid>, _>(col(pays, |p| p.id))
        .bind::<Array<Text>, _>(col(pays, |p| p.method))
        .bind::<Array<Int8>, _>(col(pays, |p| p.tendered_minor))
        .bind::<Array<Int8>, _>(col(pays, |p| p.amount_minor))
        .bind::<Array<Nullable<Text>>, _>(col(pays, |p| p.reference.clone()))
        .bind::<Array<SqlUuid>, _>(sale.take.keys().map(|p| p.0).collect::<Vec<_>>())
        .bind::<Array<Int8>, _>(sale.take.values().map(|q| -q).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(sale.take.keys().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind::<Bool, _>(sale.allow_negative)
        .bind::<Nullable<Array<Int8>>, _>(priced.as_ref().map(|c| col(c, |p| p.price_minor)))
        .bind::<Nullable<Array<Int4>>, _>(priced.as_ref().map(|c| col(c, |p| p.tax_rate_bps)))
        .bind::<Nullable<Array<Bool>>, _>(priced.as_ref().map(|c| col(c, |p| p.track_stock)))
        .get_result(conn);
    let row = match row {
        Ok(row) => row,
        Err(e) => return short_stock(&e).map(Changed::Short).ok_or(e),
    };
    if let Some(held) = key_outcome(
        &row.outcome,
        row.response_status,
        row.response_body.as_ref(),
    ) {
        return Ok(held);
    }
    Ok(match row.outcome.as_str() {
        "created" => Changed::Done(()),
        "stale" => Changed::Stale,
        "duplicate" => Changed::Duplicate(OrderId(row.order_id.ok_or_else(|| unexpected("bill"))?)),
        "short" => Changed::Short(ProductId(
            row.short_product.ok_or_else(|| unexpected("stock"))?,
        )),
        // An offline bill's constraint error, caught in its subtransaction:
        // the same error as if it had ended the statement.
        kind @ ("foreign_key" | "check") => {
            let message = match row.response_body {
                Some(Value::String(m)) => m,
                _ => kind.to_string(),
            };
            let kind = if kind == "check" {
                DatabaseErrorKind::CheckViolation
            } else {
                DatabaseErrorKind::ForeignKeyViolation
            };
            return Err(Error::DatabaseError(kind, Box::new(message)));
        }
        other => return Err(unexpected(other)),
    })
}
