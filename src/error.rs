//! The one error type of the HTTP API and its JSON responder.
//!
//! Policy: every error leaves as `{"error": {"code", "message"}}` with the
//! right status. Client errors say what was wrong; server errors are logged
//! here with their cause and answered without internals. 503 always carries
//! `Retry-After`. Guards that fail store their error in the request's local
//! cache so that the catchers answer with it (see [`fail`]).

use std::borrow::Cow;

use parking_lot::Mutex;
use rocket::{
    Request,
    http::{Header, Status},
    outcome::Outcome,
    response::{self, Responder, Response},
    serde::json::Json,
};
use serde::Serialize;

/// An error as the API answers it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {code}: {message}")]
pub struct ApiError {
    pub status: Status,
    pub code: Cow<'static, str>,
    pub message: String,
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: Status, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(Status::NotFound, "not_found", format!("{what} not found"))
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
        code: &'static str,
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
        Self::new(Status::Unauthorized, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Status::Forbidden, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Status::Conflict, code, message)
    }

    /// A validation failure; `field` is named in the message.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            Status::UnprocessableEntity,
            "validation_failed",
            format!("{field}: {message}"),
        )
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
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
            "internal_error",
            "internal server error",
        )
    }

    /// The generic error for a bare status (used by the catchers).
    pub fn from_status(status: Status) -> Self {
        let (code, message) = match status.code {
            400 => ("bad_request", "the request is malformed"),
            401 => ("unauthorized", "authentication required"),
            403 => ("forbidden", "not allowed"),
            404 => ("not_found", "no such resource"),
            405 => ("method_not_allowed", "method not allowed"),
            413 => ("payload_too_large", "the request body is too large"),
            415 => ("unsupported_media_type", "send application/json"),
            422 => ("unprocessable_entity", "the request body is invalid"),
            429 => ("too_many_requests", "too many requests"),
            503 => ("service_unavailable", "temporarily unavailable"),
            500..=599 => ("internal_error", "internal server error"),
            _ => ("error", "request failed"),
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
            E::DatabaseError(K::UniqueViolation, _) => {
                ApiError::conflict("conflict", "a resource with these values already exists")
            }
            E::DatabaseError(K::ForeignKeyViolation, _) => ApiError::new(
                Status::UnprocessableEntity,
                "invalid_reference",
                "the request refers to something that does not exist",
            ),
            E::DatabaseError(K::CheckViolation, _) => ApiError::new(
                Status::UnprocessableEntity,
                "validation_failed",
                "a value is out of its allowed range",
            ),
            E::DatabaseError(K::SerializationFailure, _) => {
                ApiError::unavailable("conflict_retry", "concurrent update; retry", 1)
            }
            E::DatabaseError(K::ClosedConnection, _) => {
                ApiError::unavailable("database_unavailable", "the database is unavailable", 2)
            }
            E::DatabaseError(_, info) if info.message().starts_with(TENANT_MOVED) => {
                ApiError::unavailable(
                    "tenant_moved",
                    "this merchant's data has just moved; retry the request",
                    1,
                )
            }
            E::DatabaseError(_, info) if info.message().starts_with("deadlock detected") => {
                ApiError::unavailable("conflict_retry", "concurrent update; retry", 1)
            }
            E::DatabaseError(_, info) if info.message().contains("statement timeout") => {
                ApiError::unavailable("database_timeout", "the database is busy", 2)
            }
            _ => ApiError::internal(e),
        }
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(e: r2d2::Error) -> Self {
        tracing::warn!(error = %e, "pool checkout failed");
        ApiError::unavailable(
            "database_unavailable",
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
    /// Stable, snake_case: clients branch on it.
    #[expect(
        clippy::doc_markdown,
        reason = "the doc comment is the field's description in the OpenAPI document"
    )]
    #[schema(example = "insufficient_role")]
    pub code: String,
    /// A human sentence; for validation errors it starts with the field.
    #[schema(example = "this action needs the manager role or higher")]
    pub message: String,
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let body = Json(Envelope {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message.clone(),
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
