//! The limits a merchant's traffic and data meet: `requestsPerMinute`, a
//! token bucket per merchant in front of every staff request, and
//! `maxStorageBytes`, checked against the storage as last measured. Both
//! follow the plan and the merchant's overrides at once, on every tier.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use futures_util::future::join_all;
use rocket::http::{Method, Status};
use serde_json::{Value, json};

use crate::common::{Merchant, TIERS, TestApp, api, assert_error};
use posd::db::ids::MerchantId;

const CONTEXT: &str = api!("/context");

/// Fires `n` context reads at once for `m`; answers the statuses, and the
/// `Retry-After` and body of each refused one.
async fn burst(t: &TestApp, m: &Merchant, n: usize) -> (usize, Vec<(u64, Value)>) {
    let answers = join_all((0..n).map(|_| async {
        let res = t
            .send(Method::Get, CONTEXT, Some(&m.token), None, &[])
            .await;
        let status = res.status();
        let retry = res
            .headers()
            .get_one("Retry-After")
            .map(|v| v.parse::<u64>().expect("Retry-After is whole seconds"));
        let body: Value = serde_json::from_str(&res.into_string().await.unwrap_or_default())
            .expect("a JSON body");
        (status, retry, body)
    }))
    .await;
    let mut ok = 0;
    let mut refused = Vec::new();
    for (status, retry, body) in answers {
        if status == Status::Ok {
            ok += 1;
        } else {
            assert_eq!(status, Status::TooManyRequests, "{body}");
            refused.push((retry.expect("a 429 carries Retry-After"), body));
        }
    }
    (ok, refused)
}

/// At most the burst, plus what refilled while the requests ran.
fn allowed(burst: usize, per_minute: u64, since: Instant) -> usize {
    let refilled = since.elapsed().as_millis() * u128::from(per_minute) / 60_000;
    burst + usize::try_from(refilled).unwrap_or(usize::MAX)
}

/// A merchant on a plan of 60 requests a minute gets a burst of 10 out of
/// 40 concurrent requests, the rest 429 `rate_limited` naming the limit;
/// another merchant on the same plan is untouched; an override applies at
/// once, 0 closes the API and null (the plan says none) opens it.
#[rocket::async_test]
async fn requests_are_limited_per_merchant_by_plan_and_override() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let (status, plan) = t
        .post(
            api!("/admin/plans"),
            &admin,
            json!({ "key": "metered", "name": "Metered", "rank": 5, "requestsPerMinute": 60 }),
        )
        .await;
    assert_eq!(status, Status::Created, "{plan}");
    for tier in TIERS {
        let m = t.merchant(&format!("rate-{}", tier.as_str()), tier).await;
        let other = t
            .merchant(&format!("rate-other-{}", tier.as_str()), tier)
            .await;
        t.set_plan(m.id, json!({ "plan": "metered" })).await;
        t.set_plan(other.id, json!({ "plan": "metered" })).await;

        let start = Instant::now();
        let (ok, refused) = burst(&t, &m, 40).await;
        assert!(
            ok >= 10 && ok <= allowed(10, 60, start),
            "{tier}: {ok} of 40 passed"
        );
        assert_eq!(ok + refused.len(), 40);
        for (retry, body) in &refused {
            assert!((1..=2).contains(retry), "{tier}: Retry-After {retry}");
            let message = assert_error(
                &(Status::TooManyRequests, body.clone()),
                Status::TooManyRequests,
                "rate_limited",
            );
            assert!(message.contains("requestsPerMinute"), "{message}");
            assert_eq!(
                body["error"]["details"],
                json!({ "limit": "requestsPerMinute", "value": 60, "plan": "metered" })
            );
        }
        // Writes are refused alike, and nothing is written.
        let refused = t
            .post(
                api!("/products"),
                &m.token,
                json!({ "sku": "LIMITED", "name": "n", "priceMinor": 1 }),
            )
            .await;
        if refused.0 == Status::TooManyRequests {
            assert_error(&refused, Status::TooManyRequests, "rate_limited");
            let (mut conn, _) = t.data_conn(&m);
            let n = crate::common::count(
                &mut conn,
                &format!(
                    "SELECT count(*) AS n FROM products WHERE merchant_id = '{}'",
                    m.id
                ),
            )
            .unwrap();
            assert_eq!(n, 0, "{tier}");
        }

        // The bucket refills at one a second: the merchant is served again
        // without anyone's help.
        let refused_at = Instant::now();
        loop {
            let (status, body) = t.get(CONTEXT, &m.token).await;
            if status == Status::Ok {
                break;
            }
            assert_error(&(status, body), Status::TooManyRequests, "rate_limited");
            assert!(
                refused_at.elapsed() < Duration::from_secs(3),
                "{tier}: not served again within 3 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // The other merchant has a bucket of its own.
        let (status, _) = t.get(CONTEXT, &other.token).await;
        assert_eq!(status, Status::Ok, "{tier}");

        // An override raises the limit at once: a new, full bucket.
        t.set_plan(
            m.id,
            json!({ "limitOverrides": { "requestsPerMinute": 6000 } }),
        )
        .await;
        let (status, ctx) = t.get(CONTEXT, &m.token).await;
        assert_eq!(status, Status::Ok, "{tier}: {ctx}");
        assert_eq!(ctx["limits"]["requestsPerMinute"], 6000);
        // 0 refuses everything, null (no limit) nothing.
        t.set_plan(
            m.id,
            json!({ "limitOverrides": { "requestsPerMinute": 0 } }),
        )
        .await;
        let (ok, refused) = burst(&t, &m, 3).await;
        assert_eq!((ok, refused.len()), (0, 3), "{tier}");
        assert_eq!(refused[0].1["error"]["details"]["value"], 0);
        t.set_plan(
            m.id,
            json!({ "limitOverrides": { "requestsPerMinute": null } }),
        )
        .await;
        let (ok, _) = burst(&t, &m, 200).await;
        assert_eq!(ok, 200, "{tier}: no limit");
    }
}

/// A plan's limit changed by an operator reaches its merchants' buckets
/// at once.
#[rocket::async_test]
async fn a_plan_change_resizes_the_buckets_at_once() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let (status, _) = t
        .post(
            api!("/admin/plans"),
            &admin,
            json!({ "key": "drip", "name": "Drip", "rank": 5, "requestsPerMinute": 6 }),
        )
        .await;
    assert_eq!(status, Status::Created);
    let m = t.shared_merchant("rate-drip").await;
    t.set_plan(m.id, json!({ "plan": "drip" })).await;
    let start = Instant::now();
    let (ok, refused) = burst(&t, &m, 5).await;
    assert!(
        ok >= 1 && ok <= allowed(1, 6, start),
        "a burst of one: {ok} passed"
    );
    assert!(
        refused.iter().all(|(retry, _)| *retry <= 10),
        "one request every 10 s: {refused:?}"
    );
    let (status, _) = t
        .patch(
            api!("/admin/plans/drip"),
            &admin,
            json!({ "requestsPerMinute": 600 }),
        )
        .await;
    assert_eq!(status, Status::Ok);
    let start = Instant::now();
    let (ok, _) = burst(&t, &m, 150).await;
    assert!(
        ok >= 100 && ok <= allowed(100, 600, start),
        "the new burst is 100: {ok} passed"
    );
}

/// Once a merchant's measured storage reaches its `maxStorageBytes`, new
/// products, categories and customers are refused with 409
/// `plan_limit_reached`; sales go on; nothing is deleted; raising the
/// limit or measuring less opens creations again.
#[rocket::async_test]
async fn storage_at_its_limit_blocks_new_catalogue_data_but_not_sales() {
    let t = TestApp::with_config(|s| s.placement_cache_ttl = Duration::from_secs(3600)).await;
    for tier in TIERS {
        let m = t
            .merchant(&format!("storage-{}", tier.as_str()), tier)
            .await;
        let product = t.stocked_product(&m, "KEEP", 100, 0, Some(50)).await;
        posd::tenancy::usage::measure_storage(&t.app().tenancy)
            .await
            .expect("measure");
        let stored = stored_bytes(&t, m.id);
        assert!(stored > 0, "{tier}: measured {stored}");

        // A limit below what is stored: every instance's context reloads.
        t.set_plan(
            m.id,
            json!({ "limitOverrides": { "maxStorageBytes": stored } }),
        )
        .await;
        for (path, body) in [
            (
                api!("/products"),
                json!({ "sku": "NEW", "name": "n", "priceMinor": 1 }),
            ),
            (api!("/categories"), json!({ "name": "New" })),
            (api!("/customers"), json!({ "name": "New" })),
        ] {
            let refused = t.post(path, &m.token, body).await;
            let message = assert_error(&refused, Status::Conflict, "plan_limit_reached");
            assert!(message.contains("maxStorageBytes"), "{message}");
            assert_eq!(
                refused.1["error"]["details"],
                json!({ "limit": "maxStorageBytes", "value": stored, "plan": "starter" }),
                "{tier} {path}"
            );
        }
        // A till keeps trading, and what exists stays readable.
        let sale = t.sell(&m, &product, 1, 100).await;
        assert_eq!(sale["status"], "completed", "{tier}: {sale}");
        let (status, list) = t.get(api!("/products"), &m.token).await;
        assert_eq!(status, Status::Ok);
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{tier}");

        // Raised above it: creations pass at once.
        t.set_plan(
            m.id,
            json!({ "limitOverrides": { "maxStorageBytes": stored * 100 } }),
        )
        .await;
        let (status, body) = t
            .post(api!("/categories"), &m.token, json!({ "name": "Fresh" }))
            .await;
        assert_eq!(status, Status::Created, "{tier}: {body}");

        // A measurement that crosses the limit reaches the cached context
        // (NOTIFY; the cache TTL is an hour). The context is made to hold
        // an old measurement of 0 bytes (written without NOTIFY, read when
        // the override's NOTIFY reloads the context): creations pass; the
        // next measurement (data only grew since) reaches the limit again.
        t.db.owner()
            .batch_execute(&format!(
                "UPDATE merchant_usage SET bytes_stored = 0 WHERE merchant_id = '{}'",
                m.id
            ))
            .unwrap();
        t.set_plan(
            m.id,
            json!({ "limitOverrides": { "maxStorageBytes": stored } }),
        )
        .await;
        let (status, body) = t
            .post(api!("/customers"), &m.token, json!({ "name": "Bo" }))
            .await;
        assert_eq!(status, Status::Created, "{tier}: measured 0: {body}");
        posd::tenancy::usage::measure_storage(&t.app().tenancy)
            .await
            .expect("measure");
        assert!(
            stored_bytes(&t, m.id) >= stored,
            "{tier}: it did not shrink"
        );
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let answer = t
                .post(api!("/customers"), &m.token, json!({ "name": "Cy" }))
                .await;
            if answer.0 == Status::Conflict {
                assert_error(&answer, Status::Conflict, "plan_limit_reached");
                break;
            }
            assert_eq!(answer.0, Status::Created, "{tier}: {}", answer.1);
            assert!(
                Instant::now() < deadline,
                "{tier}: the measurement did not reach the context within a second"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn stored_bytes(t: &TestApp, m: MerchantId) -> i64 {
    crate::common::count(
        &mut t.db.owner(),
        &format!(
            "SELECT bytes_stored AS n FROM merchant_usage WHERE merchant_id = '{m}' \
             ORDER BY day DESC LIMIT 1"
        ),
    )
    .unwrap()
}
