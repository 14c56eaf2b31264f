//! The benchmark control route (feature `bench-control`, off by default).
//!
//! `GET /bench/control/products/<id>?merchant=<uuid>` runs the query of
//! `GET /products/<id>` ([`Product::find`]) on a plain pool with no
//! tenancy: no token, no placement lookup, no transaction and no binding.
//! The benchmark suite (`bench/`) compares the two to measure what tenant
//! routing costs. The pool connects with `POSD_BENCH_CONTROL_URL`, a role
//! that bypasses row-level security and whose `search_path` is the shared
//! tier's schema; without it the route answers 404.
//!
//! The route is unauthenticated and reads any merchant's catalog: it
//! exists only in binaries built with `--features bench-control`.

use std::sync::OnceLock;

use rocket::{Route, State, get, routes, serde::json::Json};
use secrecy::SecretString;
use uuid::Uuid;

use crate::{
    app::App,
    db::{
        ids::{MerchantId, ProductId},
        pool::{self, PoolOptions},
        tenant::{TenantTx, products::Product},
    },
    error::{ApiError, ApiResult},
    tenancy::pools::PoolHandle,
};

fn control_pool(app: &App) -> Option<PoolHandle> {
    static POOL: OnceLock<Option<PoolHandle>> = OnceLock::new();
    POOL.get_or_init(|| {
        let url = SecretString::from(std::env::var("POSD_BENCH_CONTROL_URL").ok()?);
        tracing::warn!("bench-control: serving the unauthenticated benchmark control route");
        Some(PoolHandle::new(pool::build(
            &url,
            None,
            &PoolOptions {
                max_size: app.settings.pool_size,
                connect_timeout: app.settings.pool_connect_timeout,
                idle_timeout: Some(std::time::Duration::from_secs(600)),
                statement_timeout: app.settings.statement_timeout,
                thread_pool: None,
                pooler_safe: false,
            },
            None,
        )))
    })
    .clone()
}

#[get("/bench/control/products/<id>?<merchant>")]
async fn product(app: &State<App>, id: ProductId, merchant: Uuid) -> ApiResult<Json<Product>> {
    let handle = control_pool(app).ok_or_else(|| ApiError::not_found("route"))?;
    handle
        .run(app.settings.pool_connect_timeout, None, move |conn| {
            let mut tx = TenantTx::unbound(conn, MerchantId(merchant));
            Product::find(&mut tx, id).map_err(ApiError::or_not_found("product"))
        })
        .await
        .map(Json)
}

pub fn routes() -> Vec<Route> {
    routes![product]
}
