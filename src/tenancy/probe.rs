//! The continuous isolation probe (`POSD_ISOLATION_PROBE_INTERVAL`; off by
//! default).
//!
//! posd keeps probe merchants of its own: two on the shared tier, one on a
//! schema and one on a database of its own (when it can make them), each
//! with one marker product. Every interval, each probe merchant, bound
//! exactly as a request of its own is ([`TenantDb`]), tries to read,
//! change and add rows of every other probe merchant it could reach (those
//! in the same database: a database cannot name another's tables); and on
//! a connection of each probe merchant's pool with nothing bound (the app
//! role as it is before a request binds it), posd tries the same. Every
//! attempt is rolled back. Any success is an incident: an ERROR line naming
//! the tiers, `posd_isolation_breaches` in `/metrics`, and `/readyz`
//! answering `degraded` until a run finds none.
//!
//! Probe merchants are marked in the control plane (`merchants.probe`):
//! operators' listings leave them out, and they are never billed (they
//! make no requests, and the storage pass skips them).

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;

use super::{
    Tenancy, Tier,
    provisioning::{self, Outcome},
    tenant_db::TenantDb,
};
use crate::{
    db::{
        ids::{MerchantId, ProductId},
        platform::merchants::{Merchant, NewMerchant},
        tenant::probe::Attempt,
    },
    error::{ApiError, ApiResult},
};

/// The probe merchants posd keeps, by slug and tier.
const PROBES: [(&str, Tier); 4] = [
    ("posd-probe-shared-a", Tier::Shared),
    ("posd-probe-shared-b", Tier::Shared),
    ("posd-probe-schema", Tier::Schema),
    ("posd-probe-dedicated", Tier::Dedicated),
];

/// How a probe tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// Bound to a merchant, as its requests are.
    Bound,
    /// With no merchant bound.
    Unbound,
}

/// One way isolation did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Breach {
    /// The tier of the merchant that broke in (`None` when unbound).
    pub from: Option<Tier>,
    /// The tier of the merchant broken into.
    pub to: Tier,
    pub path: Path,
    pub read: i64,
    pub updated: usize,
    pub inserted: bool,
}

/// The last run of the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRun {
    pub at: DateTime<Utc>,
    /// The tiers probed.
    pub tiers: Vec<Tier>,
    /// How many attempts were made.
    pub attempts: usize,
    pub breaches: Vec<Breach>,
}

/// The probe's state on this instance.
#[derive(Debug, Default)]
pub struct Probe {
    /// Whether this process already tried to place the probe merchants
    /// (one whose placement failed is tried again once per process, not
    /// every interval).
    placed: AtomicBool,
    runs: AtomicU64,
    breaches: AtomicU64,
    last: Mutex<Option<ProbeRun>>,
}

impl Probe {
    /// Runs so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Breaches found so far, over all runs.
    pub fn breaches(&self) -> u64 {
        self.breaches.load(Ordering::Relaxed)
    }

    pub fn last(&self) -> Option<ProbeRun> {
        self.last.lock().clone()
    }

    fn record(&self, run: ProbeRun) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.breaches.fetch_add(
            u64::try_from(run.breaches.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        *self.last.lock() = Some(run);
    }
}

/// A probe merchant, ready to probe.
struct ProbeMerchant {
    id: MerchantId,
    tier: Tier,
    schema: String,
    marker: ProductId,
    /// Its data plane, as its requests would get it.
    db: TenantDb,
}

/// The probe merchants, made and placed if missing (a tier posd cannot
/// place one on is logged and left out), each with its marker.
async fn ensure(app: &Tenancy) -> ApiResult<Vec<ProbeMerchant>> {
    let existing: Vec<Merchant> = app.platform(|p| Ok(Merchant::probes(p)?)).await?;
    let first = !app.probe.placed.swap(true, Ordering::Relaxed);
    for (slug, tier) in PROBES {
        let id = match existing.iter().find(|m| m.slug == slug) {
            Some(m) if m.tier == tier || !first => continue,
            // Made, but its placement failed before this process: again.
            Some(m) => m.id,
            None => {
                let id = MerchantId(uuid::Uuid::new_v4());
                app.platform(move |p| {
                    Merchant::insert(
                        p,
                        &NewMerchant {
                            id,
                            slug,
                            name: "isolation probe",
                            timezone: "UTC",
                            currency: "USD",
                            plan: "starter",
                            probe: true,
                        },
                    )?;
                    Ok(())
                })
                .await?;
                id
            }
        };
        if tier != Tier::Shared {
            let app2 = app.clone();
            let placed =
                tokio::task::spawn_blocking(move || provisioning::provision(&app2, id, tier))
                    .await
                    .map_err(ApiError::internal)?;
            if !matches!(placed, Ok(Outcome::Ready(_))) {
                tracing::warn!(slug, tier = %tier, "the isolation probe could not place a probe merchant on this tier; it probes the others");
            }
        }
    }
    let merchants: Vec<Merchant> = app
        .platform(|p| Ok(Merchant::probes(p)?))
        .await?
        .into_iter()
        .filter(|m| PROBES.contains(&(m.slug.as_str(), m.tier)))
        .collect();
    let mut probes = Vec::with_capacity(merchants.len());
    for m in merchants {
        let db = TenantDb::for_job(app, Some(m.id)).await?;
        let marker = db.run(|tx| Ok(tx.probe_marker()?)).await?;
        probes.push(ProbeMerchant {
            id: m.id,
            tier: m.tier,
            schema: db.placement().schema.to_string(),
            marker,
            db,
        });
    }
    Ok(probes)
}

/// Whether `a` can name `b`'s tables: both in the platform database.
fn same_database(a: &ProbeMerchant, b: &ProbeMerchant) -> bool {
    a.tier != Tier::Dedicated && b.tier != Tier::Dedicated
}

fn breach(from: Option<Tier>, to: Tier, path: Path, a: Attempt) -> Option<Breach> {
    a.broke_in().then_some(Breach {
        from,
        to,
        path,
        read: a.read,
        updated: a.updated,
        inserted: a.inserted,
    })
}

/// One run: every probe merchant against every other it can reach, bound
/// and unbound; logs and records what it found.
pub async fn run_once(app: &Tenancy) -> ApiResult<ProbeRun> {
    let probes = ensure(app).await?;
    let mut breaches = Vec::new();
    let mut attempts = 0;
    for p in &probes {
        let db = TenantDb::for_job(app, Some(p.id)).await?;
        for q in probes
            .iter()
            .filter(|q| q.id != p.id && same_database(p, q))
        {
            let (schema, id, marker) = (q.schema.clone(), q.id, q.marker);
            let a = db
                .run(move |tx| Ok(tx.probe_other(&schema, id, marker)?))
                .await?;
            attempts += 1;
            breaches.extend(breach(Some(p.tier), q.tier, Path::Bound, a));
        }
    }
    for q in &probes {
        let a = q.db.probe_unbound(q.schema.clone(), q.id, q.marker).await?;
        attempts += 1;
        breaches.extend(breach(None, q.tier, Path::Unbound, a));
    }
    for b in &breaches {
        let from = b.from.map_or("an unbound connection", Tier::as_str);
        tracing::error!(
            from = %from,
            to = %b.to,
            path = ?b.path,
            read = b.read,
            updated = b.updated,
            inserted = b.inserted,
            "isolation breach: {from} reached a {} merchant's rows (read {}, changed {}, added {})",
            b.to,
            b.read,
            b.updated,
            b.inserted,
        );
    }
    let mut tiers: Vec<Tier> = probes.iter().map(|p| p.tier).collect();
    tiers.sort();
    tiers.dedup();
    let run = ProbeRun {
        at: Utc::now(),
        tiers,
        attempts,
        breaches,
    };
    app.probe.record(run.clone());
    Ok(run)
}

/// Probes every `interval`, the first time at once, until the runtime
/// ends.
pub fn spawn(app: Tenancy, interval: Duration) {
    super::spawn_every(interval, true, move || {
        let app = app.clone();
        async move {
            if let Err(e) = run_once(&app).await {
                tracing::warn!(error = %e, "the isolation probe could not run");
            }
        }
    });
}
