//! Running a request under an `Idempotency-Key` (see
//! [`crate::db::tenant::idempotency`] for the contract).

use rocket::{
    Request,
    http::{Header, Status},
    response::{self, Responder},
    serde::json::Json,
};
use serde_json::Value;

use crate::{
    db::tenant::sales::StoredKey,
    error::{ApiError, ApiResult, ErrorCode},
};

/// A response stored under an idempotency key; a replay carries
/// `Idempotent-Replayed: true`.
#[derive(Debug)]
pub struct Stored {
    pub status: Status,
    pub body: Value,
    pub replayed: bool,
}

impl<'r> Responder<'r, 'static> for Stored {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let mut res = Json(self.body).respond_to(req)?;
        res.set_status(self.status);
        if self.replayed {
            res.set_header(Header::new("Idempotent-Replayed", "true"));
        }
        Ok(res)
    }
}

/// A request under this key is still running: 409 `idempotency_key_in_use`.
pub fn in_flight() -> ApiError {
    ApiError::conflict(
        ErrorCode::IdempotencyKeyInUse,
        "a request with this Idempotency-Key is still being processed; retry shortly",
    )
}

/// The key was used for another request: 422 `idempotency_key_reused`.
pub fn reused() -> ApiError {
    ApiError::new(
        Status::UnprocessableEntity,
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was used for a different request; use a new key",
    )
}

/// A stored response answered again.
pub fn replay(status: u16, body: Value) -> Stored {
    Stored {
        status: Status::from_code(status).unwrap_or(Status::Ok),
        body,
        replayed: true,
    }
}

/// The most rounds a change makes when what it read keeps changing before
/// its write could lock it.
const ROUNDS: usize = 20;

/// One round of a read-then-write change: done, or read again (what it
/// read changed before the write).
pub enum Round<T> {
    Done(T),
    Again,
}

/// Runs `round` until it is done, at most `ROUNDS` (20) times; then 503
/// `conflict_retry`.
pub fn rounds<T>(mut round: impl FnMut() -> ApiResult<Round<T>>) -> ApiResult<T> {
    for _ in 0..ROUNDS {
        if let Round::Done(t) = round()? {
            return Ok(t);
        }
    }
    Err(ApiError::unavailable(
        ErrorCode::ConflictRetry,
        "what this request changes kept changing; retry",
        1,
    ))
}

/// What a request's idempotency key holds, as read before the work: the
/// stored response to answer again, or 422 when the key was used for
/// another request; `None` to go on.
pub fn check_stored(stored: Option<&StoredKey>, hash: &str) -> ApiResult<Option<Stored>> {
    match stored {
        Some(k) if k.request_hash != hash => Err(reused()),
        Some(StoredKey {
            response: Some((status, body)),
            ..
        }) => Ok(Some(replay(*status, body.clone()))),
        _ => Ok(None),
    }
}
