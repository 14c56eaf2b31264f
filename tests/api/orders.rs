//! Orders on every tier: server-side totals, split tender, stock,
//! idempotency under concurrency, refunds and voids.

use futures_util::future::join_all;
use rocket::http::Status;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{
    TIERS, TestApp, api, assert_error, assert_error_about, count, stock_and_movements,
};
use posd::auth::Role;

const ORDERS: &str = api!("/orders");

fn key() -> String {
    Uuid::new_v4().to_string()
}

#[rocket::async_test]
async fn orders_on_every_tier() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("ord-{}", tier.as_str()), tier).await;
        let other = t
            .merchant(&format!("ord-other-{}", tier.as_str()), tier)
            .await;
        let cashier = t.staff_token(m.id, Role::Cashier);
        // The sale gives a discount: a manager's permission.
        let manager = t.staff_token(m.id, Role::Manager);
        let coffee = t.stocked_product(&m, "COFFEE", 350, 1000, Some(10)).await;
        let muffin = t.stocked_product(&m, "MUFFIN", 299, 825, None).await;
        let (_, cust) = t
            .post(api!("/customers"), &cashier, json!({ "name": "Walk In" }))
            .await;

        // 2 × 3.50 at 10% = 7.00 + 0.70; 3 × 2.99 − 0.50 at 8.25% = 8.47 + 0.70 (0.698775 rounds up).
        let body = json!({
            "lines": [
                { "productId": coffee, "quantity": 2 },
                { "productId": muffin, "quantity": 3, "discountMinor": 50 }
            ],
            "payments": [
                { "method": "card", "amountMinor": 1000, "reference": "auth-123" },
                { "method": "cash", "amountMinor": 2000 }
            ],
            "customerId": cust["id"], "note": "table 4"
        });
        let (s, o, replayed) = t.post_idem(ORDERS, &manager, "order-1", body.clone()).await;
        assert_eq!(s, Status::Created, "{o}");
        assert!(!replayed);
        assert_eq!(o["grossMinor"], 1597);
        assert_eq!(o["discountMinor"], 50);
        assert_eq!(o["taxMinor"], 70 + 70);
        assert_eq!(o["totalMinor"], 1687);
        assert_eq!(o["tenderedMinor"], 3000);
        assert_eq!(o["changeMinor"], 1313);
        assert_eq!(o["currency"], "EUR");
        assert_eq!(o["status"], "completed");
        let applied: Vec<i64> = o["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["amountMinor"].as_i64().unwrap())
            .collect();
        assert_eq!(applied, [1000, 687], "change comes out of the cash");
        let id = o["id"].as_str().unwrap().to_string();

        // The same key and body: the same answer, marked as a replay, nothing new.
        let (s, again, replayed) = t.post_idem(ORDERS, &manager, "order-1", body.clone()).await;
        assert_eq!((s, replayed), (Status::Created, true));
        assert_eq!(again, o);
        // The same key with another body: 422, nothing new.
        let mut changed = body.clone();
        changed["note"] = json!("table 5");
        let (s, e, _) = t.post_idem(ORDERS, &manager, "order-1", changed).await;
        assert_error(
            (s, &e),
            Status::UnprocessableEntity,
            "idempotency_key_reused",
        );
        // Keys are per merchant: the other merchant's "order-1" is its own.
        let theirs = t.stocked_product(&other, "TEA", 100, 0, None).await;
        let (s, _, replayed) = t
            .post_idem(ORDERS, &other.token, "order-1", json!({ "lines": [{ "productId": theirs, "quantity": 1 }], "payments": [{ "method": "cash", "amountMinor": 100 }] }))
            .await;
        assert_eq!((s, replayed), (Status::Created, false));

        let (s, got) = t.get(&format!("{ORDERS}/{id}"), &cashier).await;
        assert_eq!(s, Status::Ok);
        assert_eq!(got["lines"].as_array().unwrap().len(), 2);
        assert_eq!(got["customerId"], cust["id"]);
        let (_, list) = t
            .get(&format!("{ORDERS}?status=completed&limit=10"), &cashier)
            .await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);

        let (mut conn, _) = t.data_conn(&m);
        assert_eq!(stock_and_movements(&mut conn, &coffee), (8, 8));
        assert_eq!(
            count(
                &mut conn,
                &format!(
                    "SELECT count(*) AS n FROM orders WHERE merchant_id = '{}'",
                    m.id
                )
            )
            .unwrap(),
            1
        );

        // Cross-tenant: another merchant cannot read, list, refund or void it,
        // nor sell this merchant's product or use its customer.
        let (s, _) = t.get(&format!("{ORDERS}/{id}"), &other.token).await;
        assert_eq!(s, Status::NotFound);
        let (_, theirs_list) = t.get(ORDERS, &other.token).await;
        assert!(
            theirs_list["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["id"] != id.as_str())
        );
        let (s, _, _) = t
            .post_idem(
                &format!("{ORDERS}/{id}/refunds"),
                &other.token,
                &key(),
                json!({ "amountMinor": 100 }),
            )
            .await;
        assert_eq!(s, Status::NotFound);
        let (s, _, _) = t
            .post_idem(
                &format!("{ORDERS}/{id}/void"),
                &other.token,
                &key(),
                json!(null),
            )
            .await;
        assert_eq!(s, Status::NotFound);
        let (s, e, _) = t
            .post_idem(ORDERS, &other.token, &key(), json!({ "lines": [{ "productId": coffee, "quantity": 1 }], "payments": [{ "method": "cash", "amountMinor": 1000 }] }))
            .await;
        assert_error((s, &e), Status::UnprocessableEntity, "unknown_product");
        let (s, e, _) = t
            .post_idem(ORDERS, &other.token, &key(), json!({ "lines": [{ "productId": theirs, "quantity": 1 }], "payments": [{ "method": "cash", "amountMinor": 100 }], "customerId": cust["id"] }))
            .await;
        assert_error((s, &e), Status::UnprocessableEntity, "unknown_customer");
        assert_eq!(stock_and_movements(&mut conn, &coffee), (8, 8), "untouched");
    }
}

#[rocket::async_test]
async fn bad_orders_are_refused_and_change_nothing() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("bad-{}", tier.as_str()), tier).await;
        let cashier = t.staff_token(m.id, Role::Cashier);
        let p = t.stocked_product(&m, "ONE", 1000, 0, Some(1)).await;
        let cash = |n: i64| json!([{ "method": "cash", "amountMinor": n }]);
        let cases: Vec<(Value, Status, &str, &str)> = vec![
            (
                json!({ "lines": [], "payments": cash(1) }),
                Status::UnprocessableEntity,
                "validation_failed",
                "lines",
            ),
            (
                json!({ "lines": [{ "productId": p, "quantity": 0 }], "payments": cash(1) }),
                Status::UnprocessableEntity,
                "validation_failed",
                "lines[0].quantity",
            ),
            (
                json!({ "lines": [{ "productId": p, "quantity": "two" }] }),
                Status::UnprocessableEntity,
                "invalid_body",
                "lines[0].quantity",
            ),
            (
                json!({ "lines": [{ "productId": p, "quantity": 1 }], "payments": [{ "method": "iou", "amountMinor": 1000 }] }),
                Status::UnprocessableEntity,
                "invalid_body",
                "payments[0].method",
            ),
            (
                json!({ "lines": [{ "productId": p, "quantity": 1 }], "payments": cash(999) }),
                Status::UnprocessableEntity,
                "payment_short",
                "payments",
            ),
            (
                json!({ "lines": [{ "productId": p, "quantity": 1 }], "payments": [{ "method": "card", "amountMinor": 1500 }] }),
                Status::UnprocessableEntity,
                "overpaid",
                "payments",
            ),
            (
                json!({ "lines": [{ "productId": p, "quantity": 1, "discountMinor": 1001 }], "payments": cash(0) }),
                Status::UnprocessableEntity,
                "validation_failed",
                "payments[0].amountMinor",
            ),
            (
                // A discount is a price change: a cashier may not give one.
                json!({ "lines": [{ "productId": p, "quantity": 3, "discountMinor": 1500 }], "payments": [] }),
                Status::Forbidden,
                "price_override_forbidden",
                "lines[0].discountMinor",
            ),
            (
                json!({ "lines": [{ "productId": p, "quantity": 1, "unitPriceMinor": 1 }], "payments": cash(1) }),
                Status::Forbidden,
                "price_override_forbidden",
                "unitPriceMinor",
            ),
            (
                json!({ "lines": [{ "productId": Uuid::new_v4(), "quantity": 1 }], "payments": cash(1) }),
                Status::UnprocessableEntity,
                "unknown_product",
                "lines[0].productId",
            ),
            (
                json!({ "lines": [{ "productId": p, "quantity": 2 }], "payments": cash(2000) }),
                Status::Conflict,
                "insufficient_stock",
                "ONE",
            ),
        ];
        for (body, status, code, field) in cases {
            let (s, e, _) = t
                .post_idem(ORDERS, &cashier, "same-key", body.clone())
                .await;
            assert_error_about(&body, (s, &e), status, code);
            assert!(
                e["error"]["message"].as_str().unwrap().contains(field),
                "{body} -> {e}"
            );
        }
        for (query, field) in [
            ("status=lost", "status"),
            ("from=yesterday", "from"),
            ("to=2026-13-01T00:00:00Z", "to"),
            ("limit=0", "limit"),
            ("cursor=x", "cursor"),
        ] {
            let (s, e) = t.get(&format!("{ORDERS}?{query}"), &cashier).await;
            assert_eq!(s, Status::UnprocessableEntity, "{query} -> {e}");
            assert!(
                e["error"]["message"].as_str().unwrap().starts_with(field),
                "{query} -> {e}"
            );
        }
        // No key at all.
        let (s, e) = t
            .post(
                ORDERS,
                &cashier,
                json!({ "lines": [{ "productId": p, "quantity": 1 }], "payments": cash(1000) }),
            )
            .await;
        assert_error(
            (s, &e),
            Status::UnprocessableEntity,
            "idempotency_key_required",
        );
        // Nothing was written, and a failed request left its key free.
        let (mut conn, _) = t.data_conn(&m);
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM orders").unwrap(),
            0
        );
        assert_eq!(stock_and_movements(&mut conn, &p), (1, 1));
        let (s, _, replayed) = t
            .post_idem(
                ORDERS,
                &cashier,
                "same-key",
                json!({ "lines": [{ "productId": p, "quantity": 1 }], "payments": cash(1000) }),
            )
            .await;
        assert_eq!((s, replayed), (Status::Created, false));
        // A manager may sell at another price.
        let (s, o, _) = t
            .post_idem(ORDERS, &m.token, &key(), json!({ "lines": [{ "productId": t.stocked_product(&m, "TWO", 500, 0, None).await, "quantity": 1, "unitPriceMinor": 400 }], "payments": cash(400) }))
            .await;
        assert_eq!((s, o["totalMinor"].as_i64()), (Status::Created, Some(400)));
        // Even a manager's discount cannot exceed the line.
        let (s, e, _) = t
            .post_idem(
                ORDERS,
                &m.token,
                &key(),
                json!({ "lines": [{ "productId": p, "quantity": 1, "discountMinor": 1001 }] }),
            )
            .await;
        assert_eq!(s, Status::UnprocessableEntity, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("lines[0].discountMinor"),
            "{e}"
        );
    }
}

#[rocket::async_test]
async fn one_key_sent_twenty_times_at_once_makes_one_order() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("idem-{}", tier.as_str()), tier).await;
        let p = t.stocked_product(&m, "HOT", 500, 0, Some(100)).await;
        let body = json!({ "lines": [{ "productId": p, "quantity": 1 }], "payments": [{ "method": "card", "amountMinor": 500 }] });
        let answers =
            join_all((0..20).map(|_| t.post_idem(ORDERS, &m.token, "the-key", body.clone()))).await;
        let created: Vec<&Value> = answers
            .iter()
            .filter(|(s, _, r)| *s == Status::Created && !r)
            .map(|(_, b, _)| b)
            .collect();
        assert_eq!(created.len(), 1, "{answers:?}");
        for (s, b, replayed) in &answers {
            if *s == Status::Created {
                assert_eq!(
                    b["id"], created[0]["id"],
                    "a replay is the original ({replayed})"
                );
            } else {
                assert_error((*s, b), Status::Conflict, "idempotency_key_in_use");
            }
        }
        let (mut conn, _) = t.data_conn(&m);
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM orders").unwrap(),
            1
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM payments").unwrap(),
            1
        );
        assert_eq!(stock_and_movements(&mut conn, &p), (99, 99));
    }
}

#[rocket::async_test]
async fn fifty_buyers_for_ten_units() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("rush-{}", tier.as_str()), tier).await;
        let p = t.stocked_product(&m, "RARE", 100, 0, Some(10)).await;
        let body = json!({ "lines": [{ "productId": p, "quantity": 1 }], "payments": [{ "method": "cash", "amountMinor": 100 }] });
        let keys: Vec<String> = (0..50).map(|_| key()).collect();
        let answers = join_all(
            keys.iter()
                .map(|k| t.post_idem(ORDERS, &m.token, k, body.clone())),
        )
        .await;
        let ok = answers
            .iter()
            .filter(|(s, _, _)| *s == Status::Created)
            .count();
        let sold_out = answers
            .iter()
            .filter(|(s, b, _)| {
                *s == Status::Conflict && b["error"]["code"] == "insufficient_stock"
            })
            .count();
        assert_eq!((ok, sold_out), (10, 40), "{answers:?}");
        let (mut conn, _) = t.data_conn(&m);
        assert_eq!(stock_and_movements(&mut conn, &p), (0, 0));
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM orders").unwrap(),
            10
        );
    }
}

#[rocket::async_test]
async fn refunds_never_exceed_what_was_paid() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("ref-{}", tier.as_str()), tier).await;
        let cashier = t.staff_token(m.id, Role::Cashier);
        let p = t.stocked_product(&m, "MUG", 1000, 0, Some(5)).await;
        // 3 mugs for 30.00, no tax.
        let o = t.sell(&m, &p, 3, 3000).await;
        let id = o["id"].as_str().unwrap();
        let refunds = format!("{ORDERS}/{id}/refunds");

        let (s, _, _) = t
            .post_idem(&refunds, &cashier, &key(), json!({ "amountMinor": 100 }))
            .await;
        assert_eq!(s, Status::Forbidden, "cashiers cannot refund");
        let (s, e, _) = t
            .post_idem(
                &refunds,
                &m.token,
                &key(),
                json!({ "lines": [{ "lineNo": 1, "quantity": 4 }] }),
            )
            .await;
        assert_error(
            (s, &e),
            Status::UnprocessableEntity,
            "refund_exceeds_quantity",
        );
        let (s, e, _) = t
            .post_idem(&refunds, &m.token, &key(), json!({ "amountMinor": 3001 }))
            .await;
        assert_error((s, &e), Status::UnprocessableEntity, "refund_exceeds_paid");
        let (s, e, _) = t
            .post_idem(
                &refunds,
                &m.token,
                &key(),
                json!({ "amountMinor": 5, "lines": [{ "lineNo": 1, "quantity": 1 }] }),
            )
            .await;
        assert_eq!(s, Status::UnprocessableEntity, "{e}");
        let (s, e, _) = t
            .post_idem(
                &refunds,
                &m.token,
                &key(),
                json!({ "lines": [{ "lineNo": 2, "quantity": 1 }] }),
            )
            .await;
        assert_eq!(s, Status::UnprocessableEntity, "{e}");

        // One mug back on the shelf, refunded to the cash it was paid with.
        let k = key();
        let (s, r, _) = t.post_idem(&refunds, &m.token, &k, json!({ "lines": [{ "lineNo": 1, "quantity": 1 }], "restock": true, "reason": "chipped" })).await;
        assert_eq!(s, Status::Created, "{r}");
        assert_eq!(
            (
                r["refund"]["amountMinor"].as_i64(),
                r["refund"]["method"].as_str()
            ),
            (Some(1000), Some("cash"))
        );
        assert_eq!(r["order"]["status"], "partially_refunded");
        let (s, again, replayed) = t.post_idem(&refunds, &m.token, &k, json!({ "lines": [{ "lineNo": 1, "quantity": 1 }], "restock": true, "reason": "chipped" })).await;
        assert_eq!((s, replayed, &again), (Status::Created, true, &r));

        // Two refunds of 15.00 race for the 20.00 left: exactly one wins.
        let race_keys = [key(), key()];
        let race = join_all(
            race_keys
                .iter()
                .map(|k| t.post_idem(&refunds, &m.token, k, json!({ "amountMinor": 1500 }))),
        )
        .await;
        let won: Vec<_> = race
            .iter()
            .filter(|(s, _, _)| *s == Status::Created)
            .collect();
        assert_eq!(won.len(), 1, "{race:?}");
        assert!(
            race.iter()
                .any(|(s, b, _)| *s == Status::UnprocessableEntity
                    && b["error"]["code"] == "refund_exceeds_paid")
        );
        // The 5.00 left goes; then nothing more.
        let (s, r, _) = t
            .post_idem(&refunds, &m.token, &key(), json!({ "amountMinor": 500 }))
            .await;
        assert_eq!(
            (s, r["order"]["status"].as_str()),
            (Status::Created, Some("refunded"))
        );
        let (s, _, _) = t
            .post_idem(&refunds, &m.token, &key(), json!({ "amountMinor": 1 }))
            .await;
        assert_eq!(s, Status::UnprocessableEntity);

        let (mut conn, _) = t.data_conn(&m);
        let refunded = count(
            &mut conn,
            &format!("SELECT sum(amount_minor)::bigint AS n FROM refunds WHERE order_id = '{id}'"),
        )
        .unwrap();
        assert_eq!(refunded, 3000);
        assert_eq!(
            stock_and_movements(&mut conn, &p),
            (3, 3),
            "5 − 3 sold + 1 restocked"
        );
        // A refunded order cannot be voided.
        let (s, e, _) = t
            .post_idem(
                &format!("{ORDERS}/{id}/void"),
                &m.token,
                &key(),
                json!(null),
            )
            .await;
        assert_error((s, &e), Status::Conflict, "order_refunded");
    }
}

#[rocket::async_test]
async fn voids_restock_and_only_before_settlement() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("void-{}", tier.as_str()), tier).await;
        let cashier = t.staff_token(m.id, Role::Cashier);
        let p = t.stocked_product(&m, "LAMP", 2500, 0, Some(4)).await;
        let o = t.sell(&m, &p, 2, 2500 * 2).await;
        let id = o["id"].as_str().unwrap();
        let void = format!("{ORDERS}/{id}/void");
        let (s, _, _) = t.post_idem(&void, &cashier, &key(), json!(null)).await;
        assert_eq!(s, Status::Forbidden);
        let (s, v, _) = t.post_idem(&void, &m.token, "void-1", json!(null)).await;
        assert_eq!(
            (s, v["status"].as_str()),
            (Status::Ok, Some("voided")),
            "{v}"
        );
        let (s, again, replayed) = t.post_idem(&void, &m.token, "void-1", json!(null)).await;
        assert_eq!((s, replayed, &again), (Status::Ok, true, &v));
        let (s, e, _) = t.post_idem(&void, &m.token, &key(), json!(null)).await;
        assert_error((s, &e), Status::Conflict, "order_voided");
        let (mut conn, _) = t.data_conn(&m);
        assert_eq!(stock_and_movements(&mut conn, &p), (4, 4));

        // An order from an earlier business day is settled: refund it instead.
        let old = t.sell(&m, &p, 1, 2500).await;
        let old_id = old["id"].as_str().unwrap();
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!(
                "UPDATE orders SET created_at = now() - interval '2 days' WHERE id = '{old_id}'"
            )),
            &mut conn,
        )
        .unwrap();
        let (s, e, _) = t
            .post_idem(
                &format!("{ORDERS}/{old_id}/void"),
                &m.token,
                &key(),
                json!(null),
            )
            .await;
        assert_error((s, &e), Status::Conflict, "order_settled");
    }
}

#[rocket::async_test]
async fn expired_keys_and_abandoned_claims_are_taken_over() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("exp-{}", tier.as_str()), tier).await;
        let p = t.stocked_product(&m, "GUM", 100, 0, None).await;
        let body = |n: i64| json!({ "lines": [{ "productId": p, "quantity": n }], "payments": [{ "method": "cash", "amountMinor": 100 * n }] });
        let (s, first, _) = t.post_idem(ORDERS, &m.token, "k-expire", body(1)).await;
        assert_eq!(s, Status::Created);
        let (mut conn, _) = t.data_conn(&m);
        let retention = count(
            &mut conn,
            "SELECT extract(epoch FROM expires_at - locked_at)::bigint AS n FROM idempotency_keys WHERE key = 'k-expire'",
        )
        .unwrap();
        assert_eq!(retention, 24 * 3600, "the default retention is 24 h");

        // Once expired, the key is free again: another body makes a new order.
        diesel::RunQueryDsl::execute(
            diesel::sql_query("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'k-expire'"),
            &mut conn,
        )
        .unwrap();
        let (s, second, replayed) = t.post_idem(ORDERS, &m.token, "k-expire", body(2)).await;
        assert_eq!((s, replayed), (Status::Created, false), "{second}");
        assert_ne!(second["id"], first["id"]);

        // A key whose request is in flight (its advisory lock is held, here
        // by the test): 409 at once, and free again when the lock goes.
        let lock = |f: &str| {
            format!(
                "SELECT {f}(hashtextextended('{}' || ' ' || 'k-busy', 0))",
                m.id
            )
        };
        diesel::RunQueryDsl::execute(diesel::sql_query(lock("pg_advisory_lock")), &mut conn)
            .unwrap();
        let (s, e, _) = t.post_idem(ORDERS, &m.token, "k-busy", body(1)).await;
        assert_error((s, &e), Status::Conflict, "idempotency_key_in_use");
        diesel::RunQueryDsl::execute(diesel::sql_query(lock("pg_advisory_unlock")), &mut conn)
            .unwrap();
        let (s, _, replayed) = t.post_idem(ORDERS, &m.token, "k-busy", body(1)).await;
        assert_eq!((s, replayed), (Status::Created, false));

        // A claim stored without a response (as an older posd left one when
        // its process died) is taken over by the same request only.
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!(
                "INSERT INTO idempotency_keys (merchant_id, key, request_hash, locked_at, expires_at)
                 SELECT '{}', 'k-stale', request_hash, now(), now() + interval '1 day'
                   FROM idempotency_keys WHERE key = 'k-expire'",
                m.id
            )),
            &mut conn,
        )
        .unwrap();
        let (s, e, _) = t.post_idem(ORDERS, &m.token, "k-stale", body(1)).await;
        assert_error_about(
            "another body is refused",
            (s, &e),
            Status::UnprocessableEntity,
            "idempotency_key_reused",
        );
        let (s, _, replayed) = t.post_idem(ORDERS, &m.token, "k-stale", body(2)).await;
        assert_eq!((s, replayed), (Status::Created, false));
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM orders").unwrap(),
            4
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM idempotency_keys WHERE response_body IS NULL"
            )
            .unwrap(),
            0,
            "no key is left without its response"
        );
    }
}

/// Refunds of one order sent at once each land, one after the other: a
/// refund is worked out from the order as read and written only if the
/// order is still as read, so every one that lost the race reads again.
#[rocket::async_test]
async fn refunds_of_one_order_sent_at_once_all_land() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t
            .merchant(&format!("refund-race-{}", tier.as_str()), tier)
            .await;
        let p = t.stocked_product(&m, "RACE", 1000, 0, Some(10)).await;
        let (s, order, _) = t
            .post_idem(
                ORDERS,
                &m.token,
                &key(),
                json!({ "lines": [{ "productId": p, "quantity": 1 }], "payments": [{ "method": "card", "amountMinor": 1000 }] }),
            )
            .await;
        assert_eq!(s, Status::Created, "{order}");
        let refunds = format!("{ORDERS}/{}/refunds", order["id"].as_str().unwrap());
        let keys: Vec<String> = (0..12).map(|_| key()).collect();
        let answers = join_all(
            keys.iter()
                .map(|k| t.post_idem(&refunds, &m.token, k, json!({ "amountMinor": 10 }))),
        )
        .await;
        for (s, b, _) in &answers {
            assert_eq!(*s, Status::Created, "{b}");
        }
        let (mut conn, _) = t.data_conn(&m);
        let id = order["id"].as_str().unwrap();
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT refunded_minor AS n FROM orders WHERE id = '{id}'"),
            )
            .unwrap(),
            120
        );
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM refunds WHERE order_id = '{id}'"),
            )
            .unwrap(),
            12
        );
    }
}

/// A till sale whose products posd already knows is priced from memory and
/// written in one call, which checks them against the catalog: every change
/// made since (here through the same posd, which does not tell its memory)
/// is honoured, on every tier: a customer of no one's; a price, tax rate and
/// name; stock tracking turned off; the product taken off sale; deleted.
#[rocket::async_test]
async fn a_sale_from_known_products_follows_the_catalog() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("known-{}", tier.as_str()), tier).await;
        let (mut conn, _) = t.data_conn(&m);
        let p = t.stocked_product(&m, "TEA", 200, 0, Some(100)).await;
        let product = format!("{}/{p}", api!("/products"));
        let sale = json!({
            "lines": [{ "productId": p, "quantity": 1 }],
            "payments": [{ "method": "cash", "amountMinor": 1000 }],
        });
        let total = async |expected: i64| {
            let (s, o, _) = t.post_idem(ORDERS, &m.token, &key(), sale.clone()).await;
            assert_eq!(s, Status::Created, "{tier}: {o}");
            assert_eq!(o["totalMinor"], expected, "{tier}: {o}");
            o
        };
        // Read, then known.
        total(200).await;
        total(200).await;
        // A customer of no one's, with known products: refused, nothing
        // written.
        let mut stranger = sale.clone();
        stranger["customerId"] = json!(Uuid::new_v4());
        let (s, e, _) = t.post_idem(ORDERS, &m.token, &key(), stranger).await;
        assert_error_about(
            tier.as_str(),
            (s, &e),
            Status::UnprocessableEntity,
            "unknown_customer",
        );
        assert_eq!(stock_and_movements(&mut conn, &p), (98, 98), "{tier}");

        let (s, b) = t
            .patch(
                &product,
                &m.token,
                json!({ "priceMinor": 250, "taxRateBps": 1000, "name": "Green tea" }),
            )
            .await;
        assert_eq!(s, Status::Ok, "{b}");
        let o = total(275).await;
        assert_eq!(o["lines"][0]["name"], "Green tea", "{tier}");
        assert_eq!(stock_and_movements(&mut conn, &p), (97, 97), "{tier}");

        let (s, b) = t
            .patch(&product, &m.token, json!({ "trackStock": false }))
            .await;
        assert_eq!(s, Status::Ok, "{b}");
        total(275).await;
        assert_eq!(
            stock_and_movements(&mut conn, &p),
            (97, 97),
            "{tier}: no stock taken once untracked"
        );

        let orders = count(&mut conn, "SELECT count(*) AS n FROM orders").unwrap();
        let (s, b) = t
            .patch(&product, &m.token, json!({ "active": false }))
            .await;
        assert_eq!(s, Status::Ok, "{b}");
        let (s, e, _) = t.post_idem(ORDERS, &m.token, &key(), sale.clone()).await;
        assert_error_about(
            tier.as_str(),
            (s, &e),
            Status::UnprocessableEntity,
            "product_inactive",
        );
        let (s, b) = t.delete(&product, &m.token).await;
        assert!(s.class().is_success(), "{s}: {b}");
        let (s, e, _) = t.post_idem(ORDERS, &m.token, &key(), sale.clone()).await;
        assert_error_about(
            tier.as_str(),
            (s, &e),
            Status::UnprocessableEntity,
            "unknown_product",
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM orders").unwrap(),
            orders,
            "{tier}: nothing written"
        );
    }
}
