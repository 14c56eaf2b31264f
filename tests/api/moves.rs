//! Live tier moves: every direction while a client keeps trading, writes
//! held across the flip, faults after every phase, a driver that dies,
//! cancel, one move at a time, there and back.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use diesel::{
    Connection, PgConnection, RunQueryDsl, connection::SimpleConnection, sql_types::Text,
};
use posd::{config::Settings, db::ids::MerchantId};
use rocket::http::{Method, Status};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, Merchant, Server, TestApp, api, assert_error, count};

/// Every data-plane table and the columns that identify a row in it.
const KEYS: &[(&str, &str)] = &[
    ("categories", "id"),
    ("products", "id"),
    ("product_versions", "product_id, valid_from"),
    ("inventory_levels", "product_id"),
    ("stock_movements", "id"),
    ("customers", "id"),
    ("orders", "id"),
    ("order_lines", "order_id, line_no"),
    ("payments", "id"),
    ("refunds", "id"),
    ("refund_lines", "refund_id, line_no"),
    ("idempotency_keys", "key"),
    ("audit_events", "id"),
];

/// Tables whose rows are never changed once written: their content must
/// arrive as it was.
const APPEND_ONLY: &[&str] = &[
    "product_versions",
    "stock_movements",
    "payments",
    "refunds",
    "refund_lines",
    "audit_events",
];

/// Small TTLs, so that a move's retire step (which waits for every cached
/// placement to expire) is quick.
pub(crate) fn quick(s: &mut Settings) {
    s.placement_cache_ttl = Duration::from_millis(300);
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    line: String,
}

/// A merchant's rows, per table, by key, as text.
type Content = BTreeMap<&'static str, BTreeMap<String, String>>;

fn connect(db: &str) -> PgConnection {
    PgConnection::establish(&Server::get().superuser_url(db)).expect("superuser connection")
}

/// What `schema` of database `db` holds for merchant `m` (as a superuser).
fn content(db: &str, schema: &str, m: MerchantId) -> Content {
    let mut conn = connect(db);
    KEYS.iter()
        .map(|(table, key)| {
            let rows: Vec<Row> = diesel::sql_query(format!(
                "SELECT ({key})::text AS key, t::text AS line FROM \"{schema}\".{table} t \
                 WHERE merchant_id = '{m}'"
            ))
            .load(&mut conn)
            .unwrap_or_else(|e| panic!("read {schema}.{table} in {db}: {e}"));
            (*table, rows.into_iter().map(|r| (r.key, r.line)).collect())
        })
        .collect()
}

#[derive(diesel::QueryableByName)]
struct Location {
    #[diesel(sql_type = Text)]
    tier: String,
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    database: Option<String>,
}

/// Where the control plane places `m`: tier, database, schema.
pub(crate) fn location(t: &TestApp, m: MerchantId) -> (String, String, String) {
    let l: Location = diesel::sql_query(format!(
        "SELECT m.tier, m.schema_name AS schema, d.database_name AS database
           FROM merchants m LEFT JOIN tenant_databases d ON d.id = m.database_id
          WHERE m.id = '{m}'"
    ))
    .get_result(&mut t.db.owner())
    .expect("placement");
    (
        l.tier,
        l.database.unwrap_or_else(|| t.db.name.clone()),
        l.schema,
    )
}

fn admin_path(m: &Merchant, rest: &str) -> String {
    format!("{API}/admin/tenants/{}{rest}", m.id)
}

/// Starts a move (202) and answers the move.
async fn start_move(t: &TestApp, m: &Merchant, body: Value) -> Value {
    let (s, started) = t
        .post(&admin_path(m, "/move"), &t.admin_token(), body)
        .await;
    assert_eq!(s, Status::Accepted, "{started}");
    started["move"].clone()
}

/// Waits until move `run` satisfies `done`; answers it.
async fn wait_move(t: &TestApp, m: &Merchant, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (s, body) = t
            .get(&admin_path(m, &format!("/moves/{run}")), &t.admin_token())
            .await;
        assert_eq!(s, Status::Ok, "{body}");
        if done(&body["move"]) {
            return body["move"].clone();
        }
        assert!(Instant::now() < deadline, "move {run} stuck: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ended(mv: &Value) -> bool {
    !matches!(mv["status"].as_str(), Some("running" | "cancelling"))
}

/// Moves `m` to `tier` and waits for the move to end; answers the move.
pub(crate) async fn move_to(t: &TestApp, m: &Merchant, body: Value) -> Value {
    let mv = start_move(t, m, body).await;
    let run = mv["id"].as_str().expect("run id").to_string();
    wait_move(t, m, &run, ended).await
}

/// What a client was answered while it traded.
#[derive(Default, Debug)]
struct Record {
    /// Orders answered 201 (id, total).
    orders: Vec<(String, i64)>,
    refunds: Vec<String>,
    bills: Vec<String>,
    /// The category made last and not deleted yet.
    categories: Vec<String>,
    /// 503s with `Retry-After`, retried.
    retried: u32,
    /// Anything else that was not a success.
    errors: Vec<String>,
}

/// POSTs with an `Idempotency-Key`, retrying the same request while the
/// answer is a 503 with `Retry-After` (anything else is the answer).
async fn post_retrying(
    t: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: &Value,
    record: &mut Record,
) -> (Status, Value) {
    let headers = [("Idempotency-Key", key.to_string())];
    send_retrying(t, Method::Post, path, token, Some(body), &headers, record).await
}

/// Sends a request, again while the answer is a 503 with `Retry-After`.
async fn send_retrying(
    t: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
    headers: &[(&'static str, String)],
    record: &mut Record,
) -> (Status, Value) {
    for _ in 0..200 {
        let res = t
            .send(method, path, Some(token), body.cloned(), headers)
            .await;
        let status = res.status();
        let retry_after = res.headers().get_one("Retry-After").map(str::to_string);
        let text = res.into_string().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == Status::ServiceUnavailable && retry_after.is_some() {
            record.retried += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        return (status, value);
    }
    panic!("{path} kept answering 503");
}

/// Places orders, refunds and offline bills until `stop`; every answer
/// recorded.
async fn trade(t: &TestApp, m: &Merchant, product: &str, stop: &AtomicBool) -> Record {
    let mut r = Record::default();
    let mut i = 0u32;
    while !stop.load(Ordering::Acquire) || i < 3 {
        i += 1;
        let key = Uuid::new_v4().to_string();
        let order = json!({ "lines": [{ "productId": product, "quantity": 1 }],
                            "payments": [{ "method": "cash", "amountMinor": 600 }] });
        let (s, body) = post_retrying(t, api!("/orders"), &m.token, &key, &order, &mut r).await;
        if s != Status::Created {
            r.errors.push(format!("order: {s} {body}"));
            continue;
        }
        let id = body["id"].as_str().expect("order id").to_string();
        r.orders
            .push((id.clone(), body["totalMinor"].as_i64().expect("total")));
        if i.is_multiple_of(3) {
            let (s, body) = post_retrying(
                t,
                &format!("{API}/orders/{id}/refunds"),
                &m.token,
                &Uuid::new_v4().to_string(),
                &json!({ "amountMinor": 100 }),
                &mut r,
            )
            .await;
            match body["refund"]["id"].as_str() {
                Some(refund) if s == Status::Created => r.refunds.push(refund.to_string()),
                _ => r.errors.push(format!("refund: {s} {body}")),
            }
        }
        if i.is_multiple_of(5) {
            // A category made now and deleted five sales later: rows the
            // snapshot may hold that are gone by the next round.
            if let Some(old) = r.categories.pop() {
                let path = format!("{API}/categories/{old}");
                let (s, body) =
                    send_retrying(t, Method::Delete, &path, &m.token, None, &[], &mut r).await;
                if s != Status::NoContent {
                    r.errors.push(format!("category delete: {s} {body}"));
                }
            }
            let (s, body) = post_retrying(
                t,
                api!("/categories"),
                &m.token,
                &Uuid::new_v4().to_string(),
                &json!({ "name": format!("Seasonal {}", Uuid::new_v4()) }),
                &mut r,
            )
            .await;
            match body["id"].as_str() {
                Some(id) if s == Status::Created => r.categories.push(id.to_string()),
                _ => r.errors.push(format!("category: {s} {body}")),
            }
        }
        if i.is_multiple_of(4) {
            let client = Uuid::new_v4().to_string();
            let batch = json!({ "bills": [{
                "clientId": client, "createdAt": chrono::Utc::now().to_rfc3339(),
                "lines": [{ "productId": product, "quantity": 1 }],
                "payments": [{ "method": "cash", "amountMinor": 600 }] }] });
            let (s, body) = post_retrying(
                t,
                api!("/offline-bills"),
                &m.token,
                &Uuid::new_v4().to_string(),
                &batch,
                &mut r,
            )
            .await;
            match body["results"][0]["status"].as_str() {
                Some("created" | "duplicate") if s == Status::Ok => r.bills.push(client),
                _ => r.errors.push(format!("bill: {s} {body}")),
            }
        }
    }
    r
}

/// A merchant with rows in every data-plane table, and its stocked product.
async fn trading_merchant(t: &TestApp, slug: &str) -> (Merchant, String) {
    let m = t.shared_merchant(slug).await;
    // It trades as fast as it can: on the plan without a request limit.
    t.set_plan(m.id, json!({ "plan": "enterprise" })).await;
    let (s, cat) = t
        .post(api!("/categories"), &m.token, json!({ "name": "Bakery" }))
        .await;
    assert_eq!(s, Status::Created, "{cat}");
    let (s, body) = t
        .post(
            api!("/products"),
            &m.token,
            json!({ "sku": "LOAF", "name": "Loaf", "priceMinor": 500, "taxRateBps": 2000,
                    "trackStock": true, "categoryId": cat["id"] }),
        )
        .await;
    assert_eq!(s, Status::Created, "{body}");
    let product = body["id"].as_str().expect("product id").to_string();
    let (s, body) = t
        .post(
            api!("/inventory/adjustments"),
            &m.token,
            json!({ "productId": product, "delta": 100_000, "reason": "receive" }),
        )
        .await;
    assert_eq!(s, Status::Created, "{body}");
    let (s, body) = t
        .post(
            api!("/customers"),
            &m.token,
            json!({ "name": "Ada", "email": format!("ada@{slug}.test") }),
        )
        .await;
    assert_eq!(s, Status::Created, "{body}");
    // Orders, a refund with lines, an offline bill, idempotency keys.
    let stop = AtomicBool::new(true);
    let r = trade(t, &m, &product, &stop).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let (id, _) = &r.orders[0];
    let (s, body, _) = t
        .post_idem(
            &format!("{API}/orders/{id}/refunds"),
            &m.token,
            &Uuid::new_v4().to_string(),
            json!({ "lines": [{ "lineNo": 1, "quantity": 1 }], "restock": true }),
        )
        .await;
    assert_eq!(s, Status::Created, "{body}");
    let c = content(&t.db.name, posd::tenancy::SHARED_SCHEMA, m.id);
    for (table, rows) in &c {
        assert!(!rows.is_empty(), "the merchant has no row in {table}");
    }
    (m, product)
}

#[derive(diesel::QueryableByName)]
struct Pair {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    level: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    moved: i64,
}

#[derive(diesel::QueryableByName)]
struct Bill {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    client: String,
}

/// Checks a move under traffic: everything the source held at the flip is
/// at the target, once, with the same content where rows never change;
/// every order the client was answered is there, and no other (`known`:
/// the orders there were before); stock equals its movements; the report
/// counts it all. Answers the orders there are now.
async fn check_moved(
    t: &TestApp,
    m: &Merchant,
    mv: &Value,
    source: &Content,
    known: &BTreeSet<String>,
    during: &Record,
) -> BTreeSet<String> {
    assert_eq!(mv["status"], "done", "{mv}");
    assert_eq!(mv["phase"], "retained", "{mv}");
    assert!(
        during.errors.is_empty(),
        "client errors: {:?}",
        during.errors
    );
    let (tier, db, schema) = location(t, m.id);
    assert_eq!(tier, mv["targetTier"].as_str().unwrap());
    let target = content(&db, &schema, m.id);
    for (table, rows) in source {
        let moved = &target[table];
        for (key, line) in rows {
            let Some(there) = moved.get(key) else {
                panic!("{table} {key} was lost in the move {mv}");
            };
            if APPEND_ONLY.contains(table) {
                assert_eq!(there, line, "{table} {key} changed in the move");
            }
        }
    }
    let mut conn = connect(&db);
    conn.batch_execute(&format!("SET search_path = \"{schema}\""))
        .unwrap();
    let bills: Vec<Bill> = diesel::sql_query(format!(
        "SELECT id::text AS id, client_bill_id::text AS client FROM orders
          WHERE merchant_id = '{}' AND client_bill_id IS NOT NULL",
        m.id
    ))
    .load(&mut conn)
    .unwrap();
    let mut expected: BTreeSet<String> = known.clone();
    expected.extend(during.orders.iter().map(|(id, _)| id.clone()));
    for client in &during.bills {
        let bill = bills.iter().find(|b| &b.client == client);
        let bill = bill.unwrap_or_else(|| {
            panic!("offline bill {client} was answered but is not at the target")
        });
        expected.insert(bill.id.clone());
    }
    let there: BTreeSet<String> = target["orders"].keys().cloned().collect();
    assert_eq!(
        there, expected,
        "the orders at the target are not those the client was answered"
    );
    for refund in &during.refunds {
        assert!(
            target["refunds"].contains_key(refund),
            "refund {refund} lost"
        );
    }
    stock_matches_movements(t, m);
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let (s, report) = t
        .get(&format!("{API}/reports/daily?date={today}"), &m.token)
        .await;
    assert_eq!(s, Status::Ok, "{report}");
    let live = i64::try_from(there.len()).unwrap();
    assert_eq!(report["orderCount"].as_i64(), Some(live), "{report}");
    there
}

/// Every stock level of the merchant, at its placement now, equals the
/// sum of its movements.
fn stock_matches_movements(t: &TestApp, m: &Merchant) {
    let (_, db, schema) = location(t, m.id);
    let mut conn = connect(&db);
    conn.batch_execute(&format!("SET search_path = \"{schema}\""))
        .unwrap();
    let pairs: Vec<Pair> = diesel::sql_query(format!(
        "SELECT l.on_hand AS level, coalesce((SELECT sum(delta) FROM stock_movements s
                 WHERE s.merchant_id = l.merchant_id AND s.product_id = l.product_id), 0)::bigint AS moved
           FROM inventory_levels l WHERE l.merchant_id = '{}'",
        m.id
    ))
    .load(&mut conn)
    .unwrap();
    assert!(!pairs.is_empty(), "no stock level");
    for p in pairs {
        assert_eq!(p.level, p.moved, "stock level differs from its movements");
    }
}

/// The merchant's rows at its placement now.
fn current(t: &TestApp, m: &Merchant) -> Content {
    let (_, db, schema) = location(t, m.id);
    content(&db, &schema, m.id)
}

#[rocket::async_test]
async fn a_trading_merchant_moves_every_way_and_loses_nothing() {
    let t = TestApp::with_config(quick).await;
    let (m, product) = trading_merchant(&t, "mover").await;
    // A key used before any move answers its stored response after all.
    let first_key = Uuid::new_v4().to_string();
    let first_order = json!({ "lines": [{ "productId": product, "quantity": 2 }],
                              "payments": [{ "method": "card", "amountMinor": 1200 }] });
    let (s, first, _) = t
        .post_idem(api!("/orders"), &m.token, &first_key, first_order.clone())
        .await;
    assert_eq!(s, Status::Created, "{first}");
    let mut known: BTreeSet<String> = current(&t, &m)["orders"].keys().cloned().collect();
    let steps: &[Value] = &[
        json!({ "tier": "schema" }),
        json!({ "tier": "dedicated" }),
        json!({ "tier": "dedicated" }),
        json!({ "tier": "shared" }),
        json!({ "tier": "dedicated" }),
        json!({ "tier": "schema" }),
        json!({ "tier": "shared" }),
    ];
    let mut generation = 0;
    for step in steps {
        let source = current(&t, &m);
        let stop = AtomicBool::new(false);
        let (mv, during) = tokio::join!(
            async {
                let mv = move_to(&t, &m, step.clone()).await;
                stop.store(true, Ordering::Release);
                mv
            },
            trade(&t, &m, &product, &stop)
        );
        known = check_moved(&t, &m, &mv, &source, &known, &during).await;
        assert!(mv["fenceMs"].as_i64().is_some(), "{mv}");
        assert_eq!(mv["backlog"], 0, "{mv}");
        assert!(
            !during.orders.is_empty(),
            "the client placed no order during the move"
        );
        let g: i64 = count(
            &mut t.db.owner(),
            &format!(
                "SELECT generation AS n FROM merchants WHERE id = '{}'",
                m.id
            ),
        )
        .unwrap();
        assert!(g > generation, "the placement generation did not move");
        generation = g;
    }
    let (s, replay, replayed) = t
        .post_idem(api!("/orders"), &m.token, &first_key, first_order)
        .await;
    assert_eq!(s, Status::Created, "{replay}");
    assert!(
        replayed,
        "a key used before the moves is replayed after them"
    );
    assert_eq!(replay, first);
}

#[rocket::async_test]
async fn a_move_there_and_back_yields_the_original_content() {
    let t = TestApp::with_config(quick).await;
    let (m, product) = trading_merchant(&t, "roundtrip").await;
    // Enough stock movements (netting to zero) for the copy to split the
    // table into key ranges copied by several streams (50,000 rows and up).
    connect(&t.db.name)
        .batch_execute(&format!(
            "INSERT INTO tenant_shared.stock_movements (merchant_id, id, product_id, delta, reason, note)
             SELECT '{m}', gen_random_uuid(), '{product}', CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END,
                    'correction', 'bulk ' || g
               FROM generate_series(1, 60000) g",
            m = m.id
        ))
        .expect("bulk movements");
    let original = current(&t, &m);
    assert!(original["stock_movements"].len() > 60_000);
    for tier in ["dedicated", "shared"] {
        let mv = move_to(&t, &m, json!({ "tier": tier })).await;
        assert_eq!(mv["status"], "done", "{mv}");
        assert_eq!(
            current(&t, &m),
            original,
            "content changed moving to {tier}"
        );
    }
    // Both moves are in the metrics.
    let metrics = t.metrics().await;
    assert!(
        metrics.contains("posd_move_fence_duration_seconds_count 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("posd_move_phase_duration_seconds_count{phase=\"copy\"} 2"),
        "{metrics}"
    );
    let copied: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("posd_move_rows_copied_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("posd_move_rows_copied_total");
    let rows: usize = original.values().map(BTreeMap::len).sum();
    assert_eq!(copied, 2 * u64::try_from(rows).unwrap(), "{metrics}");
    // The retained sources are unreadable by the service.
    let (s, list) = t.get(&admin_path(&m, "/moves"), &t.admin_token()).await;
    assert_eq!(s, Status::Ok, "{list}");
    let moves = list["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 2);
    let mut app = t.db.app_role();
    for mv in moves {
        let retired = mv["retiredAs"].as_str().expect("retired as");
        let read = diesel::sql_query(format!("SELECT 1 FROM \"{retired}\".orders LIMIT 1"))
            .execute(&mut app);
        assert!(read.is_err(), "the app role reads retired {retired}");
    }
    // Cleanup drops them all.
    let (s, cleaned) = t
        .post(
            api!("/admin/tenants/cleanup-moves"),
            &t.admin_token(),
            json!({ "all": true }),
        )
        .await;
    assert_eq!(s, Status::Ok, "{cleaned}");
    assert_eq!(cleaned["cleaned"].as_array().unwrap().len(), 2, "{cleaned}");
    for c in cleaned["cleaned"].as_array().unwrap() {
        assert!(c["error"].is_null(), "{c}");
    }
    let left = count(
        &mut t.db.owner(),
        "SELECT count(*) AS n FROM pg_namespace WHERE nspname LIKE 'posd\\_retired\\_%'",
    )
    .unwrap();
    assert_eq!(left, 0, "retired schemas left after cleanup");
    assert_eq!(current(&t, &m), original);
}

/// An app-role session bound to `m` on the shared tier, as a posd instance
/// with the old placement would hold one.
fn stale_session(t: &TestApp, m: &Merchant) -> PgConnection {
    let mut c = t.db.app_role();
    c.batch_execute(&format!(
        "BEGIN; SELECT set_config('posd.merchant_id', '{}', true), set_config('search_path', 'tenant_shared', true)",
        m.id
    ))
    .unwrap();
    c
}

#[rocket::async_test]
async fn no_write_commits_on_the_old_placement_after_the_flip() {
    let t = TestApp::with_config(|s| {
        s.placement_cache_ttl = Duration::from_secs(5);
        s.move_fence_timeout = Duration::from_secs(60);
    })
    .await;
    let (m, _) = trading_merchant(&t, "fenced").await;
    let carried = Uuid::new_v4();
    let mv = start_move(&t, &m, json!({ "tier": "schema" })).await;
    let run = mv["id"].as_str().unwrap().to_string();
    // A write in flight when the fence comes (capture is on: it holds the
    // fence's lock shared): the fence waits for it, and it is carried over.
    wait_move(&t, &m, &run, |mv| {
        mv["phase"] != "prepare" && mv["phase"] != "capture"
    })
    .await;
    let mut early = stale_session(&t, &m);
    early
        .batch_execute(&format!(
            "INSERT INTO customers (merchant_id, id, name) VALUES ('{}', '{carried}', 'Early')",
            m.id
        ))
        .unwrap();
    // A transaction begun before the flip that writes only after it.
    let mut late = stale_session(&t, &m);
    let _ = count(&mut late, "SELECT count(*) AS n FROM orders").unwrap();
    // The fence waits for the early write.
    wait_move(&t, &m, &run, |mv| mv["phase"] == "fence").await;
    early.batch_execute("COMMIT").unwrap();
    wait_move(&t, &m, &run, |mv| mv["phase"] != "fence").await;
    let refused = late.batch_execute(&format!(
        "INSERT INTO customers (merchant_id, id, name) VALUES ('{}', '{}', 'Late')",
        m.id,
        Uuid::new_v4()
    ));
    let e = refused.expect_err("a write on the old placement after the flip");
    assert!(e.to_string().contains("posd_tenant_moved"), "{e}");
    let _ = late.batch_execute("ROLLBACK");
    let mv = wait_move(&t, &m, &run, ended).await;
    assert_eq!(mv["status"], "done", "{mv}");
    assert!(
        current(&t, &m)["customers"].contains_key(&carried.to_string()),
        "the write committed before the flip was carried over"
    );
}

/// Whether anything of a move's target is left: the schema, the database,
/// or the merchant's rows on the shared tier.
fn target_left(t: &TestApp, m: &Merchant, tier: &str) -> i64 {
    let mut owner = t.db.owner();
    match tier {
        "schema" => count(
            &mut owner,
            &format!(
                "SELECT count(*) AS n FROM pg_namespace WHERE nspname = '{}'",
                posd::tenancy::tenant_schema_name(m.id)
            ),
        )
        .unwrap(),
        "dedicated" => count(
            &mut owner,
            &format!(
                "SELECT count(*) AS n FROM pg_database WHERE datname LIKE '{}%'",
                posd::tenancy::tenant_database_name(m.id)
            ),
        )
        .unwrap(),
        _ => {
            let c = content(&t.db.name, posd::tenancy::SHARED_SCHEMA, m.id);
            i64::try_from(c.values().map(BTreeMap::len).sum::<usize>()).unwrap()
        }
    }
}

/// Capture triggers left on the shared tier's tables.
fn triggers_left(t: &TestApp) -> i64 {
    count(
        &mut t.db.owner(),
        "SELECT count(*) AS n FROM pg_trigger WHERE tgname LIKE 'posd\\_move\\_%'",
    )
    .unwrap()
}

#[rocket::async_test]
async fn a_failure_after_any_phase_leaves_the_merchant_served_from_its_source() {
    for (i, phase) in ["prepare", "capture", "copy", "catch_up", "verify", "fence"]
        .into_iter()
        .enumerate()
    {
        let target = if i % 2 == 0 { "dedicated" } else { "schema" };
        let t = TestApp::with_config(move |s| {
            quick(s);
            s.move_fault = Some(format!("fail:{phase}"));
        })
        .await;
        let (m, product) = trading_merchant(&t, &format!("fault-{i}")).await;
        let original = current(&t, &m);
        let mv = move_to(&t, &m, json!({ "tier": target })).await;
        assert_eq!(mv["status"], "failed", "{phase}: {mv}");
        assert_eq!(mv["errorCode"], "injected_failure", "{phase}: {mv}");
        let (tier, _, _) = location(&t, m.id);
        assert_eq!(tier, "shared", "{phase}: the merchant left its source");
        assert_eq!(current(&t, &m), original, "{phase}: the source changed");
        assert_eq!(
            target_left(&t, &m, target),
            0,
            "{phase}: the target is left"
        );
        assert_eq!(
            triggers_left(&t),
            0,
            "{phase}: capture is left on the source"
        );
        // Still trading, and a new move (no fault now in its way) can start.
        t.sell(&m, &product, 1, 600).await;
        let (s, body) = t
            .post(
                &admin_path(&m, "/move"),
                &t.admin_token(),
                json!({ "tier": target }),
            )
            .await;
        assert_eq!(s, Status::Accepted, "{phase}: {body}");
    }
}

#[rocket::async_test]
async fn a_stalled_move_resumes_in_another_process_and_completes() {
    let t = TestApp::with_config(|s| {
        quick(s);
        s.move_fault = Some("stall:copy".into());
    })
    .await;
    let (m, product) = trading_merchant(&t, "stalled").await;
    let source = current(&t, &m);
    let mv = start_move(&t, &m, json!({ "tier": "dedicated" })).await;
    let run = mv["id"].as_str().unwrap().to_string();
    // The copy ran; its driver stopped before recording it.
    wait_move(&t, &m, &run, |mv| {
        mv["phase"] == "copy"
            && mv["tables"]
                .as_array()
                .is_some_and(|ts| !ts.is_empty() && ts.iter().all(|t| t["rows"] == t["total"]))
    })
    .await;
    // Sales while nobody drives the move: a backlog that the resumed run
    // takes in batches of whole transactions (a sale writes several rows;
    // a batch of 4 changes holds one sale).
    let sales = 10;
    for _ in 0..sales {
        t.sell(&m, &product, 1, 600).await;
    }
    let TestApp { client, db } = t;
    drop(client);
    let t = TestApp::on_with(db, |s| {
        quick(s);
        s.move_round_batch = 4;
    })
    .await;
    let mv = wait_move(&t, &m, &run, ended).await;
    assert_eq!(mv["status"], "done", "{mv}");
    assert!(
        mv["rounds"].as_i64().unwrap() >= i64::try_from(sales).unwrap(),
        "{mv}"
    );
    let after = current(&t, &m);
    for (table, rows) in &source {
        for key in rows.keys() {
            assert!(after[table].contains_key(key), "{table} {key} lost");
        }
    }
    assert_eq!(after["orders"].len(), source["orders"].len() + sales);
    stock_matches_movements(&t, &m);
}

#[rocket::async_test]
async fn one_move_at_a_time_and_cancel_leaves_nothing_at_the_target() {
    let t = TestApp::with_config(|s| {
        quick(s);
        s.move_fault = Some("stall:copy".into());
    })
    .await;
    let (m, product) = trading_merchant(&t, "cancelled").await;
    let original = current(&t, &m);
    let mv = start_move(&t, &m, json!({ "tier": "schema" })).await;
    let run = mv["id"].as_str().unwrap().to_string();
    let (s, body) = t
        .post(
            &admin_path(&m, "/move"),
            &t.admin_token(),
            json!({ "tier": "dedicated" }),
        )
        .await;
    assert_error((s, &body), Status::Conflict, "move_in_progress");
    let (s, body) = t
        .post(
            api!("/admin/tenant/provision"),
            &t.admin_token(),
            json!({ "merchantId": m.id.to_string(), "tier": "dedicated" }),
        )
        .await;
    assert_error((s, &body), Status::Conflict, "move_in_progress");
    // The same runId answers the same move.
    let (s, again) = t
        .post(
            &admin_path(&m, "/move"),
            &t.admin_token(),
            json!({ "tier": "schema", "runId": run }),
        )
        .await;
    assert_eq!(s, Status::Accepted, "{again}");
    assert_eq!(again["move"]["id"], run.as_str());
    wait_move(&t, &m, &run, |mv| mv["phase"] == "copy").await;
    let (s, body) = t
        .post(
            &admin_path(&m, &format!("/moves/{run}/cancel")),
            &t.admin_token(),
            json!({}),
        )
        .await;
    assert_eq!(s, Status::Accepted, "{body}");
    let mv = wait_move(&t, &m, &run, ended).await;
    assert_eq!(mv["status"], "cancelled", "{mv}");
    assert_eq!(
        target_left(&t, &m, "schema"),
        0,
        "the cancelled target is left"
    );
    assert_eq!(triggers_left(&t), 0);
    assert_eq!(current(&t, &m), original);
    t.sell(&m, &product, 1, 600).await;
    // An ended move cannot be cancelled.
    let (s, body) = t
        .post(
            &admin_path(&m, &format!("/moves/{run}/cancel")),
            &t.admin_token(),
            json!({}),
        )
        .await;
    assert_error((s, &body), Status::Conflict, "move_not_cancellable");
    // Bad requests.
    let (s, body) = t
        .post(
            &admin_path(&m, "/move"),
            &t.admin_token(),
            json!({ "tier": "shared" }),
        )
        .await;
    assert_error((s, &body), Status::Conflict, "already_on_tier");
    let (s, body) = t
        .post(
            &admin_path(&m, "/move"),
            &t.admin_token(),
            json!({ "tier": "schema", "databaseUrl": "postgres://u@h/d" }),
        )
        .await;
    assert_error((s, &body), Status::UnprocessableEntity, "validation_failed");
    let (s, body) = t
        .post(
            &format!("{API}/admin/tenants/{}/move", Uuid::new_v4()),
            &t.admin_token(),
            json!({ "tier": "schema" }),
        )
        .await;
    assert_error((s, &body), Status::NotFound, "not_found");
    let (s, body) = t
        .post(
            &admin_path(&m, "/move"),
            &m.token,
            json!({ "tier": "schema" }),
        )
        .await;
    assert!(
        s == Status::Unauthorized || s == Status::Forbidden,
        "{s} {body}"
    );
}

/// `posd` (the binary) configured for the test database.
fn posd(t: &TestApp) -> std::process::Command {
    let server = Server::get();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_posd"));
    cmd.env("POSD_DATABASE_URL", server.owner_url(&t.db.name))
        .env("POSD_APP_DATABASE_URL", server.app_url(&t.db.name))
        .env("POSD_JWT_SECRET", crate::common::JWT_SECRET)
        .env("POSD_ENCRYPTION_KEYS", server.keys())
        .env("POSD_PLACEMENT_CACHE_TTL", "300ms")
        .env("POSD_LOG", "error");
    cmd
}

#[derive(diesel::QueryableByName)]
struct RunRow {
    #[diesel(sql_type = Text)]
    id: String,
}

#[rocket::async_test]
async fn a_move_whose_process_is_killed_resumes_and_the_cli_moves_back() {
    let t = TestApp::with_config(quick).await;
    let (m, product) = trading_merchant(&t, "killed").await;
    let source = current(&t, &m);
    let mut child = posd(&t)
        .args(["tenants", "move", &m.slug, "--to", "dedicated", "--wait"])
        .env("POSD_MOVE_FAULT", "hang:copy")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("posd tenants move");
    // The other process is inside the copy: a table is copied, uncommitted.
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let found: Vec<RunRow> = diesel::sql_query(format!(
            "SELECT id::text AS id FROM tenant_moves WHERE merchant_id = '{}' AND phase = 'copy'
                AND jsonb_path_exists(tables, '$[*] ? (@.rows > 0)')",
            m.id
        ))
        .load(&mut t.db.owner())
        .unwrap();
        if let Some(r) = found.into_iter().next() {
            break r.id;
        }
        assert!(Instant::now() < deadline, "the move never reached its copy");
        assert!(
            child.try_wait().unwrap().is_none(),
            "posd tenants move exited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Served from its source meanwhile.
    t.sell(&m, &product, 1, 600).await;
    child.kill().expect("kill -9");
    child.wait().unwrap();
    // This instance's driver takes the run over and completes it.
    t.app().mover.wake();
    let mv = wait_move(&t, &m, &run, ended).await;
    assert_eq!(mv["status"], "done", "{mv}");
    let moved = current(&t, &m);
    for (table, rows) in &source {
        for key in rows.keys() {
            assert!(moved[table].contains_key(key), "{table} {key} lost");
        }
    }
    assert_eq!(
        moved["orders"].len(),
        source["orders"].len() + 1,
        "the sale made meanwhile"
    );
    // A sale at the new placement: this instance opens a pool on the new
    // database, which the move back must leave droppable.
    t.sell(&m, &product, 1, 600).await;
    let moved = current(&t, &m);
    // Back with one command, which waits for the end.
    let out = posd(&t)
        .args(["tenants", "move", &m.slug, "--to", "shared", "--wait"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("moved killed to the shared tier"),
        "{stdout}"
    );
    assert_eq!(location(&t, m.id).0, "shared");
    assert_eq!(current(&t, &m), moved);
    // The listing shows no move under way; cleanup drops both old placements.
    let out = posd(&t).args(["tenants", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("killed ") && l.trim_end().ends_with(" -")),
        "{listing}"
    );
    let out = posd(&t)
        .args(["tenants", "cleanup-moves", "--all"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("2 old placement(s) dropped, 0 failed"),
        "{stdout}"
    );
}

/// `c` with merchant `from`'s id written as `to`'s in every row.
fn rekeyed(c: &Content, from: MerchantId, to: MerchantId) -> Content {
    let (from, to) = (from.to_string(), to.to_string());
    c.iter()
        .map(|(table, rows)| {
            let rows = rows
                .iter()
                .map(|(k, line)| (k.replace(&from, &to), line.replace(&from, &to)))
                .collect();
            (*table, rows)
        })
        .collect()
}

#[rocket::async_test]
async fn an_export_restores_into_another_merchant_and_a_cut_one_loads_nothing() {
    let t = TestApp::with_config(quick).await;
    let (m, _) = trading_merchant(&t, "exported").await;
    let original = current(&t, &m);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exported.posd");
    let path = file.to_str().unwrap();
    let out = posd(&t)
        .args(["tenants", "export", &m.slug, "--out", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Into a new merchant, on a database of its own.
    let n = t.merchant("restored", posd::tenancy::Tier::Dedicated).await;
    // Its own audit trail (its owner's login) is kept, beside the export's.
    let own = current(&t, &n);
    assert!(!own["audit_events"].is_empty());
    let restore = |file: &str, merchant: &str| {
        posd(&t)
            .args(["tenants", "restore", file, "--merchant", merchant])
            .output()
            .unwrap()
    };
    let out = restore(path, "restored");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("counts and checksums verified"), "{stdout}");
    let mut restored = current(&t, &n);
    for (key, line) in &own["audit_events"] {
        let kept = restored.get_mut("audit_events").and_then(|r| r.remove(key));
        assert_eq!(kept.as_ref(), Some(line), "its own trail is kept");
    }
    assert_eq!(rekeyed(&restored, n.id, m.id), original);
    // Not twice: the merchant has data now.
    let out = restore(path, "restored");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has rows"));
    // A cut archive loads nothing.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.posd");
    std::fs::write(&cut, &bytes[..bytes.len() - 64]).unwrap();
    let c = t.merchant("cut", posd::tenancy::Tier::Schema).await;
    let before = current(&t, &c);
    assert!(
        before
            .iter()
            .all(|(table, rows)| rows.is_empty() == (*table != "audit_events")),
        "{before:?}"
    );
    let out = restore(cut.to_str().unwrap(), "cut");
    assert!(!out.status.success(), "a cut archive was restored");
    assert_eq!(current(&t, &c), before, "a failed restore left rows");
}

#[rocket::async_test]
async fn a_merchant_moves_into_a_database_it_brings_and_back() {
    let t = TestApp::with_config(|s| {
        quick(s);
        s.move_fault = Some("stall:copy".into());
    })
    .await;
    let (m, _) = trading_merchant(&t, "brings").await;
    let original = current(&t, &m);
    let byo = crate::byo::ByoDb::new("", true);
    // While it runs, the tenant view shows it.
    let mv = start_move(
        &t,
        &m,
        json!({ "tier": "dedicated", "databaseUrl": byo.url() }),
    )
    .await;
    let run = mv["id"].as_str().unwrap().to_string();
    wait_move(&t, &m, &run, |mv| mv["phase"] == "copy").await;
    let (s, view) = t.get(&admin_path(&m, ""), &t.admin_token()).await;
    assert_eq!(s, Status::Ok, "{view}");
    assert_eq!(view["move"]["id"], run.as_str(), "{view}");
    assert!(
        !view.to_string().contains(&byo.password),
        "the URL is never answered"
    );
    // Another process without the fault finishes it.
    let TestApp { client, db } = t;
    drop(client);
    let t = TestApp::on_with(db, quick).await;
    let mv = wait_move(&t, &m, &run, ended).await;
    assert_eq!(mv["status"], "done", "{mv}");
    let (tier, database, _) = location(&t, m.id);
    assert_eq!(
        (tier.as_str(), database.as_str()),
        ("dedicated", byo.name.as_str())
    );
    assert_eq!(current(&t, &m), original);
    let (s, view) = t.get(&admin_path(&m, ""), &t.admin_token()).await;
    assert_eq!(s, Status::Ok);
    assert!(view.get("move").is_none(), "{view}");
    // And back; the old placement in the merchant's database is retired.
    let mv = move_to(&t, &m, json!({ "tier": "shared" })).await;
    assert_eq!(mv["status"], "done", "{mv}");
    assert_eq!(current(&t, &m), original);
    let retired = count(
        &mut byo.superuser(),
        &format!(
            "SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'posd_retired_{}'",
            mv["id"].as_str().unwrap().replace('-', "")
        ),
    )
    .unwrap();
    assert_eq!(
        retired, 1,
        "the merchant's schema is kept, renamed, in its database"
    );
}
