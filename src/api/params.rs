//! Request pieces shared by the POS endpoints: text and paging parameters,
//! and the `Idempotency-Key` header.

use chrono::{DateTime, NaiveDate, Utc};
use rocket::{
    Request,
    request::{FromRequest, Outcome},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorCode, fail};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// An id in a path. A malformed one fails here, before any lookup; Rocket
/// then forwards the request with 422, which the catcher answers 404 like
/// any unknown id (see [`super::catchers`]).
macro_rules! id_params {
    ($($name:ident),* $(,)?) => {$(
        impl<'a> rocket::request::FromParam<'a> for crate::db::ids::$name {
            type Error = uuid::Error;

            fn from_param(param: &'a str) -> Result<Self, Self::Error> {
                Uuid::parse_str(param).map(crate::db::ids::$name)
            }
        }
    )*};
}

id_params!(
    MerchantId,
    StaffId,
    ProductId,
    CategoryId,
    CustomerId,
    OrderId,
    RefundId,
    DatabaseId,
    RunId,
    IntegrationId,
    JobId,
    ServerId
);

/// One page of a list; `nextCursor` is null on the last page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of at most `limit` items; `cursor` gives an item's cursor.
    pub fn new(items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Self {
        let full = usize::try_from(limit).is_ok_and(|l| items.len() == l);
        let next_cursor = if full { items.last().map(cursor) } else { None };
        Page { items, next_cursor }
    }
}

/// `?limit=`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn limit(v: Option<&str>) -> ApiResult<i64> {
    match v {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )
            }),
    }
}

/// An optional id in a query string.
pub fn uuid(field: &str, v: Option<&str>) -> ApiResult<Option<Uuid>> {
    v.map(|s| Uuid::parse_str(s.trim()).map_err(|_| ApiError::invalid(field, "is not a valid id")))
        .transpose()
}

/// An optional search string (`?q=`), at most 100 characters.
pub fn search(q: Option<&str>) -> ApiResult<Option<String>> {
    match q.map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) if q.chars().count() > MAX_SEARCH => Err(ApiError::invalid(
            "q",
            format!("must be at most {MAX_SEARCH} characters"),
        )),
        other => Ok(other.map(str::to_string)),
    }
}

/// The first and last day the API accepts: far enough either way for any
/// real business, and well inside what PostgreSQL and chrono can hold.
pub const FIRST_DAY: NaiveDate = ymd(2000, 1, 1);
pub const LAST_DAY: NaiveDate = ymd(2099, 12, 31);
/// The days from [`FIRST_DAY`] to [`LAST_DAY`], as the contract's pattern.
pub const DAY_PATTERN: &str = "^20[0-9]{2}-[0-9]{2}-[0-9]{2}$";
/// The instants of those days, as the contract's pattern.
pub const INSTANT_PATTERN: &str = "^20[0-9]{2}-";
/// The longest search text.
pub const MAX_SEARCH: usize = 100;

const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => NaiveDate::MIN,
    }
}

/// A day written `YYYY-MM-DD`, from [`FIRST_DAY`] to [`LAST_DAY`].
pub fn day(field: &str, v: &str) -> ApiResult<NaiveDate> {
    NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
        .ok()
        .filter(|d| (FIRST_DAY..=LAST_DAY).contains(d))
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("must be a day written YYYY-MM-DD, from {FIRST_DAY} to {LAST_DAY}"),
            )
        })
}

/// `?from=&to=`: a range of days, as [`crate::tenancy::usage::range`]
/// bounds it (the last 30 days up to today, UTC, by default).
pub fn days(from: Option<&str>, to: Option<&str>) -> ApiResult<(NaiveDate, NaiveDate)> {
    let from = from.map(|d| day("from", d)).transpose()?;
    let to = to.map(|d| day("to", d)).transpose()?;
    crate::tenancy::usage::range(from, to, Utc::now().date_naive())
        .map_err(|e| ApiError::invalid(e.field, e.message))
}

/// An optional RFC 3339 instant, within the days of [`day`].
pub fn instant(field: &str, v: Option<&str>) -> ApiResult<Option<DateTime<Utc>>> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| (FIRST_DAY..=LAST_DAY).contains(&t.date_naive()))
            .ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!(
                        "must be an RFC 3339 time such as 2026-11-22T09:00:00Z, from {FIRST_DAY} to {LAST_DAY}"
                    ),
                )
            })
    })
    .transpose()
}

/// An optional `true`/`false` in a query string.
pub fn boolean(field: &str, v: Option<&str>) -> ApiResult<Option<bool>> {
    match v {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::invalid(field, "must be true or false")),
    }
}

/// The `Idempotency-Key` header, required on the endpoints that take it:
/// 1 to 255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    /// What identifies the request the key is used for: the operation
    /// (method and path, e.g. `POST /orders`) and the (canonical) body.
    pub fn request_hash(operation: &str, body: &impl Serialize) -> ApiResult<String> {
        let body = serde_json::to_vec(body).map_err(ApiError::internal)?;
        let mut h = Sha256::new();
        h.update(operation.as_bytes());
        h.update(b"\n");
        h.update(&body);
        Ok(format!("{:x}", h.finalize()))
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for IdempotencyKey {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let err = |message: &str| {
            ApiError::new(
                rocket::http::Status::UnprocessableEntity,
                ErrorCode::IdempotencyKeyRequired,
                format!("Idempotency-Key: {message}"),
            )
        };
        match req.headers().get_one("Idempotency-Key").map(str::trim) {
            None | Some("") => fail(
                req,
                err(
                    "this request needs the header, with a key unique to the operation (a UUID is a good choice)",
                ),
            ),
            Some(k) if k.len() > 255 || !k.chars().all(|c| c.is_ascii_graphic()) => {
                fail(req, err("must be 1 to 255 visible ASCII characters"))
            }
            Some(k) => Outcome::Success(IdempotencyKey(k.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Datelike;

    use super::*;

    #[test]
    fn the_contract_patterns_say_what_the_bounds_do() {
        // Both patterns pin the years to 20xx: the bounds must be that century.
        assert_eq!((FIRST_DAY.year(), LAST_DAY.year()), (2000, 2099));
        assert_eq!(FIRST_DAY.ordinal(), 1);
        assert_eq!(LAST_DAY.succ_opt().map(|d| d.year()), Some(2100));
        assert!(DAY_PATTERN.starts_with(INSTANT_PATTERN));
    }
}
