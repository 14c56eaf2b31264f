//! Every answer is JSON: unknown routes, wrong methods, oversize and
//! malformed bodies, wrong content types.

use rocket::http::{ContentType, Header, Status};
use serde_json::{Value, json};

use crate::common::{API, TestApp, api, assert_error};

async fn json_error(res: rocket::local::asynchronous::LocalResponse<'_>) -> (Status, Value) {
    let status = res.status();
    assert_eq!(res.content_type(), Some(ContentType::JSON), "{status}");
    let body: Value = serde_json::from_str(&res.into_string().await.unwrap()).unwrap();
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body)
}

#[rocket::async_test]
async fn errors_are_json() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("err-shop").await;
    let auth = Header::new("Authorization", format!("Bearer {}", m.token));

    let (s, b) = json_error(t.client.get("/no/such/route").dispatch().await).await;
    assert_error((s, &b), Status::NotFound, "not_found");

    let (s, _) = json_error(
        t.client
            .put(api!("/products"))
            .header(auth.clone())
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(s, Status::NotFound);

    let (s, _) = json_error(
        t.client
            .get(api!("/products/not-a-uuid"))
            .header(auth.clone())
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(s, Status::NotFound);

    let big = json!({ "sku": "X", "name": "x".repeat(70 * 1024), "priceMinor": 1 }).to_string();
    let (s, b) = json_error(
        t.client
            .post(api!("/products"))
            .header(auth.clone())
            .header(ContentType::JSON)
            .body(big)
            .dispatch()
            .await,
    )
    .await;
    assert_error((s, &b), Status::PayloadTooLarge, "payload_too_large");

    let (s, b) = json_error(
        t.client
            .post(api!("/products"))
            .header(auth.clone())
            .header(ContentType::JSON)
            .body("{\"sku\":")
            .dispatch()
            .await,
    )
    .await;
    assert_error((s, &b), Status::UnprocessableEntity, "invalid_body");

    let (s, _) = json_error(
        t.client
            .post(api!("/products"))
            .header(auth.clone())
            .header(ContentType::Form)
            .body("sku=x")
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(s, Status::UnsupportedMediaType);

    let (_, list) = t.get(api!("/products"), &m.token).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "no failed request wrote anything"
    );

    let res = t.client.get("/healthz").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    let res = t.client.get("/readyz").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
}

#[rocket::async_test]
async fn admin_validation_and_conflicts() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let path = api!("/admin/merchants");
    let good = json!({
        "slug": "adm-shop", "name": "Shop", "timezone": "Europe/Paris", "currency": "EUR",
        "owner": { "email": "o@adm.test", "password": "correct horse battery" }
    });
    for (field, value) in [
        ("slug", json!("Bad Slug")),
        ("timezone", json!("Mars/Olympus")),
        ("currency", json!("euro")),
    ] {
        let mut body = good.clone();
        body[field] = value;
        let (status, err) = t.post(path, &admin, body).await;
        assert_eq!(status, Status::UnprocessableEntity, "{field}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(field));
    }
    let mut weak = good.clone();
    weak["owner"]["password"] = json!("short");
    let (status, _) = t.post(path, &admin, weak).await;
    assert_eq!(status, Status::UnprocessableEntity);
    let (status, _) = t.post(path, &admin, good.clone()).await;
    assert_eq!(status, Status::Created);
    let (status, err) = t.post(path, &admin, good).await;
    assert_error((status, &err), Status::Conflict, "slug_taken");

    let (status, err) = t
        .post(
            api!("/admin/tenant/provision"),
            &admin,
            json!({ "merchantId": uuid::Uuid::new_v4(), "tier": "schema" }),
        )
        .await;
    assert_eq!(status, Status::NotFound, "{err}");
    let (status, _) = t
        .post(
            api!("/admin/tenant/provision"),
            &admin,
            json!({ "merchantId": uuid::Uuid::new_v4(), "tier": "moon" }),
        )
        .await;
    assert_eq!(status, Status::UnprocessableEntity);
}

#[rocket::async_test]
async fn provisioning_refuses_merchants_with_shared_data_and_reprovisioning() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let m = t.shared_merchant("has-data").await;
    t.product(&m, "KEEP-ME").await;
    let (status, err) = t
        .post(
            api!("/admin/tenant/provision"),
            &admin,
            json!({ "merchantId": m.id, "tier": "schema" }),
        )
        .await;
    assert_error((status, &err), Status::Conflict, "tenant_has_data");
    assert!(err["error"]["message"].as_str().unwrap().contains("/move"));
    let (_, list) = t.get(api!("/products"), &m.token).await;
    assert_eq!(
        list["items"][0]["sku"], "KEEP-ME",
        "the merchant still works where it was"
    );

    let s = t.merchant("already", posd::tenancy::Tier::Schema).await;
    let (status, err) = t
        .post(
            api!("/admin/tenant/provision"),
            &admin,
            json!({ "merchantId": s.id, "tier": "dedicated" }),
        )
        .await;
    assert_error((status, &err), Status::Conflict, "already_provisioned");

    let (status, tenant) = t
        .get(&format!("{API}/admin/tenants/{}", s.id), &admin)
        .await;
    assert_eq!(status, Status::Ok);
    assert_eq!(tenant["tier"], "schema");
    assert_eq!(tenant["migrationVersion"], tenant["latestMigrationVersion"]);
}
