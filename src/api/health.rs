//! Liveness and readiness.

use rocket::{Route, State, get, routes, serde::json::Json};
use serde_json::{Value, json};

use utoipa::OpenApi;

use crate::{
    app::App,
    error::{ApiError, ApiResult, ErrorCode},
};

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object)))]
#[get("/healthz")]
fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The platform database answers and placement invalidations are flowing.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: status, routing and tenant pools", body = Object),
        (status = 503, response = super::docs::Unavailable),
    ))]
#[get("/readyz")]
async fn readyz(app: &State<App>) -> ApiResult<Json<Value>> {
    app.platform(|p| p.ping().map_err(ApiError::from)).await?;
    if !app.directory.listening() {
        return Err(ApiError::unavailable(
            ErrorCode::NotReady,
            "the cache invalidation listener is not connected",
            1,
        ));
    }
    Ok(Json(json!({
        "status": "ready",
        "routing": app.directory.routing_enabled(),
        "tenantPools": app.pools.summary(),
    })))
}

#[derive(OpenApi)]
#[openapi(paths(healthz, readyz))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![healthz, readyz]
}
