//! `GET /admin/tenants/{id}/export`: the merchant's whole data plane and
//! nothing of anyone else's, on every tier, as an archive that
//! `posd tenants restore` reads back; it unlocks deprovisioning.

use rocket::http::{Method, Status};
use serde_json::{Value, json};

use crate::common::{API, TIERS, TestApp, api, assert_error};
use posd::tenancy::{Tier, classification::TENANT};

#[rocket::async_test]
async fn an_export_holds_the_merchants_data_and_only_it() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    for tier in TIERS {
        let m = t.merchant(&format!("exp-{}", tier.as_str()), tier).await;
        let other = t
            .merchant(&format!("exp-other-{}", tier.as_str()), tier)
            .await;
        let p = t.stocked_product(&m, "EXPORTED", 300, 1000, Some(5)).await;
        let order = t.sell(&m, &p, 2, 660).await;
        let (s, _) = t
            .post(api!("/customers"), &m.token, json!({ "name": "Kept" }))
            .await;
        assert_eq!(s, Status::Created);
        t.stocked_product(&other, "NOT-MINE", 100, 0, Some(1)).await;

        let path = format!("{API}/admin/tenants/{}/export", m.id);
        let res = t.send(Method::Get, &path, Some(&admin), None, &[]).await;
        assert_eq!(res.status(), Status::Ok);
        let disposition = res
            .headers()
            .get_one("Content-Disposition")
            .unwrap()
            .to_string();
        assert!(
            disposition.starts_with(&format!(
                "attachment; filename=\"posd-export-exp-{}-",
                tier.as_str()
            )),
            "{disposition}"
        );
        assert_eq!(res.content_type(), Some(rocket::http::ContentType::Binary));
        let bytes = res.into_bytes().await.unwrap();
        let mut lines = bytes.splitn(3, |b| *b == b'\n');
        assert_eq!(lines.next(), Some(&b"posd-export 1"[..]));
        let manifest: Value = serde_json::from_slice(lines.next().unwrap()).unwrap();
        assert_eq!(manifest["tier"], tier.as_str());
        assert_eq!(manifest["merchantId"], m.id.to_string());
        let tables = manifest["tables"].as_array().unwrap();
        assert_eq!(tables.len(), TENANT.len(), "every tenant table");
        let rows = |name: &str| {
            tables
                .iter()
                .find(|t| t["table"] == name)
                .and_then(|t| t["rows"].as_i64())
                .unwrap()
        };
        assert_eq!(rows("products"), 1);
        assert_eq!(rows("orders"), 1);
        assert_eq!(rows("order_lines"), 1);
        assert_eq!(rows("payments"), 1);
        assert_eq!(rows("customers"), 1);
        assert_eq!(rows("stock_movements"), 2, "receive and sale");
        assert_eq!(rows("idempotency_keys"), 1, "keys travel with the data");
        let data = lines.next().unwrap();
        let holds = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
        assert!(holds(b"EXPORTED") && holds(b"Kept"), "the merchant's rows");
        let order_id = uuid::Uuid::parse_str(order["id"].as_str().unwrap()).unwrap();
        assert!(holds(order_id.as_bytes()), "its order, by id");
        assert!(
            !holds(b"NOT-MINE"),
            "another merchant's product is in the export"
        );

        // Staff tokens cannot export; unknown merchants are 404.
        let (s, _) = t.get(&path, &m.token).await;
        assert_eq!(s, Status::Unauthorized);
        let (s, _) = t
            .get(
                &format!("{API}/admin/tenants/{}/export", uuid::Uuid::new_v4()),
                &admin,
            )
            .await;
        assert_eq!(s, Status::NotFound);
    }
}

#[rocket::async_test]
async fn deprovisioning_without_force_needs_an_export() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let m = t.merchant("exp-deprov", Tier::Schema).await;
    t.product(&m, "GONE-SOON").await;
    let deprovision = format!("{API}/admin/tenants/{}/deprovision", m.id);
    let (s, e) = t
        .post(&deprovision, &admin, json!({ "force": false }))
        .await;
    assert_error((s, &e), Status::Conflict, "export_required");
    let path = format!("{API}/admin/tenants/{}/export", m.id);
    let res = t.send(Method::Get, &path, Some(&admin), None, &[]).await;
    assert_eq!(res.status(), Status::Ok);
    assert!(
        res.into_bytes()
            .await
            .is_some_and(|b| b.starts_with(b"posd-export 1\n"))
    );
    let (s, body) = t
        .post(&deprovision, &admin, json!({ "force": false }))
        .await;
    assert_eq!(s, Status::Ok, "{body}");
    let (_, tenant) = t
        .get(&format!("{API}/admin/tenants/{}", m.id), &admin)
        .await;
    assert_eq!(tenant["tier"], "shared");
}
