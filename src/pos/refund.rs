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

use std::collections::BTreeMap;

use chrono::Utc;
use rocket::http::Status;
use uuid::Uuid;

use super::pricing::{Method, refund_share};
use crate::{
    db::{
        ids::{OrderId, ProductId, RefundId, StaffId},
        kinds::OrderStatus,
        tenant::{
            TenantTx,
            inventory::{self, Change, Reason, Short},
            orders::{Order, OrderLine, OrderView, Refund, RefundLine, RefundView},
            products::Product,
        },
    },
    error::{ApiError, ApiResult, ErrorCode},
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

fn exceeds(message: String) -> ApiError {
    ApiError::new(
        Status::UnprocessableEntity,
        ErrorCode::RefundExceedsPaid,
        message,
    )
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
) -> ApiResult<()> {
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
    .map_err(|Short(p)| ApiError::internal(format!("product {} has no stock level", p.0)))?;
    Ok(())
}

/// Refunds part or all of order `id`.
#[expect(
    clippy::too_many_lines,
    reason = "one transaction, read top to bottom: check the amounts, then write"
)]
pub fn refund(
    tx: &mut TenantTx<'_>,
    id: OrderId,
    req: &RefundRequest,
) -> ApiResult<(RefundView, OrderView)> {
    let order = Order::lock(tx, id).map_err(ApiError::or_not_found("order"))?;
    if order.status == OrderStatus::Voided {
        return Err(ApiError::conflict(
            ErrorCode::OrderVoided,
            "the order was voided; there is nothing to refund",
        ));
    }
    let remaining = order.total_minor - order.refunded_minor;
    let refund_id = RefundId(Uuid::now_v7());
    let (amount, lines) = match &req.what {
        RefundWhat::Amount(a) => {
            if *a > remaining {
                return Err(exceeds(format!(
                    "amountMinor: {a} is more than the {remaining} left to refund on this order"
                )));
            }
            (*a, Vec::new())
        }
        RefundWhat::Lines(wanted) => {
            let order_lines = Order::lines(tx, id)?;
            let mut lines = Vec::with_capacity(wanted.len());
            let mut amount = 0i64;
            for (i, (line_no, qty)) in wanted.iter().enumerate() {
                if wanted[..i].iter().any(|(n, _)| n == line_no) {
                    return Err(ApiError::invalid(
                        &format!("lines[{i}].lineNo"),
                        "is listed twice",
                    ));
                }
                let l = order_lines
                    .iter()
                    .find(|l| l.line_no == *line_no)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            &format!("lines[{i}].lineNo"),
                            "no such line on this order",
                        )
                    })?;
                let left = l.quantity - l.refunded_quantity;
                if *qty > left {
                    return Err(ApiError::new(
                        Status::UnprocessableEntity,
                        ErrorCode::RefundExceedsQuantity,
                        format!(
                            "lines[{i}].quantity: only {left} unit(s) of line {line_no} are left to refund"
                        ),
                    ));
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
                return Err(exceeds(format!(
                    "these lines are worth {amount}, more than the {remaining} left to refund on this order"
                )));
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
        return Err(exceeds(
            "there is nothing left to refund on this order".into(),
        ));
    }
    let method = match req.method {
        Some(m) => m.as_str().to_string(),
        None => Order::payment_methods(tx, id)?
            .into_iter()
            .next()
            .unwrap_or_else(|| Method::Cash.as_str().to_string()),
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
) -> ApiResult<OrderView> {
    let order = Order::lock(tx, id).map_err(ApiError::or_not_found("order"))?;
    match order.status {
        OrderStatus::Voided => {
            return Err(ApiError::conflict(
                ErrorCode::OrderVoided,
                "the order is already voided",
            ));
        }
        OrderStatus::Completed => {}
        OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
            return Err(ApiError::conflict(
                ErrorCode::OrderRefunded,
                "the order has refunds; refund the rest instead of voiding it",
            ));
        }
    }
    let today = Utc::now().with_timezone(&tz).date_naive();
    if order.created_at.with_timezone(&tz).date_naive() != today {
        return Err(ApiError::conflict(
            ErrorCode::OrderSettled,
            "the order's business day is over and it is settled; refund it instead",
        ));
    }
    let lines = Order::lines(tx, id)?;
    let units: Vec<(i32, i32)> = lines.iter().map(|l| (l.line_no, l.quantity)).collect();
    put_back(tx, id, &lines, &units, Reason::Void, None, staff)?;
    let order = Order::void(tx, id)?;
    Ok(Order::view(tx, order)?)
}
