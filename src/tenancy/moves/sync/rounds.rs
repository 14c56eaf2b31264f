//! Catch-up rounds: the captured changes applied at the target as the
//! rows stand in one snapshot of the source, then forgotten there.

use std::collections::HashMap;

use postgres::{Client, IsolationLevel, Transaction};

use super::{
    CAPTURE_SCHEMA, Checksum, PgResult, SyncError, Table, checksum, lit, staging_name, stream,
};
use crate::db::{
    ids::{MerchantId, RunId},
    tenant::quote_ident,
};

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
