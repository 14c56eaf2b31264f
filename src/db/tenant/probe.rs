//! What the isolation probe (`tenancy::probe`) tries against another
//! merchant's rows: read, change and add one. Every attempt happens inside
//! a savepoint (bound) or a transaction (unbound) that is rolled back, so
//! even a probe that breaks in leaves nothing behind.

use diesel::{
    OptionalExtension, PgConnection, QueryableByName, RunQueryDsl,
    connection::SimpleConnection,
    sql_types::{BigInt, Uuid as SqlUuid},
};

use super::{TenantTx, quote_ident, quote_literal};
use crate::db::ids::{MerchantId, ProductId};

/// The sku of each probe merchant's marker product.
pub const MARKER_SKU: &str = "posd-probe-marker";

/// What one probe got of another merchant's rows: all zero and `false`
/// when isolation holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempt {
    /// The other's rows it could read.
    pub read: i64,
    /// The other's rows it could change.
    pub updated: usize,
    /// Whether it could add a row in the other's name.
    pub inserted: bool,
}

impl Attempt {
    pub fn broke_in(&self) -> bool {
        self.read > 0 || self.updated > 0 || self.inserted
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
}

/// Reads, changes and adds `other`'s rows in `schema`.products on `conn`,
/// inside savepoint `probe` (rolled back, also after an error).
fn attempt(
    conn: &mut PgConnection,
    schema: &str,
    other: MerchantId,
    marker: ProductId,
) -> diesel::QueryResult<Attempt> {
    let table = format!("{}.products", quote_ident(schema));
    conn.batch_execute("SAVEPOINT probe")?;
    let read = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM {table} WHERE merchant_id = $1 AND id = $2"
    ))
    .bind::<SqlUuid, _>(other.0)
    .bind::<SqlUuid, _>(marker.0)
    .get_result::<Count>(conn)
    .map_or(0, |c| c.n);
    conn.batch_execute("ROLLBACK TO SAVEPOINT probe")?;
    let updated = diesel::sql_query(format!(
        "UPDATE {table} SET name = name WHERE merchant_id = $1 AND id = $2"
    ))
    .bind::<SqlUuid, _>(other.0)
    .bind::<SqlUuid, _>(marker.0)
    .execute(conn)
    .unwrap_or(0);
    conn.batch_execute("ROLLBACK TO SAVEPOINT probe")?;
    let inserted = diesel::sql_query(format!(
        "INSERT INTO {table} (merchant_id, id, sku, name, price_minor) \
         VALUES ($1, gen_random_uuid(), 'posd-probe-intruder', 'intruder', 0)"
    ))
    .bind::<SqlUuid, _>(other.0)
    .execute(conn)
    .is_ok_and(|n| n > 0);
    conn.batch_execute("ROLLBACK TO SAVEPOINT probe; RELEASE SAVEPOINT probe")?;
    Ok(Attempt {
        read,
        updated,
        inserted,
    })
}

impl TenantTx<'_> {
    /// The merchant's marker product, made if it has none.
    pub fn probe_marker(&mut self) -> diesel::QueryResult<ProductId> {
        let found: Option<Id> = diesel::sql_query("SELECT id FROM products WHERE sku = $1")
            .bind::<diesel::sql_types::Text, _>(MARKER_SKU)
            .get_result(self.conn)
            .optional()?;
        if let Some(found) = found {
            return Ok(ProductId(found.id));
        }
        diesel::sql_query(
            "INSERT INTO products (merchant_id, id, sku, name, price_minor) \
             VALUES ($1, gen_random_uuid(), $2, 'isolation probe', 0) RETURNING id",
        )
        .bind::<SqlUuid, _>(self.merchant.0)
        .bind::<diesel::sql_types::Text, _>(MARKER_SKU)
        .get_result::<Id>(self.conn)
        .map(|r| ProductId(r.id))
    }

    /// Bound to this merchant, tries `other`'s marker in `schema`.
    pub fn probe_other(
        &mut self,
        schema: &str,
        other: MerchantId,
        marker: ProductId,
    ) -> diesel::QueryResult<Attempt> {
        attempt(self.conn, schema, other, marker)
    }
}

/// With no merchant bound (the app role as any connection of a pool has
/// it), tries `other`'s marker in `schema`, in a transaction rolled back.
pub fn probe_unbound(
    conn: &mut PgConnection,
    schema: &str,
    other: MerchantId,
    marker: ProductId,
) -> diesel::QueryResult<Attempt> {
    conn.batch_execute(&format!(
        "BEGIN; SELECT set_config('posd.merchant_id', '', true), set_config('search_path', {}, true)",
        quote_literal(&quote_ident(schema))
    ))?;
    let result = attempt(conn, schema, other, marker);
    conn.batch_execute("ROLLBACK")?;
    result
}
