//! Provisioning and deprovisioning (admin token).
//!
//! `POST /admin/tenant/provision` answers 201 with the run when this call
//! placed the merchant, 200 with the run when `runId` names a run that had
//! already succeeded, and 422 with the run and the failure's code when the
//! run failed (now or before, for a repeated `runId`).
//!
//! Every call that reaches provisioning or deprovisioning is recorded in the
//! admin audit with the operator, the merchant and the outcome (`ready`,
//! `failed`, `replayed`, `refused` with the error's code).

use rocket::serde::json::Json;
use rocket::{Route, State, http::Status, post, response::status::Custom, routes, tokio};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Body, fields::OwnTier};
use crate::{
    api::guards::PlatformAdmin,
    app::App,
    db::{
        ids::{MerchantId, RunId},
        kinds::ProvisioningStatus,
        platform::runs::ProvisioningRun,
    },
    error::{ApiError, ErrorBody, ErrorCode},
    tenancy::{
        Tier,
        provisioning::{
            self, Outcome,
            deprovision::{self as tenant_deprovision, Deprovisioned},
        },
    },
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Provision {
    merchant_id: MerchantId,
    /// `schema` or `dedicated`.
    tier: OwnTier,
    /// A client run id: repeating it answers the same run.
    run_id: Option<RunId>,
    /// Bring your own database (dedicated tier only); never echoed back.
    #[schema(value_type = Option<String>)]
    database_url: Option<SecretString>,
    /// The server posd creates the database on (dedicated tier, no
    /// `databaseUrl`): a registered server's name, or `default`; the one
    /// with the most room when absent.
    server: Option<super::fields::ServerName>,
}

/// A provisioning run, as the answer carries it.
#[derive(Serialize, utoipa::ToSchema)]
struct RunAnswer {
    run: ProvisioningRun,
}

/// A 422 of this route: the error envelope, with the run (which step failed
/// and why) when a run failed; without it for a bad body or database URL.
#[derive(Serialize, utoipa::ToSchema)]
struct FailedRun {
    error: ErrorBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<ProvisioningRun>,
}

/// What `POST /admin/tenant/provision` answers.
#[derive(rocket::Responder)]
enum Provisioned {
    Run(Custom<Json<RunAnswer>>),
    Failed(Custom<Json<FailedRun>>),
}

fn failed(run: ProvisioningRun) -> Provisioned {
    let error = ErrorBody {
        code: run
            .error_code
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(ErrorCode::ProvisioningFailed),
        message: format!(
            "provisioning failed at step {}: {}",
            run.failed_step.clone().unwrap_or_default(),
            run.error.clone().unwrap_or_default()
        ),
        details: None,
    };
    Provisioned::Failed(Custom(
        Status::UnprocessableEntity,
        Json(FailedRun {
            error,
            run: Some(run),
        }),
    ))
}

/// Provisions a merchant onto its own schema or database, as one durable run.
#[utoipa::path(post, path = "/admin/tenant/provision", tag = "admin", security(("admin" = [])), request_body = Provision,
    responses(
        (status = 201, description = "The run that provisioned the merchant", body = RunAnswer),
        (status = 200, description = "A ready run answered again for its `runId`", body = RunAnswer),
        (status = 401, response = super::docs::Unauthorized),
        (status = 404, response = super::docs::NotFound),
        (status = 409, response = super::docs::Conflict),
        (status = 422, description = "A failed run (the envelope with `run`: the failed step and why), a bad database URL or an invalid body", body = FailedRun),
        (status = 503, response = super::docs::Unavailable),
    ))]
#[post("/admin/tenant/provision", data = "<body>")]
async fn provision(
    admin: PlatformAdmin,
    app: &State<App>,
    body: Body<Provision>,
) -> Result<Provisioned, ApiError> {
    let b = body.0;
    let tier = Tier::from(b.tier);
    let database_url = match &b.database_url {
        Some(raw) => Some(provisioning::parse_database_url(
            secrecy::ExposeSecret::expose_secret(raw),
        )?),
        None => None,
    };
    let req = provisioning::Request {
        merchant: b.merchant_id,
        tier,
        run_id: b.run_id,
        database_url,
        server: b.server.map(super::fields::ServerName::into_inner),
    };
    let app2 = app.inner().clone();
    let outcome = tokio::task::spawn_blocking(move || provisioning::run(&app2, &req))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from);
    let mut details = json!({ "tier": tier.as_str(), "byo": b.database_url.is_some() });
    match &outcome {
        Ok(Outcome::Ready(run)) => {
            details["outcome"] = json!("ready");
            details["runId"] = json!(run.id);
        }
        Ok(Outcome::Failed(run)) => {
            details["outcome"] = json!("failed");
            details["runId"] = json!(run.id);
            details["code"] = json!(run.error_code);
            details["step"] = json!(run.failed_step);
        }
        Ok(Outcome::Replayed(run)) => {
            details["outcome"] = json!("replayed");
            details["runId"] = json!(run.id);
            details["runStatus"] = json!(run.status);
        }
        Err(e) => {
            details["outcome"] = json!("refused");
            details["code"] = json!(e.code);
            details["status"] = json!(e.status.code);
        }
    }
    super::admin::record_audit(
        app,
        &admin.operator,
        "tenant.provision",
        Some(b.merchant_id),
        details,
    )
    .await;
    Ok(match outcome? {
        Outcome::Ready(run) => {
            tracing::info!(operator = %admin.operator, merchant = %b.merchant_id, run = %run.id, "provisioned");
            Provisioned::Run(Custom(Status::Created, Json(RunAnswer { run })))
        }
        Outcome::Replayed(run) if run.status == ProvisioningStatus::Ready => {
            Provisioned::Run(Custom(Status::Ok, Json(RunAnswer { run })))
        }
        Outcome::Failed(run) | Outcome::Replayed(run) => failed(run),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Deprovision {
    #[serde(default)]
    force: bool,
}

/// Drops a merchant's schema or posd-created database (after an export, or
/// forced) or forgets the database it brought, and puts it back on the
/// shared tier.
#[utoipa::path(post, path = "/admin/tenants/{id}/deprovision", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)), request_body = Deprovision,
    responses(
        (status = 200, description = "What was dropped or forgotten, and anything left behind", body = Deprovisioned),
        (status = 401, response = super::docs::Unauthorized),
        (status = 404, response = super::docs::NotFound),
        (status = 409, description = "`export_required` or `not_provisioned`", body = super::docs::ErrorEnvelope),
        (status = 422, response = super::docs::Invalid),
        (status = 503, response = super::docs::Unavailable),
    ))]
#[post("/admin/tenants/<id>/deprovision", data = "<body>")]
async fn deprovision(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    body: Body<Deprovision>,
) -> Result<Json<Deprovisioned>, ApiError> {
    let force = body.0.force;
    let app2 = app.inner().clone();
    let operator = admin.operator.clone();
    let out = tokio::task::spawn_blocking(move || {
        tenant_deprovision::deprovision(&app2, id, force, &operator)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from);
    // A deprovisioning that happened is recorded with the placement change
    // (and its drop, if that failed); one that was refused is recorded here.
    if let Err(e) = &out {
        super::admin::record_audit(
            app,
            &admin.operator,
            "tenant.deprovision",
            Some(id),
            json!({ "outcome": "refused", "force": force, "code": e.code, "status": e.status.code }),
        )
        .await;
    }
    Ok(Json(out?))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(provision, deprovision))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![provision, deprovision]
}
