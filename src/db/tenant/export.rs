//! The merchant's whole data plane as one JSON document.

use diesel::{
    prelude::*,
    sql_types::{Json, Uuid as SqlUuid},
};

use super::{TenantTx, quote_ident};

#[derive(QueryableByName)]
struct Document {
    #[diesel(sql_type = Json)]
    tables: serde_json::Value,
}

/// The merchant's rows of each of `tables` (the data plane's: the caller
/// passes the TENANT list), `{table: [row, ...]}`, each table in
/// primary-key order. One statement, so one snapshot: the tables are
/// consistent with each other.
pub fn tables(tx: &mut TenantTx<'_>, tables: &[&str]) -> QueryResult<serde_json::Value> {
    let parts: Vec<String> = tables
        .iter()
        .map(|t| {
            format!(
                "'{t}', (SELECT coalesce(json_agg(r ORDER BY r), '[]'::json) FROM {} r WHERE r.merchant_id = $1)",
                quote_ident(t)
            )
        })
        .collect();
    let q = format!("SELECT json_build_object({}) AS tables", parts.join(", "));
    diesel::sql_query(q)
        .bind::<SqlUuid, _>(tx.merchant.0)
        .get_result::<Document>(tx.conn)
        .map(|d| d.tables)
}
