//! Boot refuses to serve when classification, RLS or the app role is wrong,
//! and says what to fix.

use diesel::connection::SimpleConnection;

use crate::common::{Server, TestDb, boot, boot_with, settings_from_keys};
use serde_json::json;

#[test]
fn boot_refuses_an_unclassified_table() {
    let db = TestDb::new();
    db.owner()
        .batch_execute("CREATE TABLE loyalty_cards (id uuid PRIMARY KEY)")
        .unwrap();
    let err = boot(&db.name).err().expect("boot must fail");
    assert!(err.contains("public.loyalty_cards"), "{err}");
    assert!(err.contains("src/tenancy/classification.rs"), "{err}");
}

#[test]
fn boot_refuses_a_tenant_table_without_forced_rls() {
    let db = TestDb::new();
    db.owner()
        .batch_execute("ALTER TABLE tenant_shared.products NO FORCE ROW LEVEL SECURITY")
        .unwrap();
    let err = boot(&db.name).err().expect("boot must fail");
    assert!(err.contains("tenant_shared.products"), "{err}");
    assert!(err.contains("forced"), "{err}");
}

#[test]
fn boot_refuses_a_tenant_table_without_merchant_id() {
    let db = TestDb::new();
    db.owner()
        .batch_execute(
            "ALTER TABLE tenant_shared.products DROP CONSTRAINT products_pkey CASCADE;
             ALTER TABLE tenant_shared.products DROP COLUMN merchant_id CASCADE;",
        )
        .unwrap();
    let err = boot(&db.name).err().expect("boot must fail");
    assert!(err.contains("merchant_id"), "{err}");
}

#[test]
fn boot_refuses_a_superuser_app_role() {
    let db = TestDb::new();
    let su = Server::get().superuser_url(&db.name);
    let err = boot_with(&db.name, |s| s.app_database_url = su.into())
        .err()
        .expect("boot must fail");
    assert!(err.contains("superuser"), "{err}");
    assert!(err.contains("POSD_APP_DATABASE_URL"), "{err}");
}

#[test]
fn boot_refuses_a_bypassrls_app_role() {
    let db = TestDb::new();
    let role = format!("bypass_{}", &db.name[2..14]);
    Server::get()
        .superuser()
        .batch_execute(&format!("CREATE ROLE {role} LOGIN BYPASSRLS PASSWORD 'pw'"))
        .unwrap();
    let mut url = url::Url::parse(&Server::get().app_url(&db.name)).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some("pw")).unwrap();
    let err = boot_with(&db.name, |s| s.app_database_url = url.to_string().into()).err();
    drop(db); // takes the role's grants with it
    Server::get()
        .superuser()
        .batch_execute(&format!("DROP ROLE {role}"))
        .unwrap();
    let err = err.expect("boot must fail");
    assert!(err.contains("BYPASSRLS"), "{err}");
}

#[test]
fn configuration_errors_name_the_setting() {
    let db = TestDb::new();
    for (key, value, name) in [
        ("jwt_secret", json!("short"), "POSD_JWT_SECRET"),
        (
            "encryption_keys",
            json!("k1:bm90MzJieXRlcw=="),
            "POSD_ENCRYPTION_KEYS",
        ),
        ("database_url", json!("mysql://x@y/z"), "POSD_DATABASE_URL"),
        ("pool_size", json!(0), "POSD_POOL_SIZE"),
        (
            "placement_cache_ttl",
            json!("soon"),
            "POSD_PLACEMENT_CACHE_TTL",
        ),
    ] {
        let err = settings_from_keys(&db.name, &[(key, value)]).expect_err("must fail");
        assert!(err.contains(name), "{key}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn boot_refuses_an_app_role_that_owns_tables() {
    let db = TestDb::new();
    let mut su = diesel::Connection::establish(&Server::get().superuser_url(&db.name))
        .map(|c: diesel::PgConnection| c)
        .unwrap();
    su.batch_execute("ALTER TABLE admin_audit OWNER TO posd_test_app")
        .unwrap();
    let err = boot(&db.name).err().expect("boot must fail");
    assert!(err.contains("owns 1 table"), "{err}");
}

#[test]
fn migration_concurrency_is_a_setting_of_at_least_one() {
    let db = TestDb::new();
    let err = settings_from_keys(&db.name, &[("migration_concurrency", json!(0))])
        .expect_err("0 must be refused");
    assert!(err.contains("POSD_MIGRATION_CONCURRENCY"), "{err}");
    assert!(err.contains("at least 1"), "{err}");
    let s = settings_from_keys(&db.name, &[("migration_concurrency", json!(7))]).unwrap();
    assert_eq!(s.migration_concurrency, 7);
    let s = settings_from_keys(&db.name, &[]).unwrap();
    assert_eq!(s.migration_concurrency, 4, "the default");
}

/// A misspelt `POSD_*` variable stops posd with one line naming it instead
/// of being ignored; the same run with the name spelt right goes through.
#[test]
fn an_unknown_posd_variable_is_refused() {
    let db = TestDb::new();
    let server = Server::get();
    let migrate = |name: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_posd"))
            .arg("migrate")
            .env("POSD_DATABASE_URL", server.owner_url(&db.name))
            .env("POSD_APP_DATABASE_URL", server.app_url(&db.name))
            .env("POSD_JWT_SECRET", crate::common::JWT_SECRET)
            .env("POSD_ENCRYPTION_KEYS", server.keys())
            .env("POSD_LOG", "error")
            .env(name, "2")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for misspelt in ["POSD_MIGRATON_CONCURRENCY", "posd_pool_sise"] {
        let (ok, err) = migrate(misspelt);
        assert!(!ok, "{misspelt} was ignored: {err}");
        assert_eq!(
            err,
            format!("posd: configuration: {misspelt}: is not a setting\n"),
            "one line naming it"
        );
    }
    for known in [
        "POSD_MIGRATION_CONCURRENCY",
        "POSD_FUZZ_WORKERS",
        "ROCKET_WORKERS",
    ] {
        let (ok, err) = migrate(known);
        assert!(ok, "{known}: {err}");
    }
}
