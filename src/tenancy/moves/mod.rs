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
//!    [`sync::catch_up`]) until one is short: a quarter of the fence's
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
mod metrics;
mod sync;

pub use self::metrics::MoveMetrics;

use std::{
    collections::HashSet,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use chrono::Utc;
use diesel::{PgConnection, RunQueryDsl};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};

use self::sync::{SyncError, Table};
use super::{
    SHARED_SCHEMA, Tenancy, Tier,
    classification::TENANT,
    migrations::{latest_tenant_version, migrate_tenant_schema},
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
            merchants::{Merchant, NewPlacement},
            migration_state::MigrationState,
            moves::{Move, NewMove},
            tenant_databases::TenantDatabase,
        },
        pool,
        tenant::quote_ident,
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

/// Catch-up rounds before the fence is tried anyway.
const MAX_ROUNDS: u32 = 20;
/// Catch-up rounds before rounds that stopped shrinking end the catch-up.
const MIN_ROUNDS: u32 = 3;
/// Rounds of a full batch before the fence is tried anyway (writes that
/// come in faster than a round applies them).
const MAX_BATCHES: u32 = 1_000;
/// Fence attempts before the move fails (`fence_not_acquired`).
const FENCE_ATTEMPTS: u32 = 10;

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
            let app_url = url_for_database(
                &settings.dedicated_server_url,
                Some(&settings.app_database_url),
                &name,
            )
            .map_err(|e| MoveError::failed("move_failed", e))?;
            Some(register(app, merchant.id, &name, &app_url, true)?)
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
}

impl Side {
    /// An owner URL for this side's database.
    fn owner_url(&self, app: &Tenancy, merchant: MerchantId) -> Result<SecretString, MoveError> {
        let settings = &app.settings;
        match &self.database {
            None => Ok(settings.database_url.clone()),
            Some(db) if db.created_by_posd => {
                url_for_database(&settings.dedicated_server_url, None, &db.database_name)
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

    fn connect(&self, app: &Tenancy, merchant: MerchantId) -> Result<postgres::Client, MoveError> {
        let url = self.owner_url(app, merchant)?;
        sync::connect(&url, merchant, &self.schema)
            .map_err(|e| MoveError::failed("database_unavailable", e))
    }
}

fn sides(p: &mut Platform<'_>, mv: &Move) -> Result<(Side, Side), MoveError> {
    let db = |p: &mut Platform<'_>, id: Option<DatabaseId>| -> Result<_, MoveError> {
        id.map(|id| TenantDatabase::find(p, id))
            .transpose()
            .map_err(Into::into)
    };
    Ok((
        Side {
            tier: mv.source_tier,
            schema: mv.source_schema.clone(),
            database: db(p, mv.source_database_id)?,
        },
        Side {
            tier: mv.target_tier,
            schema: mv.target_schema.clone(),
            database: db(p, mv.target_database_id)?,
        },
    ))
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

/// What the fault hook asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Fail(MovePhase),
    Stall(MovePhase),
    HangInCopy,
}

fn fault(app: &Tenancy) -> Option<Fault> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let spec = app.settings.move_fault.as_deref()?;
    let (kind, phase) = spec.split_once(':')?;
    let phase = MovePhase::parse(phase)?;
    match kind {
        "fail" => Some(Fault::Fail(phase)),
        "stall" => Some(Fault::Stall(phase)),
        "hang" if phase == MovePhase::Copy => Some(Fault::HangInCopy),
        _ => None,
    }
}

/// Drives move `run` until it ends or its process stops: `Ok(None)` when
/// another driver holds the merchant (or the fault hook stalled it).
pub fn drive(app: &Tenancy, run: RunId) -> Result<Option<Move>, MoveError> {
    let mut conn = owner_conn(&app.settings.database_url)?;
    let mv = Move::find(&mut Platform::new(&mut conn), run)?.ok_or(MoveError::UnknownMove)?;
    if !mv.is_active() {
        return Ok(Some(mv));
    }
    let merchant = mv.merchant_id;
    if !try_lock(&mut conn, merchant)? {
        return Ok(None);
    }
    let mut driver = Driver {
        app,
        conn,
        run,
        merchant,
        src: None,
        dst: None,
        tables: Vec::new(),
    };
    let result = driver.run();
    unlock(&mut driver.conn, merchant);
    result
}

struct Driver<'a> {
    app: &'a Tenancy,
    /// Holds the merchant's lock; records the run.
    conn: PgConnection,
    run: RunId,
    merchant: MerchantId,
    src: Option<postgres::Client>,
    dst: Option<postgres::Client>,
    tables: Vec<Table>,
}

enum Step {
    Next(MovePhase),
    /// The phase recorded the next one itself (the flip).
    Recorded,
    Stop,
}

impl Driver<'_> {
    fn p(&mut self) -> Platform<'_> {
        Platform::new(&mut self.conn)
    }

    fn find(&mut self) -> Result<Move, MoveError> {
        {
            let run = self.run;
            Move::find(&mut self.p(), run)?
        }
        .ok_or(MoveError::UnknownMove)
    }

    fn run(&mut self) -> Result<Option<Move>, MoveError> {
        loop {
            let mv = self.find()?;
            match mv.status {
                MoveStatus::Running => {}
                MoveStatus::Cancelling => {
                    self.discard(&mv);
                    let run = self.run;
                    let m = Move::end(&mut self.p(), run, MoveStatus::Cancelled, None, None)?;
                    tracing::info!(merchant = %self.merchant, run = %self.run, "tier move cancelled; target dropped");
                    return Ok(Some(m));
                }
                _ => return Ok(Some(mv)),
            }
            let started = Instant::now();
            let step = match self.phase(&mv) {
                Ok(step) => step,
                // Cancelled meanwhile: the loop drops the target.
                Err(_) if self.find()?.status == MoveStatus::Cancelling => continue,
                Err(e) if mv.phase < MovePhase::Retire => return self.abandon(&mv, &e).map(Some),
                Err(e) => {
                    // Served from the target already: retiring the source is
                    // retried by the next driver.
                    tracing::warn!(merchant = %self.merchant, run = %self.run, error = %e, "retiring a moved merchant's source failed; will retry");
                    let run = self.run;
                    Move::end_note(&mut self.p(), run, &e.to_string())?;
                    return Ok(None);
                }
            };
            match fault(self.app) {
                Some(Fault::Fail(ph)) if ph == mv.phase && ph < MovePhase::Fence => {
                    let e = MoveError::failed("injected_failure", format!("injected after {ph}"));
                    return self.abandon(&mv, &e).map(Some);
                }
                Some(Fault::Stall(ph)) if ph == mv.phase => return Ok(None),
                _ => {}
            }
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.app.move_metrics.phase(mv.phase, ms);
            match step {
                Step::Next(next) => {
                    let run = self.run;
                    Move::enter(&mut self.p(), run, next, Some((mv.phase, ms)))?;
                }
                Step::Recorded => {}
                Step::Stop => return Ok(None),
            }
        }
    }

    fn sides(&mut self, mv: &Move) -> Result<(Side, Side), MoveError> {
        sides(&mut self.p(), mv)
    }

    /// Connects both sides (once) and reads the tables to move.
    fn connect(&mut self, mv: &Move) -> Result<(), MoveError> {
        if self.src.is_some() && self.dst.is_some() {
            return Ok(());
        }
        let (source, target) = self.sides(mv)?;
        let mut src = source.connect(self.app, self.merchant)?;
        let dst = target.connect(self.app, self.merchant)?;
        self.tables = sync::tables(&mut src, &source.schema, TENANT)?;
        self.src = Some(src);
        self.dst = Some(dst);
        Ok(())
    }

    fn clients(&mut self) -> (&mut postgres::Client, &mut postgres::Client, &[Table]) {
        match (self.src.as_mut(), self.dst.as_mut()) {
            (Some(s), Some(d)) => (s, d, &self.tables),
            _ => unreachable!("connect() runs before every phase that copies"),
        }
    }

    fn phase(&mut self, mv: &Move) -> Result<Step, MoveError> {
        Ok(match mv.phase {
            MovePhase::Prepare => {
                self.prepare(mv)?;
                Step::Next(MovePhase::Capture)
            }
            MovePhase::Capture => {
                self.connect(mv)?;
                let (src, _, tables) = self.clients();
                sync::install_capture(src)?;
                sync::capture(src, &mv.source_schema, tables, mv.merchant_id, mv.id)?;
                Step::Next(MovePhase::Copy)
            }
            MovePhase::Copy => {
                self.copy(mv)?;
                Step::Next(MovePhase::CatchUp)
            }
            MovePhase::CatchUp => {
                self.connect(mv)?;
                let mut rounds = mv.rounds;
                if !self.converge(mv, &mut rounds)? {
                    return Ok(Step::Recorded);
                }
                Step::Next(MovePhase::Verify)
            }
            MovePhase::Verify => {
                self.connect(mv)?;
                let mut rounds = mv.rounds;
                self.round(mv, &mut rounds, true)?;
                Step::Next(MovePhase::Fence)
            }
            MovePhase::Fence => {
                self.connect(mv)?;
                // Flipped (recorded with the flip) or cancelled while
                // waiting (the loop sees it): either way, nothing to record.
                self.fence(mv)?;
                Step::Recorded
            }
            MovePhase::Retire => {
                self.retire(mv)?;
                Step::Stop
            }
            MovePhase::Retained | MovePhase::Cleaned => Step::Stop,
        })
    }

    fn prepare(&mut self, mv: &Move) -> Result<(), MoveError> {
        let (_, target) = self.sides(mv)?;
        let app = self.app;
        let settings = &app.settings;
        let fail = |e: &dyn std::fmt::Display| MoveError::failed("prepare_failed", e);
        match (&target.database, target.tier) {
            (None, Tier::Shared) => {}
            (None, _) => {
                let mut owner = owner_conn(&settings.database_url)?;
                exec(
                    &mut owner,
                    &format!(
                        "CREATE SCHEMA IF NOT EXISTS {}",
                        quote_ident(&target.schema)
                    ),
                )
                .map_err(|e| fail(&e))?;
                migrate_tenant_schema(&mut owner, &target.schema, Some(&app.app_role))
                    .map_err(|e| fail(&e))?;
            }
            (Some(db), _) => {
                if db.created_by_posd {
                    let mut server = owner_conn(&settings.dedicated_server_url)?;
                    let name = quote_ident(&db.database_name);
                    let exists: Locked = diesel::sql_query(
                        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS locked",
                    )
                    .bind::<diesel::sql_types::Text, _>(&db.database_name)
                    .get_result(&mut server)?;
                    if !exists.locked {
                        exec(&mut server, &format!("CREATE DATABASE {name}"))
                            .map_err(|e| fail(&e))?;
                    }
                    let app_role = quote_ident(&app.app_role);
                    exec(
                        &mut server,
                        &format!(
                            "REVOKE ALL ON DATABASE {name} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {app_role}"
                        ),
                    )
                    .map_err(|e| fail(&e))?;
                }
                let url = target.owner_url(app, self.merchant)?;
                let mut conn = owner_conn(&url)?;
                if db.created_by_posd {
                    exec(&mut conn, "REVOKE ALL ON SCHEMA public FROM PUBLIC")
                        .map_err(|e| fail(&e))?;
                }
                exec(
                    &mut conn,
                    &format!(
                        "CREATE SCHEMA IF NOT EXISTS {}",
                        quote_ident(&target.schema)
                    ),
                )
                .map_err(|e| fail(&e))?;
                let grant = db.created_by_posd.then_some(&*app.app_role);
                migrate_tenant_schema(&mut conn, &target.schema, grant).map_err(|e| fail(&e))?;
            }
        }
        Ok(())
    }

    fn copy(&mut self, mv: &Move) -> Result<(), MoveError> {
        self.connect(mv)?;
        let hang = fault(self.app) == Some(Fault::HangInCopy);
        let fresh = mv.target_tier != Tier::Shared;
        let (run, merchant) = (self.run, self.merchant);
        let mut control = owner_conn(&self.app.settings.database_url)?;
        // The copy's other streams, for its lifetime only.
        let (source, target) = self.sides(mv)?;
        let mut extra = Vec::new();
        for _ in 1..self.app.settings.move_copy_streams {
            extra.push((
                source.connect(self.app, merchant)?,
                target.connect(self.app, merchant)?,
            ));
        }
        let (src, dst, tables) = match (self.src.as_mut(), self.dst.as_mut()) {
            (Some(s), Some(d)) => (s, d, &self.tables),
            _ => unreachable!("connected above"),
        };
        let mut on_progress = |done: &[sync::TableProgress]| -> bool {
            let p = &mut Platform::new(&mut control);
            let json = serde_json::to_value(done).unwrap_or_default();
            if Move::progress(p, run, &json, 0, 0).is_err() {
                return false;
            }
            if hang && done.iter().filter(|t| t.rows > 0).count() == 1 {
                tracing::warn!(%run, "test hook: the move hangs inside its copy until posd is killed");
                loop {
                    std::thread::park();
                }
            }
            matches!(Move::find(p, run), Ok(Some(m)) if m.status == MoveStatus::Running)
        };
        let started = Instant::now();
        let done = sync::copy_snapshot(
            src,
            dst,
            &mut extra,
            tables,
            merchant,
            fresh,
            &mut on_progress,
        )?;
        let rows: u64 = done.iter().map(|t| t.rows).sum();
        self.app.move_metrics.copied(rows);
        tracing::info!(%merchant, %run, rows, ms = started.elapsed().as_millis(), "tier move: snapshot copied");
        Ok(())
    }

    /// Catch-up rounds until one is short: one that took at most a quarter
    /// of the fence's budget, so that the round inside the fence, which
    /// applies what came in meanwhile, is about as short. Also stops once
    /// the rounds stop shrinking (the writes come in as fast as a round
    /// applies them: more rounds would not shorten the last one), or after
    /// `MAX_ROUNDS`. `false` when the move was cancelled.
    fn converge(&mut self, mv: &Move, rounds: &mut i32) -> Result<bool, MoveError> {
        let short = self.app.settings.move_fence_timeout / 4;
        let mut last = Duration::MAX;
        let (mut whole, mut batches) = (0, 0);
        while whole < MAX_ROUNDS && batches < MAX_BATCHES {
            let started = Instant::now();
            let truncated = self.round(mv, rounds, false)?;
            let took = started.elapsed();
            if truncated {
                // A batch of a large backlog: not a measure of the rounds'
                // length yet.
                batches += 1;
            } else {
                whole += 1;
                if took <= short || (whole >= MIN_ROUNDS && took >= last) {
                    break;
                }
                last = took;
            }
            if self.find()?.status != MoveStatus::Running {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One catch-up round (the verifying one takes every change, the others
    /// a batch); whether it left changes for the next.
    fn round(&mut self, mv: &Move, rounds: &mut i32, verify: bool) -> Result<bool, MoveError> {
        let (run, merchant) = (self.run, self.merchant);
        let batch = (!verify).then_some(i64::from(self.app.settings.move_round_batch));
        let (src, dst, tables) = self.clients();
        let round = sync::catch_up(src, dst, tables, merchant, run, verify, batch)?;
        let backlog = sync::backlog(src, run, !round.truncated)?;
        self.app.move_metrics.applied(run, round.changes, backlog);
        *rounds += 1;
        let mut progress = self.find()?.tables;
        if verify && let Some(list) = progress.as_array_mut() {
            for entry in list {
                let name = entry["table"].as_str().unwrap_or_default().to_string();
                if let Some((_, c)) = round.checksums.iter().find(|(t, _)| *t == name) {
                    entry["rows"] = c.rows.into();
                    entry["total"] = c.rows.into();
                    entry["checksum"] = c.sum.clone().into();
                }
            }
        }
        Move::progress(&mut self.p(), mv.id, &progress, backlog, *rounds)?;
        Ok(round.truncated)
    }

    /// Fences the merchant, applies the last changes and flips the
    /// placement; `false` when the move was cancelled meanwhile.
    fn fence(&mut self, mv: &Move) -> Result<bool, MoveError> {
        let timeout = self.app.settings.move_fence_timeout;
        let mut rounds = mv.rounds;
        for attempt in 1..=FENCE_ATTEMPTS {
            if !self.converge(mv, &mut rounds)? {
                return Ok(false);
            }
            let (run, merchant) = (self.run, self.merchant);
            let (src, _, _) = self.clients();
            let started = Instant::now();
            // Writes wait from the moment the fence is asked for: half the
            // budget for those in flight to end, half for the last round
            // and the flip.
            if !sync::fence(src, merchant, timeout / 2)? {
                tracing::info!(%merchant, %run, attempt, "tier move: writes in flight outlasted half the fence timeout; retrying");
                continue;
            }
            let outcome = self.fenced(mv, started);
            let (src, _, _) = self.clients();
            let unfenced = sync::unfence(src, merchant);
            let fence_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
            let flipped = outcome?;
            unfenced?;
            if flipped {
                Move::set_fence_ms(&mut self.p(), run, fence_ms)?;
                self.app.move_metrics.fence(fence_ms);
                self.app.move_metrics.ended(run);
                self.app.directory.invalidate(merchant);
                self.app.pools.evict(merchant);
                tracing::info!(%merchant, %run, fence_ms, to = %mv.target_tier, "tier move: placement flipped");
            }
            return Ok(flipped);
        }
        Err(MoveError::failed(
            "fence_not_acquired",
            format!(
                "the merchant's writes in flight outlasted half the fence timeout ({}) {FENCE_ATTEMPTS} times",
                humantime::format_duration(timeout / 2)
            ),
        ))
    }

    /// Inside the fence: the last round, the source marked moved, the flip.
    fn fenced(&mut self, mv: &Move, started: Instant) -> Result<bool, MoveError> {
        let (run, merchant) = (self.run, self.merchant);
        let (src, dst, tables) = self.clients();
        sync::catch_up(src, dst, tables, merchant, run, false, None)?;
        sync::set_moved(src, run, true)?;
        let fence_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let injected = fault(self.app) == Some(Fault::Fail(MovePhase::Fence));
        let flipped = self.p().transaction(|p| -> Result<bool, MoveError> {
            let locked = Move::lock(p, run)?;
            if locked.status != MoveStatus::Running {
                return Ok(false);
            }
            Merchant::set_placement(
                p,
                merchant,
                mv.source_tier,
                &NewPlacement {
                    tier: mv.target_tier,
                    schema_name: &mv.target_schema,
                    database_id: mv.target_database_id,
                },
            )?;
            if mv.target_tier == Tier::Shared {
                MigrationState::delete(p, merchant)?;
            } else {
                MigrationState::record(
                    p,
                    &MigrationState::ok(merchant, Some(latest_tenant_version())),
                )?;
            }
            Move::flipped(p, run, fence_ms)?;
            if injected {
                // Inside the flip's transaction: it rolls back.
                return Err(MoveError::failed("injected_failure", "injected in fence"));
            }
            Ok(true)
        });
        match flipped {
            Ok(true) => Ok(true),
            other => {
                let (src, _, _) = self.clients();
                sync::set_moved(src, run, false)?;
                other
            }
        }
    }

    /// Makes the source unreadable by the service and records the move
    /// done. Every instance dropped its cached placement at the flip's
    /// NOTIFY (one whose LISTEN connection is down trusts no cached
    /// placement); requests that resolved the old placement just before the
    /// flip are given a statement timeout to finish (their writes are
    /// refused already), or the placement cache's TTL if shorter.
    fn retire(&mut self, mv: &Move) -> Result<(), MoveError> {
        let started = Instant::now();
        let settings = &self.app.settings;
        let grace = settings
            .placement_cache_ttl
            .min(settings.statement_timeout.max(Duration::from_secs(1)));
        if let Some(flipped) = mv.flipped_at
            && let Ok(left) = (flipped + chrono::Duration::from_std(grace).unwrap_or_default()
                - Utc::now())
            .to_std()
        {
            std::thread::sleep(left);
        }
        let retired = format!("posd_retired_{}", mv.id.0.simple());
        let (source, _) = self.sides(mv)?;
        let mut src = source.connect(self.app, self.merchant)?;
        let tables = sync::tables(&mut src, &source.schema, TENANT)?;
        match source.tier {
            Tier::Shared => {
                sync::retire_shared(
                    &mut src,
                    SHARED_SCHEMA,
                    &tables,
                    self.merchant,
                    mv.id,
                    &retired,
                )?;
            }
            Tier::Schema => {
                sync::retire_schema(&mut src, &source.schema, &retired, Some(&self.app.app_role))?;
            }
            Tier::Dedicated => {
                let posd_made = source.database.as_ref().is_some_and(|d| d.created_by_posd);
                let app_role = posd_made.then_some(&*self.app.app_role);
                sync::retire_schema(&mut src, &source.schema, &retired, app_role)?;
                if let (true, Some(db)) = (posd_made, &source.database) {
                    let mut server = owner_conn(&self.app.settings.dedicated_server_url)?;
                    exec(
                        &mut server,
                        &format!(
                            "REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM {}",
                            quote_ident(&db.database_name),
                            quote_ident(&self.app.app_role)
                        ),
                    )?;
                }
            }
        }
        let until = Utc::now()
            + chrono::Duration::from_std(self.app.settings.move_retention).unwrap_or_default();
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Move::retired(&mut self.p(), mv.id, &retired, until, ms)?;
        tracing::info!(merchant = %self.merchant, run = %mv.id, retired_as = %retired, "tier move done; source retired");
        Ok(())
    }

    /// Ends a run that failed before its flip: the target and the capture
    /// go, the merchant stays where it was.
    fn abandon(&mut self, mv: &Move, e: &MoveError) -> Result<Move, MoveError> {
        self.app.move_metrics.ended(mv.id);
        let (code, message) = match e {
            MoveError::Failed { code, message } => (*code, message.clone()),
            other => ("move_failed", redact_text(&other.to_string())),
        };
        tracing::warn!(merchant = %self.merchant, run = %mv.id, phase = %mv.phase, code, error = %message, "tier move failed; dropping its target");
        self.discard(mv);
        Ok(Move::end(
            &mut self.p(),
            mv.id,
            MoveStatus::Failed,
            Some(code),
            Some(&format!("{}: {message}", mv.phase)),
        )?)
    }

    /// Drops what the run made at the target and its capture at the
    /// source (best effort, logged).
    fn discard(&mut self, mv: &Move) {
        self.src = None;
        self.dst = None;
        if let Err(e) = self.try_discard(mv) {
            tracing::error!(merchant = %self.merchant, run = %mv.id, error = %e, "could not drop a failed move's target or capture; drop it by hand");
        }
    }

    fn try_discard(&mut self, mv: &Move) -> Result<(), MoveError> {
        let (source, target) = self.sides(mv)?;
        if let Ok(mut src) = source.connect(self.app, self.merchant) {
            let tables = sync::tables(&mut src, &source.schema, TENANT)?;
            sync::uncapture(&mut src, &source.schema, &tables, mv.id)?;
        }
        let settings = &self.app.settings;
        match (&target.database, target.tier) {
            (None, Tier::Shared) => {
                let mut dst = target.connect(self.app, self.merchant)?;
                let tables = sync::tables(&mut dst, &target.schema, TENANT)?;
                sync::delete_rows(&mut dst, &tables, self.merchant)?;
            }
            (None, _) => {
                let mut owner = owner_conn(&settings.database_url)?;
                exec(
                    &mut owner,
                    &format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE",
                        quote_ident(&target.schema)
                    ),
                )?;
            }
            (Some(db), _) => {
                if db.created_by_posd {
                    drop_database(self.app, &db.database_name)?;
                } else {
                    let url = target.owner_url(self.app, self.merchant)?;
                    let mut conn = owner_conn(&url)?;
                    exec(
                        &mut conn,
                        &format!(
                            "DROP SCHEMA IF EXISTS {} CASCADE",
                            quote_ident(&target.schema)
                        ),
                    )?;
                }
                TenantDatabase::delete(&mut self.p(), db.id)?;
            }
        }
        Ok(())
    }
}

/// Drops a database posd created on the dedicated server.
fn drop_database(app: &Tenancy, name: &str) -> Result<(), MoveError> {
    let mut server = owner_conn(&app.settings.dedicated_server_url)?;
    provisioning::drop_database(&mut server, name)?;
    Ok(())
}

fn exec(conn: &mut PgConnection, sql: &str) -> diesel::QueryResult<()> {
    diesel::connection::SimpleConnection::batch_execute(conn, sql)
}

/// What a cleanup did with one retained source.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cleaned {
    pub run: RunId,
    pub merchant_id: MerchantId,
    pub dropped: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Drops the retained sources of finished moves: those past their
/// retention, or (`all`) every one. Each is recorded `cleaned`.
pub fn cleanup(app: &Tenancy, all: bool) -> Result<Vec<Cleaned>, MoveError> {
    let mut conn = owner_conn(&app.settings.database_url)?;
    let mut p = Platform::new(&mut conn);
    let mut out = Vec::new();
    for mv in Move::retained(&mut p, !all)? {
        let Some(retired) = mv.retired_as.clone() else {
            continue;
        };
        let (dropped, result) = drop_retired(app, &mut p, &mv, &retired);
        if result.is_ok() {
            Move::cleaned(&mut p, mv.id)?;
        }
        let error = result.err().map(|e| redact_text(&e.to_string()));
        match &error {
            None => {
                tracing::info!(merchant = %mv.merchant_id, run = %mv.id, %dropped, "moved merchant's old placement dropped");
            }
            Some(e) => {
                tracing::warn!(merchant = %mv.merchant_id, run = %mv.id, %dropped, error = %e, "could not drop a moved merchant's old placement");
            }
        }
        out.push(Cleaned {
            run: mv.id,
            merchant_id: mv.merchant_id,
            dropped,
            error,
        });
    }
    Ok(out)
}

/// Drops one retained source: what it is, and how that went.
fn drop_retired(
    app: &Tenancy,
    p: &mut Platform<'_>,
    mv: &Move,
    retired: &str,
) -> (String, Result<(), MoveError>) {
    let source = match sides(p, mv) {
        Ok((source, _)) => source,
        Err(e) => return (format!("schema {retired}"), Err(e)),
    };
    match &source.database {
        Some(db) if db.created_by_posd => (
            format!("database {}", db.database_name),
            drop_database(app, &db.database_name)
                .and_then(|()| Ok(TenantDatabase::delete(p, db.id)?)),
        ),
        _ => (
            format!("schema {retired}"),
            source
                .owner_url(app, mv.merchant_id)
                .and_then(|url| owner_conn(&url))
                .and_then(|mut conn| {
                    Ok(exec(
                        &mut conn,
                        &format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(retired)),
                    )?)
                })
                .and_then(|()| match &source.database {
                    Some(db) => Ok(TenantDatabase::delete(p, db.id)?),
                    None => Ok(()),
                }),
        ),
    }
}

/// How often a [`Mover`] looks for moves nobody drives (a process that
/// died, a move recorded by the CLI).
const POLL: Duration = Duration::from_secs(5);

/// Drives every active move nobody else drives, in threads of its own;
/// woken at once by [`Mover::wake`]. Stops when dropped.
pub struct Mover {
    wake: Mutex<mpsc::Sender<()>>,
}

impl Mover {
    pub fn spawn(app: Tenancy) -> Mover {
        let (tx, rx) = mpsc::channel::<()>();
        let driving: Arc<Mutex<HashSet<RunId>>> = Arc::default();
        let spawned = std::thread::Builder::new()
            .name("posd-mover".into())
            .spawn(move || {
                // Listing runs through the platform pool, which needs a runtime.
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "the tier move driver cannot start");
                        return;
                    }
                };
                loop {
                    let active = rt.block_on(app.platform(|p| Ok(Move::all_active(p)?)));
                    match active {
                        Ok(moves) => {
                            for mv in moves {
                                if driving.lock().insert(mv.id) {
                                    let (app, mine) = (app.clone(), driving.clone());
                                    let spawned = std::thread::Builder::new()
                                        .name("posd-move".into())
                                        .spawn(move || {
                                            if let Err(e) = drive(&app, mv.id) {
                                                tracing::error!(run = %mv.id, error = %e, "tier move driver stopped");
                                            }
                                            mine.lock().remove(&mv.id);
                                        });
                                    if spawned.is_err() {
                                        driving.lock().remove(&mv.id);
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "could not list tier moves"),
                    }
                    match rx.recv_timeout(POLL) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the tier move driver");
        }
        Mover {
            wake: Mutex::new(tx),
        }
    }

    /// Looks for moves to drive now.
    pub fn wake(&self) {
        let _ = self.wake.lock().send(());
    }
}
