//! The table classification check covers every tenant's own schema or
//! database: a tenant whose tables fail it is not served (503
//! `tenant_unclassified_table`), every other tenant is, and posd boots.

use diesel::{Connection, PgConnection, connection::SimpleConnection};
use rocket::http::{Method, Status};
use serde_json::{Value, json};

use crate::common::{API, Merchant, Server, TestApp, api, assert_error, assert_error_about};
use posd::tenancy::{Tier, tenant_database_name, tenant_schema_name};

/// A superuser connection to the database that holds `m`'s schema.
fn superuser_on(t: &TestApp, m: &Merchant) -> PgConnection {
    let db = match m.tier {
        Tier::Dedicated => tenant_database_name(m.id),
        _ => t.db.name.clone(),
    };
    PgConnection::establish(&Server::get().superuser_url(&db)).unwrap()
}

/// Lists products as `m`: the status, the body and `Retry-After`.
async fn list(t: &TestApp, m: &Merchant) -> (Status, Value, Option<String>) {
    let res = t
        .send(Method::Get, api!("/products"), Some(&m.token), None, &[])
        .await;
    let status = res.status();
    let retry = res.headers().get_one("Retry-After").map(str::to_string);
    let body =
        serde_json::from_str(&res.into_string().await.unwrap_or_default()).unwrap_or(Value::Null);
    (status, body, retry)
}

async fn assert_blocked(t: &TestApp, m: &Merchant, table: &str) {
    let (status, body, retry) = list(t, m).await;
    let message = assert_error_about(
        &m.slug,
        (status, &body),
        Status::ServiceUnavailable,
        "tenant_unclassified_table",
    );
    let qualified = format!("{}.{table}", tenant_schema_name(m.id));
    assert!(message.contains(&qualified), "{message}");
    assert!(
        message.contains("src/tenancy/classification.rs"),
        "{message}"
    );
    assert!(retry.is_some(), "a 503 carries Retry-After");
}

async fn assert_served(t: &TestApp, m: &Merchant) {
    let (status, body, _) = list(t, m).await;
    assert_eq!(status, Status::Ok, "{}: {body}", m.slug);
}

/// Restarts posd over the same database.
async fn reboot(t: TestApp) -> TestApp {
    let TestApp { client, db } = t;
    drop(client);
    TestApp::on(db).await
}

#[rocket::async_test]
async fn a_tenant_with_an_unsafe_table_is_not_served_and_the_others_are() {
    let t = TestApp::new().await;
    let bad_schema = t.merchant("cov-bad-schema", Tier::Schema).await;
    let unforced = t.merchant("cov-unforced", Tier::Schema).await;
    let good_schema = t.merchant("cov-good-schema", Tier::Schema).await;
    let bad_dedicated = t.merchant("cov-bad-dedicated", Tier::Dedicated).await;
    let good_dedicated = t.merchant("cov-good-dedicated", Tier::Dedicated).await;
    let shared = t.shared_merchant("cov-shared").await;

    // Created by hand, without row-level security: posd must not serve it.
    for m in [&bad_schema, &bad_dedicated] {
        superuser_on(&t, m)
            .batch_execute(&format!(
                "CREATE TABLE {}.loyalty (merchant_id uuid, points int)",
                tenant_schema_name(m.id)
            ))
            .unwrap();
    }
    superuser_on(&t, &unforced)
        .batch_execute(&format!(
            "ALTER TABLE {}.products NO FORCE ROW LEVEL SECURITY",
            tenant_schema_name(unforced.id)
        ))
        .unwrap();

    // posd boots all the same, and checks the schema tenants as it does.
    let t = reboot(t).await;
    assert_blocked(&t, &bad_schema, "loyalty").await;
    assert_blocked(&t, &unforced, "products").await;
    // The dedicated tenant is checked when its pool is built.
    assert_blocked(&t, &bad_dedicated, "loyalty").await;
    assert!(
        t.app().pools.state(bad_dedicated.id).is_none(),
        "no pool kept"
    );
    for m in [&good_schema, &good_dedicated, &shared] {
        assert_served(&t, m).await;
    }
    // The guard answers from memory: the same answer again.
    assert_blocked(&t, &bad_schema, "loyalty").await;
    assert_blocked(&t, &bad_dedicated, "loyalty").await;

    let admin = t.admin_token();
    let (status, view) = t
        .get(&format!("{API}/admin/tenants/{}", bad_schema.id), &admin)
        .await;
    assert_eq!(status, Status::Ok);
    assert_eq!(
        view["unclassifiedTables"],
        json!([format!("{}.loyalty", tenant_schema_name(bad_schema.id))])
    );

    // Fixed, and a migration run over them: served again at once.
    for (m, fix) in [
        (&bad_schema, "DROP TABLE {}.loyalty"),
        (&bad_dedicated, "DROP TABLE {}.loyalty"),
        (
            &unforced,
            "ALTER TABLE {}.products FORCE ROW LEVEL SECURITY",
        ),
    ] {
        superuser_on(&t, m)
            .batch_execute(&fix.replace("{}", &tenant_schema_name(m.id)))
            .unwrap();
    }
    let run = t
        .fleet_migrate(
            &admin,
            json!({ "merchantIds": [bad_schema.id, bad_dedicated.id, unforced.id] }),
        )
        .await;
    assert_eq!(run["failed"], json!([]), "{run}");
    for m in [&bad_schema, &bad_dedicated, &unforced] {
        assert_served(&t, m).await;
    }
}

/// A tenant migration run checks the tenant it migrated.
#[rocket::async_test]
async fn a_migration_run_checks_the_tenant_it_migrated() {
    let t = TestApp::new().await;
    let m = t.merchant("cov-migrated", Tier::Schema).await;
    let other = t.merchant("cov-other", Tier::Schema).await;
    let schema = tenant_schema_name(m.id);
    let mut owner = t.db.owner();
    crate::common::unmigrate(&mut owner, &schema);
    owner
        .batch_execute(&format!(
            "UPDATE tenant_migration_state SET version = NULL WHERE merchant_id = '{}'",
            m.id
        ))
        .unwrap();
    // By the owner role, which the migration's grants can then cover.
    owner
        .batch_execute(&format!("CREATE TABLE {schema}.loyalty (id int)"))
        .unwrap();
    t.app().directory.invalidate_all();

    let (status, body, _) = list(&t, &m).await;
    assert_error(
        (status, &body),
        Status::ServiceUnavailable,
        "tenant_migrating",
    );
    let view = crate::migrations::wait_migration(&t, &m).await;
    assert_eq!(view["migrationStatus"], "ok", "{view}");
    assert_blocked(&t, &m, "loyalty").await;
    assert_served(&t, &other).await;
}
