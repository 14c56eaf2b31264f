//! The control plane: SHARED tables and their typed queries.
//!
//! Functions take a [`Platform`] handle. Data-plane tables are not visible
//! from here (see `db::tenant`).

mod schema;

pub mod audit;
pub mod domains;
pub mod exports;
pub mod integrations;
pub mod jobs;
pub mod merchants;
pub mod migration_state;
pub mod moves;
pub mod plans;
pub mod runs;
pub mod servers;
pub mod staff;
pub mod tenant_databases;
pub mod usage;

use diesel::PgConnection;

/// A connection to the platform database used for control-plane queries.
pub struct Platform<'a> {
    conn: &'a mut PgConnection,
}

impl<'a> Platform<'a> {
    pub fn new(conn: &'a mut PgConnection) -> Self {
        Self { conn }
    }

    /// Runs `f` in one transaction.
    pub fn transaction<T, E>(
        &mut self,
        f: impl FnOnce(&mut Platform<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<diesel::result::Error>,
    {
        use diesel::Connection;
        self.conn.transaction(|conn| f(&mut Platform { conn }))
    }
}

impl Platform<'_> {
    /// A round trip to the database.
    pub fn ping(&mut self) -> diesel::QueryResult<()> {
        use diesel::RunQueryDsl;
        diesel::sql_query("SELECT 1").execute(self.conn).map(drop)
    }
}
