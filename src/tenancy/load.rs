//! Per-merchant load over a sliding window: which merchants this instance
//! is busy with, and with what.
//!
//! Every staff request adds one sample when it is answered: its merchant,
//! tier, route template, status, latency, and what its transactions spent
//! in the database ([`Spent`]: time inside transactions, and time waiting
//! for a pool's permit and connection). Samples land in one-minute buckets,
//! the last [`MAX_WINDOW_MINUTES`] kept, per merchant and per route, so an
//! operator can ask who took the database time, the requests or the errors
//! of the last minutes ([`Load::top`]), and `/metrics` exports the top
//! merchants only (bounded cardinality). A bucket holds at most
//! [`MAX_MERCHANTS`] merchants: past that, samples count to `other`, so
//! memory stays bounded whatever the number of merchants.
//!
//! This is one instance's view, in memory (no round trip on the request
//! path: one lock per answered request). With several instances, each
//! sees its own share of the traffic.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Tier;
use crate::db::ids::MerchantId;

/// The longest window [`Load::top`] answers for, in minutes.
pub const MAX_WINDOW_MINUTES: u32 = 15;
/// Merchants one bucket tracks by name; the rest count to `other`.
pub const MAX_MERCHANTS: usize = 100_000;

const MINUTE: Duration = Duration::from_secs(60);

/// `d` in whole microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What one request's transactions spent in the database, added to by each
/// of them (from blocking threads) and read when it is answered.
#[derive(Debug, Default)]
pub struct Spent {
    db_time_us: AtomicU64,
    wait_us: AtomicU64,
    transactions: AtomicU64,
}

impl Spent {
    /// One transaction: `waited` for a permit and a connection, then
    /// `took` inside the transaction.
    pub fn add(&self, waited: Duration, took: Duration) {
        self.wait_us.fetch_add(micros(waited), Ordering::Relaxed);
        self.db_time_us.fetch_add(micros(took), Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }

    /// Time inside transactions.
    pub fn db_time(&self) -> Duration {
        Duration::from_micros(self.db_time_us.load(Ordering::Relaxed))
    }

    /// Time waiting for a pool's permit and connection.
    pub fn wait(&self) -> Duration {
        Duration::from_micros(self.wait_us.load(Ordering::Relaxed))
    }

    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }
}

/// One answered staff request.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub merchant: MerchantId,
    pub slug: &'a str,
    pub tier: Tier,
    /// The route's template, `GET /api/v2/POS/products/<id>`.
    pub route: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub spent: &'a Spent,
}

/// Counts over some time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub requests: u64,
    /// Answers with a 5xx status.
    pub errors: u64,
    /// Answers with a 429 (the merchant's rate limit).
    pub throttled: u64,
    pub latency_us: u64,
    pub db_time_us: u64,
    pub wait_us: u64,
    pub transactions: u64,
}

impl Tally {
    fn add_sample(&mut self, s: &Sample<'_>) {
        self.requests += 1;
        self.errors += u64::from(s.status >= 500);
        self.throttled += u64::from(s.status == 429);
        self.latency_us = self.latency_us.saturating_add(micros(s.latency));
        self.db_time_us = self.db_time_us.saturating_add(micros(s.spent.db_time()));
        self.wait_us = self.wait_us.saturating_add(micros(s.spent.wait()));
        self.transactions = self.transactions.saturating_add(s.spent.transactions());
    }

    fn add(&mut self, o: &Tally) {
        self.requests = self.requests.saturating_add(o.requests);
        self.errors = self.errors.saturating_add(o.errors);
        self.throttled = self.throttled.saturating_add(o.throttled);
        self.latency_us = self.latency_us.saturating_add(o.latency_us);
        self.db_time_us = self.db_time_us.saturating_add(o.db_time_us);
        self.wait_us = self.wait_us.saturating_add(o.wait_us);
        self.transactions = self.transactions.saturating_add(o.transactions);
    }
}

/// A merchant's slug, tier and counts over a window.
type Totals = (Arc<str>, Tier, Tally);

/// A merchant's counts in one bucket.
#[derive(Debug)]
struct MerchantTally {
    slug: Arc<str>,
    tier: Tier,
    all: Tally,
    routes: HashMap<String, Tally>,
}

#[derive(Debug, Default)]
struct Bucket {
    minute: u64,
    merchants: HashMap<MerchantId, MerchantTally>,
    other: Tally,
    /// Everything, `other` included, per tier.
    by_tier: HashMap<Tier, Tally>,
}

/// What to rank merchants by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    DbTime,
    Requests,
    Errors,
}

impl RankBy {
    fn key(self, t: &Tally) -> u64 {
        match self {
            RankBy::DbTime => t.db_time_us,
            RankBy::Requests => t.requests,
            RankBy::Errors => t.errors,
        }
    }
}

/// A route's share of a merchant's load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteLoad {
    pub route: String,
    #[serde(flatten)]
    pub tally: Tally,
}

/// One merchant's load over a window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MerchantLoad {
    pub merchant_id: MerchantId,
    pub slug: String,
    /// The tier of its last request in the window.
    pub tier: Tier,
    #[serde(flatten)]
    pub tally: Tally,
    /// Its database time as a share (0 to 1) of the database time of
    /// every merchant on its pool: the global pool for shared and schema
    /// merchants, its own for a dedicated one.
    pub pool_share: f64,
    /// Its routes, by database time, the five heaviest.
    pub top_routes: Vec<RouteLoad>,
}

/// The merchants' load over a window, ranked.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ranking {
    /// The window in minutes: the whole minutes before this one, and this
    /// one so far.
    pub window_minutes: u32,
    /// Merchants in the window.
    pub merchants: usize,
    /// The first ones by the ranking asked for (only merchants with
    /// something to rank by).
    pub items: Vec<MerchantLoad>,
    /// Everything else in the window: merchants ranked below, and those
    /// past a bucket's capacity.
    pub other: Tally,
    /// Everything in the window, per tier.
    pub by_tier: Vec<TierLoad>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierLoad {
    pub tier: Tier,
    #[serde(flatten)]
    pub tally: Tally,
}

/// This instance's per-merchant load, by minute.
pub struct Load {
    started: Instant,
    buckets: Mutex<VecDeque<Bucket>>,
    max_merchants: usize,
}

impl Default for Load {
    fn default() -> Self {
        Self::with_capacity(MAX_MERCHANTS)
    }
}

impl Load {
    /// A tracker whose buckets name at most `max_merchants` merchants each.
    pub fn with_capacity(max_merchants: usize) -> Self {
        Load {
            started: Instant::now(),
            buckets: Mutex::new(VecDeque::new()),
            max_merchants,
        }
    }

    /// How long this tracker has been counting.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / MINUTE.as_secs()
    }

    /// Adds one answered request.
    pub fn record(&self, s: &Sample<'_>) {
        let minute = self.minute();
        let mut buckets = self.buckets.lock();
        if buckets.back().is_none_or(|b| b.minute != minute) {
            while buckets
                .front()
                .is_some_and(|b| b.minute + u64::from(MAX_WINDOW_MINUTES) <= minute)
            {
                buckets.pop_front();
            }
            buckets.push_back(Bucket {
                minute,
                ..Bucket::default()
            });
        }
        let Some(bucket) = buckets.back_mut() else {
            return;
        };
        bucket.by_tier.entry(s.tier).or_default().add_sample(s);
        let room = bucket.merchants.len() < self.max_merchants;
        let entry = match bucket.merchants.get_mut(&s.merchant) {
            Some(e) => e,
            None if room => bucket
                .merchants
                .entry(s.merchant)
                .or_insert_with(|| MerchantTally {
                    slug: Arc::from(s.slug),
                    tier: s.tier,
                    all: Tally::default(),
                    routes: HashMap::new(),
                }),
            None => {
                bucket.other.add_sample(s);
                return;
            }
        };
        entry.tier = s.tier;
        entry.all.add_sample(s);
        match entry.routes.get_mut(s.route) {
            Some(r) => r.add_sample(s),
            None => {
                let mut r = Tally::default();
                r.add_sample(s);
                entry.routes.insert(s.route.to_string(), r);
            }
        }
    }

    /// The merchants of the last `window_minutes` (1 to
    /// [`MAX_WINDOW_MINUTES`]), the first `n` by `by`.
    pub fn top(&self, window_minutes: u32, by: RankBy, n: usize) -> Ranking {
        let window_minutes = window_minutes.clamp(1, MAX_WINDOW_MINUTES);
        let now = self.minute();
        let oldest = (now + 1).saturating_sub(u64::from(window_minutes));
        // First pass: every merchant's totals (no routes: only the first
        // `n` need theirs, gathered in a second pass).
        let mut merchants: HashMap<MerchantId, Totals> = HashMap::new();
        let mut other = Tally::default();
        let mut by_tier: HashMap<Tier, Tally> = HashMap::new();
        {
            let buckets = self.buckets.lock();
            for b in buckets.iter().filter(|b| b.minute >= oldest) {
                other.add(&b.other);
                for (tier, t) in &b.by_tier {
                    by_tier.entry(*tier).or_default().add(t);
                }
                for (id, m) in &b.merchants {
                    let acc = merchants
                        .entry(*id)
                        .or_insert_with(|| (m.slug.clone(), m.tier, Tally::default()));
                    acc.1 = m.tier;
                    acc.2.add(&m.all);
                }
            }
        }
        // Database time per pool: the global one, and each dedicated
        // merchant's own.
        let global: u64 = merchants
            .values()
            .filter(|(_, tier, _)| *tier != Tier::Dedicated)
            .map(|(_, _, all)| all.db_time_us)
            .sum();
        let count = merchants.len();
        let mut ranked: Vec<(MerchantId, Totals)> = merchants
            .into_iter()
            .filter(|(_, (_, _, all))| by.key(all) > 0)
            .collect();
        ranked.sort_by(|a, b| {
            by.key(&b.1.2)
                .cmp(&by.key(&a.1.2))
                .then_with(|| a.0.cmp(&b.0))
        });
        for (_, (_, _, all)) in ranked.iter().skip(n) {
            other.add(all);
        }
        ranked.truncate(n);
        let mut routes: HashMap<MerchantId, HashMap<String, Tally>> =
            ranked.iter().map(|(id, _)| (*id, HashMap::new())).collect();
        {
            let buckets = self.buckets.lock();
            for b in buckets.iter().filter(|b| b.minute >= oldest) {
                for (id, acc) in &mut routes {
                    if let Some(m) = b.merchants.get(id) {
                        for (route, t) in &m.routes {
                            acc.entry(route.clone()).or_default().add(t);
                        }
                    }
                }
            }
        }
        let mut items = Vec::with_capacity(ranked.len());
        for (id, (slug, tier, all)) in ranked {
            let pool = if tier == Tier::Dedicated {
                all.db_time_us
            } else {
                global
            };
            let mut top_routes: Vec<RouteLoad> = routes
                .remove(&id)
                .unwrap_or_default()
                .into_iter()
                .map(|(route, tally)| RouteLoad { route, tally })
                .collect();
            top_routes.sort_by(|a, b| {
                b.tally
                    .db_time_us
                    .cmp(&a.tally.db_time_us)
                    .then_with(|| b.tally.requests.cmp(&a.tally.requests))
                    .then_with(|| a.route.cmp(&b.route))
            });
            top_routes.truncate(5);
            items.push(MerchantLoad {
                merchant_id: id,
                slug: slug.to_string(),
                tier,
                tally: all,
                pool_share: ratio(secs(all.db_time_us), secs(pool)),
                top_routes,
            });
        }
        let mut by_tier: Vec<TierLoad> = by_tier
            .into_iter()
            .map(|(tier, tally)| TierLoad { tier, tally })
            .collect();
        by_tier.sort_by_key(|t| t.tier.as_str());
        Ranking {
            window_minutes,
            merchants: count,
            items,
            other,
            by_tier,
        }
    }
}

/// Microseconds as seconds.
pub fn secs(us: u64) -> f64 {
    Duration::from_micros(us).as_secs_f64()
}

/// `part / whole`, 0 when `whole` is not positive.
pub fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(n: u128) -> MerchantId {
        MerchantId(uuid::Uuid::from_u128(n))
    }

    fn sample<'a>(m: u128, route: &'a str, status: u16, spent: &'a Spent) -> Sample<'a> {
        Sample {
            merchant: id(m),
            slug: "m",
            tier: Tier::Shared,
            route,
            status,
            latency: Duration::from_millis(2),
            spent,
        }
    }

    #[test]
    fn ranks_by_database_time_requests_or_errors() {
        let load = Load::default();
        let heavy = Spent::default();
        heavy.add(Duration::from_millis(1), Duration::from_millis(50));
        let light = Spent::default();
        light.add(Duration::ZERO, Duration::from_millis(1));
        load.record(&sample(1, "GET /a", 200, &heavy));
        for _ in 0..5 {
            load.record(&sample(2, "GET /b", 200, &light));
        }
        load.record(&sample(3, "GET /c", 500, &light));
        load.record(&sample(3, "POST /d", 200, &light));

        let by_db = load.top(5, RankBy::DbTime, 10);
        let order: Vec<MerchantId> = by_db.items.iter().map(|m| m.merchant_id).collect();
        assert_eq!(order, [id(1), id(2), id(3)]);
        assert_eq!(by_db.merchants, 3);
        let first = &by_db.items[0];
        assert_eq!(first.tally.db_time_us, 50_000);
        assert_eq!(first.tally.wait_us, 1_000);
        // 50 of 57 ms on the global pool.
        assert!((first.pool_share - 50.0 / 57.0).abs() < 1e-9, "{first:?}");
        assert_eq!(by_db.by_tier[0].tally.requests, 8);

        let by_requests = load.top(5, RankBy::Requests, 1);
        assert_eq!(by_requests.items[0].merchant_id, id(2));
        assert_eq!(by_requests.other.requests, 3, "the rest is `other`");

        let by_errors = load.top(5, RankBy::Errors, 10);
        assert_eq!(by_errors.items.len(), 1, "only merchants with errors");
        assert_eq!(by_errors.items[0].merchant_id, id(3));
        let routes: Vec<&str> = by_errors.items[0]
            .top_routes
            .iter()
            .map(|r| r.route.as_str())
            .collect();
        assert_eq!(routes.len(), 2);
        assert!(routes.contains(&"GET /c") && routes.contains(&"POST /d"));
    }

    #[test]
    fn a_bucket_past_its_capacity_counts_to_other() {
        let load = Load::with_capacity(10);
        let spent = Spent::default();
        for m in 0..1000 {
            load.record(&sample(m, "GET /a", 200, &spent));
        }
        let top = load.top(1, RankBy::Requests, 100);
        assert_eq!(top.merchants, 10);
        assert_eq!(top.items.len(), 10);
        assert_eq!(top.other.requests, 990);
        assert_eq!(top.by_tier[0].tally.requests, 1000);
    }

    #[test]
    fn a_dedicated_merchant_has_its_pool_to_itself() {
        let load = Load::default();
        let spent = Spent::default();
        spent.add(Duration::ZERO, Duration::from_millis(5));
        let mut s = sample(1, "GET /a", 200, &spent);
        s.tier = Tier::Dedicated;
        load.record(&s);
        load.record(&sample(2, "GET /a", 200, &spent));
        let top = load.top(1, RankBy::DbTime, 10);
        assert!(top.items.iter().all(|m| (m.pool_share - 1.0).abs() < 1e-9));
    }
}
