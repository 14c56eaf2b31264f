//! The continuous isolation probe: quiet on a healthy system, loud within
//! one interval when isolation is broken on purpose, and invisible to
//! operators' listings and to usage.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use rocket::http::Status;

use crate::common::{TestApp, api, count};
use posd::tenancy::{
    Tier,
    probe::{Path, ProbeRun},
};

/// Waits (at most `limit`) for a probe run that started after `after`
/// runs.
async fn next_run(t: &TestApp, after: u64, limit: Duration) -> ProbeRun {
    let start = Instant::now();
    loop {
        // A run that ends after `after + 1` started after the state we set.
        if t.app().probe.runs() >= after + 2 {
            return t.app().probe.last().expect("a run");
        }
        assert!(
            start.elapsed() < limit,
            "no probe run within {limit:?}: {} runs",
            t.app().probe.runs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready_status(t: &TestApp) -> String {
    let res = t.client.get("/readyz").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    let body: serde_json::Value = serde_json::from_str(&res.into_string().await.unwrap()).unwrap();
    body["status"].as_str().unwrap().to_string()
}

#[rocket::async_test]
async fn the_probe_is_quiet_when_isolation_holds_and_catches_a_break() {
    let interval = Duration::from_secs(1);
    let t = TestApp::with_config(move |s| s.isolation_probe_interval = Some(interval)).await;
    // The first run makes the probe merchants (a schema, a database).
    let run = next_run(&t, 0, Duration::from_secs(120)).await;
    let mut tiers = run.tiers.clone();
    tiers.sort_by_key(|t| t.as_str());
    assert_eq!(tiers, [Tier::Dedicated, Tier::Schema, Tier::Shared]);
    // Bound: the three in the platform database against each other; then
    // each of the four unbound.
    assert_eq!(run.attempts, 3 * 2 + 4);
    assert!(run.breaches.is_empty(), "{run:?}");
    assert_eq!(ready_status(&t).await, "ready");

    // Hidden from operators, never billed.
    let (s, list) = t.get(api!("/admin/tenants"), &t.admin_token()).await;
    assert_eq!(s, Status::Ok);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| !m["slug"].as_str().unwrap().starts_with("posd-probe-")),
        "{list}"
    );
    posd::tenancy::usage::measure_storage(&t.app().tenancy)
        .await
        .unwrap();
    let billed = count(
        &mut t.db.owner(),
        "SELECT count(*) AS n FROM merchant_usage u JOIN merchants m ON m.id = u.merchant_id WHERE m.probe",
    )
    .unwrap();
    assert_eq!(billed, 0);

    // Broken on purpose: the shared tier's products without row-level
    // security. The next run that starts after it catches it.
    t.db.owner()
        .batch_execute("ALTER TABLE tenant_shared.products DISABLE ROW LEVEL SECURITY")
        .unwrap();
    let run = next_run(&t, t.app().probe.runs(), Duration::from_secs(60)).await;
    assert!(!run.breaches.is_empty(), "{run:?}");
    assert!(
        run.breaches
            .iter()
            .any(|b| b.from == Some(Tier::Shared) && b.to == Tier::Shared && b.path == Path::Bound),
        "one shared merchant reads the other: {run:?}"
    );
    assert!(
        run.breaches
            .iter()
            .any(|b| b.from.is_none() && b.to == Tier::Shared && b.path == Path::Unbound),
        "unbound, the shared tier is open: {run:?}"
    );
    assert!(
        run.breaches.iter().all(|b| b.to == Tier::Shared),
        "only the broken tier: {run:?}"
    );
    assert_eq!(ready_status(&t).await, "degraded");
    let metrics = t.metrics().await;
    let breaches = metrics
        .lines()
        .find(|l| l.starts_with("posd_isolation_breaches "))
        .unwrap();
    assert_ne!(breaches, "posd_isolation_breaches 0", "{metrics}");

    // Mended: the next run is clean, and so is readiness; nothing the
    // probe tried stayed.
    t.db.owner()
        .batch_execute("ALTER TABLE tenant_shared.products ENABLE ROW LEVEL SECURITY")
        .unwrap();
    let run = next_run(&t, t.app().probe.runs(), Duration::from_secs(60)).await;
    assert!(run.breaches.is_empty(), "{run:?}");
    assert_eq!(ready_status(&t).await, "ready");
    let intruders = count(
        &mut t.db.owner(),
        "SELECT count(*) AS n FROM tenant_shared.products WHERE sku = 'posd-probe-intruder'",
    )
    .unwrap();
    assert_eq!(intruders, 0);
}
