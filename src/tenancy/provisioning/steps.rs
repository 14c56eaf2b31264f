//! The steps of each kind of provisioning, their compensation, and the
//! fault-injection hook.
//!
//! | kind | steps |
//! |---|---|
//! | schema | `create_schema`, `migrate`, `place` |
//! | dedicated, created by posd | `create_database`, `secure_database`, `create_schema`, `migrate`, `seal`, `place` |
//! | dedicated, brought by the merchant | `check`, `create_schema`, `migrate`, `seal`, `place` |
//!
//! Every step is idempotent (`IF NOT EXISTS`, an existence check before
//! `CREATE DATABASE`), so a run cut short can run again from the start.
//! `place` writes the registry row, the migration state, the placement and
//! the run's `ready` in one control-plane transaction.
//!
//! The merchant's audit events on the shared tier (its owner may have
//! logged in) are copied to the new schema at the end of `migrate`, and
//! deleted from the shared tier in `place`'s transaction. Events written on
//! the shared tier between the two stay there, unseen.

use std::fmt::Write as _;

use diesel::{Connection, PgConnection, RunQueryDsl, sql_types::Text};
use secrecy::ExposeSecret;

use super::{Request, byo, url_for_database};
use crate::tenancy::Tenancy;
use crate::{
    crypto::Purpose,
    db::{
        ids::{DatabaseId, MerchantId, RunId, ServerId},
        kinds::ProvisioningStatus,
        platform::{
            Platform,
            merchants::{Merchant, NewPlacement},
            migration_state::MigrationState,
            runs::ProvisioningRun,
            tenant_databases::TenantDatabase,
        },
        pool,
        tenant::{TenantTx, audit, quote_ident},
    },
    error::ErrorCode,
    redact::redact_text,
    tenancy::{
        SHARED_SCHEMA, Tier, migrations::migrate_tenant_schema, tenant_database_name,
        tenant_schema_name,
    },
};

/// A failed step, a stable code and why (passwords redacted).
#[derive(Debug)]
pub(super) struct StepError {
    pub step: &'static str,
    pub code: ErrorCode,
    pub reason: String,
}

impl StepError {
    pub fn new(step: &'static str, code: ErrorCode, reason: impl std::fmt::Display) -> Self {
        StepError {
            step,
            code,
            reason: redact_text(reason.to_string().trim()),
        }
    }
}

/// Only the placement transaction turns database errors into step errors.
impl From<diesel::result::Error> for StepError {
    fn from(e: diesel::result::Error) -> Self {
        StepError::new("place", ErrorCode::ProvisioningFailed, e)
    }
}

fn at<T, E: std::fmt::Display>(step: &'static str, r: Result<T, E>) -> Result<T, StepError> {
    r.map_err(|e| StepError::new(step, ErrorCode::ProvisioningFailed, e))
}

fn exec(conn: &mut PgConnection, q: &str) -> diesel::QueryResult<()> {
    diesel::sql_query(q).execute(conn).map(drop)
}

#[derive(diesel::QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    exists: bool,
}

fn database_exists(server: &mut PgConnection, name: &str) -> diesel::QueryResult<bool> {
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
        .bind::<Text, _>(name)
        .get_result::<Exists>(server)
        .map(|e| e.exists)
}

/// Progress of one run: records each step and fires the test hook.
struct Steps<'a> {
    app: &'a Tenancy,
    run: RunId,
    merchant: MerchantId,
    schema: String,
    done: u32,
    /// The audit events copied from the shared tier, deleted there by `place`.
    carried: Vec<uuid::Uuid>,
    /// The server a database posd creates goes on (`None`: the default).
    server: Option<ServerId>,
}

impl Steps<'_> {
    /// Records on the run that `step` starts, in `status`.
    fn begin(
        &self,
        owner: &mut PgConnection,
        status: ProvisioningStatus,
        step: &'static str,
    ) -> Result<(), StepError> {
        at(
            step,
            ProvisioningRun::advance(&mut Platform::new(owner), self.run, status, step),
        )
        .map(drop)
    }

    /// Counts a completed step; fails it when the test hook says so.
    fn done(&mut self, step: &'static str) -> Result<(), StepError> {
        self.done += 1;
        if cfg!(debug_assertions) && self.app.settings.provision_fail_after_step == Some(self.done)
        {
            return Err(StepError::new(
                step,
                ErrorCode::InjectedFault,
                format!(
                    "failure injected after step {} ({step}) by POSD_PROVISION_FAIL_AFTER_STEP",
                    self.done
                ),
            ));
        }
        Ok(())
    }

    /// Flips the placement in one transaction with everything that goes
    /// with it, and marks the run ready.
    fn place(
        &mut self,
        owner: &mut PgConnection,
        tier: Tier,
        database: Option<&TenantDatabase>,
    ) -> Result<(), StepError> {
        self.begin(owner, ProvisioningStatus::Migrating, "place")?;
        owner.transaction(|c| {
            let mut p = Platform::new(c);
            if let Some(db) = database {
                TenantDatabase::insert(&mut p, db)?;
            }
            MigrationState::record(
                &mut p,
                &MigrationState::ok(
                    self.merchant,
                    Some(crate::tenancy::migrations::latest_tenant_version()),
                ),
            )?;
            Merchant::set_placement(
                &mut p,
                self.merchant,
                Tier::Shared,
                &NewPlacement {
                    tier,
                    schema_name: &self.schema,
                    database_id: database.map(|d| d.id),
                },
            )?;
            ProvisioningRun::advance(&mut p, self.run, ProvisioningStatus::Ready, "place")?;
            audit::forget_carried(c, self.merchant, SHARED_SCHEMA, &self.carried)?;
            // Inside the transaction: an injected failure here rolls back.
            self.done("place")
        })
    }

    /// Copies the merchant's audit events from the shared tier (`owner`)
    /// to its new schema (on `target`, or on `owner` when `target` is
    /// `None`: a schema tenant), keeping their ids for `place`.
    fn carry_audit(
        &mut self,
        owner: &mut PgConnection,
        target: Option<&mut PgConnection>,
    ) -> Result<(), StepError> {
        let events = at(
            "migrate",
            TenantTx::transaction(owner, self.merchant, SHARED_SCHEMA, audit::all),
        )?;
        if events.is_empty() {
            return Ok(());
        }
        let target = match target {
            Some(t) => t,
            None => owner,
        };
        at(
            "migrate",
            TenantTx::transaction(target, self.merchant, &self.schema, |tx| {
                audit::insert_all(tx, &events)
            }),
        )?;
        self.carried = events.into_iter().map(|e| e.id).collect();
        Ok(())
    }

    fn seal(&self, url: &str) -> Result<Vec<u8>, StepError> {
        at(
            "seal",
            self.app.settings.keyring.seal(
                self.merchant.0,
                Purpose::TenantDatabaseUrl,
                url.as_bytes(),
            ),
        )
    }
}

/// Runs every step of `req`; on failure, drops what the run created.
pub(super) fn run(
    app: &Tenancy,
    owner: &mut PgConnection,
    run: &ProvisioningRun,
    req: &Request,
) -> Result<(), StepError> {
    let mut s = Steps {
        app,
        run: run.id,
        merchant: req.merchant,
        schema: tenant_schema_name(req.merchant),
        done: 0,
        carried: Vec::new(),
        server: run.server_id,
    };
    match (req.tier, &req.database_url) {
        (Tier::Schema, _) => schema_tier(&mut s, owner),
        (Tier::Dedicated, None) => dedicated(&mut s, owner),
        (Tier::Dedicated, Some(url)) => brought(&mut s, owner, url),
        (Tier::Shared, _) => Err(StepError::new(
            "check",
            ErrorCode::ProvisioningFailed,
            "the shared tier is not a provisioning target",
        )),
    }
}

/// Appends a failed clean-up to the step's reason, so the run says so.
fn cleanup(result: &mut Result<(), StepError>, what: &str, done: diesel::QueryResult<()>) {
    if let (Err(e), Err(c)) = (result.as_mut(), done) {
        tracing::error!(error = %redact_text(&c.to_string()), "could not drop {what} after a failed provisioning");
        // Writing to a String cannot fail.
        let _ = write!(e.reason, "; clean-up of {what} failed, drop it by hand");
    }
}

fn schema_tier(s: &mut Steps<'_>, owner: &mut PgConnection) -> Result<(), StepError> {
    let schema = quote_ident(&s.schema);
    let mut result = (|| {
        s.begin(owner, ProvisioningStatus::Creating, "create_schema")?;
        at(
            "create_schema",
            exec(owner, &format!("CREATE SCHEMA IF NOT EXISTS {schema}")),
        )?;
        s.done("create_schema")?;
        s.begin(owner, ProvisioningStatus::Migrating, "migrate")?;
        at(
            "migrate",
            migrate_tenant_schema(owner, &s.schema, Some(&s.app.app_role)),
        )?;
        s.carry_audit(owner, None)?;
        s.done("migrate")?;
        s.place(owner, Tier::Schema, None)
    })();
    if result.is_err() {
        // The schema's name is the merchant's and the merchant is not placed
        // there: whatever is in it belongs to this run (or one cut short).
        let dropped = exec(owner, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        cleanup(&mut result, &format!("schema {}", s.schema), dropped);
    }
    result
}

fn dedicated(s: &mut Steps<'_>, owner: &mut PgConnection) -> Result<(), StepError> {
    let settings = s.app.settings.clone();
    let server_url = &at(
        "create_database",
        crate::tenancy::servers::owner_url(&s.app.settings, &mut Platform::new(owner), s.server),
    )?;
    let db_name = tenant_database_name(s.merchant);
    let db = quote_ident(&db_name);
    let mut result = (|| {
        s.begin(owner, ProvisioningStatus::Creating, "create_database")?;
        let mut server = at("create_database", pool::connect(server_url))?;
        if !at("create_database", database_exists(&mut server, &db_name))? {
            at(
                "create_database",
                exec(&mut server, &format!("CREATE DATABASE {db}")),
            )?;
        }
        s.done("create_database")?;

        s.begin(owner, ProvisioningStatus::Creating, "secure_database")?;
        let app_role = quote_ident(&s.app.app_role);
        at(
            "secure_database",
            exec(
                &mut server,
                &format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
            ),
        )?;
        at(
            "secure_database",
            exec(
                &mut server,
                &format!("GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {app_role}"),
            ),
        )?;
        drop(server);
        s.done("secure_database")?;

        s.begin(owner, ProvisioningStatus::Creating, "create_schema")?;
        let owner_url = at(
            "create_schema",
            url_for_database(server_url, None, &db_name),
        )?;
        let mut conn = at("create_schema", pool::connect(&owner_url))?;
        at(
            "create_schema",
            exec(&mut conn, "REVOKE ALL ON SCHEMA public FROM PUBLIC"),
        )?;
        at(
            "create_schema",
            exec(
                &mut conn,
                &format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&s.schema)),
            ),
        )?;
        s.done("create_schema")?;

        s.begin(owner, ProvisioningStatus::Migrating, "migrate")?;
        at(
            "migrate",
            migrate_tenant_schema(&mut conn, &s.schema, Some(&s.app.app_role)),
        )?;
        s.carry_audit(owner, Some(&mut conn))?;
        drop(conn);
        s.done("migrate")?;

        s.begin(owner, ProvisioningStatus::Migrating, "seal")?;
        let app_url = at(
            "seal",
            url_for_database(server_url, Some(&settings.app_database_url), &db_name),
        )?;
        let sealed = s.seal(app_url.expose_secret())?;
        drop(app_url);
        s.done("seal")?;

        let database = TenantDatabase {
            id: DatabaseId(uuid::Uuid::now_v7()),
            merchant_id: s.merchant,
            database_name: db_name.clone(),
            sealed_url: sealed,
            key_id: settings.keyring.active_key_id().to_string(),
            created_by_posd: true,
            server_id: s.server,
        };
        s.place(owner, Tier::Dedicated, Some(&database))
    })();
    if result.is_err() {
        // posd names this database after the merchant, which is not placed
        // on it: it belongs to this run (or one cut short).
        let dropped = pool::connect(server_url)
            .map_err(|e| diesel::result::Error::QueryBuilderError(e.to_string().into()))
            .and_then(|mut server| {
                exec(
                    &mut server,
                    &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                )
            });
        cleanup(&mut result, &format!("database {db_name}"), dropped);
    }
    result
}

fn brought(
    s: &mut Steps<'_>,
    owner: &mut PgConnection,
    url: &byo::ByoUrl,
) -> Result<(), StepError> {
    let mut conn: Option<PgConnection> = None;
    let mut created_schema = false;
    let schema = quote_ident(&s.schema);
    let mut result = (|| {
        s.begin(owner, ProvisioningStatus::Pending, "check")?;
        let (c, found) = byo::check(url, &s.schema)?;
        let c = conn.insert(c);
        s.done("check")?;

        s.begin(owner, ProvisioningStatus::Creating, "create_schema")?;
        if !found.schema_exists {
            at(
                "create_schema",
                exec(c, &format!("CREATE SCHEMA IF NOT EXISTS {schema}")),
            )?;
            created_schema = true;
        }
        s.done("create_schema")?;

        // The merchant's role runs the migrations and owns the tables;
        // forced row-level security binds it all the same.
        s.begin(owner, ProvisioningStatus::Migrating, "migrate")?;
        at("migrate", migrate_tenant_schema(c, &s.schema, None))?;
        s.carry_audit(owner, Some(c))?;
        s.done("migrate")?;

        s.begin(owner, ProvisioningStatus::Migrating, "seal")?;
        let sealed = s.seal(url.url.expose_secret())?;
        s.done("seal")?;

        let database = TenantDatabase {
            id: DatabaseId(uuid::Uuid::now_v7()),
            merchant_id: s.merchant,
            database_name: url.database.clone(),
            sealed_url: sealed,
            key_id: s.app.settings.keyring.active_key_id().to_string(),
            created_by_posd: false,
            server_id: None,
        };
        s.place(owner, Tier::Dedicated, Some(&database))
    })();
    // Never drop what the merchant had before: only a schema this call made.
    if result.is_err()
        && created_schema
        && let Some(c) = conn.as_mut()
    {
        let dropped = exec(c, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        cleanup(&mut result, &format!("schema {}", s.schema), dropped);
    }
    result
}
