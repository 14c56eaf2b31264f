//! The custom domains merchants are reached at. A domain routes requests
//! to its merchant only once verified.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::{
    Platform,
    schema::{merchant_domains as md, merchants},
};
use crate::db::ids::MerchantId;

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = md, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct MerchantDomain {
    /// Lower-case, without a trailing dot.
    pub domain: String,
    pub merchant_id: MerchantId,
    /// When an operator confirmed that the merchant owns the domain; until
    /// then the domain does not route.
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl MerchantDomain {
    /// The merchant's domains, by name.
    pub fn list(p: &mut Platform<'_>, merchant: MerchantId) -> QueryResult<Vec<MerchantDomain>> {
        md::table
            .filter(md::merchant_id.eq(merchant))
            .order(md::domain.asc())
            .select(MerchantDomain::as_select())
            .load(p.conn)
    }

    pub fn find(p: &mut Platform<'_>, domain: &str) -> QueryResult<Option<MerchantDomain>> {
        md::table
            .find(domain)
            .select(MerchantDomain::as_select())
            .first(p.conn)
            .optional()
    }

    /// Registers `domain` for `merchant`, pending verification; `None` when
    /// the domain is registered already (to this merchant or another).
    pub fn insert(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        domain: &str,
    ) -> QueryResult<Option<MerchantDomain>> {
        diesel::insert_into(md::table)
            .values((md::domain.eq(domain), md::merchant_id.eq(merchant)))
            .on_conflict(md::domain)
            .do_nothing()
            .returning(MerchantDomain::as_returning())
            .get_result(p.conn)
            .optional()
    }

    /// Marks the merchant's domain verified (the first time only);
    /// `NotFound` when the merchant has no such domain.
    pub fn verify(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        domain: &str,
    ) -> QueryResult<MerchantDomain> {
        diesel::update(md::table.find(domain).filter(md::merchant_id.eq(merchant)))
            .set(md::verified_at.eq(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
            >("coalesce(verified_at, now())")))
            .returning(MerchantDomain::as_returning())
            .get_result(p.conn)
    }

    /// Removes the merchant's domain; whether it had it.
    pub fn delete(p: &mut Platform<'_>, merchant: MerchantId, domain: &str) -> QueryResult<bool> {
        diesel::delete(md::table.find(domain).filter(md::merchant_id.eq(merchant)))
            .execute(p.conn)
            .map(|n| n > 0)
    }

    /// The merchant a verified `domain` routes to: its id and slug.
    pub fn route(p: &mut Platform<'_>, domain: &str) -> QueryResult<Option<(MerchantId, String)>> {
        md::table
            .inner_join(merchants::table)
            .filter(md::domain.eq(domain))
            .filter(md::verified_at.is_not_null())
            .select((merchants::id, merchants::slug))
            .first(p.conn)
            .optional()
    }
}
