//! Hand-written statements stay prepared, unlike `diesel::sql_query`, and
//! the write paths keep to their round trips.

use std::time::Duration;

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Text},
};
use posd::db::statement::statement;
use rocket::http::Status;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::{
    common::{Server, TIERS, TestApp, TestDb, api, count},
    servers::Relay,
};

#[derive(QueryableByName)]
struct Echo {
    #[diesel(sql_type = Text)]
    word: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[test]
fn a_statement_is_prepared_once_per_connection() {
    let db = TestDb::new();
    let mut conn = db.app_role();
    for (word, n) in [("one", 1), ("two", 2), ("three", 3)] {
        let echo: Echo = statement("SELECT $1 AS word, $2 + $2 AS n /* prepared-check */")
            .bind::<Text, _>(word)
            .bind::<BigInt, _>(n)
            .get_result(&mut conn)
            .unwrap();
        assert_eq!((echo.word.as_str(), echo.n), (word, 2 * n));
        diesel::sql_query("SELECT 1 /* unprepared-check */")
            .execute(&mut conn)
            .unwrap();
    }
    let mut prepared = |marker: &str| {
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE '%{marker}%' AND statement NOT LIKE '%pg_prepared_statements%'"
            ),
        )
        .unwrap()
    };
    assert_eq!(
        prepared("prepared-check"),
        1,
        "one prepared statement, run three times"
    );
    assert_eq!(
        prepared("unprepared-check"),
        0,
        "sql_query is never prepared"
    );
}

const ORDERS: &str = api!("/orders");
const OFFLINE: &str = api!("/offline-bills");
const ADJUST: &str = api!("/inventory/adjustments");
const N: u64 = 10;

/// The round trips to the database per write on every tier, counted on the
/// wire by a relay between posd and PostgreSQL, each call of the tenant
/// functions a transaction of its own (no `BEGIN`, no `COMMIT`): an order
/// of known products is one (the write), a refund, a void and a stock
/// adjustment two (a read and a write); an order after its product changed
/// three (a write found stale, a read, a write). An offline batch is
/// `BEGIN` with the binding, two per bill and `COMMIT`. A change that sends
/// more fails here.
#[rocket::async_test]
async fn writes_take_one_or_two_round_trips_on_every_tier() {
    let relay = Relay::start();
    let server = Server::get();
    let (app_url, owner_url) = (
        relay.url(&server.app_url("postgres")),
        relay.url(&server.owner_url("postgres")),
    );
    let t = TestApp::with_config(move |s| {
        // Only requests talk to the database during the count.
        s.usage_flush_interval = Duration::from_secs(3600);
        let mut u = url::Url::parse(&app_url).unwrap();
        u.set_path(
            url::Url::parse(s.app_database_url.expose_secret())
                .unwrap()
                .path(),
        );
        s.app_database_url = SecretString::from(u.to_string());
        s.dedicated_server_url = SecretString::from(owner_url);
    })
    .await;
    for tier in TIERS {
        let m = t.merchant(&format!("trips-{}", tier.as_str()), tier).await;
        let products = [
            t.stocked_product(&m, "A", 500, 0, Some(1000)).await,
            t.stocked_product(&m, "B", 300, 0, Some(1000)).await,
            t.stocked_product(&m, "C", 200, 0, Some(1000)).await,
        ];
        let body = json!({
            "lines": products.iter().map(|p| json!({ "productId": p, "quantity": 1 })).collect::<Vec<_>>(),
            "payments": [{ "method": "card", "amountMinor": 1000 }],
        });
        // Warm: pools, caches, the staff user's and the context's lookups.
        let (s, first, _) = t.post_idem(ORDERS, &m.token, &key(), body.clone()).await;
        assert_eq!(s, Status::Created, "{first}");

        let before = relay.round_trips();
        let mut last = String::new();
        for _ in 0..N {
            let (s, b, _) = t.post_idem(ORDERS, &m.token, &key(), body.clone()).await;
            assert_eq!(s, Status::Created, "{b}");
            last = b["id"].as_str().unwrap().to_string();
        }
        let orders = relay.round_trips() - before;
        // A connection idle for half a second is checked (`SELECT 1`) when
        // taken from the pool: at most one such check in the run.
        assert!(
            (N..=N + 1).contains(&orders),
            "{tier}: {orders} round trips for {N} orders (1 each expected)"
        );
        // Refunds, a void and stock adjustments: two each as well (after a
        // first refund, which warms the manager's lookups).
        let order = first["id"].as_str().unwrap().to_string();
        let refunds = format!("{ORDERS}/{order}/refunds");
        let one = json!({ "amountMinor": 1 });
        let (s, b, _) = t.post_idem(&refunds, &m.token, &key(), one.clone()).await;
        assert_eq!(s, Status::Created, "{b}");
        let before = relay.round_trips();
        for _ in 0..N {
            let (s, b, _) = t.post_idem(&refunds, &m.token, &key(), one.clone()).await;
            assert_eq!(s, Status::Created, "{b}");
        }
        let (s, b, _) = t
            .post_idem(
                &format!("{ORDERS}/{order}/void"),
                &m.token,
                &key(),
                json!({}),
            )
            .await;
        assert_eq!(s, Status::Conflict, "a refunded order is not voided: {b}");
        let (s, b, _) = t
            .post_idem(
                &format!("{ORDERS}/{last}/void"),
                &m.token,
                &key(),
                json!({}),
            )
            .await;
        assert_eq!(s, Status::Ok, "{b}");
        for _ in 0..N {
            let (s, b) = t
                .post(
                    ADJUST,
                    &m.token,
                    json!({ "reason": "receive", "productId": products[0], "delta": 1 }),
                )
                .await;
            assert_eq!(s, Status::Created, "{b}");
        }
        let changes = relay.round_trips() - before;
        // N refunds, a refused void (its read only), a void, N adjustments.
        assert!(
            (4 * N + 3..=4 * N + 4).contains(&changes),
            "{tier}: {changes} round trips for {N} refunds, two voids and {N} adjustments"
        );

        // An offline batch: BEGIN with the binding, two per bill, COMMIT.
        let bills: Vec<Value> = (0..N)
            .map(|_| {
                let mut b = body.clone();
                b["clientId"] = json!(uuid::Uuid::new_v4());
                b["createdAt"] = json!(chrono::Utc::now().to_rfc3339());
                b
            })
            .collect();
        let before = relay.round_trips();
        let (s, b) = t.post(OFFLINE, &m.token, json!({ "bills": bills })).await;
        assert_eq!((s, b["created"].as_u64()), (Status::Ok, Some(N)), "{b}");
        let offline = relay.round_trips() - before;
        assert!(
            (2 * N + 2..=2 * N + 3).contains(&offline),
            "{tier}: {offline} round trips for a batch of {N} bills"
        );

        let (s, b) = t
            .patch(
                &format!("{}/{}", api!("/products"), products[2]),
                &m.token,
                json!({ "priceMinor": 100 }),
            )
            .await;
        assert_eq!(s, Status::Ok, "{b}");
        let before = relay.round_trips();
        // Cash, so that the payment settles the old price and the new one:
        // the sale is priced from the known products and only the write
        // finds them changed.
        let mut cheaper = body.clone();
        cheaper["payments"] = json!([{ "method": "cash", "amountMinor": 1000 }]);
        let (s, b, _) = t.post_idem(ORDERS, &m.token, &key(), cheaper).await;
        assert_eq!(
            (s, b["totalMinor"].as_i64()),
            (Status::Created, Some(900)),
            "{b}"
        );
        let repriced = relay.round_trips() - before;
        assert!(
            (3..=4).contains(&repriced),
            "{tier}: {repriced} round trips for an order after a price change (3 expected)"
        );
    }
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}
