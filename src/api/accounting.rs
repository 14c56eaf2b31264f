//! The per-request accounting: every request gets an id and, when it is
//! answered, one access line, its metrics ([`super::metrics`]) and, for a
//! merchant's request, its usage and load ([`crate::tenancy::usage`],
//! [`crate::tenancy::load`]), all in memory.
//!
//! The id is the client's `X-Request-Id` when it is a plain token (at most
//! 128 letters, digits and `-_.:`), else a new UUID; the answer carries it
//! back in `X-Request-Id`, the access line logs it, and so does every line
//! logged inside the request's transactions (the `request` span, with the
//! merchant and its tier).

use std::{sync::Arc, time::Instant};

use rocket::{
    Data, Request, Response,
    fairing::{Fairing, Info, Kind},
};

use super::{guards::Staff, metrics::Metrics};
use crate::{
    app::App,
    error::ApiError,
    tenancy::{
        context::TenantContext,
        load::{Sample, Spent},
        placement::Placement,
    },
};

/// A request's id and what its transactions spent, in the request's local
/// cache from its arrival.
pub struct RequestTrace {
    pub id: String,
    pub spent: Arc<Spent>,
}

impl RequestTrace {
    fn new(given: Option<&str>) -> Self {
        let id = given
            .map(str::trim)
            .filter(|id| {
                (1..=128).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            })
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        RequestTrace {
            id,
            spent: Arc::default(),
        }
    }

    /// The request's trace (made on arrival by [`Recorder`]).
    pub fn of<'r>(req: &'r Request<'_>) -> &'r RequestTrace {
        req.local_cache(|| RequestTrace::new(None))
    }
}

/// The merchant a request is for, once the staff guard knows it (set
/// before the rate limit and the staff user's checks, so a refused request
/// counts to its merchant's load too).
#[derive(Default)]
pub struct Attribution(pub Option<(Arc<Placement>, Arc<TenantContext>)>);

/// The target of the access log: one INFO line per answered request.
pub const ACCESS_LOG: &str = "posd::access";

/// Records every answered request in the metrics, and logs it in one line
/// at INFO (target [`ACCESS_LOG`]): method, path (without the query),
/// status, milliseconds, the route template, the request id and, for a
/// staff request, its merchant and tier. Never a header (so never a
/// token), a query or a body. A staff request also counts to its
/// merchant's usage (an API call and its database time) and load.
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
        let given = req.headers().get_one("X-Request-Id").map(str::to_string);
        req.local_cache(|| RequestTrace::new(given.as_deref()));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let elapsed = req.local_cache(|| Started(Instant::now())).0.elapsed();
        let trace = RequestTrace::of(req);
        res.set_raw_header("X-Request-Id", trace.id.clone());
        let route = req.route().map_or_else(
            || "unmatched".to_string(),
            |r| r.uri.origin.path().to_string(),
        );
        let method = req.method().as_str().to_string();
        let status = res.status().code;
        let Attribution(attributed) = req.local_cache(Attribution::default);
        let (merchant, tier) = attributed
            .as_ref()
            .map(|(p, _)| (p.merchant.to_string(), p.tier.as_str()))
            .unwrap_or_default();
        tracing::info!(
            target: ACCESS_LOG,
            route = %route,
            request_id = %trace.id,
            merchant = %merchant,
            tier = %tier,
            "{method} {path} {status} {ms:.1} ms",
            path = req.uri().path(),
            ms = elapsed.as_secs_f64() * 1000.0,
        );
        if let (Some((placement, context)), Some(app)) = (attributed, req.rocket().state::<App>()) {
            let staff: &Result<Staff, ApiError> =
                req.local_cache(|| Err(ApiError::unauthorized("not a staff request")));
            if staff.is_ok() {
                app.usage.request(placement.merchant, trace.spent.db_time());
            }
            app.load.record(&Sample {
                merchant: placement.merchant,
                slug: &context.merchant.slug,
                tier: placement.tier,
                route: &format!("{method} {route}"),
                status,
                latency: elapsed,
                spent: &trace.spent,
            });
        }
        self.0.observe(method, route, status, elapsed);
    }
}
