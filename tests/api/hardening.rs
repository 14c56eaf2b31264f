//! Money rules on every path, trusted client addresses, and inputs that
//! must be refused with a 4xx naming the field, never a 500.

use std::net::SocketAddr;

use chrono::{Duration, Utc};
use diesel::connection::SimpleConnection;
use rocket::http::{ContentType, Header, Method, Status};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, TIERS, TestApp, api, assert_error_about, count, read};
use posd::{auth::Role, config::RateLimit};

const BILLS: &str = api!("/offline-bills");
const ORDERS: &str = api!("/orders");
const PRODUCTS: &str = api!("/products");

fn bill(line: &Value, paid: i64, created_at: chrono::DateTime<Utc>) -> Value {
    json!({
        "clientId": Uuid::new_v4(),
        "createdAt": created_at.to_rfc3339(),
        "lines": [line],
        "payments": [{ "method": "cash", "amountMinor": paid }]
    })
}

/// The result of the only bill of a batch.
async fn one_bill(t: &TestApp, token: &str, b: Value) -> Value {
    let (s, out) = t.post(BILLS, token, json!({ "bills": [b] })).await;
    assert_eq!(s, Status::Ok, "{out}");
    out["results"][0].clone()
}

#[rocket::async_test]
async fn offline_bills_sell_at_the_price_the_till_saw() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("price-{}", tier.as_str()), tier).await;
        let cashier = t.staff_token(m.id, Role::Cashier);
        let p = t.stocked_product(&m, "TEA", 1000, 0, None).await;
        let before = Utc::now() - Duration::minutes(30);
        // The price goes up after the till went offline.
        let (s, _) = t
            .patch(
                &format!("{PRODUCTS}/{p}"),
                &m.token,
                json!({ "priceMinor": 1500 }),
            )
            .await;
        assert_eq!(s, Status::Ok);
        let now = Utc::now();

        // Without a price, a bill is priced as the catalog was at its time.
        let r = one_bill(
            &t,
            &cashier,
            bill(&json!({ "productId": p, "quantity": 1 }), 1000, before),
        )
        .await;
        assert_eq!(r["status"], "created", "{r}");
        let r = one_bill(
            &t,
            &cashier,
            bill(&json!({ "productId": p, "quantity": 1 }), 1500, now),
        )
        .await;
        assert_eq!(r["status"], "created", "{r}");
        // The price in effect at the bill's time may be stated.
        let r = one_bill(
            &t,
            &cashier,
            bill(
                &json!({ "productId": p, "quantity": 1, "unitPriceMinor": 1000 }),
                1000,
                before,
            ),
        )
        .await;
        assert_eq!(r["status"], "created", "{r}");
        // Any other price, or a discount, is a cashier's override: refused.
        for (line, why) in [
            (
                json!({ "productId": p, "quantity": 1, "unitPriceMinor": 0 }),
                "free",
            ),
            (
                json!({ "productId": p, "quantity": 1, "unitPriceMinor": 1000 }),
                "the old price now",
            ),
            (
                json!({ "productId": p, "quantity": 1, "unitPriceMinor": 1500 }),
                "the new price before",
            ),
            (
                json!({ "productId": p, "quantity": 1, "discountMinor": 999 }),
                "a discount",
            ),
        ] {
            let at = if why == "the new price before" {
                before
            } else {
                now
            };
            let r = one_bill(&t, &cashier, bill(&line, 1500, at)).await;
            assert_eq!(r["status"], "rejected", "{why}: {r}");
            assert_eq!(r["error"]["code"], "price_override_forbidden", "{why}: {r}");
        }
        // A manager may override, offline as online.
        let r = one_bill(
            &t,
            &m.token,
            bill(
                &json!({ "productId": p, "quantity": 1, "unitPriceMinor": 700 }),
                700,
                now,
            ),
        )
        .await;
        assert_eq!(r["status"], "created", "{r}");
        // An absurd price is refused before anything else, for anyone.
        let r = one_bill(
            &t,
            &m.token,
            bill(&json!({ "productId": p, "quantity": 1, "unitPriceMinor": 5_000_000_000_000_000_000i64 }), 1, now),
        )
        .await;
        assert_eq!(r["error"]["code"], "validation_failed", "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("lines[0].unitPriceMinor"),
            "{r}"
        );

        // A product taken off sale after the bill was rung up still sells at
        // that time; one off sale then does not.
        let (s, _) = t
            .patch(
                &format!("{PRODUCTS}/{p}"),
                &m.token,
                json!({ "active": false }),
            )
            .await;
        assert_eq!(s, Status::Ok);
        let r = one_bill(
            &t,
            &cashier,
            bill(&json!({ "productId": p, "quantity": 1 }), 1500, now),
        )
        .await;
        assert_eq!(
            r["status"], "created",
            "sold before it was taken off sale: {r}"
        );
        let later = Utc::now() + Duration::seconds(1);
        let r = one_bill(
            &t,
            &cashier,
            bill(&json!({ "productId": p, "quantity": 1 }), 1500, later),
        )
        .await;
        assert_eq!(r["error"]["code"], "product_inactive", "{r}");

        let (mut conn, _) = t.data_conn(&m);
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM orders").unwrap(),
            5,
            "only the accepted bills became orders"
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT coalesce(sum(total_minor), 0)::bigint AS n FROM orders"
            )
            .unwrap(),
            1000 + 1500 + 1000 + 700 + 1500
        );
    }
}

#[rocket::async_test]
async fn offline_bills_older_than_the_window_are_refused() {
    let t =
        TestApp::with_config(|s| s.offline_bill_max_age = std::time::Duration::from_secs(2 * 3600))
            .await;
    let m = t.shared_merchant("old-bills").await;
    let p = t.stocked_product(&m, "OLD", 100, 0, None).await;
    let line = json!({ "productId": p, "quantity": 1 });
    let r = one_bill(
        &t,
        &m.token,
        bill(&line, 100, Utc::now() - Duration::minutes(119)),
    )
    .await;
    assert_eq!(r["status"], "created", "{r}");
    let r = one_bill(
        &t,
        &m.token,
        bill(&line, 100, Utc::now() - Duration::minutes(121)),
    )
    .await;
    assert_eq!(r["status"], "rejected", "{r}");
    assert_eq!(r["error"]["code"], "bill_too_old", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("2h"),
        "{r}"
    );
}

#[rocket::async_test]
async fn amounts_are_bounded_and_reports_cannot_overflow() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("bounds").await;
    let p = t
        .stocked_product(&m, "GOLD", 100_000_000_000, 0, None)
        .await;
    let key = || Uuid::new_v4().to_string();
    // A price above the catalog's bound, and a line above the amount bound.
    for (line, field) in [
        (
            json!({ "productId": p, "quantity": 1, "unitPriceMinor": 100_000_000_001i64 }),
            "lines[0].unitPriceMinor",
        ),
        (json!({ "productId": p, "quantity": 101 }), "lines[0]"),
    ] {
        let (s, e, _) = t
            .post_idem(ORDERS, &m.token, &key(), json!({ "lines": [line] }))
            .await;
        assert_eq!(s, Status::UnprocessableEntity, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().starts_with(field),
            "{e}"
        );
    }
    let (s, e, _) = t
        .post_idem(
            ORDERS,
            &m.token,
            &key(),
            json!({ "lines": [{ "productId": p, "quantity": 1 }],
                    "payments": [{ "method": "card", "amountMinor": 10_000_000_000_001i64 }] }),
        )
        .await;
    assert_eq!(s, Status::UnprocessableEntity, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("payments[0].amountMinor"),
        "{e}"
    );

    // Whatever is stored, the report's sums hold: two orders whose totals
    // add up past i64::MAX (written directly, as no API path can).
    let (mut conn, _) = t.data_conn(&m);
    let today = Utc::now();
    for _ in 0..2 {
        conn.batch_execute(&format!(
            "INSERT INTO orders (merchant_id, id, status, source, staff_id, currency, gross_minor, \
             discount_minor, tax_minor, total_minor, tendered_minor, change_minor, refunded_minor, created_at, recorded_at) \
             VALUES ('{}', '{}', 'completed', 'till', '{}', 'EUR', 5000000000000000000, 0, 0, \
             5000000000000000000, 5000000000000000000, 0, 0, '{today}', '{today}')",
            m.id,
            Uuid::now_v7(),
            Uuid::new_v4()
        ))
        .unwrap();
    }
    let date = today.with_timezone(&chrono_tz::Europe::Paris).date_naive();
    let path = format!("{API}/reports/daily?date={date}");
    let res = t.send(Method::Get, &path, Some(&m.token), None, &[]).await;
    assert_eq!(res.status(), Status::Ok);
    let text = res.into_string().await.unwrap();
    assert!(
        text.contains("\"salesMinor\":10000000000000000000"),
        "{text}"
    );
}

#[rocket::async_test]
async fn the_login_limit_trusts_forwarded_addresses_only_from_proxies() {
    async fn attempt(t: &TestApp, peer: &str, headers: Vec<(&'static str, String)>) -> Status {
        let mut req = t
            .client
            .post(api!("/auth/login"))
            .remote(peer.parse::<SocketAddr>().unwrap())
            .header(ContentType::JSON)
            .body(json!({ "merchant": "nobody", "email": format!("{}@x.test", Uuid::new_v4()), "password": "wrong password" }).to_string());
        for (k, v) in headers {
            req = req.header(Header::new(k, v));
        }
        req.dispatch().await.status()
    }
    fn three_an_hour() -> RateLimit {
        RateLimit {
            burst: 3,
            interval: std::time::Duration::from_secs(3600),
        }
    }

    // No trusted proxy: X-Real-IP and X-Forwarded-For are ignored, so
    // rotating them does not escape the per-address limit.
    let t = TestApp::with_config(|s| s.login_address_limit = three_an_hour()).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let spoof = format!("198.51.100.{i}");
        statuses.push(
            attempt(
                &t,
                "203.0.113.5:4000",
                vec![("X-Real-IP", spoof.clone()), ("X-Forwarded-For", spoof)],
            )
            .await,
        );
    }
    assert_eq!(&statuses[..3], [Status::Unauthorized; 3]);
    assert_eq!(&statuses[3..], [Status::TooManyRequests; 3]);

    // Behind a trusted proxy, each forwarded client has its own budget.
    let t = TestApp::with_config(|s| {
        s.login_address_limit = three_an_hour();
        s.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        for n in 0..4 {
            let s = attempt(
                &t,
                "10.1.1.1:4000",
                vec![("X-Forwarded-For", format!("6.6.6.6, {client}"))],
            )
            .await;
            let want = if n < 3 {
                Status::Unauthorized
            } else {
                Status::TooManyRequests
            };
            assert_eq!(s, want, "{client} attempt {n}");
        }
    }
}

#[rocket::async_test]
async fn form_bodies_are_refused_everywhere() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("forms").await;
    let p = t.product(&m, "KEEP").await;
    for (method, path, ct) in [
        (Method::Post, format!("{PRODUCTS}/{p}"), ContentType::Form),
        (Method::Post, PRODUCTS.to_string(), ContentType::Form),
        (
            Method::Post,
            format!("{PRODUCTS}/{p}"),
            ContentType::FormData,
        ),
        (Method::Delete, format!("{PRODUCTS}/{p}"), ContentType::Form),
    ] {
        let res = t
            .client
            .req(method, path.clone())
            .header(Header::new("Authorization", format!("Bearer {}", m.token)))
            .header(ct.clone())
            .body("_method=DELETE")
            .dispatch()
            .await;
        assert_error_about(
            format!("{method} {path} {ct}"),
            read(res).await,
            Status::UnsupportedMediaType,
            "unsupported_media_type",
        );
    }
    let (s, _) = t.get(&format!("{PRODUCTS}/{p}"), &m.token).await;
    assert_eq!(s, Status::Ok, "the product is still there");
}

#[rocket::async_test]
async fn control_characters_are_refused_naming_the_field() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("nul-shop").await;
    let admin = t.admin_token();
    let check = |s: Status, b: &Value, field: &str| {
        assert_error_about(
            field,
            (s, b),
            Status::UnprocessableEntity,
            "validation_failed",
        );
        assert!(
            b["error"]["message"].as_str().unwrap().starts_with(field),
            "{field}: {b}"
        );
    };
    let (s, b) = t
        .request(
            Method::Post,
            api!("/auth/login"),
            None,
            Some(json!({ "merchant": "sa\u{0}", "email": "a@b.test", "password": "x" })),
        )
        .await;
    check(s, &b, "merchant");
    for (path, field) in [
        (format!("{PRODUCTS}?q=%00"), "q"),
        (api!("/customers?q=a%00b").to_string(), "q"),
        (format!("{ORDERS}?status=%01"), "status"),
    ] {
        let (s, b) = t.get(&path, &m.token).await;
        check(s, &b, field);
    }
    let owner = json!({ "email": "o@nul.test", "password": "correct horse battery" });
    for (body, field) in [
        (
            json!({ "slug": "nul-a", "name": "A\u{0}", "timezone": "UTC", "currency": "EUR", "owner": owner }),
            "name",
        ),
        (
            json!({ "slug": "nul-b", "name": "B", "timezone": "UTC", "currency": "EUR", "plan": "p\u{0}", "owner": owner }),
            "plan",
        ),
        (
            json!({ "slug": "nul-c", "name": "C", "timezone": "UTC", "currency": "EUR",
                 "owner": { "email": "o\u{0}@nul.test", "password": "correct horse battery" } }),
            "owner.email",
        ),
        (
            json!({ "slug": "nul-d", "name": "D\u{7f}", "timezone": "UTC", "currency": "EUR", "owner": owner }),
            "name",
        ),
    ] {
        let (s, b) = t.post(api!("/admin/merchants"), &admin, body).await;
        check(s, &b, field);
    }
    let (s, b) = t
        .post(
            PRODUCTS,
            &m.token,
            json!({ "sku": "S\u{85}", "name": "x", "priceMinor": 1 }),
        )
        .await;
    check(s, &b, "sku");
}

#[rocket::async_test]
async fn dates_and_currencies_are_checked() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("dates").await;
    for date in ["-4714-11-23", "1999-12-31", "2100-01-01", "99999-01-01"] {
        let (s, b) = t
            .get(&format!("{API}/reports/daily?date={date}"), &m.token)
            .await;
        assert_eq!(s, Status::UnprocessableEntity, "{date}: {b}");
        assert!(
            b["error"]["message"].as_str().unwrap().starts_with("date"),
            "{b}"
        );
    }
    let (s, _) = t
        .get(api!("/reports/daily?date=2000-01-01"), &m.token)
        .await;
    assert_eq!(s, Status::Ok);
    let (s, b) = t
        .get(&format!("{ORDERS}?from=0001-01-01T00:00:00Z"), &m.token)
        .await;
    assert_eq!(s, Status::UnprocessableEntity, "{b}");

    let admin = t.admin_token();
    for currency in ["ZZZ", "usd", "EURO"] {
        let (s, b) = t
            .post(
                api!("/admin/merchants"),
                &admin,
                json!({ "slug": "cur", "name": "C", "timezone": "UTC", "currency": currency,
                        "owner": { "email": "o@cur.test", "password": "correct horse battery" } }),
            )
            .await;
        assert_eq!(s, Status::UnprocessableEntity, "{currency}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("currency"),
            "{b}"
        );
    }
}

#[rocket::async_test]
async fn the_contract_carries_the_limits_the_server_enforces() {
    let t = TestApp::new().await;
    let (s, doc) = t.request(Method::Get, "/openapi.json", None, None).await;
    assert_eq!(s, Status::Ok);
    let schemas = &doc["components"]["schemas"];
    let at = |name: &str| schemas[name].clone();
    assert_eq!(at("Lines")["maxItems"], 200);
    assert_eq!(at("Lines")["minItems"], 1);
    assert_eq!(at("Quantity")["maximum"], 100_000.0);
    assert_eq!(at("UnitPrice")["maximum"], 100_000_000_000.0);
    assert_eq!(at("Sku")["maxLength"], 64);
    assert!(at("Note")["pattern"].is_string());
    assert_eq!(at("Bills")["maxItems"], 100);
    // Query parameters carry their bounds too.
    let params = doc["paths"][api!("/orders")]["get"]["parameters"].to_string();
    assert!(params.contains("\"maximum\":200"), "{params}");
    assert!(params.contains("\"partially_refunded\""), "{params}");
    let params = doc["paths"][api!("/reports/daily")]["get"]["parameters"].to_string();
    assert!(params.contains("^20[0-9]{2}-"), "{params}");
    // Every reference resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(schemas.get(name).is_some(), "dangling $ref {name}");
    }
}
