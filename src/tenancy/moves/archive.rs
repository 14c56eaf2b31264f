//! A merchant's export, and its restore, with the tier move's machinery: one
//! consistent snapshot, table by table as binary `COPY`, streamed (never the
//! whole merchant in memory), verified by per-table row counts and content
//! checksums.
//!
//! The archive is one stream:
//!
//! ```text
//! posd-export 1\n
//! <manifest: one line of JSON>\n
//! for each table of the manifest, in its order (parents first):
//!     frames of <u32 big-endian length><that many bytes of binary COPY>,
//!     then a frame of length 0
//! ```
//!
//! The manifest names the merchant, the tier it was on, the tenant
//! migration version of its tables, and for each table its columns, rows and
//! checksum. A restore loads an archive into a merchant with no data at its
//! current placement (provision it first to restore onto its own schema or
//! database), the same merchant or another one (its id replaces the one in
//! the rows), in one transaction, and checks the counts and checksums before
//! it commits: a truncated or altered archive loads nothing.

use std::io::{self, BufRead, Read, Write};

use chrono::{DateTime, Utc};
use postgres::IsolationLevel;
use serde::{Deserialize, Serialize};

use super::{
    MoveError, Side, owner_conn,
    sync::{self, Table, checksum, lit, staging_name},
};
use crate::{
    db::{
        ids::MerchantId,
        platform::{Platform, merchants::Merchant, moves::Move, tenant_databases::TenantDatabase},
    },
    error::ErrorCode,
    tenancy::{Tenancy, Tier, classification::TENANT, migrations::latest_tenant_version, servers},
};

const MAGIC: &str = "posd-export 1";
/// Largest frame a restore accepts (a frame is at most one write of the
/// copy, well under this).
const MAX_FRAME: u32 = 16 << 20;

/// What an archive holds.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub merchant_id: MerchantId,
    pub slug: String,
    pub tier: Tier,
    /// The tenant migration version of the tables.
    pub tenant_version: String,
    pub exported_at: DateTime<Utc>,
    pub tables: Vec<ManifestTable>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestTable {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: i64,
    pub checksum: String,
}

/// The merchant's current placement as a move side.
fn placement_of(app: &Tenancy, p: &mut Platform<'_>, m: &Merchant) -> Result<Side, MoveError> {
    let database = m
        .database_id
        .map(|id| TenantDatabase::find(p, id))
        .transpose()?;
    let server = match &database {
        Some(db) if db.created_by_posd => Some(servers::owner_url(&app.settings, p, db.server_id)?),
        _ => None,
    };
    Ok(Side {
        tier: m.tier,
        schema: m.schema_name.clone(),
        database,
        server,
    })
}

fn merchant(app: &Tenancy, id: MerchantId) -> Result<(Merchant, Side), MoveError> {
    let mut conn = owner_conn(&app.settings.database_url)?;
    let p = &mut Platform::new(&mut conn);
    let m = match Merchant::find(p, id) {
        Ok(m) => m,
        Err(diesel::result::Error::NotFound) => return Err(MoveError::UnknownMerchant),
        Err(e) => return Err(e.into()),
    };
    let side = placement_of(app, p, &m)?;
    Ok((m, side))
}

/// Frames what is written into `<len><bytes>` frames on `out`.
struct Framed<'a>(&'a mut dyn Write);

impl Write for Framed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = u32::try_from(buf.len().min(1 << 20)).unwrap_or(1 << 20);
        self.0.write_all(&len.to_be_bytes())?;
        let n = usize::try_from(len).unwrap_or(buf.len());
        self.0.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Writes the merchant's archive to `out`, from one snapshot of its
/// placement; answers the manifest.
pub fn export(app: &Tenancy, id: MerchantId, out: &mut dyn Write) -> Result<Manifest, MoveError> {
    let (m, side) = merchant(app, id)?;
    let mut c = side.connect(app, id)?;
    let tables = sync::tables(&mut c, &side.schema, TENANT)?;
    let mut tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let version: Option<String> = tx
        .query_one(
            "SELECT max(version)::text FROM __diesel_schema_migrations",
            &[],
        )?
        .get(0);
    let mut listed = Vec::with_capacity(tables.len());
    for t in &tables {
        let sum = checksum(&mut tx, t, id)?;
        listed.push(ManifestTable {
            table: t.name.clone(),
            columns: t.cols.clone(),
            rows: sum.rows,
            checksum: sum.sum,
        });
    }
    let manifest = Manifest {
        merchant_id: m.id,
        slug: m.slug,
        tier: m.tier,
        tenant_version: version.unwrap_or_default(),
        exported_at: Utc::now(),
        tables: listed,
    };
    let io = |e: io::Error| MoveError::failed("export_failed", e);
    writeln!(out, "{MAGIC}").map_err(io)?;
    serde_json::to_writer(&mut *out, &manifest)
        .map_err(|e| MoveError::failed("export_failed", e))?;
    writeln!(out).map_err(io)?;
    for t in &tables {
        let mut reader = tx.copy_out(&format!(
            "COPY (SELECT {} FROM {} WHERE merchant_id = {}) TO STDOUT (FORMAT binary)",
            t.cols(),
            t.ident(),
            lit(id)
        ))?;
        io::copy(&mut reader, &mut Framed(out)).map_err(io)?;
        drop(reader);
        out.write_all(&0u32.to_be_bytes()).map_err(io)?;
    }
    out.flush().map_err(io)?;
    tx.commit()?;
    Ok(manifest)
}

/// Reads one table's frames as one stream.
struct Frames<'a> {
    input: &'a mut dyn BufRead,
    left: usize,
    done: bool,
}

impl Read for Frames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            if self.done {
                return Ok(0);
            }
            let mut len = [0u8; 4];
            self.input.read_exact(&mut len)?;
            let len = u32::from_be_bytes(len);
            if len > MAX_FRAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame too large",
                ));
            }
            self.left = usize::try_from(len).unwrap_or(0);
            self.done = len == 0;
        }
        let want = buf.len().min(self.left);
        let n = self.input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(n)
    }
}

fn refused(message: impl std::fmt::Display) -> MoveError {
    MoveError::Refused(ErrorCode::InvalidArchive, message.to_string())
}

/// Loads the archive on `input` into merchant `id` at its placement, which
/// must hold none of its data; answers the archive's manifest.
pub fn restore(
    app: &Tenancy,
    id: MerchantId,
    input: &mut dyn BufRead,
) -> Result<Manifest, MoveError> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(refused)?;
    if line.trim_end() != MAGIC {
        return Err(refused(
            "not a posd export (its first line is not `posd-export 1`)",
        ));
    }
    line.clear();
    input.read_line(&mut line).map_err(refused)?;
    let manifest: Manifest =
        serde_json::from_str(&line).map_err(|e| refused(format!("manifest: {e}")))?;
    let latest = latest_tenant_version();
    if manifest.tenant_version != latest {
        return Err(refused(format!(
            "the export's tables are at tenant version {}, this posd's at {latest}",
            manifest.tenant_version
        )));
    }
    let (_, side) = merchant(app, id)?;
    {
        let mut conn = owner_conn(&app.settings.database_url)?;
        if let Some(mv) = Move::active(&mut Platform::new(&mut conn), id)? {
            return Err(MoveError::InProgress(mv.id));
        }
    }
    let mut c = side.connect(app, id)?;
    let tables = sync::tables(&mut c, &side.schema, TENANT)?;
    let mut tx = c.transaction()?;
    // The merchant's own audit trail (its owner's first logins) does not
    // make it a merchant with data: it is set aside while the export loads
    // and is verified, then put back.
    let trail = tables.iter().find(|t| t.name == OWN_TRAIL);
    for t in tables.iter().filter(|t| t.name != OWN_TRAIL) {
        let present: bool = tx
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE merchant_id = {})",
                    t.ident(),
                    lit(id)
                ),
                &[],
            )?
            .get(0);
        if present {
            return Err(MoveError::Refused(
                ErrorCode::TargetNotEmpty,
                format!(
                    "the merchant already has rows in {}; restore into a merchant without data",
                    t.name
                ),
            ));
        }
    }
    if let Some(t) = trail {
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE posd_kept_trail (LIKE {i}) ON COMMIT DROP;
             WITH d AS (DELETE FROM {i} WHERE merchant_id = {m} RETURNING *)
             INSERT INTO posd_kept_trail SELECT * FROM d",
            i = t.ident(),
            m = lit(id)
        ))?;
    }
    for entry in &manifest.tables {
        let t = tables
            .iter()
            .find(|t| t.name == entry.table)
            .ok_or_else(|| refused(format!("unknown table {}", entry.table)))?;
        if t.cols != entry.columns {
            return Err(refused(format!(
                "table {}: the columns differ",
                entry.table
            )));
        }
        load(&mut tx, t, id, input)?;
    }
    for entry in &manifest.tables {
        let t = tables
            .iter()
            .find(|t| t.name == entry.table)
            .ok_or_else(|| refused("?"))?;
        let sum = checksum(&mut tx, t, id)?;
        if sum.rows != entry.rows || sum.sum != entry.checksum {
            return Err(MoveError::failed(
                "verify_mismatch",
                format!(
                    "table {}: the export lists {} rows (checksum {}), {} were loaded (checksum {})",
                    t.name, entry.rows, entry.checksum, sum.rows, sum.sum
                ),
            ));
        }
    }
    if let Some(t) = trail {
        tx.batch_execute(&format!(
            "INSERT INTO {} SELECT * FROM posd_kept_trail",
            t.ident()
        ))?;
    }
    tx.commit()?;
    Ok(manifest)
}

/// The table a merchant may already have rows in when an export is
/// restored into it.
const OWN_TRAIL: &str = "audit_events";

/// Loads one table's frames through a staging table, the merchant id
/// replaced by `id` (row-level security checks every row).
fn load(
    tx: &mut postgres::Transaction<'_>,
    t: &Table,
    id: MerchantId,
    input: &mut dyn BufRead,
) -> Result<(), MoveError> {
    let staging = staging_name(t, "r");
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {staging} (LIKE {}) ON COMMIT DROP",
        t.ident()
    ))?;
    let mut writer = tx.copy_in(&format!(
        "COPY {staging} ({}) FROM STDIN (FORMAT binary)",
        t.cols()
    ))?;
    let mut frames = Frames {
        input,
        left: 0,
        done: false,
    };
    io::copy(&mut frames, &mut writer).map_err(|e| refused(format!("table {}: {e}", t.name)))?;
    writer.finish()?;
    let select: Vec<String> = t
        .cols
        .iter()
        .map(|c| {
            if c == "merchant_id" {
                lit(id)
            } else {
                crate::db::tenant::quote_ident(c)
            }
        })
        .collect();
    tx.batch_execute(&format!(
        "INSERT INTO {table} ({cols}) SELECT {select} FROM {staging}; DROP TABLE {staging}",
        table = t.ident(),
        cols = t.cols(),
        select = select.join(", "),
    ))?;
    Ok(())
}
