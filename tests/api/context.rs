//! The tenant context: plans and their limits on every tier, overrides,
//! plan changes at runtime, feature flags and their precedence, rollouts,
//! NOTIFY to a second instance, and the offline-bill gate.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use futures_util::future::join_all;
use rocket::http::Status;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, Merchant, TIERS, TestApp, api, assert_error, assert_error_about, count};
use posd::{auth::Role, db::ids::MerchantId, tenancy::context::in_rollout};

const CONTEXT: &str = api!("/context");

async fn new_product(t: &TestApp, m: &Merchant, sku: &str) -> (Status, Value) {
    t.post(
        api!("/products"),
        &m.token,
        json!({ "sku": sku, "name": sku, "priceMinor": 100 }),
    )
    .await
}

async fn new_staff(t: &TestApp, m: &Merchant, email: &str) -> (Status, Value) {
    t.post(
        api!("/staff"),
        &m.token,
        json!({ "email": email, "password": "long enough password", "role": "cashier" }),
    )
    .await
}

/// Asserts a 409 `plan_limit_reached` naming `limit` and `value`.
#[track_caller]
fn assert_limit(answer: &(Status, Value), limit: &str, value: i64, plan: &str) {
    let message = assert_error(answer, Status::Conflict, "plan_limit_reached");
    assert!(message.contains(limit), "{message}");
    assert_eq!(
        answer.1["error"]["details"],
        json!({ "limit": limit, "value": value, "plan": plan }),
        "{}",
        answer.1
    );
}

fn products_in_db(t: &TestApp, m: &Merchant) -> i64 {
    let (mut conn, _) = t.data_conn(m);
    count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM products WHERE merchant_id = '{}' AND deleted_at IS NULL",
            m.id
        ),
    )
    .unwrap()
}

fn staff_in_db(t: &TestApp, m: &Merchant) -> i64 {
    count(
        &mut t.db.owner(),
        &format!(
            "SELECT count(*) AS n FROM staff_users WHERE merchant_id = '{}'",
            m.id
        ),
    )
    .unwrap()
}

#[rocket::async_test]
async fn a_till_reads_its_context() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("ctx-read").await;
    let cashier = t.staff_token(m.id, Role::Cashier);
    let (status, ctx) = t.get(CONTEXT, &cashier).await;
    assert_eq!(status, Status::Ok, "{ctx}");
    assert_eq!(
        ctx,
        json!({
            "merchant": { "id": m.id.to_string(), "slug": "ctx-read", "name": "ctx-read store",
                          "currency": "EUR", "timezone": "Europe/Paris" },
            "plan": { "key": "starter", "name": "Starter" },
            "limits": { "maxStaff": 5, "maxProducts": 1000, "requestsPerMinute": 600,
                        "maxStorageBytes": 1_073_741_824_i64 },
            "features": ["offline_bills"],
            "settings": { "receiptHeader": null, "receiptFooter": null, "pricesIncludeTax": false,
                          "cashRounding": 1, "businessDayCutoffHour": 0,
                          "offlineBillWindowHours": null, "cashierDiscountLimitBps": 0 },
            "branding": { "logoUrl": null, "primaryColor": null, "accentColor": null,
                          "receiptName": null, "supportEmail": null, "supportPhone": null },
        })
    );
    // Cached: the next request reads it without the database.
    assert!(t.app().contexts.cached(&m.id).is_some());
    // Only staff tokens.
    let (status, body) = t.get(CONTEXT, &t.admin_token()).await;
    assert_error((status, &body), Status::Unauthorized, "unauthorized");

    // A merchant made on a plan; an unknown plan is refused.
    let admin = t.admin_token();
    let merchant = |slug: &str, plan: &str| {
        json!({ "slug": slug, "name": slug, "timezone": "UTC", "currency": "USD", "plan": plan,
                "owner": { "email": format!("o@{slug}.test"), "password": "long enough password" } })
    };
    let (status, body) = t
        .post(
            api!("/admin/merchants"),
            &admin,
            merchant("ctx-gold", "gold"),
        )
        .await;
    assert_error((status, &body), Status::UnprocessableEntity, "unknown_plan");
    let (status, body) = t
        .post(api!("/admin/merchants"), &admin, merchant("ctx-pro", "pro"))
        .await;
    assert_eq!(status, Status::Created, "{body}");
    assert_eq!(body["plan"], "pro");
    let id = MerchantId(Uuid::parse_str(body["id"].as_str().unwrap()).unwrap());
    let (status, ctx) = t.get(CONTEXT, &t.staff_token(id, Role::Cashier)).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(ctx["plan"], json!({ "key": "pro", "name": "Pro" }));
    assert_eq!(ctx["limits"]["maxStaff"], 50);
}

/// Every limit on every tier: the plan's, an override, a change of plan at
/// runtime, and a downgrade below what the merchant has, which blocks new
/// creations and deletes nothing.
#[rocket::async_test]
async fn limits_hold_on_every_tier_and_follow_plan_changes() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let (status, tiny) = t
        .post(
            api!("/admin/plans"),
            &admin,
            json!({ "key": "tiny", "name": "Tiny", "rank": 1, "maxStaff": 1, "maxProducts": 1 }),
        )
        .await;
    assert_eq!(status, Status::Created, "{tiny}");
    for tier in TIERS {
        let m = t.merchant(&format!("lim-{}", tier.as_str()), tier).await;
        // Overrides over the starter plan: 2 products, 2 staff (the owner
        // is one).
        let view = t
            .set_plan(
                m.id,
                json!({ "limitOverrides": { "maxProducts": 2, "maxStaff": 2 } }),
            )
            .await;
        assert_eq!(
            view["limitOverrides"],
            json!({ "maxProducts": 2, "maxStaff": 2 })
        );
        assert_eq!(view["context"]["limits"]["maxProducts"], 2);
        assert_eq!(
            view["context"]["limits"]["requestsPerMinute"], 600,
            "from the plan"
        );
        for sku in ["A", "B"] {
            let (status, body) = new_product(&t, &m, sku).await;
            assert_eq!(status, Status::Created, "{tier}: {body}");
        }
        let refused = new_product(&t, &m, "C").await;
        assert_limit(&refused, "maxProducts", 2, "starter");
        assert_eq!(products_in_db(&t, &m), 2, "{tier}");
        let (status, body) = new_staff(&t, &m, "one@lim.test").await;
        assert_eq!(status, Status::Created, "{tier}: {body}");
        let refused = new_staff(&t, &m, "two@lim.test").await;
        assert_limit(&refused, "maxStaff", 2, "starter");
        assert_eq!(staff_in_db(&t, &m), 2);
        // A deactivated user frees a place; reactivating takes one again.
        let one = body["id"].as_str().unwrap().to_string();
        let (status, _) = t
            .patch(
                &format!("{API}/staff/{one}"),
                &m.token,
                json!({ "active": false }),
            )
            .await;
        assert_eq!(status, Status::Ok);
        let (status, two) = new_staff(&t, &m, "two@lim.test").await;
        assert_eq!(status, Status::Created, "{two}");
        let refused = t
            .patch(
                &format!("{API}/staff/{one}"),
                &m.token,
                json!({ "active": true }),
            )
            .await;
        assert_limit(&refused, "maxStaff", 2, "starter");

        // Moved to pro without overrides: the next creation passes at once.
        let view = t
            .set_plan(m.id, json!({ "plan": "pro", "limitOverrides": {} }))
            .await;
        assert_eq!(view["context"]["plan"]["key"], "pro");
        assert_eq!(view["context"]["limits"]["maxProducts"], 20000);
        let (status, body) = new_product(&t, &m, "C").await;
        assert_eq!(status, Status::Created, "{tier}: {body}");
        let (status, _) = t
            .patch(
                &format!("{API}/staff/{one}"),
                &m.token,
                json!({ "active": true }),
            )
            .await;
        assert_eq!(status, Status::Ok);

        // Downgraded below what it has: nothing goes, nothing new comes.
        t.set_plan(m.id, json!({ "plan": "tiny" })).await;
        assert_limit(&new_product(&t, &m, "D").await, "maxProducts", 1, "tiny");
        assert_limit(
            &new_staff(&t, &m, "three@lim.test").await,
            "maxStaff",
            1,
            "tiny",
        );
        assert_eq!(products_in_db(&t, &m), 3);
        assert_eq!(staff_in_db(&t, &m), 3);
        let (status, list) = t.get(api!("/products"), &m.token).await;
        assert_eq!(status, Status::Ok);
        assert_eq!(list["items"].as_array().unwrap().len(), 3, "{tier}");
        let (status, staff) = t.get(api!("/staff"), &m.token).await;
        assert_eq!(status, Status::Ok);
        assert_eq!(staff.as_array().unwrap().len(), 3);
        // Deleting still works; below the limit is still at or over it.
        let a = list["items"][0]["id"].as_str().unwrap().to_string();
        let (status, _) = t.delete(&format!("{API}/products/{a}"), &m.token).await;
        assert_eq!(status, Status::NoContent);
        assert_limit(&new_product(&t, &m, "D").await, "maxProducts", 1, "tiny");
        // An override of null is unlimited, whatever the plan says.
        let view = t
            .set_plan(m.id, json!({ "limitOverrides": { "maxProducts": null } }))
            .await;
        assert_eq!(view["context"]["limits"]["maxProducts"], Value::Null);
        let (status, body) = new_product(&t, &m, "D").await;
        assert_eq!(status, Status::Created, "{tier}: {body}");
        // A plan change reaches its merchants at once.
        let (status, _) = t
            .patch(api!("/admin/plans/tiny"), &admin, json!({ "maxStaff": 10 }))
            .await;
        assert_eq!(status, Status::Ok);
        let (status, body) = new_staff(&t, &m, "three@lim.test").await;
        assert_eq!(status, Status::Created, "{tier}: {body}");
        let (status, _) = t
            .patch(api!("/admin/plans/tiny"), &admin, json!({ "maxStaff": 1 }))
            .await;
        assert_eq!(status, Status::Ok);
    }
}

/// Concurrent creations at the limit: exactly as many pass as there is
/// room for, on the tenant database (products) and the control plane
/// (staff).
#[rocket::async_test]
async fn concurrent_creations_cannot_overshoot_a_limit() {
    let t = TestApp::new().await;
    for tier in [posd::tenancy::Tier::Shared, posd::tenancy::Tier::Dedicated] {
        let m = t.merchant(&format!("race-{}", tier.as_str()), tier).await;
        t.set_plan(
            m.id,
            json!({ "limitOverrides": { "maxProducts": 3, "maxStaff": 3 } }),
        )
        .await;
        let skus: Vec<String> = (0..8).map(|i| format!("R{i}")).collect();
        let answers = join_all(skus.iter().map(|s| new_product(&t, &m, s))).await;
        let created = answers.iter().filter(|a| a.0 == Status::Created).count();
        for a in answers.iter().filter(|a| a.0 != Status::Created) {
            assert_limit(a, "maxProducts", 3, "starter");
        }
        assert_eq!(created, 3, "{tier}: {answers:?}");
        assert_eq!(products_in_db(&t, &m), 3);

        let emails: Vec<String> = (0..4).map(|i| format!("r{i}@race.test")).collect();
        let answers = join_all(emails.iter().map(|e| new_staff(&t, &m, e))).await;
        let created = answers.iter().filter(|a| a.0 == Status::Created).count();
        assert_eq!(created, 2, "{tier}: {answers:?}");
        assert_eq!(staff_in_db(&t, &m), 3);
    }
}

#[rocket::async_test]
async fn plans_and_flags_are_validated() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let m = t.shared_merchant("ctx-valid").await;
    let cases: Vec<(&str, &str, Value, Status, &str)> = vec![
        (
            "POST",
            api!("/admin/plans"),
            json!({ "key": "Big Plan", "name": "x", "rank": 1 }),
            Status::UnprocessableEntity,
            "validation_failed",
        ),
        (
            "POST",
            api!("/admin/plans"),
            json!({ "key": "neg", "name": "x", "rank": 1, "maxStaff": -1 }),
            Status::UnprocessableEntity,
            "validation_failed",
        ),
        (
            "POST",
            api!("/admin/plans"),
            json!({ "key": "pro", "name": "x", "rank": 1 }),
            Status::Conflict,
            "key_taken",
        ),
        (
            "POST",
            api!("/admin/plans"),
            json!({ "key": "x", "name": "x" }),
            Status::UnprocessableEntity,
            "invalid_body",
        ),
        (
            "PATCH",
            api!("/admin/plans/nope"),
            json!({ "name": "x" }),
            Status::NotFound,
            "not_found",
        ),
        (
            "POST",
            api!("/admin/flags"),
            json!({ "key": "offline_bills" }),
            Status::Conflict,
            "key_taken",
        ),
        (
            "POST",
            api!("/admin/flags"),
            json!({ "key": "9lives" }),
            Status::UnprocessableEntity,
            "validation_failed",
        ),
        (
            "POST",
            api!("/admin/flags"),
            json!({ "key": "f", "rolloutPercent": 101 }),
            Status::UnprocessableEntity,
            "validation_failed",
        ),
        (
            "POST",
            api!("/admin/flags"),
            json!({ "key": "f", "minPlan": "gold" }),
            Status::UnprocessableEntity,
            "unknown_plan",
        ),
        (
            "PATCH",
            api!("/admin/flags/offline_bills"),
            json!({ "minPlan": "gold" }),
            Status::UnprocessableEntity,
            "unknown_plan",
        ),
        (
            "PATCH",
            api!("/admin/flags/nope"),
            json!({ "defaultOn": true }),
            Status::NotFound,
            "not_found",
        ),
    ];
    let merchant_plan = format!("{API}/admin/tenants/{}/plan", m.id);
    let unknown_merchant = format!("{API}/admin/tenants/{}/plan", Uuid::new_v4());
    let flag_of = |key: &str| format!("{API}/admin/tenants/{}/flags/{key}", m.id);
    let more: Vec<(&str, String, Value, Status, &str)> = vec![
        (
            "POST",
            merchant_plan.clone(),
            json!({ "plan": "gold" }),
            Status::UnprocessableEntity,
            "unknown_plan",
        ),
        (
            "POST",
            merchant_plan.clone(),
            json!({ "limitOverrides": { "maxThings": 1 } }),
            Status::UnprocessableEntity,
            "invalid_body",
        ),
        (
            "POST",
            merchant_plan.clone(),
            json!({ "limitOverrides": { "maxStaff": 1.5 } }),
            Status::UnprocessableEntity,
            "invalid_body",
        ),
        (
            "POST",
            unknown_merchant,
            json!({ "plan": "pro" }),
            Status::NotFound,
            "not_found",
        ),
        (
            "PUT",
            flag_of("nope"),
            json!({ "enabled": true }),
            Status::NotFound,
            "not_found",
        ),
        (
            "DELETE",
            flag_of("offline_bills"),
            Value::Null,
            Status::NotFound,
            "not_found",
        ),
    ];
    let all = cases
        .into_iter()
        .map(|(m, p, b, s, c)| (m, p.to_string(), b, s, c))
        .chain(more);
    for (method, path, body, status, code) in all {
        let method = match method {
            "POST" => rocket::http::Method::Post,
            "PATCH" => rocket::http::Method::Patch,
            "PUT" => rocket::http::Method::Put,
            _ => rocket::http::Method::Delete,
        };
        let body = (!body.is_null()).then_some(body);
        let answer = t.request(method, &path, Some(&admin), body.clone()).await;
        assert_error_about(format!("{method} {path} {body:?}"), &answer, status, code);
    }
    // A staff token is no operator's.
    let (status, body) = t.get(api!("/admin/plans"), &m.token).await;
    assert_error((status, &body), Status::Unauthorized, "unauthorized");
    // The seeded plans, by rank.
    let (status, plans) = t.get(api!("/admin/plans"), &admin).await;
    assert_eq!(status, Status::Ok);
    let keys: Vec<&str> = plans["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["starter", "pro", "enterprise"]);
    assert_eq!(plans["items"][2]["maxProducts"], Value::Null);
}

async fn features(t: &TestApp, token: &str) -> Vec<String> {
    let (status, ctx) = t.get(CONTEXT, token).await;
    assert_eq!(status, Status::Ok, "{ctx}");
    serde_json::from_value(ctx["features"].clone()).unwrap()
}

/// override > plan gate > rollout > default.
#[rocket::async_test]
async fn flag_precedence() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let m = t.shared_merchant("ctx-flags").await;
    let has = |f: &[String]| f.iter().any(|k| k == "beta");
    let (status, flag) = t
        .post(
            api!("/admin/flags"),
            &admin,
            json!({ "key": "beta", "description": "A beta" }),
        )
        .await;
    assert_eq!(status, Status::Created, "{flag}");
    assert_eq!(flag["defaultOn"], false);
    assert!(!has(&features(&t, &m.token).await), "default off");
    let patch = |body: Value| {
        let admin = admin.clone();
        let t = &t;
        async move {
            let (status, flag) = t.patch(api!("/admin/flags/beta"), &admin, body).await;
            assert_eq!(status, Status::Ok, "{flag}");
            flag
        }
    };
    patch(json!({ "defaultOn": true })).await;
    assert!(has(&features(&t, &m.token).await), "default on");
    // A plan gate above the merchant's plan shuts it.
    patch(json!({ "minPlan": "pro" })).await;
    assert!(!has(&features(&t, &m.token).await), "gated");
    t.set_plan(m.id, json!({ "plan": "enterprise" })).await;
    assert!(has(&features(&t, &m.token).await), "a plan above the gate");
    // A rollout replaces the default.
    patch(json!({ "rolloutPercent": 0 })).await;
    assert!(!has(&features(&t, &m.token).await), "rollout 0");
    patch(json!({ "rolloutPercent": 100, "defaultOn": false })).await;
    assert!(has(&features(&t, &m.token).await), "rollout 100");
    // An override beats everything.
    let over = format!("{API}/admin/tenants/{}/flags/beta", m.id);
    let (status, view) = t
        .request(
            rocket::http::Method::Put,
            &over,
            Some(&admin),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, Status::Ok, "{view}");
    assert!(!has(&serde_json::from_value::<Vec<String>>(
        view["context"]["features"].clone()
    )
    .unwrap()));
    assert!(!has(&features(&t, &m.token).await), "override off");
    t.set_plan(m.id, json!({ "plan": "starter" })).await;
    let (status, _) = t
        .request(
            rocket::http::Method::Put,
            &over,
            Some(&admin),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, Status::Ok);
    assert!(
        has(&features(&t, &m.token).await),
        "override on below the gate"
    );
    let (status, _) = t.delete(&over, &admin).await;
    assert_eq!(status, Status::NoContent);
    assert!(!has(&features(&t, &m.token).await), "gated again");
    // Clearing the gate: the rollout decides again.
    patch(json!({ "minPlan": null })).await;
    assert!(has(&features(&t, &m.token).await), "rollout 100 again");
}

/// A merchant inserted straight into the control plane, with a cashier's
/// token: for tests that need many merchants and no owner login.
fn quick_merchant(t: &TestApp, slug: &str) -> (MerchantId, String) {
    let id = MerchantId(Uuid::new_v4());
    t.db.owner()
        .batch_execute(&format!(
            "INSERT INTO merchants (id, slug, name, timezone, currency) VALUES ('{id}', '{slug}', '{slug}', 'UTC', 'USD')"
        ))
        .unwrap();
    (id, t.staff_token(id, Role::Cashier))
}

/// A rollout gives each merchant the same answer on every request and on
/// every instance, and the one the hash says.
#[rocket::async_test]
async fn rollout_is_stable_across_requests_and_instances() {
    let t = TestApp::new().await;
    let other = t.second_instance(|_| {}).await;
    let admin = t.admin_token();
    let (status, _) = t
        .post(
            api!("/admin/flags"),
            &admin,
            json!({ "key": "half", "rolloutPercent": 50 }),
        )
        .await;
    assert_eq!(status, Status::Created);
    let mut on = 0;
    for i in 0..16 {
        let (id, token) = quick_merchant(&t, &format!("roll-{i}"));
        let expected = in_rollout("half", id, 50);
        on += usize::from(expected);
        for _ in 0..3 {
            for f in [features(&t, &token).await, {
                let (status, ctx) = other.get(CONTEXT, &token).await;
                assert_eq!(status, Status::Ok);
                serde_json::from_value(ctx["features"].clone()).unwrap()
            }] {
                assert_eq!(f.iter().any(|k| k == "half"), expected, "merchant {id}");
            }
        }
    }
    assert!(on > 0 && on < 16, "16 merchants at 50 %: {on} on");
}

/// Polls `other`'s context for `token` until `check` holds, for at most a
/// second; answers how long it took.
async fn within_a_second(
    other: &crate::common::Instance,
    token: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let (status, ctx) = other.get(CONTEXT, token).await;
        assert_eq!(status, Status::Ok, "{ctx}");
        if check(&ctx) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what} did not reach the second instance within a second: {ctx}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Changes made through one instance reach another one's cached context
/// by NOTIFY, well within a second (the cache TTL is an hour).
#[rocket::async_test]
async fn changes_reach_a_second_instance_within_a_second() {
    let hour = Duration::from_secs(3600);
    let t = TestApp::with_config(move |s| s.placement_cache_ttl = hour).await;
    let other = t
        .second_instance(move |s| s.placement_cache_ttl = hour)
        .await;
    let admin = t.admin_token();
    let m = t.shared_merchant("ctx-notify").await;
    let token = t.staff_token(m.id, Role::Manager);
    let (status, ctx) = other.get(CONTEXT, &token).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(ctx["plan"]["key"], "starter");
    assert!(
        other.app().contexts.cached(&m.id).is_some(),
        "cached on the second instance"
    );

    // A merchant's plan.
    t.set_plan(m.id, json!({ "plan": "pro" })).await;
    within_a_second(&other, &token, "a plan change", |c| {
        c["plan"]["key"] == "pro"
    })
    .await;
    // A merchant's override.
    t.set_plan(m.id, json!({ "limitOverrides": { "maxProducts": 7 } }))
        .await;
    within_a_second(&other, &token, "an override", |c| {
        c["limits"]["maxProducts"] == 7
    })
    .await;
    // A plan's limits.
    let (status, _) = t
        .patch(api!("/admin/plans/pro"), &admin, json!({ "maxStaff": 9 }))
        .await;
    assert_eq!(status, Status::Ok);
    within_a_second(&other, &token, "a plan's limit", |c| {
        c["limits"]["maxStaff"] == 9
    })
    .await;
    // A flag's default, and a merchant's flag override.
    let (status, _) = t
        .patch(
            api!("/admin/flags/offline_bills"),
            &admin,
            json!({ "defaultOn": false }),
        )
        .await;
    assert_eq!(status, Status::Ok);
    within_a_second(&other, &token, "a flag change", |c| {
        c["features"] == json!([])
    })
    .await;
    let (status, _) = t
        .request(
            rocket::http::Method::Put,
            &format!("{API}/admin/tenants/{}/flags/offline_bills", m.id),
            Some(&admin),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, Status::Ok);
    within_a_second(&other, &token, "a flag override", |c| {
        c["features"] == json!(["offline_bills"])
    })
    .await;
    // And what the second instance enforces follows it.
    t.set_plan(m.id, json!({ "limitOverrides": { "maxProducts": 0 } }))
        .await;
    within_a_second(&other, &token, "a limit of 0", |c| {
        c["limits"]["maxProducts"] == 0
    })
    .await;
    let refused = other
        .post(
            api!("/products"),
            &token,
            json!({ "sku": "N1", "name": "n", "priceMinor": 1 }),
        )
        .await;
    assert_limit(&refused, "maxProducts", 0, "pro");
}

/// Offline bills are behind the flag `offline_bills`: on by default, off
/// for one merchant by an override or for all by the flag.
#[rocket::async_test]
async fn offline_bills_are_behind_a_flag() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let m = t.shared_merchant("ctx-offline").await;
    let other = t.shared_merchant("ctx-offline-2").await;
    let bills = api!("/offline-bills");
    // On by default: an empty batch reaches validation.
    let answer = t.post(bills, &m.token, json!({ "bills": [] })).await;
    assert_error(&answer, Status::UnprocessableEntity, "validation_failed");

    let over = format!("{API}/admin/tenants/{}/flags/offline_bills", m.id);
    let (status, _) = t
        .request(
            rocket::http::Method::Put,
            &over,
            Some(&admin),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, Status::Ok);
    for body in [json!({ "bills": [] }), json!({ "nonsense": true })] {
        let answer = t.post(bills, &m.token, body).await;
        assert_error(&answer, Status::Forbidden, "feature_disabled");
        assert_eq!(
            answer.1["error"]["details"],
            json!({ "feature": "offline_bills" })
        );
    }
    // Another merchant is not concerned.
    let answer = t.post(bills, &other.token, json!({ "bills": [] })).await;
    assert_error(&answer, Status::UnprocessableEntity, "validation_failed");

    // Off for everyone, on again for the merchant with an override.
    let (status, _) = t
        .patch(
            api!("/admin/flags/offline_bills"),
            &admin,
            json!({ "defaultOn": false }),
        )
        .await;
    assert_eq!(status, Status::Ok);
    let answer = t.post(bills, &other.token, json!({ "bills": [] })).await;
    assert_error(&answer, Status::Forbidden, "feature_disabled");
    let (status, _) = t
        .request(
            rocket::http::Method::Put,
            &over,
            Some(&admin),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, Status::Ok);
    let answer = t.post(bills, &m.token, json!({ "bills": [] })).await;
    assert_error(&answer, Status::UnprocessableEntity, "validation_failed");
}

/// `posd plans ...` and `posd flags ...` against the same database, as an
/// operator runs them next to a serving instance: the instance learns of
/// each change by NOTIFY.
#[rocket::async_test]
async fn the_command_line_manages_plans_and_flags() {
    use secrecy::ExposeSecret;
    let hour = Duration::from_secs(3600);
    let t = TestApp::with_config(move |s| s.placement_cache_ttl = hour).await;
    let m = t.shared_merchant("ctx-cli").await;
    let s = &t.app().settings;
    let (db, app_db, jwt) = (
        s.database_url.expose_secret().to_string(),
        s.app_database_url.expose_secret().to_string(),
        s.jwt_secret.expose_secret().to_string(),
    );
    let posd = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_posd"))
            .args(args)
            .env("POSD_DATABASE_URL", &db)
            .env("POSD_APP_DATABASE_URL", &app_db)
            .env("POSD_JWT_SECRET", &jwt)
            .env("POSD_ENCRYPTION_KEYS", crate::common::Server::get().keys())
            .env("POSD_LOG", "error")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (status, _) = t.get(CONTEXT, &m.token).await;
    assert_eq!(status, Status::Ok);

    let (ok, out, err) = posd(&["plans", "list"]);
    assert!(ok, "{err}");
    assert!(out.lines().nth(1).unwrap().starts_with("starter"), "{out}");
    assert!(out.contains("enterprise"), "{out}");

    let (ok, out, err) = posd(&[
        "plans",
        "set",
        "ctx-cli",
        "pro",
        "--limit",
        "maxProducts=3",
        "--limit",
        "max_staff=unlimited",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("ctx-cli is on plan pro"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (_, ctx) = t.get(CONTEXT, &m.token).await;
        if ctx["plan"]["key"] == "pro" {
            assert_eq!(ctx["limits"]["maxProducts"], 3);
            assert_eq!(ctx["limits"]["maxStaff"], Value::Null);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the plan change did not arrive: {ctx}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (ok, out, err) = posd(&[
        "flags",
        "set",
        "beta",
        "--rollout",
        "100",
        "--min-plan",
        "enterprise",
        "--description",
        "A beta",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("flag beta"), "{out}");
    let (ok, out, err) = posd(&["flags", "override", "ctx-cli", "beta", "on"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "beta is on for ctx-cli");
    let deadline = Instant::now() + Duration::from_secs(1);
    while !features(&t, &m.token).await.contains(&"beta".to_string()) {
        assert!(Instant::now() < deadline, "the override did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (ok, out, _) = posd(&["flags", "override", "ctx-cli", "beta", "clear"]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        "beta is off for ctx-cli",
        "the plan gate shuts it"
    );
    let (ok, out, _) = posd(&["flags", "list"]);
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("beta") && l.contains("enterprise") && l.contains("100%")),
        "{out}"
    );

    // Bad input is refused with a message, and changes nothing.
    for args in [
        &["plans", "set", "ctx-cli", "--limit", "maxThings=1"][..],
        &["plans", "set", "ctx-cli", "--limit", "maxStaff=-1"],
        &["plans", "set", "ctx-cli", "gold"],
        &["plans", "set", "no-such-shop", "pro"],
        &["flags", "set", "Beta"],
        &["flags", "set", "beta", "--rollout", "101"],
        &["flags", "set", "beta", "--min-plan", "gold"],
        &["flags", "override", "ctx-cli", "nope", "on"],
    ] {
        let (ok, _, err) = posd(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(!err.trim().is_empty(), "{args:?}: no message");
    }
    let (_, ctx) = t.get(CONTEXT, &m.token).await;
    assert_eq!(ctx["plan"]["key"], "pro");
}

/// Merchants made before plans existed keep their plan text as a plan
/// without limits (one that cannot be a plan key goes to `starter`).
#[test]
fn merchants_from_before_plans_keep_their_plan() {
    use diesel::migration::Migration;
    use diesel::{Connection, PgConnection, RunQueryDsl};
    use diesel_migrations::MigrationHarness;
    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        slug: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        plan: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        max_staff: Option<i64>,
    }
    let server = crate::common::Server::get();
    let db = crate::common::TestDb::empty();
    let mut conn = PgConnection::establish(&server.owner_url(&db.name)).unwrap();
    loop {
        let pending = conn
            .pending_migrations(posd::tenancy::migrations::PLATFORM)
            .unwrap();
        let next = pending.first().expect("the plans migration is pending");
        if next.name().to_string().starts_with("2026-11-30-000002") {
            break;
        }
        conn.run_migration(next.as_ref()).unwrap();
    }
    conn.batch_execute(
        "INSERT INTO merchants (id, slug, name, timezone, currency, plan) VALUES
           (gen_random_uuid(), 'old-a', 'A', 'UTC', 'USD', 'standard'),
           (gen_random_uuid(), 'old-b', 'B', 'UTC', 'USD', 'Gold Plan!'),
           (gen_random_uuid(), 'old-c', 'C', 'UTC', 'USD', 'pro')",
    )
    .unwrap();
    conn.run_pending_migrations(posd::tenancy::migrations::PLATFORM)
        .unwrap();
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT m.slug, m.plan, p.max_staff FROM merchants m JOIN plans p ON p.key = m.plan ORDER BY m.slug",
    )
    .load(&mut conn)
    .unwrap();
    let row = |slug: &str, plan: &str, max_staff| Row {
        slug: slug.into(),
        plan: plan.into(),
        max_staff,
    };
    assert_eq!(
        rows,
        [
            row("old-a", "standard", None),
            row("old-b", "starter", Some(5)),
            row("old-c", "pro", Some(50))
        ]
    );
}
