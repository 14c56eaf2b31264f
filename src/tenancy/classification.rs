//! The one list of which table belongs to which plane.
//!
//! SHARED tables live in the platform database's `public` schema (control
//! plane). TENANT tables are created by `tenant_migrations/` wherever the
//! merchant's data lives. A new table is TENANT unless there is a reason for
//! it to be SHARED: moving TENANT→SHARED is a drop on every tenant database,
//! SHARED→TENANT is a data migration.
//!
//! At boot, [`check`] refuses to start when a table in the platform database
//! is not listed here, or a TENANT table lacks `merchant_id` or forced RLS.

use diesel::{
    PgConnection, QueryableByName, RunQueryDsl,
    sql_types::{Bool, Text},
};

/// Control-plane tables.
pub const SHARED: &[&str] = &[
    "merchants",
    "tenant_databases",
    "staff_users",
    "provisioning_runs",
    "admin_audit",
    "tenant_migration_state",
    "tenant_migration_runs",
    "tenant_exports",
];

/// Data-plane tables.
pub const TENANT: &[&str] = &[
    "products",
    "categories",
    "inventory_levels",
    "stock_movements",
    "customers",
    "orders",
    "order_lines",
    "payments",
    "refunds",
    "refund_lines",
    "idempotency_keys",
    "product_versions",
];

/// Bookkeeping tables that belong to no plane.
const BOOKKEEPING: &[&str] = &["__diesel_schema_migrations"];

const FILE: &str = "src/tenancy/classification.rs";

#[derive(QueryableByName)]
struct TableInfo {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    has_merchant_id: bool,
    #[diesel(sql_type = Bool)]
    rls: bool,
    #[diesel(sql_type = Bool)]
    forced: bool,
}

/// Checks the platform database: `public` must hold only SHARED tables,
/// `shared_schema` only TENANT tables, each with `merchant_id` and RLS
/// enabled and forced. Returns every problem found.
pub fn check(conn: &mut PgConnection, shared_schema: &str) -> Result<(), Vec<String>> {
    let tables: Vec<TableInfo> = diesel::sql_query(
        "SELECT n.nspname::text AS schema, c.relname::text AS name,
                EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'merchant_id'
                          AND a.attnum > 0 AND NOT a.attisdropped) AS has_merchant_id,
                c.relrowsecurity AS rls, c.relforcerowsecurity AS forced
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', $1)
         ORDER BY 1, 2",
    )
    .bind::<Text, _>(shared_schema)
    .load(conn)
    .map_err(|e| vec![format!("could not list tables: {e}")])?;
    let problems = problems(&tables, shared_schema);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn problems(tables: &[TableInfo], shared_schema: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables {
        let name = t.name.as_str();
        if BOOKKEEPING.contains(&name) {
            continue;
        }
        let qualified = format!("{}.{}", t.schema, t.name);
        let shared = SHARED.contains(&name);
        let tenant = TENANT.contains(&name);
        if !shared && !tenant {
            out.push(format!(
                "table {qualified} is not classified: add it to SHARED or TENANT in {FILE}"
            ));
        } else if t.schema == "public" && !shared {
            out.push(format!(
                "table {qualified} is classified TENANT in {FILE} but was created in the control plane (move it to tenant_migrations/)"
            ));
        } else if t.schema == shared_schema && !tenant {
            out.push(format!(
                "table {qualified} is classified SHARED in {FILE} but was created by tenant_migrations/"
            ));
        } else if tenant {
            if !t.has_merchant_id {
                out.push(format!(
                    "TENANT table {qualified} has no merchant_id column (listed in {FILE})"
                ));
            }
            if !(t.rls && t.forced) {
                out.push(format!(
                    "TENANT table {qualified} must have row-level security enabled and forced \
                     (ALTER TABLE ... ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; listed in {FILE})"
                ));
            }
        }
    }
    for name in TENANT {
        if !tables
            .iter()
            .any(|t| t.schema == shared_schema && t.name == *name)
        {
            out.push(format!(
                "TENANT table {name} (listed in {FILE}) does not exist in {shared_schema}: is a tenant migration missing?"
            ));
        }
    }
    for name in SHARED {
        if !tables
            .iter()
            .any(|t| t.schema == "public" && t.name == *name)
        {
            out.push(format!(
                "SHARED table {name} (listed in {FILE}) does not exist in the platform database"
            ));
        }
    }
    out
}
