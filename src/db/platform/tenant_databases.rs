//! The registry of dedicated tenant databases (URLs stored sealed only).

use diesel::prelude::*;

use super::{Platform, schema::tenant_databases};
use crate::db::ids::{DatabaseId, MerchantId};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tenant_databases, check_for_backend(diesel::pg::Pg))]
pub struct TenantDatabase {
    pub id: DatabaseId,
    pub merchant_id: MerchantId,
    pub database_name: String,
    pub sealed_url: Vec<u8>,
    pub key_id: String,
    pub created_by_posd: bool,
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
