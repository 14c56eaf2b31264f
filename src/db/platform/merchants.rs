//! Merchants and their placement.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use super::{Platform, schema::merchants};
use crate::db::{
    ids::{DatabaseId, MerchantId},
    kinds::{MerchantStatus, Tier},
};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = merchants, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Merchant {
    pub id: MerchantId,
    pub slug: String,
    pub name: String,
    pub timezone: String,
    pub currency: String,
    pub plan: String,
    pub status: MerchantStatus,
    pub tier: Tier,
    pub schema_name: String,
    pub database_id: Option<DatabaseId>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Made by posd to probe isolation (`tenancy::probe`): left out of
    /// operators' listings and of usage.
    #[serde(skip)]
    pub probe: bool,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = merchants)]
pub struct NewMerchant<'a> {
    pub id: MerchantId,
    pub slug: &'a str,
    pub name: &'a str,
    pub timezone: &'a str,
    pub currency: &'a str,
    pub plan: &'a str,
    pub probe: bool,
}

/// A new placement, written in one statement that also bumps the generation.
#[derive(Debug)]
pub struct NewPlacement<'a> {
    pub tier: Tier,
    pub schema_name: &'a str,
    pub database_id: Option<DatabaseId>,
}

impl Merchant {
    pub fn find(p: &mut Platform<'_>, id: MerchantId) -> QueryResult<Merchant> {
        merchants::table
            .find(id)
            .select(Merchant::as_select())
            .first(p.conn)
    }

    /// The merchant's placement generation; `None` when it does not exist.
    pub fn generation(p: &mut Platform<'_>, id: MerchantId) -> QueryResult<Option<i64>> {
        merchants::table
            .find(id)
            .select(merchants::generation)
            .first(p.conn)
            .optional()
    }

    pub fn find_by_slug(p: &mut Platform<'_>, slug: &str) -> QueryResult<Merchant> {
        merchants::table
            .filter(merchants::slug.eq(slug))
            .select(Merchant::as_select())
            .first(p.conn)
    }

    pub fn list(p: &mut Platform<'_>) -> QueryResult<Vec<Merchant>> {
        merchants::table
            .order(merchants::created_at.asc())
            .select(Merchant::as_select())
            .load(p.conn)
    }

    /// The probe merchants (`tenancy::probe`).
    pub fn probes(p: &mut Platform<'_>) -> QueryResult<Vec<Merchant>> {
        merchants::table
            .filter(merchants::probe)
            .order(merchants::slug.asc())
            .select(Merchant::as_select())
            .load(p.conn)
    }

    /// Merchants whose data is not on the shared tier.
    pub fn list_placed_elsewhere(p: &mut Platform<'_>) -> QueryResult<Vec<Merchant>> {
        merchants::table
            .filter(merchants::tier.ne(Tier::Shared))
            .order(merchants::slug.asc())
            .select(Merchant::as_select())
            .load(p.conn)
    }

    pub fn insert(p: &mut Platform<'_>, new: &NewMerchant<'_>) -> QueryResult<Merchant> {
        diesel::insert_into(merchants::table)
            .values(new)
            .returning(Merchant::as_returning())
            .get_result(p.conn)
    }

    /// Moves the merchant from `from_tier` to a new placement; `NotFound`
    /// when the merchant is no longer on `from_tier` (someone else moved it).
    pub fn set_placement(
        p: &mut Platform<'_>,
        id: MerchantId,
        from_tier: Tier,
        to: &NewPlacement<'_>,
    ) -> QueryResult<Merchant> {
        diesel::update(
            merchants::table
                .find(id)
                .filter(merchants::tier.eq(from_tier)),
        )
        .set((
            merchants::tier.eq(to.tier),
            merchants::schema_name.eq(to.schema_name),
            merchants::database_id.eq(to.database_id),
            merchants::generation.eq(merchants::generation + 1),
            merchants::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Merchant::as_returning())
        .get_result(p.conn)
    }

    pub fn set_status(
        p: &mut Platform<'_>,
        id: MerchantId,
        status: MerchantStatus,
    ) -> QueryResult<Merchant> {
        diesel::update(merchants::table.find(id))
            .set((
                merchants::status.eq(status),
                merchants::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Merchant::as_returning())
            .get_result(p.conn)
    }
}
