//! Liveness and readiness.

use rocket::{Route, State, get, routes, serde::json::Json};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::{
    app::App,
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::pools::PoolsSummary,
};

/// What `GET /healthz` answers.
#[derive(Serialize, ToSchema)]
struct Alive {
    status: AliveStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum AliveStatus {
    Ok,
}

/// What `GET /readyz` answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Ready {
    status: ReadyStatus,
    /// `false` when `use_tenant_db_routing` sends every merchant to the
    /// shared tier.
    routing: bool,
    tenant_pools: PoolsSummary,
    /// The isolation probe's last run, when it runs
    /// (`POSD_ISOLATION_PROBE_INTERVAL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    isolation: Option<crate::tenancy::probe::ProbeRun>,
    /// Dedicated database servers whose last connection attempt from this
    /// instance failed (their merchants get 503; the others are served).
    unhealthy_servers: Vec<crate::tenancy::servers::Unhealthy>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ReadyStatus {
    Ready,
    /// Serving, but the isolation probe's last run broke in: see
    /// `isolation.breaches`.
    Degraded,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Alive)))]
#[get("/healthz")]
fn healthz() -> Json<Alive> {
    Json(Alive {
        status: AliveStatus::Ok,
    })
}

/// The platform database answers and placement invalidations are flowing.
/// `degraded` (still 200: the instance serves) when the isolation probe's
/// last run broke in. `unhealthyServers` names the dedicated database
/// servers this instance last failed to reach, without failing the
/// instance.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: status, routing and tenant pools", body = Ready),
        (status = 503, response = super::docs::Unavailable),
    ))]
#[get("/readyz")]
async fn readyz(app: &State<App>) -> ApiResult<Json<Ready>> {
    app.platform(|p| p.ping().map_err(ApiError::from)).await?;
    if !app.directory.listening() {
        return Err(ApiError::unavailable(
            ErrorCode::NotReady,
            "the cache invalidation listener is not connected",
            1,
        ));
    }
    let isolation = app.probe.last();
    let breached = isolation.as_ref().is_some_and(|r| !r.breaches.is_empty());
    Ok(Json(Ready {
        status: if breached {
            ReadyStatus::Degraded
        } else {
            ReadyStatus::Ready
        },
        isolation,
        routing: app.directory.routing_enabled(),
        tenant_pools: app.pools.summary(),
        unhealthy_servers: app.pools.health.unhealthy(),
    }))
}

#[derive(OpenApi)]
#[openapi(paths(healthz, readyz))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![healthz, readyz]
}
