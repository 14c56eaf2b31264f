//! `/customers`: any staff may create, read, update and search.

use rocket::{FromForm, Route, get, http::Status, patch, post, routes, serde::json::Json};
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use super::{
    Body, docs, nullable,
    params::{self, Page, opt_text, text},
};
use crate::{
    auth::guards::Staff,
    db::{
        ids::CustomerId,
        tenant::customers::{Customer, CustomerChanges, CustomerFilter, NewCustomer},
    },
    error::{ApiError, ApiResult},
    tenancy::guards::TenantDb,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateCustomer {
    name: String,
    email: Option<String>,
    phone: Option<String>,
    note: Option<String>,
}

/// Only the fields given change; `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateCustomer {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    note: Option<Option<String>>,
}

fn email(v: Option<&str>) -> ApiResult<Option<String>> {
    let e = opt_text("email", v, 320)?;
    if let Some(e) = &e {
        let ok = e
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
            && !e.chars().any(char::is_whitespace);
        if !ok {
            return Err(ApiError::invalid("email", "is not an email address"));
        }
    }
    Ok(e.map(|e| e.to_lowercase()))
}

fn phone(v: Option<&str>) -> ApiResult<Option<String>> {
    let p = opt_text("phone", v, 40)?;
    if p.as_ref().is_some_and(|p| {
        !p.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    }) {
        return Err(ApiError::invalid(
            "phone",
            "may hold only digits, spaces and + - ( ) .",
        ));
    }
    Ok(p)
}

fn email_conflict(e: diesel::result::Error) -> ApiError {
    ApiError::or_taken("customer", "email_taken", "another customer has this email")(e)
}

#[derive(Debug, FromForm)]
struct ListQuery<'r> {
    q: Option<&'r str>,
    limit: Option<&'r str>,
    cursor: Option<&'r str>,
}

#[utoipa::path(get, path = "/customers", tag = "customers", security(("staff" = [])),
    params(
        ("q" = Option<String>, Query, description = "search in name, email and phone"),
        ("limit" = Option<i64>, Query, description = "1 to 200, default 50"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
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

/// Emails are unique per merchant (409 `email_taken`).
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
    _staff: &Staff,
    db: TenantDb,
    body: Body<CreateCustomer>,
) -> ApiResult<(Status, Json<Customer>)> {
    let b = body.0;
    let new = NewCustomer {
        name: text("name", &b.name, 200)?,
        email: email(b.email.as_deref())?,
        phone: phone(b.phone.as_deref())?,
        note: opt_text("note", b.note.as_deref(), 2000)?,
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
        name: b
            .name
            .as_deref()
            .map(|n| text("name", n, 200))
            .transpose()?,
        email: b.email.map(|e| email(e.as_deref())).transpose()?,
        phone: b.phone.map(|p| phone(p.as_deref())).transpose()?,
        note: b
            .note
            .map(|n| opt_text("note", n.as_deref(), 2000))
            .transpose()?,
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
