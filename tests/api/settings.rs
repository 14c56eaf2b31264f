//! Merchants' settings and branding: defaults, validation, partial
//! updates, the owner-only rule, the cached context following a change on
//! every instance, and the rules that read them.

use std::time::{Duration, Instant};

use chrono::Utc;
use rocket::http::Status;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{TestApp, api, assert_error};
use posd::auth::Role;

const SETTINGS: &str = api!("/settings");
const BRANDING: &str = api!("/branding");
const CONTEXT: &str = api!("/context");

fn defaults() -> Value {
    json!({
        "receiptHeader": null, "receiptFooter": null, "pricesIncludeTax": false,
        "cashRounding": 1, "businessDayCutoffHour": 0, "offlineBillWindowHours": null,
        "cashierDiscountLimitBps": 0,
    })
}

#[rocket::async_test]
async fn defaults_partial_updates_and_resets() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("set-defaults").await;
    let cashier = t.staff_token(m.id, Role::Cashier);
    // A fresh merchant reads the defaults; nothing is stored.
    let (status, s) = t.get(SETTINGS, &cashier).await;
    assert_eq!(status, Status::Ok, "{s}");
    assert_eq!(s, defaults());

    // A partial update changes only what it names, and is normalised.
    let (status, s) = t
        .patch(
            SETTINGS,
            &m.token,
            json!({ "cashRounding": 5, "receiptFooter": "  Thank you!\nSee you soon  " }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{s}");
    let mut expected = defaults();
    expected["cashRounding"] = json!(5);
    expected["receiptFooter"] = json!("Thank you!\nSee you soon");
    assert_eq!(s, expected);
    let (status, s) = t
        .patch(SETTINGS, &m.token, json!({ "businessDayCutoffHour": 4 }))
        .await;
    assert_eq!(status, Status::Ok, "{s}");
    expected["businessDayCutoffHour"] = json!(4);
    assert_eq!(s, expected);
    assert_eq!(t.get(SETTINGS, &cashier).await.1, expected);

    // Only what was set is stored.
    assert_eq!(
        stored_of(&t, m.id, "settings"),
        json!({ "cashRounding": 5, "receiptFooter": "Thank you!\nSee you soon",
                "businessDayCutoffHour": 4 })
    );

    // null resets a field to its default.
    let (status, s) = t
        .patch(
            SETTINGS,
            &m.token,
            json!({ "cashRounding": null, "receiptFooter": null }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{s}");
    expected["cashRounding"] = json!(1);
    expected["receiptFooter"] = Value::Null;
    assert_eq!(s, expected);
    assert_eq!(
        stored_of(&t, m.id, "settings"),
        json!({ "businessDayCutoffHour": 4 })
    );

    // Branding: set, normalised, in the context, reset.
    let (status, b) = t
        .patch(
            BRANDING,
            &m.token,
            json!({ "logoUrl": "https://cdn.example.com/logo.png", "primaryColor": "#A0B0C0",
                    "receiptName": "Corner Shop", "supportEmail": "help@example.com",
                    "supportPhone": "+33 1 23 45 67 89" }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{b}");
    assert_eq!(b["primaryColor"], "#a0b0c0");
    assert_eq!(b["accentColor"], Value::Null);
    let (_, ctx) = t.get(CONTEXT, &cashier).await;
    assert_eq!(ctx["branding"], b);
    assert_eq!(ctx["settings"], expected);
    let (status, b) = t
        .patch(BRANDING, &m.token, json!({ "logoUrl": null }))
        .await;
    assert_eq!(status, Status::Ok, "{b}");
    assert_eq!(b["logoUrl"], Value::Null);
    assert_eq!(b["receiptName"], "Corner Shop");
}

fn stored_of(t: &TestApp, m: posd::db::ids::MerchantId, column: &str) -> Value {
    use diesel::{RunQueryDsl, sql_types::Jsonb};
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Jsonb)]
        v: Value,
    }
    diesel::sql_query(format!(
        "SELECT {column} AS v FROM merchants WHERE id = '{m}'"
    ))
    .get_result::<Row>(&mut t.db.owner())
    .unwrap()
    .v
}

#[rocket::async_test]
async fn invalid_values_are_422_naming_the_field_and_change_nothing() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("set-invalid").await;
    for (field, value) in [
        ("receiptHeader", json!("x".repeat(501))),
        ("receiptHeader", json!("   ")),
        ("receiptFooter", json!(12)),
        ("receiptFooter", json!("bell\u{7}")),
        ("pricesIncludeTax", json!("yes")),
        ("cashRounding", json!(3)),
        ("cashRounding", json!(0)),
        ("cashRounding", json!(2.5)),
        ("businessDayCutoffHour", json!(24)),
        ("businessDayCutoffHour", json!(-1)),
        ("offlineBillWindowHours", json!(0)),
        ("offlineBillWindowHours", json!(100_000)),
        ("cashierDiscountLimitBps", json!(10_001)),
        ("cashierDiscountLimitBps", json!({ "bps": 100 })),
        ("noSuchSetting", json!(1)),
        ("noSuchSetting", Value::Null),
    ] {
        let answer = t.patch(SETTINGS, &m.token, json!({ field: value })).await;
        assert_names(answer, field);
    }
    for (field, value) in [
        ("logoUrl", json!("http://example.com/logo.png")),
        ("logoUrl", json!("not a url")),
        ("logoUrl", json!("https://user:secret@example.com/logo.png")),
        ("primaryColor", json!("red")),
        ("accentColor", json!("#abcd")),
        ("accentColor", json!("#12345g")),
        ("receiptName", json!("n".repeat(65))),
        ("supportEmail", json!("nobody")),
        ("supportPhone", json!("call us")),
        ("favouriteColor", json!("#000000")),
    ] {
        let answer = t.patch(BRANDING, &m.token, json!({ field: value })).await;
        assert_names(answer, field);
    }
    // One bad field refuses the whole update.
    let answer = t
        .patch(
            SETTINGS,
            &m.token,
            json!({ "cashRounding": 5, "businessDayCutoffHour": 24 }),
        )
        .await;
    assert_names(answer, "businessDayCutoffHour");
    // Nothing was stored by any of them.
    assert_eq!(stored_of(&t, m.id, "settings"), json!({}));
    assert_eq!(stored_of(&t, m.id, "branding"), json!({}));
    // A body that is not an object is a malformed body.
    let answer = t.patch(SETTINGS, &m.token, json!([1])).await;
    assert_error(answer, Status::UnprocessableEntity, "invalid_body");
}

fn assert_names(answer: (Status, Value), field: &str) {
    let message = assert_error(answer, Status::UnprocessableEntity, "validation_failed");
    assert!(
        message.starts_with(&format!("{field}: ")),
        "{field}: {message}"
    );
}

#[rocket::async_test]
async fn only_an_owner_changes_them() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("set-owner").await;
    for role in [Role::Cashier, Role::Manager] {
        let token = t.staff_token(m.id, role);
        let answer = t
            .patch(SETTINGS, &token, json!({ "cashRounding": 5 }))
            .await;
        assert_error(answer, Status::Forbidden, "insufficient_role");
        let answer = t
            .patch(BRANDING, &token, json!({ "primaryColor": "#000000" }))
            .await;
        assert_error(answer, Status::Forbidden, "insufficient_role");
        // Every staff member reads them.
        assert_eq!(t.get(SETTINGS, &token).await.0, Status::Ok);
    }
    let answer = t.get(SETTINGS, &t.admin_token()).await;
    assert_error(answer, Status::Unauthorized, "unauthorized");
    assert_eq!(stored_of(&t, m.id, "settings"), json!({}));
}

/// A change reaches the context at once on the instance that made it, and
/// within a second on another one whose cached context is dropped by
/// NOTIFY (the cache TTL is an hour).
#[rocket::async_test]
async fn a_change_reaches_every_instance_context() {
    let hour = Duration::from_secs(3600);
    let t = TestApp::with_config(move |s| s.placement_cache_ttl = hour).await;
    let other = t
        .second_instance(move |s| s.placement_cache_ttl = hour)
        .await;
    let m = t.shared_merchant("set-notify").await;
    let cashier = t.staff_token(m.id, Role::Cashier);
    let (_, ctx) = other.get(CONTEXT, &cashier).await;
    assert_eq!(ctx["settings"]["cashRounding"], 1);
    assert!(other.app().contexts.cached(&m.id).is_some());
    let (_, ctx) = t.get(CONTEXT, &cashier).await;
    assert_eq!(ctx["settings"]["cashRounding"], 1);

    let (status, _) = t
        .patch(SETTINGS, &m.token, json!({ "cashRounding": 10 }))
        .await;
    assert_eq!(status, Status::Ok);
    let (_, ctx) = t.get(CONTEXT, &cashier).await;
    assert_eq!(ctx["settings"]["cashRounding"], 10, "at once, here");
    let (status, _) = t
        .patch(BRANDING, &m.token, json!({ "receiptName": "Renamed" }))
        .await;
    assert_eq!(status, Status::Ok);
    let start = Instant::now();
    loop {
        let (status, ctx) = other.get(CONTEXT, &cashier).await;
        assert_eq!(status, Status::Ok, "{ctx}");
        if ctx["settings"]["cashRounding"] == 10 && ctx["branding"]["receiptName"] == "Renamed" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the change did not reach the second instance within a second: {ctx}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Offline bills older than the merchant's window are refused; without
/// one, the server's (a week here) applies.
#[rocket::async_test]
async fn the_offline_bill_window_follows_the_setting() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("set-offline").await;
    let cashier = t.staff_token(m.id, Role::Cashier);
    let jam = t.stocked_product(&m, "JAM", 450, 0, None).await;
    let bill = |hours_ago: i64| {
        json!({
            "clientId": Uuid::new_v4(),
            "createdAt": (Utc::now() - chrono::Duration::hours(hours_ago)).to_rfc3339(),
            "lines": [{ "productId": jam, "quantity": 1 }],
            "payments": [{ "method": "cash", "amountMinor": 450 }]
        })
    };
    let send = |b: Value| {
        let t = &t;
        let cashier = &cashier;
        async move {
            let (status, body) = t
                .post(api!("/offline-bills"), cashier, json!({ "bills": [b] }))
                .await;
            assert_eq!(status, Status::Ok, "{body}");
            body["results"][0].clone()
        }
    };
    assert_eq!(send(bill(3)).await["status"], "created");
    let (status, _) = t
        .patch(SETTINGS, &m.token, json!({ "offlineBillWindowHours": 2 }))
        .await;
    assert_eq!(status, Status::Ok);
    let r = send(bill(3)).await;
    assert_eq!(r["status"], "rejected", "{r}");
    assert_eq!(r["error"]["code"], "bill_too_old", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("2h"),
        "{r}"
    );
    assert_eq!(send(bill(1)).await["status"], "created");
    // Back to the server's window.
    let (status, _) = t
        .patch(
            SETTINGS,
            &m.token,
            json!({ "offlineBillWindowHours": null }),
        )
        .await;
    assert_eq!(status, Status::Ok);
    assert_eq!(send(bill(3)).await["status"], "created");
}

/// A cashier gives no discount by default; with a limit, one of at most
/// that share of the line (a manager gives any).
#[rocket::async_test]
async fn the_cashier_discount_limit_follows_the_setting() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("set-discount").await;
    let cashier = t.staff_token(m.id, Role::Cashier);
    let manager = t.staff_token(m.id, Role::Manager);
    let jam = t.stocked_product(&m, "JAM", 500, 0, None).await;
    // Two jars at 500: a line of 1,000.
    let sell = |token: String, discount: i64| {
        let t = &t;
        let jam = jam.clone();
        async move {
            let (status, body, _) = t
                .post_idem(
                    api!("/orders"),
                    &token,
                    &Uuid::new_v4().to_string(),
                    json!({ "lines": [{ "productId": jam, "quantity": 2, "discountMinor": discount }],
                            "payments": [{ "method": "cash", "amountMinor": 1000 - discount }] }),
                )
                .await;
            (status, body)
        }
    };
    let answer = sell(cashier.clone(), 10).await;
    assert_error(answer, Status::Forbidden, "price_override_forbidden");
    let (status, _) = t
        .patch(
            SETTINGS,
            &m.token,
            json!({ "cashierDiscountLimitBps": 1000 }),
        )
        .await;
    assert_eq!(status, Status::Ok);
    // 10 % of the line is allowed, a minor unit more is not.
    let (status, order) = sell(cashier.clone(), 100).await;
    assert_eq!(status, Status::Created, "{order}");
    assert_eq!(order["discountMinor"], 100, "{order}");
    let message = assert_error(
        sell(cashier.clone(), 101).await,
        Status::Forbidden,
        "price_override_forbidden",
    );
    assert!(message.starts_with("lines[0].discountMinor: "), "{message}");
    assert!(message.contains("1000 basis points"), "{message}");
    // A manager is not bound by it.
    let (status, order) = sell(manager, 500).await;
    assert_eq!(status, Status::Created, "{order}");
    // Back to the default: none.
    let (status, _) = t
        .patch(
            SETTINGS,
            &m.token,
            json!({ "cashierDiscountLimitBps": null }),
        )
        .await;
    assert_eq!(status, Status::Ok);
    let answer = sell(cashier, 100).await;
    assert_error(answer, Status::Forbidden, "price_override_forbidden");
}

/// The daily report covers the merchant's business day: from midnight by
/// default, from the cut-off hour when one is set (a sale at 02:30 counts
/// on the previous evening's day with a cut-off at 4).
#[rocket::async_test]
async fn the_daily_report_follows_the_business_day_cutoff() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("set-day").await;
    let jam = t.stocked_product(&m, "JAM", 500, 0, None).await;
    let (mut conn, _) = t.data_conn(&m);
    for (qty, local) in [
        (1, "2026-11-09 23:30"),
        (2, "2026-11-10 02:30"),
        (3, "2026-11-10 05:30"),
    ] {
        let order = t.sell(&m, &jam, qty, 500 * qty).await;
        let id = order["id"].as_str().unwrap();
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!(
                "UPDATE orders SET created_at = TIMESTAMP '{local}' AT TIME ZONE 'Europe/Paris' WHERE id = '{id}'"
            )),
            &mut conn,
        )
        .unwrap();
    }
    let report = |date: &'static str| {
        let t = &t;
        let token = m.token.clone();
        async move {
            let (status, r) = t
                .get(&format!("{}?date={date}", api!("/reports/daily")), &token)
                .await;
            assert_eq!(status, Status::Ok, "{r}");
            (
                r["orderCount"].as_i64().unwrap(),
                r["salesMinor"].as_i64().unwrap(),
                r,
            )
        }
    };
    // Midnight: 23:30 on the 9th; 02:30 and 05:30 on the 10th.
    assert_eq!(report("2026-11-09").await.0, 1);
    let (n, sales, r) = report("2026-11-10").await;
    assert_eq!((n, sales), (2, 2500), "{r}");
    assert_eq!(r["from"], "2026-11-09T23:00:00Z", "{r}");

    let (status, _) = t
        .patch(SETTINGS, &m.token, json!({ "businessDayCutoffHour": 4 }))
        .await;
    assert_eq!(status, Status::Ok);
    // 04:00: 23:30 and 02:30 belong to the 9th's business day.
    let (n, sales, r) = report("2026-11-09").await;
    assert_eq!((n, sales), (2, 1500), "{r}");
    assert_eq!(r["from"], "2026-11-09T03:00:00Z", "{r}");
    assert_eq!(r["to"], "2026-11-10T03:00:00Z", "{r}");
    let (n, sales, _) = report("2026-11-10").await;
    assert_eq!((n, sales), (1, 1500));
}
