//! `GET /context`: what a till needs at start-up: its merchant, plan,
//! effective limits, enabled features, settings and branding. Any staff member. Read from the
//! cached tenant context ([`crate::tenancy::context`]): no database round
//! trip on a cache hit.

use rocket::{Route, get, routes, serde::json::Json};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::docs;
use crate::{
    api::guards::Staff,
    db::platform::plans::Limits,
    tenancy::{
        context::{MerchantInfo, PlanInfo, TenantContext},
        settings::{Branding, Settings},
    },
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
    /// The merchant's settings, defaults applied.
    pub settings: Settings,
    /// The merchant's branding; null is unset.
    pub branding: Branding,
}

impl ContextView {
    pub fn new(ctx: &TenantContext) -> Self {
        ContextView {
            merchant: ctx.merchant.clone(),
            plan: ctx.plan.clone(),
            limits: ctx.limits,
            features: ctx.features.iter().cloned().collect(),
            settings: ctx.settings.clone(),
            branding: ctx.branding.clone(),
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
