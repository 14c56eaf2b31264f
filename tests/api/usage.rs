//! Usage metering: API calls, orders and database time counted per
//! merchant and day in memory and flushed to the control plane; storage
//! measured per tier; the operator's read as JSON and CSV. Flushes and
//! measurements are triggered here, never waited for.

use diesel::connection::SimpleConnection;
use rocket::http::{Method, Status};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, Server, TestApp, api, assert_error};
use posd::{db::ids::MerchantId, tenancy::Tier};

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

/// The operator's read of `merchant`'s usage, with `query` (`&from=...`).
async fn usage(t: &TestApp, merchant: impl std::fmt::Display, query: &str) -> (Status, Value) {
    t.get(
        &format!("{API}/admin/tenants/{merchant}/usage?{query}"),
        &t.admin_token(),
    )
    .await
}

/// Today's entry in a usage answer.
fn today_of(body: &Value) -> Value {
    body["days"]
        .as_array()
        .and_then(|days| days.iter().find(|d| d["day"] == json!(today().to_string())))
        .cloned()
        .unwrap_or_else(|| panic!("no entry for today: {body}"))
}

#[rocket::async_test]
async fn api_calls_orders_and_db_time_are_counted_per_merchant_and_day() {
    let t = TestApp::new().await;
    let a = t.shared_merchant("usage-a").await;
    let b = t.shared_merchant("usage-b").await;
    // An earlier day, recorded before: kept apart from today's.
    let yesterday = today().pred_opt().unwrap();
    t.db.owner()
        .batch_execute(&format!(
            "INSERT INTO merchant_usage (merchant_id, day, api_calls, orders, db_time_us) \
             VALUES ('{}', '{yesterday}', 7, 3, 5000)",
            a.id
        ))
        .unwrap();

    // a: one product, two sales, and one of them replayed (a call, no
    // new order).
    let product = t.stocked_product(&a, "TEA", 300, 0, None).await;
    t.sell(&a, &product, 1, 300).await;
    let key = Uuid::new_v4().to_string();
    let sale = json!({ "lines": [{ "productId": product, "quantity": 2 }],
                       "payments": [{ "method": "cash", "amountMinor": 600 }] });
    for _ in 0..2 {
        let (status, body, _) = t
            .post_idem(api!("/orders"), &a.token, &key, sale.clone())
            .await;
        assert_eq!(status, Status::Created, "{body}");
    }
    // b: one read, and one refused request (not a staff request: no
    // merchant to count it to).
    let (status, _) = t.get(api!("/products"), &b.token).await;
    assert_eq!(status, Status::Ok);
    let (status, _) = t.get(api!("/products"), "not-a-token").await;
    assert_eq!(status, Status::Unauthorized);

    let (status, body) = usage(&t, a.id, "").await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(body["merchantId"], json!(a.id.to_string()));
    let days = body["days"].as_array().unwrap();
    assert_eq!(days.len(), 2, "{body}");
    assert_eq!(days[0]["day"], json!(yesterday.to_string()));
    assert_eq!(
        (
            &days[0]["apiCalls"],
            &days[0]["orders"],
            &days[0]["dbTimeMs"]
        ),
        (&json!(7), &json!(3), &json!(5.0)),
        "an earlier day is left as it was"
    );
    let a_today = today_of(&body);
    assert_eq!(a_today["apiCalls"], json!(4), "{a_today}");
    assert_eq!(a_today["orders"], json!(2), "{a_today}");
    assert!(a_today["dbTimeMs"].as_f64().unwrap() > 0.0, "{a_today}");
    assert!(a_today["rowsStored"].is_null(), "not measured yet");

    let (status, body) = usage(&t, b.id, "").await;
    assert_eq!(status, Status::Ok, "{body}");
    let b_today = today_of(&body);
    assert_eq!(
        (&b_today["apiCalls"], &b_today["orders"]),
        (&json!(1), &json!(0))
    );
    assert!(b_today["dbTimeMs"].as_f64().unwrap() > 0.0, "{b_today}");

    // Reads add nothing, and counted usage is not counted again.
    let (_, again) = usage(&t, a.id, "").await;
    assert_eq!(today_of(&again)["apiCalls"], json!(4));
}

#[rocket::async_test]
async fn offline_bills_count_as_orders() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("usage-offline").await;
    let product = t.stocked_product(&m, "BUN", 200, 0, None).await;
    let bill = |client: Uuid| {
        json!({ "clientId": client.to_string(), "createdAt": chrono::Utc::now().to_rfc3339(),
                "lines": [{ "productId": product, "quantity": 1 }],
                "payments": [{ "method": "cash", "amountMinor": 200 }] })
    };
    let first = Uuid::new_v4();
    let (status, body) = t
        .post(
            api!("/offline-bills"),
            &m.token,
            json!({ "bills": [bill(first), bill(Uuid::new_v4()), bill(first)] }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(body["created"], json!(2), "{body}");
    let (_, usage) = usage(&t, m.id, "").await;
    assert_eq!(today_of(&usage)["orders"], json!(2), "{usage}");
}

#[rocket::async_test]
async fn storage_is_measured_for_shared_and_schema_merchants() {
    let t = TestApp::new().await;
    let shared = t.shared_merchant("store-shared").await;
    let idle = t.shared_merchant("store-idle").await;
    let schema = t.merchant("store-schema", Tier::Schema).await;
    for m in [&shared, &schema] {
        t.product(m, "P1").await;
        t.product(m, "P2").await;
    }

    let measured = posd::tenancy::usage::measure_storage(&t.app().tenancy)
        .await
        .unwrap();
    assert!(measured >= 3, "{measured}");

    let stored = |body: &Value| {
        let d = today_of(body);
        (
            d["rowsStored"].as_i64().unwrap(),
            d["bytesStored"].as_i64().unwrap(),
        )
    };
    let (_, body) = usage(&t, shared.id, "").await;
    let (rows, bytes) = stored(&body);
    assert!(rows >= 2, "its two products at least: {body}");
    // The size of its own rows: well under a page per row.
    assert!(bytes > 0 && bytes < rows * 8192, "{body}");
    let (_, body) = usage(&t, idle.id, "").await;
    let (rows, bytes) = stored(&body);
    assert_eq!(
        rows, 1,
        "its owner's login in its audit trail, and none of another merchant's rows: {body}"
    );
    assert!(bytes > 0 && bytes < 8192, "{body}");
    let (_, body) = usage(&t, schema.id, "").await;
    let (rows, bytes) = stored(&body);
    assert!(rows >= 2, "{body}");
    // Its tables' whole size: pages, indexes included.
    assert!(bytes >= 8192, "{body}");

    // A second pass the same day replaces the gauges, never adds.
    let (_, body) = usage(&t, shared.id, "").await;
    let (before, _) = stored(&body);
    t.product(&shared, "P3").await;
    posd::tenancy::usage::measure_storage(&t.app().tenancy)
        .await
        .unwrap();
    let (_, body) = usage(&t, shared.id, "").await;
    let (after, _) = stored(&body);
    assert!(
        after > before && after <= before + 3,
        "{before} then {after}"
    );
}

#[rocket::async_test]
async fn usage_exports_as_csv() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("usage-csv").await;
    let (status, _) = t.get(api!("/products"), &m.token).await;
    assert_eq!(status, Status::Ok);
    let admin = t.admin_token();
    let path = format!("{API}/admin/tenants/{}/usage?format=csv", m.id);
    let plain = format!("{API}/admin/tenants/{}/usage", m.id);
    for (path, headers) in [
        (path.as_str(), vec![]),
        (plain.as_str(), vec![("Accept", "text/csv".to_string())]),
    ] {
        let res = t
            .send(Method::Get, path, Some(&admin), None, &headers)
            .await;
        assert_eq!(res.status(), Status::Ok);
        let ct = res.content_type().unwrap();
        assert_eq!((ct.top().as_str(), ct.sub().as_str()), ("text", "csv"));
        let text = res.into_string().await.unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "merchantId,day,apiCalls,orders,dbTimeMs,rowsStored,bytesStored"
        );
        assert_eq!(lines.len(), 2, "{text}");
        let fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(fields.len(), 7, "{text}");
        assert_eq!(fields[0], m.id.to_string());
        assert_eq!(fields[1], today().to_string());
        assert_eq!(fields[2], "1");
        assert_eq!(fields[3], "0");
        assert!(fields[4].parse::<f64>().unwrap() > 0.0, "{text}");
        assert_eq!((fields[5], fields[6]), ("", ""), "not measured: empty");
    }
    // format=json wins over the header.
    let json_path = format!("{plain}?format=json");
    let res = t
        .send(
            Method::Get,
            &json_path,
            Some(&admin),
            None,
            &[("Accept", "text/csv".to_string())],
        )
        .await;
    assert!(res.content_type().unwrap().is_json());
}

#[rocket::async_test]
async fn bad_ranges_unknown_merchants_and_non_operators_are_refused() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("usage-refusals").await;
    for (query, field) in [
        ("from=2026-03-02&to=2026-03-01", "from"),
        ("from=2025-01-01&to=2026-01-02", "to"),
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("format=xml", "format"),
    ] {
        let message = assert_error(
            usage(&t, m.id, query).await,
            Status::UnprocessableEntity,
            "validation_failed",
        );
        assert!(message.starts_with(field), "{query}: {message}");
    }
    // 366 days is the longest range.
    let (status, body) = usage(&t, m.id, "from=2025-01-02&to=2026-01-02").await;
    assert_eq!(status, Status::Ok, "{body}");

    assert_error(
        usage(&t, MerchantId(Uuid::new_v4()), "").await,
        Status::NotFound,
        "not_found",
    );
    let path = format!("{API}/admin/tenants/{}/usage", m.id);
    let (status, _) = t.get(&path, &m.token).await;
    assert_eq!(
        status,
        Status::Unauthorized,
        "a staff token is no operator's"
    );
    let (status, _) = t.request(Method::Get, &path, None, None).await;
    assert_eq!(status, Status::Unauthorized);
}

#[rocket::async_test]
async fn a_failed_flush_loses_nothing() {
    // No background flush in between: this test flushes by hand.
    let t = TestApp::with_config(|s| s.usage_flush_interval = std::time::Duration::from_secs(3600))
        .await;
    let m = t.shared_merchant("usage-flush").await;
    let app_role = Server::get().app_role().to_string();
    t.db.owner()
        .batch_execute(&format!(
            "REVOKE INSERT, UPDATE ON merchant_usage FROM {app_role}"
        ))
        .unwrap();
    for _ in 0..3 {
        let (status, _) = t.get(api!("/products"), &m.token).await;
        assert_eq!(status, Status::Ok);
    }
    let app = t.app();
    assert!(app.usage.flush(app).await.is_err(), "the flush is refused");
    // A request meanwhile adds to the counts kept.
    let (status, _) = t.get(api!("/products"), &m.token).await;
    assert_eq!(status, Status::Ok);
    t.db.owner()
        .batch_execute(&format!(
            "GRANT INSERT, UPDATE ON merchant_usage TO {app_role}"
        ))
        .unwrap();
    let (status, body) = usage(&t, m.id, "").await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(today_of(&body)["apiCalls"], json!(4), "{body}");
}
