//! Refunds and voids of a recorded order.
//!
//! Both are worked out here from the order as it was read, and written
//! only if the order is still as read (`crate::db::tenant::changes`): two
//! refunds of one order run one after the other and the second sees what
//! the first refunded, so together they can never return more than was
//! paid, in total or per line.
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

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::pricing::refund_share;
use crate::db::{
    ids::{ProductId, RefundId, StaffId},
    kinds::{Method, OrderStatus},
    tenant::orders::{OrderLine, OrderView, Refund, RefundLine, RefundView},
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

/// A refund worked out from the order as it was read.
#[derive(Debug)]
pub struct RefundPlan {
    pub refund: RefundView,
    /// The order with the refund.
    pub order_after: OrderView,
    /// The units put back on the shelf per product (a restock).
    pub put_back: BTreeMap<ProductId, i64>,
}

/// A void worked out from the order as it was read.
#[derive(Debug)]
pub struct VoidPlan {
    /// The order voided.
    pub order_after: OrderView,
    pub put_back: BTreeMap<ProductId, i64>,
}

/// The units of `units` (line number, quantity) of `lines` that go back on
/// the shelf: those of products whose stock is tracked.
fn put_back(
    lines: &[OrderLine],
    tracked: &[ProductId],
    units: impl Iterator<Item = (i32, i32)>,
) -> BTreeMap<ProductId, i64> {
    let mut back: BTreeMap<ProductId, i64> = BTreeMap::new();
    for (line_no, qty) in units {
        if let Some(l) = lines.iter().find(|l| l.line_no == line_no)
            && tracked.contains(&l.product_id)
        {
            *back.entry(l.product_id).or_default() += i64::from(qty);
        }
    }
    back
}

/// The lines `wanted` (line number, quantity) of the order in `view`, each
/// at its share of what was paid for its line, and their sum.
fn line_shares(
    view: &OrderView,
    wanted: &[(i32, i32)],
    refund_id: RefundId,
) -> Result<(i64, Vec<RefundLine>), RefundError> {
    let mut lines = Vec::with_capacity(wanted.len());
    let mut amount = 0i64;
    for (i, (line_no, qty)) in wanted.iter().enumerate() {
        if wanted[..i].iter().any(|(n, _)| n == line_no) {
            return Err(RefundError::LineListedTwice { index: i });
        }
        let l = view
            .lines
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
            merchant_id: view.order.merchant_id,
            refund_id,
            order_id: view.order.id,
            line_no: *line_no,
            quantity: *qty,
            amount_minor: share,
        });
    }
    Ok((amount, lines))
}

/// The refund `req` asks for of the order in `view` (as read, `tracked`
/// naming its products whose stock is tracked), made at `now`: its lines
/// at their share of what was paid, never more than is left.
pub fn plan_refund(
    view: &OrderView,
    tracked: &[ProductId],
    req: &RefundRequest,
    now: DateTime<Utc>,
) -> Result<RefundPlan, RefundError> {
    let order = &view.order;
    if order.status == OrderStatus::Voided {
        return Err(RefundError::RefundOfVoided);
    }
    let remaining = order.total_minor - order.refunded_minor;
    let refund_id = RefundId(Uuid::now_v7());
    let mut back = BTreeMap::new();
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
            let (amount, lines) = line_shares(view, wanted, refund_id)?;
            if amount > remaining {
                return Err(RefundError::LinesExceedPaid {
                    worth: amount,
                    remaining,
                });
            }
            if req.restock {
                back = put_back(
                    &view.lines,
                    tracked,
                    lines.iter().map(|l| (l.line_no, l.quantity)),
                );
            }
            (amount, lines)
        }
    };
    if amount <= 0 {
        return Err(RefundError::NothingLeft);
    }
    // The method paid with most (the first paid, on a tie), else cash.
    let method = req.method.unwrap_or_else(|| {
        view.payments
            .iter()
            .min_by_key(|p| (std::cmp::Reverse(p.amount_minor), p.id))
            .map_or(Method::Cash, |p| p.method)
    });
    let refund = Refund {
        merchant_id: order.merchant_id,
        id: refund_id,
        order_id: order.id,
        amount_minor: amount,
        method,
        restock: req.restock && !lines.is_empty(),
        reason: req.reason.clone(),
        staff_id: req.staff,
        created_at: now,
    };
    let mut after = view.clone();
    for rl in &lines {
        if let Some(l) = after.lines.iter_mut().find(|l| l.line_no == rl.line_no) {
            l.refunded_quantity += rl.quantity;
            l.refunded_minor += rl.amount_minor;
        }
    }
    after.order.refunded_minor += amount;
    after.order.status = if after.order.refunded_minor >= after.order.total_minor {
        OrderStatus::Refunded
    } else {
        OrderStatus::PartiallyRefunded
    };
    let refund = RefundView { refund, lines };
    after.refunds.push(refund.clone());
    Ok(RefundPlan {
        refund,
        order_after: after,
        put_back: back,
    })
}

/// The void of the order in `view` at `now`, if it is not settled yet (in
/// the merchant's time zone `tz`): every unit goes back on the shelf.
pub fn plan_void(
    view: &OrderView,
    tracked: &[ProductId],
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<VoidPlan, RefundError> {
    match view.order.status {
        OrderStatus::Voided => {
            return Err(RefundError::AlreadyVoided);
        }
        OrderStatus::Completed => {}
        OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
            return Err(RefundError::VoidOfRefunded);
        }
    }
    let today = now.with_timezone(&tz).date_naive();
    if view.order.created_at.with_timezone(&tz).date_naive() != today {
        return Err(RefundError::Settled);
    }
    let back = put_back(
        &view.lines,
        tracked,
        view.lines.iter().map(|l| (l.line_no, l.quantity)),
    );
    let mut after = view.clone();
    after.order.status = OrderStatus::Voided;
    after.order.voided_at = Some(now);
    Ok(VoidPlan {
        order_after: after,
        put_back: back,
    })
}
