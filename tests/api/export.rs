//! `GET /admin/tenants/{id}/export`: the merchant's whole data plane and
//! nothing of anyone else's, on every tier; it unlocks deprovisioning.

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
        let doc: Value = serde_json::from_str(&res.into_string().await.unwrap()).unwrap();
        assert_eq!(doc["tier"], tier.as_str());
        let tables = doc["tables"].as_object().unwrap();
        assert_eq!(tables.len(), TENANT.len(), "every tenant table");
        let rows = |t: &str| doc["tables"][t].as_array().unwrap().clone();
        assert_eq!(rows("products").len(), 1);
        assert_eq!(rows("products")[0]["sku"], "EXPORTED");
        assert_eq!(rows("orders")[0]["id"], order["id"]);
        assert_eq!(rows("order_lines").len(), 1);
        assert_eq!(rows("payments").len(), 1);
        assert_eq!(rows("customers")[0]["name"], "Kept");
        assert_eq!(rows("stock_movements").len(), 2, "receive and sale");
        assert_eq!(
            rows("idempotency_keys").len(),
            1,
            "keys travel with the data"
        );
        for (name, rows) in tables {
            for r in rows.as_array().unwrap() {
                assert_eq!(
                    r["merchant_id"],
                    m.id.to_string(),
                    "{name}: only this merchant's rows"
                );
            }
        }

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
    let (s, _) = t
        .get(&format!("{API}/admin/tenants/{}/export", m.id), &admin)
        .await;
    assert_eq!(s, Status::Ok);
    let (s, body) = t
        .post(&deprovision, &admin, json!({ "force": false }))
        .await;
    assert_eq!(s, Status::Ok, "{body}");
    let (_, tenant) = t
        .get(&format!("{API}/admin/tenants/{}", m.id), &admin)
        .await;
    assert_eq!(tenant["tier"], "shared");
}
