//! Stock: one level per product and the movements that make it.
//!
//! Invariant: a product's level always equals the sum of its movements.
//! [`apply`] is the one way stock changes: it moves the level and records
//! the movement in one statement, and refuses (without changing anything)
//! a change that would take a level below zero unless told otherwise.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Bool, Int8, Nullable, Text, Uuid as SqlUuid},
};
use serde::Serialize;
use uuid::Uuid;

use super::{
    TenantTx,
    schema::{inventory_levels, products, stock_movements},
};
use crate::db::ids::{OrderId, ProductId, RefundId, StaffId};

/// Why stock moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Sale,
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
            Reason::Sale => "sale",
            Reason::Refund => "refund",
            Reason::Void => "void",
            Reason::Receive => "receive",
            Reason::Count => "count",
            Reason::Damage => "damage",
            Reason::Correction => "correction",
        }
    }
}

/// One change of stock.
#[derive(Debug, Clone)]
pub struct Movement<'a> {
    pub product: ProductId,
    pub delta: i64,
    pub reason: Reason,
    pub order: Option<OrderId>,
    pub refund: Option<RefundId>,
    pub staff: Option<StaffId>,
    pub note: Option<&'a str>,
    /// Record the movement even if the level goes below zero (flagging the
    /// product for a count), for sales that already happened.
    pub allow_negative: bool,
}

#[derive(QueryableByName)]
struct NewLevel {
    #[diesel(sql_type = Int8)]
    on_hand: i64,
}

/// Applies `m`; `Ok(None)` when it would take the level below zero and
/// negative levels are not allowed, or the product has no level.
pub fn apply(tx: &mut TenantTx<'_>, m: &Movement<'_>) -> QueryResult<Option<i64>> {
    let row: Option<NewLevel> = diesel::sql_query(
        "WITH level AS (
             UPDATE inventory_levels
                SET on_hand = on_hand + $3,
                    needs_count = needs_count OR (on_hand + $3 < 0),
                    updated_at = now()
              WHERE merchant_id = $1 AND product_id = $2 AND ($4 OR on_hand + $3 >= 0)
          RETURNING on_hand
         ), moved AS (
             INSERT INTO stock_movements
                 (merchant_id, id, product_id, delta, reason, order_id, refund_id, staff_id, note)
             SELECT $1, $5, $2, $3, $6, $7, $8, $9, $10 FROM level
         )
         SELECT on_hand FROM level",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<SqlUuid, _>(m.product.0)
    .bind::<Int8, _>(m.delta)
    .bind::<Bool, _>(m.allow_negative)
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Text, _>(m.reason.as_str())
    .bind::<Nullable<SqlUuid>, _>(m.order.map(|o| o.0))
    .bind::<Nullable<SqlUuid>, _>(m.refund.map(|r| r.0))
    .bind::<Nullable<SqlUuid>, _>(m.staff.map(|s| s.0))
    .bind::<Nullable<Text>, _>(m.note)
    .get_result(tx.conn)
    .optional()?;
    Ok(row.map(|r| r.on_hand))
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
