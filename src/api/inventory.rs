//! `/inventory`: stock levels (any staff) and adjustments (manager or owner).
//! Every change is a stock movement; a level always equals the sum of its
//! product's movements.

use rocket::{FromForm, Route, get, http::Status, post, routes, serde::json::Json};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{
    Body, docs,
    fields::{Note, PageLimit, Received, Removed, StockCount, StockDelta, opt},
    idempotent::{self, Round},
    params::{self, Page},
};
use crate::{
    api::{
        audit::{Audit, details},
        guards::{Manager, Staff},
    },
    db::{
        ids::ProductId,
        kinds::AuditAction,
        tenant::{
            changes::{self, AuditEntry, Changed},
            inventory::{self, Level, LevelFilter, MovementRow, Reason},
            products::Product,
        },
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::tenant_db::TenantDb,
};

/// Largest single adjustment, either way.

#[derive(Debug, FromForm)]
struct ListQuery<'r> {
    #[field(name = "needsCount")]
    needs_count: Option<&'r str>,
    #[field(name = "productId")]
    product_id: Option<&'r str>,
    limit: Option<&'r str>,
    cursor: Option<&'r str>,
}

/// Stock levels, by product.
#[utoipa::path(get, path = "/inventory", tag = "inventory", security(("staff" = [])),
    params(
        ("needsCount" = Option<bool>, Query, description = "only products flagged for a count"),
        ("productId" = Option<Uuid>, Query),
        ("limit" = inline(Option<PageLimit>), Query, description = "default 50"),
        ("cursor" = Option<Uuid>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, body = Page<Level>),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/inventory?<query..>")]
async fn list(_staff: &Staff, db: TenantDb, query: ListQuery<'_>) -> ApiResult<Json<Page<Level>>> {
    let filter = LevelFilter {
        needs_count: params::boolean("needsCount", query.needs_count)?,
        product: params::uuid("productId", query.product_id)?.map(ProductId),
        after: params::uuid("cursor", query.cursor)?.map(ProductId),
        limit: params::limit(query.limit)?,
    };
    let limit = filter.limit;
    let items = db
        .run(move |tx| Ok(inventory::levels(tx, &filter)?))
        .await?;
    Ok(Json(Page::new(items, limit, |l| l.product_id.to_string())))
}

/// A product's newest stock movements, newest first.
#[utoipa::path(get, path = "/inventory/{product}/movements", tag = "inventory", security(("staff" = [])),
    params(("product" = Uuid, Path)),
    responses(
        (status = 200, body = Vec<MovementRow>),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/inventory/<product>/movements")]
async fn movements(
    _staff: &Staff,
    db: TenantDb,
    product: ProductId,
) -> ApiResult<Json<Vec<MovementRow>>> {
    db.run(move |tx| {
        Product::find(tx, product).map_err(ApiError::or_not_found("product"))?;
        Ok(inventory::movements(tx, product, params::MAX_LIMIT)?)
    })
    .await
    .map(Json)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AdjustReason {
    Receive,
    Count,
    Damage,
    Correction,
}

/// A stock adjustment; `reason` says which kind and what it takes. `delta`
/// changes the level by that much; a count may instead give
/// `countedQuantity`, what is on the shelf, and clears the "needs a count"
/// flag. The body is read flat (so that errors name their field) and then
/// checked into this shape, which is also what the contract describes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case", try_from = "FlatAdjustment")]
enum Adjustment {
    /// Stock received.
    #[serde(rename_all = "camelCase")]
    Receive {
        product_id: ProductId,
        delta: Received,
        note: Option<Note>,
    },
    /// Stock damaged or lost.
    #[serde(rename_all = "camelCase")]
    Damage {
        product_id: ProductId,
        delta: Removed,
        note: Option<Note>,
    },
    /// A correction either way; `delta` is not zero.
    #[serde(rename_all = "camelCase")]
    Correction {
        product_id: ProductId,
        delta: StockDelta,
        note: Option<Note>,
    },
    /// A count: either `countedQuantity` or `delta`, not both.
    #[serde(rename_all = "camelCase")]
    Count {
        product_id: ProductId,
        delta: Option<StockDelta>,
        counted_quantity: Option<StockCount>,
        note: Option<Note>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FlatAdjustment {
    product_id: ProductId,
    delta: Option<StockDelta>,
    counted_quantity: Option<StockCount>,
    reason: AdjustReason,
    note: Option<Note>,
}

impl TryFrom<FlatAdjustment> for Adjustment {
    type Error = String;

    fn try_from(b: FlatAdjustment) -> Result<Self, String> {
        let invalid = |m: &str| Err(format!("invalid value: {m}"));
        let FlatAdjustment {
            product_id,
            delta,
            counted_quantity,
            reason,
            note,
        } = b;
        let d = delta.map(StockDelta::get);
        if counted_quantity.is_some() && reason != AdjustReason::Count {
            return invalid("countedQuantity: is only for reason `count`");
        }
        match reason {
            AdjustReason::Count => match (d, counted_quantity) {
                (Some(_), Some(_)) | (None, None) => {
                    invalid("delta: give either delta or countedQuantity")
                }
                (Some(0), None) => invalid("delta: must not be zero"),
                _ => Ok(Adjustment::Count {
                    product_id,
                    delta,
                    counted_quantity,
                    note,
                }),
            },
            _ => match (reason, delta) {
                (_, None) => invalid("delta: is required"),
                (_, Some(d)) if d.get() == 0 => invalid("delta: must not be zero"),
                (AdjustReason::Receive, Some(d)) => match Received::new(d.get()) {
                    Some(delta) => Ok(Adjustment::Receive {
                        product_id,
                        delta,
                        note,
                    }),
                    None => invalid("delta: a receipt adds stock: it must be positive"),
                },
                (AdjustReason::Damage, Some(d)) => match Removed::new(d.get()) {
                    Some(delta) => Ok(Adjustment::Damage {
                        product_id,
                        delta,
                        note,
                    }),
                    None => invalid("delta: damage removes stock: it must be negative"),
                },
                (_, Some(delta)) => Ok(Adjustment::Correction {
                    product_id,
                    delta,
                    note,
                }),
            },
        }
    }
}

/// What the audit trail records of an adjustment or a count.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StockDetails {
    product_id: ProductId,
    reason: &'static str,
    delta: i64,
    on_hand: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    counted_quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Adjusted {
    product_id: ProductId,
    delta: i64,
    on_hand: i64,
}

/// Manager or owner. Taking stock below zero is 409 `insufficient_stock`.
/// Recorded in the audit trail.
#[utoipa::path(post, path = "/inventory/adjustments", tag = "inventory", security(("staff" = [])),
    request_body = Adjustment,
    responses(
        (status = 201, body = Adjusted),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/inventory/adjustments", data = "<body>")]
async fn adjust(
    m: Manager<'_>,
    audit: Audit,
    db: TenantDb,
    body: Body<Adjustment>,
) -> ApiResult<(Status, Json<Adjusted>)> {
    let Audit(actor) = audit;
    let (product, reason, delta, counted, note) = match body.0 {
        Adjustment::Receive {
            product_id,
            delta,
            note,
        } => (product_id, Reason::Receive, delta.get(), None, note),
        Adjustment::Damage {
            product_id,
            delta,
            note,
        } => (product_id, Reason::Damage, delta.get(), None, note),
        Adjustment::Correction {
            product_id,
            delta,
            note,
        } => (product_id, Reason::Correction, delta.get(), None, note),
        Adjustment::Count {
            product_id,
            delta,
            counted_quantity,
            note,
        } => (
            product_id,
            Reason::Count,
            delta.map_or(0, StockDelta::get),
            counted_quantity.map(StockCount::get),
            note,
        ),
    };
    let note = opt(note);
    let staff = m.0.claims.sub;
    let out = db
        .call(move |calls| {
            idempotent::rounds(|| {
                let current = changes::read_level(calls, product)?
                    .ok_or_else(|| ApiError::not_found("product"))?
                    .ok_or_else(|| ApiError::from(diesel::result::Error::NotFound))?;
                let delta = match counted {
                    Some(c) => c - current,
                    None => delta,
                };
                let on_hand = current + delta;
                let action = if reason == Reason::Count {
                    AuditAction::StockCounted
                } else {
                    AuditAction::StockAdjusted
                };
                let recorded = StockDetails {
                    product_id: product,
                    reason: reason.as_str(),
                    delta,
                    on_hand,
                    counted_quantity: counted,
                    note: note.clone(),
                };
                let adjustment = changes::Adjustment {
                    product,
                    seen: current,
                    delta,
                    reason: reason.as_str(),
                    staff: staff.0,
                    note: note.as_deref(),
                    audit: AuditEntry {
                        actor: &actor,
                        action,
                        details: details(&recorded),
                    },
                };
                match changes::adjust_level(calls, &adjustment)? {
                    Changed::Done(level) => Ok(Round::Done(Adjusted {
                        product_id: product,
                        delta,
                        on_hand: level,
                    })),
                    Changed::Stale => Ok(Round::Again),
                    // Stock that is not on the shelf cannot be adjusted away.
                    Changed::Short(_) => Err(ApiError::conflict(
                        ErrorCode::InsufficientStock,
                        format!("only {current} in stock; the adjustment would take it below zero"),
                    )),
                    other => Err(ApiError::internal(format!(
                        "a stock adjustment answered {other:?}"
                    ))),
                }
            })
        })
        .await?;
    Ok((Status::Created, Json(out)))
}

#[derive(OpenApi)]
#[openapi(paths(list, movements, adjust))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![list, movements, adjust]
}
