//! Provisioning runs: client run ids, replays, resumption, concurrency,
//! and deprovisioning.

use diesel::{PgConnection, connection::SimpleConnection};
use rocket::http::Status;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, Merchant, Server, TestApp, api, assert_error, count};
use posd::{
    db::ids::MerchantId,
    tenancy::{Tier, provisioning::PROVISION_LOCK_CLASS, tenant_database_name, tenant_schema_name},
};

pub const PROVISION: &str = api!("/admin/tenant/provision");

pub async fn provision(t: &TestApp, body: Value) -> (Status, Value) {
    t.post(PROVISION, &t.admin_token(), body).await
}

pub fn schema_exists(conn: &mut PgConnection, schema: &str) -> bool {
    count(
        conn,
        &format!("SELECT count(*) AS n FROM pg_namespace WHERE nspname = '{schema}'"),
    )
    .unwrap()
        == 1
}

pub fn database_exists(name: &str) -> bool {
    count(
        &mut Server::get().superuser(),
        &format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'"),
    )
    .unwrap()
        == 1
}

/// Asserts that nothing of a failed provisioning remains and that the
/// merchant still works on the shared tier.
pub async fn assert_still_shared(t: &TestApp, m: &Merchant) {
    let mut owner = t.db.owner();
    assert!(!schema_exists(&mut owner, &tenant_schema_name(m.id)));
    assert!(!database_exists(&tenant_database_name(m.id)));
    let q = |table: &str| {
        format!(
            "SELECT count(*) AS n FROM {table} WHERE merchant_id = '{}'",
            m.id
        )
    };
    assert_eq!(count(&mut owner, &q("tenant_databases")).unwrap(), 0);
    assert_eq!(count(&mut owner, &q("tenant_migration_state")).unwrap(), 0);
    assert_eq!(
        count(
            &mut owner,
            &format!(
                "SELECT count(*) AS n FROM merchants WHERE id = '{}' AND tier = 'shared' \
                 AND schema_name = 'tenant_shared' AND database_id IS NULL AND generation = 1",
                m.id
            )
        )
        .unwrap(),
        1,
        "the placement is untouched"
    );
    let (status, body) = t
        .post(
            api!("/products"),
            &m.token,
            json!({ "sku": "AFTER", "name": "after", "priceMinor": 1 }),
        )
        .await;
    assert_eq!(status, Status::Created, "{body}");
    let mut su =
        <PgConnection as diesel::Connection>::establish(&Server::get().superuser_url(&t.db.name))
            .unwrap();
    assert_eq!(
        count(
            &mut su,
            &format!(
                "SELECT count(*) AS n FROM tenant_shared.products WHERE merchant_id = '{}'",
                m.id
            )
        )
        .unwrap(),
        1,
        "the product landed on the shared tier"
    );
}

fn runs_of(t: &TestApp, m: MerchantId) -> i64 {
    count(
        &mut t.db.owner(),
        &format!("SELECT count(*) AS n FROM provisioning_runs WHERE merchant_id = '{m}'"),
    )
    .unwrap()
}

#[rocket::async_test]
async fn a_client_run_id_is_answered_again_and_cannot_be_reused_for_another_provisioning() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("runid").await;
    let other = t.shared_merchant("runid-other").await;
    let run_id = Uuid::new_v4().to_string();
    let body = json!({ "merchantId": m.id.to_string(), "tier": "schema", "runId": run_id });
    let (status, first) = provision(&t, body.clone()).await;
    assert_eq!(status, Status::Created, "{first}");
    assert_eq!(first["run"]["id"], json!(run_id));
    assert_eq!(first["run"]["status"], "ready");
    assert_eq!(first["run"]["step"], "place");

    let (status, again) = provision(&t, body).await;
    assert_eq!(status, Status::Ok, "a replay: {again}");
    assert_eq!(again["run"], first["run"], "the same run, unchanged");
    assert_eq!(runs_of(&t, m.id), 1);

    for wrong in [
        json!({ "merchantId": m.id.to_string(), "tier": "dedicated", "runId": run_id }),
        json!({ "merchantId": other.id.to_string(), "tier": "schema", "runId": run_id }),
    ] {
        let (status, body) = provision(&t, wrong).await;
        assert_error(
            (status, &body),
            Status::UnprocessableEntity,
            "run_id_mismatch",
        );
    }
    assert_eq!(runs_of(&t, other.id), 0);
    let (status, body) = provision(
        &t,
        json!({ "merchantId": m.id.to_string(), "tier": "schema", "runId": "nope" }),
    )
    .await;
    assert_error((status, &body), Status::UnprocessableEntity, "invalid_body");
}

#[rocket::async_test]
async fn a_failed_run_is_answered_again_as_it_failed() {
    let t = TestApp::with_config(|s| s.provision_fail_after_step = Some(2)).await;
    let m = t.shared_merchant("failed-replay").await;
    let body = json!({ "merchantId": m.id.to_string(), "tier": "schema", "runId": Uuid::new_v4() });
    let (status, first) = provision(&t, body.clone()).await;
    assert_error(
        (status, &first),
        Status::UnprocessableEntity,
        "injected_fault",
    );
    assert_eq!(first["run"]["status"], "failed");
    assert_eq!(first["run"]["failedStep"], "migrate");
    let (status, again) = provision(&t, body).await;
    assert_eq!(status, Status::UnprocessableEntity);
    assert_eq!(again, first);
    assert_eq!(runs_of(&t, m.id), 1);
    assert_still_shared(&t, &m).await;
}

/// A run cut short (posd stopped after creating the schema or the database)
/// is resumed by calling again with its id: every step is idempotent.
#[rocket::async_test]
async fn a_run_cut_short_resumes_with_its_id() {
    let t = TestApp::new().await;
    for (slug, tier) in [
        ("cut-schema", Tier::Schema),
        ("cut-dedicated", Tier::Dedicated),
    ] {
        let m = t.shared_merchant(slug).await;
        let run_id = Uuid::new_v4();
        let mut owner = t.db.owner();
        owner
            .batch_execute(&format!(
                "INSERT INTO provisioning_runs (id, merchant_id, target_tier, status, step) \
                 VALUES ('{run_id}', '{}', '{}', 'migrating', 'migrate')",
                m.id,
                tier.as_str()
            ))
            .unwrap();
        // What the interrupted run had left: the schema, or the database.
        match tier {
            Tier::Schema => owner
                .batch_execute(&format!("CREATE SCHEMA {}", tenant_schema_name(m.id)))
                .unwrap(),
            _ => Server::get()
                .superuser()
                .batch_execute(&format!(
                    "CREATE DATABASE {} OWNER posd_test_owner",
                    tenant_database_name(m.id)
                ))
                .unwrap(),
        }
        let (status, body) = provision(
            &t,
            json!({ "merchantId": m.id.to_string(), "tier": tier.as_str(), "runId": run_id }),
        )
        .await;
        assert_eq!(status, Status::Created, "{slug}: {body}");
        assert_eq!(body["run"]["id"], json!(run_id.to_string()));
        assert_eq!(body["run"]["status"], "ready");
        assert_eq!(runs_of(&t, m.id), 1);
        let (status, _) = t
            .post(
                api!("/products"),
                &m.token,
                json!({ "sku": "R", "name": "r", "priceMinor": 1 }),
            )
            .await;
        assert_eq!(status, Status::Created, "{slug}");
    }
}

/// While another call holds the merchant's provisioning lock, a call gets
/// 409 and changes nothing; once it is released, one call wins and the
/// next is told the merchant is provisioned.
#[rocket::async_test]
async fn a_second_provisioning_of_a_merchant_gets_409() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("twice").await;
    let body = json!({ "merchantId": m.id.to_string(), "tier": "schema" });
    let mut holder = t.db.owner();
    holder
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({PROVISION_LOCK_CLASS}, hashtext('{}'))",
            m.id
        ))
        .unwrap();
    let (status, held) = provision(&t, body.clone()).await;
    assert_error(
        (status, &held),
        Status::Conflict,
        "provisioning_in_progress",
    );
    assert_eq!(runs_of(&t, m.id), 0);
    assert!(!schema_exists(&mut t.db.owner(), &tenant_schema_name(m.id)));
    drop(holder);

    let (status, won) = provision(&t, body.clone()).await;
    assert_eq!(status, Status::Created, "{won}");
    let (status, late) = provision(&t, body).await;
    assert_error((status, &late), Status::Conflict, "already_provisioned");
    assert_eq!(runs_of(&t, m.id), 1);
}

/// Two calls at once: exactly one wins; the state is the winner's.
#[rocket::async_test]
async fn two_provisionings_at_once_one_wins() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("at-once").await;
    let body = json!({ "merchantId": m.id.to_string(), "tier": "dedicated" });
    let ((s1, b1), (s2, b2)) =
        rocket::tokio::join!(provision(&t, body.clone()), provision(&t, body.clone()));
    let mut statuses = [s1.code, s2.code];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{b1} {b2}");
    let loser = if s1 == Status::Conflict { &b1 } else { &b2 };
    let code = loser["error"]["code"].as_str().unwrap();
    assert!(
        ["provisioning_in_progress", "already_provisioned"].contains(&code),
        "{loser}"
    );
    let mut owner = t.db.owner();
    assert_eq!(
        count(
            &mut owner,
            &format!(
                "SELECT count(*) AS n FROM provisioning_runs WHERE merchant_id = '{}' AND status = 'ready'",
                m.id
            )
        )
        .unwrap(),
        1
    );
    assert_eq!(
        count(
            &mut owner,
            &format!(
                "SELECT count(*) AS n FROM tenant_databases WHERE merchant_id = '{}'",
                m.id
            )
        )
        .unwrap(),
        1
    );
    assert!(database_exists(&tenant_database_name(m.id)));
}

fn deprovision_path(m: MerchantId) -> String {
    format!("{API}/admin/tenants/{m}/deprovision")
}

#[rocket::async_test]
async fn deprovisioning_needs_an_export_or_force_and_returns_the_merchant_to_the_shared_tier() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let schema_m = t.merchant("dep-schema", Tier::Schema).await;
    let dedicated_m = t.merchant("dep-dedicated", Tier::Dedicated).await;
    let shared_m = t.shared_merchant("dep-shared").await;
    t.product(&schema_m, "GONE").await;

    let (status, body) = t
        .post(&deprovision_path(shared_m.id), &admin, json!({}))
        .await;
    assert_error((status, &body), Status::Conflict, "not_provisioned");
    let (status, _) = t
        .post(
            &deprovision_path(MerchantId(Uuid::new_v4())),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, Status::NotFound);

    for m in [&schema_m, &dedicated_m] {
        let (status, body) = t.post(&deprovision_path(m.id), &admin, json!({})).await;
        assert_error((status, &body), Status::Conflict, "export_required");
    }
    let mut owner = t.db.owner();
    assert!(schema_exists(&mut owner, &tenant_schema_name(schema_m.id)));
    assert!(database_exists(&tenant_database_name(dedicated_m.id)));

    // An export taken before the merchant was placed does not count.
    owner
        .batch_execute(&format!(
            "INSERT INTO tenant_exports (id, merchant_id, tier, requested_by, created_at) \
             VALUES ('{}', '{}', 'schema', 'tests', now() - interval '1 day')",
            Uuid::new_v4(),
            schema_m.id
        ))
        .unwrap();
    let (status, _) = t
        .post(&deprovision_path(schema_m.id), &admin, json!({}))
        .await;
    assert_eq!(status, Status::Conflict);
    owner
        .batch_execute(&format!(
            "INSERT INTO tenant_exports (id, merchant_id, tier, requested_by) \
             VALUES ('{}', '{}', 'schema', 'tests')",
            Uuid::new_v4(),
            schema_m.id
        ))
        .unwrap();
    let (status, body) = t
        .post(&deprovision_path(schema_m.id), &admin, json!({}))
        .await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(
        body["dropped"],
        json!(format!("schema {}", tenant_schema_name(schema_m.id)))
    );
    assert_eq!(body["merchant"]["tier"], "shared");
    assert!(body["export"]["id"].is_string());
    assert!(!schema_exists(&mut owner, &tenant_schema_name(schema_m.id)));

    let (status, body) = t
        .post(
            &deprovision_path(dedicated_m.id),
            &admin,
            json!({ "force": true }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{body}");
    assert!(!database_exists(&tenant_database_name(dedicated_m.id)));
    assert_eq!(
        count(
            &mut owner,
            &format!(
                "SELECT count(*) AS n FROM tenant_databases WHERE merchant_id = '{}'",
                dedicated_m.id
            )
        )
        .unwrap(),
        0
    );

    // Both are back on the shared tier, empty, and can be provisioned again.
    for m in [&schema_m, &dedicated_m] {
        let (status, list) = t.get(api!("/products"), &m.token).await;
        assert_eq!(status, Status::Ok, "{list}");
        assert_eq!(list["items"], json!([]));
    }
    let (status, body) = provision(
        &t,
        json!({ "merchantId": schema_m.id.to_string(), "tier": "schema" }),
    )
    .await;
    assert_eq!(status, Status::Created, "{body}");
    t.product(&schema_m, "BACK").await;
}

/// The admin audit entries of `action` for merchant `m` (or for no
/// merchant), oldest first: `(actor, details)`.
fn audit_of(t: &TestApp, action: &str, m: Option<MerchantId>) -> Vec<(String, Value)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        actor: String,
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        details: Value,
    }
    let filter = match m {
        Some(m) => format!("merchant_id = '{m}'"),
        None => "merchant_id IS NULL".to_string(),
    };
    let rows: Vec<Row> = diesel::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT actor, details FROM admin_audit WHERE action = '{action}' AND {filter} ORDER BY id"
        )),
        &mut t.db.owner(),
    )
    .unwrap();
    rows.into_iter().map(|r| (r.actor, r.details)).collect()
}

#[rocket::async_test]
async fn provisioning_deprovisioning_and_fleet_migrations_are_audited() {
    let t = TestApp::with_config(|s| s.provision_fail_after_step = Some(3)).await;
    let admin = t
        .app()
        .jwt
        .issue_admin("ops-alice", std::time::Duration::from_secs(600))
        .unwrap();
    let m = t.shared_merchant("audited").await;
    let failing = t.shared_merchant("audited-fails").await;

    // Schema provisioning has three steps: the fault hook fails the third.
    let (status, body) = t
        .post(
            PROVISION,
            &admin,
            json!({ "merchantId": failing.id.to_string(), "tier": "schema" }),
        )
        .await;
    assert_eq!(status, Status::UnprocessableEntity, "{body}");
    let rows = audit_of(&t, "tenant.provision", Some(failing.id));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "ops-alice");
    assert_eq!(rows[0].1["outcome"], "failed");
    assert_eq!(rows[0].1["code"], "injected_fault");
    assert_eq!(rows[0].1["runId"], body["run"]["id"]);

    // Without the fault hook from here on.
    let TestApp { client, db } = t;
    drop(client);
    let t = TestApp::on(db).await;
    let (status, body) = t
        .post(
            PROVISION,
            &admin,
            json!({ "merchantId": m.id.to_string(), "tier": "schema" }),
        )
        .await;
    assert_eq!(status, Status::Created, "{body}");
    let (status, _) = t
        .post(
            PROVISION,
            &admin,
            json!({ "merchantId": m.id.to_string(), "tier": "schema" }),
        )
        .await;
    assert_eq!(status, Status::Conflict);
    let rows = audit_of(&t, "tenant.provision", Some(m.id));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|(actor, _)| actor == "ops-alice"));
    assert_eq!(rows[0].1["outcome"], "ready");
    assert_eq!(rows[0].1["tier"], "schema");
    assert_eq!(rows[0].1["runId"], body["run"]["id"]);
    assert_eq!(rows[1].1["outcome"], "refused");
    assert_eq!(rows[1].1["code"], "already_provisioned");

    let report = t
        .fleet_migrate(&admin, json!({ "merchantIds": [m.id] }))
        .await;
    let rows = audit_of(&t, "tenants.migrate", Some(m.id));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "ops-alice");
    assert_eq!(rows[0].1["outcome"], "ok");
    assert_eq!(rows[0].1["runId"], report["run"]["id"]);
    assert_eq!(rows[0].1["upToDate"], 1);
    let (status, _) = t
        .post(
            api!("/admin/tenants/migrate"),
            &admin,
            json!({ "dryRun": true }),
        )
        .await;
    assert_eq!(status, Status::Ok);
    let rows = audit_of(&t, "tenants.migrate", None);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1["dryRun"], true);

    let path = deprovision_path(m.id);
    let (status, _) = t.post(&path, &admin, json!({})).await;
    assert_eq!(status, Status::Conflict);
    let (status, body) = t.post(&path, &admin, json!({ "force": true })).await;
    assert_eq!(status, Status::Ok, "{body}");
    let rows = audit_of(&t, "tenant.deprovision", Some(m.id));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|(actor, _)| actor == "ops-alice"));
    assert_eq!(rows[0].1["outcome"], "refused");
    assert_eq!(rows[0].1["code"], "export_required");
    assert_eq!(rows[1].1["outcome"], "deprovisioned");
    assert_eq!(rows[1].1["force"], true);
}
