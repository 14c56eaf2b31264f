//! `GET /settings` (any staff), `PATCH /settings` and `PATCH /branding`
//! (owner): the merchant's settings and branding
//! ([`crate::tenancy::settings`]). A PATCH is a partial update: each field
//! given replaces the merchant's value, `null` puts it back to its
//! default, an unknown field or an invalid value is 422
//! `validation_failed` naming the field. The cached tenant context is
//! dropped on every instance by the control plane's NOTIFY.

use std::collections::BTreeSet;

use rocket::{Route, State, get, patch, routes, serde::json::Json};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::OpenApi;

use super::{Body, docs};
use crate::{
    api::{
        audit::{Audit, Event, details, record_after},
        guards::{Owner, Staff},
    },
    app::App,
    db::{kinds::AuditAction, platform::plans::MerchantPlan, tenant::audit::Actor},
    error::{ApiError, ApiResult},
    tenancy::{
        context::TenantContext,
        settings::{Branding, Kind, Settings, merge},
    },
};

/// The merchant's settings, defaults applied.
#[utoipa::path(get, path = "/settings", tag = "settings", security(("staff" = [])),
    responses(
        (status = 200, body = Settings),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/settings")]
fn get_settings(_staff: &Staff, ctx: &TenantContext) -> Json<Settings> {
    Json(ctx.settings.clone())
}

/// Changes the merchant's settings: the fields given, `null` resetting one
/// to its default. Owner only.
#[utoipa::path(patch, path = "/settings", tag = "settings", security(("staff" = [])),
    request_body(content = Object, description = "Any of the fields of `Settings`; null resets one"),
    responses(
        (status = 200, body = Settings),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[patch("/settings", data = "<body>")]
async fn patch_settings(
    owner: Owner<'_>,
    audit: Audit,
    app: &State<App>,
    body: Body<Map<String, Value>>,
) -> ApiResult<Json<Settings>> {
    let Audit(actor) = audit;
    let stored = update(app, owner.0, actor, Kind::Settings, body.0).await?;
    Settings::from_stored(&stored)
        .map(Json)
        .map_err(ApiError::internal)
}

/// Changes the merchant's branding: the fields given, `null` removing one.
/// Owner only.
#[utoipa::path(patch, path = "/branding", tag = "settings", security(("staff" = [])),
    request_body(content = Object, description = "Any of the fields of `Branding`; null removes one"),
    responses(
        (status = 200, body = Branding),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[patch("/branding", data = "<body>")]
async fn patch_branding(
    owner: Owner<'_>,
    audit: Audit,
    app: &State<App>,
    body: Body<Map<String, Value>>,
) -> ApiResult<Json<Branding>> {
    let Audit(actor) = audit;
    let stored = update(app, owner.0, actor, Kind::Branding, body.0).await?;
    Branding::from_stored(&stored)
        .map(Json)
        .map_err(ApiError::internal)
}

/// What the audit trail records of a settings or branding change: the
/// keys whose stored value changed, with the value before and after (null:
/// not set, the default applies).
#[derive(Debug, Serialize)]
struct Changed {
    keys: Vec<String>,
    old: Map<String, Value>,
    new: Map<String, Value>,
}

impl Changed {
    fn between(before: &Map<String, Value>, after: &Map<String, Value>) -> Changed {
        let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        let mut changed = Changed {
            keys: Vec::new(),
            old: Map::new(),
            new: Map::new(),
        };
        for key in keys {
            let (was, is) = (before.get(key), after.get(key));
            if was != is {
                changed.keys.push(key.clone());
                changed
                    .old
                    .insert(key.clone(), was.cloned().unwrap_or(Value::Null));
                changed
                    .new
                    .insert(key.clone(), is.cloned().unwrap_or(Value::Null));
            }
        }
        changed
    }
}

/// Merges `patch` into the stored document under the merchant's row lock;
/// answers what is stored now. A change is recorded in the audit trail.
async fn update(
    app: &App,
    staff: &Staff,
    actor: Actor,
    kind: Kind,
    patch: Map<String, Value>,
) -> ApiResult<Value> {
    let merchant = staff.claims.mid;
    let (before, stored) = app
        .platform(move |p| {
            p.transaction(|p| {
                MerchantPlan::lock(p, merchant)?;
                let m = MerchantPlan::find(p, merchant)?;
                let current = match kind {
                    Kind::Settings => m.settings,
                    Kind::Branding => m.branding,
                };
                let current = current.as_object().cloned().unwrap_or_default();
                let next = Value::Object(
                    merge(kind, &current, &patch)
                        .map_err(|(field, reason)| ApiError::invalid(&field, reason))?,
                );
                let m = match kind {
                    Kind::Settings => MerchantPlan::set_settings(p, merchant, next)?.settings,
                    Kind::Branding => MerchantPlan::set_branding(p, merchant, next)?.branding,
                };
                Ok((current, m))
            })
        })
        .await?;
    // This instance at once; the others by NOTIFY.
    app.contexts.invalidate(&merchant);
    let changed = Changed::between(&before, stored.as_object().unwrap_or(&Map::new()));
    if !changed.keys.is_empty() {
        let action = match kind {
            Kind::Settings => AuditAction::SettingsChanged,
            Kind::Branding => AuditAction::BrandingChanged,
        };
        let event = Event {
            action,
            subject: None,
            details: details(&changed),
        };
        record_after(
            app,
            merchant,
            Some(staff.placement.clone()),
            actor,
            vec![event],
        )
        .await;
    }
    Ok(stored)
}

#[derive(OpenApi)]
#[openapi(paths(get_settings, patch_settings, patch_branding))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![get_settings, patch_settings, patch_branding]
}
