//! `GET /context`: what a till needs at start-up: its merchant, plan,
//! effective limits and enabled features. Any staff member. Read from the
//! cached tenant context ([`crate::tenancy::context`]): no database round
//! trip on a cache hit.

use rocket::{Route, get, routes, serde::json::Json};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::docs;
use crate::{
    api::guards::Staff,
    db::platform::plans::Limits,
    tenancy::context::{MerchantInfo, PlanInfo, TenantContext},
};

/// The tenant context as a till reads it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextView {
    pub merchant: MerchantInfo,
    pub plan: PlanInfo,
    /// The plan's limits with the merchant's overrides; null is unlimited.
    pub limits: Limits,
    /// The keys of the feature flags on for this merchant, sorted.
    pub features: Vec<String>,
    /// Reserved for the merchant's settings: always `{}` for now.
    #[schema(value_type = Object)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Reserved for the merchant's branding: always `{}` for now.
    #[schema(value_type = Object)]
    pub branding: serde_json::Map<String, serde_json::Value>,
}

impl ContextView {
    pub fn new(ctx: &TenantContext) -> Self {
        ContextView {
            merchant: ctx.merchant.clone(),
            plan: ctx.plan.clone(),
            limits: ctx.limits,
            features: ctx.features.iter().cloned().collect(),
            settings: serde_json::Map::new(),
            branding: serde_json::Map::new(),
        }
    }
}

/// The caller's merchant, plan, limits and enabled features.
#[utoipa::path(get, path = "/context", tag = "context", security(("staff" = [])),
    responses(
        (status = 200, body = ContextView),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/context")]
fn context(_staff: &Staff, ctx: &TenantContext) -> Json<ContextView> {
    Json(ContextView::new(ctx))
}

#[derive(OpenApi)]
#[openapi(paths(context))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![context]
}
