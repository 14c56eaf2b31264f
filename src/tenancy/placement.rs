//! The placement directory: `merchant → where its data lives`.
//!
//! Read from the control plane and cached in memory with a TTL. The TTL is
//! only the fallback: every instance LISTENs on `posd_placement`, and the
//! trigger on `merchants` NOTIFYs on every placement or status change, so
//! all instances drop the entry at once ([`crate::invalidation`]). While the
//! listener is disconnected nothing is trusted: on every (re)connect the
//! whole cache is dropped.
//!
//! The kill switch (`USE_TENANT_DB_ROUTING=false`) routes every merchant to
//! the shared tier, whatever its recorded placement.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

use super::{SHARED_SCHEMA, Tier};
use crate::db::{
    ids::{DatabaseId, MerchantId},
    kinds::MerchantStatus,
    platform::{Platform, merchants::Merchant, migration_state::MigrationState},
    pool::Pool,
};

/// Where one merchant's data lives, as requests are routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub merchant: MerchantId,
    pub tier: Tier,
    pub schema: Arc<str>,
    pub database_id: Option<DatabaseId>,
    pub generation: i64,
    pub suspended: bool,
    /// Whether the merchant's schema is known to be at the latest tenant
    /// migration (always true on the shared tier, which is migrated at boot).
    pub migrated: bool,
    /// The merchant's time zone: business days and reports follow it.
    pub timezone: chrono_tz::Tz,
    /// The merchant's ISO 4217 currency.
    pub currency: Arc<str>,
}

impl Placement {
    pub fn from_merchant(m: &Merchant) -> Self {
        Placement {
            merchant: m.id,
            tier: m.tier,
            schema: Arc::from(m.schema_name.as_str()),
            database_id: m.database_id,
            generation: m.generation,
            suspended: m.status != MerchantStatus::Active,
            migrated: m.tier == Tier::Shared,
            timezone: m.timezone.parse().unwrap_or(chrono_tz::UTC),
            currency: Arc::from(m.currency.as_str()),
        }
    }

    /// The same merchant routed to the shared tier (kill switch).
    fn on_shared_tier(&self) -> Self {
        Placement {
            tier: Tier::Shared,
            schema: Arc::from(SHARED_SCHEMA),
            database_id: None,
            migrated: true,
            ..self.clone()
        }
    }
}

/// The channel the `merchants` trigger notifies on.
pub const CHANNEL: &str = "posd_placement";

pub struct Directory {
    platform: Pool,
    ttl: Duration,
    routing: bool,
    cache: Mutex<HashMap<MerchantId, (Arc<Placement>, Instant)>>,
    listening: watch::Sender<bool>,
    events: broadcast::Sender<Option<MerchantId>>,
}

impl Directory {
    pub fn new(platform: Pool, ttl: Duration, routing: bool) -> Self {
        Directory {
            platform,
            ttl,
            routing,
            cache: Mutex::new(HashMap::new()),
            listening: watch::channel(false).0,
            events: broadcast::channel(64).0,
        }
    }

    pub fn routing_enabled(&self) -> bool {
        self.routing
    }

    /// The cached placement, if fresh and the LISTEN connection is up (an
    /// instance that may have missed a NOTIFY trusts nothing it cached).
    /// No I/O.
    pub fn cached(&self, id: MerchantId) -> Option<Arc<Placement>> {
        if !self.listening() {
            return None;
        }
        let cache = self.cache.lock();
        cache
            .get(&id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(p, _)| p.clone())
    }

    /// The placement, from the cache or the control plane (blocking).
    /// `Ok(None)` when the merchant does not exist.
    pub fn resolve(
        &self,
        id: MerchantId,
    ) -> Result<Option<Arc<Placement>>, crate::error::ApiError> {
        if let Some(p) = self.cached(id) {
            return Ok(Some(p));
        }
        let mut conn = self.platform.get()?;
        let Some(placement) = self.load(&mut Platform::new(&mut conn), id)? else {
            return Ok(None);
        };
        let placement = Arc::new(placement);
        self.cache
            .lock()
            .insert(id, (placement.clone(), Instant::now()));
        Ok(Some(placement))
    }

    /// The placement as the control plane records it now, routed as
    /// requests are (kill switch included), without the cache. `Ok(None)`
    /// when the merchant does not exist.
    pub fn load(
        &self,
        p: &mut Platform<'_>,
        id: MerchantId,
    ) -> diesel::QueryResult<Option<Placement>> {
        let merchant = match Merchant::find(p, id) {
            Ok(m) => m,
            Err(diesel::result::Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut placement = Placement::from_merchant(&merchant);
        if !placement.migrated {
            let state = MigrationState::find(p, id)?;
            placement.migrated = state
                .and_then(|s| s.version)
                .is_some_and(|v| v == super::migrations::latest_tenant_version());
        }
        if !self.routing {
            placement = placement.on_shared_tier();
        }
        Ok(Some(placement))
    }

    pub fn invalidate(&self, id: MerchantId) {
        self.cache.lock().remove(&id);
        let _ = self.events.send(Some(id));
    }

    pub fn invalidate_all(&self) {
        self.cache.lock().clear();
        let _ = self.events.send(None);
    }

    /// Invalidation events (`None` = everything), for tests and tooling.
    pub fn subscribe(&self) -> broadcast::Receiver<Option<MerchantId>> {
        self.events.subscribe()
    }

    /// Marks the LISTEN connection up or down ([`crate::invalidation`]).
    pub(crate) fn set_listening(&self, up: bool) {
        self.listening.send_replace(up);
    }

    /// Whether the LISTEN connection is up.
    pub fn listening(&self) -> bool {
        *self.listening.borrow()
    }

    /// Resolves once the LISTEN connection is up.
    pub async fn wait_listening(&self) {
        let mut rx = self.listening.subscribe();
        let _ = rx.wait_for(|up| *up).await;
    }
}
