//! The record of tenant exports: deprovisioning drops a merchant's data
//! only once an export of it exists (or when forced).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::{Platform, schema::tenant_exports};
use crate::db::{ids::MerchantId, kinds::Tier};

/// A recorded export of a merchant's data (who took it, from which tier).
#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = tenant_exports, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct TenantExport {
    pub id: uuid::Uuid,
    pub merchant_id: MerchantId,
    pub tier: Tier,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
}

impl TenantExport {
    /// Records a completed export of the merchant's data on `tier`.
    pub fn record(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        tier: Tier,
        requested_by: &str,
    ) -> QueryResult<TenantExport> {
        diesel::insert_into(tenant_exports::table)
            .values((
                tenant_exports::id.eq(uuid::Uuid::now_v7()),
                tenant_exports::merchant_id.eq(merchant),
                tenant_exports::tier.eq(tier),
                tenant_exports::requested_by.eq(requested_by),
            ))
            .returning(TenantExport::as_returning())
            .get_result(p.conn)
    }

    /// The newest export of the merchant's data on `tier` taken after
    /// `since` (when the merchant was placed there), if any.
    pub fn latest_since(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        tier: Tier,
        since: DateTime<Utc>,
    ) -> QueryResult<Option<TenantExport>> {
        tenant_exports::table
            .filter(tenant_exports::merchant_id.eq(merchant))
            .filter(tenant_exports::tier.eq(tier))
            .filter(tenant_exports::created_at.ge(since))
            .order(tenant_exports::created_at.desc())
            .select(TenantExport::as_select())
            .first(p.conn)
            .optional()
    }
}
