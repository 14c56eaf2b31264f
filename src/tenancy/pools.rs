//! Connection pools: the global pool (platform DB: control plane, shared and
//! schema tiers) and one small pool per dedicated merchant.
//!
//! Per-merchant pools live in a `parking_lot` mutex-guarded map. A pool is
//! built outside the lock (double-checked insert) and never dropped inside
//! it. Bounds: an LRU cap on live pools, an idle sweeper thread, and a global
//! connection budget shared by every tenant pool (see [`crate::db::pool`]).
//! A tenant database that keeps failing is put behind a circuit breaker
//! ([`super::breaker`]).
//!
//! Building a pool checks the tenant's tables ([`super::classification`]) on
//! its first connection: a tenant that fails is recorded as blocked and its
//! pool is not kept, so the next build (see [`super::classification::RECHECK`])
//! checks again.

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::PgConnection;
use parking_lot::Mutex;
use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::{Semaphore, broadcast};

use super::{
    breaker::Breakers,
    classification::{self, Coverage},
    placement::Placement,
    servers::Host,
};
use crate::{
    crypto::{Keyring, Purpose},
    db::{
        ids::{MerchantId, ServerId},
        platform::{
            Platform, merchants::Merchant, servers::DatabaseServer,
            tenant_databases::TenantDatabase,
        },
        pool::{self, Budget, Pool, PoolOptions},
    },
    error::{ApiError, ErrorCode},
};

/// A pool and the semaphore that bounds how many requests wait on it: one
/// permit per connection, so waiting happens on the async side and a slow
/// database cannot pin blocking threads.
///
/// This is posd's one database executor: every use of a pooled connection
/// goes through [`PoolHandle::run`] (or [`PoolHandle::run_blocking`] on a
/// thread that may block): a permit (waiting at most the given time, then
/// 503 `database_busy`), a connection, the work, on a blocking thread. The
/// pool itself is private, so nothing can go around the semaphore.
#[derive(Clone)]
pub struct PoolHandle {
    pool: Pool,
    permits: Arc<Semaphore>,
    /// A dedicated pool's server budget (`None`: the global pool).
    budget: Option<Arc<Budget>>,
    /// Where a dedicated pool's database is.
    host: Host,
}

/// How a connection is taken from a pool (the dedicated pools' checkout
/// keeps their breaker and budget; the global pool's is `Pool::get`).
pub type Checkout = Box<dyn FnOnce(&PoolHandle) -> Result<pool::PooledConn, ApiError> + Send>;

impl PoolHandle {
    pub fn new(pool: Pool) -> Self {
        let permits = Arc::new(Semaphore::new(
            usize::try_from(pool.max_size()).unwrap_or(usize::MAX),
        ));
        PoolHandle {
            pool,
            permits,
            budget: None,
            host: Host::Own,
        }
    }

    /// The handle of a dedicated pool whose connections count against
    /// `budget`, on `host`.
    fn on_server(self, budget: Arc<Budget>, host: Host) -> Self {
        PoolHandle {
            budget: Some(budget),
            host,
            ..self
        }
    }

    /// The pool's state, for operators.
    pub fn state(&self) -> r2d2::State {
        self.pool.state()
    }

    /// Runs `f` on a connection of this pool, on a blocking thread, once a
    /// permit is free (waiting at most `wait`). `checkout` takes the
    /// connection (`None`: the pool's own `get`).
    pub async fn run<T, F>(
        &self,
        wait: Duration,
        checkout: Option<Checkout>,
        f: F,
    ) -> Result<T, ApiError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| shutting_down())?;
        let handle = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = match checkout {
                Some(c) => c(&handle)?,
                None => handle.pool.get()?,
            };
            f(&mut conn)
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// [`PoolHandle::run`] for code already on a thread that may block
    /// (provisioning, fleet runs): the permit is awaited on this thread.
    pub fn run_blocking<T>(
        &self,
        wait: Duration,
        f: impl FnOnce(&mut PgConnection) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let acquire = tokio::time::timeout(wait, self.permits.clone().acquire_owned());
        let _permit = tokio::runtime::Handle::try_current()
            .map_err(|_| ApiError::internal("database work outside the runtime"))?
            .block_on(acquire)
            .map_err(|_| busy())?
            .map_err(|_| shutting_down())?;
        let mut conn = self.pool.get()?;
        f(&mut conn)
    }
}

fn busy() -> ApiError {
    ApiError::unavailable(ErrorCode::DatabaseBusy, "the database is busy", 1)
}

/// 503 `shutting_down`: a permit cannot be had while posd stops.
pub(super) fn shutting_down() -> ApiError {
    ApiError::unavailable(ErrorCode::ShuttingDown, "posd is shutting down", 5)
}

struct Entry {
    handle: PoolHandle,
    generation: i64,
    last_used: Instant,
}

/// What an operator sees of one tenant pool.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolState {
    pub connections: u32,
    pub idle_connections: u32,
    pub idle_for_ms: u64,
    pub generation: i64,
}

/// What an operator sees of all tenant pools.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolsSummary {
    pub live_pools: usize,
    pub max_pools: usize,
    pub budget_used: u32,
    pub budget_limit: u32,
    pub builds: u64,
    pub evictions: u64,
    pub open_breakers: usize,
}

pub struct TenantPools {
    entries: Mutex<HashMap<MerchantId, Entry>>,
    pub breakers: Breakers,
    /// The default server's budget (`POSD_CONNECTION_BUDGET`).
    budget: Arc<Budget>,
    /// Each registered server's budget (its `connectionBudget`).
    server_budgets: Mutex<HashMap<ServerId, Arc<Budget>>>,
    /// The last connection attempt to each server's databases.
    pub health: super::servers::Health,
    opts: PoolOptions,
    max_pools: usize,
    idle_timeout: Duration,
    keyring: Keyring,
    platform: Pool,
    builds: AtomicU64,
    evictions: AtomicU64,
    stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    evicted: broadcast::Sender<MerchantId>,
    coverage: Arc<Coverage>,
}

/// Knobs for [`TenantPools::new`].
pub struct TenantPoolsConfig {
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub budget: u32,
    pub max_pools: usize,
    pub idle_timeout: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    /// Dedicated databases are reached through a transaction-mode pooler.
    pub transaction_pooler: bool,
}

impl TenantPools {
    pub fn new(
        cfg: &TenantPoolsConfig,
        keyring: Keyring,
        platform: Pool,
        coverage: Arc<Coverage>,
    ) -> Arc<Self> {
        // One small thread pool for every tenant pool's background work,
        // instead of r2d2's default of three threads per pool.
        let threads = Arc::new(
            scheduled_thread_pool::ScheduledThreadPool::builder()
                .num_threads(2)
                .thread_name_pattern("posd-tenant-pool-{}")
                .build(),
        );
        Arc::new(TenantPools {
            entries: Mutex::new(HashMap::new()),
            breakers: Breakers::new(cfg.breaker_threshold, cfg.breaker_cooldown),
            budget: Budget::new(cfg.budget),
            server_budgets: Mutex::default(),
            health: super::servers::Health::default(),
            opts: PoolOptions {
                max_size: cfg.pool_size,
                connect_timeout: cfg.connect_timeout,
                idle_timeout: Some(cfg.idle_timeout.min(Duration::from_secs(600))),
                statement_timeout: cfg.statement_timeout,
                thread_pool: Some(threads),
                pooler_safe: cfg.transaction_pooler,
            },
            max_pools: cfg.max_pools,
            idle_timeout: cfg.idle_timeout,
            keyring,
            platform,
            builds: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            stop: Mutex::new(None),
            evicted: broadcast::channel(256).0,
            coverage,
        })
    }

    /// The live pool for this placement, if any. No I/O.
    pub fn cached(&self, p: &Placement) -> Option<PoolHandle> {
        let mut entries = self.entries.lock();
        let e = entries.get_mut(&p.merchant)?;
        if e.generation != p.generation {
            return None;
        }
        e.last_used = Instant::now();
        Some(e.handle.clone())
    }

    /// The URL of the placement's database, unsealed; refused when the
    /// placement is not the merchant's current one (a request that read it
    /// just before a move's flip must not build, and keep, a pool on the
    /// old database).
    fn url_of(&self, p: &Placement) -> Result<(SecretString, Host, Arc<Budget>), ApiError> {
        let database_id = p.database_id.ok_or_else(|| {
            ApiError::internal(format!("dedicated merchant {} has no database", p.merchant))
        })?;
        let mut conn = self.platform.get()?;
        let current = Merchant::generation(&mut Platform::new(&mut conn), p.merchant)?;
        if current != Some(p.generation) {
            return Err(ApiError::unavailable(
                ErrorCode::TenantMoved,
                "this merchant's data has just moved; retry the request",
                1,
            ));
        }
        let db = TenantDatabase::find(&mut Platform::new(&mut conn), database_id)?;
        let budget = match db.server_id {
            None => self.budget.clone(),
            Some(id) => {
                let limit =
                    DatabaseServer::find(&mut Platform::new(&mut conn), id)?.connection_budget;
                self.server_budgets
                    .lock()
                    .entry(id)
                    .or_insert_with(|| Budget::new(u32::try_from(limit).unwrap_or(1)))
                    .clone()
            }
        };
        let plain = self
            .keyring
            .open(p.merchant.0, Purpose::TenantDatabaseUrl, &db.sealed_url)
            .map_err(|e| ApiError::internal(format!("tenant {}: {e}", p.merchant)))?;
        let text = String::from_utf8(plain.to_vec())
            .map_err(|_| ApiError::internal("sealed URL is not UTF-8"))?;
        Ok((
            SecretString::from(with_connect_timeout(&text, self.opts.connect_timeout)),
            if db.created_by_posd {
                Host::Server(db.server_id)
            } else {
                Host::Own
            },
            budget,
        ))
    }

    /// The pool for a dedicated merchant, built if needed (blocking: reads
    /// and opens the sealed URL, and checks that the database answers).
    pub fn get_or_build(&self, p: &Placement) -> Result<PoolHandle, ApiError> {
        if let Some(h) = self.cached(p) {
            return Ok(h);
        }
        self.breakers.check(p.merchant)?;
        let (url, server, budget) = self.url_of(p)?;
        if budget.used() >= budget.limit() {
            self.reclaim(p.merchant, &budget);
        }
        // Open the first connection now, within the budget: an unreachable
        // database answers now rather than after the checkout timeout, and
        // the pool starts with that connection. With the budget spent at
        // this instant, the pool starts empty and the request waits for a
        // connection in `checkout`, which frees budget as it can.
        let first = match pool::open(&url, Some(budget.clone()), &self.opts) {
            Ok(mut c) => {
                if let Host::Server(s) = server {
                    self.health.record(s, true);
                }
                // Declared behind a pooler: nothing to warn about.
                if !self.opts.pooler_safe {
                    crate::db::pooler::warn_once_per_server(
                        &mut c.conn,
                        &url,
                        &format!("the database of dedicated merchant {}", p.merchant),
                    );
                }
                Some(c)
            }
            Err(pool::ConnectError::BudgetExhausted) => None,
            Err(e) => {
                if let Host::Server(s) = server {
                    self.health.record(s, false);
                }
                tracing::warn!(merchant = %p.merchant, error = %crate::redact::redact_text(&e.to_string()), "tenant database unreachable");
                self.breakers.failure(p.merchant);
                return Err(self.breakers.error());
            }
        };
        let handle = PoolHandle::new(pool::build(&url, Some(budget.clone()), &self.opts, first))
            .on_server(budget, server);
        drop(url);
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.check_tables(p, &handle)?;
        let mut evicted = Vec::new();
        let mut evicted_ids = Vec::new();
        let handle = {
            let mut entries = self.entries.lock();
            let current = match entries.get(&p.merchant) {
                Some(e) if e.generation == p.generation => Some(e.handle.clone()),
                _ => None,
            };
            match current {
                Some(theirs) => {
                    evicted.push(handle);
                    theirs
                }
                None => {
                    if let Some(old) = entries.insert(
                        p.merchant,
                        Entry {
                            handle: handle.clone(),
                            generation: p.generation,
                            last_used: Instant::now(),
                        },
                    ) {
                        evicted.push(old.handle);
                        evicted_ids.push(p.merchant);
                    }
                    while entries.len() > self.max_pools {
                        let Some(lru) = entries
                            .iter()
                            .filter(|(id, _)| **id != p.merchant)
                            .min_by_key(|(_, e)| e.last_used)
                            .map(|(id, _)| *id)
                        else {
                            break;
                        };
                        if let Some(e) = entries.remove(&lru) {
                            evicted.push(e.handle);
                            evicted_ids.push(lru);
                        }
                    }
                    handle
                }
            }
        };
        drop(evicted);
        self.evicted(evicted_ids);
        self.breakers.success(p.merchant);
        Ok(handle)
    }

    /// Checks the tables of a newly built pool's database, on its first
    /// connection; records the result, and answers the block as an error.
    fn check_tables(&self, p: &Placement, handle: &PoolHandle) -> Result<(), ApiError> {
        let mut conn = match self.checkout(p.merchant, handle, self.opts.connect_timeout) {
            Ok(c) => c,
            Err(e) => {
                self.breakers.failure(p.merchant);
                return Err(e.into());
            }
        };
        let problems = classification::check_tenant_schema(&mut conn.conn, &p.schema)?;
        drop(conn);
        match self.coverage.record(p.merchant, p.generation, problems) {
            Some(blocked) => Err(blocked.error()),
            None => Ok(()),
        }
    }

    /// Checks a connection out of a dedicated merchant's pool, waiting at
    /// most `wait`. While the pool has no idle connection and the budget is
    /// spent, it first frees budget (see `TenantPools::reclaim`): otherwise
    /// a cached pool holding no connection (one that lost the race for a
    /// lease after it was built) would wait in vain while idle pools of other
    /// merchants hold the whole budget, since reclaiming used to happen only
    /// when a pool was built.
    pub fn checkout(
        &self,
        merchant: MerchantId,
        handle: &PoolHandle,
        wait: Duration,
    ) -> Result<pool::PooledConn, r2d2::Error> {
        let deadline = Instant::now() + wait;
        let pool = &handle.pool;
        let (budget, server) = (handle.budget.as_ref().unwrap_or(&self.budget), handle.host);
        loop {
            if pool.state().idle_connections == 0 && budget.used() >= budget.limit() {
                self.reclaim(merchant, budget);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match pool.get_timeout(left.min(Duration::from_millis(100))) {
                Ok(conn) => {
                    if let Host::Server(s) = server {
                        self.health.recovered(s);
                    }
                    return Ok(conn);
                }
                Err(e) if Instant::now() >= deadline => {
                    if let Host::Server(s) = server {
                        self.health.record(s, false);
                    }
                    return Err(e);
                }
                Err(_) => {}
            }
        }
    }

    /// A dedicated merchant's transaction lost its connection (the server
    /// went away): counts against its breaker, and its server is marked
    /// unhealthy until a connection is had again.
    pub fn connection_lost(&self, merchant: MerchantId) {
        self.breakers.failure(merchant);
        let server = self.entries.lock().get(&merchant).map(|e| e.handle.host);
        if let Some(Host::Server(s)) = server {
            self.health.record(s, false);
        }
    }

    /// Frees budget by evicting least recently used pools that have no
    /// connection checked out.
    fn reclaim(&self, keep: MerchantId, budget: &Arc<Budget>) {
        let mut victims = Vec::new();
        {
            let mut entries = self.entries.lock();
            let mut idle: Vec<(MerchantId, Instant, u32)> = entries
                .iter()
                .filter(|(id, _)| **id != keep)
                // Only pools on the same server free that server's budget.
                .filter(|(_, e)| {
                    e.handle
                        .budget
                        .as_ref()
                        .is_some_and(|b| Arc::ptr_eq(b, budget))
                })
                .filter_map(|(id, e)| {
                    let s = e.handle.pool.state();
                    (s.connections > 0 && s.connections == s.idle_connections).then_some((
                        *id,
                        e.last_used,
                        s.connections,
                    ))
                })
                .collect();
            idle.sort_by_key(|(_, at, _)| *at);
            let mut freed = 0;
            let needed = self.opts.max_size;
            for (id, _, n) in idle {
                if freed >= needed {
                    break;
                }
                if let Some(e) = entries.remove(&id) {
                    victims.push((id, e.handle));
                    freed += n;
                }
            }
        }
        let ids: Vec<MerchantId> = victims.iter().map(|(id, _)| *id).collect();
        drop(victims);
        self.evicted(ids);
    }

    /// Counts and announces evicted pools; they close when the caller drops
    /// them, outside the lock.
    fn evicted(&self, merchants: impl IntoIterator<Item = MerchantId>) {
        for m in merchants {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            let _ = self.evicted.send(m);
        }
    }

    /// Eviction events, for tests and tooling.
    pub fn subscribe_evictions(&self) -> broadcast::Receiver<MerchantId> {
        self.evicted.subscribe()
    }

    /// Drops the pool of one merchant (placement changed, or deprovisioned).
    pub fn evict(&self, merchant: MerchantId) {
        let removed = self.entries.lock().remove(&merchant);
        if removed.is_some() {
            self.evicted([merchant]);
        }
    }

    /// Evicts pools idle for longer than the configured idle time.
    pub fn sweep(&self) -> usize {
        let victims: Vec<(MerchantId, Entry)> = {
            let mut entries = self.entries.lock();
            let stale: Vec<MerchantId> = entries
                .iter()
                .filter(|(_, e)| e.last_used.elapsed() > self.idle_timeout)
                .map(|(id, _)| *id)
                .collect();
            stale
                .into_iter()
                .filter_map(|id| entries.remove(&id).map(|e| (id, e)))
                .collect()
        };
        let n = victims.len();
        let ids: Vec<MerchantId> = victims.iter().map(|(id, _)| *id).collect();
        drop(victims);
        self.evicted(ids);
        if n > 0 {
            tracing::debug!(evicted = n, "swept idle tenant pools");
        }
        n
    }

    /// Starts the sweeper thread; it stops at [`TenantPools::close_all`] or
    /// when the pools are dropped.
    pub fn start_sweeper(self: &Arc<Self>, interval: Duration) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        *self.stop.lock() = Some(tx);
        let weak: Weak<TenantPools> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("posd-pool-sweeper".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(interval)
                {
                    match weak.upgrade() {
                        Some(pools) => {
                            pools.sweep();
                        }
                        None => break,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the pool sweeper");
        }
    }

    /// Stops the sweeper and closes every tenant pool.
    pub fn close_all(&self) {
        self.stop.lock().take();
        let all: Vec<Entry> = self.entries.lock().drain().map(|(_, e)| e).collect();
        drop(all);
    }

    pub fn state(&self, merchant: MerchantId) -> Option<PoolState> {
        let entries = self.entries.lock();
        entries.get(&merchant).map(|e| {
            let s = e.handle.pool.state();
            PoolState {
                connections: s.connections,
                idle_connections: s.idle_connections,
                idle_for_ms: u64::try_from(e.last_used.elapsed().as_millis()).unwrap_or(u64::MAX),
                generation: e.generation,
            }
        })
    }

    pub fn summary(&self) -> PoolsSummary {
        let live_pools = self.entries.lock().len();
        let open_breakers = self.breakers.open();
        PoolsSummary {
            live_pools,
            max_pools: self.max_pools,
            budget_used: self.budget.used(),
            budget_limit: self.budget.limit(),
            builds: self.builds.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            open_breakers,
        }
    }
}

/// Adds libpq's `connect_timeout` to a URL that has none.
pub(super) fn with_connect_timeout(url: &str, timeout: Duration) -> String {
    if url.contains("connect_timeout=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}connect_timeout={}", timeout.as_secs().max(2))
}
