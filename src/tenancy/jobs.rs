//! Background jobs with tenant scope: a durable queue in the control plane
//! (`jobs`, see [`crate::db::platform::jobs`]), worked inside every serving
//! posd by `POSD_JOB_WORKERS` workers.
//!
//! - **Claiming.** A worker takes the oldest due job with `FOR UPDATE SKIP
//!   LOCKED` in a control-plane transaction that stays open while the job
//!   runs, and records the outcome in that same transaction. Two workers
//!   (in one instance or several) never hold the same job; a worker that
//!   dies mid-job (process killed, connection lost) leaves its job queued
//!   as it was, and another worker takes it. Jobs are therefore run at
//!   least once: each is written to be run again safely (a summary is
//!   replaced, expired keys are deleted, an export file is written anew).
//! - **Tenant scope, failing closed.** Every job carries its merchant and
//!   the placement generation it was enqueued under; the table refuses a
//!   job without a merchant or for an unknown one. A worker reads the
//!   merchant's placement from the control plane in its claiming
//!   transaction, never from a cache, and runs the job through the same
//!   `TenantDb` (pools, caps, migrations check) as requests. A merchant
//!   that moved since (generation changed) gets the job re-resolved: it
//!   runs at the new placement and records the new generation, never at
//!   the old one. A write that races a move's flip fails `tenant_moved` at
//!   the old placement, and the job is retried.
//! - **Retries and dead letters.** A failed run is retried after a backoff
//!   (10 s, doubling, at most an hour) until `POSD_JOB_MAX_ATTEMPTS` runs;
//!   then, or at once for a failure that cannot heal (an unknown merchant,
//!   arguments that make no sense), the job is dead: kept, with its error,
//!   for operators (`GET /admin/jobs?status=dead`, retried by
//!   `POST /admin/jobs/{id}/retry`).
//! - **Scheduling.** Every `POSD_JOB_SCHEDULE_INTERVAL`, each instance with
//!   workers enqueues the jobs of every merchant's last closed business day
//!   (its time zone and `businessDayCutoffHour`) in one statement; a
//!   job's dedupe key makes that idempotent across instances. Finished
//!   jobs are kept [`RETENTION_DAYS`] days.

use std::{fs::File, io::BufWriter, path::Path, sync::Arc, time::Duration};

use chrono::NaiveDate;
use diesel::Connection;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{
    Tenancy,
    moves::{
        MoveError,
        archive::{self, Manifest},
    },
    tenant_db::TenantDb,
};
use crate::{
    db::{
        ids::{JobId, MerchantId},
        kinds::{JobKind, JobStatus},
        platform::{
            Platform, audit,
            exports::TenantExport,
            jobs::{DailySummary, Job, NewJob},
        },
        tenant::idempotency,
    },
    error::ApiError,
    pos::report,
    redact::redact_text,
};

/// Days a finished job (done or dead) is kept.
pub const RETENTION_DAYS: i32 = 7;
/// Idempotency keys deleted per transaction by an expiry job.
const EXPIRY_BATCH: i64 = 1000;
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// This instance's side of the queue: what wakes idle workers, and what
/// its workers ran (for `/metrics`).
#[derive(Default)]
pub struct Queue {
    wake: Notify,
    runs: Mutex<std::collections::BTreeMap<(JobKind, JobStatus), u64>>,
}

impl Queue {
    /// A job was enqueued or retried (`posd_jobs` was notified): idle
    /// workers look at once.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Runs ended in this instance, by kind and the status they left the
    /// job in (`queued`: failed, to be retried).
    pub fn runs(&self) -> Vec<((JobKind, JobStatus), u64)> {
        self.runs.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn ran(&self, kind: JobKind, status: JobStatus) {
        *self.runs.lock().entry((kind, status)).or_default() += 1;
    }
}

/// One run of a job, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub job: JobId,
    pub merchant: MerchantId,
    pub kind: JobKind,
    /// The status the run left the job in.
    pub status: JobStatus,
}

/// Why a run failed: a stable code, a message for operators, and whether
/// running it again could succeed.
#[derive(Debug)]
struct Failure {
    code: String,
    message: String,
    fatal: bool,
}

impl Failure {
    fn fatal(code: &str, message: impl Into<String>) -> Failure {
        Failure {
            code: code.to_string(),
            message: message.into(),
            fatal: true,
        }
    }
}

impl From<ApiError> for Failure {
    /// A client error (4xx: the job asked for something that cannot be)
    /// will not heal; a server error (unavailable, moved, busy) may.
    fn from(e: ApiError) -> Failure {
        Failure {
            code: e.code.as_str().to_string(),
            message: e.message,
            fatal: e.status.code < 500,
        }
    }
}

impl From<diesel::result::Error> for Failure {
    fn from(e: diesel::result::Error) -> Failure {
        Failure {
            code: "database_error".to_string(),
            message: redact_text(&e.to_string()),
            fatal: false,
        }
    }
}

/// The delay before the run after `attempts` failed ones.
fn backoff(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Enqueues a job of `kind` for `merchant` under its current placement
/// generation. `None` when the merchant does not exist.
pub async fn enqueue(
    app: &Tenancy,
    merchant: MerchantId,
    kind: JobKind,
    args: Value,
) -> Result<Option<Job>, ApiError> {
    let max_attempts = i32::try_from(app.settings.job_max_attempts).unwrap_or(i32::MAX);
    app.platform(move |p| {
        let Some(generation) = crate::db::platform::merchants::Merchant::generation(p, merchant)?
        else {
            return Ok(None);
        };
        let new = NewJob {
            id: JobId(uuid::Uuid::now_v7()),
            merchant_id: merchant,
            generation,
            kind,
            args,
            dedupe_key: None,
            max_attempts,
        };
        Ok(Job::enqueue(p, &new)?)
    })
    .await
}

/// Claims the next due job, runs it and records the outcome; `None` when
/// no job is due.
pub async fn run_next(app: &Tenancy) -> Result<Option<Ran>, ApiError> {
    let tenancy = app.clone();
    let rt = tokio::runtime::Handle::current();
    app.platform
        .run(app.settings.pool_connect_timeout, None, move |conn| {
            conn.transaction(|conn| {
                let mut p = Platform::new(conn);
                let Some(job) = Job::claim(&mut p)? else {
                    return Ok(None);
                };
                let outcome = rt.block_on(perform(&tenancy, &mut p, &job));
                let status = match outcome {
                    Ok(result) => {
                        Job::succeeded(&mut p, job.id, &result)?;
                        tracing::info!(job = %job.id, merchant = %job.merchant_id, kind = %job.kind, %result, "job done");
                        JobStatus::Done
                    }
                    Err(f) => {
                        let delay = i64::try_from(backoff(job.attempts + 1).as_secs()).unwrap_or(0);
                        let status = Job::failed(&mut p, job.id, &f.code, &f.message, delay, f.fatal)?;
                        tracing::warn!(job = %job.id, merchant = %job.merchant_id, kind = %job.kind,
                            code = %f.code, error = %f.message, %status, "job failed");
                        status
                    }
                };
                tenancy.jobs.ran(job.kind, status);
                Ok(Some(Ran {
                    job: job.id,
                    merchant: job.merchant_id,
                    kind: job.kind,
                    status,
                }))
            })
        })
        .await
}

/// Runs `job` at its merchant's current placement; answers its result.
async fn perform(app: &Tenancy, p: &mut Platform<'_>, job: &Job) -> Result<Value, Failure> {
    let Some(placement) = app.directory.load(p, job.merchant_id)? else {
        return Err(Failure::fatal(
            "merchant_unknown",
            "the job's merchant does not exist",
        ));
    };
    if placement.generation != job.generation {
        tracing::info!(job = %job.id, merchant = %job.merchant_id, from = job.generation,
            to = placement.generation, "the job's merchant moved since it was enqueued; it runs at the new placement");
        Job::re_resolve(p, job.id, placement.generation)?;
    }
    hang_if_asked(app);
    let db = TenantDb::for_placement(app, Arc::new(placement)).await?;
    match job.kind {
        JobKind::DailySummary => daily_summary(app, p, job, &db).await,
        JobKind::ExpireIdempotencyKeys => expire_keys(&db).await,
        JobKind::Export => export(app, p, job).await,
    }
}

/// Test hook (`POSD_JOB_FAULT=hang`, debug builds): the job blocks, holding
/// its claim, until the process is killed.
fn hang_if_asked(app: &Tenancy) {
    if cfg!(debug_assertions) && app.settings.job_fault.as_deref() == Some("hang") {
        tracing::warn!("test hook: the job hangs until posd is killed");
        loop {
            std::thread::park();
        }
    }
}

/// The `day` a job's arguments name.
fn day_arg(job: &Job) -> Result<NaiveDate, Failure> {
    job.args
        .get("day")
        .and_then(Value::as_str)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .ok_or_else(|| Failure::fatal("invalid_job", "args.day must be a day written YYYY-MM-DD"))
}

/// The merchant's figures for the business day, written to the control
/// plane in the claiming transaction (so with the job's outcome).
async fn daily_summary(
    app: &Tenancy,
    p: &mut Platform<'_>,
    job: &Job,
    db: &TenantDb,
) -> Result<Value, Failure> {
    let day = day_arg(job)?;
    let ctx = app
        .context(job.merchant_id)
        .await?
        .ok_or_else(|| Failure::fatal("merchant_unknown", "the job's merchant does not exist"))?;
    let cutoff = u32::try_from(ctx.settings.business_day_cutoff_hour).unwrap_or(0);
    let (tz, currency) = (db.placement().timezone, db.placement().currency.to_string());
    let r = db
        .run(move |tx| report::daily(tx, day, tz, cutoff, &currency))
        .await?;
    let big = |v: i128| {
        i64::try_from(v).map_err(|_| Failure::fatal("invalid_job", "a sum exceeds 64 bits"))
    };
    let summary = DailySummary {
        merchant_id: job.merchant_id,
        day,
        currency: r.currency,
        order_count: r.order_count,
        voided_count: r.voided_count,
        late_order_count: r.late_order_count,
        gross_sales_minor: big(r.gross_sales_minor)?,
        discounts_minor: big(r.discounts_minor)?,
        tax_minor: big(r.tax_minor)?,
        sales_minor: big(r.sales_minor)?,
        rounding_minor: big(r.rounding_minor)?,
        refunds_minor: big(r.refunds_minor)?,
        refund_count: r.refund_count,
        net_minor: big(r.net_minor)?,
        computed_at: chrono::Utc::now(),
    };
    DailySummary::upsert(p, &summary)?;
    Ok(json!({ "day": day, "orders": summary.order_count, "netMinor": summary.net_minor }))
}

/// Deletes the merchant's expired idempotency keys, a batch per
/// transaction.
async fn expire_keys(db: &TenantDb) -> Result<Value, Failure> {
    let mut deleted = 0;
    loop {
        let n = db
            .run(|tx| Ok(idempotency::expire(tx, EXPIRY_BATCH)?))
            .await?;
        deleted += n;
        if i64::try_from(n).unwrap_or(i64::MAX) < EXPIRY_BATCH {
            return Ok(json!({ "deleted": deleted }));
        }
    }
}

/// The file an export job writes, in `POSD_EXPORT_DIR`: one per job, so
/// that a run again replaces it.
pub fn export_file_name(merchant: MerchantId, job: JobId) -> String {
    format!("posd-export-{merchant}-{job}.posd")
}

/// Writes the merchant's archive (as `GET /admin/tenants/{id}/export`
/// streams it) to a file, then records the export (deprovisioning accepts
/// it) and the operator audit in the claiming transaction.
async fn export(app: &Tenancy, p: &mut Platform<'_>, job: &Job) -> Result<Value, Failure> {
    let dir = app.settings.export_dir.clone().ok_or_else(|| {
        Failure::fatal(
            "exports_not_configured",
            "POSD_EXPORT_DIR is not set on the instance that ran the job",
        )
    })?;
    let name = export_file_name(job.merchant_id, job.id);
    let (tenancy, merchant, file) = (app.clone(), job.merchant_id, name.clone());
    let (bytes, manifest) =
        tokio::task::spawn_blocking(move || write_export(&tenancy, &dir, &file, merchant))
            .await
            .map_err(|e| Failure {
                code: "export_failed".to_string(),
                message: e.to_string(),
                fatal: false,
            })??;
    let rows: i64 = manifest.tables.iter().map(|t| t.rows).sum();
    let actor = format!("job {}", job.id);
    let recorded = TenantExport::record(p, merchant, manifest.tier, &actor)?;
    audit::record(
        p,
        &actor,
        "tenant.export",
        Some(merchant),
        json!({ "export": recorded.id, "tier": manifest.tier, "file": name, "bytes": bytes }),
    )?;
    Ok(
        json!({ "file": name, "bytes": bytes, "rows": rows, "tier": manifest.tier, "export": recorded.id }),
    )
}

/// Writes the archive to `<dir>/<name>.partial`, flushes it to disk and
/// renames it `<name>`: a file under its final name is whole.
fn write_export(
    app: &Tenancy,
    dir: &Path,
    name: &str,
    merchant: MerchantId,
) -> Result<(u64, Manifest), Failure> {
    let io = |e: std::io::Error| Failure {
        code: "export_failed".to_string(),
        message: format!("{}: {e}", dir.display()),
        fatal: false,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let partial = dir.join(format!("{name}.partial"));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&partial).map_err(io)?);
    let manifest = archive::export(app, merchant, &mut out).map_err(|e| Failure {
        code: "export_failed".to_string(),
        message: redact_text(&e.to_string()),
        fatal: matches!(e, MoveError::UnknownMerchant),
    })?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let bytes = file.metadata().map_err(io)?.len();
    std::fs::rename(&partial, dir.join(name)).map_err(io)?;
    Ok((bytes, manifest))
}

/// Enqueues the daily jobs of the days that closed and prunes finished
/// jobs; answers how many were enqueued.
pub async fn schedule(app: &Tenancy) -> Result<usize, ApiError> {
    let max_attempts = i32::try_from(app.settings.job_max_attempts).unwrap_or(i32::MAX);
    // Keys live at most the retention; a merchant idle for longer has none
    // left to expire.
    let active_days = i32::try_from(app.settings.idempotency_retention.as_secs() / 86_400 + 1)
        .unwrap_or(i32::MAX);
    app.platform(move |p| {
        let n = Job::schedule_daily(p, max_attempts, active_days)?;
        Job::prune(p, RETENTION_DAYS)?;
        Ok(n)
    })
    .await
}

/// One worker: runs due jobs one after the other; when none is due, waits
/// for a new one (`posd_jobs`) or the poll interval.
async fn work(app: Tenancy, worker: usize) {
    loop {
        let woken = app.jobs.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match run_next(&app).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(worker, error = %e, "could not claim a job; trying again after the poll interval");
            }
        }
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(app.settings.job_poll_interval) => {}
        }
    }
}

/// Starts this instance's workers and its scheduler (none when
/// `POSD_JOB_WORKERS` is 0).
pub fn spawn(app: &Tenancy) {
    if app.settings.job_workers == 0 {
        return;
    }
    for worker in 0..app.settings.job_workers {
        tokio::spawn(work(app.clone(), worker));
    }
    let scheduler = app.clone();
    super::spawn_every(app.settings.job_schedule_interval, true, move || {
        let app = scheduler.clone();
        async move {
            match schedule(&app).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "daily jobs enqueued"),
                Err(e) => tracing::warn!(error = %e, "could not enqueue the daily jobs"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(80));
        assert_eq!(backoff(20), MAX_BACKOFF);
        assert_eq!(backoff(0), Duration::from_secs(10));
    }
}
