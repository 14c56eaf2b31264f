//! Moving a new merchant off the shared tier: onto its own schema in the
//! platform database, onto a database posd creates, or onto a database the
//! merchant brings (`databaseUrl`).
//!
//! Atomicity comes from the step sequence, not from one transaction
//! (`CREATE DATABASE` cannot run in one): each step is idempotent, the
//! placement flips last in one control-plane transaction (which also marks
//! the run `ready`), and on any failure everything the run created is
//! dropped and the run records the failed step, a stable code and the
//! reason (passwords redacted). One provisioning per merchant runs at a
//! time (advisory lock); a second gets 409.
//!
//! Runs are durable and keyed by a run id the client may choose: calling
//! again with the id of a run that ended answers that run again; with the
//! id of a run that was cut short (posd stopped mid-way) it resumes the
//! run, re-running its idempotent steps.
//!
//! Test hook: in debug builds, `POSD_PROVISION_FAIL_AFTER_STEP=N` makes every
//! run fail once N of its steps have completed (N equal to the number of
//! steps fails inside the final placement transaction, before it commits).
//! Release builds refuse to start with it set.

mod byo;
pub mod deprovision;
mod steps;

use diesel::{
    PgConnection, RunQueryDsl,
    sql_types::{Bool, Text},
};
use secrecy::{ExposeSecret, SecretString};

pub use self::byo::ByoUrl;
use super::{SHARED_SCHEMA, Tenancy, Tier};
use crate::{
    db::{
        ids::{MerchantId, RunId},
        kinds::{MovePhase, MoveStatus},
        platform::{Platform, merchants::Merchant, moves::Move, runs::ProvisioningRun},
        pool,
        tenant::{TenantTx, quote_ident},
    },
    error::{ApiError, ErrorCode},
};

/// Second advisory-lock key space ("pose"): one lock per merchant, taken by
/// provisioning and deprovisioning.
pub const PROVISION_LOCK_CLASS: i32 = 0x706f_7365;

/// What to provision.
#[derive(Debug)]
pub struct Request {
    pub merchant: MerchantId,
    pub tier: Tier,
    /// The client's run id; a new one is made when absent.
    pub run_id: Option<RunId>,
    /// A database the merchant brings (tier `dedicated` only).
    pub database_url: Option<ByoUrl>,
    /// The server posd creates the database on (tier `dedicated`, none
    /// brought): a registered server's name, or `default`; by room when
    /// absent ([`super::servers::choose`]).
    pub server: Option<String>,
}

/// The outcome of a provisioning call.
#[derive(Debug)]
pub enum Outcome {
    /// This call placed the merchant.
    Ready(ProvisioningRun),
    /// This call's run failed; the merchant stays on the shared tier.
    Failed(ProvisioningRun),
    /// The run id names a run that had already ended: that run, unchanged.
    Replayed(ProvisioningRun),
}

/// Why a provisioning or deprovisioning call is refused, or fails before a
/// run can record it (a run's own failure is [`Outcome::Failed`]). The text
/// is the message a client reads; the API gives each variant its status and
/// code (`crate::api::errors`).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("tier: must be `schema` or `dedicated`")]
    SharedTarget,
    #[error("databaseUrl: is only accepted with tier `dedicated`")]
    DatabaseUrlNotDedicated,
    /// An unusable `databaseUrl`; the reason never repeats the URL.
    #[error("databaseUrl: {0}")]
    InvalidDatabaseUrl(String),
    #[error("merchant not found")]
    MerchantNotFound,
    #[error("this merchant is already being provisioned or deprovisioned")]
    InProgress,
    #[error(
        "tier move {run} of this merchant is {status} (phase {phase}); wait for it or cancel it"
    )]
    MoveInProgress {
        run: RunId,
        status: MoveStatus,
        phase: MovePhase,
    },
    #[error(
        "runId {run} already names a run for merchant {merchant} onto tier {tier}{}; use a new runId",
        own_database(*.byo)
    )]
    RunIdMismatch {
        run: RunId,
        merchant: MerchantId,
        tier: Tier,
        byo: bool,
    },
    #[error(
        "the merchant is on the {tier} tier; to move it use POST /api/v2/POS/admin/tenants/{merchant}/move"
    )]
    AlreadyProvisioned { merchant: MerchantId, tier: Tier },
    #[error(
        "the merchant already has data on the shared tier; provisioning is for new merchants, move existing ones with POST /api/v2/POS/admin/tenants/{merchant}/move"
    )]
    TenantHasData { merchant: MerchantId },
    #[error("the merchant is on the shared tier; there is nothing to deprovision")]
    NotProvisioned,
    #[error(
        "no export of this merchant's {tier} data exists; export it first (GET /api/v2/POS/admin/tenants/{merchant}/export) or send {{\"force\": true}} to drop it without one"
    )]
    ExportRequired { merchant: MerchantId, tier: Tier },
    /// The owner connection to the platform database did not open.
    #[error("cannot connect to POSD_DATABASE_URL: {0}")]
    Connect(diesel::ConnectionError),
    #[error("a finished run vanished")]
    RunVanished,
    /// What the app-role pool of the platform database answered (busy,
    /// unavailable): already the answer.
    #[error(transparent)]
    Platform(ApiError),
    #[error("server: is only accepted with tier `dedicated` and no databaseUrl")]
    ServerNotDedicated,
    #[error(transparent)]
    Server(#[from] super::servers::ServerError),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

impl ProvisionError {
    /// [`ProvisionError::MoveInProgress`] for `mv`.
    pub(crate) fn moving(mv: &Move) -> Self {
        ProvisionError::MoveInProgress {
            run: mv.id,
            status: mv.status,
            phase: mv.phase,
        }
    }
}

fn own_database(byo: bool) -> &'static str {
    if byo { " (own database)" } else { "" }
}

/// The merchant's control-plane row, or [`ProvisionError::MerchantNotFound`].
fn find_merchant(p: &mut Platform<'_>, merchant: MerchantId) -> Result<Merchant, ProvisionError> {
    Merchant::find(p, merchant).map_err(|e| match e {
        diesel::result::Error::NotFound => ProvisionError::MerchantNotFound,
        e => e.into(),
    })
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Provisions `merchant` onto `target` with a new run (blocking).
pub fn provision(
    app: &Tenancy,
    merchant: MerchantId,
    target: Tier,
) -> Result<Outcome, ProvisionError> {
    run(
        app,
        &Request {
            merchant,
            tier: target,
            run_id: None,
            database_url: None,
            server: None,
        },
    )
}

/// Parses a `databaseUrl` ([`ProvisionError::InvalidDatabaseUrl`] when
/// unusable).
pub fn parse_database_url(raw: &str) -> Result<ByoUrl, ProvisionError> {
    byo::parse(raw)
}

/// Takes the merchant's provisioning lock on `owner`; `false` when another
/// call holds it.
fn try_lock(owner: &mut PgConnection, merchant: MerchantId) -> diesel::QueryResult<bool> {
    let lock: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked")
        .bind::<diesel::sql_types::Integer, _>(PROVISION_LOCK_CLASS)
        .bind::<Text, _>(merchant.to_string())
        .get_result(owner)?;
    Ok(lock.locked)
}

fn unlock(owner: &mut PgConnection, merchant: MerchantId) {
    // The lock is session-level; closing the connection releases it too.
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(PROVISION_LOCK_CLASS)
        .bind::<Text, _>(merchant.to_string())
        .execute(owner);
}

/// Runs `f` holding the merchant's provisioning lock on a fresh owner
/// connection to the platform database; [`ProvisionError::InProgress`] when
/// the lock is held.
fn with_lock<T>(
    app: &Tenancy,
    merchant: MerchantId,
    f: impl FnOnce(&mut PgConnection) -> Result<T, ProvisionError>,
) -> Result<T, ProvisionError> {
    let mut owner = pool::connect(&app.settings.database_url).map_err(ProvisionError::Connect)?;
    if !try_lock(&mut owner, merchant)? {
        return Err(ProvisionError::InProgress);
    }
    let result = f(&mut owner);
    unlock(&mut owner, merchant);
    result
}

/// A repeated run id must describe the same provisioning.
fn check_same(run: &ProvisioningRun, req: &Request) -> Result<(), ProvisionError> {
    if run.merchant_id != req.merchant
        || run.target_tier != req.tier
        || run.byo != req.database_url.is_some()
    {
        return Err(ProvisionError::RunIdMismatch {
            run: run.id,
            merchant: run.merchant_id,
            tier: run.target_tier,
            byo: run.byo,
        });
    }
    Ok(())
}

/// Provisions as `req` says (blocking).
pub fn run(app: &Tenancy, req: &Request) -> Result<Outcome, ProvisionError> {
    if req.tier == Tier::Shared {
        return Err(ProvisionError::SharedTarget);
    }
    if req.database_url.is_some() && req.tier != Tier::Dedicated {
        return Err(ProvisionError::DatabaseUrlNotDedicated);
    }
    if req.server.is_some() && (req.tier != Tier::Dedicated || req.database_url.is_some()) {
        return Err(ProvisionError::ServerNotDedicated);
    }
    // A finished run is answered again without waiting for the lock.
    if let Some(id) = req.run_id {
        let existing = app
            .platform_blocking(|p| Ok(ProvisioningRun::find(p, id)?))
            .map_err(ProvisionError::Platform)?;
        if let Some(r) = existing {
            check_same(&r, req)?;
            if r.is_terminal() {
                return Ok(Outcome::Replayed(r));
            }
        }
    }
    // A move's driver holds the lock below: say it is a move.
    let merchant = req.merchant;
    if let Some(mv) = app
        .platform_blocking(move |p| Ok(Move::active(p, merchant)?))
        .map_err(ProvisionError::Platform)?
    {
        return Err(ProvisionError::moving(&mv));
    }
    with_lock(app, req.merchant, |owner| provision_locked(app, owner, req))
}

fn provision_locked(
    app: &Tenancy,
    owner: &mut PgConnection,
    req: &Request,
) -> Result<Outcome, ProvisionError> {
    let merchant = req.merchant;
    let mut platform = Platform::new(owner);
    let resumed = match req.run_id {
        Some(id) => match ProvisioningRun::find(&mut platform, id)? {
            Some(r) if r.is_terminal() => return Ok(Outcome::Replayed(r)),
            other => other,
        },
        None => None,
    };
    let m = find_merchant(&mut platform, merchant)?;
    if let Some(mv) = Move::active(&mut platform, merchant)? {
        return Err(ProvisionError::moving(&mv));
    }
    if m.tier != Tier::Shared {
        let e = ProvisionError::AlreadyProvisioned {
            merchant,
            tier: m.tier,
        };
        if let Some(r) = &resumed {
            ProvisioningRun::fail(
                &mut platform,
                r.id,
                "check",
                ErrorCode::AlreadyProvisioned.as_str(),
                &e.to_string(),
            )?;
        }
        return Err(e);
    }
    // The audit trail is not trading data: a new merchant's owner has
    // logged in. Its events are carried to the new placement (`steps`).
    let trading: Vec<&str> = super::classification::TENANT
        .iter()
        .copied()
        .filter(|t| *t != "audit_events")
        .collect();
    let has_data =
        TenantTx::transaction(owner, merchant, SHARED_SCHEMA, |tx| tx.has_data(&trading))?;
    let mut platform = Platform::new(owner);
    if has_data {
        return Err(ProvisionError::TenantHasData { merchant });
    }
    let server = if req.tier == Tier::Dedicated && req.database_url.is_none() {
        super::servers::choose(&mut platform, req.server.as_deref())?
    } else {
        None
    };
    let run = match resumed {
        Some(r) => {
            tracing::info!(%merchant, run = %r.id, step = ?r.step, "resuming a provisioning run that was cut short");
            r
        }
        None => ProvisioningRun::start(
            &mut platform,
            req.run_id.unwrap_or_else(|| RunId(uuid::Uuid::now_v7())),
            merchant,
            req.tier,
            req.database_url.is_some(),
            server,
        )
        // Another call started a run for the merchant meanwhile.
        .map_err(|e| match e {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            ) => ProvisionError::InProgress,
            e => e.into(),
        })?,
    };
    let result = steps::run(app, owner, &run, req);
    let mut platform = Platform::new(owner);
    match result {
        Ok(()) => {
            let run =
                ProvisioningRun::find(&mut platform, run.id)?.ok_or(ProvisionError::RunVanished)?;
            app.directory.invalidate(merchant);
            app.pools.evict(merchant);
            tracing::info!(%merchant, tier = req.tier.as_str(), byo = run.byo, "merchant provisioned");
            Ok(Outcome::Ready(run))
        }
        Err(e) => {
            tracing::warn!(%merchant, step = e.step, code = e.code.as_str(), reason = %e.reason, "provisioning failed; cleaned up");
            let run =
                ProvisioningRun::fail(&mut platform, run.id, e.step, e.code.as_str(), &e.reason)?;
            Ok(Outcome::Failed(run))
        }
    }
}

/// Why [`url_for_database`] cannot build a URL.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("the server URL is not a URL: {0}")]
    Server(url::ParseError),
    #[error("the credentials URL is not a URL: {0}")]
    Credentials(url::ParseError),
    #[error("cannot set the user name")]
    User,
    #[error("cannot set the password")]
    Password,
}

/// The longest [`drop_database`] waits for closing sessions of other
/// roles to end.
const DROP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(diesel::QueryableByName)]
struct Lingering {
    #[diesel(sql_type = Bool)]
    lingering: bool,
}

/// Drops a database posd created, ending the sessions still on it. A
/// session of a role the connection's own may not signal (the service's
/// pool of the merchant, or a mover's stream, just closed and not yet
/// gone) is waited for, at most `DROP_WAIT`: `WITH (FORCE)` would refuse
/// to end it.
pub fn drop_database(conn: &mut PgConnection, name: &str) -> diesel::QueryResult<()> {
    let started = std::time::Instant::now();
    loop {
        let l: Lingering = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE datname = $1 AND pid <> pg_backend_pid()
                               AND NOT pg_has_role(usesysid, 'MEMBER')) AS lingering",
        )
        .bind::<Text, _>(name)
        .get_result(conn)?;
        if !l.lingering || started.elapsed() >= DROP_WAIT {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    diesel::sql_query(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(name)
    ))
    .execute(conn)
    .map(drop)
}

/// `server`'s URL pointed at database `db`, with the credentials of
/// `credentials` when given (host, port and options stay the server's).
pub fn url_for_database(
    server: &SecretString,
    credentials: Option<&SecretString>,
    db: &str,
) -> Result<SecretString, UrlError> {
    let mut url = url::Url::parse(server.expose_secret()).map_err(UrlError::Server)?;
    if let Some(c) = credentials {
        let c = url::Url::parse(c.expose_secret()).map_err(UrlError::Credentials)?;
        url.set_username(c.username())
            .map_err(|()| UrlError::User)?;
        url.set_password(c.password())
            .map_err(|()| UrlError::Password)?;
    }
    url.set_path(&format!("/{db}"));
    Ok(SecretString::from(url.to_string()))
}

/// Checks a database the merchant brings as a tier move's target (the same
/// checks as provisioning's); `Err((code, reason))` when refused. A move
/// also refuses a database that already holds the merchant's schema:
/// whatever is there is not the move's to replace or drop.
pub fn check_brought(url: &ByoUrl, schema: &str) -> Result<(), (ErrorCode, String)> {
    match byo::check(url, schema) {
        Ok((_, found)) if found.schema_exists => Err((
            ErrorCode::TargetNotEmpty,
            format!("the database already has schema {schema}; drop it or bring another database"),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err((e.code, e.reason)),
    }
}
