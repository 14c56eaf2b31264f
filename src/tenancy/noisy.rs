//! Noisy neighbours: merchants that take most of a busy global pool.
//!
//! Shared and schema merchants share the global pool's connections. Every
//! [`CHECK_EVERY`], posd looks at the last [`WINDOW_MINUTES`] of its load
//! ([`super::load`]) and flags a merchant when both hold:
//! - its transactions took at least `POSD_NOISY_SHARE` (half, by default)
//!   of the database time of every merchant on the global pool;
//! - the pool was busy: the merchants' database time was at least
//!   [`BUSY_FLOOR`] of what the pool's connections could give over the
//!   window (a merchant alone on an idle system is nobody's problem).
//!
//! A flag comes with its evidence (share, how busy the pool was, how long
//! the others waited for it, the merchant's heaviest routes) and a
//! recommendation from the measured load: a merchant whose own load needs
//! [`BUSY_FLOOR`] of the pool belongs on a database of its own
//! (`dedicated`: a schema still shares the pool); a lighter one can stay
//! where it is with a lower `requestsPerMinute`. posd acts on neither by
//! itself; its standing protection is each merchant's cap on the pool
//! ([`super::fair`]). A flag is logged (WARN when raised, INFO when it
//! clears), shown in the tenant view and in `/metrics`
//! (`posd_merchant_noisy`).

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;

use super::{
    Tenancy, Tier,
    load::{RankBy, Ranking, RouteLoad, ratio, secs},
};
use crate::db::ids::MerchantId;

/// The window a check looks at.
pub const WINDOW_MINUTES: u32 = 5;
/// How often posd checks.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// The share of the pool's capacity above which the pool counts as busy.
pub const BUSY_FLOOR: f64 = 0.25;

/// What posd would do about a noisy merchant.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    pub tier: Tier,
    pub reason: String,
}

/// Why a merchant is flagged.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub slug: String,
    pub tier: Tier,
    /// When the flag was raised.
    pub since: DateTime<Utc>,
    pub window_minutes: u32,
    /// Its share (0 to 1) of the global pool's database time.
    pub share: f64,
    /// How busy the pool was: database time over what its connections
    /// could give (0 to 1).
    pub pool_busy: f64,
    /// How long the other merchants' transactions waited for a
    /// connection, in milliseconds.
    pub others_wait_ms: f64,
    pub requests: u64,
    pub db_time_ms: f64,
    pub top_routes: Vec<RouteLoad>,
    pub recommendation: Recommendation,
}

/// The flagged merchants of this instance.
#[derive(Default)]
pub struct Noisy {
    flagged: Mutex<HashMap<MerchantId, Evidence>>,
}

/// A change of flags from one check to the next.
#[derive(Debug, Default)]
pub struct Changes {
    pub raised: Vec<(MerchantId, Evidence)>,
    pub cleared: Vec<(MerchantId, Evidence)>,
}

fn ms(us: u64) -> f64 {
    secs(us) * 1000.0
}

impl Noisy {
    /// The merchant's flag, if it has one.
    pub fn get(&self, merchant: MerchantId) -> Option<Evidence> {
        self.flagged.lock().get(&merchant).cloned()
    }

    /// Every flag.
    pub fn all(&self) -> Vec<(MerchantId, Evidence)> {
        let mut all: Vec<_> = self
            .flagged
            .lock()
            .iter()
            .map(|(id, e)| (*id, e.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// Flags the merchants of `ranking` (by database time) that take
    /// `threshold` of a busy pool of `pool_size` connections, over
    /// `covered` (the part of the window the load has seen); clears the
    /// others. Answers what changed.
    pub fn evaluate(
        &self,
        ranking: &Ranking,
        pool_size: u32,
        covered: Duration,
        threshold: f64,
    ) -> Changes {
        let global = |f: fn(&super::load::Tally) -> u64| -> u64 {
            ranking
                .by_tier
                .iter()
                .filter(|t| t.tier != Tier::Dedicated)
                .map(|t| f(&t.tally))
                .sum()
        };
        let (db, wait) = (global(|t| t.db_time_us), global(|t| t.wait_us));
        let capacity = f64::from(pool_size) * covered.as_secs_f64();
        let busy = ratio(secs(db), capacity);
        let now = Utc::now();
        let mut found = HashMap::new();
        if busy >= BUSY_FLOOR {
            for m in ranking.items.iter().filter(|m| m.tier != Tier::Dedicated) {
                if m.pool_share < threshold {
                    continue;
                }
                let own = ratio(secs(m.tally.db_time_us), capacity);
                let recommendation = if own >= BUSY_FLOOR {
                    Recommendation {
                        tier: Tier::Dedicated,
                        reason: format!(
                            "its own load keeps {:.0} % of the global pool busy: a database of its own (a schema still shares the pool)",
                            own * 100.0
                        ),
                    }
                } else {
                    Recommendation {
                        tier: m.tier,
                        reason: format!(
                            "its load ({:.0} % of the pool) fits the shared pool: lower its requestsPerMinute",
                            own * 100.0
                        ),
                    }
                };
                found.insert(
                    m.merchant_id,
                    Evidence {
                        slug: m.slug.clone(),
                        tier: m.tier,
                        since: now,
                        window_minutes: ranking.window_minutes,
                        share: m.pool_share,
                        pool_busy: busy,
                        others_wait_ms: ms(wait.saturating_sub(m.tally.wait_us)),
                        requests: m.tally.requests,
                        db_time_ms: ms(m.tally.db_time_us),
                        top_routes: m.top_routes.clone(),
                        recommendation,
                    },
                );
            }
        }
        let mut changes = Changes::default();
        let mut flagged = self.flagged.lock();
        let gone: Vec<MerchantId> = flagged
            .keys()
            .filter(|id| !found.contains_key(*id))
            .copied()
            .collect();
        for id in gone {
            if let Some(e) = flagged.remove(&id) {
                changes.cleared.push((id, e));
            }
        }
        for (id, mut e) in found {
            match flagged.get(&id) {
                Some(old) => e.since = old.since,
                None => changes.raised.push((id, e.clone())),
            }
            flagged.insert(id, e);
        }
        changes
    }
}

/// One check of this instance's load: flags and clears, and logs what
/// changed.
pub fn check(app: &Tenancy) -> Changes {
    let ranking = app.load.top(WINDOW_MINUTES, RankBy::DbTime, 100);
    let window = Duration::from_secs(u64::from(WINDOW_MINUTES) * 60);
    let covered = app.load.age().min(window);
    let changes = app.noisy.evaluate(
        &ranking,
        app.settings.pool_size,
        covered,
        app.settings.noisy_share,
    );
    for (id, e) in &changes.raised {
        let routes: Vec<&str> = e.top_routes.iter().map(|r| r.route.as_str()).collect();
        tracing::warn!(
            merchant = %id,
            slug = %e.slug,
            tier = %e.tier,
            share = e.share,
            pool_busy = e.pool_busy,
            others_wait_ms = e.others_wait_ms,
            window_minutes = e.window_minutes,
            top_routes = ?routes,
            recommended_tier = %e.recommendation.tier,
            "noisy neighbour: the merchant takes {:.0} % of the busy global pool's database time ({})",
            e.share * 100.0,
            e.recommendation.reason,
        );
    }
    for (id, e) in &changes.cleared {
        tracing::info!(merchant = %id, slug = %e.slug, "noisy neighbour flag cleared");
    }
    changes
}

/// Checks every [`CHECK_EVERY`] until the runtime ends.
pub fn spawn(app: Tenancy) {
    super::spawn_every(CHECK_EVERY, false, move || {
        check(&app);
        std::future::ready(())
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::tenancy::load::{Load, Sample, Spent};

    fn record(load: &Load, m: u128, tier: Tier, db_ms: u64, n: usize) {
        let spent = Spent::default();
        spent.add(Duration::from_millis(1), Duration::from_millis(db_ms));
        for _ in 0..n {
            load.record(&Sample {
                merchant: MerchantId(uuid::Uuid::from_u128(m)),
                slug: "s",
                tier,
                route: "GET /r",
                status: 200,
                latency: Duration::from_millis(db_ms),
                spent: &spent,
            });
        }
    }

    #[test]
    fn a_merchant_taking_most_of_a_busy_pool_is_flagged_then_cleared() {
        let load = Load::default();
        // 10 s of database time by one merchant, 1 s by another, over 10 s
        // of a pool of 4: busy 27.5 %, shares 91 % and 9 %.
        record(&load, 1, Tier::Shared, 100, 100);
        record(&load, 2, Tier::Schema, 10, 100);
        record(&load, 3, Tier::Dedicated, 1000, 100);
        let noisy = Noisy::default();
        let ranking = load.top(5, RankBy::DbTime, 10);
        let changes = noisy.evaluate(&ranking, 4, Duration::from_secs(10), 0.5);
        assert_eq!(changes.raised.len(), 1);
        let (id, e) = &changes.raised[0];
        assert_eq!(*id, MerchantId(uuid::Uuid::from_u128(1)));
        assert!((e.share - 10.0 / 11.0).abs() < 1e-9, "{e:?}");
        assert!((e.pool_busy - 0.275).abs() < 1e-9, "{e:?}");
        assert!((e.others_wait_ms - 100.0).abs() < 1e-6, "{e:?}");
        assert_eq!(
            e.recommendation.tier,
            Tier::Dedicated,
            "25 % of the pool alone"
        );
        assert!(noisy.get(*id).is_some());

        // Again: still flagged, nothing new, the same `since`.
        let again = noisy.evaluate(&ranking, 4, Duration::from_secs(10), 0.5);
        assert!(again.raised.is_empty() && again.cleared.is_empty());
        assert_eq!(noisy.get(*id).unwrap().since, e.since);

        // A pool four times larger is not busy: the flag clears.
        let cleared = noisy.evaluate(&ranking, 16, Duration::from_secs(10), 0.5);
        assert_eq!(cleared.cleared.len(), 1);
        assert!(noisy.all().is_empty());

        // A share under the threshold is no flag, however busy.
        let none = noisy.evaluate(&ranking, 4, Duration::from_secs(10), 0.95);
        assert!(none.raised.is_empty());
    }

    #[test]
    fn a_lighter_noisy_merchant_is_told_to_slow_down() {
        let load = Load::default();
        record(&load, 1, Tier::Shared, 10, 100); // 1 s
        record(&load, 2, Tier::Shared, 1, 500); // 0.5 s
        let noisy = Noisy::default();
        let ranking = load.top(5, RankBy::DbTime, 10);
        // A pool of 1 over 5 s: busy 30 %, the first takes 67 %, 20 % alone.
        let changes = noisy.evaluate(&ranking, 1, Duration::from_secs(5), 0.5);
        assert_eq!(changes.raised.len(), 1);
        let e = &changes.raised[0].1;
        assert_eq!(e.recommendation.tier, Tier::Shared);
        assert!(
            e.recommendation.reason.contains("requestsPerMinute"),
            "{e:?}"
        );
    }
}
