//! Live tier moves: a trading merchant's data plane moves from one
//! placement to another (shared ⇄ schema ⇄ dedicated, or to another
//! dedicated database) while the merchant keeps selling.
//!
//! A move is a durable run in the control plane (`tenant_moves`), driven
//! one phase at a time by whichever posd process holds the merchant's
//! provisioning lock (so provisioning and deprovisioning wait too). Each
//! phase can run again after a crash: a process that dies mid-phase leaves
//! the run in that phase, and the next driver ([`Mover`], in every serving
//! posd, or `posd tenants move --wait`) runs it again.
//!
//! 1. **`prepare`**: the target schema or database is created and migrated to
//!    the tenant migrations' latest version (the source must be at it too).
//! 2. **`capture`**: a `BEFORE` row trigger on each of the merchant's source
//!    tables records the key of every row the merchant writes into
//!    `posd_move.changes` (in the source database, same transaction).
//! 3. **`copy`**: one `REPEATABLE READ` snapshot of the source, streamed
//!    table by table with binary `COPY` into the target, a large table in
//!    key ranges by several streams at once (`POSD_MOVE_COPY_STREAMS`,
//!    each importing the snapshot); a copy cut short starts over, from an
//!    emptied target.
//! 4. **`catch_up`**: rounds that apply the captured changes (see
//!    `sync::catch_up`) until one is short: a quarter of the fence's
//!    budget. Each round costs what it applies, never the merchant's size
//!    (keys are looked up one by one), so under steady writes the rounds
//!    shrink until the backlog is what arrives in such a moment.
//! 5. **`verify`**: one more round that also compares, in the same snapshot,
//!    every table's row count and content checksum at both sides.
//! 6. **`fence`**: the merchant's writes are held (an advisory lock the
//!    capture trigger takes shared in every writing transaction, the fence
//!    exclusively, waiting at most half of `POSD_MOVE_FENCE_TIMEOUT` for
//!    writes in flight), the last changes are applied, the source is marked moved (its
//!    trigger refuses every later write of the merchant: a write blocked by
//!    the fence, or begun on a stale placement, fails with 503
//!    `tenant_moved` and the client retries at the new placement), and the
//!    placement flips in one control-plane transaction (generation bump,
//!    NOTIFY to every instance, pools evicted).
//! 7. **`retire`**: once requests begun on the old placement have had time
//!    to end (a statement timeout), the source is made unreadable by the
//!    service: a schema is renamed `posd_retired_<run>` and the app role's
//!    rights revoked; the merchant's rows leave the shared tables for such a
//!    schema. It is kept for
//!    `POSD_MOVE_RETENTION`; [`cleanup`] drops it, on an operator's request.
//!
//! Until the flip, the merchant is served from the source, whatever
//! happens; a failed or cancelled run drops what it made at the target and
//! removes its triggers.
//!
//! **Why triggers, not logical decoding.** Logical decoding needs
//! `wal_level = logical`, a replication slot and the `REPLICATION`
//! attribute (or a superuser) on the source server: a merchant's own
//! database, or a managed PostgreSQL, rarely grants that, and a slot left
//! behind by a crash holds WAL without bound. A trigger needs only the
//! table's owner, which posd is wherever it runs migrations, costs the
//! moving merchant one small insert per row written (other merchants on the
//! shared tier pay one comparison), and is gone with the move. Recording
//! keys instead of rows keeps the log small and makes applying it
//! idempotent: a round copies each changed row as it stands in the round's
//! snapshot.
//!
//! Test hook: in debug builds, `POSD_MOVE_FAULT=fail:<phase>` makes every
//! move fail once `<phase>` has run; `stall:<phase>` makes the driver stop
//! there as if its process had died; `hang:copy` blocks the driver inside
//! the copy, after the first table, until the process is killed.

pub mod archive;
mod cleanup;
mod driver;
mod metrics;
mod mover;
mod sync;

pub use self::{
    cleanup::{Cleaned, cleanup},
    driver::drive,
    metrics::MoveMetrics,
    mover::Mover,
};

use diesel::{PgConnection, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};

use self::sync::SyncError;
use super::{
    SHARED_SCHEMA, Tenancy, Tier,
    migrations::latest_tenant_version,
    provisioning::{self, ByoUrl, url_for_database},
    tenant_database_name, tenant_schema_name,
};
use crate::{
    crypto::Purpose,
    db::{
        ids::{DatabaseId, MerchantId, RunId},
        kinds::{MovePhase, MoveStatus},
        platform::{
            Platform,
            merchants::Merchant,
            migration_state::MigrationState,
            moves::{Move, NewMove},
            tenant_databases::TenantDatabase,
        },
        pool,
    },
    error::ErrorCode,
    redact::redact_text,
};

/// A move to start.
#[derive(Debug)]
pub struct MoveRequest {
    pub merchant: MerchantId,
    pub tier: Tier,
    /// A database the merchant brings (tier `dedicated` only).
    pub database_url: Option<ByoUrl>,
    /// The client's run id; a new one is made when absent.
    pub run_id: Option<RunId>,
    /// The server posd creates the target database on (tier `dedicated`,
    /// none brought): a registered server's name, or `default`; the one
    /// with the most room when absent.
    pub server: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("merchant not found")]
    UnknownMerchant,
    #[error("move not found")]
    UnknownMove,
    #[error("the merchant is already on the {0} tier")]
    AlreadyThere(Tier),
    #[error("databaseUrl is only accepted with tier `dedicated`")]
    UrlNeedsDedicated,
    #[error("move {0} of this merchant is running; wait for it or cancel it")]
    InProgress(RunId),
    #[error("the merchant is being provisioned or deprovisioned")]
    Provisioning,
    #[error("runId {0} already names another move")]
    RunIdTaken(RunId),
    #[error("the merchant's tenant migrations are not current; retry once they are")]
    NotMigrated,
    #[error("the move is {0} and can no longer be cancelled")]
    NotCancellable(String),
    #[error("databaseUrl: {1}")]
    Refused(ErrorCode, String),
    #[error("server: is only accepted with tier `dedicated` and no databaseUrl")]
    ServerNeedsDedicated,
    #[error(transparent)]
    Server(#[from] super::servers::ServerError),
    /// A phase failed; `code` is stable.
    #[error("{message}")]
    Failed { code: &'static str, message: String },
    #[error("{0}")]
    Db(#[from] diesel::result::Error),
}

impl MoveError {
    fn failed(code: &'static str, message: impl std::fmt::Display) -> Self {
        MoveError::Failed {
            code,
            message: redact_text(message.to_string().trim()),
        }
    }
}

impl From<SyncError> for MoveError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Mismatch(m) => MoveError::failed("verify_mismatch", m),
            SyncError::Cancelled => MoveError::failed("cancelled", "cancelled"),
            SyncError::Pg(e) => match e.as_db_error() {
                Some(db) => MoveError::failed("move_failed", db.message()),
                None => MoveError::failed("move_failed", e),
            },
            e @ SyncError::Io(_) => MoveError::failed("move_failed", e),
        }
    }
}

impl From<postgres::Error> for MoveError {
    fn from(e: postgres::Error) -> Self {
        MoveError::from(SyncError::Pg(e))
    }
}

fn owner_conn(url: &SecretString) -> Result<PgConnection, MoveError> {
    pool::connect(url).map_err(|e| MoveError::failed("database_unavailable", e))
}

/// Records a move and returns it; a running [`Mover`] (or `posd tenants
/// move --wait`) drives it. A `run_id` that names a move of the same
/// merchant to the same tier answers that move again.
pub fn start(app: &Tenancy, req: &MoveRequest) -> Result<Move, MoveError> {
    let settings = &app.settings;
    if req.database_url.is_some() && req.tier != Tier::Dedicated {
        return Err(MoveError::UrlNeedsDedicated);
    }
    if req.server.is_some() && (req.tier != Tier::Dedicated || req.database_url.is_some()) {
        return Err(MoveError::ServerNeedsDedicated);
    }
    let mut owner = owner_conn(&settings.database_url)?;
    let p = &mut Platform::new(&mut owner);
    if let Some(id) = req.run_id
        && let Some(existing) = Move::find(p, id)?
    {
        if existing.merchant_id == req.merchant && existing.target_tier == req.tier {
            return Ok(existing);
        }
        return Err(MoveError::RunIdTaken(id));
    }
    // A running move's driver holds the lock below: say which move it is.
    if let Some(active) = Move::active(p, req.merchant)? {
        return Err(MoveError::InProgress(active.id));
    }
    if !try_lock(&mut owner, req.merchant)? {
        return Err(MoveError::Provisioning);
    }
    let started = start_in(app, &mut Platform::new(&mut owner), req);
    unlock(&mut owner, req.merchant);
    started
}

fn start_in(app: &Tenancy, p: &mut Platform<'_>, req: &MoveRequest) -> Result<Move, MoveError> {
    let settings = &app.settings;
    let merchant = match Merchant::find(p, req.merchant) {
        Ok(m) => m,
        Err(diesel::result::Error::NotFound) => return Err(MoveError::UnknownMerchant),
        Err(e) => return Err(e.into()),
    };
    if merchant.tier == req.tier && req.tier != Tier::Dedicated {
        return Err(MoveError::AlreadyThere(req.tier));
    }
    if let Some(active) = Move::active(p, merchant.id)? {
        return Err(MoveError::InProgress(active.id));
    }
    if merchant.tier != Tier::Shared {
        let version = MigrationState::find(p, merchant.id)?.and_then(|s| s.version);
        if version.as_deref() != Some(latest_tenant_version().as_str()) {
            return Err(MoveError::NotMigrated);
        }
    }
    let id = req.run_id.unwrap_or_else(|| RunId(uuid::Uuid::now_v7()));
    let target_schema = match req.tier {
        Tier::Shared => SHARED_SCHEMA.to_string(),
        Tier::Schema | Tier::Dedicated => tenant_schema_name(merchant.id),
    };
    let target_db = match (req.tier, &req.database_url) {
        (Tier::Dedicated, Some(url)) => {
            provisioning::check_brought(url, &target_schema)
                .map_err(|(code, reason)| MoveError::Refused(code, reason))?;
            Some(register(app, merchant.id, &url.database, &url.url, false)?)
        }
        (Tier::Dedicated, None) => {
            let name = move_database_name(merchant.id, id);
            let server = super::servers::choose(p, req.server.as_deref())?;
            let server_url = super::servers::owner_url(settings, p, server)?;
            let app_url = url_for_database(&server_url, Some(&settings.app_database_url), &name)
                .map_err(|e| MoveError::failed("move_failed", e))?;
            let mut db = register(app, merchant.id, &name, &app_url, true)?;
            db.server_id = server;
            Some(db)
        }
        _ => None,
    };
    let new = NewMove {
        id,
        merchant_id: merchant.id,
        source_tier: merchant.tier,
        source_schema: merchant.schema_name.clone(),
        source_database_id: merchant.database_id,
        target_tier: req.tier,
        target_schema,
        target_database_id: target_db.as_ref().map(|d| d.id),
        phase: MovePhase::Prepare,
        status: MoveStatus::Running,
    };
    let inserted = p.transaction(|p| {
        if let Some(db) = &target_db {
            TenantDatabase::insert(p, db)?;
        }
        Move::insert(p, &new)
    });
    match inserted {
        Ok(m) => {
            tracing::info!(merchant = %m.merchant_id, run = %m.id, from = %m.source_tier, to = %m.target_tier, "tier move started");
            Ok(m)
        }
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => match Move::active(p, merchant.id)? {
            Some(a) => Err(MoveError::InProgress(a.id)),
            None => Err(MoveError::RunIdTaken(id)),
        },
        Err(e) => Err(e.into()),
    }
}

/// The database a move creates for a merchant: not the provisioning name,
/// so that a move between two posd-created databases on one server works.
fn move_database_name(merchant: MerchantId, run: RunId) -> String {
    let run = run.0.simple().to_string();
    format!(
        "{}_{}",
        tenant_database_name(merchant),
        &run[run.len() - 8..]
    )
}

/// The registry row of a target database (its app URL sealed).
fn register(
    app: &Tenancy,
    merchant: MerchantId,
    name: &str,
    url: &SecretString,
    created_by_posd: bool,
) -> Result<TenantDatabase, MoveError> {
    let keyring = &app.settings.keyring;
    let sealed = keyring
        .seal(
            merchant.0,
            Purpose::TenantDatabaseUrl,
            url.expose_secret().as_bytes(),
        )
        .map_err(|e| MoveError::failed("move_failed", e))?;
    Ok(TenantDatabase {
        id: DatabaseId(uuid::Uuid::now_v7()),
        merchant_id: merchant,
        database_name: name.to_string(),
        sealed_url: sealed,
        key_id: keyring.active_key_id().to_string(),
        created_by_posd,
        server_id: None,
    })
}

/// Asks a move to stop before its flip; its driver drops the target.
pub fn cancel(app: &Tenancy, merchant: MerchantId, run: RunId) -> Result<Move, MoveError> {
    app.platform_blocking(|p| Ok(cancel_in(p, merchant, run)))
        .map_err(|e| MoveError::failed("move_failed", e))?
}

fn cancel_in(p: &mut Platform<'_>, merchant: MerchantId, run: RunId) -> Result<Move, MoveError> {
    let mv = Move::find(p, run)?
        .filter(|m| m.merchant_id == merchant)
        .ok_or(MoveError::UnknownMove)?;
    if mv.status == MoveStatus::Cancelling || Move::request_cancel(p, run)? {
        return Move::find(p, run)?.ok_or(MoveError::UnknownMove);
    }
    Err(MoveError::NotCancellable(if mv.is_active() {
        format!("past its flip (phase {})", mv.phase)
    } else {
        mv.status.to_string()
    }))
}

/// One side of a move.
struct Side {
    tier: Tier,
    schema: String,
    database: Option<TenantDatabase>,
    /// The owner URL of the server a posd-created database is on.
    server: Option<SecretString>,
}

impl Side {
    /// An owner URL for this side's database.
    fn owner_url(&self, app: &Tenancy, merchant: MerchantId) -> Result<SecretString, MoveError> {
        let settings = &app.settings;
        match &self.database {
            None => Ok(settings.database_url.clone()),
            Some(db) if db.created_by_posd => {
                let server = self.server()?;
                url_for_database(server, None, &db.database_name)
                    .map_err(|e| MoveError::failed("move_failed", e))
            }
            Some(db) => settings
                .keyring
                .open(merchant.0, Purpose::TenantDatabaseUrl, &db.sealed_url)
                .map_err(|e| MoveError::failed("move_failed", e))
                .and_then(|plain| {
                    String::from_utf8(plain.to_vec())
                        .map(SecretString::from)
                        .map_err(|_| MoveError::failed("move_failed", "a sealed URL is not UTF-8"))
                }),
        }
    }

    /// The owner URL of the server this side's posd-created database is on.
    fn server(&self) -> Result<&SecretString, MoveError> {
        self.server
            .as_ref()
            .ok_or_else(|| MoveError::failed("move_failed", "this side has no database posd made"))
    }

    fn connect(&self, app: &Tenancy, merchant: MerchantId) -> Result<postgres::Client, MoveError> {
        let url = self.owner_url(app, merchant)?;
        sync::connect(&url, merchant, &self.schema)
            .map_err(|e| MoveError::failed("database_unavailable", e))
    }
}

fn sides(app: &Tenancy, p: &mut Platform<'_>, mv: &Move) -> Result<(Side, Side), MoveError> {
    let side = |p: &mut Platform<'_>, tier, schema: &str, id: Option<DatabaseId>| {
        let database = id.map(|id| TenantDatabase::find(p, id)).transpose()?;
        let server = match &database {
            Some(db) if db.created_by_posd => {
                Some(super::servers::owner_url(&app.settings, p, db.server_id)?)
            }
            _ => None,
        };
        Ok::<_, MoveError>(Side {
            tier,
            schema: schema.to_string(),
            database,
            server,
        })
    };
    Ok((
        side(p, mv.source_tier, &mv.source_schema, mv.source_database_id)?,
        side(p, mv.target_tier, &mv.target_schema, mv.target_database_id)?,
    ))
}

/// Drops a database posd created, on its server (`server`, an owner URL).
fn drop_database(server: &SecretString, name: &str) -> Result<(), MoveError> {
    let mut conn = owner_conn(server)?;
    provisioning::drop_database(&mut conn, name)?;
    Ok(())
}

fn exec(conn: &mut PgConnection, sql: &str) -> diesel::QueryResult<()> {
    diesel::connection::SimpleConnection::batch_execute(conn, sql)
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// The merchant's provisioning lock (shared with provisioning and
/// deprovisioning), session-level.
fn try_lock(conn: &mut PgConnection, merchant: MerchantId) -> Result<bool, MoveError> {
    let l: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked")
        .bind::<diesel::sql_types::Integer, _>(provisioning::PROVISION_LOCK_CLASS)
        .bind::<diesel::sql_types::Text, _>(merchant.to_string())
        .get_result(conn)?;
    Ok(l.locked)
}

fn unlock(conn: &mut PgConnection, merchant: MerchantId) {
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(provisioning::PROVISION_LOCK_CLASS)
        .bind::<diesel::sql_types::Text, _>(merchant.to_string())
        .execute(conn);
}
