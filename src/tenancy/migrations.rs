//! Embedded migrations for both planes.
//!
//! Platform migrations (`migrations/`) run at boot under an advisory lock, so
//! that many instances may boot at once. Tenant migrations
//! (`tenant_migrations/`) run on one tenant schema at a time, on a dedicated
//! owner connection whose `search_path` is exactly that schema: Diesel keeps
//! `__diesel_schema_migrations` in the first schema on the path, so each
//! tenant has its own migration history.

use diesel::{PgConnection, RunQueryDsl, sql_types::Text};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::db::tenant::quote_ident;

pub const PLATFORM: EmbeddedMigrations = embed_migrations!("migrations");
pub const TENANT: EmbeddedMigrations = embed_migrations!("tenant_migrations");

/// First key of posd's two-key advisory locks ("posd" in ASCII).
pub const LOCK_CLASS: i32 = 0x706f_7364;
/// Second key for the platform migration lock.
const PLATFORM_LOCK: i32 = 0;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MigrationError(pub String);

fn sql(conn: &mut PgConnection, q: &str) -> Result<(), MigrationError> {
    diesel::sql_query(q)
        .execute(conn)
        .map(drop)
        .map_err(|e| MigrationError(format!("{q}: {e}")))
}

/// Runs pending platform migrations, then brings the shared tier's schema up
/// to date, and grants the app role what it needs. Idempotent.
pub fn migrate_platform(
    conn: &mut PgConnection,
    shared_schema: &str,
    app_role: &str,
) -> Result<(), MigrationError> {
    sql(
        conn,
        &format!("SELECT pg_advisory_lock({LOCK_CLASS}, {PLATFORM_LOCK})"),
    )?;
    let result = (|| {
        conn.run_pending_migrations(PLATFORM)
            .map_err(|e| MigrationError(format!("platform migration failed: {e}")))?;
        let app = quote_ident(app_role);
        sql(conn, &format!("GRANT USAGE ON SCHEMA public TO {app}"))?;
        sql(
            conn,
            &format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}"
            ),
        )?;
        sql(
            conn,
            &format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}"),
        )?;
        sql(
            conn,
            &format!(
                "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON __diesel_schema_migrations FROM {app}"
            ),
        )?;
        sql(
            conn,
            &format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(shared_schema)),
        )?;
        migrate_tenant_schema(conn, shared_schema, Some(app_role)).map(drop)
    })();
    let unlock = sql(
        conn,
        &format!("SELECT pg_advisory_unlock({LOCK_CLASS}, {PLATFORM_LOCK})"),
    );
    result.and(unlock)
}

/// Applies pending tenant migrations to `schema` (which must exist) and
/// grants `grant_to` (the app role) data access to it. Returns the versions
/// applied. `grant_to` is `None` where the migrating role is also the
/// serving role (a database the merchant brought): it owns the tables, and
/// forced RLS binds it all the same.
pub fn migrate_tenant_schema(
    conn: &mut PgConnection,
    schema: &str,
    grant_to: Option<&str>,
) -> Result<Vec<String>, MigrationError> {
    diesel::sql_query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(LOCK_CLASS)
        .bind::<Text, _>(schema)
        .execute(conn)
        .map_err(|e| MigrationError(format!("tenant migration lock: {e}")))?;
    let result = (|| {
        let s = quote_ident(schema);
        sql(conn, &format!("SET search_path TO {s}"))?;
        let applied = conn
            .run_pending_migrations(TENANT)
            .map_err(|e| MigrationError(format!("tenant migration failed in {schema}: {e}")))?
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        let Some(app_role) = grant_to else {
            return Ok(applied);
        };
        let app = quote_ident(app_role);
        sql(conn, &format!("GRANT USAGE ON SCHEMA {s} TO {app}"))?;
        sql(
            conn,
            &format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {app}"),
        )?;
        sql(
            conn,
            &format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {app}"),
        )?;
        sql(
            conn,
            &format!(
                "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {s}.__diesel_schema_migrations FROM {app}"
            ),
        )?;
        Ok(applied)
    })();
    let reset = sql(conn, "RESET search_path");
    let unlock = diesel::sql_query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(LOCK_CLASS)
        .bind::<Text, _>(schema)
        .execute(conn)
        .map(drop)
        .map_err(|e| MigrationError(format!("tenant migration unlock: {e}")));
    let applied = result?;
    reset?;
    unlock?;
    Ok(applied)
}

/// The newest embedded tenant migration version.
pub fn latest_tenant_version() -> String {
    static LATEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use diesel::migration::MigrationSource;
        let migrations: Vec<Box<dyn diesel::migration::Migration<diesel::pg::Pg>>> =
            MigrationSource::<diesel::pg::Pg>::migrations(&TENANT).unwrap_or_default();
        migrations
            .iter()
            .map(|m| m.name().version().to_string())
            .max()
            .unwrap_or_default()
    });
    LATEST.clone()
}
