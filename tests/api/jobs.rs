//! Background jobs: the daily summary equals the day's report on every
//! tier; expired idempotency keys go; scheduling is idempotent; a job for a
//! merchant that moved runs at the new placement only; a job without a
//! merchant is refused; failures back off and end as dead letters that an
//! operator retries; two workers never run the same job; a worker killed
//! mid-job leaves it to be run again. The queue is worked here by calling
//! the worker's own step (`run_next`), never by waiting for a timer.

use std::collections::BTreeSet;

use diesel::connection::SimpleConnection;
use rocket::{
    http::{Method, Status},
    tokio,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    common::{API, Merchant, TestApp, api, assert_error, count},
    logs::Serving,
    moves::{location, move_to, quick},
};
use posd::{
    db::kinds::{JobKind, JobStatus},
    tenancy::{Tenancy, Tier, jobs},
};

fn tenancy(t: &TestApp) -> Tenancy {
    t.app().tenancy.clone()
}

/// Runs due jobs until none is left; answers the runs.
async fn drain(t: &TestApp) -> Vec<jobs::Ran> {
    let mut ran = Vec::new();
    while let Some(r) = jobs::run_next(&tenancy(t)).await.expect("run a job") {
        ran.push(r);
    }
    ran
}

/// Enqueues a job through the operators' API; answers it.
async fn enqueue(t: &TestApp, m: &Merchant, body: Value) -> Value {
    let (s, job) = t
        .post(
            &format!("{API}/admin/tenants/{}/jobs", m.id),
            &t.admin_token(),
            body,
        )
        .await;
    assert_eq!(s, Status::Accepted, "{job}");
    job
}

async fn job(t: &TestApp, id: &Value) -> Value {
    let (s, job) = t
        .get(
            &format!("{API}/admin/jobs/{}", id.as_str().expect("job id")),
            &t.admin_token(),
        )
        .await;
    assert_eq!(s, Status::Ok, "{job}");
    job
}

/// The merchant's business day today, as its report says.
async fn today(t: &TestApp, m: &Merchant) -> String {
    let (s, report) = t.get(api!("/reports/daily"), &m.token).await;
    assert_eq!(s, Status::Ok, "{report}");
    report["date"].as_str().expect("date").to_string()
}

#[rocket::async_test]
async fn the_daily_summary_is_the_days_report_on_every_tier() {
    let t = TestApp::new().await;
    for tier in [Tier::Shared, Tier::Schema, Tier::Dedicated] {
        let m = t.merchant(&format!("sum-{}", tier.as_str()), tier).await;
        let p = t.stocked_product(&m, "SUM-1", 250, 1000, Some(50)).await;
        let order = t.sell(&m, &p, 2, 600).await;
        t.sell(&m, &p, 1, 300).await;
        let (s, refund) = t
            .post_idem(
                &format!("{API}/orders/{}/refunds", order["id"].as_str().unwrap()),
                &m.token,
                &Uuid::new_v4().to_string(),
                json!({ "amountMinor": 100 }),
            )
            .await
            .into_pair();
        assert_eq!(s, Status::Created, "{refund}");
        let day = today(&t, &m).await;
        let queued = enqueue(&t, &m, json!({ "kind": "daily_summary", "day": day })).await;
        assert_eq!(queued["status"], "queued");
        assert_eq!(queued["generation"], 1 + i64::from(tier != Tier::Shared));

        let ran = drain(&t).await;
        assert_eq!(ran.len(), 1, "{ran:?}");
        assert_eq!(
            (ran[0].kind, ran[0].status),
            (JobKind::DailySummary, JobStatus::Done)
        );
        let done = job(&t, &queued["id"]).await;
        assert_eq!(
            (done["status"].clone(), done["attempts"].clone()),
            (json!("done"), json!(1))
        );

        let (_, report) = t
            .get(&format!("{API}/reports/daily?date={day}"), &m.token)
            .await;
        let (s, body) = t
            .get(
                &format!("{API}/admin/tenants/{}/summaries?from={day}&to={day}", m.id),
                &t.admin_token(),
            )
            .await;
        assert_eq!(s, Status::Ok, "{body}");
        let summary = &body["summaries"][0];
        assert_eq!(summary["day"], json!(day));
        for f in [
            "orderCount",
            "voidedCount",
            "grossSalesMinor",
            "discountsMinor",
            "taxMinor",
            "salesMinor",
            "roundingMinor",
            "refundsMinor",
            "refundCount",
            "netMinor",
            "currency",
        ] {
            assert_eq!(summary[f], report[f], "{tier:?} {f}: {summary} vs {report}");
        }
        assert_eq!(summary["orderCount"], 2);
        assert_eq!(summary["refundCount"], 1);
        assert_eq!(done["result"]["netMinor"], summary["netMinor"]);
    }
}

/// `post_idem` answers a triple; most tests need the status and body.
trait IntoPair {
    fn into_pair(self) -> (Status, Value);
}

impl IntoPair for (Status, Value, bool) {
    fn into_pair(self) -> (Status, Value) {
        (self.0, self.1)
    }
}

fn n(conn: &mut diesel::PgConnection, sql: &str) -> i64 {
    count(conn, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Sells `k` times (each sale stores an idempotency key) and expires all
/// but the last `keep` keys; answers the expired keys' count.
async fn expired_keys(t: &TestApp, m: &Merchant, k: usize, keep: i64) -> i64 {
    let p = t.stocked_product(m, "KEY-1", 100, 0, None).await;
    for _ in 0..k {
        t.sell(m, &p, 1, 100).await;
    }
    let (mut conn, _) = t.data_conn(m);
    conn.batch_execute(&format!(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 hour'
          WHERE merchant_id = '{}' AND key IN (
                SELECT key FROM idempotency_keys WHERE merchant_id = '{}'
                 ORDER BY locked_at OFFSET {keep})",
        m.id, m.id
    ))
    .expect("expire keys");
    n(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM idempotency_keys WHERE merchant_id = '{}' AND expires_at < now()",
            m.id
        ),
    )
}

#[rocket::async_test]
async fn expired_idempotency_keys_are_deleted_and_live_ones_kept() {
    let t = TestApp::new().await;
    for tier in [Tier::Shared, Tier::Dedicated] {
        let m = t.merchant(&format!("keys-{}", tier.as_str()), tier).await;
        let other = t
            .merchant(&format!("keys-other-{}", tier.as_str()), Tier::Shared)
            .await;
        let expired = expired_keys(&t, &m, 6, 2).await;
        let untouched = expired_keys(&t, &other, 3, 0).await;
        assert_eq!((expired, untouched), (4, 3));
        let queued = enqueue(&t, &m, json!({ "kind": "expire_idempotency_keys" })).await;
        drain(&t).await;
        let done = job(&t, &queued["id"]).await;
        assert_eq!(done["status"], "done", "{done}");
        assert_eq!(done["result"]["deleted"], 4);
        let (mut conn, _) = t.data_conn(&m);
        let left = n(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM idempotency_keys WHERE merchant_id = '{}'",
                m.id
            ),
        );
        assert_eq!(left, 2, "the live keys stay");
        let (mut conn, _) = t.data_conn(&other);
        let theirs = n(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM idempotency_keys WHERE merchant_id = '{}'",
                other.id
            ),
        );
        assert_eq!(theirs, 3, "another merchant's keys are not the job's");
    }
}

#[rocket::async_test]
async fn the_daily_jobs_are_enqueued_once_per_closed_day() {
    let t = TestApp::new().await;
    let trading = t.shared_merchant("sched-trading").await;
    let idle = t.merchant("sched-idle", Tier::Schema).await;
    let p = t.stocked_product(&trading, "S-1", 100, 0, None).await;
    t.sell(&trading, &p, 1, 100).await;
    t.app()
        .usage
        .flush(&tenancy(&t))
        .await
        .expect("flush usage");

    let app = tenancy(&t);
    let first = jobs::schedule(&app).await.expect("schedule");
    // A summary for both, key expiry for the one that used the API.
    assert_eq!(first, 3);
    assert_eq!(jobs::schedule(&app).await.expect("schedule again"), 0);

    let (s, list) = t
        .get(api!("/admin/jobs?status=queued"), &t.admin_token())
        .await;
    assert_eq!(s, Status::Ok, "{list}");
    assert_eq!(list["counts"]["queued"], 3);
    let items = list["items"].as_array().unwrap();
    for (m, kinds) in [
        (&trading, vec!["daily_summary", "expire_idempotency_keys"]),
        (&idle, vec!["daily_summary"]),
    ] {
        let day: chrono::NaiveDate = today(&t, m).await.parse().unwrap();
        let day = day.pred_opt().unwrap().to_string();
        let mut found: Vec<&str> = items
            .iter()
            .filter(|j| j["merchantId"] == json!(m.id))
            .map(|j| {
                assert_eq!(j["args"]["day"], json!(day), "{j}");
                j["kind"].as_str().unwrap()
            })
            .collect();
        found.sort_unstable();
        assert_eq!(found, kinds, "{list}");
    }
    let ran = drain(&t).await;
    assert_eq!(ran.len(), 3);
    assert!(ran.iter().all(|r| r.status == JobStatus::Done), "{ran:?}");
    // Done jobs still hold their keys: the day is not enqueued again.
    assert_eq!(jobs::schedule(&app).await.expect("schedule after"), 0);
}

#[rocket::async_test]
async fn a_job_for_a_merchant_that_moved_runs_at_the_new_placement_only() {
    let t = TestApp::with_config(quick).await;
    let m = t.shared_merchant("moved-job").await;
    let expired = expired_keys(&t, &m, 5, 1).await;
    assert_eq!(expired, 4);
    let queued = enqueue(&t, &m, json!({ "kind": "expire_idempotency_keys" })).await;
    assert_eq!(queued["generation"], 1);

    let mv = move_to(&t, &m, json!({ "tier": "schema" })).await;
    assert_eq!(mv["status"], "done", "{mv}");
    let retired = mv["retiredAs"]
        .as_str()
        .expect("the old placement, retained")
        .to_string();
    let (tier, _, schema) = location(&t, m.id);
    assert_eq!(tier, "schema");

    let ran = drain(&t).await;
    assert_eq!(ran.len(), 1);
    let done = job(&t, &queued["id"]).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(
        done["generation"], 2,
        "re-resolved to the new placement: {done}"
    );
    assert_eq!(done["result"]["deleted"], 4);

    let mut conn = t.db.owner();
    let at = |schema: &str, conn: &mut diesel::PgConnection| {
        n(
            conn,
            &format!(
                "SELECT count(*) AS n FROM \"{schema}\".idempotency_keys WHERE merchant_id = '{}' AND expires_at < now()",
                m.id
            ),
        )
    };
    assert_eq!(at(&schema, &mut conn), 0, "expired at the new placement");
    assert_eq!(
        at(&retired, &mut conn),
        4,
        "the old placement was not touched"
    );
}

#[rocket::async_test]
async fn a_job_without_a_known_merchant_is_refused() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("refused-job").await;
    let mut conn = t.db.owner();
    for (what, merchant) in [
        ("no merchant", "NULL".to_string()),
        ("an unknown merchant", format!("'{}'", Uuid::new_v4())),
    ] {
        let inserted = conn.batch_execute(&format!(
            "INSERT INTO jobs (id, merchant_id, generation, kind, max_attempts)
             VALUES (gen_random_uuid(), {merchant}, 1, 'daily_summary', 5)"
        ));
        assert!(inserted.is_err(), "a job for {what} was accepted");
    }
    let (s, body) = t
        .post(
            &format!("{API}/admin/tenants/{}/jobs", Uuid::new_v4()),
            &t.admin_token(),
            json!({ "kind": "expire_idempotency_keys" }),
        )
        .await;
    assert_error((s, body), Status::NotFound, "not_found");
    for bad in [
        json!({ "kind": "daily_summary" }),
        json!({ "kind": "daily_summary", "day": "yesterday" }),
        json!({ "kind": "expire_idempotency_keys", "merchantId": Uuid::new_v4() }),
        json!({ "kind": "export", "day": "2026-11-30" }),
        json!({ "kind": "rebuild_everything" }),
    ] {
        let (s, body) = t
            .post(
                &format!("{API}/admin/tenants/{}/jobs", m.id),
                &t.admin_token(),
                bad.clone(),
            )
            .await;
        assert_eq!(s, Status::UnprocessableEntity, "{bad}: {body}");
    }
    // Exports to a file need a directory for them.
    let (s, body) = t
        .post(
            &format!("{API}/admin/tenants/{}/jobs", m.id),
            &t.admin_token(),
            json!({ "kind": "export" }),
        )
        .await;
    assert_error((s, body), Status::Conflict, "exports_not_configured");
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM jobs").unwrap(),
        0
    );
}

/// The manifest line of an archive, without its time of export.
fn manifest(archive: &[u8]) -> Value {
    let mut lines = archive.splitn(3, |b| *b == b'\n');
    assert_eq!(lines.next(), Some(&b"posd-export 1"[..]));
    let mut m: Value =
        serde_json::from_slice(lines.next().expect("manifest")).expect("manifest JSON");
    m.as_object_mut().expect("object").remove("exportedAt");
    m
}

#[rocket::async_test]
async fn an_export_job_writes_the_archive_the_export_route_streams() {
    let dir = std::env::temp_dir().join(format!("posd-exports-{}", Uuid::new_v4().simple()));
    let configured = dir.clone();
    let t = TestApp::with_config(move |s| s.export_dir = Some(configured)).await;
    let m = t.merchant("export-job", Tier::Schema).await;
    let p = t.stocked_product(&m, "EXP-1", 400, 0, Some(10)).await;
    t.sell(&m, &p, 2, 800).await;
    let queued = enqueue(&t, &m, json!({ "kind": "export" })).await;
    let file = format!("{API}/admin/jobs/{}/file", queued["id"].as_str().unwrap());
    let (s, body) = t.get(&file, &t.admin_token()).await;
    assert_error((s, body), Status::Conflict, "export_file_missing");

    let ran = drain(&t).await;
    assert_eq!(ran.len(), 1);
    let done = job(&t, &queued["id"]).await;
    assert_eq!(done["status"], "done", "{done}");
    let res = t
        .send(Method::Get, &file, Some(&t.admin_token()), None, &[])
        .await;
    assert_eq!(res.status(), Status::Ok);
    let from_job = res.into_bytes().await.expect("the archive");
    assert_eq!(done["result"]["bytes"], json!(from_job.len()));
    let on_disk =
        std::fs::read(dir.join(done["result"]["file"].as_str().unwrap())).expect("the file");
    assert_eq!(on_disk, from_job);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "only the finished file: {left:?}");

    let streamed = t
        .send(
            Method::Get,
            &format!("{API}/admin/tenants/{}/export", m.id),
            Some(&t.admin_token()),
            None,
            &[],
        )
        .await
        .into_bytes()
        .await
        .expect("the streamed archive");
    assert_eq!(manifest(&from_job), manifest(&streamed));
    let orders = manifest(&from_job)["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "orders")
        .map(|t| t["rows"].clone());
    assert_eq!(orders, Some(json!(1)));
    // The job's export counts as one: deprovisioning needs no force.
    let mut conn = t.db.owner();
    let recorded = count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM tenant_exports WHERE requested_by = 'job {}'",
            queued["id"].as_str().unwrap()
        ),
    )
    .unwrap();
    assert_eq!(recorded, 1);
    std::fs::remove_dir_all(&dir).expect("remove the export directory");
}

#[rocket::async_test]
async fn a_failing_job_backs_off_then_is_a_dead_letter_an_operator_retries() {
    let t = TestApp::with_config(|s| s.job_max_attempts = 2).await;
    let m = t.merchant("failing-job", Tier::Schema).await;
    let day = today(&t, &m).await;
    // The merchant's data plane is gone from under posd.
    let (mut data, schema) = t.data_conn(&m);
    data.batch_execute(&format!(
        "ALTER SCHEMA \"{schema}\" RENAME TO lost_{}",
        m.id.0.simple()
    ))
    .expect("hide the schema");
    let queued = enqueue(&t, &m, json!({ "kind": "daily_summary", "day": day })).await;

    let ran = drain(&t).await;
    assert_eq!(ran.len(), 1, "a failed job waits for its backoff: {ran:?}");
    assert_eq!(ran[0].status, JobStatus::Queued);
    let first = job(&t, &queued["id"]).await;
    assert_eq!(
        (first["attempts"].clone(), first["status"].clone()),
        (json!(1), json!("queued"))
    );
    assert!(
        first["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{first}"
    );
    let wait = chrono::DateTime::parse_from_rfc3339(first["runAt"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(first["updatedAt"].as_str().unwrap()).unwrap();
    assert!((9..=11).contains(&wait.num_seconds()), "backoff {wait}");

    // Its time comes (moved forward rather than waited for).
    let mut conn = t.db.owner();
    conn.batch_execute("UPDATE jobs SET run_at = now()")
        .unwrap();
    let ran = drain(&t).await;
    assert_eq!(ran[0].status, JobStatus::Dead);
    let (s, dead) = t
        .get(api!("/admin/jobs?status=dead"), &t.admin_token())
        .await;
    assert_eq!(s, Status::Ok);
    assert_eq!(dead["counts"]["dead"], 1);
    assert_eq!(dead["items"][0]["id"], queued["id"]);
    assert_eq!(dead["items"][0]["attempts"], 2);

    // The operator fixes the cause and retries.
    data.batch_execute(&format!(
        "ALTER SCHEMA lost_{} RENAME TO \"{schema}\"",
        m.id.0.simple()
    ))
    .expect("restore the schema");
    let (s, retried) = t
        .post(
            &format!("{API}/admin/jobs/{}/retry", queued["id"].as_str().unwrap()),
            &t.admin_token(),
            json!({}),
        )
        .await;
    assert_eq!(s, Status::Ok, "{retried}");
    assert_eq!(
        (retried["status"].clone(), retried["attempts"].clone()),
        (json!("queued"), json!(0))
    );
    let ran = drain(&t).await;
    assert_eq!(ran[0].status, JobStatus::Done, "{ran:?}");
    let (s, body) = t
        .post(
            &format!("{API}/admin/jobs/{}/retry", queued["id"].as_str().unwrap()),
            &t.admin_token(),
            json!({}),
        )
        .await;
    assert_error((s, body), Status::Conflict, "job_done");
    let audited = count(
        &mut conn,
        &format!("SELECT count(*) AS n FROM admin_audit WHERE merchant_id = '{}' AND action LIKE 'jobs.%'", m.id),
    )
    .unwrap();
    assert_eq!(audited, 2, "the enqueue and the retry are operator actions");
}

#[rocket::async_test]
async fn two_workers_never_run_the_same_job() {
    let t = TestApp::with_config(|s| s.pool_size = 12).await;
    let mut merchants = Vec::new();
    for i in 0..4 {
        merchants.push(t.shared_merchant(&format!("race-{i}")).await);
    }
    let mut enqueued = BTreeSet::new();
    for m in &merchants {
        for _ in 0..10 {
            let j = enqueue(&t, m, json!({ "kind": "expire_idempotency_keys" })).await;
            enqueued.insert(j["id"].as_str().unwrap().to_string());
        }
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let app = tenancy(&t);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(r) = jobs::run_next(&app).await.expect("run a job") {
                    mine.push(r.job.to_string());
                }
                mine
            })
        })
        .collect();
    let mut runs = Vec::new();
    for w in workers {
        runs.extend(w.await.expect("worker"));
    }
    let distinct: BTreeSet<String> = runs.iter().cloned().collect();
    assert_eq!(runs.len(), distinct.len(), "a job ran twice: {runs:?}");
    assert_eq!(distinct, enqueued);
    let mut conn = t.db.owner();
    let once = count(
        &mut conn,
        "SELECT count(*) AS n FROM jobs WHERE status = 'done' AND attempts = 1",
    )
    .unwrap();
    assert_eq!(once, 40);
}

#[rocket::async_test]
async fn a_worker_killed_mid_job_leaves_it_to_be_run_again() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("killed-job").await;
    let day = today(&t, &m).await;
    let queued = enqueue(&t, &m, json!({ "kind": "daily_summary", "day": day })).await;
    let id = queued["id"].as_str().unwrap().to_string();

    let mut serving = Serving::start_with(
        &t.db.name,
        Some("info"),
        &[("POSD_JOB_WORKERS", "1"), ("POSD_JOB_FAULT", "hang")],
    );
    serving.wait_for("the job hangs until posd is killed");
    let mut conn = t.db.owner();
    let lockable = |conn: &mut diesel::PgConnection| {
        count(
            conn,
            &format!("SELECT count(*) AS n FROM (SELECT id FROM jobs WHERE id = '{id}' FOR UPDATE SKIP LOCKED) j"),
        )
        .unwrap()
    };
    assert_eq!(
        lockable(&mut conn),
        0,
        "the worker holds the job while it runs"
    );
    serving.stop();

    // The dead worker's transaction ends with its connection.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lockable(&mut conn) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed worker's claim was never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let after = job(&t, &queued["id"]).await;
    assert_eq!(
        (after["status"].clone(), after["attempts"].clone()),
        (json!("queued"), json!(0)),
        "{after}"
    );

    let ran = drain(&t).await;
    assert!(
        ran.iter()
            .any(|r| r.job.to_string() == id && r.status == JobStatus::Done),
        "{ran:?}"
    );
    let done = job(&t, &queued["id"]).await;
    assert_eq!(
        (done["status"].clone(), done["attempts"].clone()),
        (json!("done"), json!(1))
    );
}
