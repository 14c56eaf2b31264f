//! Moving a new merchant off the shared tier: onto its own schema in the
//! platform database, or onto a database posd creates.
//!
//! Atomicity comes from the step sequence, not from one transaction
//! (`CREATE DATABASE` cannot run in one): each step is idempotent, the
//! placement flips last in one control-plane transaction, and on any
//! failure everything the run created is dropped and the run records the
//! failed step and the reason (passwords redacted). One provisioning per
//! merchant runs at a time (advisory lock); a second gets 409.

use diesel::{
    Connection, PgConnection, RunQueryDsl,
    sql_types::{Bool, Text},
};
use secrecy::{ExposeSecret, SecretString};

use super::{
    SHARED_SCHEMA, Tier, crypto::Purpose, migrations::migrate_tenant_schema, tenant_database_name,
    tenant_schema_name,
};
use crate::{
    app::App,
    db::{
        ids::{DatabaseId, MerchantId},
        platform::{
            Platform,
            merchants::{Merchant, NewPlacement},
            migration_state::MigrationState,
            runs::ProvisioningRun,
            tenant_databases::TenantDatabase,
        },
        pool,
        tenant::{TenantTx, quote_ident},
    },
    error::{ApiError, ApiResult},
    redact::redact_text,
};

/// Second advisory-lock key space: one lock per merchant.
const PROVISION_LOCK_CLASS: i32 = 0x706f_7365;

/// The outcome of a provisioning call.
pub enum Outcome {
    Ready(ProvisioningRun),
    Failed(ProvisioningRun),
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// A failed step and why.
struct StepError {
    step: &'static str,
    reason: String,
}

fn step<T, E: std::fmt::Display>(step: &'static str, r: Result<T, E>) -> Result<T, StepError> {
    r.map_err(|e| StepError {
        step,
        reason: redact_text(e.to_string().trim()),
    })
}

fn exec(conn: &mut PgConnection, q: &str) -> diesel::QueryResult<()> {
    diesel::sql_query(q).execute(conn).map(drop)
}

/// Provisions `merchant` onto `target` (blocking).
pub fn provision(app: &App, merchant: MerchantId, target: Tier) -> ApiResult<Outcome> {
    if target == Tier::Shared {
        return Err(ApiError::invalid("tier", "must be `schema` or `dedicated`"));
    }
    let mut owner = pool::connect(&app.settings.database_url).map_err(ApiError::internal)?;
    let lock: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked")
        .bind::<diesel::sql_types::Integer, _>(PROVISION_LOCK_CLASS)
        .bind::<Text, _>(merchant.to_string())
        .get_result(&mut owner)?;
    if !lock.locked {
        return Err(ApiError::conflict(
            "provisioning_in_progress",
            "this merchant is already being provisioned",
        ));
    }
    let result = provision_locked(app, &mut owner, merchant, target);
    // The lock is session-level; closing the connection releases it too.
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(PROVISION_LOCK_CLASS)
        .bind::<Text, _>(merchant.to_string())
        .execute(&mut owner);
    result
}

fn provision_locked(
    app: &App,
    owner: &mut PgConnection,
    merchant: MerchantId,
    target: Tier,
) -> ApiResult<Outcome> {
    let mut pconn = app.platform.pool.get()?;
    let mut platform = Platform::new(&mut pconn);
    let m = Merchant::find(&mut platform, merchant).map_err(ApiError::or_not_found("merchant"))?;
    if m.tier != Tier::Shared.as_str() {
        return Err(ApiError::conflict(
            "already_provisioned",
            format!(
                "the merchant is on the {} tier; to move it use POST /api/v2/POS/admin/tenants/{merchant}/move",
                m.tier
            ),
        ));
    }
    let has_data = owner.transaction(|c| TenantTx::bind(c, merchant, SHARED_SCHEMA)?.has_data())?;
    if has_data {
        return Err(ApiError::conflict(
            "tenant_has_data",
            format!(
                "the merchant already has data on the shared tier; provisioning is for new merchants, move existing ones with POST /api/v2/POS/admin/tenants/{merchant}/move"
            ),
        ));
    }
    let run = ProvisioningRun::start(&mut platform, merchant, target.as_str())?;
    let schema = tenant_schema_name(merchant);
    let result = if target == Tier::Schema {
        schema_tier(app, owner, &mut platform, &run, &schema)
    } else {
        dedicated_tier(app, &mut platform, &run, &schema)
    };
    match result {
        Ok(()) => {
            let run = ProvisioningRun::advance(&mut platform, run.id, "ready")?;
            app.directory.invalidate(merchant);
            app.pools.evict(merchant);
            tracing::info!(%merchant, tier = target.as_str(), "merchant provisioned");
            Ok(Outcome::Ready(run))
        }
        Err(e) => {
            tracing::warn!(%merchant, step = e.step, reason = %e.reason, "provisioning failed; cleaned up");
            let run = ProvisioningRun::fail(&mut platform, run.id, e.step, &e.reason)?;
            Ok(Outcome::Failed(run))
        }
    }
}

fn schema_tier(
    app: &App,
    owner: &mut PgConnection,
    platform: &mut Platform<'_>,
    run: &ProvisioningRun,
    schema: &str,
) -> Result<(), StepError> {
    let merchant = run.merchant_id;
    let steps = (|| {
        step(
            "creating",
            ProvisioningRun::advance(platform, run.id, "creating"),
        )?;
        step(
            "creating",
            exec(
                owner,
                &format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)),
            ),
        )?;
        step(
            "migrating",
            ProvisioningRun::advance(platform, run.id, "migrating"),
        )?;
        step(
            "migrating",
            migrate_tenant_schema(owner, schema, &app.app_role),
        )?;
        step(
            "placing",
            platform.transaction(|p| {
                record_migrated(p, merchant)?;
                Merchant::set_placement(
                    p,
                    merchant,
                    Tier::Shared.as_str(),
                    &NewPlacement {
                        tier: Tier::Schema.as_str(),
                        schema_name: schema,
                        database_id: None,
                    },
                )
            }),
        )
        .map(drop)
    })();
    if steps.is_err() {
        let _ = exec(
            owner,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(schema)),
        );
    }
    steps
}

fn dedicated_tier(
    app: &App,
    platform: &mut Platform<'_>,
    run: &ProvisioningRun,
    schema: &str,
) -> Result<(), StepError> {
    let merchant = run.merchant_id;
    let db_name = tenant_database_name(merchant);
    let server_url = &app.settings.dedicated_server_url;
    let mut server = step("creating", pool::connect(server_url))?;
    let mut created = false;
    let steps = (|| {
        step(
            "creating",
            ProvisioningRun::advance(platform, run.id, "creating"),
        )?;
        let db = quote_ident(&db_name);
        let app_role = quote_ident(&app.app_role);
        step(
            "creating",
            exec(&mut server, &format!("CREATE DATABASE {db}")),
        )?;
        created = true;
        step(
            "creating",
            exec(
                &mut server,
                &format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
            ),
        )?;
        step(
            "creating",
            exec(
                &mut server,
                &format!("GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {app_role}"),
            ),
        )?;

        step(
            "migrating",
            ProvisioningRun::advance(platform, run.id, "migrating"),
        )?;
        let owner_url = step("migrating", url_for_database(server_url, None, &db_name))?;
        let mut conn = step("migrating", pool::connect(&owner_url))?;
        step(
            "migrating",
            exec(&mut conn, "REVOKE ALL ON SCHEMA public FROM PUBLIC"),
        )?;
        step(
            "migrating",
            exec(
                &mut conn,
                &format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)),
            ),
        )?;
        step(
            "migrating",
            migrate_tenant_schema(&mut conn, schema, &app.app_role),
        )?;
        drop(conn);

        let app_url = step(
            "placing",
            url_for_database(server_url, Some(&app.settings.app_database_url), &db_name),
        )?;
        let sealed = step(
            "placing",
            app.settings.keyring.seal(
                merchant.0,
                Purpose::TenantDatabaseUrl,
                app_url.expose_secret().as_bytes(),
            ),
        )?;
        let database = TenantDatabase {
            id: DatabaseId(uuid::Uuid::now_v7()),
            merchant_id: merchant,
            database_name: db_name.clone(),
            sealed_url: sealed,
            key_id: app.settings.keyring.active_key_id().to_string(),
            created_by_posd: true,
        };
        step(
            "placing",
            platform.transaction(|p| {
                TenantDatabase::insert(p, &database)?;
                record_migrated(p, merchant)?;
                Merchant::set_placement(
                    p,
                    merchant,
                    Tier::Shared.as_str(),
                    &NewPlacement {
                        tier: Tier::Dedicated.as_str(),
                        schema_name: schema,
                        database_id: Some(database.id),
                    },
                )
            }),
        )
        .map(drop)
    })();
    if steps.is_err() && created {
        let _ = exec(
            &mut server,
            &format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&db_name)
            ),
        );
    }
    steps
}

/// Records that a freshly provisioned tenant stands at the latest version.
fn record_migrated(p: &mut Platform<'_>, merchant: MerchantId) -> diesel::QueryResult<()> {
    MigrationState::record(
        p,
        &MigrationState {
            merchant_id: merchant,
            version: Some(super::migrations::latest_tenant_version()),
            status: "ok".into(),
            error: None,
            duration_ms: 0,
            run_id: None,
        },
    )
}

/// `server`'s URL pointed at database `db`, with the credentials of
/// `credentials` when given (host, port and options stay the server's).
pub fn url_for_database(
    server: &SecretString,
    credentials: Option<&SecretString>,
    db: &str,
) -> Result<SecretString, String> {
    let mut url = url::Url::parse(server.expose_secret())
        .map_err(|e| format!("the server URL is not a URL: {e}"))?;
    if let Some(c) = credentials {
        let c = url::Url::parse(c.expose_secret())
            .map_err(|e| format!("the credentials URL is not a URL: {e}"))?;
        url.set_username(c.username())
            .map_err(|_| "cannot set the user name".to_string())?;
        url.set_password(c.password())
            .map_err(|_| "cannot set the password".to_string())?;
    }
    url.set_path(&format!("/{db}"));
    Ok(SecretString::from(url.to_string()))
}
