//! Dedicated database servers: where posd creates a dedicated merchant's
//! database.
//!
//! - The **default** server is the one of `POSD_DEDICATED_SERVER_URL`; it is
//!   not a row, has no capacity limit, and its databases' connections count
//!   against `POSD_CONNECTION_BUDGET`.
//! - Operators **register** more (`POST /admin/servers`): a name, the owner
//!   URL of a role with `CREATEDB` (checked, then stored sealed), a
//!   capacity (databases posd may create there) and a connection budget
//!   (connections each posd instance may hold to its databases). A server
//!   being **drained** gets no new database; those there stay until moved.
//! - **Placement**: a provisioning or a move onto the dedicated tier names a
//!   server, or takes the active registered server with the most room,
//!   then the default server when no registered one has room. The choice
//!   is recorded with the run (a resumed provisioning goes back to it) and
//!   with the database (`tenant_databases.server_id`), so that every later
//!   step (migrations, moves, deprovisioning, cleanup) reaches the server
//!   the database is on.
//! - A server that goes down affects only its merchants: their pools fail
//!   fast behind their breakers, other servers' merchants do not wait, and
//!   `/readyz` names the servers whose last connection attempt failed.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use diesel::{OptionalExtension, QueryableByName, RunQueryDsl, sql_types::Bool};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::Tenancy;
use crate::{
    config::Settings,
    crypto::Purpose,
    db::{
        ids::ServerId,
        kinds::ServerStatus,
        platform::{Platform, servers::DatabaseServer},
        pool,
    },
};

/// The name of the server of `POSD_DEDICATED_SERVER_URL`.
pub const DEFAULT: &str = "default";

/// Why a server cannot be registered or chosen. The text is the message a
/// client reads (`crate::api::errors` gives each its status and code).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("server: no server is named `{0}`")]
    Unknown(String),
    #[error("server `{0}` is being drained: no new database goes there")]
    Draining(String),
    #[error("name: a server is already named `{0}`")]
    NameTaken(String),
    #[error(
        "name: must be 1 to 63 lower-case letters, digits and hyphens, starting with a letter or digit, and not `default`"
    )]
    InvalidName,
    #[error("url: {0}")]
    InvalidUrl(String),
    #[error("url: cannot connect: {0}")]
    Unreachable(String),
    #[error("url: role `{0}` may not create databases (CREATEDB)")]
    NotCreatedb(String),
    #[error(
        "url: the server has no role `{0}`: posd serves its databases as that role; create it there with the same password as on the platform database"
    )]
    NoAppRole(String),
    #[error("{0}: must be from 1 to {1}")]
    OutOfRange(&'static str, i32),
    #[error("the sealed URL of server {0} cannot be opened: {1}")]
    Sealed(ServerId, String),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

/// A server to register.
#[derive(Debug)]
pub struct NewServer {
    pub name: String,
    pub url: SecretString,
    pub capacity: i32,
    pub connection_budget: i32,
}

/// The most databases, and connections, one server may be given.
pub const MAX_CAPACITY: i32 = 100_000;
pub const MAX_BUDGET: i32 = 10_000;

fn valid_name(name: &str) -> bool {
    name != DEFAULT && crate::config::is_slug(name, 1)
}

/// The owner URL of `server` (`None`: the default server).
pub fn owner_url(
    settings: &Settings,
    p: &mut Platform<'_>,
    server: Option<ServerId>,
) -> Result<SecretString, ServerError> {
    let Some(id) = server else {
        return Ok(settings.dedicated_server_url.clone());
    };
    let s = DatabaseServer::find(p, id)?;
    let plain = settings
        .keyring
        .open(
            uuid::Uuid::nil(),
            Purpose::ServerUrl { server: id.0 },
            &s.sealed_url,
        )
        .map_err(|e| ServerError::Sealed(id, e.to_string()))?;
    let text = String::from_utf8(plain.to_vec())
        .map_err(|_| ServerError::Sealed(id, "not UTF-8".into()))?;
    Ok(SecretString::from(text))
}

/// Where a new dedicated database goes: the server named (`default` is the
/// default server), or the active registered server with the most room,
/// or the default server.
pub fn choose(p: &mut Platform<'_>, named: Option<&str>) -> Result<Option<ServerId>, ServerError> {
    match named {
        Some(DEFAULT) => Ok(None),
        Some(name) => {
            let s = DatabaseServer::find_by_name(p, name)
                .optional()?
                .ok_or_else(|| ServerError::Unknown(name.to_string()))?;
            if s.status == ServerStatus::Draining {
                return Err(ServerError::Draining(s.name));
            }
            Ok(Some(s.id))
        }
        None => Ok(DatabaseServer::roomiest(p)?),
    }
}

#[derive(QueryableByName)]
struct MayCreate {
    #[diesel(sql_type = Bool)]
    ok: bool,
}

/// Checks the server (it answers, its role may create databases), seals
/// its URL and registers it.
pub fn register(
    app: &Tenancy,
    p: &mut Platform<'_>,
    new: &NewServer,
) -> Result<DatabaseServer, ServerError> {
    if !valid_name(&new.name) {
        return Err(ServerError::InvalidName);
    }
    if !(1..=MAX_CAPACITY).contains(&new.capacity) {
        return Err(ServerError::OutOfRange("capacity", MAX_CAPACITY));
    }
    if !(1..=MAX_BUDGET).contains(&new.connection_budget) {
        return Err(ServerError::OutOfRange("connectionBudget", MAX_BUDGET));
    }
    let url = url::Url::parse(new.url.expose_secret())
        .map_err(|e| ServerError::InvalidUrl(format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(ServerError::InvalidUrl(
            "must be a postgres:// or postgresql:// URL".into(),
        ));
    }
    let user = url.username().to_string();
    // An unreachable host answers within the pools' connect timeout, not
    // the operating system's.
    let probe = SecretString::from(super::pools::with_connect_timeout(
        new.url.expose_secret(),
        app.settings.pool_connect_timeout,
    ));
    let mut conn = pool::connect(&probe)
        .map_err(|e| ServerError::Unreachable(crate::redact::redact_text(&e.to_string())))?;
    let may: MayCreate = diesel::sql_query(
        "SELECT rolcreatedb OR rolsuper AS ok FROM pg_roles WHERE rolname = current_user",
    )
    .get_result(&mut conn)?;
    if !may.ok {
        return Err(ServerError::NotCreatedb(user));
    }
    let app_role: MayCreate =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS ok")
            .bind::<diesel::sql_types::Text, _>(&*app.app_role)
            .get_result(&mut conn)?;
    if !app_role.ok {
        return Err(ServerError::NoAppRole(app.app_role.to_string()));
    }
    let id = ServerId(uuid::Uuid::now_v7());
    let keyring = &app.settings.keyring;
    let sealed = keyring
        .seal(
            uuid::Uuid::nil(),
            Purpose::ServerUrl { server: id.0 },
            new.url.expose_secret().as_bytes(),
        )
        .map_err(|e| ServerError::Sealed(id, e.to_string()))?;
    DatabaseServer::insert(
        p,
        &DatabaseServer {
            id,
            name: new.name.clone(),
            sealed_url: sealed,
            key_id: keyring.active_key_id().to_string(),
            status: ServerStatus::Active,
            capacity: new.capacity,
            connection_budget: new.connection_budget,
            created_at: chrono::Utc::now(),
        },
    )
    .map_err(|e| match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => ServerError::NameTaken(new.name.clone()),
        e => e.into(),
    })
}

/// Where a dedicated database is: on a server posd creates databases on
/// (`None`: the default one), or the merchant's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Server(Option<ServerId>),
    Own,
}

/// What this instance knows of each server's health: the last attempt to
/// open a connection to one of its databases, failed or not.
#[derive(Default)]
pub struct Health {
    last: Mutex<HashMap<Option<ServerId>, (bool, Instant)>>,
    /// Whether any server is marked unhealthy: a checkout of a healthy
    /// system reads only this.
    failing: AtomicBool,
}

/// A server whose last connection attempt failed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unhealthy {
    /// `null`: the default server.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub server: Option<ServerId>,
    /// Seconds since that failure.
    pub failed_secs_ago: u64,
}

impl Health {
    pub fn record(&self, server: Option<ServerId>, ok: bool) {
        let mut last = self.last.lock();
        last.insert(server, (ok, Instant::now()));
        self.failing
            .store(last.values().any(|(ok, _)| !ok), Ordering::Relaxed);
    }

    /// A connection was had: the server is healthy again if it was not
    /// (one atomic load while every server is healthy).
    pub fn recovered(&self, server: Option<ServerId>) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        if self.last.lock().get(&server).is_some_and(|(ok, _)| !ok) {
            self.record(server, true);
        }
    }

    /// The servers whose last connection attempt failed.
    pub fn unhealthy(&self) -> Vec<Unhealthy> {
        let mut out: Vec<Unhealthy> = self
            .last
            .lock()
            .iter()
            .filter(|(_, (ok, _))| !ok)
            .map(|(s, (_, at))| Unhealthy {
                server: *s,
                failed_secs_ago: at.elapsed().as_secs(),
            })
            .collect();
        out.sort_by_key(|u| u.server);
        out
    }
}
