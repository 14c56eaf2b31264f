//! `/customers`: any staff may create, read, update and search.

use rocket::{FromForm, Route, get, http::Status, patch, post, routes, serde::json::Json};
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use super::{
    Body, docs,
    fields::{LongNote, Name, OptionalEmail, PageLimit, Phone, SearchText, opt},
    nullable,
    params::{self, Page},
};
use crate::{
    api::{errors::storage_room, guards::Staff},
    db::{
        ids::CustomerId,
        tenant::customers::{Customer, CustomerChanges, CustomerFilter, NewCustomer},
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::tenant_db::TenantDb,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateCustomer {
    name: Name,
    email: Option<OptionalEmail>,
    phone: Option<Phone>,
    note: Option<LongNote>,
}

/// Only the fields given change; `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    clippy::option_option,
    reason = "PATCH: absent leaves a field as it is, null clears it"
)]
struct UpdateCustomer {
    name: Option<Name>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<OptionalEmail>>,
    #[serde(default, deserialize_with = "nullable")]
    phone: Option<Option<Phone>>,
    #[serde(default, deserialize_with = "nullable")]
    note: Option<Option<LongNote>>,
}

fn email_conflict(e: diesel::result::Error) -> ApiError {
    ApiError::or_taken(
        "customer",
        ErrorCode::EmailTaken,
        "another customer has this email",
    )(e)
}

#[derive(Debug, FromForm)]
struct ListQuery<'r> {
    q: Option<&'r str>,
    limit: Option<&'r str>,
    cursor: Option<&'r str>,
}

#[utoipa::path(get, path = "/customers", tag = "customers", security(("staff" = [])),
    params(
        ("q" = inline(Option<SearchText>), Query, description = "search in name, email and phone"),
        ("limit" = inline(Option<PageLimit>), Query, description = "default 50"),
        ("cursor" = Option<Uuid>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, body = Page<Customer>),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/customers?<query..>")]
async fn list(
    _staff: &Staff,
    db: TenantDb,
    query: ListQuery<'_>,
) -> ApiResult<Json<Page<Customer>>> {
    let filter = CustomerFilter {
        q: params::search(query.q)?,
        after: params::uuid("cursor", query.cursor)?.map(CustomerId),
        limit: params::limit(query.limit)?,
    };
    let limit = filter.limit;
    let items = db.run(move |tx| Ok(Customer::list(tx, &filter)?)).await?;
    Ok(Json(Page::new(items, limit, |c| c.id.to_string())))
}

#[utoipa::path(get, path = "/customers/{id}", tag = "customers", security(("staff" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = Customer),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/customers/<id>")]
async fn get_one(_staff: &Staff, db: TenantDb, id: CustomerId) -> ApiResult<Json<Customer>> {
    db.run(move |tx| Customer::find(tx, id).map_err(ApiError::or_not_found("customer")))
        .await
        .map(Json)
}

/// Emails are unique per merchant (409 `email_taken`). A merchant whose
/// storage has reached its `maxStorageBytes` gets 409 `plan_limit_reached`.
#[utoipa::path(post, path = "/customers", tag = "customers", security(("staff" = [])),
    request_body = CreateCustomer,
    responses(
        (status = 201, body = Customer),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/customers", data = "<body>")]
async fn create(
    staff: &Staff,
    db: TenantDb,
    body: Body<CreateCustomer>,
) -> ApiResult<(Status, Json<Customer>)> {
    storage_room(&staff.context)?;
    let b = body.0;
    let new = NewCustomer {
        name: b.name.into_inner(),
        email: opt(b.email),
        phone: opt(b.phone),
        note: opt(b.note),
    };
    let c = db
        .run(move |tx| Customer::create(tx, &new).map_err(email_conflict))
        .await?;
    Ok((Status::Created, Json(c)))
}

#[utoipa::path(patch, path = "/customers/{id}", tag = "customers", security(("staff" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateCustomer,
    responses(
        (status = 200, body = Customer),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[patch("/customers/<id>", data = "<body>")]
async fn update(
    _staff: &Staff,
    db: TenantDb,
    id: CustomerId,
    body: Body<UpdateCustomer>,
) -> ApiResult<Json<Customer>> {
    let b = body.0;
    let changes = CustomerChanges {
        name: b.name.map(Name::into_inner),
        email: b.email.map(opt),
        phone: b.phone.map(opt),
        note: b.note.map(opt),
    };
    db.run(move |tx| Customer::update(tx, id, &changes).map_err(email_conflict))
        .await
        .map(Json)
}

#[derive(OpenApi)]
#[openapi(paths(list, get_one, create, update))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![list, get_one, create, update]
}
