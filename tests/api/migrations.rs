//! Tenant migrations across the fleet, and in the background for a behind
//! tenant that gets a request.

use std::{
    io::{BufRead, BufReader},
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use diesel::connection::SimpleConnection;
use rocket::http::{Method, Status};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::common::{
    API, Merchant, Server, TestApp, api, assert_error, assert_error_about, backend_pid, count,
    read, server_connections, unmigrate,
};
use posd::{
    db::platform::{Platform, migration_state::schema_versions},
    tenancy::{
        Tier,
        fleet::{self, OutcomeStatus, Selection},
        migrations::latest_tenant_version,
        tenant_schema_name,
    },
};

fn versions(t: &TestApp, ids: &[posd::db::ids::MerchantId]) -> Vec<Option<String>> {
    let schemas: Vec<String> = ids.iter().map(|m| tenant_schema_name(*m)).collect();
    let mut owner = t.db.owner();
    schema_versions(&mut Platform::new(&mut owner), &schemas)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

fn run(t: &TestApp, sel: &Selection, concurrency: usize) -> fleet::Report {
    let app = t.app();
    fleet::migrate(
        &app.settings,
        &app.app_role,
        "test",
        sel,
        concurrency,
        false,
        &|_| {},
    )
    .unwrap()
}

/// [`run`], with the most connections PostgreSQL listed to the platform
/// database as the owner role while it ran, sampled as each tenant's
/// outcome is reported (by the worker, on its connection); `except` are the
/// test's own.
fn run_watched(
    t: &TestApp,
    sel: &Selection,
    concurrency: usize,
    except: &[i32],
) -> (fleet::Report, i64) {
    let server = Server::get();
    let su = Mutex::new(server.superuser());
    let peak = AtomicI64::new(0);
    let databases = [t.db.name.clone()];
    let app = t.app();
    let report = fleet::migrate(
        &app.settings,
        &app.app_role,
        "test",
        sel,
        concurrency,
        false,
        &|_| {
            let n = server_connections(
                &mut su.lock().unwrap(),
                &databases,
                server.owner_role(),
                except,
            );
            peak.fetch_max(n, Ordering::Relaxed);
        },
    )
    .unwrap();
    (report, peak.into_inner())
}

#[rocket::async_test]
async fn a_fleet_run_migrates_every_tenant_and_a_broken_one_fails_alone() {
    const N: usize = 200;
    const BUDGET: u32 = 3;
    let t = TestApp::with_config(|s| s.connection_budget = BUDGET).await;
    let ids = t.schema_tenants("fleet", N).await;
    let latest = latest_tenant_version();
    let mut owner = t.db.owner();
    for id in &ids {
        unmigrate(&mut owner, &tenant_schema_name(*id));
    }
    // One tenant cannot take the migration: a table of that name is in the way.
    let broken = ids[N / 2];
    owner
        .batch_execute(&format!(
            "CREATE TABLE \"{}\".products (x int)",
            tenant_schema_name(broken)
        ))
        .unwrap();
    assert!(versions(&t, &ids).iter().all(Option::is_none));

    let dry = {
        let app = t.app();
        fleet::migrate(
            &app.settings,
            &app.app_role,
            "test",
            &Selection::default(),
            4,
            true,
            &|_| {},
        )
        .unwrap()
    };
    assert_eq!(
        dry.outcomes
            .iter()
            .filter(|o| o.status == OutcomeStatus::Pending)
            .count(),
        N
    );
    assert!(
        versions(&t, &ids).iter().all(Option::is_none),
        "a dry run changes nothing"
    );

    // Asked for 4 at once, the run takes no more than the budget: 3
    // workers, each on its own connection, and the run's own connection.
    let mine = backend_pid(&mut owner);
    let (report, peak) = run_watched(&t, &Selection::default(), 4, &[mine]);
    assert!(
        peak <= i64::from(BUDGET) + 1,
        "PostgreSQL listed {peak} owner connections during a run with a budget of {BUDGET}"
    );
    assert!(
        peak >= 2,
        "the count missed the run's connections (it saw {peak})"
    );
    assert_eq!(usize::try_from(report.run.total).unwrap(), N);
    assert_eq!(usize::try_from(report.run.migrated).unwrap(), N - 1);
    assert_eq!(report.run.failed, 1);
    let failed: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.status == OutcomeStatus::Failed)
        .collect();
    assert_eq!(failed[0].merchant_id, broken);
    assert!(
        failed[0].error.as_deref().unwrap().contains("products"),
        "{failed:?}"
    );
    let after = versions(&t, &ids);
    for (id, v) in ids.iter().zip(&after) {
        if *id == broken {
            assert_eq!(v, &None);
        } else {
            assert_eq!(v.as_deref(), Some(latest.as_str()), "{id}");
        }
    }

    // A re-run skips what is done and retries only the failure.
    let again = run(&t, &Selection::default(), 4);
    assert_eq!(usize::try_from(again.run.skipped).unwrap(), N - 1);
    assert_eq!(again.run.failed, 1);
    owner
        .batch_execute(&format!(
            "DROP TABLE \"{}\".products",
            tenant_schema_name(broken)
        ))
        .unwrap();
    let fixed = run(
        &t,
        &Selection {
            merchants: vec![broken],
            tier: None,
        },
        1,
    );
    assert_eq!(fixed.run.migrated, 1);
    assert!(
        versions(&t, &ids)
            .iter()
            .all(|v| v.as_deref() == Some(latest.as_str()))
    );
}

/// SIGKILL the CLI half-way through, run it again: every tenant ends at the
/// latest version.
#[rocket::async_test]
async fn a_killed_run_resumes() {
    const N: usize = 40;
    let t = TestApp::new().await;
    let ids = t.schema_tenants("kill", N).await;
    let mut owner = t.db.owner();
    for id in &ids {
        unmigrate(&mut owner, &tenant_schema_name(*id));
    }
    let s = &t.app().settings;
    let cli = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_posd"));
        c.args(["tenants", "migrate", "--all", "--concurrency", "1"])
            .env("POSD_DATABASE_URL", s.database_url.expose_secret())
            .env("POSD_APP_DATABASE_URL", s.app_database_url.expose_secret())
            .env("POSD_JWT_SECRET", s.jwt_secret.expose_secret())
            .env("POSD_ENCRYPTION_KEYS", Server::get().keys())
            .env("POSD_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    // Hold the 10th tenant's migration lock, so that the run stops there
    // until it is killed.
    let mut blocker = t.db.owner();
    blocker
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({}, hashtext('{}'))",
            posd::tenancy::migrations::LOCK_CLASS,
            tenant_schema_name(ids[9])
        ))
        .unwrap();
    let mut child = cli().spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut migrated = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // A tenant that fails would leave the run waiting at the 10th for
        // good: fail here instead.
        assert!(!line.starts_with("failed"), "{line}");
        if line.starts_with("migrated") {
            migrated += 1;
            if migrated == 5 {
                break;
            }
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    if migrated < 5 {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        panic!("the CLI ended early ({status}): {err}");
    }
    drop(blocker);
    let done = versions(&t, &ids).iter().filter(|v| v.is_some()).count();
    assert!(
        (5..=9).contains(&done),
        "killed mid-way, before the 10th tenant: {done}"
    );

    let out = cli().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{N} tenants")), "{text}");
    let latest = latest_tenant_version();
    assert!(
        versions(&t, &ids)
            .iter()
            .all(|v| v.as_deref() == Some(latest.as_str()))
    );
}

/// Waits until `m` is no longer being migrated in the background, and
/// answers its tenant view.
pub async fn wait_migration(t: &TestApp, m: &Merchant) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let admin = t.admin_token();
    loop {
        let (status, view) = t
            .get(&format!("{API}/admin/tenants/{}", m.id), &admin)
            .await;
        assert_eq!(status, Status::Ok, "{view}");
        if view["migrating"] == json!(false) && view["migrationStatus"].is_string() {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the background migration of {} never finished: {view}",
            m.slug
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Takes a schema tenant and a dedicated tenant back to before their tenant
/// migrations, as if they had been provisioned by an older posd.
fn put_behind(t: &TestApp, schema_m: &Merchant, dedicated_m: &Merchant) {
    let mut owner = t.db.owner();
    unmigrate(&mut owner, &tenant_schema_name(schema_m.id));
    owner
        .batch_execute(&format!(
            "UPDATE tenant_migration_state SET version = NULL WHERE merchant_id IN ('{}', '{}')",
            schema_m.id, dedicated_m.id
        ))
        .unwrap();
    let server = Server::get();
    let mut dedicated = diesel::Connection::establish(
        &server.owner_url(&posd::tenancy::tenant_database_name(dedicated_m.id)),
    )
    .map(|c: diesel::PgConnection| c)
    .unwrap();
    unmigrate(&mut dedicated, &tenant_schema_name(dedicated_m.id));
    t.app().directory.invalidate_all();
    t.app().pools.evict(dedicated_m.id);
}

fn on_demand_runs(t: &TestApp) -> i64 {
    count(
        &mut t.db.owner(),
        "SELECT count(*) AS n FROM tenant_migration_runs WHERE requested_by = 'on-demand'",
    )
    .unwrap()
}

/// A tenant whose schema is behind is not served until it is migrated: its
/// request answers 503 `tenant_migrating` and starts the migration in the
/// background.
#[rocket::async_test]
async fn a_behind_tenant_is_migrated_in_the_background() {
    let t = TestApp::new().await;
    let schema_m = t.merchant("behind-schema", Tier::Schema).await;
    let dedicated_m = t.merchant("behind-dedicated", Tier::Dedicated).await;
    put_behind(&t, &schema_m, &dedicated_m);

    for m in [&schema_m, &dedicated_m] {
        let res = t
            .send(
                Method::Post,
                api!("/products"),
                Some(&m.token),
                Some(json!({ "sku": "NEW", "name": "n", "priceMinor": 1 })),
                &[],
            )
            .await;
        assert!(res.headers().get_one("Retry-After").is_some(), "{}", m.slug);
        assert_error_about(
            &m.slug,
            read(res).await,
            Status::ServiceUnavailable,
            "tenant_migrating",
        );

        let tenant = wait_migration(&t, m).await;
        assert_eq!(
            tenant["migrationVersion"],
            json!(latest_tenant_version()),
            "{}: {tenant}",
            m.slug
        );
        let (status, body) = t
            .post(
                api!("/products"),
                &m.token,
                json!({ "sku": "NEW", "name": "n", "priceMinor": 1 }),
            )
            .await;
        assert_eq!(status, Status::Created, "{}: {body}", m.slug);
    }
    assert_eq!(on_demand_runs(&t), 2, "one run per tenant");

    // The admin endpoint reports the fleet as up to date now.
    let (status, report) = t
        .post(
            api!("/admin/tenants/migrate"),
            &t.admin_token(),
            json!({ "dryRun": true }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{report}");
    assert_eq!(report["run"]["total"], 2);
    assert!(
        report["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "up_to_date"),
        "{report}"
    );
}

/// `GET /admin/tenants/{id}` reports a behind tenant as it is: it neither
/// migrates it nor builds its pool.
#[rocket::async_test]
async fn reading_a_tenant_changes_nothing() {
    let t = TestApp::new().await;
    let schema_m = t.merchant("read-schema", Tier::Schema).await;
    let dedicated_m = t.merchant("read-dedicated", Tier::Dedicated).await;
    put_behind(&t, &schema_m, &dedicated_m);
    let builds = t.app().pools.summary().builds;
    for m in [&schema_m, &dedicated_m] {
        for _ in 0..2 {
            let (status, tenant) = t
                .get(&format!("{API}/admin/tenants/{}", m.id), &t.admin_token())
                .await;
            assert_eq!(status, Status::Ok, "{tenant}");
            assert_eq!(tenant["migrationVersion"], json!(null), "{tenant}");
            assert_eq!(tenant["pool"], json!(null), "{tenant}");
            assert_eq!(tenant["migrating"], json!(false), "{tenant}");
        }
    }
    assert_eq!(versions(&t, &[schema_m.id]), vec![None], "not migrated");
    assert_eq!(t.app().pools.summary().builds, builds, "no pool built");
    assert_eq!(on_demand_runs(&t), 0);
    let mut owner = t.db.owner();
    assert_eq!(
        count(
            &mut owner,
            "SELECT count(*) AS n FROM tenant_migration_runs"
        )
        .unwrap(),
        0
    );
}

/// Many requests while a tenant's migration runs start one run; a failed
/// run is recorded and its tenant answered `tenant_migration_failed`.
#[rocket::async_test]
async fn one_background_migration_per_tenant_and_a_failure_is_recorded() {
    let t = TestApp::new().await;
    let m = t.merchant("busy", Tier::Schema).await;
    let broken = t.merchant("broken", Tier::Schema).await;
    let mut owner = t.db.owner();
    for x in [&m, &broken] {
        unmigrate(&mut owner, &tenant_schema_name(x.id));
    }
    owner
        .batch_execute(&format!(
            "UPDATE tenant_migration_state SET version = NULL WHERE merchant_id IN ('{}', '{}');
             CREATE TABLE \"{}\".products (x int);",
            m.id,
            broken.id,
            tenant_schema_name(broken.id)
        ))
        .unwrap();
    t.app().directory.invalidate_all();

    // Hold the tenant's migration lock: its run waits until released.
    let mut blocker = t.db.owner();
    blocker
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({}, hashtext('{}'))",
            posd::tenancy::migrations::LOCK_CLASS,
            tenant_schema_name(m.id)
        ))
        .unwrap();
    for _ in 0..5 {
        let (status, body) =
            tokio::time::timeout(Duration::from_secs(10), t.get(api!("/products"), &m.token))
                .await
                .expect("a request does not wait for its tenant's migration");
        assert_error(
            (status, &body),
            Status::ServiceUnavailable,
            "tenant_migrating",
        );
    }
    let (_, tenant) = t
        .get(&format!("{API}/admin/tenants/{}", m.id), &t.admin_token())
        .await;
    assert_eq!(tenant["migrating"], json!(true), "{tenant}");
    drop(blocker);
    let tenant = wait_migration(&t, &m).await;
    assert_eq!(tenant["migrationStatus"], "ok", "{tenant}");
    assert_eq!(on_demand_runs(&t), 1, "one run for five requests");
    let (status, body) = t.get(api!("/products"), &m.token).await;
    assert_eq!(status, Status::Ok, "{body}");

    let (status, body) = t.get(api!("/products"), &broken.token).await;
    assert_eq!(status, Status::ServiceUnavailable, "{body}");
    let tenant = wait_migration(&t, &broken).await;
    assert_eq!(tenant["migrationStatus"], "failed", "{tenant}");
    assert!(
        tenant["migrationError"]
            .as_str()
            .is_some_and(|e| e.contains("products")),
        "{tenant}"
    );
    let (status, body) = t.get(api!("/products"), &broken.token).await;
    assert_error(
        (status, &body),
        Status::ServiceUnavailable,
        "tenant_migration_failed",
    );
    assert_eq!(on_demand_runs(&t), 2, "a failure is not retried at once");
}

/// Every tenant migration can be reverted and applied again, leaving
/// nothing behind (the fleet benchmark and rollbacks rely on `down.sql`).
#[test]
fn tenant_migrations_revert_cleanly() {
    use diesel_migrations::MigrationHarness;
    let db = crate::common::TestDb::new();
    let mut conn = db.owner();
    conn.batch_execute("CREATE SCHEMA revert_check; SET search_path = revert_check")
        .unwrap();
    conn.run_pending_migrations(posd::tenancy::migrations::TENANT)
        .unwrap();
    conn.revert_all_migrations(posd::tenancy::migrations::TENANT)
        .unwrap();
    conn.run_pending_migrations(posd::tenancy::migrations::TENANT)
        .unwrap();
    conn.revert_all_migrations(posd::tenancy::migrations::TENANT)
        .unwrap();
    let left = count(
        &mut conn,
        "SELECT count(*) AS n FROM pg_class WHERE relnamespace = 'revert_check'::regnamespace \
         AND relname <> '__diesel_schema_migrations' AND relname NOT LIKE '__diesel_schema_migrations%'",
    )
    .unwrap();
    assert_eq!(left, 0, "a down.sql leaves relations behind");
}
