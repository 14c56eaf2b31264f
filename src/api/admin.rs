//! Platform operator endpoints (admin token): merchants, tenant placement
//! and pool state, suspension (fleet migrations are in [`super::fleet`],
//! provisioning in [`super::provisioning`]).

use rocket::{
    Route, State, get, http::Status, post, response::status::Custom, routes, serde::json::Json,
    tokio,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use super::{
    Body, docs,
    fields::{CurrencyCode, Email, Name, Password, PlanKey, Slug, TimeZone},
};
use crate::{
    api::guards::PlatformAdmin,
    app::App,
    auth::{Role, password},
    db::{
        ids::{MerchantId, StaffId},
        kinds::{MerchantStatus, MigrationStatus},
        platform::{
            audit,
            merchants::{Merchant, NewMerchant},
            migration_state::{MigrationState, schema_versions},
            moves::Move,
            staff::{NewStaffUser, StaffUser},
        },
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::{
        SHARED_SCHEMA, Tier,
        placement::Placement,
        pools::{PoolState, PoolsSummary},
    },
};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateMerchant {
    slug: Slug,
    name: Name,
    timezone: TimeZone,
    currency: CurrencyCode,
    /// A plan's key (`GET /admin/plans`); `starter` when absent. An unknown
    /// plan is 422 `unknown_plan`.
    plan: Option<PlanKey>,
    owner: NewOwner,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewOwner {
    email: Email,
    password: Password,
}

#[utoipa::path(post, path = "/admin/merchants", tag = "admin", security(("admin" = [])), request_body = CreateMerchant,
    responses((status = 201, body = Merchant), (status = 401, response = docs::Unauthorized), (status = 503, response = docs::Unavailable), (status = 409, response = docs::Conflict), (status = 422, response = docs::Invalid)))]
#[post("/admin/merchants", data = "<body>")]
async fn create_merchant(
    admin: PlatformAdmin,
    app: &State<App>,
    body: Body<CreateMerchant>,
) -> ApiResult<Custom<Json<Merchant>>> {
    let b = body.0;
    let plan = b
        .plan
        .map_or_else(|| "starter".to_string(), PlanKey::into_inner);
    let pw = b.owner.password.into_inner();
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let actor = admin.operator.clone();
    let merchant = app
        .platform(move |p| {
            p.transaction(|p| {
                let m = Merchant::insert(
                    p,
                    &NewMerchant {
                        id: MerchantId(uuid::Uuid::new_v4()),
                        slug: b.slug.as_str(),
                        name: b.name.as_str(),
                        timezone: b.timezone.as_str(),
                        currency: b.currency.as_str(),
                        plan: &plan,
                        probe: false,
                    },
                )
                .map_err(super::plans::or_unknown_plan(ApiError::or_taken(
                    "merchant",
                    ErrorCode::SlugTaken,
                    "a merchant with this slug exists",
                )))?;
                StaffUser::insert(
                    p,
                    &NewStaffUser {
                        id: StaffId(uuid::Uuid::now_v7()),
                        merchant_id: m.id,
                        email: b.owner.email.as_str(),
                        password_hash: &hash,
                        role: Role::Owner,
                    },
                )?;
                audit::record(
                    p,
                    &actor,
                    "merchant.create",
                    Some(m.id),
                    json!({ "slug": m.slug }),
                )?;
                Ok(m)
            })
        })
        .await?;
    tracing::info!(operator = %admin.operator, merchant = %merchant.id, slug = %merchant.slug, "merchant created");
    Ok(Custom(Status::Created, Json(merchant)))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct TenantView {
    #[serde(flatten)]
    merchant: Merchant,
    routed_tier: Tier,
    /// The live pool of a dedicated merchant, if one is open.
    pool: Option<PoolState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    migration_version: Option<String>,
    latest_migration_version: String,
    /// The recorded outcome of the tenant's last migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    migration_status: Option<MigrationStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    migration_error: Option<String>,
    /// A migration of the tenant started by a request is under way.
    migrating: bool,
    /// Tables that fail the classification check: the tenant is not served.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unclassified_tables: Vec<String>,
    /// The tier move under way, if any.
    #[serde(rename = "move", skip_serializing_if = "Option::is_none")]
    moving: Option<Move>,
    /// Flagged as a noisy neighbour on this instance, with the evidence
    /// and what posd recommends (see `tenancy::noisy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    noisy: Option<crate::tenancy::noisy::Evidence>,
}

fn tenant_view(
    app: &App,
    m: Merchant,
    state: Option<MigrationState>,
    moving: Option<Move>,
) -> TenantView {
    let mut placement = Placement::from_merchant(&m);
    if !app.directory.routing_enabled() {
        placement.tier = Tier::Shared;
    }
    let unclassified_tables = app
        .coverage
        .blocked(m.id, m.generation)
        .map(|b| b.tables.clone())
        .unwrap_or_default();
    let (migration_version, migration_status, migration_error) = match state {
        Some(s) => (s.version, Some(s.status), s.error),
        None => (None, None, None),
    };
    TenantView {
        pool: app.pools.state(m.id),
        routed_tier: placement.tier,
        migrating: app.on_demand.running(m.id),
        noisy: app.noisy.get(m.id),
        merchant: m,
        migration_version,
        latest_migration_version: crate::tenancy::migrations::latest_tenant_version(),
        migration_status,
        migration_error,
        unclassified_tables,
        moving,
    }
}

/// Every tenant, and the state of the tenant pools.
#[derive(Serialize, ToSchema)]
struct TenantList {
    items: Vec<TenantView>,
    pools: PoolsSummary,
}

#[utoipa::path(get, path = "/admin/tenants", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = TenantList), (status = 401, response = docs::Unauthorized), (status = 503, response = docs::Unavailable)))]
#[get("/admin/tenants")]
async fn list_tenants(_admin: PlatformAdmin, app: &State<App>) -> ApiResult<Json<TenantList>> {
    let (merchants, moves) = app
        .platform(|p| Ok((Merchant::list(p)?, Move::all_active(p)?)))
        .await?;
    let merchants = merchants.into_iter().filter(|m| !m.probe);
    let mut moves: std::collections::HashMap<MerchantId, Move> =
        moves.into_iter().map(|m| (m.merchant_id, m)).collect();
    let items: Vec<TenantView> = merchants
        .into_iter()
        .map(|m| {
            let moving = moves.remove(&m.id);
            tenant_view(app, m, None, moving)
        })
        .collect();
    Ok(Json(TenantList {
        items,
        pools: app.pools.summary(),
    }))
}

#[utoipa::path(get, path = "/admin/tenants/{id}", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = TenantView), (status = 401, response = docs::Unauthorized), (status = 503, response = docs::Unavailable), (status = 404, response = docs::NotFound)))]
#[get("/admin/tenants/<id>")]
async fn get_tenant(
    _admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
) -> ApiResult<Json<TenantView>> {
    // A pure read: the placement, the recorded migration state and the pool
    // as they are. It never builds a pool nor migrates.
    let (m, state, moving) = app
        .platform(move |p| {
            let m = Merchant::find(p, id).map_err(ApiError::or_not_found("merchant"))?;
            let moving = Move::active(p, id)?;
            let state = if m.tier == Tier::Shared {
                // The shared tier is migrated at boot; no per-merchant record.
                schema_versions(p, &[SHARED_SCHEMA.to_string()])?
                    .pop()
                    .map(|(_, version)| MigrationState::ok(id, version))
            } else {
                MigrationState::find(p, id)?
            };
            Ok((m, state, moving))
        })
        .await?;
    Ok(Json(tenant_view(app, m, state, moving)))
}

async fn set_status(
    app: &App,
    admin: PlatformAdmin,
    id: MerchantId,
    status: MerchantStatus,
) -> ApiResult<Json<Merchant>> {
    let m = app
        .platform(move |p| {
            p.transaction(|p| {
                let m = Merchant::set_status(p, id, status)
                    .map_err(ApiError::or_not_found("merchant"))?;
                audit::record(
                    p,
                    &admin.operator,
                    &format!("tenant.{status}"),
                    Some(id),
                    json!({}),
                )?;
                Ok(m)
            })
        })
        .await?;
    app.directory.invalidate(id);
    Ok(Json(m))
}

#[utoipa::path(post, path = "/admin/tenants/{id}/suspend", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Merchant), (status = 401, response = docs::Unauthorized), (status = 503, response = docs::Unavailable), (status = 404, response = docs::NotFound)))]
#[post("/admin/tenants/<id>/suspend")]
async fn suspend(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
) -> ApiResult<Json<Merchant>> {
    set_status(app, admin, id, MerchantStatus::Suspended).await
}

#[utoipa::path(post, path = "/admin/tenants/{id}/resume", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Merchant), (status = 401, response = docs::Unauthorized), (status = 503, response = docs::Unavailable), (status = 404, response = docs::NotFound)))]
#[post("/admin/tenants/<id>/resume")]
async fn resume(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
) -> ApiResult<Json<Merchant>> {
    set_status(app, admin, id, MerchantStatus::Active).await
}

/// Records an operator action that has already taken effect (or was
/// refused) in the admin audit. A failure to record is logged, not
/// answered: the action is done.
pub(crate) async fn record_audit(
    app: &App,
    operator: &str,
    action: &'static str,
    merchant: Option<MerchantId>,
    details: Value,
) {
    let actor = operator.to_string();
    let recorded = app
        .platform(move |p| Ok(audit::record(p, &actor, action, merchant, details)?))
        .await;
    if let Err(e) = recorded {
        tracing::error!(%operator, action, merchant = ?merchant, error = %e, "could not record an operator action in the admin audit");
    }
}

#[derive(OpenApi)]
#[openapi(paths(create_merchant, list_tenants, get_tenant, suspend, resume))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![create_merchant, list_tenants, get_tenant, suspend, resume]
}
