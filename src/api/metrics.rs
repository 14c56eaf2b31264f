//! `GET /metrics`: Prometheus text exposition of request counts and
//! latencies per route, and of the tenant pools; and the access log. Labels carry route
//! templates (`/api/v2/POS/orders/<id>`), never ids, so no merchant or
//! object appears in them and their number stays bounded.

use std::{sync::Arc, time::Instant};

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
use rocket::{
    Data, Request, Response, Route, State,
    fairing::{Fairing, Info, Kind},
    get,
    http::ContentType,
    routes,
};

use crate::app::App;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
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
        Arc::new(Metrics {
            registry: Mutex::new(registry),
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
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry.lock()) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The target of the access log: one INFO line per answered request.
pub const ACCESS_LOG: &str = "posd::access";

/// Records every answered request in the metrics, and logs it in one line
/// at INFO (target [`ACCESS_LOG`]): method, path (without the query),
/// status, milliseconds and the route template. Never a header (so never a
/// token), a query or a body.
pub struct Recorder(pub Arc<Metrics>);

struct Started(Instant);

#[rocket::async_trait]
impl Fairing for Recorder {
    fn info(&self) -> Info {
        Info {
            name: "metrics",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(|| Started(Instant::now()));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let elapsed = req.local_cache(|| Started(Instant::now())).0.elapsed();
        let route = req.route().map_or_else(
            || "unmatched".to_string(),
            |r| r.uri.origin.path().to_string(),
        );
        let method = req.method().as_str().to_string();
        let status = res.status().code;
        tracing::info!(
            target: ACCESS_LOG,
            route = %route,
            "{method} {path} {status} {ms:.1} ms",
            path = req.uri().path(),
            ms = elapsed.as_secs_f64() * 1000.0,
        );
        self.0
            .latency
            .get_or_create(&RouteLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.0
            .requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
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
