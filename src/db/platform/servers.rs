//! Registered dedicated database servers (`database_servers`); see
//! `crate::tenancy::servers`.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{BigInt, Integer, Nullable, Text, Uuid as SqlUuid},
};
use serde::Serialize;

use super::{Platform, schema::database_servers as ds};
use crate::db::{ids::ServerId, kinds::ServerStatus};

/// A registered server, as stored (its URL sealed).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ds, check_for_backend(diesel::pg::Pg))]
pub struct DatabaseServer {
    pub id: ServerId,
    pub name: String,
    pub sealed_url: Vec<u8>,
    pub key_id: String,
    pub status: ServerStatus,
    pub capacity: i32,
    pub connection_budget: i32,
    #[diesel(skip_insertion)]
    pub created_at: DateTime<Utc>,
}

/// A server with the databases posd placed on it.
#[derive(Debug, Clone, QueryableByName, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerUse {
    /// `null` for the default server.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub id: Option<ServerId>,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub status: ServerStatus,
    /// `null`: no limit (the default server).
    #[diesel(sql_type = Nullable<Integer>)]
    pub capacity: Option<i32>,
    #[diesel(sql_type = BigInt)]
    pub databases: i64,
    /// `null`: `POSD_CONNECTION_BUDGET` (the default server).
    #[diesel(sql_type = Nullable<Integer>)]
    pub connection_budget: Option<i32>,
}

impl DatabaseServer {
    pub fn insert(p: &mut Platform<'_>, s: &DatabaseServer) -> QueryResult<DatabaseServer> {
        diesel::insert_into(ds::table)
            .values(s)
            .returning(DatabaseServer::as_returning())
            .get_result(p.conn)
    }

    pub fn find(p: &mut Platform<'_>, id: ServerId) -> QueryResult<DatabaseServer> {
        ds::table
            .find(id)
            .select(DatabaseServer::as_select())
            .first(p.conn)
    }

    pub fn find_by_name(p: &mut Platform<'_>, name: &str) -> QueryResult<DatabaseServer> {
        ds::table
            .filter(ds::name.eq(name))
            .select(DatabaseServer::as_select())
            .first(p.conn)
    }

    /// Every registered server (for key rotation and budgets).
    pub fn all(p: &mut Platform<'_>) -> QueryResult<Vec<DatabaseServer>> {
        ds::table
            .order(ds::created_at.asc())
            .select(DatabaseServer::as_select())
            .load(p.conn)
    }

    pub fn set_status(
        p: &mut Platform<'_>,
        id: ServerId,
        status: ServerStatus,
    ) -> QueryResult<DatabaseServer> {
        diesel::update(ds::table.find(id))
            .set(ds::status.eq(status))
            .returning(DatabaseServer::as_returning())
            .get_result(p.conn)
    }

    /// Replaces a sealed URL, if it is still `previous` (key rotation).
    pub fn reseal(
        p: &mut Platform<'_>,
        id: ServerId,
        previous: &[u8],
        sealed: &[u8],
        key_id: &str,
    ) -> QueryResult<bool> {
        diesel::update(ds::table.find(id).filter(ds::sealed_url.eq(previous)))
            .set((ds::sealed_url.eq(sealed), ds::key_id.eq(key_id)))
            .execute(p.conn)
            .map(|n| n == 1)
    }

    /// The active registered server with the most room left (capacity less
    /// the databases posd placed there), if one has room.
    pub fn roomiest(p: &mut Platform<'_>) -> QueryResult<Option<ServerId>> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = SqlUuid)]
            id: uuid::Uuid,
        }
        diesel::sql_query(
            "SELECT s.id FROM database_servers s
              WHERE s.status = 'active'
                AND s.capacity > (SELECT count(*) FROM tenant_databases d WHERE d.server_id = s.id)
              ORDER BY s.capacity - (SELECT count(*) FROM tenant_databases d WHERE d.server_id = s.id) DESC,
                       s.created_at
              LIMIT 1",
        )
        .get_result::<Id>(p.conn)
        .optional()
        .map(|r| r.map(|r| ServerId(r.id)))
    }

    /// The default server, then every registered one, with their databases.
    pub fn usage(p: &mut Platform<'_>) -> QueryResult<Vec<ServerUse>> {
        diesel::sql_query(
            "SELECT NULL::uuid AS id, 'default' AS name, 'active' AS status, NULL::int AS capacity,
                    (SELECT count(*) FROM tenant_databases WHERE server_id IS NULL AND created_by_posd) AS databases,
                    NULL::int AS connection_budget
             UNION ALL
             SELECT * FROM (
               SELECT s.id, s.name, s.status, s.capacity,
                      (SELECT count(*) FROM tenant_databases d WHERE d.server_id = s.id) AS databases,
                      s.connection_budget
                 FROM database_servers s ORDER BY s.created_at) r",
        )
        .load(p.conn)
    }
}
