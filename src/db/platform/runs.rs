//! Provisioning runs: the durable record of each provisioning attempt.
//!
//! A run's id may be chosen by the client, so that a repeated call finds
//! the same run instead of starting another.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::{Platform, schema::provisioning_runs};
use crate::db::{
    ids::{MerchantId, RunId, ServerId},
    kinds::{ProvisioningStatus, Tier},
};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = provisioning_runs, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningRun {
    pub id: RunId,
    pub merchant_id: MerchantId,
    pub target_tier: Tier,
    /// The merchant brought the database (`databaseUrl`).
    pub byo: bool,
    pub status: ProvisioningStatus,
    /// The step being run, or the last one run.
    pub step: Option<String>,
    pub failed_step: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The registered server the database is created on (`None`: the
    /// default server, or none for a schema or a database brought).
    pub server_id: Option<ServerId>,
}

impl ProvisioningRun {
    /// Whether the run has ended (`ready` or `failed`).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status,
            ProvisioningStatus::Ready | ProvisioningStatus::Failed
        )
    }

    pub fn find(p: &mut Platform<'_>, id: RunId) -> QueryResult<Option<ProvisioningRun>> {
        provisioning_runs::table
            .find(id)
            .select(ProvisioningRun::as_select())
            .first(p.conn)
            .optional()
    }

    /// The newest run that placed the merchant.
    pub fn latest_ready(
        p: &mut Platform<'_>,
        merchant: MerchantId,
    ) -> QueryResult<Option<ProvisioningRun>> {
        provisioning_runs::table
            .filter(provisioning_runs::merchant_id.eq(merchant))
            .filter(provisioning_runs::status.eq(ProvisioningStatus::Ready))
            .order(provisioning_runs::updated_at.desc())
            .select(ProvisioningRun::as_select())
            .first(p.conn)
            .optional()
    }

    /// Records a new run in `pending`.
    pub fn start(
        p: &mut Platform<'_>,
        id: RunId,
        merchant: MerchantId,
        target_tier: Tier,
        byo: bool,
        server: Option<ServerId>,
    ) -> QueryResult<ProvisioningRun> {
        diesel::insert_into(provisioning_runs::table)
            .values((
                provisioning_runs::id.eq(id),
                provisioning_runs::merchant_id.eq(merchant),
                provisioning_runs::target_tier.eq(target_tier),
                provisioning_runs::byo.eq(byo),
                provisioning_runs::server_id.eq(server),
                provisioning_runs::status.eq(ProvisioningStatus::Pending),
            ))
            .returning(ProvisioningRun::as_returning())
            .get_result(p.conn)
    }

    /// Moves the run to `status`, now running `step`.
    pub fn advance(
        p: &mut Platform<'_>,
        id: RunId,
        status: ProvisioningStatus,
        step: &str,
    ) -> QueryResult<ProvisioningRun> {
        diesel::update(provisioning_runs::table.find(id))
            .set((
                provisioning_runs::status.eq(status),
                provisioning_runs::step.eq(step),
                provisioning_runs::updated_at.eq(diesel::dsl::now),
            ))
            .returning(ProvisioningRun::as_returning())
            .get_result(p.conn)
    }

    pub fn fail(
        p: &mut Platform<'_>,
        id: RunId,
        step: &str,
        code: &str,
        error: &str,
    ) -> QueryResult<ProvisioningRun> {
        diesel::update(provisioning_runs::table.find(id))
            .set((
                provisioning_runs::status.eq(ProvisioningStatus::Failed),
                provisioning_runs::failed_step.eq(step),
                provisioning_runs::error_code.eq(code),
                provisioning_runs::error.eq(error),
                provisioning_runs::updated_at.eq(diesel::dsl::now),
            ))
            .returning(ProvisioningRun::as_returning())
            .get_result(p.conn)
    }
}
