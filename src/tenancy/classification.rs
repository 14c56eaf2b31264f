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
//!
//! The same rules hold in every schema tenant's schema and in every
//! dedicated database, but a problem there is the tenant's alone: posd
//! boots, serves every other tenant, and answers that tenant's requests 503
//! `tenant_unclassified_table` ([`Coverage`]). A tenant is checked:
//!
//! - at boot, every schema tenant in one catalog query
//!   ([`check_tenant_schemas`]);
//! - when the pool of a dedicated tenant is built;
//! - after each tenant migration run of a tenant (on demand, fleet, boot).
//!
//! A blocked tenant is served again once a check finds it clean: its next
//! request re-runs the check for it once [`RECHECK`] has passed since the
//! last one (a dedicated tenant's pool is rebuilt for it), and a migration
//! run that covers it re-runs it at once. Requests of tenants that are not
//! blocked pay one map lookup, never a catalog query.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::{
    PgConnection, QueryResult, QueryableByName, RunQueryDsl,
    sql_types::{Array, Bool, Text},
};
use parking_lot::{Mutex, RwLock};

use crate::{
    db::ids::MerchantId,
    error::{ApiError, ErrorCode},
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
    "tenant_moves",
    "plans",
    "feature_flags",
    "merchant_flag_overrides",
    "merchant_integrations",
    "merchant_domains",
    "merchant_usage",
    "jobs",
    "merchant_daily_summaries",
    "database_servers",
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
    "audit_events",
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

/// Every table of `schemas` (in the connection's database), in one query.
fn tables(conn: &mut PgConnection, schemas: &[String]) -> QueryResult<Vec<TableInfo>> {
    diesel::sql_query(
        "SELECT n.nspname::text AS schema, c.relname::text AS name,
                EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'merchant_id'
                          AND a.attnum > 0 AND NOT a.attisdropped) AS has_merchant_id,
                c.relrowsecurity AS rls, c.relforcerowsecurity AS forced
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1)
         ORDER BY 1, 2",
    )
    .bind::<Array<Text>, _>(schemas)
    .load(conn)
}

/// Checks the platform database: `public` must hold only SHARED tables,
/// `shared_schema` only TENANT tables, each with `merchant_id` and RLS
/// enabled and forced. Returns every problem found.
pub fn check(conn: &mut PgConnection, shared_schema: &str) -> Result<(), Vec<String>> {
    let tables = tables(conn, &["public".to_string(), shared_schema.to_string()])
        .map_err(|e| vec![format!("could not list tables: {e}")])?;
    let problems = problems(&tables, shared_schema);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks the schemas of schema tenants (in the platform database) in one
/// catalog query: each may hold only TENANT tables, each with `merchant_id`
/// and RLS enabled and forced. Answers the problems of each schema that has
/// any. Tables a tenant is still missing are its migrations' business, not
/// this check's.
pub fn check_tenant_schemas(
    conn: &mut PgConnection,
    schemas: &[String],
) -> QueryResult<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if schemas.is_empty() {
        return Ok(out);
    }
    for t in tables(conn, schemas)? {
        let found = table_problems(&t);
        if !found.is_empty() {
            out.entry(t.schema.clone()).or_default().extend(found);
        }
    }
    Ok(out)
}

/// Checks one tenant's schema (in a dedicated database, or one schema
/// tenant): its problems, empty when clean.
pub fn check_tenant_schema(conn: &mut PgConnection, schema: &str) -> QueryResult<Vec<String>> {
    Ok(check_tenant_schemas(conn, &[schema.to_string()])?
        .remove(schema)
        .unwrap_or_default())
}

/// The problems of one table; `public` is the control plane, any other
/// schema a data plane.
fn table_problems(t: &TableInfo) -> Vec<String> {
    let name = t.name.as_str();
    let mut out = Vec::new();
    if BOOKKEEPING.contains(&name) {
        return out;
    }
    let qualified = format!("{}.{}", t.schema, t.name);
    let shared = SHARED.contains(&name);
    let tenant = TENANT.contains(&name);
    let control = t.schema == "public";
    if !shared && !tenant {
        out.push(format!(
            "table {qualified} is not classified: add it to SHARED or TENANT in {FILE}"
        ));
    } else if control && !shared {
        out.push(format!(
            "table {qualified} is classified TENANT in {FILE} but was created in the control plane (move it to tenant_migrations/)"
        ));
    } else if !control && !tenant {
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
    out
}

fn problems(tables: &[TableInfo], shared_schema: &str) -> Vec<String> {
    let mut out: Vec<String> = tables.iter().flat_map(table_problems).collect();
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

/// How long a blocked tenant waits between two checks triggered by its
/// requests (also its `Retry-After`).
pub const RECHECK: Duration = Duration::from_secs(30);

/// A tenant whose tables fail the check: not served.
#[derive(Debug)]
pub struct Blocked {
    /// The placement generation that was checked: a new placement (moved,
    /// deprovisioned) is not blocked by what was found in the old one.
    pub generation: i64,
    /// The tables at fault, schema-qualified.
    pub tables: Vec<String>,
    /// What is wrong with them.
    pub problems: Vec<String>,
    checked_at: Mutex<Instant>,
}

impl Blocked {
    /// The answer to the tenant's requests.
    pub fn error(&self) -> ApiError {
        ApiError::unavailable(
            ErrorCode::TenantUnclassifiedTable,
            format!(
                "this merchant's data is not served: table(s) {} fail the table classification check \
                 (a table must be listed as TENANT in {FILE}, have a merchant_id column and row-level \
                 security enabled and forced); an operator must fix the table(s) or {FILE}",
                self.tables.join(", ")
            ),
            RECHECK.as_secs(),
        )
    }

    /// Whether the caller may re-run the check now: at most once per
    /// [`RECHECK`], whoever asks.
    pub fn claim_recheck(&self) -> bool {
        let mut at = self.checked_at.lock();
        if at.elapsed() >= RECHECK {
            *at = Instant::now();
            true
        } else {
            false
        }
    }
}

/// The qualified table named by a problem message (every message names it
/// right after `table `).
fn table_of(problem: &str) -> Option<String> {
    let rest = &problem[problem.find("table ")? + "table ".len()..];
    rest.split_whitespace().next().map(str::to_string)
}

/// The tenants that are not served because their tables fail the check,
/// per process. The hot path ([`Coverage::blocked`]) is an atomic load when
/// nobody is blocked, a map lookup otherwise.
#[derive(Default)]
pub struct Coverage {
    blocked: RwLock<HashMap<MerchantId, Arc<Blocked>>>,
    count: AtomicUsize,
}

impl Coverage {
    /// Whether this placement of the merchant is blocked. No I/O.
    pub fn blocked(&self, merchant: MerchantId, generation: i64) -> Option<Arc<Blocked>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.blocked
            .read()
            .get(&merchant)
            .filter(|b| b.generation == generation)
            .cloned()
    }

    /// The merchant's block, whatever its placement (for operators).
    pub fn get(&self, merchant: MerchantId) -> Option<Arc<Blocked>> {
        self.blocked.read().get(&merchant).cloned()
    }

    /// Records the result of a check of one tenant: blocks it when
    /// `problems` is not empty (logged once, with the tables, and again only
    /// if they change) or serves it again. Answers the block.
    pub fn record(
        &self,
        merchant: MerchantId,
        generation: i64,
        problems: Vec<String>,
    ) -> Option<Arc<Blocked>> {
        let mut blocked = self.blocked.write();
        if problems.is_empty() {
            if blocked.remove(&merchant).is_some() {
                self.count.store(blocked.len(), Ordering::Release);
                tracing::info!(%merchant, "tenant tables pass the classification check; serving the tenant again");
            }
            return None;
        }
        let tables: Vec<String> = problems
            .iter()
            .filter_map(|p| table_of(p))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let known = blocked
            .get(&merchant)
            .is_some_and(|b| b.generation == generation && b.problems == problems);
        if !known {
            tracing::error!(
                %merchant,
                tables = %tables.join(", "),
                problems = %problems.join("; "),
                "tenant not served: its tables fail the classification check (fix them or {FILE})"
            );
        }
        let b = Arc::new(Blocked {
            generation,
            tables,
            problems,
            checked_at: Mutex::new(Instant::now()),
        });
        blocked.insert(merchant, b.clone());
        self.count.store(blocked.len(), Ordering::Release);
        Some(b)
    }

    /// Forgets the merchant (deprovisioned, or placed anew).
    pub fn clear(&self, merchant: MerchantId) {
        let mut blocked = self.blocked.write();
        if blocked.remove(&merchant).is_some() {
            self.count.store(blocked.len(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    #![allow(
        clippy::many_single_char_names,
        reason = "short names for the fixtures"
    )]
    use super::*;

    #[test]
    fn a_block_names_its_tables_and_is_lifted_by_a_clean_check() {
        let c = Coverage::default();
        let m = MerchantId(uuid::Uuid::new_v4());
        assert!(c.blocked(m, 1).is_none());
        let t = TableInfo {
            schema: "m_1".into(),
            name: "loyalty".into(),
            has_merchant_id: true,
            rls: true,
            forced: true,
        };
        let b = c.record(m, 1, table_problems(&t)).unwrap();
        assert_eq!(b.tables, vec!["m_1.loyalty".to_string()]);
        let e = b.error();
        assert_eq!(e.code, ErrorCode::TenantUnclassifiedTable);
        assert!(e.message.contains("m_1.loyalty") && e.message.contains(FILE));
        assert!(c.blocked(m, 1).is_some());
        assert!(c.blocked(m, 2).is_none(), "another placement");
        assert!(!b.claim_recheck(), "just checked");
        c.record(m, 1, Vec::new());
        assert!(c.blocked(m, 1).is_none());
    }
}
