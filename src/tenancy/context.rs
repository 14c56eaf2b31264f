//! The tenant context: who the merchant is, its plan, its effective limits
//! (the plan's, with the merchant's overrides) and the feature flags on for
//! it. Requests and jobs read it; it is resolved from the control plane
//! once and cached per merchant exactly like placements: every instance
//! LISTENs on `posd_context`, and triggers on `merchants`, `plans`,
//! `feature_flags` and `merchant_flag_overrides` NOTIFY it with the
//! merchant's id (or `*` when a plan or a flag changed, which may concern
//! anyone), so the entry goes at once on every instance
//! ([`crate::invalidation`]). The TTL (`POSD_PLACEMENT_CACHE_TTL`) is the
//! fallback, and while the LISTEN connection is down nothing cached is
//! trusted. A cache hit costs no I/O.
//!
//! A flag is on for a merchant by, in this order of precedence:
//! 1. the merchant's override, if any;
//! 2. off when the flag has a minimum plan that the merchant's plan ranks
//!    below;
//! 3. when the flag has a rollout percentage, on for that share of
//!    merchants, chosen by [`rollout_bucket`]: a stable hash (SHA-256) of
//!    the flag and the merchant id, so a merchant gets the same answer on
//!    every request and every instance;
//! 4. the flag's default.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    cache::NotifiedCache,
    settings::{Branding, Settings},
};
use crate::db::{
    ids::MerchantId,
    platform::{
        Platform,
        plans::{FeatureFlag, LimitKind, LimitOverrides, Limits, MerchantPlan, Plan},
        usage::UsageDay,
    },
};

/// The channel the triggers notify on.
pub const CHANNEL: &str = "posd_context";

/// The merchant as a till shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MerchantInfo {
    pub id: MerchantId,
    pub slug: String,
    pub name: String,
    pub currency: String,
    pub timezone: String,
}

/// The merchant's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanInfo {
    pub key: String,
    pub name: String,
    #[serde(skip)]
    pub rank: i32,
}

/// Everything a request of the merchant may need to know about its
/// merchant's plan and features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    pub merchant: MerchantInfo,
    pub plan: PlanInfo,
    /// The plan's limits with the merchant's overrides applied.
    pub limits: Limits,
    /// The keys of the flags on for this merchant.
    pub features: BTreeSet<String>,
    /// The merchant's settings, defaults applied.
    pub settings: Settings,
    pub branding: Branding,
    /// The merchant's storage in bytes as last measured (see
    /// [`super::usage`]), if ever.
    pub stored_bytes: Option<i64>,
}

impl TenantContext {
    pub fn enabled(&self, flag: &str) -> bool {
        self.features.contains(flag)
    }

    pub fn limit(&self, kind: LimitKind) -> Option<i64> {
        self.limits.get(kind)
    }

    /// The merchant's `maxStorageBytes` when its storage as last measured
    /// has reached it.
    pub fn storage_full(&self) -> Option<i64> {
        storage_full(self.limit(LimitKind::MaxStorageBytes), self.stored_bytes)
    }
}

/// `limit` when `stored` has reached it.
pub fn storage_full(limit: Option<i64>, stored: Option<i64>) -> Option<i64> {
    limit.filter(|&max| stored.is_some_and(|b| b >= max))
}

/// The merchant's bucket for `flag`, 0 to 99: the first eight bytes of
/// SHA-256 of `"<flag>:<merchant uuid>"`, as a big-endian integer, modulo
/// 100. Stable across processes, builds and platforms.
pub fn rollout_bucket(flag: &str, merchant: MerchantId) -> u8 {
    let digest = Sha256::digest(format!("{flag}:{merchant}").as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let bucket = u64::from_be_bytes(head) % 100;
    u8::try_from(bucket).unwrap_or(u8::MAX)
}

/// Whether the merchant is in the first `percent` % of merchants for `flag`.
pub fn in_rollout(flag: &str, merchant: MerchantId, percent: i16) -> bool {
    i16::from(rollout_bucket(flag, merchant)) < percent
}

/// Whether `flag` is on for `merchant`, on a plan of rank `plan_rank`;
/// `min_rank` is the rank of the flag's minimum plan, if it has one;
/// `override_` the merchant's override. See the module docs for the
/// order.
pub fn flag_enabled(
    flag: &FeatureFlag,
    merchant: MerchantId,
    plan_rank: i32,
    min_rank: Option<i32>,
    override_: Option<bool>,
) -> bool {
    if let Some(on) = override_ {
        return on;
    }
    if flag.min_plan.is_some() && min_rank.is_none_or(|min| plan_rank < min) {
        // A gate naming a plan that is not there stays shut.
        return false;
    }
    match flag.rollout_percent {
        Some(percent) => in_rollout(&flag.key, merchant, percent),
        None => flag.default_on,
    }
}

/// Reads the merchant's context from the control plane (six queries on
/// one connection). `Ok(None)` for no such merchant.
pub fn load(p: &mut Platform<'_>, id: MerchantId) -> Result<Option<TenantContext>, LoadError> {
    let m = match MerchantPlan::find(p, id) {
        Ok(m) => m,
        Err(diesel::result::Error::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let plans = Plan::list(p)?;
    let plan = plans.iter().find(|pl| pl.key == m.plan).ok_or_else(|| {
        LoadError::Invalid(format!(
            "merchant {id} is on plan `{}`, which does not exist",
            m.plan
        ))
    })?;
    let overrides = LimitOverrides::from_json(&m.limit_overrides)
        .map_err(|e| LoadError::Invalid(format!("merchant {id}: {e}")))?;
    let settings = Settings::from_stored(&m.settings)
        .map_err(|e| LoadError::Invalid(format!("merchant {id}: settings: {e}")))?;
    let branding = Branding::from_stored(&m.branding)
        .map_err(|e| LoadError::Invalid(format!("merchant {id}: branding: {e}")))?;
    let ranks: HashMap<&str, i32> = plans.iter().map(|pl| (pl.key.as_str(), pl.rank)).collect();
    let flag_overrides: HashMap<String, bool> =
        FeatureFlag::overrides(p, id)?.into_iter().collect();
    let features = FeatureFlag::list(p)?
        .into_iter()
        .filter(|f| {
            let min_rank = f.min_plan.as_deref().and_then(|k| ranks.get(k).copied());
            flag_enabled(
                f,
                id,
                plan.rank,
                min_rank,
                flag_overrides.get(&f.key).copied(),
            )
        })
        .map(|f| f.key)
        .collect();
    Ok(Some(TenantContext {
        limits: plan.limits().overridden(&overrides),
        plan: PlanInfo {
            key: plan.key.clone(),
            name: plan.name.clone(),
            rank: plan.rank,
        },
        merchant: MerchantInfo {
            id: m.id,
            slug: m.slug,
            name: m.name,
            currency: m.currency,
            timezone: m.timezone,
        },
        features,
        settings,
        branding,
        stored_bytes: UsageDay::last_bytes(p, id)?,
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    /// The control plane holds something it should not (a CHECK or a
    /// foreign key was bypassed).
    #[error("{0}")]
    Invalid(String),
}

/// Per-process cache of tenant contexts, by merchant.
pub type Contexts = NotifiedCache<MerchantId, Arc<TenantContext>>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    fn flag(default_on: bool, min_plan: Option<&str>, rollout: Option<i16>) -> FeatureFlag {
        FeatureFlag {
            key: "f".into(),
            description: String::new(),
            default_on,
            min_plan: min_plan.map(String::from),
            rollout_percent: rollout,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn precedence_is_override_then_plan_gate_then_rollout_then_default() {
        let m = MerchantId(Uuid::new_v4());
        // The default alone.
        assert!(flag_enabled(&flag(true, None, None), m, 10, None, None));
        assert!(!flag_enabled(&flag(false, None, None), m, 10, None, None));
        // A rollout replaces the default: 0 % is off, 100 % on.
        assert!(!flag_enabled(&flag(true, None, Some(0)), m, 10, None, None));
        assert!(flag_enabled(
            &flag(false, None, Some(100)),
            m,
            10,
            None,
            None
        ));
        // The plan gate shuts it below the minimum plan, whatever the
        // rollout or the default; at or above, they decide.
        let gated = flag(true, Some("pro"), Some(100));
        assert!(!flag_enabled(&gated, m, 10, Some(20), None));
        assert!(flag_enabled(&gated, m, 20, Some(20), None));
        assert!(flag_enabled(&gated, m, 30, Some(20), None));
        assert!(!flag_enabled(
            &flag(true, Some("gone"), None),
            m,
            30,
            None,
            None
        ));
        // An override beats everything.
        assert!(flag_enabled(&gated, m, 10, Some(20), Some(true)));
        assert!(!flag_enabled(
            &flag(true, None, Some(100)),
            m,
            10,
            None,
            Some(false)
        ));
    }

    #[test]
    fn the_bucket_is_stable() {
        // Fixed values, computed independently (Python's hashlib): a change
        // of the hash or of its input would move every merchant.
        for (flag, merchant, bucket) in [
            ("offline_bills", "00000000-0000-0000-0000-000000000001", 7),
            ("beta", "00000000-0000-0000-0000-000000000002", 76),
            ("half", "ffffffff-ffff-ffff-ffff-ffffffffffff", 95),
        ] {
            let m = MerchantId(Uuid::parse_str(merchant).unwrap());
            assert_eq!(rollout_bucket(flag, m), bucket, "{flag}:{merchant}");
        }
    }

    #[test]
    fn rollouts_reach_close_to_their_share_of_10000_merchants() {
        let merchants: Vec<MerchantId> = (0..10_000).map(|_| MerchantId(Uuid::new_v4())).collect();
        for (flag, percent) in [("a", 1_i16), ("b", 10), ("c", 25), ("d", 50), ("e", 90)] {
            let on = merchants
                .iter()
                .filter(|m| in_rollout(flag, **m, percent))
                .count();
            let expected = usize::try_from(percent).unwrap() * 100;
            // Binomial: the standard deviation is at most 50 of 10,000;
            // 4 sigma (200) fails by chance about once in 16,000 runs.
            assert!(
                on.abs_diff(expected) <= 200,
                "{flag} at {percent} %: {on} of 10000"
            );
        }
        // 0 % and 100 % are exact.
        assert!(merchants.iter().all(|m| !in_rollout("z", *m, 0)));
        assert!(merchants.iter().all(|m| in_rollout("z", *m, 100)));
        // Raising a rollout only adds merchants.
        assert!(
            merchants
                .iter()
                .all(|m| !in_rollout("f", *m, 10) || in_rollout("f", *m, 20))
        );
    }
}
