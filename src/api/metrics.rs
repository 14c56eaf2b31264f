//! `GET /metrics`: Prometheus text exposition of request counts and
//! latencies per route, of the tenant pools, and of the merchants with the
//! most load (recorded by [`super::accounting`]). Route labels
//! carry templates (`/api/v2/POS/orders/<id>`), never ids; merchant labels
//! appear only on the `posd_merchant_*` series, for the top
//! `POSD_METRICS_TOP_MERCHANTS` merchants of the last five minutes plus one
//! `other` series, so their number stays bounded however many merchants
//! there are.

use std::{sync::Arc, time::Duration};

use parking_lot::Mutex;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use rocket::{Route, State, get, http::ContentType, routes};

use crate::{app::App, tenancy::load::RankBy};

/// The window of the `posd_merchant_*` series, in minutes.
const TOP_WINDOW_MINUTES: u32 = 5;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MerchantLabels {
    merchant: String,
    slug: String,
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// A job run's kind and the status it left the job in.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// The registry and the metrics posd records.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    live_pools: Gauge,
    budget_used: Gauge,
    budget_limit: Gauge,
    open_breakers: Gauge,
    pool_builds: Gauge,
    pool_evictions: Gauge,
    probe_runs: Gauge,
    probe_breaches: Gauge,
    job_runs: Family<JobLabels, Gauge>,
    merchants: MerchantSeries,
}

type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The `posd_merchant_*` series.
struct MerchantSeries {
    requests: Family<MerchantLabels, Gauge>,
    errors: Family<MerchantLabels, Gauge>,
    db_seconds: Family<MerchantLabels, Seconds>,
    wait_seconds: Family<MerchantLabels, Seconds>,
    noisy: Family<MerchantLabels, Seconds>,
}

impl MerchantSeries {
    fn register(registry: &mut Registry) -> Self {
        let series = MerchantSeries {
            requests: Family::default(),
            errors: Family::default(),
            db_seconds: Family::default(),
            wait_seconds: Family::default(),
            noisy: Family::default(),
        };
        registry.register(
            "merchant_requests",
            "Staff requests of the merchant over the last 5 minutes (top merchants by database time, and `other`)",
            series.requests.clone(),
        );
        registry.register(
            "merchant_errors",
            "5xx answers to the merchant over the last 5 minutes (top merchants, and `other`)",
            series.errors.clone(),
        );
        registry.register(
            "merchant_db_seconds",
            "Time inside the merchant's transactions over the last 5 minutes (top merchants, and `other`)",
            series.db_seconds.clone(),
        );
        registry.register(
            "merchant_pool_wait_seconds",
            "Time the merchant's transactions waited for a pool over the last 5 minutes (top merchants, and `other`)",
            series.wait_seconds.clone(),
        );
        registry.register(
            "merchant_noisy_share",
            "Merchants flagged as noisy neighbours: their share of the busy global pool's database time",
            series.noisy.clone(),
        );
        series
    }
}

impl Metrics {
    pub fn new(moves: &crate::tenancy::moves::MoveMetrics) -> Arc<Self> {
        let mut registry = Registry::with_prefix("posd");
        moves.register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms to about 4 s
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response",
            latency.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let live_pools = gauge(
            &mut registry,
            "tenant_pools_live",
            "Live dedicated-tenant pools",
        );
        let budget_used = gauge(
            &mut registry,
            "tenant_connections_open",
            "Connections open across dedicated-tenant pools",
        );
        let budget_limit = gauge(
            &mut registry,
            "tenant_connections_budget",
            "Cap on connections across dedicated-tenant pools",
        );
        let open_breakers = gauge(
            &mut registry,
            "tenant_breakers_open",
            "Dedicated databases behind an open circuit breaker",
        );
        let pool_builds = gauge(
            &mut registry,
            "tenant_pool_builds",
            "Dedicated-tenant pools built",
        );
        let pool_evictions = gauge(
            &mut registry,
            "tenant_pool_evictions",
            "Dedicated-tenant pools evicted",
        );
        let probe_runs = gauge(
            &mut registry,
            "isolation_probe_runs",
            "Runs of the isolation probe",
        );
        let probe_breaches = gauge(
            &mut registry,
            "isolation_breaches",
            "Times the isolation probe reached another merchant's rows (0 while isolation holds)",
        );
        let job_runs = Family::<JobLabels, Gauge>::default();
        registry.register(
            "job_runs",
            "Background job runs this instance ended, by kind and the status they left the job in (queued: failed, to be retried; dead: out of attempts)",
            job_runs.clone(),
        );
        let merchants = MerchantSeries::register(&mut registry);
        Arc::new(Metrics {
            job_runs,
            registry: Mutex::new(registry),
            probe_runs,
            probe_breaches,
            merchants,
            requests,
            latency,
            live_pools,
            budget_used,
            budget_limit,
            open_breakers,
            pool_builds,
            pool_evictions,
        })
    }

    fn render(&self, app: &App) -> String {
        let s = app.pools.summary();
        let set = |g: &Gauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(
            &self.live_pools,
            u64::try_from(s.live_pools).unwrap_or(u64::MAX),
        );
        set(&self.budget_used, u64::from(s.budget_used));
        set(&self.budget_limit, u64::from(s.budget_limit));
        set(
            &self.open_breakers,
            u64::try_from(s.open_breakers).unwrap_or(u64::MAX),
        );
        set(&self.pool_builds, s.builds);
        set(&self.pool_evictions, s.evictions);
        set(&self.probe_runs, app.probe.runs());
        set(&self.probe_breaches, app.probe.breaches());
        for ((kind, status), n) in app.jobs.runs() {
            set(
                &self.job_runs.get_or_create(&JobLabels {
                    kind: kind.to_string(),
                    status: status.to_string(),
                }),
                n,
            );
        }
        self.merchants.set(app);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry.lock()) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Metrics {
    /// One answered request: its count by status and its latency, by
    /// method and route template.
    pub(super) fn observe(&self, method: String, route: String, status: u16, elapsed: Duration) {
        self.latency
            .get_or_create(&RouteLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}

impl MerchantSeries {
    /// The `posd_merchant_*` series: the top merchants by database time
    /// over the last [`TOP_WINDOW_MINUTES`], and `other`; the previous
    /// scrape's series go.
    fn set(&self, app: &App) {
        let top = app.load.top(
            TOP_WINDOW_MINUTES,
            RankBy::DbTime,
            app.settings.metrics_top_merchants,
        );
        for f in [&self.requests, &self.errors] {
            f.clear();
        }
        for f in [&self.db_seconds, &self.wait_seconds, &self.noisy] {
            f.clear();
        }
        for (id, e) in app.noisy.all() {
            self.noisy
                .get_or_create(&MerchantLabels {
                    merchant: id.to_string(),
                    slug: e.slug,
                    tier: e.tier.as_str().to_string(),
                })
                .set(e.share);
        }
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let secs = |us: u64| Duration::from_micros(us).as_secs_f64();
        let rows = top
            .items
            .iter()
            .map(|m| {
                (
                    MerchantLabels {
                        merchant: m.merchant_id.to_string(),
                        slug: m.slug.clone(),
                        tier: m.tier.as_str().to_string(),
                    },
                    m.tally,
                )
            })
            .chain(std::iter::once((
                MerchantLabels {
                    merchant: "other".into(),
                    slug: String::new(),
                    tier: String::new(),
                },
                top.other,
            )));
        for (labels, t) in rows {
            self.requests.get_or_create(&labels).set(int(t.requests));
            self.errors.get_or_create(&labels).set(int(t.errors));
            self.db_seconds
                .get_or_create(&labels)
                .set(secs(t.db_time_us));
            self.wait_seconds
                .get_or_create(&labels)
                .set(secs(t.wait_us));
        }
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text (version 0.0.4)", content_type = "text/plain", body = String)))]
#[get("/metrics")]
fn metrics(metrics: &State<Arc<Metrics>>, app: &State<App>) -> (ContentType, String) {
    let text =
        ContentType::new("text", "plain").with_params([("version", "0.0.4"), ("charset", "utf-8")]);
    (text, metrics.render(app))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(metrics))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![metrics]
}
