//! `/products`: the catalog. Read: any staff; write: manager or owner.

use rocket::{FromForm, Route, delete, get, http::Status, patch, post, routes, serde::json::Json};
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::{
    Body, docs,
    fields::{Name, PageLimit, SearchText, Sku, TaxRateBps, UnitPrice},
    nullable,
    params::{self, Page},
};
use crate::{
    api::{
        audit::Audit,
        errors::{plan_limit_reached, storage_room},
        guards::{Manager, Staff},
    },
    db::{
        ids::ProductId,
        platform::plans::LimitKind,
        tenant::{
            audit,
            products::{NewProduct, Product, ProductChanges, ProductFilter},
        },
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::{context::TenantContext, tenant_db::TenantDb},
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateProduct {
    sku: Sku,
    name: Name,
    price_minor: UnitPrice,
    /// 0 when absent.
    tax_rate_bps: Option<TaxRateBps>,
    #[serde(default)]
    category_id: Option<Uuid>,
    #[serde(default)]
    track_stock: bool,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

/// Only the fields given change; `categoryId: null` uncategorises.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    clippy::option_option,
    reason = "PATCH: absent leaves a field as it is, null clears it"
)]
struct UpdateProduct {
    sku: Option<Sku>,
    name: Option<Name>,
    price_minor: Option<UnitPrice>,
    tax_rate_bps: Option<TaxRateBps>,
    #[serde(default, deserialize_with = "nullable")]
    category_id: Option<Option<Uuid>>,
    track_stock: Option<bool>,
    active: Option<bool>,
}

/// A taken sku is 409 `sku_taken`, a category of no one's 422
/// `unknown_category`.
fn product_error(e: diesel::result::Error) -> ApiError {
    match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _,
        ) => ApiError::new(
            Status::UnprocessableEntity,
            ErrorCode::UnknownCategory,
            "categoryId: no such category",
        ),
        e => ApiError::or_taken(
            "product",
            ErrorCode::SkuTaken,
            "another product already has this sku",
        )(e),
    }
}

#[derive(Debug, FromForm)]
struct ListQuery<'r> {
    q: Option<&'r str>,
    #[field(name = "categoryId")]
    category_id: Option<&'r str>,
    active: Option<&'r str>,
    limit: Option<&'r str>,
    cursor: Option<&'r str>,
}

impl ListQuery<'_> {
    fn filter(&self) -> ApiResult<ProductFilter> {
        Ok(ProductFilter {
            q: params::search(self.q)?,
            category_id: params::uuid("categoryId", self.category_id)?,
            active: params::boolean("active", self.active)?,
            after: params::uuid("cursor", self.cursor)?.map(ProductId),
            limit: params::limit(self.limit)?,
        })
    }
}

/// The catalog, in creation order.
#[utoipa::path(get, path = "/products", tag = "catalog", security(("staff" = [])),
    params(
        ("q" = inline(Option<SearchText>), Query, description = "search in sku and name"),
        ("categoryId" = Option<Uuid>, Query),
        ("active" = Option<bool>, Query),
        ("limit" = inline(Option<PageLimit>), Query, description = "default 50"),
        ("cursor" = Option<Uuid>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, body = Page<Product>),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/products?<query..>")]
async fn list(
    _staff: &Staff,
    db: TenantDb,
    query: ListQuery<'_>,
) -> ApiResult<Json<Page<Product>>> {
    let filter = query.filter()?;
    let limit = filter.limit;
    let items = db.run(move |tx| Ok(Product::list(tx, &filter)?)).await?;
    Ok(Json(Page::new(items, limit, |p| p.id.to_string())))
}

#[utoipa::path(get, path = "/products/{id}", tag = "catalog", security(("staff" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = Product),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/products/<id>")]
async fn get_one(_staff: &Staff, db: TenantDb, id: ProductId) -> ApiResult<Json<Product>> {
    db.run(move |tx| Product::find(tx, id).map_err(ApiError::or_not_found("product")))
        .await
        .map(Json)
}

/// Manager or owner. `sku` is unique per merchant (409 `sku_taken`). A
/// merchant at its `maxProducts` limit, or whose storage has reached its
/// `maxStorageBytes`, gets 409 `plan_limit_reached`.
#[utoipa::path(post, path = "/products", tag = "catalog", security(("staff" = [])),
    request_body = CreateProduct,
    responses(
        (status = 201, body = Product),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/products", data = "<body>")]
async fn create(
    _m: Manager<'_>,
    ctx: &TenantContext,
    db: TenantDb,
    body: Body<CreateProduct>,
) -> ApiResult<(Status, Json<Product>)> {
    storage_room(ctx)?;
    let b = body.0;
    let new = NewProduct {
        sku: b.sku.into_inner(),
        name: b.name.into_inner(),
        price_minor: b.price_minor.get(),
        tax_rate_bps: b.tax_rate_bps.map_or(0, TaxRateBps::get),
        category_id: b.category_id,
        track_stock: b.track_stock,
        active: b.active,
    };
    // Counted in the creating transaction, under a lock that the next
    // creation waits for (`Product::lock_and_count`): two creations at once
    // cannot both take the last place. Only a merchant with a limit pays.
    let max = ctx.limit(LimitKind::MaxProducts);
    let plan = ctx.plan.key.clone();
    let product = db
        .run(move |tx| {
            if let Some(max) = max
                && Product::lock_and_count(tx)? >= max
            {
                return Err(plan_limit_reached(&plan, LimitKind::MaxProducts, max));
            }
            Product::create(tx, &new).map_err(product_error)
        })
        .await?;
    Ok((Status::Created, Json(product)))
}

/// Manager or owner. A price change is recorded in the audit trail.
#[utoipa::path(patch, path = "/products/{id}", tag = "catalog", security(("staff" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateProduct,
    responses(
        (status = 200, body = Product),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[patch("/products/<id>", data = "<body>")]
async fn update(
    _m: Manager<'_>,
    audit: Audit,
    db: TenantDb,
    id: ProductId,
    body: Body<UpdateProduct>,
) -> ApiResult<Json<Product>> {
    let Audit(actor) = audit;
    let b = body.0;
    let changes = ProductChanges {
        sku: b.sku.map(Sku::into_inner),
        name: b.name.map(Name::into_inner),
        price_minor: b.price_minor.map(UnitPrice::get),
        tax_rate_bps: b.tax_rate_bps.map(TaxRateBps::get),
        category_id: b.category_id,
        track_stock: b.track_stock,
        active: b.active,
    };
    db.run(move |tx| {
        // A new price is recorded in the audit trail (one statement, and
        // only when a price is given and differs).
        if let Some(price) = changes.price_minor {
            audit::record_price_change(tx, &actor, id, price)?;
        }
        Product::update(tx, id, &changes).map_err(product_error)
    })
    .await
    .map(Json)
}

/// Manager or owner.
#[utoipa::path(delete, path = "/products/{id}", tag = "catalog", security(("staff" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    ))]
#[delete("/products/<id>")]
async fn remove(_m: Manager<'_>, db: TenantDb, id: ProductId) -> ApiResult<Status> {
    db.run(move |tx| Product::delete(tx, id).map_err(ApiError::or_not_found("product")))
        .await?;
    Ok(Status::NoContent)
}

#[derive(OpenApi)]
#[openapi(paths(list, get_one, create, update, remove))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![list, get_one, create, update, remove]
}
