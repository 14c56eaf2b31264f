//! The registry of dedicated tenant databases (URLs stored sealed only).

use diesel::prelude::*;

use super::{Platform, schema::tenant_databases};
use crate::db::ids::{DatabaseId, MerchantId, ServerId};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tenant_databases, check_for_backend(diesel::pg::Pg))]
pub struct TenantDatabase {
    pub id: DatabaseId,
    pub merchant_id: MerchantId,
    pub database_name: String,
    pub sealed_url: Vec<u8>,
    pub key_id: String,
    pub created_by_posd: bool,
    /// The registered server it was created on; `None`: the default server
    /// (`POSD_DEDICATED_SERVER_URL`), or a database the merchant brought.
    pub server_id: Option<ServerId>,
}

impl TenantDatabase {
    pub fn find(p: &mut Platform<'_>, id: DatabaseId) -> QueryResult<TenantDatabase> {
        tenant_databases::table
            .find(id)
            .select(TenantDatabase::as_select())
            .first(p.conn)
    }

    pub fn insert(p: &mut Platform<'_>, db: &TenantDatabase) -> QueryResult<()> {
        diesel::insert_into(tenant_databases::table)
            .values(db)
            .execute(p.conn)
            .map(drop)
    }
}

impl TenantDatabase {
    /// Every registered database (for key rotation).
    pub fn all(p: &mut Platform<'_>) -> QueryResult<Vec<TenantDatabase>> {
        tenant_databases::table
            .order(tenant_databases::created_at.asc())
            .select(TenantDatabase::as_select())
            .load(p.conn)
    }

    /// Replaces a sealed URL if it is still the one read (`previous`), so a
    /// concurrent rotation cannot be overwritten. Returns whether it did.
    pub fn reseal(
        p: &mut Platform<'_>,
        id: DatabaseId,
        previous: &[u8],
        sealed: &[u8],
        key_id: &str,
    ) -> QueryResult<bool> {
        diesel::update(
            tenant_databases::table
                .find(id)
                .filter(tenant_databases::sealed_url.eq(previous)),
        )
        .set((
            tenant_databases::sealed_url.eq(sealed),
            tenant_databases::key_id.eq(key_id),
        ))
        .execute(p.conn)
        .map(|n| n == 1)
    }

    pub fn delete(p: &mut Platform<'_>, id: DatabaseId) -> QueryResult<()> {
        diesel::delete(tenant_databases::table.find(id))
            .execute(p.conn)
            .map(drop)
    }
}
