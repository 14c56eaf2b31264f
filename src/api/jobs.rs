//! The background job queue for operators (admin token): list and read
//! jobs (dead letters included), retry one, enqueue one for a merchant;
//! and the daily summaries the `daily_summary` jobs write. See
//! [`crate::tenancy::jobs`].

use rocket::{
    Route, State, get,
    http::{Header, Status},
    post,
    response::status::Custom,
    routes,
    serde::json::Json,
    tokio::fs::File,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{
    OpenApi, ToSchema,
    openapi::{KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat, Type},
};

use super::{
    Body,
    admin::record_audit,
    docs,
    fields::Day,
    params::{self, Page},
};
use crate::{
    api::guards::PlatformAdmin,
    app::App,
    db::{
        ids::{JobId, MerchantId},
        kinds::{JobKind, JobStatus},
        platform::{
            jobs::{DailySummary, Job, JobCounts, JobFilter},
            merchants::Merchant,
        },
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::jobs,
};

/// A page of jobs, newest first, with the whole queue's counts.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct JobList {
    counts: JobCounts,
    items: Vec<Job>,
    /// `cursor` for the next page (a job id); null on the last one.
    next_cursor: Option<String>,
}

/// A job to run for a merchant, now.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum NewJobBody {
    /// (Re)computes the merchant's summary of a business day.
    DailySummary {
        /// The business day, `YYYY-MM-DD`.
        #[schema(value_type = String, format = Date, pattern = "^20[0-9]{2}-[0-9]{2}-[0-9]{2}$")]
        day: String,
    },
    /// Deletes the merchant's expired idempotency keys.
    ExpireIdempotencyKeys {},
    /// Writes the merchant's archive to a file in `POSD_EXPORT_DIR`
    /// (download it from `GET /admin/jobs/{id}/file` once the job is done).
    Export {},
}

/// An export job's archive, offered as a file.
#[derive(rocket::Responder)]
#[response(content_type = "application/octet-stream")]
struct ExportFile {
    file: File,
    disposition: Header<'static>,
}

/// In the OpenAPI document, the archive is bytes.
impl utoipa::PartialSchema for ExportFile {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for ExportFile {}

/// A merchant's daily summaries, oldest first.
#[derive(Serialize, ToSchema)]
struct SummaryList {
    summaries: Vec<DailySummary>,
}

fn parse_status(v: Option<&str>) -> ApiResult<Option<JobStatus>> {
    v.map(|s| {
        JobStatus::parse(s)
            .ok_or_else(|| ApiError::invalid("status", "must be queued, done or dead"))
    })
    .transpose()
}

fn parse_kind(v: Option<&str>) -> ApiResult<Option<JobKind>> {
    v.map(|s| {
        JobKind::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "kind",
                "must be daily_summary, expire_idempotency_keys or export",
            )
        })
    })
    .transpose()
}

/// The queue, newest first: filter by status (`dead`: the dead letters),
/// kind or merchant. `counts` covers the whole queue (`due`: queued jobs
/// whose time has come).
#[utoipa::path(get, path = "/admin/jobs", tag = "admin", security(("admin" = [])),
    params(
        ("status" = inline(Option<JobStatus>), Query),
        ("kind" = inline(Option<JobKind>), Query),
        ("merchantId" = Option<Uuid>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "50 by default"),
        ("cursor" = Option<Uuid>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, body = JobList),
        (status = 401, response = docs::Unauthorized),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/admin/jobs?<status>&<kind>&<merchantId>&<limit>&<cursor>")]
#[expect(non_snake_case, reason = "the query parameter is camelCase")]
async fn list(
    _admin: PlatformAdmin,
    app: &State<App>,
    status: Option<&str>,
    kind: Option<&str>,
    merchantId: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> ApiResult<Json<JobList>> {
    let filter = JobFilter {
        status: parse_status(status)?,
        kind: parse_kind(kind)?,
        merchant: params::uuid("merchantId", merchantId)?.map(MerchantId),
        before: params::uuid("cursor", cursor)?.map(JobId),
        limit: params::limit(limit)?,
    };
    app.platform(move |p| {
        let counts = Job::counts(p)?;
        let page = Page::new(Job::list(p, &filter)?, filter.limit, |j| j.id.to_string());
        Ok(JobList {
            counts,
            next_cursor: page.next_cursor,
            items: page.items,
        })
    })
    .await
    .map(Json)
}

/// One job: its status, attempts, last error and result.
#[utoipa::path(get, path = "/admin/jobs/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound), (status = 503, response = docs::Unavailable)))]
#[get("/admin/jobs/<id>")]
async fn get_job(_admin: PlatformAdmin, app: &State<App>, id: JobId) -> ApiResult<Json<Job>> {
    app.platform(move |p| Job::find(p, id).map_err(ApiError::or_not_found("job")))
        .await
        .map(Json)
}

/// Queues a dead (or waiting) job again, due now, with its attempts reset.
#[utoipa::path(post, path = "/admin/jobs/{id}/retry", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound),
        (status = 409, description = "The job is done", body = docs::ErrorEnvelope), (status = 503, response = docs::Unavailable)))]
#[post("/admin/jobs/<id>/retry")]
async fn retry(admin: PlatformAdmin, app: &State<App>, id: JobId) -> ApiResult<Json<Job>> {
    let job = app
        .platform(move |p| {
            let job = Job::find(p, id).map_err(ApiError::or_not_found("job"))?;
            match Job::retry(p, id)? {
                Some(j) => Ok(j),
                None => Err(ApiError::conflict(
                    ErrorCode::JobDone,
                    format!("job {} is done; enqueue a new one", job.id),
                )),
            }
        })
        .await?;
    record_audit(
        app,
        &admin.operator,
        "jobs.retry",
        Some(job.merchant_id),
        json!({ "job": job.id, "kind": job.kind }),
    )
    .await;
    Ok(Json(job))
}

/// The archive a finished export job wrote (`posd tenants restore` reads
/// it). The file is on the disk of the instance that ran the job: share
/// `POSD_EXPORT_DIR` between instances, or ask that one.
#[utoipa::path(get, path = "/admin/jobs/{id}/file", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The merchant's archive (as `GET /admin/tenants/{id}/export` streams it)", content_type = "application/octet-stream", body = ExportFile),
        (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound),
        (status = 409, description = "Not a finished export job, or its file is not on this instance", body = docs::ErrorEnvelope),
        (status = 503, response = docs::Unavailable)))]
#[get("/admin/jobs/<id>/file")]
async fn export_file(_admin: PlatformAdmin, app: &State<App>, id: JobId) -> ApiResult<ExportFile> {
    let job = app
        .platform(move |p| Job::find(p, id).map_err(ApiError::or_not_found("job")))
        .await?;
    let missing =
        |why: &str| ApiError::conflict(ErrorCode::ExportFileMissing, format!("job {id}: {why}"));
    if job.kind != JobKind::Export || job.status != JobStatus::Done {
        return Err(missing("not a finished export job"));
    }
    let dir = app
        .settings
        .export_dir
        .as_ref()
        .ok_or_else(|| missing("POSD_EXPORT_DIR is not set here"))?;
    let name = jobs::export_file_name(job.merchant_id, job.id);
    let file = File::open(dir.join(&name))
        .await
        .map_err(|_| missing("the file is not on this instance (or was removed)"))?;
    Ok(ExportFile {
        file,
        disposition: Header::new(
            "Content-Disposition",
            format!("attachment; filename=\"{name}\""),
        ),
    })
}

/// Enqueues a job for the merchant under its current placement: answered
/// 202 with the job, which a worker runs (follow it at
/// `GET /admin/jobs/{id}`).
#[utoipa::path(post, path = "/admin/tenants/{id}/jobs", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path)), request_body = NewJobBody,
    responses((status = 202, body = Job), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound),
        (status = 409, description = "An export, and `POSD_EXPORT_DIR` is not set", body = docs::ErrorEnvelope),
        (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[post("/admin/tenants/<id>/jobs", data = "<body>")]
async fn enqueue(
    admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    body: Body<NewJobBody>,
) -> ApiResult<Custom<Json<Job>>> {
    let (kind, args) = match body.0 {
        NewJobBody::DailySummary { day } => (
            JobKind::DailySummary,
            json!({ "day": params::day("day", &day)? }),
        ),
        NewJobBody::ExpireIdempotencyKeys {} => (JobKind::ExpireIdempotencyKeys, json!({})),
        NewJobBody::Export {} => {
            if app.settings.export_dir.is_none() {
                return Err(ApiError::conflict(
                    ErrorCode::ExportsNotConfigured,
                    "exports to a file need POSD_EXPORT_DIR; GET /admin/tenants/{id}/export streams one",
                ));
            }
            (JobKind::Export, json!({}))
        }
    };
    let job = jobs::enqueue(app, id, kind, args)
        .await?
        .ok_or_else(|| ApiError::not_found("merchant"))?;
    record_audit(
        app,
        &admin.operator,
        "jobs.enqueue",
        Some(id),
        json!({ "job": job.id, "kind": kind }),
    )
    .await;
    Ok(Custom(Status::Accepted, Json(job)))
}

/// The merchant's figures per business day that closed (written by the
/// `daily_summary` jobs), oldest first: the last 30 days by default, at
/// most 366.
#[utoipa::path(get, path = "/admin/tenants/{id}/summaries", tag = "admin", security(("admin" = [])),
    params(("id" = Uuid, Path),
        ("from" = inline(Option<Day>), Query, description = "the first day; 30 days before `to` by default"),
        ("to" = inline(Option<Day>), Query, description = "the last day; today (UTC) by default")),
    responses((status = 200, body = SummaryList), (status = 401, response = docs::Unauthorized), (status = 404, response = docs::NotFound),
        (status = 422, response = docs::Invalid), (status = 503, response = docs::Unavailable)))]
#[get("/admin/tenants/<id>/summaries?<from>&<to>")]
async fn summaries(
    _admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    from: Option<&str>,
    to: Option<&str>,
) -> ApiResult<Json<SummaryList>> {
    let (from, to) = params::days(from, to)?;
    app.platform(move |p| {
        Merchant::find(p, id).map_err(ApiError::or_not_found("merchant"))?;
        Ok(SummaryList {
            summaries: DailySummary::list(p, id, from, to)?,
        })
    })
    .await
    .map(Json)
}

#[derive(OpenApi)]
#[openapi(paths(list, get_job, retry, export_file, enqueue, summaries))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![list, get_job, retry, export_file, enqueue, summaries]
}
