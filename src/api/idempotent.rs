//! Running a request under an `Idempotency-Key` (see
//! [`crate::db::tenant::idempotency`] for the contract).

use rocket::{
    Request,
    http::{Header, Status},
    response::{self, Responder},
    serde::json::Json,
};
use serde_json::Value;

use super::params::IdempotencyKey;
use crate::{
    db::tenant::{
        TenantTx,
        idempotency::{self, Claim},
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::tenant_db::TenantDb,
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

/// Runs `work` at most once per key: claims the key, runs `work` and
/// stores its answer, all in one transaction, or answers the stored
/// response of an earlier run of the same request.
pub async fn run<F>(
    db: &TenantDb,
    key: IdempotencyKey,
    hash: String,
    retention: std::time::Duration,
    status: Status,
    work: F,
) -> ApiResult<Stored>
where
    F: FnOnce(&mut TenantTx<'_>) -> ApiResult<Value> + Send + 'static,
{
    db.run(move |tx| {
        match idempotency::begin(tx, &key.0, &hash, retention)? {
            Claim::Started => {}
            Claim::Replay { status, body } => return Ok(replay(status, body)),
            Claim::InFlight => return Err(in_flight()),
            Claim::Mismatch => return Err(reused()),
        }
        let body = work(tx)?;
        idempotency::finish(tx, &key.0, status.code, &body)?;
        Ok(Stored {
            status,
            body,
            replayed: false,
        })
    })
    .await
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
