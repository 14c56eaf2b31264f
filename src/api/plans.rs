//! Platform operator endpoints (admin token) for plans, merchants' plans
//! and limit overrides, feature flags and merchants' flag overrides. Every
//! change is recorded in the admin audit, and reaches every instance's
//! cached tenant contexts by NOTIFY (the triggers of `migrations/`); this
//! instance drops its own entries at once too.

use rocket::{
    Route, State, delete, get, http::Status, patch, post, put, response::status::Custom, routes,
    serde::json::Json,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use super::{
    Body,
    admin::record_audit,
    context::ContextView,
    docs,
    fields::{FlagKey, LimitValue, Name, PlanKey, PlanRank, RolloutPercent},
    nullable,
};
use crate::{
    api::guards::PlatformAdmin,
    app::App,
    db::{
        ids::MerchantId,
        platform::plans::{
            FeatureFlag, FlagChanges, LimitKind, LimitOverrides, MerchantPlan, NewFeatureFlag,
            NewPlan, Plan, PlanChanges,
        },
    },
    error::{ApiError, ApiResult, ErrorCode},
};

/// A foreign key violation of a write that names a plan (one that does
/// not exist) is 422 `unknown_plan`; any other error goes to `other`.
pub(super) fn or_unknown_plan(
    other: impl Fn(diesel::result::Error) -> ApiError,
) -> impl Fn(diesel::result::Error) -> ApiError {
    move |e| match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _,
        ) => ApiError::new(
            Status::UnprocessableEntity,
            ErrorCode::UnknownPlan,
            "plan: no such plan",
        ),
        e => other(e),
    }
}

/// A unique violation is 409 `key_taken`, a foreign key violation (a plan
/// that does not exist) 422 `unknown_plan`, `NotFound` a 404 of `what`.
fn plan_error(what: &'static str) -> impl Fn(diesel::result::Error) -> ApiError {
    or_unknown_plan(ApiError::or_taken(
        what,
        ErrorCode::KeyTaken,
        "this key is taken",
    ))
}

#[derive(Serialize, ToSchema)]
struct PlanList {
    items: Vec<Plan>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreatePlan {
    key: PlanKey,
    name: Name,
    rank: PlanRank,
    /// Each limit: absent or null is unlimited.
    #[serde(default)]
    max_staff: Option<LimitValue>,
    #[serde(default)]
    max_products: Option<LimitValue>,
    #[serde(default)]
    requests_per_minute: Option<LimitValue>,
    #[serde(default)]
    max_storage_bytes: Option<LimitValue>,
}

/// Only the fields given change; a limit set to null is unlimited.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    clippy::option_option,
    reason = "PATCH: absent leaves a limit as it is, null makes it unlimited"
)]
struct UpdatePlan {
    name: Option<Name>,
    rank: Option<PlanRank>,
    #[serde(default, deserialize_with = "nullable")]
    max_staff: Option<Option<LimitValue>>,
    #[serde(default, deserialize_with = "nullable")]
    max_products: Option<Option<LimitValue>>,
    #[serde(default, deserialize_with = "nullable")]
    requests_per_minute: Option<Option<LimitValue>>,
    #[serde(default, deserialize_with = "nullable")]
    max_storage_bytes: Option<Option<LimitValue>>,
}

fn value(v: Option<LimitValue>) -> Option<i64> {
    v.map(LimitValue::get)
}

#[utoipa::path(get, path = "/admin/plans", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = PlanList), (status = 401, response = docs::Unauthorized), (status = 503, response = docs::Unavailable)))]
#[get("/admin/plans")]
async fn list_plans(_admin: PlatformAdmin, app: &State<App>) -> ApiResult<Json<PlanList>> {
    let items = app.platform(|p| Ok(Plan::list(p)?)).await?;
    Ok(Json(PlanList { items }))
}

/// A new plan (409 `key_taken`).
#[utoipa::path(post, path = "/admin/plans", tag = "admin", security(("admin" = [])), request_body = CreatePlan,
    responses((status = 201, body = Plan), (status = 401, response = docs::Unauthorized), (status = 409, response = docs::Conflict), (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[post("/admin/plans", data = "<body>")]
async fn create_plan(
    admin: PlatformAdmin,
    app: &State<App>,
    body: Body<CreatePlan>,
) -> ApiResult<Custom<Json<Plan>>> {
    let b = body.0;
    let actor = admin.operator;
    let plan = app
        .platform(move |p| {
            p.transaction(|p| {
                let plan = Plan::insert(
                    p,
                    &NewPlan {
                        key: b.key.as_str(),
                        name: b.name.as_str(),
                        rank: b.rank.get(),
                        max_staff: value(b.max_staff),
                        max_products: value(b.max_products),
                        requests_per_minute: value(b.requests_per_minute),
                        max_storage_bytes: value(b.max_storage_bytes),
                    },
                )
                .map_err(plan_error("plan"))?;
                crate::db::platform::audit::record(p, &actor, "plan.create", None, json!(plan))?;
                Ok(plan)
            })
        })
        .await?;
    Ok(Custom(Status::Created, Json(plan)))
}

/// Changes a plan; its merchants' limits follow at once, on every instance.
#[utoipa::path(patch, path = "/admin/plans/{key}", tag = "admin", security(("admin" = [])), params(("key" = String, Path)), request_body = UpdatePlan,
    responses((status = 200, body = Plan), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[patch("/admin/plans/<key>", data = "<body>")]
async fn update_plan(
    admin: PlatformAdmin,
    app: &State<App>,
    key: &str,
    body: Body<UpdatePlan>,
) -> ApiResult<Json<Plan>> {
    let b = body.0;
    let key = key.to_string();
    let actor = admin.operator;
    let changes = PlanChanges {
        name: b.name.map(Name::into_inner),
        rank: b.rank.map(PlanRank::get),
        max_staff: b.max_staff.map(value),
        max_products: b.max_products.map(value),
        requests_per_minute: b.requests_per_minute.map(value),
        max_storage_bytes: b.max_storage_bytes.map(value),
    };
    let plan = app
        .platform(move |p| {
            p.transaction(|p| {
                let plan = Plan::update(p, &key, &changes).map_err(plan_error("plan"))?;
                crate::db::platform::audit::record(p, &actor, "plan.update", None, json!(plan))?;
                Ok(plan)
            })
        })
        .await?;
    app.contexts.invalidate_all();
    Ok(Json(plan))
}

/// A merchant's plan, its limit overrides and the context they give.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MerchantPlanView {
    /// The merchant's own limits, replacing the plan's: a limit given as
    /// null is unlimited, an absent one follows the plan.
    #[schema(value_type = Object)]
    limit_overrides: LimitOverrides,
    context: ContextView,
}

/// `plan` moves the merchant onto that plan; `limitOverrides` replaces
/// the merchant's overrides whole (`{}` removes them all).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetMerchantPlan {
    plan: Option<PlanKey>,
    #[schema(value_type = Option<Object>)]
    limit_overrides: Option<OverridesBody>,
}

/// Limit overrides as sent: `{"maxStaff": 12, "maxProducts": null}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    clippy::option_option,
    reason = "absent follows the plan, null is unlimited"
)]
struct OverridesBody {
    #[serde(default, deserialize_with = "nullable")]
    max_staff: Option<Option<LimitValue>>,
    #[serde(default, deserialize_with = "nullable")]
    max_products: Option<Option<LimitValue>>,
    #[serde(default, deserialize_with = "nullable")]
    requests_per_minute: Option<Option<LimitValue>>,
    #[serde(default, deserialize_with = "nullable")]
    max_storage_bytes: Option<Option<LimitValue>>,
}

impl OverridesBody {
    fn into_overrides(self) -> LimitOverrides {
        let mut out = LimitOverrides::default();
        for (kind, v) in [
            (LimitKind::MaxStaff, self.max_staff),
            (LimitKind::MaxProducts, self.max_products),
            (LimitKind::RequestsPerMinute, self.requests_per_minute),
            (LimitKind::MaxStorageBytes, self.max_storage_bytes),
        ] {
            if let Some(v) = v {
                out.0.insert(kind, value(v));
            }
        }
        out
    }
}

async fn merchant_plan_view(app: &App, id: MerchantId) -> ApiResult<MerchantPlanView> {
    app.contexts.invalidate(&id);
    let (m, ctx) = app
        .platform(move |p| {
            let m = MerchantPlan::find(p, id).map_err(ApiError::or_not_found("merchant"))?;
            let ctx = crate::tenancy::context::load(p, id)
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::not_found("merchant"))?;
            Ok((m, ctx))
        })
        .await?;
    Ok(MerchantPlanView {
        limit_overrides: LimitOverrides::from_json(&m.limit_overrides)
            .map_err(ApiError::internal)?,
        context: ContextView::new(&ctx),
    })
}

#[utoipa::path(get, path = "/admin/tenants/{id}/plan", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = MerchantPlanView), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[get("/admin/tenants/<id>/plan")]
async fn get_merchant_plan(
    _admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
) -> ApiResult<Json<MerchantPlanView>> {
    merchant_plan_view(app, id).await.map(Json)
}

/// Moves a merchant onto a plan and/or sets its limit overrides; the new
/// limits apply at once, on every instance. Nothing is deleted: a merchant
/// above a new limit keeps what it has and cannot create more.
#[utoipa::path(post, path = "/admin/tenants/{id}/plan", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)), request_body = SetMerchantPlan,
    responses((status = 200, body = MerchantPlanView), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[post("/admin/tenants/<id>/plan", data = "<body>")]
async fn set_merchant_plan(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    body: Body<SetMerchantPlan>,
) -> ApiResult<Json<MerchantPlanView>> {
    let b = body.0;
    let plan = b.plan.map(PlanKey::into_inner);
    let overrides = b.limit_overrides.map(OverridesBody::into_overrides);
    let actor = admin.operator;
    app.platform(move |p| {
        p.transaction(|p| {
            MerchantPlan::find(p, id).map_err(ApiError::or_not_found("merchant"))?;
            if let Some(plan) = &plan {
                MerchantPlan::set_plan(p, id, plan).map_err(plan_error("merchant"))?;
            }
            if let Some(o) = &overrides {
                MerchantPlan::set_limit_overrides(p, id, o)?;
            }
            crate::db::platform::audit::record(
                p,
                &actor,
                "merchant.plan",
                Some(id),
                json!({ "plan": plan, "limitOverrides": overrides.as_ref().map(LimitOverrides::to_json) }),
            )?;
            Ok(())
        })
    })
    .await?;
    merchant_plan_view(app, id).await.map(Json)
}

#[derive(Serialize, ToSchema)]
struct FlagList {
    items: Vec<FeatureFlag>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateFlag {
    key: FlagKey,
    /// Empty when absent.
    #[serde(default)]
    description: Option<Name>,
    /// false when absent.
    #[serde(default)]
    default_on: bool,
    /// Off for merchants on a plan ranked below this one.
    #[serde(default)]
    min_plan: Option<PlanKey>,
    /// When given, on for this share of merchants instead of `defaultOn`.
    #[serde(default)]
    rollout_percent: Option<RolloutPercent>,
}

/// Only the fields given change; `minPlan` or `rolloutPercent` null
/// removes the gate or the rollout.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    clippy::option_option,
    reason = "PATCH: absent leaves a field as it is, null clears it"
)]
struct UpdateFlag {
    description: Option<Name>,
    default_on: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    min_plan: Option<Option<PlanKey>>,
    #[serde(default, deserialize_with = "nullable")]
    rollout_percent: Option<Option<RolloutPercent>>,
}

#[utoipa::path(get, path = "/admin/flags", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = FlagList), (status = 401, response = docs::Unauthorized), (status = 503, response = docs::Unavailable)))]
#[get("/admin/flags")]
async fn list_flags(_admin: PlatformAdmin, app: &State<App>) -> ApiResult<Json<FlagList>> {
    let items = app.platform(|p| Ok(FeatureFlag::list(p)?)).await?;
    Ok(Json(FlagList { items }))
}

/// A new flag (409 `key_taken`, 422 `unknown_plan`).
#[utoipa::path(post, path = "/admin/flags", tag = "admin", security(("admin" = [])), request_body = CreateFlag,
    responses((status = 201, body = FeatureFlag), (status = 401, response = docs::Unauthorized), (status = 409, response = docs::Conflict), (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[post("/admin/flags", data = "<body>")]
async fn create_flag(
    admin: PlatformAdmin,
    app: &State<App>,
    body: Body<CreateFlag>,
) -> ApiResult<Custom<Json<FeatureFlag>>> {
    let b = body.0;
    let actor = admin.operator;
    let flag = app
        .platform(move |p| {
            p.transaction(|p| {
                let flag = FeatureFlag::insert(
                    p,
                    &NewFeatureFlag {
                        key: b.key.as_str(),
                        description: b.description.as_ref().map_or("", Name::as_str),
                        default_on: b.default_on,
                        min_plan: b.min_plan.as_ref().map(PlanKey::as_str),
                        rollout_percent: b.rollout_percent.map(RolloutPercent::get),
                    },
                )
                .map_err(plan_error("flag"))?;
                crate::db::platform::audit::record(p, &actor, "flag.create", None, json!(flag))?;
                Ok(flag)
            })
        })
        .await?;
    app.contexts.invalidate_all();
    Ok(Custom(Status::Created, Json(flag)))
}

/// Changes a flag; every merchant's features follow at once, on every
/// instance.
#[utoipa::path(patch, path = "/admin/flags/{key}", tag = "admin", security(("admin" = [])), params(("key" = String, Path)), request_body = UpdateFlag,
    responses((status = 200, body = FeatureFlag), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[patch("/admin/flags/<key>", data = "<body>")]
async fn update_flag(
    admin: PlatformAdmin,
    app: &State<App>,
    key: &str,
    body: Body<UpdateFlag>,
) -> ApiResult<Json<FeatureFlag>> {
    let b = body.0;
    let key = key.to_string();
    let actor = admin.operator;
    let changes = FlagChanges {
        description: b.description.map(Name::into_inner),
        default_on: b.default_on,
        min_plan: b.min_plan.map(|p| p.map(PlanKey::into_inner)),
        rollout_percent: b.rollout_percent.map(|r| r.map(RolloutPercent::get)),
    };
    let flag = app
        .platform(move |p| {
            p.transaction(|p| {
                let flag = FeatureFlag::update(p, &key, &changes).map_err(plan_error("flag"))?;
                crate::db::platform::audit::record(p, &actor, "flag.update", None, json!(flag))?;
                Ok(flag)
            })
        })
        .await?;
    app.contexts.invalidate_all();
    Ok(Json(flag))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetOverride {
    enabled: bool,
}

/// Turns a flag on or off for one merchant, whatever its plan, rollout
/// or default.
#[utoipa::path(put, path = "/admin/tenants/{id}/flags/{key}", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path), ("key" = String, Path)), request_body = SetOverride,
    responses((status = 200, body = MerchantPlanView), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[put("/admin/tenants/<id>/flags/<key>", data = "<body>")]
async fn set_flag_override(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    key: &str,
    body: Body<SetOverride>,
) -> ApiResult<Json<MerchantPlanView>> {
    let enabled = body.0.enabled;
    let key = key.to_string();
    let actor = admin.operator;
    app.platform(move |p| {
        p.transaction(|p| {
            MerchantPlan::find(p, id).map_err(ApiError::or_not_found("merchant"))?;
            FeatureFlag::find(p, &key).map_err(ApiError::or_not_found("flag"))?;
            FeatureFlag::set_override(p, id, &key, enabled)?;
            crate::db::platform::audit::record(
                p,
                &actor,
                "flag.override",
                Some(id),
                json!({ "flag": key, "enabled": enabled }),
            )?;
            Ok(())
        })
    })
    .await?;
    merchant_plan_view(app, id).await.map(Json)
}

/// Removes a merchant's override of a flag (404 when it has none).
#[utoipa::path(delete, path = "/admin/tenants/{id}/flags/{key}", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path), ("key" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[delete("/admin/tenants/<id>/flags/<key>")]
async fn clear_flag_override(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    key: &str,
) -> ApiResult<Status> {
    let key = key.to_string();
    let removed = app
        .platform(move |p| Ok(FeatureFlag::clear_override(p, id, &key)?.then_some(key)))
        .await?;
    let Some(key) = removed else {
        return Err(ApiError::not_found("flag override"));
    };
    app.contexts.invalidate(&id);
    record_audit(
        app,
        &admin.operator,
        "flag.override.clear",
        Some(id),
        json!({ "flag": key }),
    )
    .await;
    Ok(Status::NoContent)
}

#[derive(OpenApi)]
#[openapi(paths(
    list_plans,
    create_plan,
    update_plan,
    get_merchant_plan,
    set_merchant_plan,
    list_flags,
    create_flag,
    update_flag,
    set_flag_override,
    clear_flag_override
))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![
        list_plans,
        create_plan,
        update_plan,
        get_merchant_plan,
        set_merchant_plan,
        list_flags,
        create_flag,
        update_flag,
        set_flag_override,
        clear_flag_override
    ]
}
