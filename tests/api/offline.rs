//! Offline bills on every tier: each applied at most once, below-zero stock
//! accepted and flagged, a rejected bill does not block the others.

use chrono::{Duration, Utc};
use rocket::http::Status;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, TIERS, TestApp, api, assert_error, count, stock_and_movements};
use posd::auth::Role;

const BILLS: &str = api!("/offline-bills");

fn bill(product: &str, qty: i64, paid: i64, minutes_ago: i64) -> Value {
    json!({
        "clientId": Uuid::new_v4(),
        "createdAt": (Utc::now() - Duration::minutes(minutes_ago)).to_rfc3339(),
        "lines": [{ "productId": product, "quantity": qty }],
        "payments": [{ "method": "cash", "amountMinor": paid }]
    })
}

fn statuses(body: &Value) -> Vec<&str> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect()
}

#[rocket::async_test]
async fn a_batch_sent_twice_is_applied_once() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("off-{}", tier.as_str()), tier).await;
        let other = t
            .merchant(&format!("off-other-{}", tier.as_str()), tier)
            .await;
        let cashier = t.staff_token(m.id, Role::Cashier);
        let bread = t.stocked_product(&m, "BREAD", 300, 0, Some(2)).await;
        let jam = t.stocked_product(&m, "JAM", 450, 0, None).await;
        let mut malformed = bill(&bread, 1, 300, 5);
        malformed["lines"][0]["quantity"] = json!("lots");
        let mut future = bill(&jam, 1, 450, 0);
        future["createdAt"] = json!((Utc::now() + Duration::hours(2)).to_rfc3339());
        let batch = json!({ "bills": [
            bill(&bread, 3, 900, 90),           // takes stock to -1: accepted, flagged
            bill(&jam, 2, 900, 80),
            bill(&jam, 1, 100, 70),             // payments short
            bill(&Uuid::new_v4().to_string(), 1, 100, 60), // unknown product
            malformed,
            future,
            bill(&other_product(&t, &other).await, 1, 100, 50), // another merchant's product
            bill(&bread, 1, 300, 40),
        ]});
        let batch_bill0 = batch["bills"][0].clone();
        let (s, first) = t.post(BILLS, &cashier, batch.clone()).await;
        assert_eq!(s, Status::Ok, "{first}");
        assert_eq!(
            statuses(&first),
            [
                "created", "created", "rejected", "rejected", "rejected", "rejected", "rejected",
                "created"
            ]
        );
        let reasons: Vec<&str> = first["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["error"]["code"].as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "payment_short",
                "unknown_product",
                "invalid_bill",
                "validation_failed",
                "unknown_product"
            ]
        );
        assert!(
            first["results"][4]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("lines[0].quantity")
        );
        assert_eq!(
            (first["created"].as_u64(), first["rejected"].as_u64()),
            (Some(3), Some(5))
        );

        // The same batch again: every applied bill is a duplicate of the same order.
        let (s, second) = t.post(BILLS, &cashier, batch).await;
        assert_eq!(s, Status::Ok);
        assert_eq!(
            statuses(&second),
            [
                "duplicate",
                "duplicate",
                "rejected",
                "rejected",
                "rejected",
                "rejected",
                "rejected",
                "duplicate"
            ]
        );
        for i in [0, 1, 7] {
            assert_eq!(
                second["results"][i]["orderId"],
                first["results"][i]["orderId"]
            );
        }

        // A bill already applied stays a duplicate even when it would no
        // longer pass today's checks.
        let mut old = batch_bill0.clone();
        old["createdAt"] = json!((Utc::now() - Duration::days(200)).to_rfc3339());
        let (_, third) = t.post(BILLS, &cashier, json!({ "bills": [old] })).await;
        assert_eq!(statuses(&third), ["duplicate"]);

        let (mut conn, _) = t.data_conn(&m);
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM orders WHERE source = 'offline'"
            )
            .unwrap(),
            3
        );
        assert_eq!(stock_and_movements(&mut conn, &bread), (-2, -2));
        let (_, flagged) = t.get(api!("/inventory?needsCount=true"), &cashier).await;
        assert_eq!(flagged["items"][0]["productId"], bread.as_str());
        // The sale keeps the till's time, not the upload's.
        let order = first["results"][0]["orderId"].as_str().unwrap();
        let (_, o) = t.get(&format!("{API}/orders/{order}"), &cashier).await;
        assert_eq!(o["source"], "offline");
        assert!(o["createdAt"].as_str().unwrap() < o["recordedAt"].as_str().unwrap());
        // A count clears the flag.
        let (s, _) = t
            .post(
                api!("/inventory/adjustments"),
                &m.token,
                json!({ "productId": bread, "countedQuantity": 0, "reason": "count" }),
            )
            .await;
        assert_eq!(s, Status::Created);
        let (_, flagged) = t.get(api!("/inventory?needsCount=true"), &cashier).await;
        assert_eq!(flagged["items"].as_array().unwrap().len(), 0);

        // Batch-level validation.
        let (s, _) = t.post(BILLS, &cashier, json!({ "bills": [] })).await;
        assert_eq!(s, Status::UnprocessableEntity);
        let many: Vec<Value> = (0..101).map(|i| bill(&jam, 1, 450, i)).collect();
        let (s, e) = t.post(BILLS, &cashier, json!({ "bills": many })).await;
        assert_eq!(s, Status::UnprocessableEntity, "{e}");
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM orders").unwrap(),
            3
        );
    }
}

async fn other_product(t: &TestApp, other: &crate::common::Merchant) -> String {
    t.stocked_product(
        other,
        &format!("THEIRS-{}", Uuid::new_v4().simple()),
        100,
        0,
        None,
    )
    .await
}

/// A full batch is larger than other bodies may be, and still has a limit.
#[rocket::async_test]
async fn batches_have_a_larger_body_limit() {
    let t = TestApp::new().await;
    let m = t.merchant("off-big", posd::tenancy::Tier::Shared).await;
    let p = t.stocked_product(&m, "PEN", 10, 0, None).await;
    let bill = |i: i64| {
        json!({
            "clientId": Uuid::new_v4(),
            "createdAt": (Utc::now() - Duration::minutes(i)).to_rfc3339(),
            "lines": (0..10).map(|_| json!({ "productId": p, "quantity": 1, "unitPriceMinor": 10 })).collect::<Vec<_>>(),
            "payments": [{ "method": "cash", "amountMinor": 100, "reference": "x".repeat(90) }],
            "note": "n".repeat(400)
        })
    };
    let batch = json!({ "bills": (0..100).map(bill).collect::<Vec<_>>() });
    assert!(
        batch.to_string().len() > 128 * 1024,
        "bigger than the default JSON limit"
    );
    let (s, body) = t.post(BILLS, &m.token, batch).await;
    assert_eq!(s, Status::Ok, "{body}");
    assert_eq!(body["created"], 100);
    // The same size is too large for an order.
    let huge =
        json!({ "lines": [{ "productId": p, "quantity": 1 }], "note": "n".repeat(100 * 1024) });
    let (s, e, _) = t.post_idem(api!("/orders"), &m.token, "big", huge).await;
    assert_error((s, &e), Status::PayloadTooLarge, "payload_too_large");
    let too_big = json!({ "bills": [{ "note": "n".repeat(1024 * 1024 + 1) }] });
    let (s, e) = t.post(BILLS, &m.token, too_big).await;
    assert_error((s, &e), Status::PayloadTooLarge, "payload_too_large");
}
