//! Changes to recorded data in two round trips, as sales of products not
//! yet known are ([`super::sales`]): refunds and voids of an order
//! ([`read_order`], then [`change_order`]), and stock adjustments
//! ([`read_level`], then [`adjust_level`]). Each is one call of a function
//! of the tenant migrations (`posd_order_read`, `posd_order_change`,
//! `posd_stock_read`, `posd_stock_adjust`), a transaction of its own that
//! binds the merchant first.
//!
//! The rules run in Rust between the two calls, on what the read saw. The
//! write locks what it changes and checks it is still as read (an order's
//! status and refunded total, which every refund and void changes; a
//! level's quantity): if not, it writes nothing and answers
//! [`Changed::Stale`], and the caller reads again. So two refunds of one
//! order still run one after the other and the second sees what the first
//! refunded, as when the order was locked before it was read.

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
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    Bound,
    audit::Actor,
    function_call, idempotency,
    orders::{Order, OrderLine, OrderView, Payment, Refund, RefundLine, RefundView},
    sales::{KeyClaim, StoredKey},
};
use crate::db::{
    ids::{OrderId, ProductId},
    kinds::AuditAction,
};

/// What `posd_stock_move` raises for stock that would go below zero, or a
/// product without a level; its DETAIL is the product.
pub(super) const SHORT_STOCK: &str = "posd: insufficient stock";

/// The product named by a [`SHORT_STOCK`] error, if `e` is one.
pub(super) fn short_stock(e: &Error) -> Option<ProductId> {
    match e {
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) if info.message() == SHORT_STOCK => {
            info.details()
                .and_then(|d| Uuid::parse_str(d).ok())
                .map(ProductId)
        }
        _ => None,
    }
}

/// An order as [`read_order`] found it.
#[derive(Debug)]
pub struct OrderRead {
    pub key: Option<StoredKey>,
    /// `None`: no such order.
    pub view: Option<OrderView>,
    /// The products of its lines whose stock is tracked.
    pub tracked: Vec<ProductId>,
}

#[derive(QueryableByName)]
struct Item {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Jsonb)]
    item: Value,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::DeserializationError(format!("posd_order_read: {what}: {e}").into())
}

/// A row of the database in JSON (`to_jsonb`) as the API's types read it:
/// the keys in camel case.
fn from_row<T: DeserializeOwned>(kind: &str, row: Map<String, Value>) -> Result<T, Error> {
    let camel: Map<String, Value> = row
        .into_iter()
        .map(|(k, v)| {
            let mut out = String::with_capacity(k.len());
            let mut upper = false;
            for c in k.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            (out, v)
        })
        .collect();
    serde_json::from_value(Value::Object(camel)).map_err(|e| malformed(kind, e))
}

/// Reads order `id` with everything that belongs to it, and what `key`
/// holds, in one call.
pub fn read_order(b: &mut impl Bound, key: &str, id: OrderId) -> QueryResult<OrderRead> {
    let (conn, merchant, schema) = b.parts();
    let items: Vec<Item> = function_call(schema, "posd_order_read", 3)
        .bind::<SqlUuid, _>(merchant.0)
        .bind::<Text, _>(key)
        .bind::<SqlUuid, _>(id.0)
        .load(conn)?;
    let mut out = OrderRead {
        key: None,
        view: None,
        tracked: Vec::new(),
    };
    let (mut order, mut lines, mut payments, mut refunds, mut refund_lines) = (
        None,
        Vec::new(),
        Vec::new(),
        Vec::<Refund>::new(),
        Vec::<RefundLine>::new(),
    );
    for Item { kind, item } in items {
        let Value::Object(row) = item else {
            return Err(malformed(&kind, "not an object"));
        };
        match kind.as_str() {
            "key" => {
                let hash = row.get("request_hash").and_then(Value::as_str);
                let status = row
                    .get("response_status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok());
                let body = row.get("response_body").filter(|b| !b.is_null());
                out.key = Some(StoredKey {
                    request_hash: hash.ok_or_else(|| malformed("key", "no hash"))?.to_string(),
                    response: status.zip(body.cloned()),
                });
            }
            "order" => order = Some(from_row::<Order>(&kind, row)?),
            "line" => {
                if row.get("track_stock").and_then(Value::as_bool) == Some(true) {
                    let line: OrderLine = from_row(&kind, row)?;
                    out.tracked.push(line.product_id);
                    lines.push(line);
                } else {
                    lines.push(from_row(&kind, row)?);
                }
            }
            "payment" => payments.push(from_row::<Payment>(&kind, row)?),
            "refund" => refunds.push(from_row(&kind, row)?),
            "refund_line" => refund_lines.push(from_row(&kind, row)?),
            other => return Err(malformed(other, "unknown kind")),
        }
    }
    out.view = order.map(|order| OrderView {
        order,
        lines,
        payments,
        refunds: refunds
            .into_iter()
            .map(|refund| {
                let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut refund_lines)
                    .into_iter()
                    .partition(|l| l.refund_id == refund.id);
                refund_lines = rest;
                RefundView {
                    refund,
                    lines: mine,
                }
            })
            .collect(),
    });
    Ok(out)
}

/// The audit event a change records in its transaction.
#[derive(Debug)]
pub struct AuditEntry<'a> {
    pub actor: &'a Actor,
    pub action: AuditAction,
    pub details: Value,
}

/// A refund or a void of an order, as [`change_order`] writes it.
#[derive(Debug)]
pub struct OrderChange<'a> {
    /// The order as read: the write goes ahead only if its status and
    /// refunded total still are as they were.
    pub before: &'a Order,
    /// The order after the change: its status and refunded total are
    /// written.
    pub after: &'a Order,
    /// When the refund was made, or the order voided.
    pub at: DateTime<Utc>,
    pub staff: Uuid,
    /// `None` for a void.
    pub refund: Option<(&'a Refund, &'a [RefundLine])>,
    /// The units put back on the shelf per product.
    pub put_back: &'a BTreeMap<ProductId, i64>,
    pub audit: AuditEntry<'a>,
}

/// What a write of a change did.
#[derive(Debug, PartialEq)]
pub enum Changed<T> {
    Done(T),
    /// What it would change is no longer as read: read again.
    Stale,
    /// The key holds this request's response.
    Replay {
        status: u16,
        body: Value,
    },
    /// The key was used for another request.
    Mismatch,
    /// A request holding the key is still running.
    InFlight,
    /// Not enough stock (or no level) for this product; nothing was written.
    Short(ProductId),
    /// The offline bill made this order already (sales only).
    Duplicate(OrderId),
}

/// What the key held when a write could not claim it (outcomes `replay`,
/// `mismatch`, `in_flight`); `None` for any other outcome.
pub(super) fn key_outcome<T>(
    outcome: &str,
    status: Option<i32>,
    body: Option<&Value>,
) -> Option<Changed<T>> {
    match outcome {
        "replay" => Some(Changed::Replay {
            status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
            body: body.cloned().unwrap_or(Value::Null),
        }),
        "mismatch" => Some(Changed::Mismatch),
        "in_flight" => Some(Changed::InFlight),
        _ => None,
    }
}

#[derive(QueryableByName)]
struct ChangeRow {
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Nullable<Int4>)]
    response_status: Option<i32>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    response_body: Option<Value>,
}

/// Writes `change` under `claim` in one call, all or nothing.
pub fn change_order(
    b: &mut impl Bound,
    claim: &KeyClaim<'_>,
    change: &OrderChange<'_>,
) -> QueryResult<Changed<()>> {
    let (conn, merchant, schema) = b.parts();
    let (refund, lines) = change.refund.unzip();
    let lines = lines.unwrap_or_default();
    let result: QueryResult<ChangeRow> = function_call(schema, "posd_order_change", 30)
        .bind::<SqlUuid, _>(merchant.0)
        .bind::<Text, _>(claim.key)
        .bind::<Text, _>(claim.hash)
        .bind::<Interval, _>(idempotency::interval(claim.retention))
        .bind::<Integer, _>(i32::from(claim.status))
        .bind::<Jsonb, _>(claim.body)
        .bind::<SqlUuid, _>(change.before.id.0)
        .bind::<Text, _>(change.before.status)
        .bind::<Int8, _>(change.before.refunded_minor)
        .bind::<Text, _>(change.after.status)
        .bind::<Int8, _>(change.after.refunded_minor)
        .bind::<Timestamptz, _>(change.at)
        .bind::<SqlUuid, _>(change.staff)
        .bind::<Nullable<SqlUuid>, _>(refund.map(|r| r.id.0))
        .bind::<Nullable<Int8>, _>(refund.map(|r| r.amount_minor))
        .bind::<Nullable<Text>, _>(refund.map(|r| r.method))
        .bind::<Nullable<Bool>, _>(refund.map(|r| r.restock))
        .bind::<Nullable<Text>, _>(refund.and_then(|r| r.reason.clone()))
        .bind::<Array<Int4>, _>(lines.iter().map(|l| l.line_no).collect::<Vec<_>>())
        .bind::<Array<Int4>, _>(lines.iter().map(|l| l.quantity).collect::<Vec<_>>())
        .bind::<Array<Int8>, _>(lines.iter().map(|l| l.amount_minor).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(change.put_back.keys().map(|p| p.0).collect::<Vec<_>>())
        .bind::<Array<Int8>, _>(change.put_back.values().copied().collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(
            change
                .put_back
                .keys()
                .map(|_| Uuid::now_v7())
                .collect::<Vec<_>>(),
        )
        .bind::<SqlUuid, _>(Uuid::now_v7())
        .bind::<Nullable<SqlUuid>, _>(change.audit.actor.staff)
        .bind::<Text, _>(change.audit.actor.label.clone())
        .bind::<Text, _>(change.audit.action)
        .bind::<Jsonb, _>(&change.audit.details)
        .bind::<Nullable<Text>, _>(change.audit.actor.request_id.clone())
        .get_result(conn);
    let o = match result {
        Ok(o) => o,
        Err(e) => return short_stock(&e).map(Changed::Short).ok_or(e),
    };
    if let Some(held) = key_outcome(&o.outcome, o.response_status, o.response_body.as_ref()) {
        return Ok(held);
    }
    match o.outcome.as_str() {
        "done" => Ok(Changed::Done(())),
        "stale" => Ok(Changed::Stale),
        other => Err(malformed("posd_order_change", other)),
    }
}

#[derive(QueryableByName)]
struct LevelRow {
    #[diesel(sql_type = Nullable<Int8>)]
    on_hand: Option<i64>,
}

/// Product `product`'s stock level: `None` when there is no such product,
/// `Some(None)` when it has no level.
pub fn read_level(b: &mut impl Bound, product: ProductId) -> QueryResult<Option<Option<i64>>> {
    let (conn, merchant, schema) = b.parts();
    let row: Option<LevelRow> = function_call(schema, "posd_stock_read", 2)
        .bind::<SqlUuid, _>(merchant.0)
        .bind::<SqlUuid, _>(product.0)
        .get_result(conn)
        .optional()?;
    Ok(row.map(|r| r.on_hand))
}

/// A stock adjustment, as [`adjust_level`] writes it.
#[derive(Debug)]
pub struct Adjustment<'a> {
    pub product: ProductId,
    /// The level as read: the write goes ahead only if it still is.
    pub seen: i64,
    pub delta: i64,
    /// `receive`, `count`, `damage` or `correction`.
    pub reason: &'static str,
    pub staff: Uuid,
    pub note: Option<&'a str>,
    pub audit: AuditEntry<'a>,
}

#[derive(QueryableByName)]
struct Adjusted {
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Nullable<Int8>)]
    on_hand: Option<i64>,
}

/// Writes `adj` in one call: `Done` with the new level, `Stale`, or
/// `Short` when it would take the level below zero.
pub fn adjust_level(b: &mut impl Bound, adj: &Adjustment<'_>) -> QueryResult<Changed<i64>> {
    let (conn, merchant, schema) = b.parts();
    let row: Adjusted = function_call(schema, "posd_stock_adjust", 14)
        .bind::<SqlUuid, _>(merchant.0)
        .bind::<SqlUuid, _>(adj.product.0)
        .bind::<Int8, _>(adj.seen)
        .bind::<Int8, _>(adj.delta)
        .bind::<Text, _>(adj.reason)
        .bind::<SqlUuid, _>(Uuid::now_v7())
        .bind::<SqlUuid, _>(adj.staff)
        .bind::<Nullable<Text>, _>(adj.note)
        .bind::<SqlUuid, _>(Uuid::now_v7())
        .bind::<Nullable<SqlUuid>, _>(adj.audit.actor.staff)
        .bind::<Text, _>(adj.audit.actor.label.clone())
        .bind::<Text, _>(adj.audit.action)
        .bind::<Jsonb, _>(&adj.audit.details)
        .bind::<Nullable<Text>, _>(adj.audit.actor.request_id.clone())
        .get_result(conn)?;
    match (row.outcome.as_str(), row.on_hand) {
        ("done", Some(level)) => Ok(Changed::Done(level)),
        ("stale", _) => Ok(Changed::Stale),
        ("short", _) => Ok(Changed::Short(adj.product)),
        (other, _) => Err(malformed("posd_stock_adjust", other)),
    }
}
