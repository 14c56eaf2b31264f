//! Per-merchant pools: idle sweeping, the LRU cap, the circuit breaker.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use rocket::http::Status;

use crate::common::{
    Server, TestApp, api, assert_error, read, server_connections, settled_server_connections,
};
use posd::tenancy::{Tier, tenant_database_name};

#[rocket::async_test]
async fn idle_pools_are_swept_and_rebuilt_on_demand() {
    let t = TestApp::with_config(|s| {
        s.pool_idle_timeout = Duration::from_millis(50);
        s.pool_sweep_interval = Duration::from_millis(20);
    })
    .await;
    let m = t.merchant("sweep-shop", Tier::Dedicated).await;
    let mut evictions = t.app().pools.subscribe_evictions();
    let (status, _) = t.get(api!("/products"), &m.token).await;
    assert_eq!(status, Status::Ok);
    let builds = t.app().pools.summary().builds;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if evictions.recv().await.expect("eviction channel") == m.id {
                break;
            }
        }
    })
    .await
    .expect("the sweeper never evicted the idle pool");
    assert!(t.app().pools.state(m.id).is_none(), "the pool is gone");
    let (status, _) = t.get(api!("/products"), &m.token).await;
    assert_eq!(status, Status::Ok, "the next request rebuilds it");
    assert_eq!(t.app().pools.summary().builds, builds + 1);
}

#[rocket::async_test]
async fn the_lru_cap_bounds_live_pools() {
    const CAP: usize = 2;
    let t = TestApp::with_config(|s| s.max_tenant_pools = CAP).await;
    let mut merchants = Vec::new();
    for i in 0..=CAP {
        merchants.push(t.merchant(&format!("lru-{i}"), Tier::Dedicated).await);
    }
    for round in 0..2 {
        for m in &merchants {
            let (status, body) = t.get(api!("/products"), &m.token).await;
            assert_eq!(status, Status::Ok, "round {round}, {}: {body}", m.slug);
            let live = t.app().pools.summary().live_pools;
            assert!(live <= CAP, "{live} live pools over a cap of {CAP}");
            assert!(
                t.app().pools.state(m.id).is_some(),
                "the merchant just served has a pool"
            );
        }
    }
    assert!(t.app().pools.summary().evictions > u64::try_from(CAP).unwrap());
}

#[rocket::async_test]
async fn connections_never_exceed_the_budget() {
    let t = TestApp::with_config(|s| {
        s.connection_budget = 2;
        s.tenant_pool_size = 2;
    })
    .await;
    let mut merchants = Vec::new();
    for i in 0..3 {
        merchants.push(t.merchant(&format!("budget-{i}"), Tier::Dedicated).await);
    }
    let server = Server::get();
    let mut su = server.superuser();
    let databases: Vec<String> = merchants
        .iter()
        .map(|m| tenant_database_name(m.id))
        .collect();
    for round in 0..3 {
        for m in &merchants {
            let (status, body) = t.get(api!("/products"), &m.token).await;
            assert_eq!(status, Status::Ok, "round {round}, {}: {body}", m.slug);
            let used = t.app().pools.summary().budget_used;
            assert!(
                used <= 2,
                "posd counts {used} tenant connections over a budget of 2"
            );
            // What the database server sees, whatever posd's counter says.
            let open = settled_server_connections(&mut su, &databases, server.app_role(), 2);
            assert!(
                open <= 2,
                "PostgreSQL has {open} connections to the tenant databases, over a budget of 2"
            );
            let serving = server_connections(
                &mut su,
                &[tenant_database_name(m.id)],
                server.app_role(),
                &[],
            );
            assert!(
                serving >= 1,
                "{} was just served, yet PostgreSQL lists no connection of posd's to its database",
                m.slug
            );
        }
    }
}

/// An unreachable tenant database answers 503 with Retry-After, trips the
/// breaker so later requests do not even try, and nobody else notices.
#[rocket::async_test]
async fn an_unreachable_tenant_database_fails_fast_and_alone() {
    let t = TestApp::with_config(|s| {
        s.breaker_threshold = 1;
        s.breaker_cooldown = Duration::from_secs(30);
    })
    .await;
    let down = t.merchant("down-shop", Tier::Dedicated).await;
    let up = t.merchant("up-shop", Tier::Dedicated).await;
    let shared = t.merchant("shared-shop", Tier::Shared).await;
    let db = tenant_database_name(down.id);
    Server::get()
        .superuser()
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';"
        ))
        .unwrap();
    t.app().pools.evict(down.id);

    let res = t
        .send(
            rocket::http::Method::Get,
            api!("/products"),
            Some(&down.token),
            None,
            &[],
        )
        .await;
    let retry: u64 = res
        .headers()
        .get_one("Retry-After")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_error(
        read(res).await,
        Status::ServiceUnavailable,
        "tenant_database_unavailable",
    );
    assert_eq!(t.app().pools.summary().open_breakers, 1);

    // With the breaker open, the next request is refused without a connection attempt.
    let builds = t.app().pools.summary().builds;
    let (status, _) = t.get(api!("/products"), &down.token).await;
    assert_eq!(status, Status::ServiceUnavailable);
    assert_eq!(t.app().pools.summary().builds, builds);

    // Everyone else is served meanwhile, concurrently with the failing tenant.
    let (a, b, c) = tokio::join!(
        t.get(api!("/products"), &up.token),
        t.get(api!("/products"), &shared.token),
        t.get(api!("/products"), &down.token),
    );
    assert_eq!(a.0, Status::Ok);
    assert_eq!(b.0, Status::Ok);
    assert_eq!(c.0, Status::ServiceUnavailable);
    Server::get()
        .superuser()
        .batch_execute(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true"))
        .unwrap();
}
