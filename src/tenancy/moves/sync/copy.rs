//! The snapshot copy: every table of the merchant as of one snapshot of
//! the source, large tables in key ranges over several streams.

use postgres::{Client, IsolationLevel, Transaction};

use super::{PgResult, SyncError, Table, delete_rows, lit, staging_name, stream};
use crate::db::{
    ids::MerchantId,
    tenant::{quote_ident, quote_literal},
};

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
