//! posd: a hybrid multi-tenant point-of-sale backend.
//!
//! One control plane (the platform database) and a data plane split per
//! merchant over three tiers: shared (rows scoped by `merchant_id`, RLS as a
//! safety net), schema (the merchant's own schema) and dedicated (the
//! merchant's own database). Handlers never branch on the tier: request
//! guards verify the token, resolve the merchant's placement and hand the
//! handler a connection already bound to the merchant.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod db;
pub mod embedded;
pub mod error;
pub mod invalidation;
pub mod pos;
pub mod redact;
pub mod tenancy;

use rocket::{Build, Rocket, fairing::AdHoc, figment::Figment};

pub use app::{App, BootError, boot};

/// The whole application, wired in one place: state, routes, catchers,
/// the cache invalidation listener and shutdown.
pub fn rocket(app: App, figment: Figment) -> Rocket<Build> {
    let listener_url = app.settings.listen_url().clone();
    let caches = invalidation::Caches {
        directory: app.directory.clone(),
        contexts: app.contexts.clone(),
        staff: app.staff_states.clone(),
        hosts: app.hosts.clone(),
        pools: app.pools.clone(),
        jobs: app.jobs.clone(),
    };
    let metrics = api::metrics::Metrics::new(&app.move_metrics);
    let login_limiter = api::auth::LoginLimiter::new(&app.settings);
    let mut rocket = rocket::custom(figment)
        .manage(app)
        .manage(metrics.clone())
        .manage(login_limiter)
        .manage(api::ratelimit::RequestLimiter::default())
        .attach(api::screen::Screen)
        .attach(api::host::HostRouting)
        .attach(api::accounting::Recorder(metrics))
        .register("/", api::catchers())
        .attach(AdHoc::on_ignite(
            "cache invalidation listener",
            move |rocket| async move {
                invalidation::spawn_listener(listener_url, caches);
                rocket
            },
        ))
        .attach(AdHoc::on_ignite("usage metering, noisy neighbours, the probe and job workers", |rocket| async move {
            if let Some(app) = rocket.state::<App>() {
                tenancy::usage::spawn(app.tenancy.clone());
                tenancy::noisy::spawn(app.tenancy.clone());
                if let Some(every) = app.settings.isolation_probe_interval {
                    tenancy::probe::spawn(app.tenancy.clone(), every);
                }
                tenancy::jobs::spawn(&app.tenancy);
            }
            rocket
        }))
        .attach(AdHoc::on_liftoff("announce", |rocket| {
            Box::pin(async move {
                let c = rocket.config();
                tracing::info!("posd serving on http://{}:{}", c.address, c.port);
            })
        }))
        .attach(AdHoc::on_shutdown("close tenant pools", |rocket| {
            Box::pin(async move {
                if let Some(app) = rocket.state::<App>() {
                    if let Err(e) = app.usage.flush(app).await {
                        tracing::warn!(error = %e, "could not flush usage counters at shutdown; they are lost");
                    }
                    app.pools.close_all();
                    tracing::info!("tenant pools closed");
                }
            })
        }));
    for (base, routes) in api::routes() {
        rocket = rocket.mount(base, routes);
    }
    rocket
}
