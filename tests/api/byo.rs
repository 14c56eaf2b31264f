//! Bring-your-own databases: what is refused before anything is changed,
//! serving and migrating as the merchant's own role, and passwords that
//! never come back.

use diesel::{Connection, PgConnection, connection::SimpleConnection};
use rocket::http::Status;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, api, assert_error};
use crate::{
    common::{Server, TestApp, count, unmigrate},
    provisioning::{assert_still_shared, provision, schema_exists},
};
use posd::tenancy::{fleet, migrations::latest_tenant_version, tenant_schema_name};

/// A throw-away role and database on the test server, standing for a
/// merchant's own database. Dropped at the end (posd never drops it).
pub struct ByoDb {
    pub name: String,
    pub role: String,
    pub password: String,
}

impl ByoDb {
    /// A login role without SUPERUSER or BYPASSRLS (plus `attributes`),
    /// owning a new database when `owns` is true.
    pub fn new(attributes: &str, owns: bool) -> ByoDb {
        let id = Uuid::new_v4().simple().to_string();
        let db = ByoDb {
            name: format!("byo_{id}"),
            role: format!("byo_role_{id}"),
            password: format!("Byo-Pw-{id}"),
        };
        let mut su = Server::get().superuser();
        let defaults = ["SUPERUSER", "BYPASSRLS"]
            .iter()
            .filter(|a| !attributes.contains(*a))
            .map(|a| format!("NO{a}"))
            .collect::<Vec<_>>()
            .join(" ");
        su.batch_execute(&format!(
            "CREATE ROLE {} LOGIN {defaults} {attributes} PASSWORD '{}'",
            db.role, db.password
        ))
        .unwrap();
        let owner = if owns {
            format!(" OWNER {}", db.role)
        } else {
            String::new()
        };
        su.batch_execute(&format!("CREATE DATABASE {}{owner}", db.name))
            .unwrap();
        su.batch_execute(&format!(
            "GRANT CONNECT ON DATABASE {} TO {}",
            db.name, db.role
        ))
        .unwrap();
        db
    }

    pub fn url(&self) -> String {
        let mut u = url::Url::parse(&Server::get().superuser_url(&self.name)).unwrap();
        u.set_username(&self.role).unwrap();
        u.set_password(Some(&self.password)).unwrap();
        u.to_string()
    }

    /// A superuser connection to the database (sees through RLS).
    pub fn superuser(&self) -> PgConnection {
        PgConnection::establish(&Server::get().superuser_url(&self.name)).unwrap()
    }

    /// A connection as the merchant's role.
    pub fn as_role(&self) -> PgConnection {
        PgConnection::establish(&self.url()).unwrap()
    }
}

impl Drop for ByoDb {
    fn drop(&mut self) {
        let mut su = Server::get().superuser();
        let _ = su.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE); DROP ROLE IF EXISTS {}",
            self.name, self.role
        ));
    }
}

async fn provision_byo(t: &TestApp, m: &crate::common::Merchant, url: &str) -> (Status, Value) {
    provision(
        t,
        json!({ "merchantId": m.id.to_string(), "tier": "dedicated", "databaseUrl": url }),
    )
    .await
}

#[rocket::async_test]
async fn a_brought_database_is_served_and_migrated_as_the_merchants_role() {
    let t = TestApp::new().await;
    let byo = ByoDb::new("", true);
    let m = t.shared_merchant("byo-serve").await;
    let (status, body) = provision_byo(&t, &m, &byo.url()).await;
    assert_eq!(status, Status::Created, "{body}");
    assert_eq!(body["run"]["byo"], true);
    let schema = tenant_schema_name(m.id);
    let id = t.product(&m, "OWN-DB").await;
    let (status, got) = t.get(&format!("{API}/products/{id}"), &m.token).await;
    assert_eq!(status, Status::Ok, "{got}");

    // The row is in the merchant's database; the tables are the role's own,
    // and forced RLS still binds it when nothing is bound.
    let q = format!("SELECT count(*) AS n FROM {schema}.products");
    assert_eq!(count(&mut byo.superuser(), &q).unwrap(), 1);
    assert_eq!(count(&mut byo.as_role(), &q).unwrap(), 0);
    assert_eq!(
        count(
            &mut byo.superuser(),
            &format!(
                "SELECT count(*) AS n FROM pg_tables WHERE schemaname = '{schema}' \
                 AND tableowner = '{}'",
                byo.role
            )
        )
        .unwrap(),
        i64::try_from(posd::tenancy::classification::TENANT.len()).unwrap() + 1,
        "every tenant table and the migration table belong to the merchant's role"
    );
    let mut platform = t.db.owner();
    assert_eq!(
        count(
            &mut platform,
            &format!(
                "SELECT count(*) AS n FROM tenant_databases WHERE merchant_id = '{}' \
                 AND NOT created_by_posd AND database_name = '{}' \
                 AND position('{}' in encode(sealed_url, 'escape')) = 0",
                m.id, byo.name, byo.password
            )
        )
        .unwrap(),
        1,
        "registered as brought, sealed"
    );

    // A fleet run migrates it with its own credentials.
    unmigrate(&mut byo.as_role(), &schema);
    platform
        .batch_execute(&format!(
            "UPDATE tenant_migration_state SET version = NULL WHERE merchant_id = '{}'",
            m.id
        ))
        .unwrap();
    let app = t.app();
    let report = fleet::migrate(
        &app.settings,
        &app.app_role,
        "test",
        &fleet::Selection::default(),
        2,
        false,
        &|_| {},
    )
    .unwrap();
    assert_eq!(report.run.migrated, 1, "{:?}", report.outcomes);
    assert_eq!(
        count(
            &mut byo.superuser(),
            &format!(
                "SELECT count(*) AS n FROM {schema}.__diesel_schema_migrations WHERE version = '{}'",
                latest_tenant_version()
            )
        )
        .unwrap(),
        1
    );

    // Deprovisioning forgets it and leaves it intact, without an export.
    let (status, body) = t
        .post(
            &format!("{API}/admin/tenants/{}/deprovision", m.id),
            &t.admin_token(),
            json!({}),
        )
        .await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(body["forgotten"], json!(format!("database {}", byo.name)));
    assert_eq!(body["dropped"], Value::Null);
    assert!(schema_exists(&mut byo.superuser(), &schema));
    assert_eq!(
        count(
            &mut platform,
            &format!(
                "SELECT count(*) AS n FROM tenant_databases WHERE merchant_id = '{}'",
                m.id
            )
        )
        .unwrap(),
        0
    );
}

#[rocket::async_test]
async fn an_unfit_database_is_refused_before_anything_changes() {
    let t = TestApp::new().await;
    let superuser = ByoDb::new("SUPERUSER", true);
    let bypass = ByoDb::new("BYPASSRLS", true);
    let no_create = ByoDb::new("", false);
    let busy = ByoDb::new("", true);
    busy.as_role()
        .batch_execute("CREATE TABLE public.their_stuff (x int)")
        .unwrap();
    let cases = [
        (&superuser, "database_role_superuser"),
        (&bypass, "database_role_bypassrls"),
        (&no_create, "database_privileges_insufficient"),
        (&busy, "database_not_empty"),
    ];
    for (i, (db, code)) in cases.into_iter().enumerate() {
        let m = t.shared_merchant(&format!("byo-refused-{i}")).await;
        let (status, body) = provision_byo(&t, &m, &db.url()).await;
        assert_error((status, &body), Status::UnprocessableEntity, code);
        assert_eq!(body["run"]["failedStep"], "check");
        assert_eq!(body["run"]["errorCode"], code);
        assert!(!schema_exists(
            &mut db.superuser(),
            &tenant_schema_name(m.id)
        ));
        assert_eq!(
            count(
                &mut db.superuser(),
                "SELECT count(*) AS n FROM pg_class WHERE relname = 'their_stuff'"
            )
            .unwrap(),
            i64::from(code == "database_not_empty")
        );
        assert_still_shared(&t, &m).await;
    }
}

/// The password in a `databaseUrl` appears in no answer and no run record.
#[rocket::async_test]
async fn a_password_never_comes_back() {
    let t = TestApp::new().await;
    let byo = ByoDb::new("", true);
    let secret = "Hunter2-Sekrit-Pw";
    let mut wrong_password = url::Url::parse(&byo.url()).unwrap();
    wrong_password.set_password(Some(secret)).unwrap();
    let unreachable = format!("postgres://{}:{secret}@127.0.0.1:1/{}", byo.role, byo.name);
    let cases = [
        (unreachable, "database_unreachable"),
        (wrong_password.to_string(), "database_unreachable"),
        (
            format!("postgres://{}:{secret}@/", byo.role),
            "invalid_database_url",
        ),
        (format!("{secret} is not a URL"), "invalid_database_url"),
    ];
    for (i, (url, code)) in cases.into_iter().enumerate() {
        let m = t.shared_merchant(&format!("byo-secret-{i}")).await;
        let (status, body) = provision_byo(&t, &m, &url).await;
        assert_error((status, &body), Status::UnprocessableEntity, code);
        assert!(!body.to_string().contains(secret), "{body}");
        let stored = count(
            &mut t.db.owner(),
            &format!(
                "SELECT count(*) AS n FROM provisioning_runs WHERE merchant_id = '{}' \
                 AND position('{secret}' in coalesce(error, '')) > 0",
                m.id
            ),
        )
        .unwrap();
        assert_eq!(stored, 0);
    }
    let (_, tenants) = t.get(api!("/admin/tenants"), &t.admin_token()).await;
    assert!(!tenants.to_string().contains(secret));
}
