//! Snapshots of what clients build on: the error envelope of each kind of
//! error, and the OpenAPI document. The accepted snapshots are committed in
//! `tests/api/snapshots/`; a change to either fails with a diff of the
//! expected and the actual answer.
//!
//! Reviewing and accepting a change (after checking that it is meant):
//! - with `cargo-insta`: `cargo insta test --review -- contract::`, or
//!   `cargo insta review` after a failed run;
//! - without it: `INSTA_UPDATE=always cargo test --test api contract::`,
//!   then read `git diff tests/api/snapshots/` before committing.
//!
//! Nothing is written unless asked: where `CI` is set insta's default
//! (`INSTA_UPDATE=auto`) is `no`, so a changed or missing snapshot fails
//! the run and no file is written; elsewhere the new answer goes to a
//! `.snap.new` file beside the old one (ignored by git) and the test still
//! fails.

use diesel::connection::SimpleConnection;
use rocket::{
    http::{ContentType, Header, Method, Status},
    local::asynchronous::LocalResponse,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, Server, TestApp, api};
use posd::{
    auth::Role,
    config::RateLimit,
    tenancy::{Tier, tenant_database_name},
};

/// Settings shared by every snapshot here: maps sorted, so that only a
/// change of content shows, and the committed snapshot directory.
fn snapshot_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_sort_maps(true);
    s.set_prepend_module_to_snapshot(false);
    s.set_snapshot_path("snapshots");
    s
}

/// `text` with every UUID replaced by `[uuid]`: ids differ from run to run.
fn without_uuids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(head) = rest.get(..36)
            && Uuid::try_parse(head).is_ok()
        {
            out.push_str("[uuid]");
            rest = &rest[36..];
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// An error answer as it is snapshotted: status, the headers a client
/// acts on, and the body with ids redacted.
async fn error_answer(res: LocalResponse<'_>) -> Value {
    let status = res.status();
    let content_type = res.content_type().map(|c| c.to_string());
    let retry_after = res
        .headers()
        .get_one("Retry-After")
        .map(|v| match v.parse::<u64>() {
            Ok(n) if n >= 1 => "[seconds]".to_string(),
            _ => format!("not a positive number of seconds: {v}"),
        });
    let text = res.into_string().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&without_uuids(&text))
        .unwrap_or_else(|_| panic!("a {status} answer whose body is not JSON: {text}"));
    json!({
        "status": status.code,
        "contentType": content_type,
        "retryAfter": retry_after,
        "body": body,
    })
}

#[rocket::async_test]
async fn error_envelopes() {
    let t = TestApp::with_config(|s| {
        s.login_address_limit = RateLimit {
            burst: 1,
            interval: std::time::Duration::from_secs(3600),
        };
        s.breaker_threshold = 1;
    })
    .await;
    let m = t.merchant("envelopes", Tier::Dedicated).await;
    let cashier = t.staff_token(m.id, Role::Cashier);
    t.product(&m, "TAKEN").await;
    let product = |sku: &str, price: i64| json!({ "sku": sku, "name": "n", "priceMinor": price });
    let mut answers = serde_json::Map::new();
    let mut record = |name: &str, answer: Value| {
        answers.insert(name.to_string(), answer);
    };

    let req = |method, path: &str, token: Option<&str>| {
        let mut r = t.client.req(method, path.to_string());
        if let Some(token) = token {
            r = r.header(Header::new("Authorization", format!("Bearer {token}")));
        }
        r
    };
    let products = api!("/products");

    record(
        "401 no token",
        error_answer(req(Method::Get, products, None).dispatch().await).await,
    );
    record(
        "403 a cashier writes",
        error_answer(
            req(Method::Post, products, Some(&cashier))
                .header(ContentType::JSON)
                .body(product("C", 1).to_string())
                .dispatch()
                .await,
        )
        .await,
    );
    let missing = format!("{products}/{}", Uuid::new_v4());
    record(
        "404 another merchant's or no product",
        error_answer(req(Method::Get, &missing, Some(&m.token)).dispatch().await).await,
    );
    record(
        "404 no route",
        error_answer(req(Method::Get, "/no/such/route", None).dispatch().await).await,
    );
    record(
        "409 a taken SKU",
        error_answer(
            req(Method::Post, products, Some(&m.token))
                .header(ContentType::JSON)
                .body(product("TAKEN", 1).to_string())
                .dispatch()
                .await,
        )
        .await,
    );
    record(
        "413 a body over the limit",
        error_answer(
            req(Method::Post, products, Some(&m.token))
                .header(ContentType::JSON)
                .body(product(&"x".repeat(70 * 1024), 1).to_string())
                .dispatch()
                .await,
        )
        .await,
    );
    record(
        "415 a form instead of JSON",
        error_answer(
            req(Method::Post, products, Some(&m.token))
                .header(ContentType::Form)
                .body("sku=x")
                .dispatch()
                .await,
        )
        .await,
    );
    record(
        "422 a field out of range",
        error_answer(
            req(Method::Post, products, Some(&m.token))
                .header(ContentType::JSON)
                .body(product("NEG", -1).to_string())
                .dispatch()
                .await,
        )
        .await,
    );
    record(
        "422 malformed JSON",
        error_answer(
            req(Method::Post, products, Some(&m.token))
                .header(ContentType::JSON)
                .body("{\"sku\":")
                .dispatch()
                .await,
        )
        .await,
    );
    // One address, so that the limit of one attempt an hour applies.
    let login = || {
        req(Method::Post, api!("/auth/login"), None)
            .remote("203.0.113.9:4000".parse().unwrap())
            .header(ContentType::JSON)
            .body(
                json!({ "merchant": m.slug, "email": "nobody@envelopes.test", "password": "wrong password" })
                    .to_string(),
            )
    };
    record(
        "401 wrong credentials",
        error_answer(login().dispatch().await).await,
    );
    record(
        "429 too many attempts",
        error_answer(login().dispatch().await).await,
    );

    // The merchant at a limit of its plan (it has one product), and
    // without a feature.
    let admin = t.admin_token();
    let (status, _) = t
        .post(
            &format!("{API}/admin/tenants/{}/plan", m.id),
            &admin,
            json!({ "limitOverrides": { "maxProducts": 1 } }),
        )
        .await;
    assert_eq!(status, Status::Ok);
    record(
        "409 a plan limit reached",
        error_answer(
            req(Method::Post, products, Some(&m.token))
                .header(ContentType::JSON)
                .body(product("MORE", 1).to_string())
                .dispatch()
                .await,
        )
        .await,
    );
    let (status, _) = t
        .request(
            Method::Put,
            &format!("{API}/admin/tenants/{}/flags/offline_bills", m.id),
            Some(&admin),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, Status::Ok);
    record(
        "403 a feature that is off",
        error_answer(
            req(Method::Post, api!("/offline-bills"), Some(&m.token))
                .header(ContentType::JSON)
                .body(json!({ "bills": [] }).to_string())
                .dispatch()
                .await,
        )
        .await,
    );

    // The merchant's database stops taking connections.
    let db = tenant_database_name(m.id);
    Server::get()
        .superuser()
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';"
        ))
        .unwrap();
    t.app().pools.evict(m.id);
    let unavailable =
        error_answer(req(Method::Get, products, Some(&m.token)).dispatch().await).await;
    Server::get()
        .superuser()
        .batch_execute(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true"))
        .unwrap();
    record("503 the tenant's database is down", unavailable);

    for (name, answer) in &answers {
        assert!(
            name.starts_with(&answer["status"].to_string()),
            "{name} answered {answer}"
        );
    }
    snapshot_settings().bind(|| insta::assert_json_snapshot!("error_envelopes", answers));
}

#[rocket::async_test]
async fn openapi_document() {
    let t = TestApp::new().await;
    let res = t.send(Method::Get, "/openapi.json", None, None, &[]).await;
    assert_eq!(res.status(), Status::Ok);
    let doc: Value = serde_json::from_str(&res.into_string().await.unwrap()).unwrap();
    // To accept a deliberate change to the API:
    //   INSTA_UPDATE=always cargo test --test api contract::openapi_document
    // and review `git diff tests/api/snapshots/` (or `cargo insta review`).
    // The version is the crate's, bumped at each release.
    snapshot_settings()
        .bind(|| insta::assert_json_snapshot!("openapi", doc, { ".info.version" => "[version]" }));
}
