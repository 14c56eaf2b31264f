//! The SQL of a move: change capture and the fence at the source
//! ([`capture`]), the snapshot copy ([`copy`]), the catch-up rounds
//! ([`rounds`]), the retired source ([`retire`]), and here what they share:
//! sessions, the tables with their keys, checksums, streams. Everything here runs on
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

use postgres::{Client, NoTls, Transaction};
use secrecy::{ExposeSecret, SecretString};

use crate::db::{ids::MerchantId, tenant::quote_ident};

mod capture;
mod copy;
mod retire;
mod rounds;

pub use capture::{CAPTURE_SCHEMA, capture, fence, install_capture, set_moved, uncapture, unfence};
pub use copy::{TableProgress, copy_snapshot};
pub use retire::{retire_schema, retire_shared};
pub use rounds::{backlog, catch_up};

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

pub(super) fn staging_name(t: &Table, kind: &str) -> String {
    format!(
        "pg_temp.{}",
        quote_ident(&format!("posd_{kind}_{}", t.name))
    )
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
