//! Several posd processes on one platform database (the real binary, two
//! processes, caches kept for an hour so that only NOTIFY can make them
//! agree): they boot at once on an empty database and migrate it once; a
//! suspension, a staff deactivation, a limit change and a placement change
//! made through one reach the other within a second; one that loses its
//! LISTEN connection drops its caches and listens again; the same
//! idempotency key or offline bill sent to both at once is applied once.

use std::{
    fmt::Write as _,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use diesel::{Connection, PgConnection, connection::SimpleConnection};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    common::{Server, TestApp, TestDb, count},
    logs::{Serving, exchange},
};
use posd::{auth::Role, tenancy::tenant_schema_name};

const API: &str = "/api/v2/POS";

/// One request to a serving posd; the status and the JSON answer.
fn call(port: u16, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    call_with(port, method, path, token, body, &[])
}

fn call_with(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut head = format!("{method} {API}{path} HTTP/1.1\r\nAuthorization: Bearer {token}");
    if body.is_some() {
        head.push_str("\r\nContent-Type: application/json");
    }
    for (k, v) in headers {
        let _ = write!(head, "\r\n{k}: {v}");
    }
    let text = body.map(Value::to_string).unwrap_or_default();
    let (status, answer) = exchange(port, &head, &text);
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// Polls `seen` until it holds; fails after `limit`. Answers how long it took.
fn within(limit: Duration, what: &str, mut seen: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if seen() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what} did not reach the other instance within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// Runs `f` for both ports at the same moment; answers both results.
fn at_once<T: Send + 'static>(
    ports: [u16; 2],
    f: impl Fn(u16) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(2));
    let f = Arc::new(f);
    let handles: Vec<_> = ports
        .into_iter()
        .map(|port| {
            let (barrier, f) = (barrier.clone(), f.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(port)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[rocket::async_test]
async fn two_processes_migrate_once_and_see_each_others_changes_within_a_second() {
    // An empty database: both processes boot on it at the same moment.
    let server = Server::get();
    let db = TestDb::empty();
    let env = [
        ("POSD_PLACEMENT_CACHE_TTL", "1h"),
        ("POSD_JOB_WORKERS", "0"),
    ];
    let mut a = Serving::spawn(&db.name, Some("info"), &env, false);
    let mut b = Serving::spawn(&db.name, Some("info"), &env, false);
    a.announced();
    b.announced();
    let t = TestApp::on(db).await;
    let migrations = count(
        &mut t.db.owner(),
        "SELECT count(*) AS n FROM __diesel_schema_migrations",
    )
    .unwrap();
    let shipped = i64::try_from(std::fs::read_dir("migrations").unwrap().count()).unwrap();
    assert_eq!(migrations, shipped, "every platform migration, once");

    let admin = t.admin_token();
    let m = t.shared_merchant("inst-m").await;
    t.set_plan(m.id, json!({ "plan": "enterprise" })).await;
    let (pa, pb) = (a.port, b.port);
    let status_at = |port: u16, token: &str| call(port, "GET", "/products", token, None).0;
    assert_eq!(status_at(pb, &m.token), 200);

    // Suspension, and back.
    let (s, body) = call(
        pa,
        "POST",
        &format!("/admin/tenants/{}/suspend", m.id),
        &admin,
        Some(&json!({})),
    );
    assert_eq!(s, 200, "{body}");
    within(SECOND, "a suspension", || status_at(pb, &m.token) == 403);
    call(
        pa,
        "POST",
        &format!("/admin/tenants/{}/resume", m.id),
        &admin,
        Some(&json!({})),
    );
    within(SECOND, "a resumption", || status_at(pb, &m.token) == 200);

    // A staff member deactivated on one is refused by the other.
    let cashier = t.staff_user(m.id, Role::Cashier);
    let cashier_token = t.token_for(cashier, m.id, Role::Cashier);
    assert_eq!(status_at(pb, &cashier_token), 200);
    let (s, body) = call(
        pa,
        "PATCH",
        &format!("/staff/{cashier}"),
        &m.token,
        Some(&json!({ "active": false })),
    );
    assert_eq!(s, 200, "{body}");
    within(SECOND, "a deactivation", || {
        status_at(pb, &cashier_token) == 401
    });

    // A limit changed through one is enforced by the other.
    let (s, body) = call(
        pa,
        "POST",
        &format!("/admin/tenants/{}/plan", m.id),
        &admin,
        Some(&json!({ "limitOverrides": { "requestsPerMinute": 0 } })),
    );
    assert_eq!(s, 200, "{body}");
    within(SECOND, "a limit change", || status_at(pb, &m.token) == 429);
    call(
        pa,
        "POST",
        &format!("/admin/tenants/{}/plan", m.id),
        &admin,
        Some(&json!({ "limitOverrides": { "requestsPerMinute": null } })),
    );
    within(SECOND, "a limit removed", || status_at(pb, &m.token) == 200);

    // A placement change: provisioned through one, the other reads the
    // new schema (what was written there through the first).
    let n = t.shared_merchant("inst-n").await;
    t.set_plan(n.id, json!({ "plan": "enterprise" })).await;
    assert_eq!(status_at(pb, &n.token), 200);
    let (s, body) = call(
        pa,
        "POST",
        "/admin/tenant/provision",
        &admin,
        Some(&json!({ "merchantId": n.id, "tier": "schema" })),
    );
    assert_eq!(s, 201, "{body}");
    let (s, made) = call(
        pa,
        "POST",
        "/products",
        &n.token,
        Some(&json!({ "sku": "MOVED-1", "name": "moved", "priceMinor": 100 })),
    );
    assert_eq!(s, 201, "{made}");
    // A superuser reads past row-level security (forced: it binds the
    // owner too).
    let rows = || PgConnection::establish(&server.superuser_url(&t.db.name)).unwrap();
    let there = count(
        &mut rows(),
        &format!(
            "SELECT count(*) AS n FROM \"{}\".products",
            tenant_schema_name(n.id)
        ),
    )
    .unwrap();
    assert_eq!(there, 1, "written to the new schema");
    within(SECOND, "a placement change", || {
        let (s, list) = call(pb, "GET", "/products", &n.token, None);
        s == 200 && list["items"].as_array().is_some_and(|i| i.len() == 1)
    });

    // The other loses its LISTEN connection: it reconnects and trusts
    // nothing it cached meanwhile.
    let b_pid = b.child.id();
    let terminated = count(
        &mut server.superuser(),
        &format!(
            "SELECT count(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE application_name = 'posd-listen-{b_pid}') k"
        ),
    )
    .unwrap();
    assert_eq!(terminated, 1, "the second process's LISTEN connection");
    t.db.owner()
        .batch_execute(&format!(
            "UPDATE merchants SET status = 'suspended' WHERE id = '{}'",
            m.id
        ))
        .unwrap();
    b.wait_for("cache invalidation listener");
    within(
        3 * SECOND,
        "a change made while it was not listening",
        || status_at(pb, &m.token) == 403,
    );
    t.db.owner()
        .batch_execute(&format!(
            "UPDATE merchants SET status = 'active' WHERE id = '{}'",
            m.id
        ))
        .unwrap();
    within(SECOND, "a resumption while it reconnects", || {
        status_at(pb, &m.token) == 200
    });
    within(3 * SECOND, "listening again", || {
        count(
            &mut server.superuser(),
            &format!(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'posd-listen-{b_pid}' \
                  AND query LIKE 'LISTEN%'"
            ),
        )
        .unwrap()
            == 1
    });
    // Listening again, it caches again, and NOTIFY keeps the cache right.
    assert_eq!(status_at(pb, &m.token), 200);
    let suspend = |status: &str| {
        t.db.owner()
            .batch_execute(&format!(
                "UPDATE merchants SET status = '{status}' WHERE id = '{}'",
                m.id
            ))
            .unwrap();
    };
    suspend("suspended");
    within(SECOND, "a change after it listens again", || {
        status_at(pb, &m.token) == 403
    });
    suspend("active");
    within(SECOND, "and back", || status_at(pb, &m.token) == 200);

    // One idempotency key, sent to both at once: one order.
    let product = t.stocked_product(&m, "INST-1", 500, 0, Some(10)).await;
    let key = Uuid::new_v4().to_string();
    let sale = json!({ "lines": [{ "productId": product, "quantity": 1 }],
                       "payments": [{ "method": "cash", "amountMinor": 500 }] });
    let token = m.token.clone();
    let answers = at_once([pa, pb], move |port| {
        call_with(
            port,
            "POST",
            "/orders",
            &token,
            Some(&sale),
            &[("Idempotency-Key", key.clone())],
        )
    });
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert!(!created.is_empty(), "{answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 201 || *s == 409),
        "{answers:?}"
    );
    if created.len() == 2 {
        assert_eq!(
            created[0]["id"], created[1]["id"],
            "a replay answers the same order"
        );
    }
    let orders = count(
        &mut rows(),
        &format!(
            "SELECT count(*) AS n FROM tenant_shared.orders WHERE merchant_id = '{}'",
            m.id
        ),
    )
    .unwrap();
    assert_eq!(orders, 1, "{answers:?}");

    // One offline bill, sent to both at once: one order.
    let bill = Uuid::new_v4();
    let batch = json!({ "bills": [{
        "clientId": bill,
        "createdAt": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
        "lines": [{ "productId": product, "quantity": 1 }],
        "payments": [{ "method": "cash", "amountMinor": 500 }]
    }]});
    let token = m.token.clone();
    let answers = at_once([pa, pb], move |port| {
        call(port, "POST", "/offline-bills", &token, Some(&batch))
    });
    let mut statuses: Vec<String> = answers
        .iter()
        .map(|(s, body)| {
            assert_eq!(*s, 200, "{body}");
            body["results"][0]["status"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["created", "duplicate"], "{answers:?}");
    let applied = count(
        &mut rows(),
        &format!("SELECT count(*) AS n FROM tenant_shared.orders WHERE client_bill_id = '{bill}'"),
    )
    .unwrap();
    assert_eq!(applied, 1);

    for s in [a, b] {
        let lines = s.stop();
        let errors: Vec<&String> = lines.iter().filter(|l| l.contains("ERROR")).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}
