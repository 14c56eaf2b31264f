//! One move driven through its phases, each recorded before the next
//! begins, by the process that holds the merchant's provisioning lock.

use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::{PgConnection, RunQueryDsl};

use super::{
    Locked, MoveError, Side, drop_database, exec, owner_conn, sides,
    sync::{self, Table},
    try_lock, unlock,
};
use crate::{
    db::{
        ids::{MerchantId, RunId},
        kinds::{MovePhase, MoveStatus},
        platform::{
            Platform,
            merchants::{Merchant, NewPlacement},
            migration_state::MigrationState,
            moves::Move,
            tenant_databases::TenantDatabase,
        },
        tenant::quote_ident,
    },
    redact::redact_text,
    tenancy::{
        SHARED_SCHEMA, Tenancy, Tier,
        classification::TENANT,
        migrations::{latest_tenant_version, migrate_tenant_schema},
    },
};

/// Catch-up rounds before the fence is tried anyway.
const MAX_ROUNDS: u32 = 20;
/// Catch-up rounds before rounds that stopped shrinking end the catch-up.
const MIN_ROUNDS: u32 = 3;
/// Rounds of a full batch before the fence is tried anyway (writes that
/// come in faster than a round applies them).
const MAX_BATCHES: u32 = 1_000;
/// Fence attempts before the move fails (`fence_not_acquired`).
const FENCE_ATTEMPTS: u32 = 10;

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
        sides(self.app, &mut self.p(), mv)
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
                    let mut server = owner_conn(target.server()?)?;
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
                    let mut server = owner_conn(source.server()?)?;
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
                    drop_database(target.server()?, &db.database_name)?;
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
