//! Fleet migrations through the API (admin token): a run is recorded and
//! answered 202 while a background task migrates the tenants; a dry run is
//! answered at once. The same runner serves `posd tenants migrate`.

use rocket::{
    Route, State, get, http::Status, post, response::status::Custom, routes, serde::json::Json,
    tokio,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use super::{Body, admin::record_audit, docs, fields::OwnTier};
use crate::{
    api::guards::PlatformAdmin,
    app::App,
    db::{
        ids::{MerchantId, RunId},
        platform::migration_state::{FleetRun, MigrationState},
    },
    error::{ApiError, ApiResult},
    tenancy::{Tier, fleet},
};

#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MigrateTenants {
    #[serde(default)]
    merchant_ids: Vec<MerchantId>,
    tier: Option<OwnTier>,
    #[serde(default)]
    dry_run: bool,
}

/// What `POST /admin/tenants/migrate` answers: a dry run's report at once,
/// or the run a background task is executing.
#[derive(rocket::Responder)]
enum MigrateAnswer {
    Report(Json<fleet::Report>),
    Started(Custom<Json<StartedRun>>),
}

/// A fleet run under way; follow it at `GET /admin/fleet-runs/{id}`.
#[derive(Serialize, ToSchema)]
struct StartedRun {
    run: FleetRun,
}

/// A fleet run and the tenants it left failed. `finishedAt` is set when
/// every tenant is done.
#[derive(Serialize, ToSchema)]
struct RunView {
    run: FleetRun,
    failed: Vec<MigrationState>,
}

/// Runs pending tenant migrations over the selection. A dry run answers
/// every tenant's outcome at once (200); a real run is recorded and
/// answered 202 with its id while a background task migrates the tenants
/// (no fleet run inside an HTTP call); its end is in the admin audit and at
/// `GET /admin/fleet-runs/{id}`.
#[utoipa::path(post, path = "/admin/tenants/migrate", tag = "admin", security(("admin" = [])), request_body = MigrateTenants,
    responses(
        (status = 200, description = "A dry run: every tenant's outcome", body = fleet::Report),
        (status = 202, description = "The run, started", body = StartedRun),
        (status = 401, response = docs::Unauthorized), (status = 503, response = docs::Unavailable), (status = 422, response = docs::Invalid)))]
#[post("/admin/tenants/migrate", data = "<body>")]
async fn migrate_tenants(
    admin: PlatformAdmin,
    app: &State<App>,
    body: Body<MigrateTenants>,
) -> ApiResult<MigrateAnswer> {
    let b = body.0;
    let selection = fleet::Selection {
        merchants: b.merchant_ids,
        tier: b.tier.map(Tier::from),
    };
    let app2 = app.inner().clone();
    let operator = admin.operator.clone();
    let dry_run = b.dry_run;
    let details = json!({
        "merchantIds": selection.merchants,
        "tier": selection.tier,
        "dryRun": dry_run,
    });
    let single = match selection.merchants.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let planned = tokio::task::spawn_blocking(move || {
        fleet::plan(&app2.settings, &operator, &selection, dry_run)
    })
    .await
    .map_err(ApiError::internal)?;
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            let mut details = details;
            details["outcome"] = json!("error");
            let e = format!("{e:#}");
            details["error"] = json!(crate::redact::redact_text(&e));
            record_audit(app, &admin.operator, "tenants.migrate", single, details).await;
            return Err(ApiError::internal(e));
        }
    };
    let run = planned.run().clone();
    let task = execute_fleet_run(
        app.inner().clone(),
        admin.operator,
        planned,
        details,
        single,
    );
    if dry_run {
        return task.await.map(|r| MigrateAnswer::Report(Json(r)));
    }
    tokio::spawn(task);
    Ok(MigrateAnswer::Started(Custom(
        Status::Accepted,
        Json(StartedRun { run }),
    )))
}

/// Executes a planned fleet run, then re-checks the blocked tenants it
/// covered, drops the migrated tenants' cached placements and records the
/// run's end in the admin audit (last: once it is there, all is done).
async fn execute_fleet_run(
    app: App,
    operator: String,
    planned: fleet::Planned,
    mut details: Value,
    single: Option<MerchantId>,
) -> ApiResult<fleet::Report> {
    let app2 = app.clone();
    let result = tokio::task::spawn_blocking(move || {
        let report = fleet::execute(
            &app2.settings,
            &app2.app_role,
            planned,
            usize::try_from(app2.settings.migration_concurrency).unwrap_or(usize::MAX),
            &|o| fleet::apply_check(&app2, o),
        );
        if let Ok(r) = &report
            && !r.run.dry_run
        {
            fleet::recheck_blocked(&app2, &r.outcomes);
        }
        report
    })
    .await
    .map_err(ApiError::internal)?;
    match &result {
        Ok(r) => {
            let failed: Vec<MerchantId> = r
                .outcomes
                .iter()
                .filter(|o| o.status == fleet::OutcomeStatus::Failed)
                .map(|o| o.merchant_id)
                .collect();
            details["outcome"] = json!(if failed.is_empty() { "ok" } else { "failed" });
            details["runId"] = json!(r.run.id);
            details["total"] = json!(r.run.total);
            details["migrated"] = json!(r.run.migrated);
            details["upToDate"] = json!(r.run.skipped);
            details["failedMerchantIds"] = json!(failed);
            for o in r
                .outcomes
                .iter()
                .filter(|o| o.status == fleet::OutcomeStatus::Migrated)
            {
                app.directory.invalidate(o.merchant_id);
            }
        }
        Err(e) => {
            let e = crate::redact::redact_text(&format!("{e:#}"));
            details["outcome"] = json!("error");
            details["error"] = json!(e);
            tracing::error!(error = %e, "fleet run failed");
        }
    }
    record_audit(&app, &operator, "tenants.migrate", single, details).await;
    result.map_err(|e| ApiError::internal(format!("{e:#}")))
}

/// A fleet run, as far as it has gone.
#[utoipa::path(get, path = "/admin/fleet-runs/{id}", tag = "admin", security(("admin" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = RunView), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[get("/admin/fleet-runs/<id>")]
async fn fleet_run(_admin: PlatformAdmin, app: &State<App>, id: RunId) -> ApiResult<Json<RunView>> {
    app.platform(move |p| {
        let run = FleetRun::find(p, id).map_err(ApiError::or_not_found("fleet run"))?;
        let failed = FleetRun::failures(p, id)?;
        Ok(RunView { run, failed })
    })
    .await
    .map(Json)
}

#[derive(OpenApi)]
#[openapi(paths(migrate_tenants, fleet_run))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![migrate_tenants, fleet_run]
}
