//! Boot: everything posd checks and builds before it serves, and the
//! application state every request shares.
//!
//! Order: connect as the owner role, run platform migrations (and bring the
//! shared tier up to date), check table classification, check that the app
//! role can neither bypass RLS nor own tables, build the pools and the
//! placement directory. Any failure stops the boot with one clear line.
//! A classification problem in one tenant's own schema or database does
//! not: that tenant is not served ([`classification::Coverage`]), the others
//! are.

use std::sync::Arc;

use diesel::{PgConnection, QueryableByName, RunQueryDsl, sql_types::Bool};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    auth::{jwt::JwtKeys, revocation::StaffStates},
    config::Settings,
    db::{
        platform::{Platform, merchants::Merchant},
        pool::{self, PoolOptions},
    },
    pos::checkout::KnownProducts,
    redact::redact_url,
    tenancy::{
        SHARED_SCHEMA, Tenancy, Tier, classification, migrations,
        moves::{MoveMetrics, Mover},
        placement::Directory,
        pools::{PoolHandle, TenantPools, TenantPoolsConfig},
    },
};

/// Shared state of a running posd; cheap to clone. It composes the
/// tenancy context (settings, pools, directory...), which it derefs to,
/// with what only requests need (tokens, staff states).
#[derive(Clone)]
pub struct App {
    pub tenancy: Tenancy,
    pub jwt: Arc<JwtKeys>,
    /// Staff states checked by the `Staff` guard.
    pub staff_states: Arc<StaffStates>,
    /// Drives tier moves in the background.
    pub mover: Arc<Mover>,
    /// The products till sales last read, to write a sale in one round
    /// trip.
    pub known_products: Arc<KnownProducts>,
}

impl std::ops::Deref for App {
    type Target = Tenancy;

    fn deref(&self) -> &Tenancy {
        &self.tenancy
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot connect to {setting} ({url}): {reason}")]
    Connect {
        setting: &'static str,
        url: String,
        reason: String,
    },
    #[error("migrations: {0}")]
    Migration(#[from] migrations::MigrationError),
    #[error("table classification check failed:\n  {}", .0.join("\n  "))]
    Classification(Vec<String>),
    #[error("POSD_APP_DATABASE_URL: {0}")]
    AppRole(String),
    #[error("{0}")]
    Other(String),
}

/// The user name in a database URL.
pub fn url_user(url: &SecretString) -> Option<String> {
    url::Url::parse(url.expose_secret())
        .ok()
        .map(|u| u.username().to_string())
        .filter(|u| !u.is_empty())
}

fn connect(setting: &'static str, url: &SecretString) -> Result<PgConnection, BootError> {
    pool::connect(url).map_err(|e| BootError::Connect {
        setting,
        url: redact_url(url.expose_secret()),
        reason: crate::redact::redact_text(e.to_string().trim()),
    })
}

#[derive(QueryableByName)]
struct RoleInfo {
    #[diesel(sql_type = Bool)]
    rolsuper: bool,
    #[diesel(sql_type = Bool)]
    rolbypassrls: bool,
}

/// Runs platform migrations and brings the shared tier up to date.
pub fn migrate(settings: &Settings) -> Result<(), BootError> {
    let app_role = url_user(&settings.app_database_url)
        .ok_or_else(|| BootError::AppRole("the URL names no user".into()))?;
    let mut owner = connect("POSD_DATABASE_URL", &settings.database_url)?;
    migrations::migrate_platform(&mut owner, SHARED_SCHEMA, &app_role)?;
    Ok(())
}

/// How many relations a role owns.
#[derive(QueryableByName)]
struct Owned {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Checks, migrates and builds everything; blocking.
#[expect(
    clippy::too_many_lines,
    reason = "boot checks and builds every part in order; each step is a few lines"
)]
pub fn boot(settings: Settings) -> Result<App, BootError> {
    let app_role = url_user(&settings.app_database_url)
        .ok_or_else(|| BootError::AppRole("the URL names no user".into()))?;
    if url_user(&settings.database_url).as_deref() == Some(app_role.as_str()) {
        return Err(BootError::AppRole(format!(
            "role `{app_role}` is also the owner role (POSD_DATABASE_URL); requests must run as a role that owns nothing"
        )));
    }

    let mut app_conn = connect("POSD_APP_DATABASE_URL", &settings.app_database_url)?;
    let role: RoleInfo = diesel::sql_query(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .get_result(&mut app_conn)
    .map_err(|e| BootError::AppRole(format!("cannot read the role's attributes: {e}")))?;
    if role.rolsuper || role.rolbypassrls {
        return Err(BootError::AppRole(format!(
            "role `{app_role}` is {}; posd refuses to serve tenant traffic as a role that bypasses row-level security",
            if role.rolsuper {
                "a superuser"
            } else {
                "BYPASSRLS"
            }
        )));
    }

    let owned_tables: Owned = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
         WHERE r.rolname = current_user AND c.relkind IN ('r', 'p', 'v', 'm') \
         AND c.relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema')",
    )
    .get_result(&mut app_conn)
    .map_err(|e| BootError::AppRole(format!("cannot read what the role owns: {e}")))?;
    if owned_tables.n > 0 {
        return Err(BootError::AppRole(format!(
            "role `{app_role}` owns {} table(s) in the platform database; the serving role must own nothing (table owners can alter or disable row-level security)",
            owned_tables.n
        )));
    }

    let mut owner = connect("POSD_DATABASE_URL", &settings.database_url)?;
    migrations::migrate_platform(&mut owner, SHARED_SCHEMA, &app_role)?;
    classification::check(&mut owner, SHARED_SCHEMA).map_err(BootError::Classification)?;
    let coverage = Arc::new(classification::Coverage::default());
    if settings.tenant_migrations_at_boot {
        migrate_tenants_at_boot(&settings, &app_role, &coverage)?;
    }
    check_schema_tenants(&mut owner, &coverage)?;
    drop(owner);

    let global = pool::build(
        &settings.app_database_url,
        None,
        &PoolOptions {
            max_size: settings.pool_size,
            connect_timeout: settings.pool_connect_timeout,
            idle_timeout: Some(std::time::Duration::from_secs(600)),
            statement_timeout: settings.statement_timeout,
            thread_pool: None,
            pooler_safe: settings.transaction_pooler,
        },
        None,
    );
    if settings.transaction_pooler {
        crate::db::pooler::check_pooled_session(&mut app_conn, settings.statement_timeout);
    } else {
        crate::db::pooler::warn_if_proxied(
            &mut app_conn,
            &settings.app_database_url,
            "POSD_APP_DATABASE_URL",
        );
    }
    let directory = Arc::new(Directory::new(
        global.clone(),
        settings.placement_cache_ttl,
        settings.use_tenant_db_routing,
    ));
    if !settings.use_tenant_db_routing {
        let elsewhere = Merchant::list_placed_elsewhere(&mut Platform::new(&mut app_conn))
            .map_err(|e| BootError::Other(format!("cannot list merchants: {e}")))?;
        tracing::warn!(
            "USE_TENANT_DB_ROUTING=false: EVERY merchant is routed to the shared tier; {} merchant(s) have data elsewhere and will not see it: {}",
            elsewhere.len(),
            elsewhere
                .iter()
                .map(|m| format!("{} ({}, {})", m.slug, m.id, m.tier))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    drop(app_conn);

    let pools = TenantPools::new(
        &TenantPoolsConfig {
            pool_size: settings.tenant_pool_size,
            connect_timeout: settings.pool_connect_timeout,
            statement_timeout: settings.statement_timeout,
            budget: settings.connection_budget,
            max_pools: settings.max_tenant_pools,
            idle_timeout: settings.pool_idle_timeout,
            breaker_threshold: settings.breaker_threshold,
            breaker_cooldown: settings.breaker_cooldown,
            transaction_pooler: settings.transaction_pooler,
        },
        settings.keyring.clone(),
        global.clone(),
        coverage.clone(),
    );
    pools.start_sweeper(settings.pool_sweep_interval);
    let contexts = Arc::new(crate::tenancy::context::Contexts::new(
        settings.placement_cache_ttl,
        directory.clone(),
        usize::MAX,
    ));
    let hosts = Arc::new(crate::tenancy::hosts::Hosts::new(
        settings.base_domain.clone(),
        settings.placement_cache_ttl,
        directory.clone(),
    ));
    let fair =
        crate::tenancy::fair::FairShare::new(settings.pool_size, settings.merchant_pool_share)
            .map(Arc::new);
    let tenancy = Tenancy {
        platform: PoolHandle::new(global),
        fair,
        directory,
        contexts,
        hosts,
        pools,
        app_role: Arc::from(app_role),
        settings: Arc::new(settings),
        coverage,
        on_demand: Arc::default(),
        move_metrics: MoveMetrics::default(),
        usage: Arc::default(),
        load: Arc::default(),
        noisy: Arc::default(),
        probe: Arc::default(),
        jobs: Arc::default(),
    };
    Ok(App {
        jwt: Arc::new(JwtKeys::new(&tenancy.settings.jwt_secret)),
        staff_states: Arc::new(StaffStates::default()),
        mover: Arc::new(Mover::spawn(tenancy.clone())),
        known_products: Arc::default(),
        tenancy,
    })
}

/// Checks the tables of every schema tenant, in one catalog query; a tenant
/// that fails is blocked, not the boot. (Dedicated tenants are checked when
/// their pool is built.)
fn check_schema_tenants(
    owner: &mut PgConnection,
    coverage: &classification::Coverage,
) -> Result<(), BootError> {
    let merchants: Vec<Merchant> = Merchant::list(&mut Platform::new(owner))
        .map_err(|e| BootError::Other(format!("cannot list merchants: {e}")))?
        .into_iter()
        .filter(|m| m.tier == Tier::Schema)
        .collect();
    let schemas: Vec<String> = merchants.iter().map(|m| m.schema_name.clone()).collect();
    let mut found = classification::check_tenant_schemas(owner, &schemas).map_err(|e| {
        BootError::Classification(vec![format!("could not list the tenants' tables: {e}")])
    })?;
    for m in merchants {
        if let Some(problems) = found.remove(&m.schema_name) {
            coverage.record(m.id, m.generation, problems);
        }
    }
    Ok(())
}

/// Migrates every schema and dedicated tenant; a tenant that fails is
/// logged and left to the on-demand migration its next request starts.
fn migrate_tenants_at_boot(
    settings: &Settings,
    app_role: &str,
    coverage: &classification::Coverage,
) -> Result<(), BootError> {
    let report = crate::tenancy::fleet::migrate(
        settings,
        app_role,
        "boot",
        &crate::tenancy::fleet::Selection::default(),
        usize::try_from(settings.migration_concurrency).unwrap_or(usize::MAX),
        false,
        &|o| {
            if let Some(e) = &o.error {
                tracing::error!(merchant = %o.merchant_id, slug = %o.slug, error = %e, "tenant migration failed");
            }
            if o.status == crate::tenancy::fleet::OutcomeStatus::Migrated {
                coverage.record(o.merchant_id, o.generation, o.unclassified.clone());
            }
        },
    )
    .map_err(|e| BootError::Other(format!("{e:#}")))?;
    let r = &report.run;
    tracing::info!(
        total = r.total,
        migrated = r.migrated,
        failed = r.failed,
        up_to_date = r.skipped,
        "tenant migrations at boot"
    );
    Ok(())
}
