//! Tenant migrations across the fleet of schema and dedicated tenants.
//!
//! A run reads where every selected tenant stands cheaply (one query for
//! all schema tenants, the control-plane record for dedicated ones), skips
//! those already at the latest version without connecting to them, and
//! migrates the rest on a bounded number of worker threads, each tenant
//! under its own advisory lock. Every tenant's outcome is recorded in the
//! control plane as it finishes, so a run that dies half-way is resumed by
//! running it again; a failing tenant does not stop the others. After a
//! tenant is migrated its tables are checked ([`super::classification`]) on
//! the same connection, and the problems found are part of its outcome.
//!
//! A request that finds its tenant behind does not migrate it: it answers
//! 503 `tenant_migrating` and [`OnDemand`] starts a run for that tenant in
//! the background (at most one per merchant at a time; a failed run is
//! recorded like any other and retried no sooner than [`RETRY_FAILED`]
//! later).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use diesel::PgConnection;
use parking_lot::Mutex;
use secrecy::SecretString;
use serde::Serialize;

use super::{
    Tenancy, Tier, classification,
    migrations::{latest_tenant_version, migrate_tenant_schema},
    provisioning::url_for_database,
};
use crate::{
    config::Settings,
    crypto::Purpose,
    db::{
        ids::{MerchantId, RunId},
        kinds::MigrationStatus,
        platform::{
            Platform,
            merchants::Merchant,
            migration_state::{FleetRun, MigrationState, schema_versions},
            tenant_databases::TenantDatabase,
        },
        pool,
    },
    error::{ApiError, ErrorCode},
    redact::redact_text,
};

/// Which merchants a run covers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub merchants: Vec<MerchantId>,
    pub tier: Option<Tier>,
}

/// One tenant to migrate.
#[derive(Debug, Clone)]
pub struct Target {
    pub merchant: MerchantId,
    pub slug: String,
    pub tier: Tier,
    pub schema: String,
    /// The placement generation it was read at.
    pub generation: i64,
    /// The database of a dedicated tenant.
    pub database: Option<String>,
    /// The sealed URL of a database the merchant brought (migrated as the
    /// merchant's role, with the credentials it gave).
    pub brought: Option<Vec<u8>>,
    /// The registered server a posd-created database is on (`None`: the
    /// default server).
    pub server: Option<crate::db::ids::ServerId>,
    /// The version the tenant stands at.
    pub before: Option<String>,
    /// The version the control plane has on record for it.
    pub recorded: Option<String>,
}

impl Target {
    /// Already at the latest tenant migration.
    fn is_current(&self) -> bool {
        self.before.as_deref() == Some(latest_tenant_version().as_str())
    }

    /// Brings the control-plane record in line with a tenant that is already
    /// current (e.g. one migrated before records were kept).
    fn record_if_stale(&self, platform: &mut PgConnection, run: Option<RunId>) {
        if self.is_current() && self.recorded != self.before {
            record(platform, self, self.before.clone(), None, 0, run);
        }
    }
}

/// What a run did with one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Migrated,
    /// Already at the latest version: not connected to.
    UpToDate,
    /// Behind, left as it is by a dry run.
    Pending,
    /// The migration failed (`error` says why).
    Failed,
}

impl OutcomeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeStatus::Migrated => "migrated",
            OutcomeStatus::UpToDate => "up_to_date",
            OutcomeStatus::Pending => "pending",
            OutcomeStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for OutcomeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What happened to one tenant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub merchant_id: MerchantId,
    pub slug: String,
    pub tier: Tier,
    pub before: Option<String>,
    pub after: Option<String>,
    pub status: OutcomeStatus,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// What the table check found after the migration (the tenant is not
    /// served while this is not empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unclassified: Vec<String>,
    /// The placement generation the tenant was migrated at.
    #[serde(skip)]
    pub generation: i64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub run: FleetRun,
    pub outcomes: Vec<Outcome>,
}

fn connect_owner(settings: &Settings) -> anyhow::Result<PgConnection> {
    // The driver's message may hold the URL: only its redacted text goes on.
    pool::connect(&settings.database_url).map_err(|e| {
        anyhow!(
            "cannot connect to POSD_DATABASE_URL: {}",
            redact_text(&e.to_string())
        )
    })
}

/// The selected schema and dedicated tenants, with the version each stands
/// at, read without connecting to any tenant.
pub fn targets(p: &mut Platform<'_>, sel: &Selection) -> anyhow::Result<Vec<Target>> {
    let merchants: Vec<Merchant> = Merchant::list(p)
        .context("cannot list the merchants")?
        .into_iter()
        .filter(|m| sel.merchants.is_empty() || sel.merchants.contains(&m.id))
        .filter(|m| m.tier != Tier::Shared)
        .filter(|m| sel.tier.is_none_or(|t| t == m.tier))
        .collect();
    let states: HashMap<MerchantId, MigrationState> = MigrationState::all(p)
        .context("cannot read the tenants' migration state")?
        .into_iter()
        .map(|s| (s.merchant_id, s))
        .collect();
    let schemas: Vec<String> = merchants
        .iter()
        .filter(|m| m.tier == Tier::Schema)
        .map(|m| m.schema_name.clone())
        .collect();
    let live: HashMap<String, Option<String>> = schema_versions(p, &schemas)
        .context("cannot read the schema tenants' versions")?
        .into_iter()
        .collect();
    let mut out = Vec::with_capacity(merchants.len());
    for m in merchants {
        let tier = m.tier;
        let (database, brought, server, before) = match (tier, m.database_id) {
            (Tier::Dedicated, Some(db)) => {
                let db = TenantDatabase::find(p, db)
                    .with_context(|| format!("cannot read the database of merchant {}", m.id))?;
                (
                    Some(db.database_name),
                    (!db.created_by_posd).then_some(db.sealed_url),
                    db.server_id,
                    states.get(&m.id).and_then(|s| s.version.clone()),
                )
            }
            _ => (
                None,
                None,
                None,
                live.get(&m.schema_name).cloned().flatten(),
            ),
        };
        out.push(Target {
            recorded: states.get(&m.id).and_then(|s| s.version.clone()),
            merchant: m.id,
            slug: m.slug,
            tier,
            schema: m.schema_name,
            generation: m.generation,
            database,
            brought,
            server,
            before,
        });
    }
    Ok(out)
}

/// Migrates one tenant on `platform` (an owner connection to the platform
/// database, used for schema tenants and to record the outcome).
pub fn migrate_target(
    settings: &Settings,
    app_role: &str,
    platform: &mut PgConnection,
    t: &Target,
    run: Option<RunId>,
) -> Outcome {
    let started = Instant::now();
    let latest = latest_tenant_version();
    let result: Result<Vec<String>, String> = match (&t.database, t.tier) {
        (Some(db), Tier::Dedicated) => {
            // A posd-created database is migrated as the owner role and
            // granted to the app role; a brought one as the merchant's role.
            let url = match &t.brought {
                None => super::servers::owner_url(settings, &mut Platform::new(platform), t.server)
                    .map_err(|e| e.to_string())
                    .and_then(|server| {
                        url_for_database(&server, None, db).map_err(|e| e.to_string())
                    }),
                Some(sealed) => settings
                    .keyring
                    .open(t.merchant.0, Purpose::TenantDatabaseUrl, sealed)
                    .map_err(|e| e.to_string())
                    .and_then(|plain| {
                        String::from_utf8(plain.to_vec())
                            .map(SecretString::from)
                            .map_err(|_| "the sealed URL is not UTF-8".to_string())
                    }),
            };
            let grant_to = t.brought.is_none().then_some(app_role);
            url.and_then(|url| pool::connect(&url).map_err(|e| redact_text(&e.to_string())))
                .and_then(|mut conn| {
                    migrate_tenant_schema(&mut conn, &t.schema, grant_to)
                        .map_err(|e| redact_text(&e.to_string()))?;
                    Ok(check_tables(&mut conn, t))
                })
        }
        _ => migrate_tenant_schema(platform, &t.schema, Some(app_role))
            .map_err(|e| redact_text(&e.to_string()))
            .map(|_| check_tables(platform, t)),
    };
    let (result, unclassified) = match result {
        Ok(problems) => (Ok(()), problems),
        Err(e) => (Err(e), Vec::new()),
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let outcome = Outcome {
        merchant_id: t.merchant,
        slug: t.slug.clone(),
        tier: t.tier,
        before: t.before.clone(),
        after: if result.is_ok() {
            Some(latest)
        } else {
            t.before.clone()
        },
        status: if result.is_ok() {
            OutcomeStatus::Migrated
        } else {
            OutcomeStatus::Failed
        },
        error: result.err(),
        duration_ms,
        unclassified,
        generation: t.generation,
    };
    record(
        platform,
        t,
        outcome.after.clone(),
        outcome.error.clone(),
        duration_ms,
        run,
    );
    outcome
}

/// The table check of a tenant just migrated, on the connection that
/// migrated it. A check that cannot run is logged: the next check (pool
/// build, boot) covers it.
fn check_tables(conn: &mut PgConnection, t: &Target) -> Vec<String> {
    classification::check_tenant_schema(conn, &t.schema).unwrap_or_else(|e| {
        tracing::warn!(merchant = %t.merchant, error = %e, "could not check a migrated tenant's tables");
        Vec::new()
    })
}

fn record(
    platform: &mut PgConnection,
    t: &Target,
    version: Option<String>,
    error: Option<String>,
    duration_ms: u64,
    run: Option<RunId>,
) {
    let recorded = MigrationState::record(
        &mut Platform::new(platform),
        &MigrationState {
            merchant_id: t.merchant,
            version,
            status: if error.is_none() {
                MigrationStatus::Ok
            } else {
                MigrationStatus::Failed
            },
            error,
            duration_ms: i64::try_from(duration_ms).unwrap_or(i64::MAX),
            run_id: run,
        },
    );
    if let Err(e) = recorded {
        tracing::error!(merchant = %t.merchant, error = %e, "could not record a tenant migration outcome");
    }
}

/// Runs pending tenant migrations over the selection. `on_outcome` is called
/// as each tenant finishes (from worker threads).
pub fn migrate(
    settings: &Settings,
    app_role: &str,
    requested_by: &str,
    sel: &Selection,
    concurrency: usize,
    dry_run: bool,
    on_outcome: &(dyn Fn(&Outcome) + Sync),
) -> anyhow::Result<Report> {
    let planned = plan(settings, requested_by, sel, dry_run)?;
    execute(settings, app_role, planned, concurrency, on_outcome)
}

/// A fleet run recorded in the control plane with its targets, not yet
/// executed: its id can be answered before the work is done.
pub struct Planned {
    owner: PgConnection,
    run: FleetRun,
    targets: Vec<Target>,
    dry_run: bool,
}

impl Planned {
    pub fn run(&self) -> &FleetRun {
        &self.run
    }
}

/// Selects the tenants and records the run.
pub fn plan(
    settings: &Settings,
    requested_by: &str,
    sel: &Selection,
    dry_run: bool,
) -> anyhow::Result<Planned> {
    let latest = latest_tenant_version();
    let mut owner = connect_owner(settings)?;
    let targets = targets(&mut Platform::new(&mut owner), sel)?;
    let total = i32::try_from(targets.len())
        .map_err(|_| anyhow!("{} tenants are more than a run can count", targets.len()))?;
    let run = FleetRun::start(
        &mut Platform::new(&mut owner),
        requested_by,
        &latest,
        dry_run,
        total,
    )
    .context("cannot record the fleet run")?;
    Ok(Planned {
        owner,
        run,
        targets,
        dry_run,
    })
}

/// Runs a planned fleet run on `concurrency` workers and records its end.
pub fn execute(
    settings: &Settings,
    app_role: &str,
    planned: Planned,
    concurrency: usize,
    on_outcome: &(dyn Fn(&Outcome) + Sync),
) -> anyhow::Result<Report> {
    let Planned {
        mut owner,
        run,
        targets: all,
        dry_run,
    } = planned;
    let mut outcomes = Vec::with_capacity(all.len());
    let mut queue = VecDeque::new();
    for t in all {
        if !dry_run {
            t.record_if_stale(&mut owner, Some(run.id));
        }
        let current = t.is_current();
        if current || dry_run {
            let o = Outcome {
                merchant_id: t.merchant,
                slug: t.slug,
                tier: t.tier,
                after: t.before.clone(),
                status: if current {
                    OutcomeStatus::UpToDate
                } else {
                    OutcomeStatus::Pending
                },
                before: t.before,
                error: None,
                duration_ms: 0,
                unclassified: Vec::new(),
                generation: t.generation,
            };
            on_outcome(&o);
            outcomes.push(o);
        } else {
            queue.push_back(t);
        }
    }
    let workers = concurrency
        .clamp(
            1,
            usize::try_from(settings.connection_budget).unwrap_or(usize::MAX),
        )
        .min(queue.len().max(1));
    let queue = Mutex::new(queue);
    let done = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut platform = match connect_owner(settings) {
                    Ok(c) => c,
                    Err(e) => {
                        failures.lock().push(e);
                        return;
                    }
                };
                loop {
                    let Some(t) = queue.lock().pop_front() else {
                        break;
                    };
                    let o = migrate_target(settings, app_role, &mut platform, &t, Some(run.id));
                    on_outcome(&o);
                    done.lock().push(o);
                }
            });
        }
    });
    if let Some(e) = failures.into_inner().into_iter().next()
        && !queue.lock().is_empty()
    {
        return Err(e);
    }
    outcomes.extend(done.into_inner());
    // At most `total` outcomes, which fits an i32.
    let count = |s: OutcomeStatus| {
        i32::try_from(outcomes.iter().filter(|o| o.status == s).count()).unwrap_or(i32::MAX)
    };
    let run = FleetRun::finish(
        &mut Platform::new(&mut owner),
        run.id,
        count(OutcomeStatus::Migrated),
        count(OutcomeStatus::Failed),
        count(OutcomeStatus::UpToDate),
    )
    .context("cannot record the end of the fleet run")?;
    Ok(Report { run, outcomes })
}

/// How long a tenant whose on-demand migration failed is answered
/// `tenant_migration_failed` before a request starts another run.
pub const RETRY_FAILED: Duration = Duration::from_secs(30);

enum Attempt {
    Running,
    Failed(Instant),
}

/// Migrations started by requests that found their tenant behind.
#[derive(Default)]
pub struct OnDemand {
    attempts: Mutex<HashMap<MerchantId, Attempt>>,
}

impl OnDemand {
    /// Whether a run for the merchant is under way in this process.
    pub fn running(&self, merchant: MerchantId) -> bool {
        matches!(self.attempts.lock().get(&merchant), Some(Attempt::Running))
    }

    /// Starts a background run for a behind tenant unless one is running
    /// or one failed less than [`RETRY_FAILED`] ago; answers what its
    /// request gets meanwhile (503).
    pub fn start(&self, app: &Tenancy, merchant: MerchantId) -> ApiError {
        {
            let mut attempts = self.attempts.lock();
            match attempts.get(&merchant) {
                Some(Attempt::Running) => return migrating(),
                Some(Attempt::Failed(at)) if at.elapsed() < RETRY_FAILED => {
                    let left = RETRY_FAILED.saturating_sub(at.elapsed());
                    return ApiError::unavailable(
                        ErrorCode::TenantMigrationFailed,
                        "upgrading this merchant's data failed; an operator has been alerted, try again later",
                        left.as_secs() + 1,
                    );
                }
                _ => {}
            }
            attempts.insert(merchant, Attempt::Running);
        }
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            let ok = run_on_demand(&app, merchant);
            // The directory first: a request that sees the run gone must
            // read the new state, not start another run.
            app.directory.invalidate(merchant);
            let mut attempts = app.on_demand.attempts.lock();
            if ok {
                attempts.remove(&merchant);
            } else {
                attempts.insert(merchant, Attempt::Failed(Instant::now()));
            }
        });
        migrating()
    }
}

fn migrating() -> ApiError {
    ApiError::unavailable(
        ErrorCode::TenantMigrating,
        "this merchant's data is being upgraded; try again shortly",
        2,
    )
}

/// One tenant's on-demand run, recorded as a fleet run of one
/// (`requested_by` = `on-demand`). Whether it succeeded.
fn run_on_demand(app: &Tenancy, merchant: MerchantId) -> bool {
    let sel = Selection {
        merchants: vec![merchant],
        tier: None,
    };
    match migrate(
        &app.settings,
        &app.app_role,
        "on-demand",
        &sel,
        1,
        false,
        &|_| {},
    ) {
        Ok(report) => {
            let mut ok = true;
            for o in &report.outcomes {
                match &o.error {
                    Some(e) => {
                        ok = false;
                        tracing::error!(%merchant, run = %report.run.id, error = %e, "on-demand tenant migration failed; not serving the tenant");
                    }
                    None => {
                        tracing::info!(%merchant, run = %report.run.id, before = ?o.before, after = ?o.after, status = %o.status, "tenant migrated on demand");
                    }
                }
                apply_check(app, o);
            }
            ok
        }
        Err(e) => {
            tracing::error!(%merchant, error = %e, "on-demand tenant migration could not run; not serving the tenant");
            false
        }
    }
}

/// Records the table check that followed a tenant's migration: a blocked
/// dedicated tenant's pool is dropped, so that it is checked again when it
/// is rebuilt.
pub fn apply_check(app: &Tenancy, o: &Outcome) {
    if o.status != OutcomeStatus::Migrated {
        return;
    }
    let blocked = app
        .coverage
        .record(o.merchant_id, o.generation, o.unclassified.clone());
    if blocked.is_some() && o.tier == Tier::Dedicated {
        app.pools.evict(o.merchant_id);
    }
}

/// Checks again the tables of the blocked tenants a run found up to date
/// (a migrated tenant was checked as part of its migration), so that an
/// operator who fixed a tenant's tables gets it served at once by running a
/// migration for it: schema tenants in one catalog query, dedicated tenants
/// by rebuilding their pool (blocking).
pub fn recheck_blocked(app: &Tenancy, outcomes: &[Outcome]) {
    let placements: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status == OutcomeStatus::UpToDate && app.coverage.get(o.merchant_id).is_some())
        .filter_map(|o| match app.directory.resolve(o.merchant_id) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(merchant = %o.merchant_id, error = %e, "cannot re-check a blocked tenant");
                None
            }
        })
        .collect();
    let schemas: Vec<String> = placements
        .iter()
        .filter(|p| p.tier == Tier::Schema)
        .map(|p| p.schema.to_string())
        .collect();
    if !schemas.is_empty() {
        let found = app
            .platform
            .run_blocking(app.settings.pool_connect_timeout, |c| {
                Ok(classification::check_tenant_schemas(c, &schemas)?)
            })
            .map_err(|e| e.to_string());
        match found {
            Ok(mut found) => {
                for p in placements.iter().filter(|p| p.tier == Tier::Schema) {
                    let problems = found.remove(p.schema.as_ref()).unwrap_or_default();
                    app.coverage.record(p.merchant, p.generation, problems);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot re-check blocked schema tenants"),
        }
    }
    for p in placements.iter().filter(|p| p.tier == Tier::Dedicated) {
        app.pools.evict(p.merchant);
        // Building the pool checks the tables and records the result.
        if let Err(e) = app.pools.get_or_build(p) {
            tracing::info!(merchant = %p.merchant, error = %e, "blocked dedicated tenant re-checked");
        }
    }
}
