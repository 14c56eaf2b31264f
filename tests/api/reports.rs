//! The daily report equals direct SQL sums over the merchant's local day,
//! across midnight and a DST change, on every tier.

use diesel::{PgConnection, RunQueryDsl};
use rocket::http::Status;
use serde_json::json;
use uuid::Uuid;

use crate::common::{API, TIERS, TestApp, api, count};
use posd::auth::Role;

/// 25 October 2026: clocks go back in Paris, so the day lasts 25 hours.
const DAY: &str = "2026-10-25";

fn at(conn: &mut PgConnection, table: &str, id: &str, local: &str) {
    diesel::sql_query(format!(
        "UPDATE {table} SET created_at = TIMESTAMP '{local}' AT TIME ZONE 'Europe/Paris' WHERE id = '{id}'"
    ))
    .execute(conn)
    .unwrap();
}

fn sum(conn: &mut PgConnection, expr: &str, from: &str, filter: &str) -> i64 {
    count(
        conn,
        &format!(
            "SELECT coalesce({expr}, 0)::bigint AS n FROM {from}
              WHERE (created_at AT TIME ZONE 'Europe/Paris')::date = DATE '{DAY}' {filter}"
        ),
    )
    .unwrap()
}

#[rocket::async_test]
async fn daily_report_equals_the_sum_of_its_orders() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let m = t.merchant(&format!("rep-{}", tier.as_str()), tier).await;
        let other = t
            .merchant(&format!("rep-other-{}", tier.as_str()), tier)
            .await;
        let a = t.stocked_product(&m, "A", 1000, 2000, None).await;
        let b = t.stocked_product(&m, "B", 550, 550, None).await;
        let order = |lines: serde_json::Value, payments: serde_json::Value| {
            let t = &t;
            let token = m.token.clone();
            async move {
                let (s, o, _) = t
                    .post_idem(
                        api!("/orders"),
                        &token,
                        &Uuid::new_v4().to_string(),
                        json!({ "lines": lines, "payments": payments }),
                    )
                    .await;
                assert_eq!(s, Status::Created, "{o}");
                o["id"].as_str().unwrap().to_string()
            }
        };
        // A = 1000 + 20% = 1200; B = 550 + 5.5% = 580 (30.25 → 30); 2 × B = 1161 (60.5 → 61)
        let before = order(
            json!([{ "productId": a, "quantity": 1 }]),
            json!([{ "method": "card", "amountMinor": 1200 }]),
        )
        .await;
        let early = order(
            json!([{ "productId": b, "quantity": 2 }]),
            json!([{ "method": "card", "amountMinor": 1161 }]),
        )
        .await;
        let noon = order(
            json!([{ "productId": a, "quantity": 3, "discountMinor": 300 }, { "productId": b, "quantity": 1 }]),
            json!([{ "method": "cash", "amountMinor": 5000 }]),
        )
        .await;
        let late = order(
            json!([{ "productId": a, "quantity": 1 }]),
            json!([{ "method": "card", "amountMinor": 700 }, { "method": "cash", "amountMinor": 1000 }]),
        )
        .await;
        let after = order(
            json!([{ "productId": b, "quantity": 1 }]),
            json!([{ "method": "cash", "amountMinor": 580 }]),
        )
        .await;
        let voided = order(
            json!([{ "productId": a, "quantity": 5 }]),
            json!([{ "method": "card", "amountMinor": 6000 }]),
        )
        .await;
        let (s, _, _) = t
            .post_idem(
                &format!("{API}/orders/{voided}/void"),
                &m.token,
                "v",
                json!(null),
            )
            .await;
        assert_eq!(s, Status::Ok);
        let refund = |id: String, body: serde_json::Value| {
            let t = &t;
            let token = m.token.clone();
            async move {
                let (s, r, _) = t
                    .post_idem(
                        &format!("{API}/orders/{id}/refunds"),
                        &token,
                        &Uuid::new_v4().to_string(),
                        body,
                    )
                    .await;
                assert_eq!(s, Status::Created, "{r}");
                r["refund"]["id"].as_str().unwrap().to_string()
            }
        };
        let r_before = refund(before.clone(), json!({ "amountMinor": 200 })).await;
        let r_noon = refund(
            noon.clone(),
            json!({ "lines": [{ "lineNo": 1, "quantity": 1 }] }),
        )
        .await;
        let r_next = refund(
            early.clone(),
            json!({ "amountMinor": 580, "method": "cash" }),
        )
        .await;

        let (mut conn, _) = t.data_conn(&m);
        for (id, local) in [
            (&before, "2026-10-24 23:30"),
            (&early, "2026-10-25 00:30"),
            (&noon, "2026-10-25 12:00"),
            (&late, "2026-10-25 23:59"),
            (&after, "2026-10-26 00:10"),
            (&voided, "2026-10-25 15:00"),
        ] {
            at(&mut conn, "orders", id, local);
        }
        at(&mut conn, "refunds", &r_before, "2026-10-25 01:00");
        at(&mut conn, "refunds", &r_noon, "2026-10-25 18:00");
        at(&mut conn, "refunds", &r_next, "2026-10-26 00:05");

        let (s, r) = t
            .get(&format!("{API}/reports/daily?date={DAY}"), &m.token)
            .await;
        assert_eq!(s, Status::Ok, "{r}");
        let live = "AND status <> 'voided'";
        assert_eq!(r["orderCount"].as_i64(), Some(3));
        assert_eq!(
            r["orderCount"].as_i64(),
            Some(sum(&mut conn, "count(*)", "orders", live))
        );
        assert_eq!(r["voidedCount"], 1);
        assert_eq!(
            r["grossSalesMinor"].as_i64(),
            Some(sum(&mut conn, "sum(gross_minor)", "orders", live))
        );
        assert_eq!(
            r["discountsMinor"].as_i64(),
            Some(sum(&mut conn, "sum(discount_minor)", "orders", live))
        );
        assert_eq!(r["discountsMinor"], 300);
        assert_eq!(
            r["taxMinor"].as_i64(),
            Some(sum(&mut conn, "sum(tax_minor)", "orders", live))
        );
        let sales = sum(&mut conn, "sum(total_minor)", "orders", live);
        assert_eq!(sales, 1161 + (2700 + 540 + 580) + 1200);
        assert_eq!(r["salesMinor"].as_i64(), Some(sales));
        let refunds = sum(&mut conn, "sum(amount_minor)", "refunds", "");
        assert_eq!(refunds, 200 + 1080);
        assert_eq!(r["refundsMinor"].as_i64(), Some(refunds));
        assert_eq!(r["netMinor"].as_i64(), Some(sales - refunds));
        for method in ["card", "cash"] {
            let paid = count(
                &mut conn,
                &format!(
                    "SELECT coalesce(sum(p.amount_minor), 0)::bigint AS n FROM payments p JOIN orders o ON o.id = p.order_id
                      WHERE p.method = '{method}' AND o.status <> 'voided'
                        AND (o.created_at AT TIME ZONE 'Europe/Paris')::date = DATE '{DAY}'"
                ),
            )
            .unwrap();
            assert_eq!(
                r["paymentsByMethod"][method].as_i64().unwrap_or(0),
                paid,
                "{method}"
            );
        }
        let by_method: i64 = r["paymentsByMethod"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(by_method, sales, "payments add up to the sales");
        // The day is 25 hours long in Paris.
        let from = chrono::DateTime::parse_from_rfc3339(r["from"].as_str().unwrap()).unwrap();
        let to = chrono::DateTime::parse_from_rfc3339(r["to"].as_str().unwrap()).unwrap();
        assert_eq!((to - from).num_hours(), 25);

        // Managers only; bad dates are 422; another merchant sees none of it.
        let (s, _) = t
            .get(
                &format!("{API}/reports/daily?date={DAY}"),
                &t.staff_token(m.id, Role::Cashier),
            )
            .await;
        assert_eq!(s, Status::Forbidden);
        let (s, e) = t
            .get(api!("/reports/daily?date=25/10/2026"), &m.token)
            .await;
        assert_eq!(s, Status::UnprocessableEntity, "{e}");
        let (s, theirs) = t
            .get(&format!("{API}/reports/daily?date={DAY}"), &other.token)
            .await;
        assert_eq!(
            (
                s,
                theirs["orderCount"].as_i64(),
                theirs["salesMinor"].as_i64()
            ),
            (Status::Ok, Some(0), Some(0))
        );
    }
}
