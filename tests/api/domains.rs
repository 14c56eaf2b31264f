//! Merchants found by their address: `<slug>.<base domain>` and verified
//! custom domains, login without a merchant field from them, a token of
//! another merchant refused on a merchant's host, unknown hosts, the
//! operator's domain routes, and a removal reaching a second instance.

use std::time::{Duration, Instant};

use rocket::{
    http::{ContentType, Header, Method, Status},
    local::asynchronous::Client,
};
use serde_json::{Value, json};

use crate::common::{API, Merchant, TestApp, api, assert_error, read};

const BASE: &str = "pos.test";

async fn app() -> TestApp {
    TestApp::with_config(|s| s.base_domain = Some(BASE.into())).await
}

/// A request to `host` (no `Host` header when `None`).
async fn call(
    client: &Client,
    method: Method,
    path: &str,
    host: Option<&str>,
    token: Option<&str>,
    body: Option<Value>,
) -> (Status, Value) {
    let mut req = client.req(method, path.to_string());
    if let Some(h) = host {
        req = req.header(Header::new("Host", h.to_string()));
    }
    if let Some(t) = token {
        req = req.header(Header::new("Authorization", format!("Bearer {t}")));
    }
    if let Some(b) = body {
        req = req.header(ContentType::JSON).body(b.to_string());
    }
    read(req.dispatch().await).await
}

/// The owner's login (as `shared_merchant` made it) sent to `host`, with
/// `merchant` in the body if given.
async fn login(
    client: &Client,
    host: Option<&str>,
    m: &Merchant,
    merchant: Option<&str>,
) -> (Status, Value) {
    let mut body =
        json!({ "email": format!("owner@{}.test", m.slug), "password": "correct horse battery" });
    if let Some(slug) = merchant {
        body["merchant"] = json!(slug);
    }
    call(
        client,
        Method::Post,
        api!("/auth/login"),
        host,
        None,
        Some(body),
    )
    .await
}

async fn add_domain(t: &TestApp, m: &Merchant, domain: &str) -> (Status, Value) {
    t.post(
        &format!("{API}/admin/tenants/{}/domains", m.id),
        &t.admin_token(),
        json!({ "domain": domain }),
    )
    .await
}

async fn verify(t: &TestApp, m: &Merchant, domain: &str) -> Value {
    let (status, body) = t
        .post(
            &format!("{API}/admin/tenants/{}/domains/{domain}/verify", m.id),
            &t.admin_token(),
            json!(null),
        )
        .await;
    assert_eq!(status, Status::Ok, "verify {domain}: {body}");
    body
}

#[rocket::async_test]
async fn a_slug_host_logs_in_without_the_merchant_field() {
    let t = app().await;
    let m = t.shared_merchant("corner-cafe").await;
    let other = t.shared_merchant("big-store").await;
    let host = Some("corner-cafe.pos.test");

    let (status, token) = login(&t.client, host, &m, None).await;
    assert_eq!(status, Status::Ok, "{token}");
    assert_eq!(token["merchantId"], json!(m.id.to_string()));
    // The token works on its merchant's host.
    let token = token["token"].as_str().unwrap().to_string();
    let (status, body) = call(
        &t.client,
        Method::Get,
        api!("/products"),
        host,
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, Status::Ok, "{body}");

    // Naming the host's merchant is fine; naming another is not.
    let (status, body) = login(&t.client, host, &m, Some("corner-cafe")).await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_error(
        login(&t.client, host, &m, Some(&other.slug)).await,
        Status::Forbidden,
        "tenant_mismatch",
    );
    // Neither a merchant host nor a merchant field: the field is missing,
    // as before; the base domain itself is the platform.
    for host in [None, Some(BASE), Some("127.0.0.1:8000")] {
        let message = assert_error(
            login(&t.client, host, &m, None).await,
            Status::UnprocessableEntity,
            "invalid_body",
        );
        assert!(message.contains("merchant"), "{message}");
        let (status, body) = login(&t.client, host, &m, Some("corner-cafe")).await;
        assert_eq!(status, Status::Ok, "{host:?}: {body}");
    }
}

#[rocket::async_test]
async fn hosts_match_case_insensitively_without_port_or_trailing_dot() {
    let t = app().await;
    let m = t.shared_merchant("corner-cafe").await;
    for host in [
        "corner-cafe.pos.test",
        "Corner-Cafe.POS.test",
        "corner-cafe.pos.test.",
        "CORNER-CAFE.pos.test.:8443",
    ] {
        let (status, body) = login(&t.client, Some(host), &m, None).await;
        assert_eq!(status, Status::Ok, "{host}: {body}");
        assert_eq!(body["merchantId"], json!(m.id.to_string()), "{host}");
    }
    // Exact: one label before the base domain, and only a slug that exists.
    for host in [
        "x.corner-cafe.pos.test",
        "nobody.pos.test",
        "corner-cafe.pos.test.example",
    ] {
        assert_error(
            login(&t.client, Some(host), &m, Some("corner-cafe")).await,
            Status::NotFound,
            "unknown_host",
        );
    }
}

#[rocket::async_test]
async fn a_custom_domain_routes_once_verified() {
    let t = app().await;
    let m = t.shared_merchant("corner-cafe").await;
    let (status, row) = add_domain(&t, &m, "Shop.Example.org").await;
    assert_eq!(status, Status::Created, "{row}");
    assert_eq!(row["domain"], "shop.example.org");
    assert_eq!(row["merchantId"], json!(m.id.to_string()));
    assert!(row["verifiedAt"].is_null(), "{row}");

    // Pending: it does not route.
    assert_error(
        login(&t.client, Some("shop.example.org"), &m, None).await,
        Status::NotFound,
        "unknown_host",
    );
    let row = verify(&t, &m, "shop.example.org").await;
    assert!(row["verifiedAt"].is_string(), "{row}");
    let (status, body) = login(&t.client, Some("SHOP.example.org.:443"), &m, None).await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(body["merchantId"], json!(m.id.to_string()));
    // Verifying again changes nothing.
    assert_eq!(
        verify(&t, &m, "shop.example.org").await["verifiedAt"],
        row["verifiedAt"]
    );

    let (status, list) = t
        .get(
            &format!("{API}/admin/tenants/{}/domains", m.id),
            &t.admin_token(),
        )
        .await;
    assert_eq!(status, Status::Ok, "{list}");
    assert_eq!(list["items"], json!([row]));
}

#[rocket::async_test]
async fn a_token_of_another_merchant_is_refused_on_a_merchants_host() {
    let t = app().await;
    let a = t.shared_merchant("alpha").await;
    let b = t.shared_merchant("bravo").await;
    assert_eq!(
        add_domain(&t, &b, "bravo.example.org").await.0,
        Status::Created
    );
    verify(&t, &b, "bravo.example.org").await;

    for host in ["bravo.pos.test", "bravo.example.org"] {
        assert_error(
            call(
                &t.client,
                Method::Get,
                api!("/products"),
                Some(host),
                Some(&a.token),
                None,
            )
            .await,
            Status::Forbidden,
            "tenant_mismatch",
        );
        let (status, body) = call(
            &t.client,
            Method::Get,
            api!("/products"),
            Some(host),
            Some(&b.token),
            None,
        )
        .await;
        assert_eq!(status, Status::Ok, "{host}: {body}");
    }
    // On the platform's hosts a token works as before.
    for host in [None, Some(BASE), Some("localhost:8000")] {
        let (status, body) = call(
            &t.client,
            Method::Get,
            api!("/products"),
            host,
            Some(&a.token),
            None,
        )
        .await;
        assert_eq!(status, Status::Ok, "{host:?}: {body}");
    }
    // Operator routes work from any host posd knows.
    let (status, body) = call(
        &t.client,
        Method::Get,
        api!("/admin/tenants"),
        Some("bravo.pos.test"),
        Some(&t.admin_token()),
        None,
    )
    .await;
    assert_eq!(status, Status::Ok, "{body}");
}

#[rocket::async_test]
async fn an_unknown_host_is_404_on_every_route_and_runs_no_handler() {
    let t = app().await;
    let m = t.shared_merchant("corner-cafe").await;
    let admin = t.admin_token();
    let host = Some("nowhere.example.net");
    for (method, path, token) in [
        (Method::Get, "/healthz", None),
        (Method::Get, api!("/products"), Some(m.token.as_str())),
        (Method::Get, api!("/admin/tenants"), Some(admin.as_str())),
    ] {
        assert_error(
            call(&t.client, method, path, host, token, None).await,
            Status::NotFound,
            "unknown_host",
        );
    }
    let (status, body) = call(
        &t.client,
        Method::Post,
        api!("/admin/merchants"),
        host,
        Some(&admin),
        Some(json!({
            "slug": "sneaky", "name": "Sneaky", "timezone": "UTC", "currency": "EUR",
            "owner": { "email": "o@sneaky.test", "password": "correct horse battery" }
        })),
    )
    .await;
    assert_error((status, &body), Status::NotFound, "unknown_host");
    let (_, tenants) = t.get(api!("/admin/tenants"), &admin).await;
    assert_eq!(
        tenants["items"].as_array().map(Vec::len),
        Some(1),
        "{tenants}"
    );
}

#[rocket::async_test]
async fn without_a_base_domain_unknown_hosts_are_the_platform() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("corner-cafe").await;
    let (status, body) = call(
        &t.client,
        Method::Get,
        "/healthz",
        Some("posd.internal"),
        None,
        None,
    )
    .await;
    assert_eq!(status, Status::Ok, "{body}");
    let (status, body) = login(
        &t.client,
        Some("corner-cafe.pos.test"),
        &m,
        Some("corner-cafe"),
    )
    .await;
    assert_eq!(status, Status::Ok, "{body}");
    // Custom domains still route.
    assert_eq!(
        add_domain(&t, &m, "shop.example.org").await.0,
        Status::Created
    );
    verify(&t, &m, "shop.example.org").await;
    let (status, body) = login(&t.client, Some("shop.example.org"), &m, None).await;
    assert_eq!(status, Status::Ok, "{body}");
}

#[rocket::async_test]
async fn registering_domains_checks_them() {
    let t = app().await;
    let a = t.shared_merchant("alpha").await;
    let b = t.shared_merchant("bravo").await;
    assert_eq!(
        add_domain(&t, &a, "shop.example.org").await.0,
        Status::Created
    );
    // The same merchant again: what it has.
    let (status, row) = add_domain(&t, &a, "shop.example.org").await;
    assert_eq!(status, Status::Ok, "{row}");
    assert_error(
        add_domain(&t, &b, "SHOP.example.org").await,
        Status::Conflict,
        "domain_taken",
    );
    for domain in ["pos.test", "alpha.pos.test", "x.bravo.pos.test"] {
        let message = assert_error(
            add_domain(&t, &a, domain).await,
            Status::UnprocessableEntity,
            "validation_failed",
        );
        assert!(message.starts_with("domain:"), "{message}");
    }
    for domain in [
        "localhost",
        "1.2.3.4",
        "shop..example.org",
        "-shop.example.org",
        "shop.example.org.",
        "shop example.org",
    ] {
        assert_error(
            add_domain(&t, &a, domain).await,
            Status::UnprocessableEntity,
            "validation_failed",
        );
    }
    let admin = t.admin_token();
    let none = uuid::Uuid::new_v4();
    assert_error(
        add_domain(
            &t,
            &Merchant {
                id: posd::db::ids::MerchantId(none),
                ..a.clone()
            },
            "new.example.org",
        )
        .await,
        Status::NotFound,
        "not_found",
    );
    // Another merchant's domain is not the merchant's to verify or remove.
    let path = format!("{API}/admin/tenants/{}/domains/shop.example.org", b.id);
    assert_error(t.delete(&path, &admin).await, Status::NotFound, "not_found");
    assert_error(
        t.post(&format!("{path}/verify"), &admin, json!(null)).await,
        Status::NotFound,
        "not_found",
    );
}

/// The merchant's products through `shop.example.org`.
async fn products(client: &Client, token: &str) -> (Status, Value) {
    call(
        client,
        Method::Get,
        api!("/products"),
        Some("shop.example.org"),
        Some(token),
        None,
    )
    .await
}

#[rocket::async_test]
async fn removing_a_domain_stops_routing_on_every_instance() {
    let t = app().await;
    let m = t.shared_merchant("corner-cafe").await;
    let other = t
        .second_instance(|s| s.base_domain = Some(BASE.into()))
        .await;
    assert_eq!(
        add_domain(&t, &m, "shop.example.org").await.0,
        Status::Created
    );
    verify(&t, &m, "shop.example.org").await;
    // A staff request (not a login: those are rate-limited) to the domain
    // through the second instance, which caches what the host names; its
    // first lookup may come before the NOTIFY of the verification: poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = products(&other.client, &m.token).await;
        if status == Status::Ok {
            break;
        }
        assert_error((status, &body), Status::NotFound, "unknown_host");
        assert!(
            Instant::now() < deadline,
            "the second instance never routed the verified domain"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (status, body) = t
        .delete(
            &format!("{API}/admin/tenants/{}/domains/shop.example.org", m.id),
            &t.admin_token(),
        )
        .await;
    assert_eq!(status, Status::NoContent, "{body}");
    // At once on this instance; on the other once the NOTIFY is there.
    assert_error(
        products(&t.client, &m.token).await,
        Status::NotFound,
        "unknown_host",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = products(&other.client, &m.token).await;
        if status == Status::NotFound {
            assert_error((status, &body), Status::NotFound, "unknown_host");
            break;
        }
        assert_eq!(status, Status::Ok, "{body}");
        assert!(
            Instant::now() < deadline,
            "the removal never reached the second instance"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
