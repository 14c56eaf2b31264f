//! The OpenAPI document and the browsable documentation.

use std::collections::BTreeSet;

use rocket::http::{ContentType, Method, Status};
use serde_json::Value;

use crate::common::{TestApp, api, assert_error, read};

/// Routes that serve the documentation itself.
const DOC_ROUTES: [&str; 3] = ["/openapi.json", "/docs", "/docs/{file}"];

/// `/api/v2/POS/products/<id>?<query..>` as OpenAPI writes it:
/// `/api/v2/POS/products/{id}`.
fn openapi_path(uri: &str) -> String {
    let path = uri.split('?').next().unwrap_or(uri);
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
                Some(name) => format!("{{{}}}", name.trim_end_matches("..")),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

async fn document(t: &TestApp) -> Value {
    let res = t.send(Method::Get, "/openapi.json", None, None, &[]).await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(res.content_type(), Some(ContentType::JSON));
    let text = res.into_string().await.unwrap();
    serde_json::from_str(&text).expect("the document is JSON")
}

#[rocket::async_test]
async fn every_route_is_documented_with_its_method() {
    let t = TestApp::new().await;
    let doc = document(&t).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "posd");
    let paths = doc["paths"].as_object().unwrap();

    let mut routed = BTreeSet::new();
    for route in t.client.rocket().routes() {
        let path = openapi_path(&route.uri.to_string());
        if DOC_ROUTES.contains(&path.as_str()) {
            continue;
        }
        let method = route.method.as_str().to_lowercase();
        assert!(
            paths.get(&path).and_then(|p| p.get(&method)).is_some(),
            "{method} {path} is routed but not in /openapi.json"
        );
        routed.insert((path, method));
    }
    // ... and nothing is documented that is not routed.
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            assert!(
                routed.contains(&(path.clone(), method.clone())),
                "{method} {path} is documented but not routed"
            );
        }
    }
    // The contract's paths are all there.
    for path in [
        "/healthz",
        "/readyz",
        api!("/auth/login"),
        api!("/categories/{id}"),
        api!("/products/{id}"),
        api!("/inventory/adjustments"),
        api!("/customers/{id}"),
        api!("/orders/{id}/refunds"),
        api!("/orders/{id}/void"),
        api!("/reports/daily"),
        api!("/offline-bills"),
        api!("/staff/{id}"),
        api!("/admin/merchants"),
        api!("/admin/tenants/{id}"),
        api!("/admin/tenant/provision"),
        api!("/admin/tenants/migrate"),
    ] {
        assert!(paths.contains_key(path), "{path} is missing");
    }
}

#[rocket::async_test]
async fn security_idempotency_and_errors_are_described() {
    let t = TestApp::new().await;
    let doc = document(&t).await;
    let schemes = &doc["components"]["securitySchemes"];
    for name in ["staff", "admin"] {
        assert_eq!(schemes[name]["type"], "http", "{name}");
        assert_eq!(schemes[name]["scheme"], "bearer", "{name}");
        assert_eq!(schemes[name]["bearerFormat"], "JWT", "{name}");
    }
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    assert_eq!(
        op(api!("/products"), "get")["security"][0]["staff"],
        serde_json::json!([])
    );
    assert_eq!(
        op(api!("/admin/merchants"), "post")["security"][0]["admin"],
        serde_json::json!([])
    );
    assert!(op(api!("/auth/login"), "post").get("security").is_none());

    for path in [
        api!("/orders"),
        api!("/orders/{id}/refunds"),
        api!("/orders/{id}/void"),
    ] {
        let params = op(path, "post")["parameters"].clone();
        let key = params
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{path} lacks Idempotency-Key"));
        assert_eq!(key["in"], "header");
        assert_eq!(key["required"], true);
    }

    // The error envelope schema has the shape a real error has.
    let envelope = &doc["components"]["schemas"]["Error"];
    let detail_ref = envelope["properties"]["error"]["$ref"].as_str().unwrap();
    let detail = &doc["components"]["schemas"][detail_ref.rsplit('/').next().unwrap()];
    let mut documented: Vec<&str> = detail["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort_unstable();
    let (status, real) = t.get(api!("/products"), &t.admin_token()).await;
    assert_eq!(status, Status::Unauthorized);
    let mut actual: Vec<&str> = real["error"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    actual.sort_unstable();
    // Every error has the required fields, and nothing undocumented; the
    // optional `details` comes with some codes only.
    let mut required: Vec<&str> = detail["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(required, actual);
    assert_eq!(documented, ["code", "details", "message"]);
    assert_eq!(real.as_object().unwrap().len(), 1);

    // Error responses point at it; status codes follow the contract.
    let create = op(api!("/orders"), "post");
    for code in ["201", "401", "403", "409", "422"] {
        assert!(
            create["responses"].get(code).is_some(),
            "POST /orders {code}"
        );
    }
    let unauthorized = &doc["components"]["responses"]["Unauthorized"];
    assert_eq!(
        unauthorized["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );
    assert!(op(api!("/staff"), "post")["responses"].get("201").is_some());
    let price = &doc["components"]["schemas"]["Product"]["properties"]["priceMinor"];
    assert_eq!(price["type"], "integer", "money is integer minor units");
}

#[rocket::async_test]
async fn the_browsable_docs_answer_html() {
    let t = TestApp::new().await;
    for path in ["/docs", "/docs/"] {
        let res = t.send(Method::Get, path, None, None, &[]).await;
        assert_eq!(res.status(), Status::Ok, "{path}");
        assert_eq!(res.content_type(), Some(ContentType::HTML), "{path}");
        let html = res.into_string().await.unwrap();
        assert!(html.contains("swagger-ui"), "{path}");
        assert!(html.contains("<base href=\"/docs/\">"), "{path}");
    }
    let res = t
        .send(Method::Get, "/docs/swagger-initializer.js", None, None, &[])
        .await;
    assert_eq!(res.status(), Status::Ok);
    let js = res.into_string().await.unwrap();
    assert!(js.contains("/openapi.json"), "the UI loads our document");
    let (status, err) = t
        .request(Method::Get, "/docs/no-such-file.js", None, None)
        .await;
    assert_error((status, &err), Status::NotFound, "not_found");
}

#[rocket::async_test]
async fn shared_responses_are_documented_where_they_apply() {
    let t = TestApp::new().await;
    let doc = document(&t).await;
    let mut with_body = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = &op["responses"];
            if op.get("requestBody").is_some() {
                with_body += 1;
                assert_eq!(
                    responses["400"]["$ref"], "#/components/responses/BadRequest",
                    "{method} {path} reads a body: 400"
                );
            }
            if method == "post" && path == api!("/auth/login") {
                assert_eq!(
                    responses["429"]["$ref"], "#/components/responses/TooManyRequests",
                    "login is rate limited: 429"
                );
            }
        }
    }
    assert!(with_body >= 15, "{with_body} operations with a body");
    let components = &doc["components"]["responses"];
    for name in ["BadRequest", "TooManyRequests"] {
        assert_eq!(
            components[name]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error",
            "{name}"
        );
    }
    assert!(
        components["TooManyRequests"]["headers"]
            .get("Retry-After")
            .is_some()
    );

    // What the document says is what posd answers: a body that is not UTF-8
    // is a 400 with the error envelope.
    let res = t
        .client
        .post(api!("/auth/login"))
        .header(ContentType::JSON)
        .body([0xff, 0xfe])
        .dispatch()
        .await;
    assert_error(read(res).await, Status::BadRequest, "bad_request");
}
