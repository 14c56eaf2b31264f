//! Provisioning and deprovisioning (admin token).
//!
//! `POST /admin/tenant/provision` answers 201 with the run when this call
//! placed the merchant, 200 with the run when `runId` names a run that had
//! already succeeded, and 422 with the run and the failure's code when the
//! run failed (now or before, for a repeated `runId`).

use rocket::{Route, State, http::Status, post, response::status::Custom, routes, tokio};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Body;
use crate::{
    app::App,
    auth::guards::PlatformAdmin,
    db::{
        ids::{MerchantId, RunId},
        platform::runs::ProvisioningRun,
    },
    error::ApiError,
    tenancy::{
        Tier,
        provisioning::{
            self, Outcome,
            deprovision::{self as tenant_deprovision, Deprovisioned},
        },
    },
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Provision {
    merchant_id: MerchantId,
    tier: String,
    run_id: Option<RunId>,
    database_url: Option<SecretString>,
}

fn failed(status: Status, run: ProvisioningRun) -> Custom<Json> {
    Custom(
        status,
        rocket::serde::json::Json(json!({
            "error": {
                "code": run.error_code.clone().unwrap_or_else(|| "provisioning_failed".into()),
                "message": format!(
                    "provisioning failed at step {}: {}",
                    run.failed_step.clone().unwrap_or_default(),
                    run.error.clone().unwrap_or_default()
                ),
            },
            "run": run,
        })),
    )
}

type Json = rocket::serde::json::Json<Value>;

#[post("/admin/tenant/provision", data = "<body>")]
async fn provision(
    admin: PlatformAdmin,
    app: &State<App>,
    body: Body<Provision>,
) -> Result<Custom<Json>, ApiError> {
    let b = body.0;
    let tier = match Tier::parse(&b.tier) {
        Some(t @ (Tier::Schema | Tier::Dedicated)) => t,
        _ => return Err(ApiError::invalid("tier", "must be `schema` or `dedicated`")),
    };
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
    };
    let app2 = app.inner().clone();
    let outcome = tokio::task::spawn_blocking(move || provisioning::run(&app2, &req))
        .await
        .map_err(ApiError::internal)??;
    Ok(match outcome {
        Outcome::Ready(run) => {
            tracing::info!(operator = %admin.operator, merchant = %b.merchant_id, run = %run.id, "provisioned");
            Custom(
                Status::Created,
                rocket::serde::json::Json(json!({ "run": run })),
            )
        }
        Outcome::Replayed(run) if run.status == "ready" => {
            Custom(Status::Ok, rocket::serde::json::Json(json!({ "run": run })))
        }
        Outcome::Failed(run) | Outcome::Replayed(run) => failed(Status::UnprocessableEntity, run),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Deprovision {
    #[serde(default)]
    force: bool,
}

/// Drops a merchant's schema or posd-created database (after an export, or
/// forced) or forgets the database it brought, and puts it back on the
/// shared tier.
#[post("/admin/tenants/<id>/deprovision", data = "<body>")]
async fn deprovision(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    body: Body<Deprovision>,
) -> Result<rocket::serde::json::Json<Deprovisioned>, ApiError> {
    let force = body.0.force;
    let app2 = app.inner().clone();
    let operator = admin.operator.clone();
    let out = tokio::task::spawn_blocking(move || {
        tenant_deprovision::deprovision(&app2, id, force, &operator)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(rocket::serde::json::Json(out))
}

pub fn routes() -> Vec<Route> {
    routes![provision, deprovision]
}
