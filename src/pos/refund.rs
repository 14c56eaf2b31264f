//! Refunds and voids of a recorded order.
//!
//! Both lock the order first, so two refunds of one order run one after the
//! other and the second sees what the first refunded: together they can
//! never return more than was paid, in total or per line.
//!
//! A void cancels an order as if it never happened (stock comes back) and
//! is allowed only before settlement: on the merchant's business day the
//! order was made (in the merchant's time zone), and only if nothing was
//! refunded yet. Afterwards, refund it.
//!
//! A refund is of the goods' value: a line's units at their share of the
//! line's total (what the customer paid for it, tax-inclusive or not), an
//! amount at most what is left of the order's total. The cash rounding of
//! the sale (`orders.rounding_minor`) stays with the sale, and a cash
//! refund is not rounded here.

use std::collections::BTreeMap;

use chrono::Utc;
use uuid::Uuid;

use super::pricing::refund_share;
use crate::db::{
    ids::{OrderId, ProductId, RefundId, StaffId},
    kinds::{Method, OrderStatus},
    tenant::{
        TenantTx,
        inventory::{self, Change, Reason, Short},
        orders::{Order, OrderLine, OrderView, Refund, RefundLine, RefundView},
        products::Product,
    },
};

#[derive(Debug, Clone)]
pub enum RefundWhat {
    /// These quantities of these lines (by line number).
    Lines(Vec<(i32, i32)>),
    /// An amount, not tied to any line.
    Amount(i64),
}

#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub what: RefundWhat,
    pub restock: bool,
    pub reason: Option<String>,
    pub method: Option<Method>,
    pub staff: StaffId,
}

/// Why a refund or a void is refused. The text is the message a client
/// reads; the API gives each variant its status and code
/// (`crate::api::errors`).
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("order not found")]
    OrderNotFound,
    #[error("the order was voided; there is nothing to refund")]
    RefundOfVoided,
    #[error("the order is already voided")]
    AlreadyVoided,
    #[error("the order has refunds; refund the rest instead of voiding it")]
    VoidOfRefunded,
    #[error("the order's business day is over and it is settled; refund it instead")]
    Settled,
    #[error("lines[{index}].lineNo: is listed twice")]
    LineListedTwice { index: usize },
    #[error("lines[{index}].lineNo: no such line on this order")]
    NoSuchLine { index: usize },
    #[error("lines[{index}].quantity: only {left} unit(s) of line {line_no} are left to refund")]
    ExceedsQuantity {
        index: usize,
        line_no: i32,
        left: i32,
    },
    #[error("amountMinor: {asked} is more than the {remaining} left to refund on this order")]
    AmountExceedsPaid { asked: i64, remaining: i64 },
    #[error(
        "these lines are worth {worth}, more than the {remaining} left to refund on this order"
    )]
    LinesExceedPaid { worth: i64, remaining: i64 },
    #[error("there is nothing left to refund on this order")]
    NothingLeft,
    /// A product of the order has no stock level to put units back on
    /// (every product has one: a bug, not the client's doing).
    #[error("product {} has no stock level", .0.0)]
    NoStockLevel(ProductId),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

/// Locks order `id`, or says it does not exist.
fn lock(tx: &mut TenantTx<'_>, id: OrderId) -> Result<Order, RefundError> {
    Order::lock(tx, id).map_err(|e| match e {
        diesel::result::Error::NotFound => RefundError::OrderNotFound,
        e => e.into(),
    })
}

/// Puts `units` (line number, quantity) of the order's `lines` back on the
/// shelf: one movement per product whose stock is tracked, in product id
/// order (the order sales take stock in, so they cannot deadlock).
fn put_back(
    tx: &mut TenantTx<'_>,
    order: OrderId,
    lines: &[OrderLine],
    units: &[(i32, i32)],
    reason: Reason,
    refund: Option<RefundId>,
    staff: StaffId,
) -> Result<(), RefundError> {
    let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id.0).collect();
    let tracked: Vec<ProductId> = Product::find_many(tx, &ids)?
        .into_iter()
        .filter(|p| p.track_stock)
        .map(|p| p.id)
        .collect();
    let mut back: BTreeMap<ProductId, i64> = BTreeMap::new();
    for (line_no, qty) in units {
        if let Some(l) = lines.iter().find(|l| l.line_no == *line_no)
            && tracked.contains(&l.product_id)
        {
            *back.entry(l.product_id).or_default() += i64::from(*qty);
        }
    }
    inventory::apply(
        tx,
        &Change {
            reason,
            order: Some(order),
            refund,
            staff: Some(staff),
            note: None,
            allow_negative: true,
        },
        &back,
    )?
    .map_err(|Short(p)| RefundError::NoStockLevel(p))?;
    Ok(())
}

/// Refunds part or all of order `id`.
pub fn refund(
    tx: &mut TenantTx<'_>,
    id: OrderId,
    req: &RefundRequest,
) -> Result<(RefundView, OrderView), RefundError> {
    let order = lock(tx, id)?;
    if order.status == OrderStatus::Voided {
        return Err(RefundError::RefundOfVoided);
    }
    let remaining = order.total_minor - order.refunded_minor;
    let refund_id = RefundId(Uuid::now_v7());
    let (amount, lines) = match &req.what {
        RefundWhat::Amount(a) => {
            if *a > remaining {
                return Err(RefundError::AmountExceedsPaid {
                    asked: *a,
                    remaining,
                });
            }
            (*a, Vec::new())
        }
        RefundWhat::Lines(wanted) => {
            let order_lines = Order::lines(tx, id)?;
            let mut lines = Vec::with_capacity(wanted.len());
            let mut amount = 0i64;
            for (i, (line_no, qty)) in wanted.iter().enumerate() {
                if wanted[..i].iter().any(|(n, _)| n == line_no) {
                    return Err(RefundError::LineListedTwice { index: i });
                }
                let l = order_lines
                    .iter()
                    .find(|l| l.line_no == *line_no)
                    .ok_or(RefundError::NoSuchLine { index: i })?;
                let left = l.quantity - l.refunded_quantity;
                if *qty > left {
                    return Err(RefundError::ExceedsQuantity {
                        index: i,
                        line_no: *line_no,
                        left,
                    });
                }
                let share = refund_share(
                    l.total_minor,
                    l.quantity,
                    l.refunded_quantity,
                    l.refunded_minor,
                    *qty,
                );
                amount += share;
                lines.push(RefundLine {
                    merchant_id: order.merchant_id,
                    refund_id,
                    order_id: id,
                    line_no: *line_no,
                    quantity: *qty,
                    amount_minor: share,
                });
            }
            if amount > remaining {
                return Err(RefundError::LinesExceedPaid {
                    worth: amount,
                    remaining,
                });
            }
            if req.restock {
                let units: Vec<(i32, i32)> =
                    lines.iter().map(|l| (l.line_no, l.quantity)).collect();
                put_back(
                    tx,
                    id,
                    &order_lines,
                    &units,
                    Reason::Refund,
                    Some(refund_id),
                    req.staff,
                )?;
            }
            (amount, lines)
        }
    };
    if amount <= 0 {
        return Err(RefundError::NothingLeft);
    }
    let method = match req.method {
        Some(m) => m,
        None => Order::payment_methods(tx, id)?
            .into_iter()
            .next()
            .unwrap_or(Method::Cash),
    };
    let refund = Refund {
        merchant_id: order.merchant_id,
        id: refund_id,
        order_id: id,
        amount_minor: amount,
        method,
        restock: req.restock && !lines.is_empty(),
        reason: req.reason.clone(),
        staff_id: req.staff,
        created_at: Utc::now(),
    };
    Refund::insert(tx, &order, &refund, &lines)?;
    let order = Order::find(tx, id)?;
    let view = Order::view(tx, order)?;
    Ok((RefundView { refund, lines }, view))
}

/// Voids order `id` if it is not settled yet.
pub fn void(
    tx: &mut TenantTx<'_>,
    id: OrderId,
    tz: chrono_tz::Tz,
    staff: StaffId,
) -> Result<OrderView, RefundError> {
    let order = lock(tx, id)?;
    match order.status {
        OrderStatus::Voided => {
            return Err(RefundError::AlreadyVoided);
        }
        OrderStatus::Completed => {}
        OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
            return Err(RefundError::VoidOfRefunded);
        }
    }
    let today = Utc::now().with_timezone(&tz).date_naive();
    if order.created_at.with_timezone(&tz).date_naive() != today {
        return Err(RefundError::Settled);
    }
    let lines = Order::lines(tx, id)?;
    let units: Vec<(i32, i32)> = lines.iter().map(|l| (l.line_no, l.quantity)).collect();
    put_back(tx, id, &lines, &units, Reason::Void, None, staff)?;
    let order = Order::void(tx, id)?;
    Ok(Order::view(tx, order)?)
}
