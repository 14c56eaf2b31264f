//! Provisioning runs: the durable record of each provisioning attempt.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::{Platform, schema::provisioning_runs};
use crate::db::ids::{MerchantId, RunId};

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = provisioning_runs, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningRun {
    pub id: RunId,
    pub merchant_id: MerchantId,
    pub target_tier: String,
    pub status: String,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProvisioningRun {
    pub fn start(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        target_tier: &str,
    ) -> QueryResult<ProvisioningRun> {
        diesel::insert_into(provisioning_runs::table)
            .values((
                provisioning_runs::id.eq(RunId(uuid::Uuid::now_v7())),
                provisioning_runs::merchant_id.eq(merchant),
                provisioning_runs::target_tier.eq(target_tier),
                provisioning_runs::status.eq("pending"),
            ))
            .returning(ProvisioningRun::as_returning())
            .get_result(p.conn)
    }

    pub fn advance(p: &mut Platform<'_>, id: RunId, status: &str) -> QueryResult<ProvisioningRun> {
        diesel::update(provisioning_runs::table.find(id))
            .set((
                provisioning_runs::status.eq(status),
                provisioning_runs::updated_at.eq(diesel::dsl::now),
            ))
            .returning(ProvisioningRun::as_returning())
            .get_result(p.conn)
    }

    pub fn fail(
        p: &mut Platform<'_>,
        id: RunId,
        step: &str,
        error: &str,
    ) -> QueryResult<ProvisioningRun> {
        diesel::update(provisioning_runs::table.find(id))
            .set((
                provisioning_runs::status.eq("failed"),
                provisioning_runs::failed_step.eq(step),
                provisioning_runs::error.eq(error),
                provisioning_runs::updated_at.eq(diesel::dsl::now),
            ))
            .returning(ProvisioningRun::as_returning())
            .get_result(p.conn)
    }
}
