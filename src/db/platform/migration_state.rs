//! Where each schema or dedicated tenant stands with `tenant_migrations/`,
//! and the fleet runs that move them.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Array, Nullable, Text},
    upsert::excluded,
};
use serde::Serialize;

use super::{
    Platform,
    schema::{tenant_migration_runs, tenant_migration_state},
};
use crate::db::{
    ids::{MerchantId, RunId},
    kinds::MigrationStatus,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = tenant_migration_state, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct MigrationState {
    pub merchant_id: MerchantId,
    pub version: Option<String>,
    pub status: MigrationStatus,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub run_id: Option<RunId>,
}

impl MigrationState {
    /// A tenant standing at `version`, not by a fleet run.
    pub fn ok(merchant: MerchantId, version: Option<String>) -> Self {
        MigrationState {
            merchant_id: merchant,
            version,
            status: MigrationStatus::Ok,
            error: None,
            duration_ms: 0,
            run_id: None,
        }
    }

    pub fn record(p: &mut Platform<'_>, s: &MigrationState) -> QueryResult<()> {
        diesel::insert_into(tenant_migration_state::table)
            .values(s)
            .on_conflict(tenant_migration_state::merchant_id)
            .do_update()
            .set((
                tenant_migration_state::version.eq(excluded(tenant_migration_state::version)),
                tenant_migration_state::status.eq(excluded(tenant_migration_state::status)),
                tenant_migration_state::error.eq(excluded(tenant_migration_state::error)),
                tenant_migration_state::duration_ms
                    .eq(excluded(tenant_migration_state::duration_ms)),
                tenant_migration_state::run_id.eq(excluded(tenant_migration_state::run_id)),
                tenant_migration_state::updated_at.eq(diesel::dsl::now),
            ))
            .execute(p.conn)
            .map(drop)
    }

    pub fn find(p: &mut Platform<'_>, merchant: MerchantId) -> QueryResult<Option<MigrationState>> {
        tenant_migration_state::table
            .find(merchant)
            .select(MigrationState::as_select())
            .first(p.conn)
            .optional()
    }

    /// Forgets a tenant's state (it was deprovisioned).
    pub fn delete(p: &mut Platform<'_>, merchant: MerchantId) -> QueryResult<()> {
        diesel::delete(tenant_migration_state::table.find(merchant))
            .execute(p.conn)
            .map(drop)
    }

    pub fn all(p: &mut Platform<'_>) -> QueryResult<Vec<MigrationState>> {
        tenant_migration_state::table
            .select(MigrationState::as_select())
            .load(p.conn)
    }
}

#[derive(QueryableByName)]
struct SchemaVersion {
    #[diesel(sql_type = Text)]
    schema_name: String,
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
}

/// The newest applied tenant migration of each schema in the platform
/// database, in one round trip.
pub fn schema_versions(
    p: &mut Platform<'_>,
    schemas: &[String],
) -> QueryResult<Vec<(String, Option<String>)>> {
    diesel::sql_query("SELECT schema_name, version FROM posd_tenant_versions($1)")
        .bind::<Array<Text>, _>(schemas)
        .load::<SchemaVersion>(p.conn)
        .map(|rows| {
            rows.into_iter()
                .map(|r| (r.schema_name, r.version))
                .collect()
        })
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = tenant_migration_runs, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct FleetRun {
    pub id: RunId,
    pub requested_by: String,
    pub target_version: String,
    pub dry_run: bool,
    pub total: i32,
    pub migrated: i32,
    pub failed: i32,
    pub skipped: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl FleetRun {
    pub fn find(p: &mut Platform<'_>, id: RunId) -> QueryResult<FleetRun> {
        tenant_migration_runs::table
            .find(id)
            .select(FleetRun::as_select())
            .first(p.conn)
    }

    /// The tenants this run left failed (as their state still says).
    pub fn failures(p: &mut Platform<'_>, id: RunId) -> QueryResult<Vec<MigrationState>> {
        tenant_migration_state::table
            .filter(tenant_migration_state::run_id.eq(id))
            .filter(tenant_migration_state::status.eq(MigrationStatus::Failed))
            .select(MigrationState::as_select())
            .load(p.conn)
    }

    pub fn start(
        p: &mut Platform<'_>,
        requested_by: &str,
        target_version: &str,
        dry_run: bool,
        total: i32,
    ) -> QueryResult<FleetRun> {
        diesel::insert_into(tenant_migration_runs::table)
            .values((
                tenant_migration_runs::id.eq(RunId(uuid::Uuid::now_v7())),
                tenant_migration_runs::requested_by.eq(requested_by),
                tenant_migration_runs::target_version.eq(target_version),
                tenant_migration_runs::dry_run.eq(dry_run),
                tenant_migration_runs::total.eq(total),
            ))
            .returning(FleetRun::as_returning())
            .get_result(p.conn)
    }

    pub fn finish(
        p: &mut Platform<'_>,
        id: RunId,
        migrated: i32,
        failed: i32,
        skipped: i32,
    ) -> QueryResult<FleetRun> {
        diesel::update(tenant_migration_runs::table.find(id))
            .set((
                tenant_migration_runs::migrated.eq(migrated),
                tenant_migration_runs::failed.eq(failed),
                tenant_migration_runs::skipped.eq(skipped),
                tenant_migration_runs::finished_at.eq(diesel::dsl::now),
            ))
            .returning(FleetRun::as_returning())
            .get_result(p.conn)
    }
}
