//! The HTTP API: one module per resource, each exposing `routes()`, plus
//! the JSON body guard and the catchers that keep every answer JSON.

pub mod accounting;
pub mod admin;
pub mod audit;
pub mod auth;
#[cfg(feature = "bench-control")]
pub mod bench_control;
pub mod categories;
pub mod client;
pub mod context;
pub mod customers;
pub mod docs;
pub mod domains;
pub mod errors;
pub mod export;
pub mod fields;
pub mod fleet;
pub mod guards;
pub mod health;
pub mod host;
pub mod idempotent;
pub mod integrations;
pub mod inventory;
pub mod jobs;
pub mod load;
pub mod metrics;
pub mod moves;
pub mod offline;
pub mod orders;
pub mod params;
pub mod plans;
pub mod products;
pub mod provisioning;
pub mod ratelimit;
pub mod reports;
pub mod screen;
pub mod servers;
pub mod settings;
pub mod staff;
pub mod usage;

use std::fmt::Write as _;

use rocket::{
    Catcher, Request, Route,
    data::{Data, FromData, Outcome, ToByteUnit},
    http::Status,
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use crate::error::{ApiError, ApiResult, ErrorCode, GuardError, fail};

pub const PREFIX: &str = "/api/v2/POS";

pub fn routes() -> Vec<(&'static str, Vec<Route>)> {
    vec![
        ("/", health::routes()),
        ("/", metrics::routes()),
        ("/", docs::routes()),
        (PREFIX, auth::routes()),
        (PREFIX, products::routes()),
        (PREFIX, categories::routes()),
        (PREFIX, inventory::routes()),
        (PREFIX, customers::routes()),
        (PREFIX, orders::routes()),
        (PREFIX, reports::routes()),
        (PREFIX, offline::routes()),
        (PREFIX, staff::routes()),
        (PREFIX, audit::routes()),
        (PREFIX, context::routes()),
        (PREFIX, settings::routes()),
        (PREFIX, integrations::routes()),
        (PREFIX, plans::routes()),
        (PREFIX, admin::routes()),
        (PREFIX, domains::routes()),
        (PREFIX, fleet::routes()),
        (PREFIX, moves::routes()),
        (PREFIX, export::routes()),
        (PREFIX, usage::routes()),
        (PREFIX, load::routes()),
        (PREFIX, jobs::routes()),
        (PREFIX, servers::routes()),
        (PREFIX, provisioning::routes()),
        #[cfg(feature = "bench-control")]
        (PREFIX, bench_control::routes()),
    ]
}

/// A JSON request body. Unlike Rocket's `Json`, its failures carry the
/// parser's message (which field, what was wrong) in the 422 body, and an
/// oversize body is a 413.
#[derive(Debug)]
pub struct Body<T>(pub T);

#[rocket::async_trait]
impl<'r, T: DeserializeOwned> FromData<'r> for Body<T> {
    type Error = ApiError;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> Outcome<'r, Self> {
        if let Some(ct) = req.content_type()
            && !ct.is_json()
        {
            return fail(
                req,
                ApiError::new(
                    Status::UnsupportedMediaType,
                    ErrorCode::UnsupportedMediaType,
                    "send the body as application/json",
                ),
            );
        }
        // `json/<route name>` may raise the limit for one route.
        let route = req.route().and_then(|r| r.name.as_deref()).unwrap_or("");
        let limit = req.limits().find(["json", route]).unwrap_or(64.kibibytes());
        let text = match data.open(limit).into_string().await {
            Ok(s) if s.is_complete() => s.into_inner(),
            Ok(_) => {
                return fail(
                    req,
                    ApiError::new(
                        Status::PayloadTooLarge,
                        ErrorCode::PayloadTooLarge,
                        format!("the body is larger than {limit}"),
                    ),
                );
            }
            Err(e) => {
                return fail(
                    req,
                    ApiError::new(
                        Status::BadRequest,
                        ErrorCode::BadRequest,
                        format!("could not read the body: {e}"),
                    ),
                );
            }
        };
        match parse(&text) {
            Ok(v) => Outcome::Success(Body(v)),
            Err(e) => fail(req, e),
        }
    }
}

/// Parses a JSON body. Every text in it, keys included, must be free of
/// control characters (422 naming the first field that holds one): no
/// NUL or other control character reaches a handler or the database.
/// A value outside its limits (see [`fields`]) is 422 `validation_failed`;
/// malformed JSON, a wrong type or an unknown field 422 `invalid_body`.
/// Either message names the field (`lines[0].quantity: ...`).
pub fn parse<T: DeserializeOwned>(text: &str) -> ApiResult<T> {
    if let Some(field) = field_with_control(text) {
        return Err(ApiError::invalid(
            &field,
            "must not contain control characters",
        ));
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let message = inner.to_string();
        let message = message.strip_suffix(&position).unwrap_or(&message);
        let code = if message.starts_with("invalid value:") {
            ErrorCode::ValidationFailed
        } else {
            ErrorCode::InvalidBody
        };
        let message = if path == "." || path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        ApiError::new(Status::UnprocessableEntity, code, message)
    })
}

/// The path of the first string (or key) in the JSON `text` that holds a
/// control character. JSON forbids raw C0 controls in strings, so only an
/// escape (`\u0000`) or a raw DEL or C1 character can carry one: texts
/// without either are not parsed twice.
fn field_with_control(text: &str) -> Option<String> {
    fn walk(v: &serde_json::Value, path: &mut String) -> bool {
        let bad = |s: &str| s.chars().any(char::is_control);
        match v {
            serde_json::Value::String(s) => bad(s),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                // Writing to a String cannot fail.
                let _ = write!(path, "[{i}]");
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            serde_json::Value::Object(map) => map.iter().any(|(k, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&k.replace(char::is_control, "?"));
                let found = bad(k) || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    if !text.contains("\\u")
        && !text
            .chars()
            .any(|c| c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c))
    {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut path = String::new();
    walk(&value, &mut path).then(|| if path.is_empty() { ".".into() } else { path })
}

/// For PATCH bodies: tells an absent field (`None`) from an explicit `null`
/// (`Some(None)`).
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Answers with the error a guard left, or the generic one for the status.
/// A 422 no guard explains is a path parameter Rocket could not parse (a
/// malformed id: every body and query error is explained): it answers 404,
/// like an id that names nothing.
#[rocket::catch(default)]
fn default_catcher(status: Status, req: &Request<'_>) -> ApiError {
    GuardError::take(req).unwrap_or_else(|| {
        if status == Status::UnprocessableEntity {
            ApiError::from_status(Status::NotFound)
        } else {
            ApiError::from_status(status)
        }
    })
}

pub fn catchers() -> Vec<Catcher> {
    rocket::catchers![default_catcher]
}
