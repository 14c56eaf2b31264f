//! Liveness and readiness.

use rocket::{Route, State, get, routes, serde::json::Json};
use serde_json::{Value, json};

use crate::{
    app::App,
    error::{ApiError, ApiResult},
};

/// The process is alive.
#[get("/healthz")]
fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The platform database answers and placement invalidations are flowing.
#[get("/readyz")]
async fn readyz(app: &State<App>) -> ApiResult<Json<Value>> {
    app.platform(|p| p.ping().map_err(ApiError::from)).await?;
    if !app.directory.listening() {
        return Err(ApiError::unavailable(
            "not_ready",
            "placement listener is not connected",
            1,
        ));
    }
    Ok(Json(json!({
        "status": "ready",
        "routing": app.directory.routing_enabled(),
        "tenantPools": app.pools.summary(),
    })))
}

pub fn routes() -> Vec<Route> {
    routes![healthz, readyz]
}
