//! Change capture at the source: a trigger per table writes the key of
//! every row the merchant writes to `posd_move.changes`; the fence is an
//! advisory lock those triggers take shared.

use postgres::{Client, Transaction, error::SqlState};

use super::{PgResult, Table, lit};
use crate::db::{
    ids::{MerchantId, RunId},
    tenant::quote_ident,
};

/// Advisory-lock class of the fence ("pomv"): writers of a moving merchant
/// take it shared (in the capture trigger), the fence exclusively.
pub const FENCE_LOCK_CLASS: i32 = 0x706f_6d76;

/// The schema that holds change capture in a source database.
pub const CAPTURE_SCHEMA: &str = "posd_move";

/// The capture trigger refuses a write with this mark once the merchant has
/// moved (`crate::error` answers it 503 `tenant_moved`).
use crate::error::TENANT_MOVED as MOVED_MESSAGE;

/// Installs the capture function and tables in the source database (once
/// per database; idempotent).
pub fn install_capture(c: &mut Client) -> PgResult<()> {
    let s = CAPTURE_SCHEMA;
    c.batch_execute(&format!(
        "
CREATE SCHEMA IF NOT EXISTS {s};
REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {s}.changes (
    seq     bigserial PRIMARY KEY,
    run_id  uuid NOT NULL,
    tbl     text NOT NULL,
    pk      jsonb NOT NULL
);
-- The writing transaction: a round's batch takes whole transactions.
ALTER TABLE {s}.changes ADD COLUMN IF NOT EXISTS xact xid8 NOT NULL DEFAULT pg_current_xact_id();
DROP INDEX IF EXISTS {s}.changes_run;
CREATE INDEX IF NOT EXISTS changes_run_seq ON {s}.changes (run_id, seq);
CREATE INDEX IF NOT EXISTS changes_run_xact ON {s}.changes (run_id, xact);
CREATE TABLE IF NOT EXISTS {s}.fences (
    run_id       uuid PRIMARY KEY,
    merchant_id  uuid NOT NULL,
    moved        boolean NOT NULL DEFAULT false
);
CREATE OR REPLACE FUNCTION {s}.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    merchant uuid;
    key jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN merchant := OLD.merchant_id; ELSE merchant := NEW.merchant_id; END IF;
    -- The mover's own sessions (posd.replica) write through.
    IF merchant = TG_ARGV[0]::uuid AND current_setting('posd.replica', true) IS DISTINCT FROM 'on' THEN
        PERFORM pg_advisory_xact_lock_shared({FENCE_LOCK_CLASS}, hashtext(TG_ARGV[0]));
        IF EXISTS (SELECT 1 FROM {s}.fences WHERE run_id = TG_ARGV[1]::uuid AND moved) THEN
            RAISE EXCEPTION '{MOVED_MESSAGE}: this merchant''s data has moved; retry'
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        -- The key: the row without its other columns (TG_ARGV[2]), an
        -- expression rather than a query, evaluated without a plan.
        IF TG_OP = 'DELETE' THEN
            key := to_jsonb(OLD) - TG_ARGV[2]::text[];
        ELSE
            key := to_jsonb(NEW) - TG_ARGV[2]::text[];
        END IF;
        INSERT INTO {s}.changes (run_id, tbl, pk) VALUES (TG_ARGV[1]::uuid, TG_TABLE_NAME, key);
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END
$fn$;
"
    ))
}

fn trigger_name(run: RunId) -> String {
    quote_ident(&format!("posd_move_{}", run.0.simple()))
}

/// Runs `f` (a transaction that takes table locks, such as `CREATE
/// TRIGGER` on tables other merchants write) again while it loses a
/// deadlock or times out waiting for a lock: on the shared tier, writers of
/// every merchant take the same tables in their own order.
fn retrying<T>(mut f: impl FnMut() -> PgResult<T>) -> PgResult<T> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(e)
                if attempt < 20
                    && matches!(
                        e.code(),
                        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::LOCK_NOT_AVAILABLE
                    ) =>
            {
                attempt += 1;
                tracing::debug!(attempt, error = %e, "lock conflict; retrying");
            }
            other => return other,
        }
    }
}

/// Starts capturing the merchant's writes in `schema` for `run`. Each
/// trigger is created in a transaction of its own, holding one table's lock
/// at a time (so that it can never be part of a deadlock with the writers
/// that take several): a transaction that wrote a table before its trigger
/// existed had committed when the trigger was made, so the snapshot taken
/// after all of them sees its writes.
pub fn capture(
    c: &mut Client,
    schema: &str,
    tables: &[Table],
    merchant: MerchantId,
    run: RunId,
) -> PgResult<()> {
    c.execute(
        &format!(
            "INSERT INTO {CAPTURE_SCHEMA}.fences (run_id, merchant_id) VALUES ({}, {})
             ON CONFLICT (run_id) DO NOTHING",
            lit(run),
            lit(merchant)
        ),
        &[],
    )?;
    for t in tables {
        let sql = format!(
            "CREATE OR REPLACE TRIGGER {trigger} BEFORE INSERT OR UPDATE OR DELETE ON {schema}.{table}
             FOR EACH ROW EXECUTE FUNCTION {CAPTURE_SCHEMA}.capture('{merchant}', '{run}', {rest})",
            trigger = trigger_name(run),
            schema = quote_ident(schema),
            table = t.ident(),
            rest = t.non_key_literal(),
        );
        ddl(c, &sql)?;
    }
    Ok(())
}

/// Runs one DDL statement in a transaction of its own, waiting at most a
/// little for the table's lock, again while it loses (see [`retrying`]).
fn ddl(c: &mut Client, sql: &str) -> PgResult<()> {
    retrying(|| {
        let mut tx = c.transaction()?;
        tx.batch_execute("SET LOCAL lock_timeout = '2s'")?;
        tx.batch_execute(sql)?;
        tx.commit()
    })
}

/// Stops capturing for `run` and forgets what it captured (idempotent).
pub fn uncapture(c: &mut Client, schema: &str, tables: &[Table], run: RunId) -> PgResult<()> {
    drop_triggers(c, schema, tables, run)?;
    let mut tx = c.transaction()?;
    if capture_installed(&mut tx)? {
        tx.batch_execute(&format!(
            "DELETE FROM {CAPTURE_SCHEMA}.changes WHERE run_id = {r};
             DELETE FROM {CAPTURE_SCHEMA}.fences WHERE run_id = {r}",
            r = lit(run)
        ))?;
    }
    tx.commit()
}

fn capture_installed(tx: &mut Transaction<'_>) -> PgResult<bool> {
    Ok(tx
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{CAPTURE_SCHEMA}.fences")],
        )?
        .get(0))
}

fn drop_triggers(c: &mut Client, schema: &str, tables: &[Table], run: RunId) -> PgResult<()> {
    for t in tables {
        ddl(
            c,
            &format!(
                "DROP TRIGGER IF EXISTS {} ON {}.{}",
                trigger_name(run),
                quote_ident(schema),
                t.ident()
            ),
        )?;
    }
    Ok(())
}

/// Takes the fence: waits at most `timeout` for the merchant's in-flight
/// writes to finish, and holds every new one. `Ok(false)` when the wait
/// timed out (nothing is held then).
pub fn fence(
    src: &mut Client,
    merchant: MerchantId,
    timeout: std::time::Duration,
) -> PgResult<bool> {
    src.batch_execute(&format!(
        "SET lock_timeout = {}",
        timeout.as_millis().max(1)
    ))?;
    let taken = src.execute(
        &format!("SELECT pg_advisory_lock({FENCE_LOCK_CLASS}, hashtext('{merchant}'))"),
        &[],
    );
    src.batch_execute("SET lock_timeout = 0")?;
    match taken {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Marks the source moved (or not): from then on the capture trigger
/// refuses every write of the merchant there.
pub fn set_moved(src: &mut Client, run: RunId, moved: bool) -> PgResult<()> {
    src.execute(
        &format!(
            "UPDATE {CAPTURE_SCHEMA}.fences SET moved = {moved} WHERE run_id = {}",
            lit(run)
        ),
        &[],
    )
    .map(drop)
}

/// Lifts the fence.
pub fn unfence(src: &mut Client, merchant: MerchantId) -> PgResult<()> {
    src.execute(
        &format!("SELECT pg_advisory_unlock({FENCE_LOCK_CLASS}, hashtext('{merchant}'))"),
        &[],
    )
    .map(drop)
}
