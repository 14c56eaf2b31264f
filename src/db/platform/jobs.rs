//! The background job queue (`jobs`) and what its jobs write to the control
//! plane (`merchant_daily_summaries`); `crate::tenancy::jobs` works it.
//!
//! A worker claims a due job with `FOR UPDATE SKIP LOCKED` in a transaction
//! it keeps open while the job runs, and records the outcome in the same
//! transaction: two workers never hold the same job, and a worker that dies
//! mid-job (its connection closes) leaves the job queued as it was.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::{
    prelude::*,
    sql_types::{BigInt, Integer, Text},
};
use serde::Serialize;
use serde_json::Value;

use super::{
    Platform,
    schema::{jobs, merchant_daily_summaries as mds},
};
use crate::db::{
    ids::{JobId, MerchantId},
    kinds::{JobKind, JobStatus},
};

/// A job as the control plane records it.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = jobs, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    pub merchant_id: MerchantId,
    /// The merchant's placement generation the job was enqueued (or last
    /// re-resolved) under.
    pub generation: i64,
    pub kind: JobKind,
    #[schema(value_type = Object)]
    pub args: Value,
    /// At most one job per key (a scheduled job's kind, merchant and day).
    pub dedupe_key: Option<String>,
    pub status: JobStatus,
    /// Runs that ended, successful or not (a run whose worker died is not
    /// counted: its job is queued again as it was).
    pub attempts: i32,
    pub max_attempts: i32,
    /// When it is due (after a failure: the backoff).
    pub run_at: DateTime<Utc>,
    /// The last failure's stable code and message.
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// What its last successful run produced.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job to enqueue: always a merchant's, under the placement generation
/// the caller saw.
#[derive(Debug, Insertable)]
#[diesel(table_name = jobs)]
pub struct NewJob {
    pub id: JobId,
    pub merchant_id: MerchantId,
    pub generation: i64,
    pub kind: JobKind,
    pub args: Value,
    pub dedupe_key: Option<String>,
    pub max_attempts: i32,
}

/// The channel a new or retried job is announced on: idle workers wake.
pub const CHANNEL: &str = "posd_jobs";

/// What the operators' list selects.
#[derive(Debug, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub kind: Option<JobKind>,
    pub merchant: Option<MerchantId>,
    /// Enqueued before this job (by `created_at`, then id).
    pub before: Option<JobId>,
    pub limit: i64,
}

/// How many jobs are in each status.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCounts {
    pub queued: i64,
    /// Queued and due now.
    pub due: i64,
    pub done: i64,
    pub dead: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Text)]
    status: JobStatus,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    due: i64,
}

impl Job {
    /// Enqueues `new`; a job with the same `dedupe_key` already there wins
    /// (`None`). Wakes idle workers.
    pub fn enqueue(p: &mut Platform<'_>, new: &NewJob) -> QueryResult<Option<Job>> {
        let job = diesel::insert_into(jobs::table)
            .values(new)
            .on_conflict_do_nothing()
            .returning(Job::as_returning())
            .get_result(p.conn)
            .optional()?;
        if job.is_some() {
            wake(p)?;
        }
        Ok(job)
    }

    pub fn find(p: &mut Platform<'_>, id: JobId) -> QueryResult<Job> {
        jobs::table.find(id).select(Job::as_select()).first(p.conn)
    }

    /// Newest first (by when they were enqueued, then id).
    pub fn list(p: &mut Platform<'_>, f: &JobFilter) -> QueryResult<Vec<Job>> {
        let mut q = jobs::table.select(Job::as_select()).into_boxed();
        if let Some(s) = f.status {
            q = q.filter(jobs::status.eq(s));
        }
        if let Some(k) = f.kind {
            q = q.filter(jobs::kind.eq(k));
        }
        if let Some(m) = f.merchant {
            q = q.filter(jobs::merchant_id.eq(m));
        }
        if let Some(b) = f.before {
            // A cursor job pruned since ends the list.
            q = q.filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>(
                    "(jobs.created_at, jobs.id) < (SELECT c.created_at, c.id FROM jobs c WHERE c.id = ",
                )
                .bind::<diesel::sql_types::Uuid, _>(b.0)
                .sql(")"),
            );
        }
        q.order((jobs::created_at.desc(), jobs::id.desc()))
            .limit(f.limit)
            .load(p.conn)
    }

    pub fn counts(p: &mut Platform<'_>) -> QueryResult<JobCounts> {
        let rows: Vec<Count> = diesel::sql_query(
            "SELECT status, count(*) AS n, count(*) FILTER (WHERE run_at <= now()) AS due
               FROM jobs GROUP BY status",
        )
        .load(p.conn)?;
        let mut c = JobCounts::default();
        for r in rows {
            match r.status {
                JobStatus::Queued => (c.queued, c.due) = (r.n, r.due),
                JobStatus::Done => c.done = r.n,
                JobStatus::Dead => c.dead = r.n,
            }
        }
        Ok(c)
    }

    /// Queues a dead (or waiting) job again, due now, with fresh attempts.
    /// `None` when it is done or unknown.
    pub fn retry(p: &mut Platform<'_>, id: JobId) -> QueryResult<Option<Job>> {
        let job = diesel::update(jobs::table.find(id))
            .filter(jobs::status.ne(JobStatus::Done))
            .set((
                jobs::status.eq(JobStatus::Queued),
                jobs::attempts.eq(0),
                jobs::run_at.eq(diesel::dsl::now),
                jobs::finished_at.eq(None::<DateTime<Utc>>),
                jobs::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Job::as_returning())
            .get_result(p.conn)
            .optional()?;
        if job.is_some() {
            wake(p)?;
        }
        Ok(job)
    }

    /// Claims the next due job, locking its row until the caller's
    /// transaction ends; a job another worker holds is skipped.
    pub fn claim(p: &mut Platform<'_>) -> QueryResult<Option<Job>> {
        jobs::table
            .filter(jobs::status.eq(JobStatus::Queued))
            .filter(jobs::run_at.le(diesel::dsl::now))
            .order(jobs::run_at.asc())
            .select(Job::as_select())
            .for_update()
            .skip_locked()
            .first(p.conn)
            .optional()
    }

    /// Records that the claimed job now runs under `generation` (its
    /// merchant moved since it was enqueued).
    pub fn re_resolve(p: &mut Platform<'_>, id: JobId, generation: i64) -> QueryResult<()> {
        diesel::update(jobs::table.find(id))
            .set((
                jobs::generation.eq(generation),
                jobs::updated_at.eq(diesel::dsl::now),
            ))
            .execute(p.conn)
            .map(drop)
    }

    /// The claimed job succeeded.
    pub fn succeeded(p: &mut Platform<'_>, id: JobId, result: &Value) -> QueryResult<()> {
        diesel::update(jobs::table.find(id))
            .set((
                jobs::status.eq(JobStatus::Done),
                jobs::attempts.eq(jobs::attempts + 1),
                jobs::result.eq(result),
                jobs::error_code.eq(None::<String>),
                jobs::error.eq(None::<String>),
                jobs::finished_at.eq(diesel::dsl::now),
                jobs::updated_at.eq(diesel::dsl::now),
            ))
            .execute(p.conn)
            .map(drop)
    }

    /// The claimed job failed: due again after `backoff_secs`, or dead when
    /// it is out of attempts or `fatal`. Answers its new status.
    pub fn failed(
        p: &mut Platform<'_>,
        id: JobId,
        code: &str,
        error: &str,
        backoff_secs: i64,
        fatal: bool,
    ) -> QueryResult<JobStatus> {
        #[derive(QueryableByName)]
        struct Status {
            #[diesel(sql_type = Text)]
            status: JobStatus,
        }
        let s: Status = diesel::sql_query(
            "UPDATE jobs SET attempts = attempts + 1, error_code = $2, error = $3,
                    status = CASE WHEN $5 OR attempts + 1 >= max_attempts THEN 'dead' ELSE 'queued' END,
                    finished_at = CASE WHEN $5 OR attempts + 1 >= max_attempts THEN now() END,
                    run_at = now() + make_interval(secs => $4), updated_at = now()
              WHERE id = $1
          RETURNING status",
        )
        .bind::<diesel::sql_types::Uuid, _>(id.0)
        .bind::<Text, _>(code)
        .bind::<Text, _>(error)
        .bind::<BigInt, _>(backoff_secs)
        .bind::<diesel::sql_types::Bool, _>(fatal)
        .get_result(p.conn)?;
        Ok(s.status)
    }

    /// Enqueues, for every merchant but posd's own probe merchants, the
    /// jobs of the business day that closed last in its time zone (from
    /// its `businessDayCutoffHour`): its daily summary, and the expiry of
    /// its idempotency keys when it used the API in the last `active_days`
    /// days. One statement for the whole fleet; a job already enqueued (by
    /// this instance or another) is kept. Answers how many were enqueued.
    pub fn schedule_daily(
        p: &mut Platform<'_>,
        max_attempts: i32,
        active_days: i32,
    ) -> QueryResult<usize> {
        let n = diesel::sql_query(
            "WITH closed AS (
                 SELECT m.id, m.generation,
                        ((now() AT TIME ZONE m.timezone)
                          - make_interval(hours => COALESCE((m.settings->>'businessDayCutoffHour')::int, 0))
                        )::date - 1 AS day
                   FROM merchants m
                  WHERE NOT m.probe
             )
             INSERT INTO jobs (id, merchant_id, generation, kind, args, dedupe_key, max_attempts)
             SELECT gen_random_uuid(), c.id, c.generation, k.kind, jsonb_build_object('day', c.day),
                    k.kind || ':' || c.id || ':' || c.day, $1
               FROM closed c
              CROSS JOIN (VALUES ('daily_summary'), ('expire_idempotency_keys')) AS k (kind)
              WHERE k.kind = 'daily_summary'
                 OR EXISTS (SELECT 1 FROM merchant_usage u
                             WHERE u.merchant_id = c.id AND u.api_calls > 0
                               AND u.day >= current_date - $2)
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind::<Integer, _>(max_attempts)
        .bind::<Integer, _>(active_days)
        .execute(p.conn)?;
        if n > 0 {
            wake(p)?;
        }
        Ok(n)
    }

    /// Deletes finished jobs (done or dead) older than `days`.
    pub fn prune(p: &mut Platform<'_>, days: i32) -> QueryResult<usize> {
        diesel::sql_query(
            "DELETE FROM jobs WHERE status <> 'queued' AND finished_at < now() - make_interval(days => $1)",
        )
        .bind::<Integer, _>(days)
        .execute(p.conn)
    }
}

fn wake(p: &mut Platform<'_>) -> QueryResult<()> {
    diesel::sql_query(format!("NOTIFY {CHANNEL}"))
        .execute(p.conn)
        .map(drop)
}

/// A merchant's figures for one business day (see `crate::pos::report`).
#[derive(
    Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, Serialize, utoipa::ToSchema,
)]
#[diesel(table_name = mds, primary_key(merchant_id, day), check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct DailySummary {
    #[serde(skip)]
    pub merchant_id: MerchantId,
    pub day: NaiveDate,
    pub currency: String,
    pub order_count: i64,
    pub voided_count: i64,
    pub late_order_count: i64,
    pub gross_sales_minor: i64,
    pub discounts_minor: i64,
    pub tax_minor: i64,
    pub sales_minor: i64,
    pub rounding_minor: i64,
    pub refunds_minor: i64,
    pub refund_count: i64,
    pub net_minor: i64,
    /// When the job computed it.
    pub computed_at: DateTime<Utc>,
}

impl DailySummary {
    /// Writes the day's figures, replacing an earlier computation.
    pub fn upsert(p: &mut Platform<'_>, s: &DailySummary) -> QueryResult<()> {
        diesel::insert_into(mds::table)
            .values(s)
            .on_conflict((mds::merchant_id, mds::day))
            .do_update()
            .set(s)
            .execute(p.conn)
            .map(drop)
    }

    /// The merchant's summaries from `from` to `to`, oldest first.
    pub fn list(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> QueryResult<Vec<DailySummary>> {
        mds::table
            .filter(mds::merchant_id.eq(merchant))
            .filter(mds::day.between(from, to))
            .order(mds::day.asc())
            .select(DailySummary::as_select())
            .load(p.conn)
    }
}
