//! Stock: one level per product and the movements that make it.
//!
//! Invariant: a product's level always equals the sum of its movements.
//! [`apply`] is the one way stock changes: it moves the levels and records
//! the movements in one statement, and refuses (without changing anything)
//! a change that would take a level below zero unless told otherwise.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Array, Bool, Int8, Nullable, Text, Uuid as SqlUuid},
};
use serde::Serialize;
use uuid::Uuid;

use super::{
    TenantTx,
    schema::{inventory_levels, products, stock_movements},
};
use crate::db::{
    ids::{OrderId, ProductId, RefundId, StaffId},
    statement::statement,
};

/// Why stock moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Refund,
    Void,
    Receive,
    Count,
    Damage,
    Correction,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Refund => "refund",
            Reason::Void => "void",
            Reason::Receive => "receive",
            Reason::Count => "count",
            Reason::Damage => "damage",
            Reason::Correction => "correction",
        }
    }
}

/// Who moves stock and why: shared by every product of one change.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub reason: Reason,
    pub order: Option<OrderId>,
    pub refund: Option<RefundId>,
    pub staff: Option<StaffId>,
    pub note: Option<&'a str>,
    /// Record the movement even if the level goes below zero (flagging the
    /// product for a count), for sales that already happened.
    pub allow_negative: bool,
}

/// The product that stopped a change: it has no level, or the change would
/// take its level below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short(pub ProductId);

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = SqlUuid)]
    product_id: Uuid,
    #[diesel(sql_type = Int8)]
    on_hand: i64,
    #[diesel(sql_type = Bool)]
    applied: bool,
}

/// Moves the stock of every product in `deltas` by its delta and records
/// one movement each, all in one statement, or nothing at all: `Short`
/// names the first product (in id order) that stopped it. Levels are locked
/// in product id order, so concurrent changes cannot deadlock. Answers the
/// new levels in product id order.
pub fn apply(
    tx: &mut TenantTx<'_>,
    change: &Change<'_>,
    deltas: &BTreeMap<ProductId, i64>,
) -> QueryResult<Result<Vec<(ProductId, i64)>, Short>> {
    let Some(first) = deltas.keys().next() else {
        return Ok(Ok(Vec::new()));
    };
    let products: Vec<Uuid> = deltas.keys().map(|p| p.0).collect();
    let amounts: Vec<i64> = deltas.values().copied().collect();
    let ids: Vec<Uuid> = deltas.keys().map(|_| Uuid::now_v7()).collect();
    let rows: Vec<Locked> = statement(
        "WITH req AS (
             SELECT * FROM unnest($2, $3, $4) AS r(product_id, delta, movement_id)
         ), locked AS MATERIALIZED (
             SELECT l.product_id, l.on_hand + r.delta AS on_hand
               FROM inventory_levels l JOIN req r ON r.product_id = l.product_id
              WHERE l.merchant_id = $1
              ORDER BY l.product_id
                FOR UPDATE OF l
         ), ok AS (
             SELECT count(*) = cardinality($2) AND ($5 OR coalesce(bool_and(on_hand >= 0), true)) AS ok
               FROM locked
         ), level AS (
             UPDATE inventory_levels l
                SET on_hand = k.on_hand, needs_count = l.needs_count OR k.on_hand < 0,
                    updated_at = now()
               FROM locked k, ok
              WHERE ok.ok AND l.merchant_id = $1 AND l.product_id = k.product_id
          RETURNING l.product_id
         ), moved AS (
             INSERT INTO stock_movements
                 (merchant_id, id, product_id, delta, reason, order_id, refund_id, staff_id, note)
             SELECT $1, r.movement_id, r.product_id, r.delta, $6, $7, $8, $9, $10
               FROM level JOIN req r ON r.product_id = level.product_id
         )
         SELECT k.product_id, k.on_hand, ok.ok AS applied FROM locked k, ok ORDER BY k.product_id",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<Array<SqlUuid>, _>(products)
    .bind::<Array<Int8>, _>(amounts)
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Bool, _>(change.allow_negative)
    .bind::<Text, _>(change.reason.as_str())
    .bind::<Nullable<SqlUuid>, _>(change.order.map(|o| o.0))
    .bind::<Nullable<SqlUuid>, _>(change.refund.map(|r| r.0))
    .bind::<Nullable<SqlUuid>, _>(change.staff.map(|s| s.0))
    .bind::<Nullable<Text>, _>(change.note)
    .load(tx.conn)?;
    if rows.len() == deltas.len() && rows.iter().all(|r| r.applied) {
        return Ok(Ok(rows
            .into_iter()
            .map(|r| (ProductId(r.product_id), r.on_hand))
            .collect()));
    }
    let short = deltas.keys().find(|p| {
        rows.iter()
            .find(|r| r.product_id == p.0)
            .is_none_or(|r| r.on_hand < 0 && !change.allow_negative)
    });
    Ok(Err(Short(*short.unwrap_or(first))))
}

/// A product's stock, as the inventory screen shows it.
#[derive(Debug, Clone, Queryable, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Level {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub track_stock: bool,
    pub on_hand: i64,
    pub needs_count: bool,
    pub updated_at: DateTime<Utc>,
}

/// Inventory list filters; `after` is the last product id of the previous page.
#[derive(Debug, Default)]
pub struct LevelFilter {
    pub needs_count: Option<bool>,
    pub product: Option<ProductId>,
    pub after: Option<ProductId>,
    pub limit: i64,
}

pub fn levels(tx: &mut TenantTx<'_>, f: &LevelFilter) -> QueryResult<Vec<Level>> {
    let mut query = inventory_levels::table
        .inner_join(
            products::table.on(products::merchant_id
                .eq(inventory_levels::merchant_id)
                .and(products::id.eq(inventory_levels::product_id))),
        )
        .filter(inventory_levels::merchant_id.eq(tx.merchant))
        .filter(products::deleted_at.is_null())
        .select((
            inventory_levels::product_id,
            products::sku,
            products::name,
            products::track_stock,
            inventory_levels::on_hand,
            inventory_levels::needs_count,
            inventory_levels::updated_at,
        ))
        .order(inventory_levels::product_id.asc())
        .limit(f.limit)
        .into_boxed();
    if let Some(n) = f.needs_count {
        query = query.filter(inventory_levels::needs_count.eq(n));
    }
    if let Some(p) = f.product {
        query = query.filter(inventory_levels::product_id.eq(p.0));
    }
    if let Some(a) = f.after {
        query = query.filter(inventory_levels::product_id.gt(a.0));
    }
    query.load(tx.conn)
}

/// The current level of one product, locked until the transaction ends.
pub fn level_for_update(tx: &mut TenantTx<'_>, product: ProductId) -> QueryResult<i64> {
    inventory_levels::table
        .filter(inventory_levels::merchant_id.eq(tx.merchant))
        .filter(inventory_levels::product_id.eq(product.0))
        .select(inventory_levels::on_hand)
        .for_update()
        .first(tx.conn)
}

/// Clears the "needs a count" flag after a count.
pub fn mark_counted(tx: &mut TenantTx<'_>, product: ProductId) -> QueryResult<()> {
    diesel::update(
        inventory_levels::table
            .filter(inventory_levels::merchant_id.eq(tx.merchant))
            .filter(inventory_levels::product_id.eq(product.0)),
    )
    .set(inventory_levels::needs_count.eq(false))
    .execute(tx.conn)
    .map(drop)
}

/// One recorded movement.
#[derive(Debug, Clone, Queryable, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MovementRow {
    pub id: Uuid,
    pub product_id: ProductId,
    pub delta: i64,
    pub reason: String,
    pub order_id: Option<OrderId>,
    pub refund_id: Option<RefundId>,
    pub staff_id: Option<StaffId>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The newest movements of a product, newest first.
pub fn movements(
    tx: &mut TenantTx<'_>,
    product: ProductId,
    limit: i64,
) -> QueryResult<Vec<MovementRow>> {
    stock_movements::table
        .filter(stock_movements::merchant_id.eq(tx.merchant))
        .filter(stock_movements::product_id.eq(product.0))
        .order(stock_movements::id.desc())
        .limit(limit)
        .select((
            stock_movements::id,
            stock_movements::product_id,
            stock_movements::delta,
            stock_movements::reason,
            stock_movements::order_id,
            stock_movements::refund_id,
            stock_movements::staff_id,
            stock_movements::note,
            stock_movements::created_at,
        ))
        .load(tx.conn)
}
