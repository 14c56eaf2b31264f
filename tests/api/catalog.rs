//! Categories, inventory and customers on every tier: happy paths,
//! validation, roles and attempts to reach another merchant's rows.

use rocket::http::Status;
use serde_json::json;

use crate::common::{API, TIERS, TestApp, assert_error, stock_and_movements};
use posd::auth::Role;

#[rocket::async_test]
async fn categories_on_every_tier() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("cat-{}", tier.as_str()), tier).await;
        let other = t
            .merchant(&format!("cat-other-{}", tier.as_str()), tier)
            .await;
        let cashier = t.staff_token(m.id, Role::Cashier);

        let (s, drinks) = t
            .post(
                &format!("{API}/categories"),
                &m.token,
                json!({ "name": "Drinks", "sortOrder": 2 }),
            )
            .await;
        assert_eq!(s, Status::Created, "{drinks}");
        let (s, food) = t
            .post(
                &format!("{API}/categories"),
                &m.token,
                json!({ "name": "Food", "sortOrder": 1 }),
            )
            .await;
        assert_eq!(s, Status::Created, "{food}");
        let (s, dup) = t
            .post(
                &format!("{API}/categories"),
                &m.token,
                json!({ "name": "drinks" }),
            )
            .await;
        assert_error((s, &dup), Status::Conflict, "category_name_taken");
        let (s, bad) = t
            .post(
                &format!("{API}/categories"),
                &m.token,
                json!({ "name": "  " }),
            )
            .await;
        assert_eq!(s, Status::UnprocessableEntity);
        assert!(
            bad["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("name:"),
            "{bad}"
        );
        let (s, _) = t
            .post(
                &format!("{API}/categories"),
                &cashier,
                json!({ "name": "Nope" }),
            )
            .await;
        assert_eq!(s, Status::Forbidden);

        let (s, list) = t.get(&format!("{API}/categories"), &cashier).await;
        assert_eq!(s, Status::Ok);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Food", "Drinks"], "sorted by sortOrder");

        // A product in a category; the category's deletion leaves it uncategorised.
        let drinks_id = drinks["id"].as_str().unwrap();
        let (s, p) = t
            .post(&format!("{API}/products"), &m.token, json!({ "sku": "COLA", "name": "Cola", "priceMinor": 200, "categoryId": drinks_id }))
            .await;
        assert_eq!(s, Status::Created, "{p}");
        let (s, filtered) = t
            .get(&format!("{API}/products?categoryId={drinks_id}"), &m.token)
            .await;
        assert_eq!(s, Status::Ok);
        assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
        // Another merchant's category cannot be referenced.
        let (s, err) = t
            .post(
                &format!("{API}/products"),
                &other.token,
                json!({ "sku": "X", "name": "X", "priceMinor": 1, "categoryId": drinks_id }),
            )
            .await;
        assert_error((s, &err), Status::UnprocessableEntity, "unknown_category");
        // Nor renamed or deleted: 404, and it is still there.
        let (s, _) = t
            .patch(
                &format!("{API}/categories/{drinks_id}"),
                &other.token,
                json!({ "name": "Stolen" }),
            )
            .await;
        assert_eq!(s, Status::NotFound);
        let (s, _) = t
            .delete(&format!("{API}/categories/{drinks_id}"), &other.token)
            .await;
        assert_eq!(s, Status::NotFound);
        let (s, renamed) = t
            .patch(
                &format!("{API}/categories/{drinks_id}"),
                &m.token,
                json!({ "name": "Cold drinks" }),
            )
            .await;
        assert_eq!(
            (s, renamed["name"].as_str()),
            (Status::Ok, Some("Cold drinks"))
        );

        let (s, _) = t
            .delete(&format!("{API}/categories/{drinks_id}"), &m.token)
            .await;
        assert_eq!(s, Status::NoContent);
        let (_, got) = t
            .get(
                &format!("{API}/products/{}", p["id"].as_str().unwrap()),
                &m.token,
            )
            .await;
        assert_eq!(got["categoryId"], serde_json::Value::Null);
        let (s, _) = t
            .delete(&format!("{API}/categories/{drinks_id}"), &m.token)
            .await;
        assert_eq!(s, Status::NotFound);
    }
}

#[rocket::async_test]
async fn inventory_levels_equal_their_movements() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("inv-{}", tier.as_str()), tier).await;
        let other = t
            .merchant(&format!("inv-other-{}", tier.as_str()), tier)
            .await;
        let cashier = t.staff_token(m.id, Role::Cashier);
        let p = t.stocked_product(&m, "BEANS", 900, 550, Some(20)).await;
        let adj = format!("{API}/inventory/adjustments");

        let (s, body) = t
            .post(
                &adj,
                &m.token,
                json!({ "productId": p, "delta": -3, "reason": "damage", "note": "dropped" }),
            )
            .await;
        assert_eq!(s, Status::Created, "{body}");
        assert_eq!(body["onHand"], 17);
        let (s, body) = t
            .post(
                &adj,
                &m.token,
                json!({ "productId": p, "countedQuantity": 15, "reason": "count" }),
            )
            .await;
        assert_eq!(s, Status::Created, "{body}");
        assert_eq!(
            (body["delta"].as_i64(), body["onHand"].as_i64()),
            (Some(-2), Some(15))
        );

        // Validation: field-level messages, nothing changes.
        for (bad, field) in [
            (
                json!({ "productId": p, "delta": 0, "reason": "correction" }),
                "delta",
            ),
            (
                json!({ "productId": p, "delta": -1, "reason": "receive" }),
                "delta",
            ),
            (
                json!({ "productId": p, "delta": 5, "reason": "damage" }),
                "delta",
            ),
            (
                json!({ "productId": p, "countedQuantity": 5, "reason": "receive" }),
                "countedQuantity",
            ),
            (
                json!({ "productId": p, "delta": 1, "countedQuantity": 1, "reason": "count" }),
                "delta",
            ),
            (
                json!({ "productId": p, "delta": 1, "reason": "theft" }),
                "reason",
            ),
            (
                json!({ "productId": "not-a-uuid", "delta": 1, "reason": "receive" }),
                "productId",
            ),
        ] {
            let (s, e) = t.post(&adj, &m.token, bad.clone()).await;
            assert_eq!(s, Status::UnprocessableEntity, "{bad} -> {e}");
            assert!(
                e["error"]["message"].as_str().unwrap().contains(field),
                "{bad} -> {e}"
            );
        }
        let (s, e) = t
            .post(
                &adj,
                &m.token,
                json!({ "productId": p, "delta": -16, "reason": "correction" }),
            )
            .await;
        assert_error((s, &e), Status::Conflict, "insufficient_stock");
        let (s, _) = t
            .post(
                &adj,
                &cashier,
                json!({ "productId": p, "delta": 1, "reason": "receive" }),
            )
            .await;
        assert_eq!(s, Status::Forbidden);
        // Another merchant cannot adjust, list or read this product's stock.
        let (s, _) = t
            .post(
                &adj,
                &other.token,
                json!({ "productId": p, "delta": 100, "reason": "receive" }),
            )
            .await;
        assert_eq!(s, Status::NotFound);
        let (s, _) = t
            .get(&format!("{API}/inventory/{p}/movements"), &other.token)
            .await;
        assert_eq!(s, Status::NotFound);
        let (_, theirs) = t
            .get(&format!("{API}/inventory?productId={p}"), &other.token)
            .await;
        assert_eq!(theirs["items"].as_array().unwrap().len(), 0);

        let (s, list) = t.get(&format!("{API}/inventory"), &cashier).await;
        assert_eq!(s, Status::Ok);
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            (
                items[0]["onHand"].as_i64(),
                items[0]["needsCount"].as_bool()
            ),
            (Some(15), Some(false))
        );
        let (s, moves) = t
            .get(&format!("{API}/inventory/{p}/movements"), &cashier)
            .await;
        assert_eq!(s, Status::Ok);
        let reasons: Vec<&str> = moves
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, ["count", "damage", "receive"]);

        let (mut conn, _) = t.data_conn(&m);
        assert_eq!(stock_and_movements(&mut conn, &p), (15, 15));
    }
}

#[rocket::async_test]
async fn customers_on_every_tier() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("cust-{}", tier.as_str()), tier).await;
        let other = t
            .merchant(&format!("cust-other-{}", tier.as_str()), tier)
            .await;
        let cashier = t.staff_token(m.id, Role::Cashier);
        let base = format!("{API}/customers");

        let (s, ada) = t.post(&base, &cashier, json!({ "name": "Ada Lovelace", "email": "Ada@Example.com", "phone": "+44 20 7946 0000" })).await;
        assert_eq!(s, Status::Created, "{ada}");
        assert_eq!(ada["email"], "ada@example.com");
        let (s, _) = t
            .post(&base, &cashier, json!({ "name": "Grace Hopper" }))
            .await;
        assert_eq!(s, Status::Created);
        let (s, dup) = t
            .post(
                &base,
                &cashier,
                json!({ "name": "Other Ada", "email": "ada@example.com" }),
            )
            .await;
        assert_error((s, &dup), Status::Conflict, "email_taken");
        for (bad, field) in [
            (json!({ "name": "" }), "name"),
            (json!({ "name": "X", "email": "not-an-email" }), "email"),
            (json!({ "name": "X", "phone": "call me" }), "phone"),
            (json!({ "name": "X", "shoeSize": 42 }), "shoeSize"),
        ] {
            let (s, e) = t.post(&base, &cashier, bad.clone()).await;
            assert_eq!(s, Status::UnprocessableEntity, "{bad} -> {e}");
            assert!(
                e["error"]["message"].as_str().unwrap().contains(field),
                "{bad} -> {e}"
            );
        }

        let (s, found) = t.get(&format!("{base}?q=lovelace"), &cashier).await;
        assert_eq!(s, Status::Ok);
        assert_eq!(found["items"].as_array().unwrap().len(), 1);
        let (_, page) = t.get(&format!("{base}?limit=1"), &cashier).await;
        let cursor = page["nextCursor"].as_str().unwrap().to_string();
        let (_, page2) = t
            .get(&format!("{base}?limit=1&cursor={cursor}"), &cashier)
            .await;
        assert_eq!(page2["items"][0]["name"], "Grace Hopper");

        let id = ada["id"].as_str().unwrap();
        let (s, patched) = t
            .patch(
                &format!("{base}/{id}"),
                &cashier,
                json!({ "phone": null, "note": "VIP" }),
            )
            .await;
        assert_eq!(s, Status::Ok, "{patched}");
        assert_eq!(
            (patched["phone"].is_null(), patched["note"].as_str()),
            (true, Some("VIP"))
        );
        assert_eq!(patched["email"], "ada@example.com", "untouched");

        // Another merchant: not found, not listed, not changed.
        let (s, _) = t.get(&format!("{base}/{id}"), &other.token).await;
        assert_eq!(s, Status::NotFound);
        let (s, _) = t
            .patch(
                &format!("{base}/{id}"),
                &other.token,
                json!({ "name": "Mallory" }),
            )
            .await;
        assert_eq!(s, Status::NotFound);
        let (_, theirs) = t.get(&format!("{base}?q=ada"), &other.token).await;
        assert_eq!(theirs["items"].as_array().unwrap().len(), 0);
        let (_, still) = t.get(&format!("{base}/{id}"), &m.token).await;
        assert_eq!(still["name"], "Ada Lovelace");
        // No token at all.
        let (s, _) = t
            .request(rocket::http::Method::Get, &base, None, None)
            .await;
        assert_eq!(s, Status::Unauthorized);
    }
}

#[rocket::async_test]
async fn sold_products_are_soft_deleted_and_their_sku_freed() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("soft-{}", tier.as_str()), tier).await;
        let sold = t.stocked_product(&m, "SOLD", 100, 0, None).await;
        let unsold = t.stocked_product(&m, "UNSOLD", 100, 0, None).await;
        let order = t.sell(&m, &sold, 1, 100).await;
        for id in [&sold, &unsold] {
            let (s, _) = t.delete(&format!("{API}/products/{id}"), &m.token).await;
            assert_eq!(s, Status::NoContent);
            let (s, _) = t.get(&format!("{API}/products/{id}"), &m.token).await;
            assert_eq!(s, Status::NotFound);
        }
        let (mut conn, _) = t.data_conn(&m);
        let kept = crate::common::count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM products WHERE id = '{sold}' AND deleted_at IS NOT NULL"
            ),
        )
        .unwrap();
        let gone = crate::common::count(
            &mut conn,
            &format!("SELECT count(*) AS n FROM products WHERE id = '{unsold}'"),
        )
        .unwrap();
        assert_eq!((kept, gone), (1, 0), "sold: soft-deleted; unsold: deleted");
        // The order still reads with its line, and the sku can be reused.
        let (s, o) = t
            .get(
                &format!("{API}/orders/{}", order["id"].as_str().unwrap()),
                &m.token,
            )
            .await;
        assert_eq!(
            (s, o["lines"][0]["sku"].as_str()),
            (Status::Ok, Some("SOLD"))
        );
        t.stocked_product(&m, "SOLD", 150, 0, None).await;
        let (_, list) = t.get(&format!("{API}/products"), &m.token).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
    }
}
