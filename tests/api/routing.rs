//! Placement routing: NOTIFY invalidation across instances, suspension, and
//! the kill switch.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use rocket::http::Status;
use serde_json::json;

use crate::common::{API, TestApp, api, assert_error, assert_error_about, count};
use posd::tenancy::{Tier, tenant_schema_name};

/// A change made by another instance (here: straight in the control plane)
/// reaches this instance through NOTIFY, long before the cache TTL.
#[rocket::async_test]
async fn placement_changes_are_seen_at_once_through_notify() {
    let t = TestApp::with_config(|s| s.placement_cache_ttl = Duration::from_secs(3600)).await;
    let m = t.shared_merchant("notify-shop").await;
    let (status, _) = t.get(api!("/products"), &m.token).await;
    assert_eq!(status, Status::Ok);
    assert!(
        t.app().directory.cached(m.id).is_some(),
        "placement is cached"
    );

    let mut events = t.app().directory.subscribe();
    t.db.owner()
        .batch_execute(&format!(
            "UPDATE merchants SET status = 'suspended' WHERE id = '{}'",
            m.id
        ))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(Some(id)) if id == m.id => break,
                Ok(_) => {}
                Err(e) => panic!("invalidation channel: {e}"),
            }
        }
    })
    .await
    .expect("no NOTIFY arrived");
    let (status, body) = t.get(api!("/products"), &m.token).await;
    assert_error((status, &body), Status::Forbidden, "merchant_suspended");

    // Resume through the admin API.
    let (status, _) = t
        .post(
            &format!("{API}/admin/tenants/{}/resume", m.id),
            &t.admin_token(),
            json!({}),
        )
        .await;
    assert_eq!(status, Status::Ok);
    let (status, _) = t.get(api!("/products"), &m.token).await;
    assert_eq!(status, Status::Ok);
}

#[rocket::async_test]
async fn suspended_merchants_get_403() {
    let t = TestApp::new().await;
    let m = t.merchant("sus-shop", Tier::Schema).await;
    let (status, _) = t
        .post(
            &format!("{API}/admin/tenants/{}/suspend", m.id),
            &t.admin_token(),
            json!({}),
        )
        .await;
    assert_eq!(status, Status::Ok);
    let (status, body) = t.get(api!("/products"), &m.token).await;
    assert_error((status, &body), Status::Forbidden, "merchant_suspended");
    let (status, body) = t
        .request(
            rocket::http::Method::Post,
            api!("/auth/login"),
            None,
            Some(json!({ "merchant": "sus-shop", "email": "owner@sus-shop.test", "password": "correct horse battery" })),
        )
        .await;
    assert_error_about(
        "no new tokens for a suspended merchant",
        (status, &body),
        Status::Forbidden,
        "merchant_suspended",
    );
}

/// With `USE_TENANT_DB_ROUTING=false` every merchant is served from the shared
/// tier, whatever its placement.
#[rocket::async_test]
async fn kill_switch_routes_every_merchant_to_the_shared_tier() {
    let t = TestApp::new().await;
    let schema_m = t.merchant("ks-schema", Tier::Schema).await;
    let dedicated_m = t.merchant("ks-dedicated", Tier::Dedicated).await;
    t.product(&schema_m, "IN-SCHEMA").await;
    t.product(&dedicated_m, "IN-DEDICATED").await;
    drop(t.client);
    let db = t.db;

    let off = TestApp::on_with(db, |s| s.use_tenant_db_routing = false).await;
    assert!(!off.app().directory.routing_enabled());
    for (m, sku) in [(&schema_m, "IN-SCHEMA"), (&dedicated_m, "IN-DEDICATED")] {
        let (status, list) = off.get(api!("/products"), &m.token).await;
        assert_eq!(status, Status::Ok);
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["sku"] != sku),
            "{} is still routed to its own tier",
            m.slug
        );
        off.product(m, &format!("{}-SHARED", m.slug)).await;
    }
    // FORCE RLS hides rows from the owner too unless bound: count in a bound transaction.
    let mut owner = off.db.owner();
    owner
        .batch_execute(&format!(
            "BEGIN; SELECT set_config('posd.merchant_id', '{}', true);",
            schema_m.id
        ))
        .unwrap();
    assert_eq!(
        count(
            &mut owner,
            "SELECT count(*) AS n FROM tenant_shared.products"
        )
        .unwrap(),
        1
    );
    let own_schema = format!(
        "SELECT count(*) AS n FROM \"{}\".products",
        tenant_schema_name(schema_m.id)
    );
    assert_eq!(
        count(&mut owner, &own_schema).unwrap(),
        1,
        "its own schema keeps only its original row"
    );
    owner.batch_execute("ROLLBACK").unwrap();
    let (_, tenants) = off.get(api!("/admin/tenants"), &off.admin_token()).await;
    let routed: Vec<&str> = tenants["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["routedTier"].as_str().unwrap())
        .collect();
    assert!(routed.iter().all(|r| *r == "shared"), "{routed:?}");
}
