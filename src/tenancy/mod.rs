//! Multi-tenancy: where each merchant's data lives and how a request gets a
//! connection bound to it.
//!
//! - [`classification`]: which tables are SHARED (control plane) and which
//!   are TENANT (data plane), and the boot check that enforces it;
//! - [`placement`]: the directory of merchant placements, cached, with
//!   LISTEN/NOTIFY invalidation and the kill switch;
//! - [`context`]: each merchant's plan, effective limits and enabled
//!   features, cached like placements;
//! - [`hosts`]: which merchant a request's host names (`<slug>.<base
//!   domain>` or a verified custom domain), cached like placements;
//! - [`settings`]: each merchant's settings and branding, part of its
//!   context;
//! - [`pools`]: the global pool and the per-merchant pools of dedicated
//!   tenants (LRU cap, idle sweeper, connection budget, circuit breaker);
//! - [`tenant_db`]: a merchant's data plane as a handler or job gets it, a
//!   bound transaction at a time;
//! - [`usage`]: each merchant's usage per day, metered in memory and
//!   flushed in batches;
//! - [`load`]: each merchant's load over the last minutes, in memory, for
//!   operators; [`noisy`]: the merchants that take most of a busy global
//!   pool; [`fair`]: each merchant's cap on the global pool;
//! - [`probe`]: the continuous isolation probe;
//! - [`jobs`]: background jobs with tenant scope (the durable queue's
//!   workers and scheduler);
//! - [`servers`]: the dedicated database servers new databases go to;
//! - [`moves`]: live moves of a trading merchant between placements;
//! - [`migrations`], [`fleet`], [`provisioning`] (and deprovisioning),
//!   [`crate::crypto`] and [`keys`] (rotation).

pub mod breaker;
pub mod cache;
pub mod classification;
pub mod context;
pub mod fair;
pub mod fleet;
pub mod hosts;
pub mod integrations;
pub mod jobs;
pub mod keys;
pub mod load;
pub mod migrations;
pub mod moves;
pub mod noisy;
pub mod placement;
pub mod pools;
pub mod probe;
pub mod provisioning;
pub mod servers;
pub mod settings;
pub mod tenant_db;
pub mod usage;

use std::{future::Future, sync::Arc, time::Duration};

use crate::{config::Settings, db::platform::Platform, error::ApiResult};

/// What tenancy needs of the running service, and nothing more: the
/// settings, the platform pool, the placement directory, the tenant pools
/// and the state kept about tenants. The composition root builds it
/// (the application state holds one); handlers, jobs and the CLI hand it
/// down.
#[derive(Clone)]
pub struct Tenancy {
    pub settings: Arc<Settings>,
    /// The app-role pool on the platform database.
    pub platform: pools::PoolHandle,
    /// Each merchant's cap on the global pool, unless the share is all of it.
    pub fair: Option<Arc<fair::FairShare>>,
    pub directory: Arc<placement::Directory>,
    /// The tenant contexts (plan, limits, features), cached like placements.
    pub contexts: Arc<context::Contexts>,
    /// What request hosts name, cached like placements.
    pub hosts: Arc<hosts::Hosts>,
    pub pools: Arc<pools::TenantPools>,
    /// The role requests are served as.
    pub app_role: Arc<str>,
    /// Tenants not served because their tables fail the classification check.
    pub coverage: Arc<classification::Coverage>,
    /// Tenant migrations started by requests.
    pub on_demand: Arc<fleet::OnDemand>,
    /// What tier moves record for `/metrics`.
    pub move_metrics: moves::MoveMetrics,
    /// This instance's usage counters, not flushed yet.
    pub usage: Arc<usage::Usage>,
    /// This instance's per-merchant load over the last minutes.
    pub load: Arc<load::Load>,
    /// The merchants flagged as noisy neighbours, with their evidence.
    pub noisy: Arc<noisy::Noisy>,
    /// What the isolation probe found.
    pub probe: Arc<probe::Probe>,
    /// This instance's side of the job queue.
    pub jobs: Arc<jobs::Queue>,
}

impl Tenancy {
    /// Runs `f` on the control plane (app role), through the executor.
    pub async fn platform<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Platform<'_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.platform
            .run(self.settings.pool_connect_timeout, None, move |conn| {
                f(&mut Platform::new(conn))
            })
            .await
    }

    /// The merchant's tenant context, from the cache or the control plane;
    /// `None` for no such merchant.
    pub async fn context(
        &self,
        id: crate::db::ids::MerchantId,
    ) -> ApiResult<Option<Arc<context::TenantContext>>> {
        if let Some(c) = self.contexts.cached(&id) {
            return Ok(Some(c));
        }
        let epoch = self.contexts.epoch();
        let loaded = self
            .platform(move |p| {
                context::load(p, id).map_err(|e| match e {
                    context::LoadError::Db(e) => e.into(),
                    e @ context::LoadError::Invalid(_) => crate::error::ApiError::internal(e),
                })
            })
            .await?;
        Ok(loaded.map(|c| {
            let c = Arc::new(c);
            self.contexts.store(epoch, id, c.clone());
            c
        }))
    }

    /// What the request host `raw` names: from the cache, or looked up in
    /// the control plane ([`hosts`]).
    pub async fn host(&self, raw: Option<&str>) -> ApiResult<hosts::HostTarget> {
        use crate::db::platform::{domains::MerchantDomain, merchants::Merchant};
        use diesel::OptionalExtension;

        let address = self.hosts.address(raw);
        match &address {
            hosts::Address::Platform => return Ok(hosts::HostTarget::Platform),
            hosts::Address::Unknown => return Ok(self.hosts.nothing()),
            hosts::Address::Slug(_) | hosts::Address::Domain(_) => {}
        }
        if let Some(t) = self.hosts.cache.cached(&address) {
            return Ok(t);
        }
        let epoch = self.hosts.cache.epoch();
        let lookup = address.clone();
        let found = self
            .platform(move |p| {
                Ok(match &lookup {
                    hosts::Address::Slug(slug) => Merchant::find_by_slug(p, slug)
                        .optional()?
                        .map(|m| (m.id, m.slug)),
                    hosts::Address::Domain(domain) => MerchantDomain::route(p, domain)?,
                    hosts::Address::Platform | hosts::Address::Unknown => None,
                })
            })
            .await?;
        let target = found.map_or_else(
            || self.hosts.nothing(),
            |(id, slug)| {
                hosts::HostTarget::Merchant(hosts::HostMerchant {
                    id,
                    slug: Arc::from(slug),
                })
            },
        );
        self.hosts.cache.store(epoch, address, target.clone());
        Ok(target)
    }

    /// [`Tenancy::platform`] for code already on a thread that may block.
    pub fn platform_blocking<T>(
        &self,
        f: impl FnOnce(&mut Platform<'_>) -> ApiResult<T>,
    ) -> ApiResult<T> {
        self.platform
            .run_blocking(self.settings.pool_connect_timeout, |conn| {
                f(&mut Platform::new(conn))
            })
    }
}

/// The shared tier's schema in the platform database.
pub const SHARED_SCHEMA: &str = "tenant_shared";

pub use crate::db::kinds::Tier;

/// The schema that holds a schema-tier or dedicated merchant's tables:
/// generated from the merchant id, never from user input.
pub fn tenant_schema_name(merchant: crate::db::ids::MerchantId) -> String {
    format!("m_{}", merchant.0.simple())
}

/// The database posd creates for a dedicated merchant.
pub fn tenant_database_name(merchant: crate::db::ids::MerchantId) -> String {
    format!("posd_m_{}", merchant.0.simple())
}

/// Runs `task` every `period` until the runtime ends: first at once when
/// `at_once`, else after one period. A run that overruns delays the next
/// tick rather than bunching the missed ones.
pub fn spawn_every<F, Fut>(period: Duration, at_once: bool, mut task: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if !at_once {
            every.tick().await;
        }
        loop {
            every.tick().await;
            task().await;
        }
    });
}
