//! `TenantDb`: the only way a handler reaches the data plane.
//!
//! Built from a merchant's placement (for a request, the verified staff
//! member's: so from the token, never from the body; the request guard is
//! in `crate::api::guards`): shared and schema merchants ride the
//! global pool, dedicated merchants their own pool. [`TenantDb::run`] runs a
//! closure on a blocking thread inside one transaction that starts by
//! binding the merchant and `search_path`.
//!
//! For a request, what each transaction spent (time waiting for the pool,
//! time inside) adds to the request's [`Spent`], which its answer reports
//! to the merchant's usage and load ([`super::usage`], [`super::load`]), in
//! memory.
//!
//! Resolving it has no side effect on the tenant: it never migrates (a behind
//! tenant is migrated in the background) and consults the in-memory set of
//! blocked tenants, never the catalog, except for a blocked tenant due for
//! a re-check.

use std::sync::Arc;

use diesel::PgConnection;

use super::{
    Tenancy, Tier,
    classification::check_tenant_schema,
    fair::FairShare,
    load::Spent,
    migrations::latest_tenant_version,
    placement::Placement,
    pools::{PoolHandle, TenantPools},
};
use crate::{
    db::{
        ids::MerchantId,
        platform::migration_state::MigrationState,
        tenant::{TenantCalls, TenantTx},
    },
    error::{ApiError, ApiResult},
};

/// A handle on one merchant's data plane.
pub struct TenantDb {
    placement: Arc<Placement>,
    handle: PoolHandle,
    /// The merchant's cap on the global pool (shared and schema merchants).
    fair: Option<Arc<FairShare>>,
    pools: Arc<TenantPools>,
    wait: std::time::Duration,
    /// Where the time of each transaction is counted: the request's, when
    /// there is one (a background job's work, such as measuring storage,
    /// is the operator's, not the merchant's).
    spent: Option<Arc<Spent>>,
    /// Entered around each transaction, so that what it logs names the
    /// request (its id, merchant and tier).
    span: tracing::Span,
}

impl TenantDb {
    /// Resolves the pool for a placement (blocking only on a cold dedicated
    /// pool). A tenant that is behind on migrations is not served: its
    /// migration starts in the background ([`super::fleet::OnDemand`]) and
    /// the request gets 503 `tenant_migrating`. A tenant whose tables fail
    /// the classification check gets 503 `tenant_unclassified_table`
    /// ([`super::classification::Coverage`]).
    pub async fn for_placement(app: &Tenancy, placement: Arc<Placement>) -> ApiResult<TenantDb> {
        let merchant = placement.merchant;
        if !placement.migrated && !recorded_current(app, merchant).await? {
            return Err(app.on_demand.start(app, merchant));
        }
        if let Some(blocked) = app.coverage.blocked(merchant, placement.generation) {
            if !blocked.claim_recheck() {
                return Err(blocked.error());
            }
            match placement.tier {
                // Its pool is not kept while it is blocked: building it
                // below checks again.
                Tier::Dedicated => app.pools.evict(merchant),
                Tier::Shared | Tier::Schema => {
                    let schema = placement.schema.to_string();
                    let problems = app
                        .platform
                        .run(app.settings.pool_connect_timeout, None, move |conn| {
                            Ok(check_tenant_schema(conn, &schema)?)
                        })
                        .await?;
                    if let Some(b) = app
                        .coverage
                        .record(merchant, placement.generation, problems)
                    {
                        return Err(b.error());
                    }
                }
            }
        }
        // Shared and schema merchants ride the global pool, under their cap.
        let (handle, fair) = match placement.tier {
            Tier::Shared | Tier::Schema => (app.platform.clone(), app.fair.clone()),
            Tier::Dedicated => match app.pools.cached(&placement) {
                Some(h) => (h, None),
                None => {
                    app.pools.breakers.check(placement.merchant)?;
                    let pools = app.pools.clone();
                    let p = placement.clone();
                    let h = tokio::task::spawn_blocking(move || pools.get_or_build(&p))
                        .await
                        .map_err(ApiError::internal)??;
                    (h, None)
                }
            },
        };
        Ok(TenantDb {
            placement,
            handle,
            fair,
            pools: app.pools.clone(),
            wait: app.settings.pool_connect_timeout,
            spent: None,
            span: tracing::Span::none(),
        })
    }

    /// The same handle for a request: each transaction counts to `spent`
    /// and runs in `span`.
    #[must_use]
    pub fn for_request(mut self, spent: Arc<Spent>, span: tracing::Span) -> TenantDb {
        self.spent = Some(spent);
        self.span = span;
        self
    }

    /// For background jobs, which have no request: resolves the merchant
    /// through the same directory and pools.
    pub async fn for_job(app: &Tenancy, merchant: Option<MerchantId>) -> ApiResult<TenantDb> {
        let merchant = merchant.ok_or_else(|| {
            ApiError::internal("a background job asked for tenant data without a merchant id")
        })?;
        let dir = app.directory.clone();
        let placement = tokio::task::spawn_blocking(move || dir.resolve(merchant))
            .await
            .map_err(ApiError::internal)??
            .ok_or_else(|| ApiError::not_found("merchant"))?;
        Self::for_placement(app, placement).await
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// How a connection is taken: a dedicated pool's checkout keeps its
    /// budget and breaker.
    fn checkout(&self) -> Option<super::pools::Checkout> {
        match self.placement.tier {
            Tier::Shared | Tier::Schema => None,
            Tier::Dedicated => {
                let pools = self.pools.clone();
                let (merchant, wait) = (self.placement.merchant, self.wait);
                Some(Box::new(move |handle| {
                    match pools.checkout(merchant, handle, wait) {
                        Ok(c) => {
                            pools.breakers.success(merchant);
                            Ok(c)
                        }
                        Err(e) => {
                            pools.breakers.failure(merchant);
                            Err(e.into())
                        }
                    }
                }))
            }
        }
    }

    /// For the isolation probe only: with nothing bound, on a connection
    /// of this merchant's pool, tries `other`'s marker in `schema`
    /// ([`crate::db::tenant::probe`]; rolled back).
    pub async fn probe_unbound(
        &self,
        schema: String,
        other: MerchantId,
        marker: crate::db::ids::ProductId,
    ) -> ApiResult<crate::db::tenant::probe::Attempt> {
        self.handle
            .run(self.wait, self.checkout(), move |conn| {
                Ok(crate::db::tenant::probe::probe_unbound(
                    conn, &schema, other, marker,
                )?)
            })
            .await
    }

    /// Runs `f` in one bound transaction on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut TenantTx<'_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.on_connection(move |conn, merchant, schema| {
            TenantTx::transaction(conn, merchant, schema, f)
        })
        .await
    }

    /// Runs `f` on a connection outside any transaction, on which every
    /// statement is a tenant function that binds the merchant in its own
    /// transaction ([`TenantCalls`]): the fewest round trips, for writes
    /// made of one or two such calls.
    pub async fn call<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut TenantCalls<'_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.on_connection(move |conn, merchant, schema| {
            f(&mut TenantCalls::new(conn, merchant, schema))
        })
        .await
    }

    /// The executor under [`Self::run`] and [`Self::call`]: the merchant's
    /// share of its pool, a connection, `f` on a blocking thread, the time
    /// spent counted to the request.
    async fn on_connection<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut PgConnection, MerchantId, &str) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let placement = self.placement.clone();
        let checkout = self.checkout();
        let spent = self.spent.clone();
        let span = self.span.clone();
        let asked = std::time::Instant::now();
        // The merchant's place under its cap, held until its transaction
        // ends (moved into it: a request that goes away does not free it
        // early).
        let share = match &self.fair {
            Some(fair) => Some(fair.acquire(placement.merchant, self.wait).await?),
            None => None,
        };
        let result = self
            .handle
            .run(self.wait, checkout, move |conn| {
                let _share = share;
                let _entered = span.enter();
                let started = std::time::Instant::now();
                let result = f(conn, placement.merchant, &placement.schema);
                if let Some(spent) = spent {
                    spent.add(started - asked, started.elapsed());
                }
                result
            })
            .await;
        if let Err(e) = &result
            && self.placement.tier == Tier::Dedicated
            && e.code == crate::error::ErrorCode::DatabaseUnavailable
        {
            self.pools.connection_lost(self.placement.merchant);
        }
        result
    }
}

/// Whether the control plane records the merchant at the latest tenant
/// migration (a placement that says otherwise may be stale, or built
/// without looking).
async fn recorded_current(app: &Tenancy, merchant: MerchantId) -> ApiResult<bool> {
    let state = app
        .platform(move |p| Ok(MigrationState::find(p, merchant)?))
        .await?;
    let current = state
        .and_then(|s| s.version)
        .is_some_and(|v| v == latest_tenant_version());
    if current && app.directory.cached(merchant).is_some_and(|p| !p.migrated) {
        // The cached placement is stale: the next request reads it anew.
        app.directory.invalidate(merchant);
    }
    Ok(current)
}
