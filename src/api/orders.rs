//! `/orders`: sales, their refunds and voids.
//!
//! Creating an order, refunding and voiding each need an
//! `Idempotency-Key` (see [`super::idempotent`]). Totals, tax and change are
//! computed on the server ([`crate::pos::pricing`]); stock is taken in the
//! same transaction as the order.

use chrono::{SubsecRound, Utc};
use rocket::{FromForm, Route, State, get, http::Status, post, routes, serde::json::Json};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{
    Body, docs,
    fields::{
        Amount, Instant, LineNo, Note, PageLimit, PositiveAmount, Quantity, ShortText, UnitPrice,
        list_field, opt,
    },
    idempotent::{self, Round, Stored},
    params::{self, IdempotencyKey, Page},
};
use crate::{
    api::{
        audit::{Audit, details},
        guards::{Manager, Staff},
    },
    app::App,
    auth::Role,
    db::{
        ids::{CustomerId, OrderId, ProductId, RefundId},
        kinds::{AuditAction, Method, OrderStatus},
        tenant::{
            TenantCalls,
            changes::{self, AuditEntry, Changed, OrderChange},
            orders::{Order, OrderFilter, OrderView, RefundView},
            sales::KeyClaim,
        },
    },
    error::{ApiError, ApiResult},
    pos::{
        RefundError,
        checkout::{self, OfflineBill, Recorded, Sale, SaleKey, SaleLine, Tender},
        refund::{self, RefundRequest, RefundWhat},
    },
    tenancy::{context::TenantContext, settings::Settings, tenant_db::TenantDb},
};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineBody {
    pub product_id: ProductId,
    pub quantity: Quantity,
    /// Defaults to the catalog price (for an offline bill, the price in
    /// effect at the bill's time); another price needs the manager role.
    pub unit_price_minor: Option<UnitPrice>,
    /// A discount off the line; needs the manager role, except within the
    /// merchant's `cashierDiscountLimitBps`.
    #[serde(default)]
    pub discount_minor: Amount,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentBody {
    pub method: Method,
    pub amount_minor: PositiveAmount,
    pub reference: Option<ShortText>,
}

list_field!(
    /// The lines of a sale.
    #[derive(Clone, Serialize)]
    pub Lines: LineBody, 1, checkout::MAX_LINES
);
list_field!(
    #[derive(Clone, Serialize)]
    /// The payments of a sale (none for a sale of nothing to pay).
    pub Payments: PaymentBody, 0, checkout::MAX_PAYMENTS
);

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrder {
    pub lines: Lines,
    #[serde(default)]
    pub payments: Payments,
    pub customer_id: Option<CustomerId>,
    pub note: Option<Note>,
}

impl CreateOrder {
    /// The sale this body asks for, by `staff`, under the merchant's
    /// `settings` (cashier discount limit, tax-inclusive prices, cash
    /// rounding).
    pub fn into_sale(
        self,
        staff: &Staff,
        settings: &Settings,
        offline: Option<OfflineBill>,
    ) -> Sale {
        Sale {
            lines: self
                .lines
                .into_inner()
                .into_iter()
                .map(|l| SaleLine {
                    product_id: l.product_id,
                    quantity: l.quantity.get(),
                    unit_price_minor: l.unit_price_minor.map(UnitPrice::get),
                    discount_minor: l.discount_minor.get(),
                })
                .collect(),
            payments: self
                .payments
                .into_inner()
                .into_iter()
                .map(|p| Tender {
                    method: p.method,
                    amount_minor: p.amount_minor.get(),
                    reference: opt(p.reference),
                })
                .collect(),
            customer_id: self.customer_id,
            note: opt(self.note),
            staff: staff.claims.sub,
            currency: staff.placement.currency.to_string(),
            may_override_price: staff.role() >= Role::Manager,
            discount_limit_bps: settings.cashier_discount_limit_bps,
            prices_include_tax: settings.prices_include_tax,
            cash_rounding: settings.cash_rounding,
            offline,
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> ApiResult<serde_json::Value> {
    serde_json::to_value(v).map_err(ApiError::internal)
}

/// A sale. Totals, tax and change are computed by the server; stock is
/// taken in the same transaction (409 `insufficient_stock`).
#[utoipa::path(post, path = "/orders", tag = "orders", security(("staff" = [])),
    params(("Idempotency-Key" = String, Header, description = "Required: a key unique to the operation (a UUID). The same key and body answer the stored response again (`Idempotent-Replayed: true`); the same key with another body is 422 `idempotency_key_reused`; a key still in flight is 409 `idempotency_key_in_use`")),
    request_body = CreateOrder,
    responses(
        (status = 201, body = OrderView),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/orders", data = "<body>")]
async fn create(
    staff: &Staff,
    ctx: &TenantContext,
    db: TenantDb,
    key: IdempotencyKey,
    app: &State<App>,
    body: Body<CreateOrder>,
) -> ApiResult<Stored> {
    let hash = IdempotencyKey::request_hash("POST /orders", &body.0)?;
    let sale = body.0.into_sale(staff, &ctx.settings, None);
    // A request that fails validation saves nothing under its key.
    checkout::validate(&sale)?;
    let key = SaleKey {
        key: key.0,
        hash,
        retention: app.settings.idempotency_retention,
        status: Status::Created.code,
    };
    let known = app.known_products.clone();
    let recorded = db
        .call(move |calls| Ok(checkout::record(calls, &sale, Some(&key), Some(&known))?))
        .await?;
    match recorded {
        Recorded::Created { view, body } => {
            app.usage.orders(staff.claims.mid, 1);
            Ok(Stored {
                status: Status::Created,
                body: body.map_or_else(|| to_json(&view), Ok)?,
                replayed: false,
            })
        }
        Recorded::Replay { status, body } => Ok(idempotent::replay(status, body)),
        Recorded::KeyReused => Err(idempotent::reused()),
        Recorded::KeyInFlight => Err(idempotent::in_flight()),
        Recorded::Duplicate(_) => Err(ApiError::internal(
            "a till sale was answered as an offline bill's duplicate",
        )),
    }
}

#[derive(Debug, FromForm)]
struct ListQuery<'r> {
    from: Option<&'r str>,
    to: Option<&'r str>,
    status: Option<&'r str>,
    limit: Option<&'r str>,
    cursor: Option<&'r str>,
}

/// Orders, newest first.
#[utoipa::path(get, path = "/orders", tag = "orders", security(("staff" = [])),
    params(
        ("from" = inline(Option<Instant>), Query, description = "RFC 3339, inclusive"),
        ("to" = inline(Option<Instant>), Query, description = "RFC 3339, exclusive"),
        ("status" = inline(Option<OrderStatus>), Query),
        ("limit" = inline(Option<PageLimit>), Query, description = "default 50"),
        ("cursor" = Option<Uuid>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, body = Page<Order>),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/orders?<query..>")]
async fn list(_staff: &Staff, db: TenantDb, query: ListQuery<'_>) -> ApiResult<Json<Page<Order>>> {
    let status = query
        .status
        .map(|s| {
            OrderStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    "must be completed, partially_refunded, refunded or voided",
                )
            })
        })
        .transpose()?;
    let filter = OrderFilter {
        from: params::instant("from", query.from)?,
        to: params::instant("to", query.to)?,
        status,
        before: params::uuid("cursor", query.cursor)?.map(OrderId),
        limit: params::limit(query.limit)?,
    };
    let limit = filter.limit;
    let items = db.run(move |tx| Ok(Order::list(tx, &filter)?)).await?;
    Ok(Json(Page::new(items, limit, |o| o.id.to_string())))
}

/// An order with its lines, payments and refunds.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("staff" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = OrderView),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/orders/<id>")]
async fn get_one(_staff: &Staff, db: TenantDb, id: OrderId) -> ApiResult<Json<OrderView>> {
    db.run(move |tx| {
        let order = Order::find(tx, id).map_err(ApiError::or_not_found("order"))?;
        Ok(Order::view(tx, order)?)
    })
    .await
    .map(Json)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RefundLineBody {
    line_no: LineNo,
    quantity: Quantity,
}

list_field!(
    /// The lines of a refund.
    #[derive(Clone, Serialize)]
    RefundLines: RefundLineBody, 1, checkout::MAX_LINES
);

/// Either `lines` (refund these units; `restock` puts them back on the
/// shelf) or `amountMinor` (an amount not tied to a line).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRefund {
    lines: Option<RefundLines>,
    amount_minor: Option<PositiveAmount>,
    #[serde(default)]
    restock: bool,
    reason: Option<Note>,
    /// How the money goes back; defaults to the order's main payment method.
    method: Option<Method>,
}

/// What the audit trail records of a refund.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RefundDetails {
    order_id: OrderId,
    refund_id: RefundId,
    amount_minor: i64,
    method: Method,
    restock: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// What the audit trail records of a void.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VoidDetails {
    order_id: OrderId,
    total_minor: i64,
}

/// A refund and the order after it.
#[derive(Debug, Serialize, ToSchema)]
struct Refunded {
    refund: RefundView,
    order: OrderView,
}

/// Manager or owner. Partial or full; never more than was paid. Recorded
/// in the audit trail.
#[utoipa::path(post, path = "/orders/{id}/refunds", tag = "orders", security(("staff" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header, description = "Required: a key unique to the operation (a UUID). The same key and body answer the stored response again (`Idempotent-Replayed: true`); the same key with another body is 422 `idempotency_key_reused`; a key still in flight is 409 `idempotency_key_in_use`")),
    request_body = CreateRefund,
    responses(
        (status = 201, description = "The refund and the order after it", body = Refunded),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/orders/<id>/refunds", data = "<body>")]
async fn create_refund(
    m: Manager<'_>,
    audit: Audit,
    db: TenantDb,
    key: IdempotencyKey,
    app: &State<App>,
    id: OrderId,
    body: Body<CreateRefund>,
) -> ApiResult<Stored> {
    let Audit(actor) = audit;
    let hash = IdempotencyKey::request_hash(&format!("POST /orders/{id}/refunds"), &body.0)?;
    let b = body.0;
    let what = match (b.lines, b.amount_minor) {
        (Some(lines), None) => RefundWhat::Lines(
            lines
                .into_inner()
                .iter()
                .map(|l| (l.line_no.get(), l.quantity.get()))
                .collect(),
        ),
        (None, Some(a)) => {
            if b.restock {
                return Err(ApiError::invalid(
                    "restock",
                    "needs lines: an amount is not tied to any stock",
                ));
            }
            RefundWhat::Amount(a.get())
        }
        _ => {
            return Err(ApiError::invalid(
                "lines",
                "give either lines or amountMinor",
            ));
        }
    };
    let req = RefundRequest {
        what,
        restock: b.restock,
        reason: opt(b.reason),
        method: b.method,
        staff: m.0.claims.sub,
    };
    let retention = app.settings.idempotency_retention;
    db.call(move |calls| {
        idempotent::rounds(|| {
            let (view, tracked) = match start(calls, &key.0, &hash, id)? {
                Start::Order(view, tracked) => (view, tracked),
                Start::Stored(stored) => return Ok(Round::Done(stored)),
            };
            let now = Utc::now().trunc_subsecs(6);
            let plan = refund::plan_refund(&view, &tracked, &req, now)?;
            let r = &plan.refund.refund;
            let recorded = RefundDetails {
                order_id: id,
                refund_id: r.id,
                amount_minor: r.amount_minor,
                method: r.method,
                restock: r.restock,
                reason: r.reason.clone(),
            };
            let body = to_json(&Refunded {
                refund: plan.refund.clone(),
                order: plan.order_after.clone(),
            })?;
            let change = OrderChange {
                before: &view.order,
                after: &plan.order_after.order,
                at: now,
                staff: req.staff.0,
                refund: Some((r, &plan.refund.lines)),
                put_back: &plan.put_back,
                audit: AuditEntry {
                    actor: &actor,
                    action: AuditAction::OrderRefunded,
                    details: details(&recorded),
                },
            };
            write_change(
                calls,
                &key.0,
                &hash,
                retention,
                Status::Created,
                body,
                &change,
            )
        })
    })
    .await
}

/// Writes `change` under `key`, with `body` as its stored response:
/// the request's answer, a replay, or [`Round::Again`] when the order
/// changed since it was read.
fn write_change(
    calls: &mut TenantCalls<'_>,
    key: &str,
    hash: &str,
    retention: std::time::Duration,
    status: Status,
    body: serde_json::Value,
    change: &OrderChange<'_>,
) -> ApiResult<Round<Stored>> {
    let claim = KeyClaim {
        key,
        hash,
        retention,
        status: status.code,
        body: &body,
    };
    match changes::change_order(calls, &claim, change)? {
        Changed::Done(()) => Ok(Round::Done(Stored {
            status,
            body,
            replayed: false,
        })),
        Changed::Stale => Ok(Round::Again),
        Changed::Replay { status, body } => Ok(Round::Done(idempotent::replay(status, body))),
        Changed::Mismatch => Err(idempotent::reused()),
        Changed::InFlight => Err(idempotent::in_flight()),
        Changed::Short(product) => Err(RefundError::NoStockLevel(product).into()),
        Changed::Duplicate(_) => Err(ApiError::internal(
            "a refund or a void was answered as an offline bill's duplicate",
        )),
    }
}

/// What a refund or a void starts from: the order as read with the
/// products of its lines whose stock is tracked, or the stored answer of an
/// earlier run of the same request.
enum Start {
    Order(Box<OrderView>, Vec<ProductId>),
    Stored(Stored),
}

fn start(calls: &mut TenantCalls<'_>, key: &str, hash: &str, id: OrderId) -> ApiResult<Start> {
    let read = changes::read_order(calls, key, id)?;
    if let Some(stored) = idempotent::check_stored(read.key.as_ref(), hash)? {
        return Ok(Start::Stored(stored));
    }
    let view = read.view.ok_or(RefundError::OrderNotFound)?;
    Ok(Start::Order(Box::new(view), read.tracked))
}

/// Manager or owner; only before settlement. Recorded in the audit trail.
#[utoipa::path(post, path = "/orders/{id}/void", tag = "orders", security(("staff" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header, description = "Required: a key unique to the operation (a UUID). The same key and body answer the stored response again (`Idempotent-Replayed: true`); the same key with another body is 422 `idempotency_key_reused`; a key still in flight is 409 `idempotency_key_in_use`")),
    responses(
        (status = 200, body = OrderView),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/orders/<id>/void")]
async fn void(
    m: Manager<'_>,
    audit: Audit,
    db: TenantDb,
    key: IdempotencyKey,
    app: &State<App>,
    id: OrderId,
) -> ApiResult<Stored> {
    let Audit(actor) = audit;
    let hash = IdempotencyKey::request_hash(&format!("POST /orders/{id}/void"), &())?;
    let tz = m.0.placement.timezone;
    let staff = m.0.claims.sub;
    let retention = app.settings.idempotency_retention;
    db.call(move |calls| {
        idempotent::rounds(|| {
            let (view, tracked) = match start(calls, &key.0, &hash, id)? {
                Start::Order(view, tracked) => (view, tracked),
                Start::Stored(stored) => return Ok(Round::Done(stored)),
            };
            let now = Utc::now().trunc_subsecs(6);
            let plan = refund::plan_void(&view, &tracked, tz, now)?;
            let recorded = VoidDetails {
                order_id: id,
                total_minor: view.order.total_minor,
            };
            let body = to_json(&plan.order_after)?;
            let change = OrderChange {
                before: &view.order,
                after: &plan.order_after.order,
                at: now,
                staff: staff.0,
                refund: None,
                put_back: &plan.put_back,
                audit: AuditEntry {
                    actor: &actor,
                    action: AuditAction::OrderVoided,
                    details: details(&recorded),
                },
            };
            write_change(calls, &key.0, &hash, retention, Status::Ok, body, &change)
        })
    })
    .await
}

#[derive(OpenApi)]
#[openapi(paths(create, list, get_one, create_refund, void))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![create, list, get_one, create_refund, void]
}
