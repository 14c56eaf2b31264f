//! The one error type of the HTTP API, its codes and its JSON responder,
//! and the error policy of the crate.
//!
//! # Which error type where
//!
//! - `db/` returns Diesel's `QueryResult`: a query knows nothing of HTTP.
//! - `pos/` and `tenancy/` return their own `thiserror` enums, one variant
//!   per way to fail ([`crate::pos::SaleError`], [`crate::pos::RefundError`],
//!   [`crate::tenancy::provisioning::ProvisionError`] for provisioning and
//!   deprovisioning). A variant's text is
//!   the message a client reads; a database error inside one is its `Db`
//!   variant. They name no status and do not use Rocket. The request path
//!   of tenancy (`TenantDb`, the pools and their executor, the breaker,
//!   on-demand migration, the table check) answers [`ApiError`] itself: its
//!   failures are already answers, 503s that a handler passes on.
//! - `api/` answers [`ApiError`]. A domain error becomes one in one place,
//!   `crate::api::errors`, which gives each variant its status and code; a
//!   handler or guard builds one directly only for a case of its own.
//! - The command line (`cli/`, `main.rs`), the fleet runner and key rotation
//!   use `anyhow`, with `.context(...)` saying what was being done; `main`
//!   prints the whole chain (`{:#}`) after `posd: ` and exits non-zero.
//!   Boot ([`crate::app::BootError`]) and configuration
//!   ([`crate::config::ConfigError`]) keep typed errors whose text is the
//!   operator's message.
//!
//! # What a client gets
//!
//! Every error leaves as `{"error": {"code", "message"}}` with the right
//! status. `code` is an [`ErrorCode`]: stable and `snake_case`, one variant
//! per code; clients may branch on it, so a code is never renamed (new ones
//! may be added). Client errors (4xx) say what was wrong, naming the field.
//! A server error is logged once, where it becomes an [`ApiError`]
//! ([`ApiError::internal`], which unexpected database errors go through),
//! with its cause, and is answered `internal_error` without internals. 503
//! always carries `Retry-After`. Guards that fail store their error in the
//! request's local cache so that the catchers answer with it (see [`fail`]).

mod code;

use parking_lot::Mutex;
use rocket::{
    Request,
    http::{Header, Status},
    outcome::Outcome,
    response::{self, Responder, Response},
    serde::json::Json,
};
use serde::Serialize;

pub use self::code::{ErrorCode, UnknownCode};

/// An error as the API answers it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {code}: {message}")]
pub struct ApiError {
    pub status: Status,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// What a client may act on beyond the code, as `error.details`
    /// (`plan_limit_reached`: the limit and its value).
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: Status, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    /// The same error with `details` (an object) answered as
    /// `error.details`.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = match details {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        };
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            Status::NotFound,
            ErrorCode::NotFound,
            format!("{what} not found"),
        )
    }

    /// Maps Diesel's `NotFound` to a 404 naming `what`; other errors as usual.
    pub fn or_not_found(what: &'static str) -> impl Fn(diesel::result::Error) -> ApiError {
        move |e| match e {
            diesel::result::Error::NotFound => ApiError::not_found(what),
            e => e.into(),
        }
    }

    /// Like [`ApiError::or_not_found`], and maps a unique violation to 409
    /// `code` with `message` (another row already has the value).
    pub fn or_taken(
        what: &'static str,
        code: ErrorCode,
        message: &'static str,
    ) -> impl Fn(diesel::result::Error) -> ApiError {
        move |e| match e {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            ) => ApiError::conflict(code, message),
            e => ApiError::or_not_found(what)(e),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Status::Unauthorized, ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Status::Forbidden, code, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Status::Conflict, code, message)
    }

    /// A validation failure; `field` is named in the message.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            Status::UnprocessableEntity,
            ErrorCode::ValidationFailed,
            format!("{field}: {message}"),
        )
    }

    pub fn unavailable(code: ErrorCode, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(Status::ServiceUnavailable, code, message)
        }
    }

    /// Logs `cause` and answers 500 without internals.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            Status::InternalServerError,
            ErrorCode::InternalError,
            "internal server error",
        )
    }

    /// The generic error for a bare status (used by the catchers).
    pub fn from_status(status: Status) -> Self {
        use ErrorCode as C;
        let (code, message) = match status.code {
            400 => (C::BadRequest, "the request is malformed"),
            401 => (C::Unauthorized, "authentication required"),
            403 => (C::Forbidden, "not allowed"),
            404 => (C::NotFound, "no such resource"),
            405 => (C::MethodNotAllowed, "method not allowed"),
            413 => (C::PayloadTooLarge, "the request body is too large"),
            415 => (C::UnsupportedMediaType, "send application/json"),
            422 => (C::UnprocessableEntity, "the request body is invalid"),
            429 => (C::TooManyRequests, "too many requests"),
            503 => (C::ServiceUnavailable, "temporarily unavailable"),
            500..=599 => (C::InternalError, "internal server error"),
            _ => (C::Error, "request failed"),
        };
        let mut e = Self::new(status, code, message);
        if status == Status::ServiceUnavailable {
            e.retry_after = Some(1);
        }
        e
    }
}

/// The mark of the error a moved merchant's old placement refuses a write
/// with (raised by the tier move's capture trigger, `tenancy::moves`).
pub const TENANT_MOVED: &str = "posd_tenant_moved";

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match &e {
            E::NotFound => ApiError::not_found("resource"),
            E::DatabaseError(K::UniqueViolation, _) => ApiError::conflict(
                ErrorCode::Conflict,
                "a resource with these values already exists",
            ),
            E::DatabaseError(K::ForeignKeyViolation, _) => ApiError::new(
                Status::UnprocessableEntity,
                ErrorCode::InvalidReference,
                "the request refers to something that does not exist",
            ),
            E::DatabaseError(K::CheckViolation, _) => ApiError::new(
                Status::UnprocessableEntity,
                ErrorCode::ValidationFailed,
                "a value is out of its allowed range",
            ),
            E::DatabaseError(K::SerializationFailure, _) => {
                ApiError::unavailable(ErrorCode::ConflictRetry, "concurrent update; retry", 1)
            }
            E::DatabaseError(K::ClosedConnection, _) => ApiError::unavailable(
                ErrorCode::DatabaseUnavailable,
                "the database is unavailable",
                2,
            ),
            E::DatabaseError(_, info) if info.message().starts_with(TENANT_MOVED) => {
                ApiError::unavailable(
                    ErrorCode::TenantMoved,
                    "this merchant's data has just moved; retry the request",
                    1,
                )
            }
            E::DatabaseError(_, info) if info.message().starts_with("deadlock detected") => {
                ApiError::unavailable(ErrorCode::ConflictRetry, "concurrent update; retry", 1)
            }
            E::DatabaseError(_, info) if info.message().contains("statement timeout") => {
                ApiError::unavailable(ErrorCode::DatabaseTimeout, "the database is busy", 2)
            }
            _ => ApiError::internal(e),
        }
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(e: r2d2::Error) -> Self {
        tracing::warn!(error = %e, "pool checkout failed");
        ApiError::unavailable(
            ErrorCode::DatabaseUnavailable,
            "no database connection available",
            2,
        )
    }
}

/// The envelope every error is answered in.
#[derive(Serialize)]
struct Envelope {
    error: ErrorBody,
}

/// An error as a client reads it: `{"code", "message"}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable: clients branch on it (its schema is `code_schema`).
    #[schema(schema_with = code_schema)]
    pub code: ErrorCode,
    /// A human sentence; for validation errors it starts with the field.
    #[schema(example = "this action needs the manager role or higher")]
    pub message: String,
    /// Only for some codes, what a client may act on beyond the code:
    /// for `plan_limit_reached` `{limit, value, plan}` (the limit's name as
    /// in the tenant context's `limits`, its value, the merchant's plan), for
    /// `feature_disabled` `{feature}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `ErrorBody.code` in the OpenAPI document: a string, one of the codes.
fn code_schema() -> utoipa::openapi::Object {
    #[expect(
        deprecated,
        reason = "the document gives one `example` per field, as the derives write it"
    )]
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("Stable, snake_case: clients branch on it."))
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
        .example(Some(ErrorCode::InsufficientRole.as_str().into()))
        .build()
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let body = Json(Envelope {
            error: ErrorBody {
                code: self.code,
                message: self.message.clone(),
                details: self.details.clone(),
            },
        });
        let mut res = Response::build_from(body.respond_to(req)?);
        res.status(self.status);
        if let Some(secs) = self.retry_after {
            res.header(Header::new("Retry-After", secs.to_string()));
        }
        Ok(res.finalize())
    }
}

/// Per-request slot where a failing guard leaves its error for the catcher.
#[derive(Default)]
pub struct GuardError(Mutex<Option<ApiError>>);

impl GuardError {
    pub fn take(req: &Request<'_>) -> Option<ApiError> {
        req.local_cache(GuardError::default).0.lock().take()
    }
}

/// Leaves `err` for the catcher of this request to answer with.
pub fn leave(req: &Request<'_>, err: ApiError) {
    *req.local_cache(GuardError::default).0.lock() = Some(err);
}

/// Fails a guard with `err`: the catcher for its status answers with it.
pub fn fail<S, F>(req: &Request<'_>, err: ApiError) -> Outcome<S, (Status, ApiError), F> {
    leave(req, err.clone());
    Outcome::Error((err.status, err))
}
