//! A database the merchant brings: what posd accepts, checked before any
//! change is made to it.
//!
//! posd accepts a `postgres://` URL naming a user and a database, reachable
//! within a few seconds, on PostgreSQL 13 or newer, whose role is neither a
//! superuser nor `BYPASSRLS` (it is the role requests are served as, so
//! row-level security must bind it), that may create the tenant schema (or
//! owns it already), in a database that is empty: no table, view, sequence
//! or foreign table outside the system schemas, except in the merchant's
//! own tenant schema (a database already carrying it is accepted, so that a
//! run can be repeated).

use diesel::{
    PgConnection, QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Bool, Integer, Text},
};
use secrecy::SecretString;

use super::{ProvisionError, steps::StepError};
use crate::{db::pool, error::ErrorCode, redact::redact_text};

/// The oldest server posd supports (`server_version_num`).
pub const MIN_SERVER_VERSION: i32 = 130_000;

/// Seconds a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT_SECS: u32 = 5;

/// A parsed `databaseUrl`.
#[derive(Debug)]
pub struct ByoUrl {
    /// The URL as posd connects with it (a connect timeout added).
    pub url: SecretString,
    /// The database it names.
    pub database: String,
    /// The role it names.
    pub user: String,
}

fn invalid(reason: &str) -> ProvisionError {
    ProvisionError::InvalidDatabaseUrl(reason.to_string())
}

/// Parses a `databaseUrl`; the error never repeats the URL.
pub fn parse(raw: &str) -> Result<ByoUrl, ProvisionError> {
    let mut url = url::Url::parse(raw.trim()).map_err(|e| {
        invalid(&format!(
            "is not a URL ({e}); expected postgres://user:password@host:port/database"
        ))
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(invalid("must be a postgres:// or postgresql:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("names no host"));
    }
    let user = url.username().to_string();
    if user.is_empty() {
        return Err(invalid("names no user"));
    }
    let database = url.path().trim_start_matches('/').to_string();
    if database.is_empty() || database.contains('/') {
        return Err(invalid("must name exactly one database in its path"));
    }
    let timeout_given = url.query_pairs().any(|(k, _)| k == "connect_timeout");
    if !timeout_given {
        url.query_pairs_mut()
            .append_pair("connect_timeout", &CONNECT_TIMEOUT_SECS.to_string());
    }
    Ok(ByoUrl {
        url: SecretString::from(url.to_string()),
        database,
        user,
    })
}

#[derive(QueryableByName)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one row of yes/no facts about the server, read in one query"
)]
struct Facts {
    #[diesel(sql_type = Integer)]
    version: i32,
    #[diesel(sql_type = Text)]
    version_text: String,
    #[diesel(sql_type = Bool)]
    superuser: bool,
    #[diesel(sql_type = Bool)]
    bypassrls: bool,
    #[diesel(sql_type = Bool)]
    can_create: bool,
    #[diesel(sql_type = Bool)]
    schema_exists: bool,
    #[diesel(sql_type = Bool)]
    schema_owned: bool,
    #[diesel(sql_type = BigInt)]
    foreign_objects: i64,
}

/// What the checks found.
pub struct Found {
    /// The merchant's tenant schema is already there (owned by the role).
    pub schema_exists: bool,
}

fn refuse(code: ErrorCode, reason: String) -> StepError {
    StepError::new("check", code, reason)
}

/// Connects and checks everything before anything is changed. Returns the
/// connection (as the merchant's role) for the following steps.
pub fn check(url: &ByoUrl, schema: &str) -> Result<(PgConnection, Found), StepError> {
    let mut conn = pool::connect(&url.url).map_err(|e| {
        refuse(
            ErrorCode::DatabaseUnreachable,
            format!(
                "cannot connect to the database: {}",
                redact_text(e.to_string().trim())
            ),
        )
    })?;
    let f: Facts = diesel::sql_query(
        "SELECT current_setting('server_version_num')::int AS version,
                current_setting('server_version') AS version_text,
                r.rolsuper AS superuser, r.rolbypassrls AS bypassrls,
                has_database_privilege(current_database(), 'CREATE') AS can_create,
                EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS schema_exists,
                EXISTS (SELECT 1 FROM pg_namespace
                        WHERE nspname = $1 AND nspowner = r.oid) AS schema_owned,
                (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
                   AND n.nspname NOT LIKE 'pg\\_toast%'
                   AND n.nspname NOT LIKE 'pg\\_temp\\_%') AS foreign_objects
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .bind::<Text, _>(schema)
    .get_result(&mut conn)
    .map_err(|e| {
        refuse(
            ErrorCode::DatabaseCheckFailed,
            format!("cannot inspect the database: {e}"),
        )
    })?;
    if f.version < MIN_SERVER_VERSION {
        return Err(refuse(
            ErrorCode::DatabaseVersionUnsupported,
            format!(
                "the server runs PostgreSQL {}; posd needs 13 or newer",
                f.version_text
            ),
        ));
    }
    if f.superuser {
        return Err(refuse(
            ErrorCode::DatabaseRoleSuperuser,
            format!(
                "role `{}` is a superuser; row-level security would not apply to it, use a role without SUPERUSER",
                url.user
            ),
        ));
    }
    if f.bypassrls {
        return Err(refuse(
            ErrorCode::DatabaseRoleBypassrls,
            format!(
                "role `{}` has BYPASSRLS; row-level security would not apply to it, use a role without it",
                url.user
            ),
        ));
    }
    if f.schema_exists && !f.schema_owned {
        return Err(refuse(
            ErrorCode::DatabasePrivilegesInsufficient,
            format!(
                "schema {schema} exists but is not owned by role `{}`",
                url.user
            ),
        ));
    }
    if !f.schema_exists && !f.can_create {
        return Err(refuse(
            ErrorCode::DatabasePrivilegesInsufficient,
            format!(
                "role `{}` may not create schemas in database `{}` (GRANT CREATE ON DATABASE ... TO ...)",
                url.user, url.database
            ),
        ));
    }
    if f.foreign_objects > 0 {
        return Err(refuse(
            ErrorCode::DatabaseNotEmpty,
            format!(
                "database `{}` holds {} table(s), view(s) or sequence(s) outside the system schemas; posd needs an empty database",
                url.database, f.foreign_objects
            ),
        ));
    }
    Ok((
        conn,
        Found {
            schema_exists: f.schema_exists,
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn urls_are_checked_and_never_echoed() {
        for bad in [
            "not a url hunter2",
            "mysql://u:hunter2@h/db",
            "postgres://h/db",
            "postgres://u:hunter2@h/",
            "postgres://u:hunter2@h/a/b",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(e, ProvisionError::InvalidDatabaseUrl(_)),
                "{bad}: {e:?}"
            );
            let message = e.to_string();
            assert!(message.starts_with("databaseUrl: "), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let ok = parse("postgres://u:pw@h:5433/shop").unwrap();
        assert_eq!((ok.user.as_str(), ok.database.as_str()), ("u", "shop"));
        assert!(ok.url.expose_secret().ends_with("?connect_timeout=5"));
        let kept = parse("postgres://u:pw@h/shop?connect_timeout=2").unwrap();
        assert!(kept.url.expose_secret().ends_with("?connect_timeout=2"));
    }
}
