//! r2d2 over Diesel's `PgConnection`, with an optional connection budget.
//!
//! Every pool in posd (the global one and each dedicated tenant's) is a
//! [`Pool`]. A budgeted manager takes one lease from a shared [`Budget`] per
//! open connection and returns it when the connection closes, so the total
//! number of tenant connections can never exceed the budget, however many
//! pools are alive.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::{
    Connection, PgConnection, RunQueryDsl,
    r2d2::{ConnectionManager, ManageConnection},
};
use secrecy::{ExposeSecret, SecretString};

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConn = r2d2::PooledConnection<Manager>;

/// A cap on open connections shared by many pools.
#[derive(Debug)]
pub struct Budget {
    limit: u32,
    used: AtomicU32,
}

impl Budget {
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU32::new(0),
        })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }

    fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Lease(self.clone()))
    }
}

/// One unit of a [`Budget`], held by an open connection.
#[derive(Debug)]
pub struct Lease(Arc<Budget>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection that answered this recently is handed out without a
/// check (HikariCP's `aliveBypassWindowMs`, with its default).
const ALIVE_BYPASS: Duration = Duration::from_millis(500);

/// A connection and, for budgeted pools, its lease.
pub struct Conn {
    pub conn: PgConnection,
    _lease: Option<Lease>,
    /// When the connection was last checked out (or opened).
    checked_out: Instant,
}

impl std::ops::Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

pub struct Manager {
    inner: ConnectionManager<PgConnection>,
    budget: Option<Arc<Budget>>,
    statement_timeout_ms: u128,
    /// Behind a transaction-mode pooler: see [`PoolOptions::pooler_safe`].
    pooler_safe: bool,
    /// A connection opened before the pool (see [`open`]), handed out as
    /// the pool's first.
    first: parking_lot::Mutex<Option<Conn>>,
}

impl Manager {
    pub fn new(url: &SecretString, budget: Option<Arc<Budget>>, opts: &PoolOptions) -> Self {
        Self {
            inner: ConnectionManager::new(url.expose_secret()),
            budget,
            statement_timeout_ms: opts.statement_timeout.as_millis(),
            pooler_safe: opts.pooler_safe,
            first: parking_lot::Mutex::new(None),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the tenant connection budget is exhausted")]
    BudgetExhausted,
    #[error("{0}")]
    Database(#[from] diesel::r2d2::Error),
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = ConnectError;

    fn connect(&self) -> Result<Conn, ConnectError> {
        if let Some(first) = self.first.lock().take() {
            return Ok(first);
        }
        let lease = match &self.budget {
            Some(b) => Some(b.try_lease().ok_or(ConnectError::BudgetExhausted)?),
            None => None,
        };
        let mut conn = self.inner.connect()?;
        if self.pooler_safe {
            // Unnamed statements, each parsed, bound and run in one round
            // trip (`PQsendQueryParams`): no name can outlive the
            // transaction on a server connection the pooler hands to
            // another client. And no session setting, which would stay on
            // that server connection for the next client.
            conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
        } else if self.statement_timeout_ms > 0 {
            diesel::sql_query(format!(
                "SET statement_timeout = {}",
                self.statement_timeout_ms
            ))
            .execute(&mut conn)
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(Conn {
            conn,
            _lease: lease,
            checked_out: Instant::now(),
        })
    }

    /// The check on checkout: `SELECT 1`, unless the connection was checked
    /// out less than `ALIVE_BYPASS` ago (it came back from a request that
    /// just used it, or it would have been discarded as broken). Under load
    /// this saves one round trip per transaction; a connection that idled
    /// is still checked before use.
    fn is_valid(&self, conn: &mut Conn) -> Result<(), ConnectError> {
        if conn.checked_out.elapsed() >= ALIVE_BYPASS {
            self.inner.is_valid(&mut conn.conn)?;
        }
        conn.checked_out = Instant::now();
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        self.inner.has_broken(&mut conn.conn)
    }
}

/// Settings shared by every pool posd builds.
#[derive(Clone)]
pub struct PoolOptions {
    pub max_size: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub statement_timeout: Duration,
    pub thread_pool: Option<Arc<scheduled_thread_pool::ScheduledThreadPool>>,
    /// The URL goes through a pooler in transaction mode
    /// (`POSD_TRANSACTION_POOLER`): no prepared statement is kept and no
    /// session setting is made (`statement_timeout` is then the role's or
    /// the pooler's to set).
    pub pooler_safe: bool,
}

/// Builds a pool without opening a connection (r2d2's `build` would block
/// until `min_idle` connections are open). `first`, from [`open`], becomes
/// its first connection.
pub fn build(
    url: &SecretString,
    budget: Option<Arc<Budget>>,
    opts: &PoolOptions,
    first: Option<Conn>,
) -> Pool {
    let mut b = r2d2::Pool::builder()
        .max_size(opts.max_size)
        .min_idle(Some(0))
        .test_on_check_out(true)
        .connection_timeout(opts.connect_timeout)
        .idle_timeout(opts.idle_timeout)
        .error_handler(Box::new(LogErrors));
    if let Some(tp) = &opts.thread_pool {
        b = b.thread_pool(tp.clone());
    }
    let manager = Manager::new(url, budget, opts);
    *manager.first.lock() = first;
    b.build_unchecked(manager)
}

/// Opens one connection as a pool built with the same arguments would, its
/// budget lease included, for [`build`] to start with: a caller learns at
/// once whether the database answers (r2d2 would retry until its timeout),
/// at the cost of no extra connection.
pub fn open(
    url: &SecretString,
    budget: Option<Arc<Budget>>,
    opts: &PoolOptions,
) -> Result<Conn, ConnectError> {
    Manager::new(url, budget, opts).connect()
}

/// Opens one connection directly (no pool), as for migrations and checks.
pub fn connect(url: &SecretString) -> Result<PgConnection, diesel::ConnectionError> {
    PgConnection::establish(url.expose_secret())
}

#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<ConnectError> for LogErrors {
    fn handle_error(&self, error: ConnectError) {
        tracing::warn!(error = %crate::redact::redact_text(&error.to_string()), "pool connection failed");
    }
}
