//! The source once the merchant has moved: kept, unreadable by the
//! service, until its retention ends.

use postgres::Client;

use super::{PgResult, Table, delete_all, lit, uncapture};
use crate::db::{
    ids::{MerchantId, RunId},
    tenant::quote_ident,
};

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
