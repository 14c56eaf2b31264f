//! Products CRUD, the same body on every tier.

use rocket::http::Status;
use serde_json::json;

use crate::common::{TestApp, api, assert_error, assert_error_about};
use posd::{auth::Role, tenancy::Tier};

async fn crud(tier: Tier) {
    let t = TestApp::new().await;
    let m = t.merchant("crud-shop", tier).await;
    let base = api!("/products");

    let (status, created) = t
        .post(
            base,
            &m.token,
            json!({ "sku": "ESP-1", "name": "Espresso", "priceMinor": 280, "taxRateBps": 550, "trackStock": true }),
        )
        .await;
    assert_eq!(status, Status::Created, "{created}");
    assert_eq!(created["sku"], "ESP-1");
    assert_eq!(created["priceMinor"], 280);
    assert_eq!(created["taxRateBps"], 550);
    assert_eq!(created["trackStock"], true);
    assert_eq!(created["active"], true);
    assert!(
        created.get("merchantId").is_none(),
        "merchant id is not exposed"
    );
    let id = created["id"].as_str().unwrap().to_string();

    let (status, got) = t.get(&format!("{base}/{id}"), &m.token).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(got, created);

    let (status, patched) = t
        .patch(
            &format!("{base}/{id}"),
            &m.token,
            json!({ "name": "Double espresso", "priceMinor": 350 }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{patched}");
    assert_eq!(patched["name"], "Double espresso");
    assert_eq!(patched["priceMinor"], 350);
    assert_eq!(
        patched["sku"], "ESP-1",
        "untouched fields keep their values"
    );

    let (status, dup) = t
        .post(
            base,
            &m.token,
            json!({ "sku": "ESP-1", "name": "Again", "priceMinor": 1 }),
        )
        .await;
    assert_error((status, &dup), Status::Conflict, "sku_taken");

    for i in 0..5 {
        t.product(&m, &format!("BULK-{i}")).await;
    }
    // Cursor pagination walks every product exactly once, in creation order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}?limit=2&cursor={c}"),
            None => format!("{base}?limit=2"),
        };
        let (status, page) = t.get(&path, &m.token).await;
        assert_eq!(status, Status::Ok, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["sku"].as_str().unwrap().to_string());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["ESP-1", "BULK-0", "BULK-1", "BULK-2", "BULK-3", "BULK-4"]
    );

    let (status, found) = t.get(&format!("{base}?q=double"), &m.token).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    let (_, wild) = t.get(&format!("{base}?q=%25"), &m.token).await;
    assert_eq!(
        wild["items"].as_array().unwrap().len(),
        0,
        "% is matched literally"
    );

    let (status, _) = t.delete(&format!("{base}/{id}"), &m.token).await;
    assert_eq!(status, Status::NoContent);
    let (status, gone) = t.get(&format!("{base}/{id}"), &m.token).await;
    assert_error((status, &gone), Status::NotFound, "not_found");
    let (status, _) = t.delete(&format!("{base}/{id}"), &m.token).await;
    assert_eq!(status, Status::NotFound);
}

#[rocket::async_test]
async fn crud_on_shared_tier() {
    crud(Tier::Shared).await;
}

#[rocket::async_test]
async fn crud_on_schema_tier() {
    crud(Tier::Schema).await;
}

#[rocket::async_test]
async fn crud_on_dedicated_tier() {
    crud(Tier::Dedicated).await;
}

#[rocket::async_test]
async fn validation_errors_name_the_field() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("valid-shop").await;
    let base = api!("/products");
    let cases = [
        (json!({ "sku": "", "name": "x", "priceMinor": 1 }), "sku"),
        (
            json!({ "sku": "A", "name": "x", "priceMinor": -1 }),
            "priceMinor",
        ),
        (
            json!({ "sku": "A", "name": "x", "priceMinor": 1, "taxRateBps": 10001 }),
            "taxRateBps",
        ),
        (json!({ "sku": "A", "name": "x" }), "priceMinor"),
        (
            json!({ "sku": "A", "name": "x", "priceMinor": "12" }),
            "string",
        ),
        (
            json!({ "sku": "A", "name": "x", "priceMinor": 1, "colour": "red" }),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = t.post(base, &m.token, body.clone()).await;
        assert_eq!(status, Status::UnprocessableEntity, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{body}: message `{message}` names {field}"
        );
    }
    for bad in [
        "limit=0",
        "limit=201",
        "limit=x",
        "cursor=nope",
        "categoryId=1",
        "active=maybe",
    ] {
        let (status, err) = t.get(&format!("{base}?{bad}"), &m.token).await;
        assert_error_about(
            bad,
            (status, &err),
            Status::UnprocessableEntity,
            "validation_failed",
        );
    }
    let (_, list) = t.get(base, &m.token).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "nothing was written"
    );
}

#[rocket::async_test]
async fn cashiers_read_but_do_not_write() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("role-shop").await;
    let id = t.product(&m, "R-1").await;
    let cashier = t.staff_token(m.id, Role::Cashier);
    let base = api!("/products");
    let (status, _) = t.get(base, &cashier).await;
    assert_eq!(status, Status::Ok);
    let (status, err) = t
        .post(
            base,
            &cashier,
            json!({ "sku": "C", "name": "c", "priceMinor": 1 }),
        )
        .await;
    assert_error((status, &err), Status::Forbidden, "insufficient_role");
    let (status, _) = t
        .patch(&format!("{base}/{id}"), &cashier, json!({ "name": "x" }))
        .await;
    assert_eq!(status, Status::Forbidden);
    let (status, _) = t.delete(&format!("{base}/{id}"), &cashier).await;
    assert_eq!(status, Status::Forbidden);
    let manager = t.staff_token(m.id, Role::Manager);
    let (status, _) = t
        .patch(&format!("{base}/{id}"), &manager, json!({ "name": "y" }))
        .await;
    assert_eq!(status, Status::Ok);
}
