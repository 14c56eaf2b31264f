//! Platform operator endpoints (admin token) for the custom domains
//! merchants are reached at ([`crate::tenancy::hosts`]). An operator
//! registers a domain (pending), confirms that the merchant owns it
//! (verify: from then on it routes to the merchant) or removes it. DNS and
//! TLS are the load balancer's. Every change is recorded in the admin audit
//! and reaches every instance's host cache by NOTIFY; this instance drops
//! its own at once too.

use rocket::{
    Route, State, delete, get, http::Status, post, response::status::Custom, routes,
    serde::json::Json,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use super::{Body, admin::record_audit, docs, fields::DomainName};
use crate::{
    api::guards::PlatformAdmin,
    app::App,
    db::{
        ids::MerchantId,
        platform::{audit, domains::MerchantDomain, merchants::Merchant},
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::hosts::under_base,
};

#[derive(Serialize, ToSchema)]
struct DomainList {
    items: Vec<MerchantDomain>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewDomain {
    domain: DomainName,
}

/// A domain named in a path, as stored (lower-case, no trailing dot).
fn path_domain(domain: &str) -> String {
    let domain = domain.to_ascii_lowercase();
    domain.strip_suffix('.').unwrap_or(&domain).to_string()
}

/// The merchant's custom domains, verified or pending.
#[utoipa::path(get, path = "/admin/tenants/{id}/domains", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = DomainList), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[get("/admin/tenants/<id>/domains")]
async fn list_domains(
    _admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
) -> ApiResult<Json<DomainList>> {
    let items = app
        .platform(move |p| {
            Merchant::find(p, id).map_err(ApiError::or_not_found("merchant"))?;
            Ok(MerchantDomain::list(p, id)?)
        })
        .await?;
    Ok(Json(DomainList { items }))
}

/// Registers a custom domain for the merchant, pending verification: it
/// does not route until verified. 201 for a new one, 200 when the merchant
/// has it already; 409 `domain_taken` when another merchant has it; 422
/// for a domain under `POSD_BASE_DOMAIN` (those hosts are the slugs').
#[utoipa::path(post, path = "/admin/tenants/{id}/domains", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)), request_body = NewDomain,
    responses((status = 201, body = MerchantDomain), (status = 200, description = "The merchant has this domain already", body = MerchantDomain), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 409, response = docs::Conflict), (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[post("/admin/tenants/<id>/domains", data = "<body>")]
async fn add_domain(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    body: Body<NewDomain>,
) -> ApiResult<Custom<Json<MerchantDomain>>> {
    let domain = body.0.domain.into_inner();
    if let Some(base) = app.hosts.base()
        && under_base(&domain, base)
    {
        return Err(ApiError::invalid(
            "domain",
            format_args!("must not be {base} or under it: merchants are reached at <slug>.{base}"),
        ));
    }
    let actor = admin.operator;
    let (row, created) = app
        .platform(move |p| {
            p.transaction(|p| {
                Merchant::find(p, id).map_err(ApiError::or_not_found("merchant"))?;
                if let Some(row) = MerchantDomain::insert(p, id, &domain)? {
                    audit::record(
                        p,
                        &actor,
                        "domain.add",
                        Some(id),
                        json!({ "domain": row.domain }),
                    )?;
                    return Ok((row, true));
                }
                match MerchantDomain::find(p, &domain)? {
                    Some(row) if row.merchant_id == id => Ok((row, false)),
                    _ => Err(ApiError::conflict(
                        ErrorCode::DomainTaken,
                        "another merchant has this domain",
                    )),
                }
            })
        })
        .await?;
    let status = if created { Status::Created } else { Status::Ok };
    Ok(Custom(status, Json(row)))
}

/// Marks the merchant's domain verified (the operator has confirmed that
/// the merchant owns it): from now on it routes to the merchant. Verifying
/// a verified domain changes nothing.
#[utoipa::path(post, path = "/admin/tenants/{id}/domains/{domain}/verify", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path), ("domain" = String, Path)),
    responses((status = 200, body = MerchantDomain), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[post("/admin/tenants/<id>/domains/<domain>/verify")]
async fn verify_domain(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    domain: &str,
) -> ApiResult<Json<MerchantDomain>> {
    let domain = path_domain(domain);
    let actor = admin.operator;
    let row = app
        .platform(move |p| {
            p.transaction(|p| {
                let row = MerchantDomain::verify(p, id, &domain)
                    .map_err(ApiError::or_not_found("domain"))?;
                audit::record(
                    p,
                    &actor,
                    "domain.verify",
                    Some(id),
                    json!({ "domain": row.domain }),
                )?;
                Ok(row)
            })
        })
        .await?;
    app.hosts.cache.invalidate_all();
    Ok(Json(row))
}

/// Removes the merchant's domain; it stops routing at once, on every
/// instance.
#[utoipa::path(delete, path = "/admin/tenants/{id}/domains/{domain}", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path), ("domain" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[delete("/admin/tenants/<id>/domains/<domain>")]
async fn remove_domain(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    domain: &str,
) -> ApiResult<Status> {
    let domain = path_domain(domain);
    let removed = app
        .platform(move |p| Ok(MerchantDomain::delete(p, id, &domain)?.then_some(domain)))
        .await?;
    let Some(domain) = removed else {
        return Err(ApiError::not_found("domain"));
    };
    app.hosts.cache.invalidate_all();
    record_audit(
        app,
        &admin.operator,
        "domain.remove",
        Some(id),
        json!({ "domain": domain }),
    )
    .await;
    Ok(Status::NoContent)
}

#[derive(OpenApi)]
#[openapi(paths(list_domains, add_domain, verify_domain, remove_domain))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![list_domains, add_domain, verify_domain, remove_domain]
}
