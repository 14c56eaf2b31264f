//! `/inventory`: stock levels (any staff) and adjustments (manager or owner).
//! Every change is a stock movement; a level always equals the sum of its
//! product's movements.

use std::collections::BTreeMap;

use rocket::{FromForm, Route, get, http::Status, post, routes, serde::json::Json};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{
    Body, docs,
    fields::{Note, StockCount, StockDelta, opt},
    params::{self, Page},
};
use crate::{
    auth::guards::{Manager, Staff},
    db::{
        ids::ProductId,
        tenant::{
            inventory::{self, Change, Level, LevelFilter, MovementRow, Reason},
            products::Product,
        },
    },
    error::{ApiError, ApiResult},
    tenancy::guards::TenantDb,
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
        ("limit" = Option<i64>, Query, description = "1 to 200, default 50"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
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

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum AdjustReason {
    Receive,
    Count,
    Damage,
    Correction,
}

/// `delta` changes the level by that much; a count may instead give
/// `countedQuantity`, what is on the shelf, and clears the "needs a count"
/// flag.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Adjustment {
    product_id: ProductId,
    /// Non-zero.
    delta: Option<StockDelta>,
    counted_quantity: Option<StockCount>,
    reason: AdjustReason,
    note: Option<Note>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Adjusted {
    product_id: ProductId,
    delta: i64,
    on_hand: i64,
}

/// Manager or owner. Taking stock below zero is 409 `insufficient_stock`.
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
    db: TenantDb,
    body: Body<Adjustment>,
) -> ApiResult<(Status, Json<Adjusted>)> {
    let b = body.0;
    let note = opt(b.note);
    let (delta, counted) = (
        b.delta.map(StockDelta::get),
        b.counted_quantity.map(StockCount::get),
    );
    let reason = match b.reason {
        AdjustReason::Receive => Reason::Receive,
        AdjustReason::Count => Reason::Count,
        AdjustReason::Damage => Reason::Damage,
        AdjustReason::Correction => Reason::Correction,
    };
    match (delta, counted) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::invalid(
                "delta",
                "give either delta or countedQuantity",
            ));
        }
        (None, Some(_)) if reason != Reason::Count => {
            return Err(ApiError::invalid(
                "countedQuantity",
                "is only for reason `count`",
            ));
        }
        (Some(0), None) => {
            return Err(ApiError::invalid("delta", "must not be zero"));
        }
        (Some(d), None) if reason == Reason::Receive && d < 0 => {
            return Err(ApiError::invalid(
                "delta",
                "a receipt adds stock: it must be positive",
            ));
        }
        (Some(d), None) if reason == Reason::Damage && d > 0 => {
            return Err(ApiError::invalid(
                "delta",
                "damage removes stock: it must be negative",
            ));
        }
        _ => {}
    }
    let staff = m.0.claims.sub;
    let product = b.product_id;
    let out = db
        .run(move |tx| {
            Product::find(tx, product).map_err(ApiError::or_not_found("product"))?;
            let current = inventory::level_for_update(tx, product)?;
            let delta = match counted {
                Some(c) => c - current,
                None => delta.unwrap_or(0),
            };
            let on_hand = if delta == 0 {
                current
            } else {
                let moved = inventory::apply(
                    tx,
                    &Change {
                        reason,
                        order: None,
                        refund: None,
                        staff: Some(staff),
                        note: note.as_deref(),
                        // Stock that is not on the shelf cannot be adjusted away.
                        allow_negative: false,
                    },
                    &BTreeMap::from([(product, delta)]),
                )?;
                match moved.as_deref() {
                    Ok([(_, level)]) => *level,
                    _ => {
                        return Err(ApiError::conflict(
                            "insufficient_stock",
                            format!(
                                "only {current} in stock; the adjustment would take it below zero"
                            ),
                        ));
                    }
                }
            };
            if reason == Reason::Count {
                inventory::mark_counted(tx, product)?;
            }
            Ok(Adjusted {
                product_id: product,
                delta,
                on_hand,
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
