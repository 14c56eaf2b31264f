//! `/categories`. Read: any staff; write: manager or owner.

use rocket::{Route, delete, get, http::Status, patch, post, routes, serde::json::Json};
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use super::{
    Body, docs,
    fields::{CategoryName, SortOrder},
};
use crate::{
    api::{
        errors::storage_room,
        guards::{Manager, Staff},
    },
    db::{
        ids::CategoryId,
        tenant::categories::{Category, CategoryChanges, NewCategory},
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::tenant_db::TenantDb,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateCategory {
    name: CategoryName,
    /// 0 when absent.
    sort_order: Option<SortOrder>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateCategory {
    name: Option<CategoryName>,
    sort_order: Option<SortOrder>,
}

fn name_conflict(e: diesel::result::Error) -> ApiError {
    ApiError::or_taken(
        "category",
        ErrorCode::CategoryNameTaken,
        "another category has this name",
    )(e)
}

#[utoipa::path(get, path = "/categories", tag = "catalog", security(("staff" = [])),
    responses(
        (status = 200, body = Vec<Category>),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/categories")]
async fn list(_staff: &Staff, db: TenantDb) -> ApiResult<Json<Vec<Category>>> {
    db.run(|tx| Ok(Category::list(tx)?)).await.map(Json)
}

/// Manager or owner; names are unique (409 `category_name_taken`). A
/// merchant whose storage has reached its `maxStorageBytes` gets 409
/// `plan_limit_reached`.
#[utoipa::path(post, path = "/categories", tag = "catalog", security(("staff" = [])),
    request_body = CreateCategory,
    responses(
        (status = 201, body = Category),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/categories", data = "<body>")]
async fn create(
    m: Manager<'_>,
    db: TenantDb,
    body: Body<CreateCategory>,
) -> ApiResult<(Status, Json<Category>)> {
    storage_room(&m.0.context)?;
    let new = NewCategory {
        name: body.0.name.into_inner(),
        sort_order: body.0.sort_order.map_or(0, SortOrder::get),
    };
    let c = db
        .run(move |tx| Category::create(tx, &new).map_err(name_conflict))
        .await?;
    Ok((Status::Created, Json(c)))
}

/// Manager or owner.
#[utoipa::path(patch, path = "/categories/{id}", tag = "catalog", security(("staff" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateCategory,
    responses(
        (status = 200, body = Category),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[patch("/categories/<id>", data = "<body>")]
async fn update(
    _m: Manager<'_>,
    db: TenantDb,
    id: CategoryId,
    body: Body<UpdateCategory>,
) -> ApiResult<Json<Category>> {
    let changes = CategoryChanges {
        name: body.0.name.map(CategoryName::into_inner),
        sort_order: body.0.sort_order.map(SortOrder::get),
    };
    db.run(move |tx| Category::update(tx, id, &changes).map_err(name_conflict))
        .await
        .map(Json)
}

/// Deletes the category; its products stay, uncategorised.
#[utoipa::path(delete, path = "/categories/{id}", tag = "catalog", security(("staff" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    ))]
#[delete("/categories/<id>")]
async fn remove(_m: Manager<'_>, db: TenantDb, id: CategoryId) -> ApiResult<Status> {
    db.run(move |tx| Category::delete(tx, id).map_err(ApiError::or_not_found("category")))
        .await?;
    Ok(Status::NoContent)
}

#[derive(OpenApi)]
#[openapi(paths(list, create, update, remove))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![list, create, update, remove]
}
