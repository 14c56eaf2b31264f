//! Orders, their lines and payments, and refunds.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    TenantTx,
    schema::{order_lines, orders, payments, refund_lines, refunds},
};
use crate::db::{
    ids::{CustomerId, MerchantId, OrderId, ProductId, RefundId, StaffId},
    kinds::{Method, OrderSource, OrderStatus},
};

#[derive(
    Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize, utoipa::ToSchema,
)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Order {
    #[serde(skip_serializing)]
    pub merchant_id: MerchantId,
    pub id: OrderId,
    pub status: OrderStatus,
    pub source: OrderSource,
    pub client_bill_id: Option<Uuid>,
    pub customer_id: Option<CustomerId>,
    pub staff_id: StaffId,
    pub currency: String,
    /// Whether the order was priced tax-inclusive (the merchant's
    /// `pricesIncludeTax` when it was made): the lines' gross amounts then
    /// include their tax, and `totalMinor` = gross − discount; otherwise
    /// `totalMinor` = gross − discount + tax.
    pub prices_include_tax: bool,
    pub gross_minor: i64,
    pub discount_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    /// What cash rounding added to (negative: took off) the total: the
    /// payments settle `totalMinor + roundingMinor`. Zero unless cash paid
    /// part of the order and the merchant's `cashRounding` step was above 1.
    pub rounding_minor: i64,
    pub tendered_minor: i64,
    pub change_minor: i64,
    pub refunded_minor: i64,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub voided_at: Option<DateTime<Utc>>,
}

#[derive(
    Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize, utoipa::ToSchema,
)]
#[diesel(table_name = order_lines, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    #[serde(skip_serializing)]
    pub merchant_id: MerchantId,
    #[serde(skip_serializing)]
    pub order_id: OrderId,
    pub line_no: i32,
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub tax_rate_bps: i32,
    pub gross_minor: i64,
    pub discount_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    pub refunded_quantity: i32,
    pub refunded_minor: i64,
}

#[derive(
    Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize, utoipa::ToSchema,
)]
#[diesel(table_name = payments, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    #[serde(skip_serializing)]
    pub merchant_id: MerchantId,
    pub id: Uuid,
    #[serde(skip_serializing)]
    pub order_id: OrderId,
    pub method: Method,
    pub tendered_minor: i64,
    pub amount_minor: i64,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(
    Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize, utoipa::ToSchema,
)]
#[diesel(table_name = refunds, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Refund {
    #[serde(skip_serializing)]
    pub merchant_id: MerchantId,
    pub id: RefundId,
    pub order_id: OrderId,
    pub amount_minor: i64,
    pub method: Method,
    pub restock: bool,
    pub reason: Option<String>,
    pub staff_id: StaffId,
    pub created_at: DateTime<Utc>,
}

#[derive(
    Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize, utoipa::ToSchema,
)]
#[diesel(table_name = refund_lines, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct RefundLine {
    #[serde(skip_serializing)]
    pub merchant_id: MerchantId,
    #[serde(skip_serializing)]
    pub refund_id: RefundId,
    #[serde(skip_serializing)]
    pub order_id: OrderId,
    pub line_no: i32,
    pub quantity: i32,
    pub amount_minor: i64,
}

/// An order with everything that belongs to it, as the API answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    #[serde(flatten)]
    pub order: Order,
    pub lines: Vec<OrderLine>,
    pub payments: Vec<Payment>,
    pub refunds: Vec<RefundView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundView {
    #[serde(flatten)]
    pub refund: Refund,
    pub lines: Vec<RefundLine>,
}

/// Order list filters; `before` is the last id of the previous page.
#[derive(Debug, Default)]
pub struct OrderFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub status: Option<OrderStatus>,
    pub before: Option<OrderId>,
    pub limit: i64,
}

impl Order {
    pub fn find(tx: &mut TenantTx<'_>, id: OrderId) -> QueryResult<Order> {
        orders::table
            .filter(orders::merchant_id.eq(tx.merchant))
            .filter(orders::id.eq(id.0))
            .select(Order::as_select())
            .first(tx.conn)
    }

    /// One page, newest first (ids are UUIDv7).
    pub fn list(tx: &mut TenantTx<'_>, f: &OrderFilter) -> QueryResult<Vec<Order>> {
        let mut query = orders::table
            .filter(orders::merchant_id.eq(tx.merchant))
            .select(Order::as_select())
            .order(orders::id.desc())
            .limit(f.limit)
            .into_boxed();
        if let Some(from) = f.from {
            query = query.filter(orders::created_at.ge(from));
        }
        if let Some(to) = f.to {
            query = query.filter(orders::created_at.lt(to));
        }
        if let Some(s) = &f.status {
            query = query.filter(orders::status.eq(*s));
        }
        if let Some(b) = f.before {
            query = query.filter(orders::id.lt(b.0));
        }
        query.load(tx.conn)
    }

    /// The order with its lines, payments and refunds.
    pub fn view(tx: &mut TenantTx<'_>, order: Order) -> QueryResult<OrderView> {
        let m = tx.merchant;
        let lines = order_lines::table
            .filter(order_lines::merchant_id.eq(m))
            .filter(order_lines::order_id.eq(order.id.0))
            .order(order_lines::line_no.asc())
            .select(OrderLine::as_select())
            .load(tx.conn)?;
        let pays = payments::table
            .filter(payments::merchant_id.eq(m))
            .filter(payments::order_id.eq(order.id.0))
            .order(payments::id.asc())
            .select(Payment::as_select())
            .load(tx.conn)?;
        let refs: Vec<Refund> = refunds::table
            .filter(refunds::merchant_id.eq(m))
            .filter(refunds::order_id.eq(order.id.0))
            .order(refunds::id.asc())
            .select(Refund::as_select())
            .load(tx.conn)?;
        let mut rlines: Vec<RefundLine> = refund_lines::table
            .filter(refund_lines::merchant_id.eq(m))
            .filter(refund_lines::order_id.eq(order.id.0))
            .order((refund_lines::refund_id.asc(), refund_lines::line_no.asc()))
            .select(RefundLine::as_select())
            .load(tx.conn)?;
        let refunds = refs
            .into_iter()
            .map(|refund| {
                let (mine, rest): (Vec<_>, Vec<_>) =
                    rlines.drain(..).partition(|l| l.refund_id == refund.id);
                rlines = rest;
                RefundView {
                    refund,
                    lines: mine,
                }
            })
            .collect();
        Ok(OrderView {
            order,
            lines,
            payments: pays,
            refunds,
        })
    }
}
