//! Isolation: one merchant never reaches another's rows, whatever their
//! tiers, and the database itself fails closed when nothing is bound.

use diesel::{Connection, PgConnection, connection::SimpleConnection};
use rocket::http::Status;
use serde_json::json;

use crate::{
    bouncer::Bouncer,
    common::{Merchant, Server, TIERS, TestApp, api, assert_error, count},
};
use posd::tenancy::{Tier, tenant_database_name, tenant_schema_name};

/// A tries every way in to B's product; B's data is unchanged after.
async fn break_in(t: &TestApp, a: &Merchant, b: &Merchant) {
    let a_id = t.product(a, &format!("{}-OWN", a.slug)).await;
    let b_id = t.product(b, &format!("{}-SECRET", b.slug)).await;
    let base = api!("/products");

    let (_, list) = t.get(&format!("{base}?limit=200"), &a.token).await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&a_id.as_str()));
    assert!(!ids.contains(&b_id.as_str()), "A's list shows B's product");
    let (_, search) = t
        .get(&format!("{base}?q={}-SECRET", b.slug), &a.token)
        .await;
    assert_eq!(
        search["items"].as_array().unwrap().len(),
        0,
        "A's search finds B's product"
    );

    let (status, body) = t.get(&format!("{base}/{b_id}"), &a.token).await;
    assert_eq!(status, Status::NotFound, "{body}");
    let (status, _) = t
        .patch(
            &format!("{base}/{b_id}"),
            &a.token,
            json!({ "name": "pwned" }),
        )
        .await;
    assert_eq!(status, Status::NotFound);
    let (status, _) = t.delete(&format!("{base}/{b_id}"), &a.token).await;
    assert_eq!(status, Status::NotFound);
    // A may use B's sku: uniqueness is per merchant and reveals nothing.
    let (status, _) = t
        .post(
            base,
            &a.token,
            json!({ "sku": format!("{}-SECRET", b.slug), "name": "mine", "priceMinor": 1 }),
        )
        .await;
    assert_eq!(status, Status::Created);

    let (status, still) = t.get(&format!("{base}/{b_id}"), &b.token).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(
        still["name"],
        format!("{}-SECRET item", b.slug),
        "B's product was changed by A"
    );
    // The token decides the tenant: a header naming another merchant is refused.
    let res = t
        .send(
            rocket::http::Method::Get,
            base,
            Some(&a.token),
            None,
            &[("X-Tenant-Id", b.id.to_string())],
        )
        .await;
    assert_eq!(res.status(), Status::Forbidden);
}

async fn pair(x: Tier, y: Tier) {
    // One connection per pool: A's and B's requests share connections.
    let t = TestApp::with_config(|s| {
        s.pool_size = 1;
        s.tenant_pool_size = 1;
    })
    .await;
    pair_on(&t, x, y).await;
}

/// The same through a PgBouncer in transaction mode with one server
/// connection for posd's one pooled connection (shared and schema
/// merchants; a dedicated database is reached directly).
async fn pair_through_pgbouncer(x: Tier, y: Tier) {
    let bouncer = Bouncer::start(1);
    let t = bouncer
        .app(|s| {
            s.pool_size = 1;
            s.tenant_pool_size = 1;
        })
        .await;
    pair_on(&t, x, y).await;
}

async fn pair_on(t: &TestApp, x: Tier, y: Tier) {
    let a = t.merchant(&format!("a-{}", x.as_str()), x).await;
    let b = t.merchant(&format!("b-{}", y.as_str()), y).await;
    break_in(t, &a, &b).await;
    break_in(t, &b, &a).await;

    // Alternate A and B over the same connections: each only ever sees its own.
    for i in 0..10 {
        for (me, other) in [(&a, &b), (&b, &a)] {
            let (status, list) = t.get(api!("/products?limit=200"), &me.token).await;
            assert_eq!(status, Status::Ok);
            for p in list["items"].as_array().unwrap() {
                assert!(
                    !p["sku"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("{}-OWN", other.slug)),
                    "round {i}: {} saw {}'s row",
                    me.slug,
                    other.slug
                );
            }
        }
    }
}

#[rocket::async_test]
async fn shared_and_shared() {
    pair(Tier::Shared, Tier::Shared).await;
}

#[rocket::async_test]
async fn shared_and_schema() {
    pair(Tier::Shared, Tier::Schema).await;
}

#[rocket::async_test]
async fn shared_and_dedicated() {
    pair(Tier::Shared, Tier::Dedicated).await;
}

#[rocket::async_test]
async fn schema_and_schema() {
    pair(Tier::Schema, Tier::Schema).await;
}

#[rocket::async_test]
async fn schema_and_dedicated() {
    pair(Tier::Schema, Tier::Dedicated).await;
}

#[rocket::async_test]
async fn dedicated_and_dedicated() {
    pair(Tier::Dedicated, Tier::Dedicated).await;
}

#[rocket::async_test]
async fn through_pgbouncer_shared_and_shared() {
    pair_through_pgbouncer(Tier::Shared, Tier::Shared).await;
}

#[rocket::async_test]
async fn through_pgbouncer_shared_and_schema() {
    pair_through_pgbouncer(Tier::Shared, Tier::Schema).await;
}

#[rocket::async_test]
async fn through_pgbouncer_schema_and_schema() {
    pair_through_pgbouncer(Tier::Schema, Tier::Schema).await;
}

#[rocket::async_test]
async fn through_pgbouncer_shared_and_dedicated() {
    pair_through_pgbouncer(Tier::Shared, Tier::Dedicated).await;
}

#[rocket::async_test]
async fn through_pgbouncer_schema_and_dedicated() {
    pair_through_pgbouncer(Tier::Schema, Tier::Dedicated).await;
}

/// The app role with no binding (or an ended one) reads nothing and writes
/// nothing, on every tier: RLS fails closed.
#[rocket::async_test]
async fn rls_fails_closed_without_binding() {
    let t = TestApp::new().await;
    let mut merchants = Vec::new();
    for tier in TIERS {
        let m = t.merchant(&format!("rls-{}", tier.as_str()), tier).await;
        t.product(&m, "RLS-1").await;
        merchants.push(m);
    }
    let server = Server::get();
    for m in &merchants {
        let (mut conn, schema) = match m.tier {
            Tier::Shared => (t.db.app_role(), "tenant_shared".to_string()),
            Tier::Schema => (t.db.app_role(), tenant_schema_name(m.id)),
            Tier::Dedicated => (
                PgConnection::establish(&server.app_url(&tenant_database_name(m.id))).unwrap(),
                tenant_schema_name(m.id),
            ),
        };
        let q = format!("SELECT count(*) AS n FROM \"{schema}\".products");
        assert_eq!(
            count(&mut conn, &q).unwrap(),
            0,
            "{:?}: unbound read",
            m.tier
        );
        // An ended SET LOCAL reads as '' — still nothing.
        conn.batch_execute(&format!(
            "BEGIN; SELECT set_config('posd.merchant_id', '{}', true); COMMIT;",
            m.id
        ))
        .unwrap();
        assert_eq!(
            count(&mut conn, &q).unwrap(),
            0,
            "{:?}: read after binding ended",
            m.tier
        );
        let insert = conn.batch_execute(&format!(
            "INSERT INTO \"{schema}\".products (merchant_id, id, sku, name, price_minor) \
             VALUES ('{}', gen_random_uuid(), 'SNEAK', 'x', 1)",
            m.id
        ));
        assert!(insert.is_err(), "{:?}: unbound insert was accepted", m.tier);
        // Bound to the merchant, the same connection sees exactly its row.
        conn.batch_execute(&format!(
            "BEGIN; SELECT set_config('posd.merchant_id', '{}', true);",
            m.id
        ))
        .unwrap();
        assert_eq!(count(&mut conn, &q).unwrap(), 1, "{:?}: bound read", m.tier);
        conn.batch_execute("ROLLBACK").unwrap();
    }
    // Bound to A, the shared table shows none of B's rows.
    let mut conn = t.db.app_role();
    conn.batch_execute(&format!(
        "BEGIN; SELECT set_config('posd.merchant_id', '{}', true);",
        uuid::Uuid::new_v4()
    ))
    .unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM tenant_shared.products"
        )
        .unwrap(),
        0
    );
    conn.batch_execute("ROLLBACK").unwrap();
}

/// A schema tenant whose table is gone gets an error, never another
/// schema's rows (`search_path` holds its schema only).
#[rocket::async_test]
async fn schema_tenant_without_its_table_gets_an_error() {
    let t = TestApp::new().await;
    let victim = t.merchant("dropped", Tier::Schema).await;
    let other = t.merchant("intact", Tier::Schema).await;
    let shared = t.merchant("shared-one", Tier::Shared).await;
    t.product(&other, "OTHER-1").await;
    t.product(&shared, "SHARED-1").await;
    t.db.owner()
        .batch_execute(&format!(
            "DROP TABLE \"{}\".products CASCADE",
            tenant_schema_name(victim.id)
        ))
        .unwrap();
    let (status, body) = t.get(api!("/products"), &victim.token).await;
    assert_error(
        (status, &body),
        Status::InternalServerError,
        "internal_error",
    );
    assert!(body.get("items").is_none());
    let (status, list) = t.get(api!("/products"), &other.token).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}
