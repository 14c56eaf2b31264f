//! The data plane: TENANT tables and their typed queries.
//!
//! Every function here takes a [`TenantTx`], a transaction already bound to
//! one merchant (`posd.merchant_id`) and to that merchant's schema
//! (`search_path`). A `TenantTx` can only be made by `TenantTx::transaction`, and
//! the table definitions are private to this module, so a data-plane query
//! through a control-plane connection does not compile:
//!
//! ```compile_fail
//! use posd::db::{platform::Platform, tenant::products::{Product, ProductFilter}};
//! fn leak(p: &mut Platform<'_>) {
//!     let _ = Product::list(p, &ProductFilter::default());
//! }
//! ```
//!
//! and neither does binding a transaction from outside the crate:
//!
//! ```compile_fail
//! use posd::db::{ids::MerchantId, tenant::TenantTx};
//! fn bind(c: &mut diesel::PgConnection) {
//!     let _ = TenantTx::transaction(c, MerchantId(uuid::Uuid::nil()), "tenant_shared", |_| {
//!         Ok::<_, diesel::result::Error>(())
//!     });
//! }
//! ```
//!
//! whereas the same call with a bound transaction compiles:
//!
//! ```
//! use posd::db::tenant::{TenantTx, products::{Product, ProductFilter}};
//! fn list(tx: &mut TenantTx<'_>) -> diesel::QueryResult<Vec<Product>> {
//!     Product::list(tx, &ProductFilter::default())
//! }
//! ```

mod schema;

pub mod audit;
pub mod categories;
pub mod changes;
pub mod customers;
pub mod idempotency;
pub mod inventory;
pub mod orders;
pub mod probe;
pub mod products;
pub mod reports;
pub mod sales;

use diesel::{PgConnection, RunQueryDsl, sql_types::Text};

use crate::db::ids::MerchantId;

/// A transaction bound to one merchant's data.
pub struct TenantTx<'a> {
    conn: &'a mut PgConnection,
    merchant: MerchantId,
    schema: &'a str,
}

/// A connection to one merchant's data, outside any transaction, on which
/// the only statements are calls of the tenant migrations' functions
/// (`posd_*`, found in the merchant's `schema`). Each call is a transaction
/// of its own and binds the merchant itself, before it touches a table:
/// one round trip where a [`TenantTx`] needs `BEGIN`, the statements and
/// `COMMIT`. Made by the executor only, as a `TenantTx` is.
pub struct TenantCalls<'a> {
    conn: &'a mut PgConnection,
    merchant: MerchantId,
    schema: &'a str,
}

impl<'a> TenantCalls<'a> {
    pub(crate) fn new(
        conn: &'a mut PgConnection,
        merchant: MerchantId,
        schema: &'a str,
    ) -> TenantCalls<'a> {
        TenantCalls {
            conn,
            merchant,
            schema,
        }
    }

    pub fn merchant(&self) -> MerchantId {
        self.merchant
    }
}

/// What the tenant functions run on: a bound transaction, or calls that
/// bind themselves. Sealed: only this module's types are one, and what it
/// hands out is not reachable outside the crate.
pub trait Bound: private::Parts {
    /// The merchant it is bound to.
    fn merchant_id(&self) -> MerchantId;
}

impl Bound for TenantTx<'_> {
    fn merchant_id(&self) -> MerchantId {
        self.merchant
    }
}

impl Bound for TenantCalls<'_> {
    fn merchant_id(&self) -> MerchantId {
        self.merchant
    }
}

mod private {
    use diesel::PgConnection;

    use crate::db::ids::MerchantId;

    pub trait Parts {
        /// The connection, the merchant and the schema.
        fn parts(&mut self) -> (&mut PgConnection, MerchantId, &str);
    }

    impl Parts for super::TenantTx<'_> {
        fn parts(&mut self) -> (&mut PgConnection, MerchantId, &str) {
            (self.conn, self.merchant, self.schema)
        }
    }

    impl Parts for super::TenantCalls<'_> {
        fn parts(&mut self) -> (&mut PgConnection, MerchantId, &str) {
            (self.conn, self.merchant, self.schema)
        }
    }
}

impl TenantTx<'_> {
    /// Runs `f` in a new transaction bound to `merchant` (`posd.merchant_id`)
    /// and `schema` (`search_path`). The binding is `set_config(..., true)`,
    /// that is `SET LOCAL`: it ends with the transaction and can never leak
    /// to the next user of a pooled connection. `BEGIN` and the binding go in
    /// one simple query: one round trip, and no statement to parse and plan
    /// through the extended protocol. The values are a UUID and a quoted
    /// identifier, written as escaped string literals.
    pub(crate) fn transaction<T, E, F>(
        conn: &mut PgConnection,
        merchant: MerchantId,
        schema: &str,
        f: F,
    ) -> Result<T, E>
    where
        F: FnOnce(&mut TenantTx<'_>) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
        let sql = format!(
            "BEGIN; SELECT set_config('posd.merchant_id', {}, true), set_config('search_path', {}, true)",
            quote_literal(&merchant.0.to_string()),
            quote_literal(&quote_ident(schema)),
        );
        if let Err(e) = AnsiTransactionManager::begin_transaction_sql(conn, &sql) {
            // BEGIN may have run and the binding failed: never hand the pool
            // a connection inside a transaction it does not know about.
            let _ = conn.batch_execute("ROLLBACK");
            return Err(e.into());
        }
        match f(&mut TenantTx {
            conn,
            merchant,
            schema,
        }) {
            Ok(value) => {
                AnsiTransactionManager::commit_transaction(conn)?;
                Ok(value)
            }
            Err(e) => match AnsiTransactionManager::rollback_transaction(conn) {
                Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(e),
                Err(rollback) => Err(rollback.into()),
            },
        }
    }

    /// A handle that binds nothing, for the benchmark control route only
    /// (feature `bench-control`): its connection reaches the tables without
    /// row-level security, so nothing but the query's own filter scopes it.
    #[cfg(feature = "bench-control")]
    pub(crate) fn unbound(conn: &mut PgConnection, merchant: MerchantId) -> TenantTx<'_> {
        TenantTx {
            conn,
            merchant,
            schema: "",
        }
    }

    pub fn merchant(&self) -> MerchantId {
        self.merchant
    }

    /// Runs `f` in a savepoint: if it fails, only its own writes are undone
    /// and the transaction goes on.
    pub fn savepoint<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut TenantTx<'_>) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        let (merchant, schema) = (self.merchant, self.schema);
        diesel::Connection::transaction(self.conn, |conn| {
            f(&mut TenantTx {
                conn,
                merchant,
                schema,
            })
        })
    }
}

/// A call of function `name` of `schema` (one of the tenant migrations'
/// `posd_*` functions) with `args` placeholders, answering its rows: bind
/// them in order.
fn function_call(
    schema: &str,
    name: &str,
    args: usize,
) -> crate::db::statement::Statement<'static> {
    let placeholders: Vec<String> = (1..=args).map(|i| format!("${i}")).collect();
    crate::db::statement::call(format!(
        "SELECT * FROM {}.{name}({})",
        quote_ident(schema),
        placeholders.join(", ")
    ))
}

/// Quotes an SQL identifier.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an SQL string literal (`E'...'`, whatever `standard_conforming_strings` says).
pub fn quote_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

#[derive(diesel::QueryableByName)]
struct Present {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    present: bool,
}

#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    version: Option<String>,
}

impl TenantTx<'_> {
    /// Whether the merchant has any row in any of `tables` here.
    pub fn has_data(&mut self, tables: &[&str]) -> diesel::QueryResult<bool> {
        for table in tables {
            let q = format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE merchant_id = $1) AS present",
                quote_ident(table)
            );
            let row: Present = diesel::sql_query(q)
                .bind::<diesel::sql_types::Uuid, _>(self.merchant.0)
                .get_result(self.conn)?;
            if row.present {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The newest tenant migration applied to the bound schema.
    pub fn schema_version(&mut self) -> diesel::QueryResult<Option<String>> {
        diesel::sql_query("SELECT max(version)::text AS version FROM __diesel_schema_migrations")
            .get_result::<Version>(self.conn)
            .map(|v| v.version)
    }
}

#[derive(diesel::QueryableByName)]
struct Stored {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    rows: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    bytes: i64,
}

impl TenantTx<'_> {
    /// The merchant's rows in `tables` and the bytes they take: with
    /// `own_tables` (the tables hold only this merchant's rows: a schema or
    /// dedicated tenant) the tables' total size, indexes and TOAST
    /// included; otherwise the size of the merchant's rows themselves.
    pub fn storage(
        &mut self,
        tables: &[&str],
        own_tables: bool,
    ) -> diesel::QueryResult<(i64, i64)> {
        let (mut rows, mut bytes) = (0_i64, 0_i64);
        for table in tables {
            let t = quote_ident(table);
            let q = if own_tables {
                format!(
                    "SELECT count(*)::bigint AS rows, pg_total_relation_size({})::bigint AS bytes \
                     FROM {t} WHERE merchant_id = $1",
                    quote_literal(&t)
                )
            } else {
                format!(
                    "SELECT count(*)::bigint AS rows, coalesce(sum(pg_column_size(t.*)), 0)::bigint AS bytes \
                     FROM {t} t WHERE merchant_id = $1"
                )
            };
            let s: Stored = diesel::sql_query(q)
                .bind::<diesel::sql_types::Uuid, _>(self.merchant.0)
                .get_result(self.conn)?;
            rows = rows.saturating_add(s.rows);
            bytes = bytes.saturating_add(s.bytes);
        }
        Ok((rows, bytes))
    }
}
