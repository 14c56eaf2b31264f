//! Live tier moves through the API (admin token): start one (202, a
//! background driver runs it), follow it, cancel it before its flip, and
//! clean up the sources that moves retained. `posd tenants move` and
//! `posd tenants cleanup-moves` do the same from the command line.

use rocket::{
    Route, State, get, http::Status, post, response::status::Custom, routes, serde::json::Json,
    tokio,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use super::{Body, admin::record_audit, docs};
use crate::{
    api::guards::PlatformAdmin,
    app::App,
    db::{
        ids::{MerchantId, RunId},
        platform::moves::Move,
    },
    error::{ApiError, ApiResult},
    tenancy::{
        Tier,
        moves::{self, Cleaned, MoveError, MoveRequest},
        provisioning,
    },
};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartMove {
    /// Where the merchant's data goes.
    tier: Tier,
    /// A database the merchant brings (tier `dedicated` only); never echoed.
    #[schema(value_type = Option<String>)]
    database_url: Option<SecretString>,
    /// A client run id: repeating it answers the same move.
    run_id: Option<RunId>,
    /// The server posd creates the target database on (tier `dedicated`,
    /// no `databaseUrl`): a registered server's name, or `default`; the one
    /// with the most room when absent.
    server: Option<super::fields::ServerName>,
}

/// A move, as the answers carry it.
#[derive(Serialize, ToSchema)]
struct MoveAnswer {
    #[serde(rename = "move")]
    run: Move,
}

/// A merchant's moves, newest first.
#[derive(Serialize, ToSchema)]
struct MoveList {
    moves: Vec<Move>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MoveError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// Starts moving the merchant's data to `tier` while it keeps trading:
/// answered 202 with the move, which a background driver runs (follow it
/// at `GET .../moves/{run}`). One move per merchant at a time.
#[utoipa::path(post, path = "/admin/tenants/{id}/move", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path)), request_body = StartMove,
    responses(
        (status = 202, description = "The move, started (or the one its runId names)", body = MoveAnswer),
        (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound),
        (status = 409, description = "Already on that tier, another move or a provisioning is running, or the tenant's migrations are behind", body = docs::ErrorEnvelope),
        (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[post("/admin/tenants/<id>/move", data = "<body>")]
async fn start_move(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    body: Body<StartMove>,
) -> ApiResult<Custom<Json<MoveAnswer>>> {
    let b = body.0;
    let database_url = match &b.database_url {
        Some(raw) => Some(provisioning::parse_database_url(raw.expose_secret())?),
        None => None,
    };
    let req = MoveRequest {
        merchant: id,
        tier: b.tier,
        database_url,
        run_id: b.run_id,
        server: b.server.map(super::fields::ServerName::into_inner),
    };
    let tenancy = app.tenancy.clone();
    let started = blocking(move || moves::start(&tenancy, &req)).await;
    let details = match &started {
        Ok(m) => {
            json!({ "outcome": "started", "runId": m.id, "from": m.source_tier, "to": m.target_tier, "byo": b.database_url.is_some() })
        }
        Err(e) => {
            json!({ "outcome": "refused", "to": b.tier, "code": e.code, "status": e.status.code })
        }
    };
    record_audit(app, &admin.operator, "tenants.move", Some(id), details).await;
    let run = started?;
    app.mover.wake();
    Ok(Custom(Status::Accepted, Json(MoveAnswer { run })))
}

/// The merchant's moves, newest first.
#[utoipa::path(get, path = "/admin/tenants/{id}/moves", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = MoveList), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[get("/admin/tenants/<id>/moves")]
async fn list_moves(
    _admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
) -> ApiResult<Json<MoveList>> {
    app.platform(move |p| {
        Ok(MoveList {
            moves: Move::for_merchant(p, id)?,
        })
    })
    .await
    .map(Json)
}

/// One move: its phase, rows copied per table of the snapshot's total, the
/// change backlog, the fence's duration, the error of a failed run.
#[utoipa::path(get, path = "/admin/tenants/{id}/moves/{run}", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path), ("run" = Uuid, Path)),
    responses((status = 200, body = MoveAnswer), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[get("/admin/tenants/<id>/moves/<run>")]
async fn get_move(
    _admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    run: RunId,
) -> ApiResult<Json<MoveAnswer>> {
    app.platform(move |p| {
        Move::find(p, run)?
            .filter(|m| m.merchant_id == id)
            .map(|run| MoveAnswer { run })
            .ok_or_else(|| ApiError::not_found("move"))
    })
    .await
    .map(Json)
}

/// Cancels a move before its flip: the merchant stays where it is and the
/// driver drops what the move made at the target (202; the move reads
/// `cancelling`, then `cancelled`).
#[utoipa::path(post, path = "/admin/tenants/{id}/moves/{run}/cancel", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path), ("run" = Uuid, Path)),
    responses((status = 202, body = MoveAnswer), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound),
        (status = 409, description = "The move has flipped or ended", body = docs::ErrorEnvelope), (status = 503, response = docs::Unavailable)))]
#[post("/admin/tenants/<id>/moves/<run>/cancel")]
async fn cancel_move(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    run: RunId,
) -> ApiResult<Custom<Json<MoveAnswer>>> {
    let tenancy = app.tenancy.clone();
    let cancelled = blocking(move || moves::cancel(&tenancy, id, run)).await;
    let details = match &cancelled {
        Ok(_) => json!({ "outcome": "cancelling", "runId": run }),
        Err(e) => json!({ "outcome": "refused", "runId": run, "code": e.code }),
    };
    record_audit(
        app,
        &admin.operator,
        "tenants.move.cancel",
        Some(id),
        details,
    )
    .await;
    let run = cancelled?;
    app.mover.wake();
    Ok(Custom(Status::Accepted, Json(MoveAnswer { run })))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Cleanup {
    /// Drop every retained source, not only those past their retention.
    #[serde(default)]
    all: bool,
}

/// What a cleanup dropped.
#[derive(Serialize, ToSchema)]
struct CleanupAnswer {
    cleaned: Vec<Cleaned>,
}

/// Drops the sources that finished moves retained: those past
/// `POSD_MOVE_RETENTION`, or every one with `all`. After it, moving back
/// copies from the current placement again.
#[utoipa::path(post, path = "/admin/tenants/cleanup-moves", tag = "admin", security(("admin" = [])), request_body = Cleanup,
    responses((status = 200, body = CleanupAnswer), (status = 401, response = docs::Unauthorized), (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[post("/admin/tenants/cleanup-moves", data = "<body>")]
async fn cleanup_moves(
    admin: PlatformAdmin,
    app: &State<App>,
    body: Body<Cleanup>,
) -> ApiResult<Json<CleanupAnswer>> {
    let all = body.0.all;
    let tenancy = app.tenancy.clone();
    let cleaned = blocking(move || moves::cleanup(&tenancy, all)).await?;
    for c in &cleaned {
        record_audit(
            app,
            &admin.operator,
            "tenants.cleanup_move",
            Some(c.merchant_id),
            json!({ "runId": c.run, "dropped": c.dropped, "error": c.error }),
        )
        .await;
    }
    Ok(Json(CleanupAnswer { cleaned }))
}

#[derive(OpenApi)]
#[openapi(paths(start_move, list_moves, get_move, cancel_move, cleanup_moves))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![start_move, list_moves, get_move, cancel_move, cleanup_moves]
}
