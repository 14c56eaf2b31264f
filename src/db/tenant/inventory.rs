//! Stock: one level per product and the movements that make it.
//!
//! Invariant: a product's level always equals the sum of its movements.
//! The one way stock changes is the tenant function `posd_stock_move`
//! (called by sales, refunds, voids and adjustments, see [`super::sales`]
//! and [`super::changes`]): it moves the levels and records the movements
//! together, locking levels in product id order, and refuses (undoing its
//! caller's writes) a change that would take a level below zero unless
//! told otherwise. Here: reading levels and movements.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use super::{
    TenantTx,
    schema::{inventory_levels, products, stock_movements},
};
use crate::db::ids::{OrderId, ProductId, RefundId, StaffId};

/// Why an adjustment moves stock (sales, refunds and voids move it in
/// their own functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Receive,
    Count,
    Damage,
    Correction,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Receive => "receive",
            Reason::Count => "count",
            Reason::Damage => "damage",
            Reason::Correction => "correction",
        }
    }
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
