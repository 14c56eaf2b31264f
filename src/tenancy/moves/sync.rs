//! The SQL of a move: change capture at the source, the snapshot copy, the
//! catch-up rounds, the checksums, the fence. Everything here runs on
//! owner connections of the `postgres` crate (its `COPY` streams), one to
//! the source and one to the target, each bound to the merchant for the
//! session (`posd.merchant_id`, so forced row-level security lets the owner
//! see and write the merchant's rows and no other's) and to its schema.
//!
//! Row data travels source → posd → target as binary `COPY`, one table at a
//! time, through a buffer of a few kilobytes: never the whole merchant in
//! memory. Values in SQL text below are UUIDs posd made or parsed and
//! identifiers from the catalog, quoted; nothing comes from a request.

use std::{collections::HashMap, io};

use postgres::{Client, IsolationLevel, NoTls, Transaction, error::SqlState};
use secrecy::{ExposeSecret, SecretString};

use crate::db::{
    ids::{MerchantId, RunId},
    tenant::{quote_ident, quote_literal},
};

/// Advisory-lock class of the fence ("pomv"): writers of a moving merchant
/// take it shared (in the capture trigger), the fence exclusively.
pub const FENCE_LOCK_CLASS: i32 = 0x706f_6d76;

/// The schema that holds change capture in a source database.
pub const CAPTURE_SCHEMA: &str = "posd_move";

/// The capture trigger refuses a write with this mark once the merchant has
/// moved (`crate::error` answers it 503 `tenant_moved`).
use crate::error::TENANT_MOVED as MOVED_MESSAGE;

pub type PgResult<T> = Result<T, postgres::Error>;

/// A UUID as an SQL literal.
pub(super) fn lit(id: impl std::fmt::Display) -> String {
    format!("'{id}'::uuid")
}

/// Opens an owner session on one side of a move, bound to `merchant` and
/// `schema`. `replica` marks the session as the mover's writer (the product
/// history trigger then leaves the rows to the copy).
pub fn connect(url: &SecretString, merchant: MerchantId, schema: &str) -> PgResult<Client> {
    let mut c = Client::connect(url.expose_secret(), NoTls)?;
    c.batch_execute(&format!(
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET statement_timeout = 0;
         SET search_path = {schema}, pg_catalog;
         SELECT set_config('posd.merchant_id', '{merchant}', false),
                set_config('posd.replica', 'on', false)",
        schema = quote_ident(schema),
    ))?;
    Ok(c)
}

/// One TENANT table as the move copies it.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    /// Every column, in catalog order.
    pub cols: Vec<String>,
    /// The primary key's columns (`merchant_id` first).
    pub pk: Vec<String>,
}

impl Table {
    pub(super) fn cols(&self) -> String {
        join(&self.cols)
    }

    fn pk(&self) -> String {
        join(&self.pk)
    }

    /// Every column but `merchant_id`.
    pub(super) fn content_cols(&self) -> String {
        let cols: Vec<String> = self
            .cols
            .iter()
            .filter(|c| *c != "merchant_id")
            .cloned()
            .collect();
        join(&cols)
    }

    pub(super) fn ident(&self) -> String {
        quote_ident(&self.name)
    }

    /// Every column, qualified by `alias`.
    fn qualified_cols(&self, alias: &str) -> String {
        self.cols
            .iter()
            .map(|c| format!("{alias}.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `a.k = b.k AND ...` over the primary key.
    fn pk_join(&self, a: &str, b: &str) -> String {
        self.pk
            .iter()
            .map(|k| format!("{a}.{q} = {b}.{q}", q = quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The columns outside the primary key, as an SQL string literal of a
    /// `text[]` (the capture trigger's argument).
    fn non_key_literal(&self) -> String {
        let items: Vec<String> = self
            .cols
            .iter()
            .filter(|c| !self.pk.contains(c))
            .map(|c| format!("\"{}\"", c.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        format!("'{{{}}}'", items.join(",").replace('\'', "''"))
    }
}

fn join(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `tables` of `schema` with their columns and keys, parents before
/// children (foreign keys), so that a copy in this order never refers to a
/// row not yet there.
pub fn tables(c: &mut Client, schema: &str, names: &[&str]) -> PgResult<Vec<Table>> {
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    let params: [&(dyn postgres::types::ToSql + Sync); 2] = [&schema, &names];
    let mut found: HashMap<String, Table> = HashMap::new();
    for row in c.query(
        "SELECT c.relname::text,
                array_agg(a.attname::text ORDER BY a.attnum),
                (SELECT array_agg(k.attname::text ORDER BY array_position(i.indkey::int2[], k.attnum))
                   FROM pg_index i JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY (i.indkey::int2[])
                  WHERE i.indrelid = c.oid AND i.indisprimary)
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE n.nspname = $1 AND c.relname = ANY ($2) AND c.relkind = 'r'
          GROUP BY c.oid, c.relname",
        &params,
    )? {
        let name: String = row.get(0);
        let pk: Option<Vec<String>> = row.get(2);
        found.insert(
            name.clone(),
            Table {
                name,
                cols: row.get(1),
                pk: pk.unwrap_or_default(),
            },
        );
    }
    let edges: Vec<(String, String)> = c
        .query(
            "SELECT c.relname::text, p.relname::text
               FROM pg_constraint k
               JOIN pg_class c ON c.oid = k.conrelid
               JOIN pg_class p ON p.oid = k.confrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE k.contype = 'f' AND n.nspname = $1 AND c.oid <> p.oid",
            &[&schema],
        )?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // Kahn's algorithm over the listed tables, in their listed order.
    let mut ordered = Vec::with_capacity(names.len());
    let mut left: Vec<String> = names
        .into_iter()
        .filter(|n| found.contains_key(n))
        .collect();
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|t| {
                !edges
                    .iter()
                    .any(|(child, parent)| child == t && parent != t && left.contains(parent))
            })
            .unwrap_or(0);
        let name = left.remove(ready);
        if let Some(t) = found.remove(&name) {
            ordered.push(t);
        }
    }
    Ok(ordered)
}

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

/// Rows of one table in a snapshot: count and an order-independent content
/// checksum (the sum of a 64-bit hash of each row's text, `merchant_id`
/// left out so that a restore under another merchant compares equal).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checksum {
    pub rows: i64,
    pub sum: String,
}

pub(super) fn checksum(
    tx: &mut Transaction<'_>,
    t: &Table,
    merchant: MerchantId,
) -> PgResult<Checksum> {
    let row = tx.query_one(
        &format!(
            "SELECT count(*), coalesce(sum(hashtextextended(ROW({cols})::text, 0)::numeric), 0)::text
               FROM {table} WHERE merchant_id = {m}",
            cols = t.content_cols(),
            table = t.ident(),
            m = lit(merchant),
        ),
        &[],
    )?;
    Ok(Checksum {
        rows: row.get(0),
        sum: row.get(1),
    })
}

/// Streams the rows `out` selects at the source into the target as `into`
/// reads them; the number of rows.
fn stream(
    src: &mut Transaction<'_>,
    dst: &mut Transaction<'_>,
    out: &str,
    into: &str,
) -> Result<u64, SyncError> {
    let mut reader = src.copy_out(&format!("COPY ({out}) TO STDOUT (FORMAT binary)"))?;
    let mut writer = dst.copy_in(&format!("COPY {into} FROM STDIN (FORMAT binary)"))?;
    io::copy(&mut reader, &mut writer)?;
    drop(reader);
    Ok(writer.finish()?)
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Pg(#[from] postgres::Error),
    #[error("copy stream: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Mismatch(String),
    #[error("cancelled")]
    Cancelled,
}

/// Progress of a snapshot copy, table by table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableProgress {
    pub table: String,
    pub rows: u64,
    pub total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// A table with fewer rows than this is copied by one stream.
const SPLIT_MIN_ROWS: i64 = 50_000;

/// Copies the merchant's rows as of one snapshot of the source into the
/// target, replacing whatever the target held for the merchant. Tables go
/// one after the other, parents first; a large table is split into as many
/// key ranges as there are streams, each copied at once by its own pair of
/// connections: `src`/`dst` and the pairs of `extra`, whose source sessions
/// import the snapshot of `src` (as `pg_dump --jobs` does). Each table's
/// rows commit at the target before its children's start (their foreign
/// keys see them); a copy cut short leaves rows that the next attempt, or
/// the run's discarding of its target, deletes.
///
/// `fresh`: the target tables are the merchant's alone (its own schema or
/// database), so rows go straight in with `COPY` (forced row-level security
/// is lifted for the owner until the copy ends: `COPY FROM` refuses it;
/// the service's role stays bound by it); otherwise (the shared tier)
/// through a temporary table and `INSERT`, under row-level security.
/// `progress` is told after each table and may cancel.
pub fn copy_snapshot(
    src: &mut Client,
    dst: &mut Client,
    extra: &mut [(Client, Client)],
    tables: &[Table],
    merchant: MerchantId,
    fresh: bool,
    progress: &mut dyn FnMut(&[TableProgress]) -> bool,
) -> Result<Vec<TableProgress>, SyncError> {
    let mut s = src
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let snapshot: String = s.query_one("SELECT pg_export_snapshot()", &[])?.get(0);
    let m = lit(merchant);
    let mut done: Vec<TableProgress> = Vec::with_capacity(tables.len());
    let mut totals = Vec::with_capacity(tables.len());
    for t in tables {
        let total: i64 = s
            .query_one(
                &format!("SELECT count(*) FROM {} WHERE merchant_id = {m}", t.ident()),
                &[],
            )?
            .get(0);
        totals.push(total);
        done.push(TableProgress {
            table: t.name.clone(),
            rows: 0,
            total: u64::try_from(total).unwrap_or(0),
            checksum: None,
        });
    }
    if !progress(&done) {
        return Err(SyncError::Cancelled);
    }
    delete_rows(dst, tables, merchant)?;
    if fresh {
        force_rls(dst, tables, false)?;
    }
    let mut readers = vec![s];
    let mut writers = vec![dst];
    for (es, ed) in extra.iter_mut() {
        let mut r = es
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        r.batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT {}",
            quote_literal(&snapshot)
        ))?;
        readers.push(r);
        writers.push(ed);
    }
    for (i, t) in tables.iter().enumerate() {
        let streams = readers.len();
        let ranges = key_ranges(&mut readers[0], t, merchant, totals[i], streams)?;
        let copied = std::thread::scope(|scope| {
            let handles: Vec<_> = readers
                .iter_mut()
                .zip(writers.iter_mut())
                .zip(&ranges)
                .map(|((r, w), range)| {
                    scope.spawn(move || copy_range(r, w, t, merchant, range, fresh))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect::<Result<Vec<u64>, SyncError>>()
        })?;
        // Statistics that know the rows just loaded, for the catch-up and
        // the merchant's queries after the flip. On the shared tier too:
        // statistics from before the copy would put this merchant at a row
        // or two, and plan a catch-up's delete as a scan of all its rows
        // per deleted key (measured: 42 s for one round of 10,000 changes).
        writers[0].batch_execute(&format!("ANALYZE {}", t.ident()))?;
        done[i].rows = copied.iter().sum();
        if !progress(&done) {
            return Err(SyncError::Cancelled);
        }
    }
    for r in readers {
        r.commit()?;
    }
    if fresh {
        force_rls(writers.swap_remove(0), tables, true)?;
    }
    Ok(done)
}

/// Forces row-level security on every table for its owner too (`force`),
/// or lifts that for the owner (the service's role stays bound by it).
fn force_rls(dst: &mut Client, tables: &[Table], force: bool) -> PgResult<()> {
    let mut d = dst.transaction()?;
    for t in tables {
        d.batch_execute(&format!(
            "ALTER TABLE {} {} ROW LEVEL SECURITY",
            t.ident(),
            if force { "FORCE" } else { "NO FORCE" }
        ))?;
    }
    d.commit()
}

/// The `WHERE` conditions that split `t`'s rows of the merchant into at
/// most `n` ranges of about the same size, on the second column of its
/// primary key (the first is `merchant_id`): bounds read from the key's
/// index in the copy's snapshot. One range, and no condition, for a small
/// table.
fn key_ranges(
    s: &mut Transaction<'_>,
    t: &Table,
    merchant: MerchantId,
    total: i64,
    n: usize,
) -> PgResult<Vec<String>> {
    let Some(col) = t.pk.get(1).filter(|_| n > 1 && total >= SPLIT_MIN_ROWS) else {
        return Ok(vec![String::new()]);
    };
    let col = quote_ident(col);
    let parts = i64::try_from(n).unwrap_or(1);
    let mut bounds: Vec<String> = Vec::new();
    for i in 1..parts {
        let row = s.query_opt(
            &format!(
                // `t.{col}`: the column, not the text of the select list
                // (sorting that would sort every row, without the index).
                "SELECT t.{col}::text FROM {table} t WHERE merchant_id = {m}
                  ORDER BY t.{col} OFFSET {offset} LIMIT 1",
                table = t.ident(),
                m = lit(merchant),
                offset = total * i / parts,
            ),
            &[],
        )?;
        if let Some(b) = row.map(|r| quote_literal(&r.get::<_, String>(0)))
            && bounds.last() != Some(&b)
        {
            bounds.push(b);
        }
    }
    let ranges = (0..=bounds.len())
        .map(|i| {
            let lo = i
                .checked_sub(1)
                .map(|j| format!(" AND {col} >= {}", bounds[j]));
            let hi = bounds.get(i).map(|b| format!(" AND {col} < {b}"));
            format!("{}{}", lo.unwrap_or_default(), hi.unwrap_or_default())
        })
        .collect();
    Ok(ranges)
}

/// Copies the merchant's rows of `t` within `range` (a condition of
/// [`key_ranges`]) in a target transaction of its own; the number of rows.
fn copy_range(
    s: &mut Transaction<'_>,
    dst: &mut Client,
    t: &Table,
    merchant: MerchantId,
    range: &str,
    fresh: bool,
) -> Result<u64, SyncError> {
    let out = format!(
        "SELECT {} FROM {} WHERE merchant_id = {}{range}",
        t.cols(),
        t.ident(),
        lit(merchant)
    );
    let mut d = dst.transaction()?;
    let rows = if fresh {
        stream(s, &mut d, &out, &format!("{} ({})", t.ident(), t.cols()))?
    } else {
        let staging = staging_name(t, "s");
        d.batch_execute(&format!(
            "CREATE TEMP TABLE {staging} (LIKE {}) ON COMMIT DROP",
            t.ident()
        ))?;
        let n = stream(s, &mut d, &out, &format!("{staging} ({})", t.cols()))?;
        d.batch_execute(&format!(
            "INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging}",
            table = t.ident(),
            cols = t.cols()
        ))?;
        n
    };
    d.commit()?;
    Ok(rows)
}

pub(super) fn staging_name(t: &Table, kind: &str) -> String {
    format!(
        "pg_temp.{}",
        quote_ident(&format!("posd_{kind}_{}", t.name))
    )
}

/// The changes a round applies (a temporary table at the source).
const BATCH: &str = "pg_temp.posd_batch";

/// What one catch-up round did.
#[derive(Debug, Default)]
pub struct Round {
    /// Captured changes applied (row writes, before deduplication).
    pub changes: u64,
    /// Per table checksums of both sides, when asked for and equal.
    pub checksums: Vec<(String, Checksum)>,
    /// The round took a batch of the changes; more may be waiting.
    pub truncated: bool,
}

/// One catch-up round: in one snapshot of the source, the changes captured
/// for `run` and visible in it are applied at the target as the rows stand
/// in that snapshot (a key whose row is gone is deleted), in one target
/// transaction: upserts parents first, deletes children first. Once the
/// target commits, those changes are deleted at the source (in the same
/// snapshot transaction, so changes committed meanwhile stay for the next
/// round). A round cut short between the two commits applies its changes
/// again next time: applying a row's current state is idempotent.
///
/// With `verify`, every table's count and checksum are compared in the
/// round's snapshot and in the target before it commits; a difference fails
/// the round and leaves the target as it was.
///
/// With `batch`, a round takes the transactions that wrote the oldest
/// `batch` changes (the rest wait for the next round, and
/// [`Round::truncated`] says so): a
/// round's snapshot then never lives long, and while it lives every row
/// version since it began is kept, in the whole database, for every
/// merchant of the shared tier too.
pub fn catch_up(
    src: &mut Client,
    dst: &mut Client,
    tables: &[Table],
    merchant: MerchantId,
    run: RunId,
    verify: bool,
    batch: Option<i64>,
) -> Result<Round, SyncError> {
    let mut s = src
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()?;
    let r = lit(run);
    let started = std::time::Instant::now();
    by_key(&mut s, true)?;
    // The round's changes, picked once: every visible one, or, with
    // `batch`, those of the transactions that wrote the oldest `batch`
    // (whole transactions: a batch that split one could apply a child row
    // before its parent), each transaction's looked up by its index.
    let pick = match batch {
        Some(n) => format!(
            "WITH x AS MATERIALIZED (SELECT DISTINCT xact FROM
                 (SELECT xact FROM {CAPTURE_SCHEMA}.changes WHERE run_id = {r} ORDER BY seq LIMIT {n}) o)
             SELECT c.seq, c.tbl, c.pk FROM x CROSS JOIN LATERAL
                 (SELECT seq, tbl, pk FROM {CAPTURE_SCHEMA}.changes
                   WHERE run_id = {r} AND xact = x.xact OFFSET 0) c"
        ),
        None => format!("SELECT seq, tbl, pk FROM {CAPTURE_SCHEMA}.changes WHERE run_id = {r}"),
    };
    let picked = s.execute(
        &format!("CREATE TEMP TABLE {BATCH} ON COMMIT DROP AS {pick}"),
        &[],
    )?;
    let pending: HashMap<String, i64> = s
        .query(
            &format!("SELECT tbl, count(*) FROM {BATCH} GROUP BY tbl"),
            &[],
        )?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut round = Round {
        changes: pending
            .values()
            .map(|n| u64::try_from(*n).unwrap_or(0))
            .sum(),
        checksums: Vec::new(),
        truncated: batch.is_some_and(|n| i64::try_from(picked).unwrap_or(i64::MAX) >= n),
    };
    if pending.is_empty() && !verify {
        s.commit()?;
        return Ok(round);
    }
    let mut d = dst.transaction()?;
    let changed: Vec<&Table> = tables
        .iter()
        .filter(|t| pending.contains_key(&t.name))
        .collect();
    by_key(&mut d, true)?;
    let picked_at = started.elapsed();
    for t in &changed {
        stage(&mut s, &mut d, t, merchant)?;
    }
    let staged_at = started.elapsed();
    apply(&mut d, &changed)?;
    let applied_at = started.elapsed();
    if verify {
        by_key(&mut s, false)?;
        by_key(&mut d, false)?;
        // Both sides at once: each is a scan of every row of the merchant.
        let (at_source, at_target) = std::thread::scope(|scope| {
            let source = scope.spawn(|| checksums(&mut s, tables, merchant));
            let target = checksums(&mut d, tables, merchant);
            (source.join(), target)
        });
        let at_source = at_source.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        let at_target = at_target?;
        for ((t, at_source), at_target) in tables.iter().zip(at_source).zip(at_target) {
            if at_source != at_target {
                return Err(SyncError::Mismatch(format!(
                    "table {}: the source has {} rows (checksum {}), the target {} (checksum {})",
                    t.name, at_source.rows, at_source.sum, at_target.rows, at_target.sum
                )));
            }
            round.checksums.push((t.name.clone(), at_source));
        }
    }
    let verified_at = started.elapsed();
    d.commit()?;
    s.batch_execute(&format!(
        "DELETE FROM {CAPTURE_SCHEMA}.changes WHERE seq IN (SELECT seq FROM {BATCH})"
    ))?;
    s.commit()?;
    let ms = |d: std::time::Duration| d.as_millis();
    tracing::debug!(
        %merchant, %run, changes = round.changes, tables = changed.len(),
        pick_ms = ms(picked_at), stage_ms = ms(staged_at.saturating_sub(picked_at)),
        apply_ms = ms(applied_at.saturating_sub(staged_at)),
        verify_ms = ms(verified_at.saturating_sub(applied_at)),
        commit_ms = ms(started.elapsed().saturating_sub(verified_at)),
        "tier move: catch-up round"
    );
    Ok(round)
}

/// Plans a transaction's queries for a round (`true`) or, as the server
/// would, for checksums (`false`). A round touches a few keys of a
/// merchant that may have millions of rows, and must look each one up by
/// its key. The planner cannot be trusted with that choice here: the change
/// log's keys come out of JSON (it guesses one row each), and a table's
/// statistics can be far behind a merchant that has just been copied in or
/// keeps writing during the move, so it could scan or hash every row of the
/// merchant, in every round. JIT goes too: the costs of the plans it is
/// steered away from would make it compile every statement of a round.
fn by_key(tx: &mut Transaction<'_>, on: bool) -> PgResult<()> {
    let sql = [
        "enable_hashjoin",
        "enable_mergejoin",
        "enable_seqscan",
        "jit",
    ]
    .iter()
    .map(|name| {
        if on {
            format!("SET LOCAL {name} = off;")
        } else {
            format!("SET LOCAL {name} TO DEFAULT;")
        }
    })
    .collect::<String>();
    tx.batch_execute(&sql)
}

/// [`checksum`] of every table, in order.
fn checksums(
    tx: &mut Transaction<'_>,
    tables: &[Table],
    merchant: MerchantId,
) -> PgResult<Vec<Checksum>> {
    tables.iter().map(|t| checksum(tx, t, merchant)).collect()
}

/// Marks a staged key whose row is gone at the source (a column of the
/// staging tables only).
const GONE: &str = "posd_gone";

/// Stages at the target, in a temporary table, the keys of `t` in the
/// round's changes with their rows as the source's snapshot has them: a
/// key whose row is gone comes with its other columns null and [`GONE`]
/// set. One stream per table, each key looked up once.
fn stage(
    src: &mut Transaction<'_>,
    dst: &mut Transaction<'_>,
    t: &Table,
    merchant: MerchantId,
) -> Result<(), SyncError> {
    let m = lit(merchant);
    let keys_of = format!(
        "SELECT DISTINCT {pk_r} FROM {BATCH} c, jsonb_populate_record(NULL::{table}, c.pk) r
          WHERE c.tbl = '{name}'",
        pk_r =
            t.pk.iter()
                .map(|k| format!("r.{}", quote_ident(k)))
                .collect::<Vec<_>>()
                .join(", "),
        table = t.ident(),
        name = t.name.replace('\'', "''"),
    );
    // Key columns from the key, the others from the row (null when gone).
    let cols = t
        .cols
        .iter()
        .map(|c| {
            let from = if t.pk.contains(c) { "k" } else { "r" };
            format!("{from}.{}", quote_ident(c))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let rows = staging_name(t, "s");
    // CREATE TABLE AS keeps the types and drops the NOT NULL constraints.
    dst.batch_execute(&format!(
        "CREATE TEMP TABLE {rows} ON COMMIT DROP AS
             SELECT {all}, false AS {GONE} FROM {table} WITH NO DATA",
        all = t.cols(),
        table = t.ident(),
    ))?;
    stream(
        src,
        dst,
        &format!(
            // A lateral subquery that cannot be flattened (OFFSET 0): one
            // index lookup per changed key, whatever the statistics say.
            // The merchant is a column of the key: a constant condition
            // on it would let the planner scan the merchant's rows instead.
            "SELECT {cols}, r.{GONE} IS NULL FROM ({keys_of}) k LEFT JOIN LATERAL
                 (SELECT {all}, true AS {GONE} FROM {table} t
                   WHERE {on} OFFSET 0) r ON true
              WHERE k.merchant_id = {m}",
            all = t.qualified_cols("t"),
            table = t.ident(),
            on = t.pk_join("t", "k"),
        ),
        &format!("{rows} ({}, {GONE})", t.cols()),
    )?;
    Ok(())
}

/// Applies what [`stage`] staged: upserts parents first, then deletes (the
/// keys whose rows are gone) children first.
fn apply(d: &mut Transaction<'_>, changed: &[&Table]) -> PgResult<()> {
    for t in changed {
        let set: Vec<String> = t
            .cols
            .iter()
            .filter(|c| !t.pk.contains(c))
            .map(|c| format!("{q} = EXCLUDED.{q}", q = quote_ident(c)))
            .collect();
        let action = if set.is_empty() {
            "NOTHING".to_string()
        } else {
            format!("UPDATE SET {}", set.join(", "))
        };
        d.batch_execute(&format!(
            "INSERT INTO {table} ({cols}) SELECT {cols} FROM {rows} WHERE NOT {GONE}
             ON CONFLICT ({pk}) DO {action}",
            table = t.ident(),
            cols = t.cols(),
            pk = t.pk(),
            rows = staging_name(t, "s"),
        ))?;
    }
    // Joined on the key only (it holds the merchant, and the staged keys
    // are the merchant's): a constant `t.merchant_id` would let the planner
    // scan every row of the merchant once per staged key.
    for t in changed.iter().rev() {
        d.batch_execute(&format!(
            "DELETE FROM {table} t USING {rows} g WHERE g.{GONE} AND {on}",
            table = t.ident(),
            rows = staging_name(t, "s"),
            on = t.pk_join("t", "g"),
        ))?;
    }
    Ok(())
}

/// Changes captured for `run` and not yet applied: counted when `exact`,
/// else bounded from above by the span of their sequence numbers (two
/// lookups in the index, where a count of a large backlog reads all of it,
/// every round).
pub fn backlog(src: &mut Client, run: RunId, exact: bool) -> PgResult<i64> {
    let r = lit(run);
    let sql = if exact {
        format!("SELECT count(*) FROM {CAPTURE_SCHEMA}.changes WHERE run_id = {r}")
    } else {
        format!(
            "SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM {CAPTURE_SCHEMA}.changes WHERE run_id = {r}"
        )
    };
    Ok(src.query_one(&sql, &[])?.get(0))
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

/// Deletes the merchant's rows in every table (children first): what a
/// failed or cancelled move into the shared tier leaves behind.
pub fn delete_rows(c: &mut Client, tables: &[Table], merchant: MerchantId) -> PgResult<()> {
    let mut tx = c.transaction()?;
    delete_all(&mut tx, tables, merchant)?;
    tx.commit()
}

/// Deletes the merchant's rows in every table, children first.
fn delete_all(tx: &mut Transaction<'_>, tables: &[Table], merchant: MerchantId) -> PgResult<()> {
    for t in tables.iter().rev() {
        tx.batch_execute(&format!(
            "DELETE FROM {} WHERE merchant_id = {}",
            t.ident(),
            lit(merchant)
        ))?;
    }
    Ok(())
}

/// Retires a shared-tier source: the merchant's rows move out of the shared
/// tables into schema `retired` (owner only) in one transaction (the
/// capture trigger lets the mover's session through), then capture ends.
pub fn retire_shared(
    c: &mut Client,
    schema: &str,
    tables: &[Table],
    merchant: MerchantId,
    run: RunId,
    retired: &str,
) -> PgResult<()> {
    let mut tx = c.transaction()?;
    let r = quote_ident(retired);
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {r}; REVOKE ALL ON SCHEMA {r} FROM PUBLIC"
    ))?;
    for t in tables {
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {r}.{table} (LIKE {table});
             INSERT INTO {r}.{table} ({cols}) SELECT {cols} FROM {table} WHERE merchant_id = {m}",
            table = t.ident(),
            cols = t.cols(),
            m = lit(merchant),
        ))?;
    }
    delete_all(&mut tx, tables, merchant)?;
    tx.commit()?;
    uncapture(c, schema, tables, run)
}

/// Retires a schema source (a schema tenant's, or the tenant schema of a
/// dedicated database): renamed to `retired`, the app role's rights
/// revoked. Its capture triggers stay: they refuse every write.
pub fn retire_schema(
    c: &mut Client,
    schema: &str,
    retired: &str,
    app_role: Option<&str>,
) -> PgResult<()> {
    let mut tx = c.transaction()?;
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )?
        .get(0);
    if exists {
        let s = quote_ident(schema);
        if let Some(app) = app_role {
            let app = quote_ident(app);
            tx.batch_execute(&format!(
                "REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {app};
                 REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {app};
                 REVOKE ALL ON SCHEMA {s} FROM {app}"
            ))?;
        }
        tx.batch_execute(&format!(
            "ALTER SCHEMA {s} RENAME TO {}",
            quote_ident(retired)
        ))?;
    }
    tx.commit()
}
