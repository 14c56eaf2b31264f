//! A failure after every step of every kind of provisioning leaves nothing
//! behind: no schema, no database, no registry row, no placement; the run
//! names the failed step, and the merchant still works on the shared tier.

use rocket::http::Status;
use serde_json::{Value, json};

use crate::common::assert_error_about;
use crate::{
    byo::ByoDb,
    common::TestApp,
    provisioning::{assert_still_shared, provision, schema_exists},
};
use posd::tenancy::tenant_schema_name;

const SCHEMA_STEPS: &[&str] = &["create_schema", "migrate", "place"];
const DEDICATED_STEPS: &[&str] = &[
    "create_database",
    "secure_database",
    "create_schema",
    "migrate",
    "seal",
    "place",
];
const BYO_STEPS: &[&str] = &["check", "create_schema", "migrate", "seal", "place"];

async fn fail_each_step(tier: &str, steps: &[&str], byo: Option<&ByoDb>) {
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let t = TestApp::with_config(move |s| {
            s.provision_fail_after_step = Some(u32::try_from(n).unwrap());
        })
        .await;
        let m = t.shared_merchant(&format!("fault-{n}")).await;
        let mut body = json!({ "merchantId": m.id.to_string(), "tier": tier });
        if let Some(db) = byo {
            body["databaseUrl"] = Value::from(db.url());
        }
        let (status, answer) = provision(&t, body).await;
        assert_error_about(
            format!("{tier} step {n}"),
            (status, &answer),
            Status::UnprocessableEntity,
            "injected_fault",
        );
        assert_eq!(answer["run"]["status"], "failed");
        assert_eq!(answer["run"]["failedStep"], *step, "{tier} step {n}");
        assert_still_shared(&t, &m).await;
        if let Some(db) = byo {
            assert!(
                !schema_exists(&mut db.superuser(), &tenant_schema_name(m.id)),
                "{step}: the schema made in the merchant's database is gone"
            );
        }
    }
    // Without the hook, the same provisioning succeeds.
    let t = TestApp::new().await;
    let m = t.shared_merchant("fault-none").await;
    let mut body = json!({ "merchantId": m.id.to_string(), "tier": tier });
    if let Some(db) = byo {
        body["databaseUrl"] = Value::from(db.url());
    }
    let (status, answer) = provision(&t, body).await;
    assert_eq!(status, Status::Created, "{answer}");
    t.product(&m, "OK").await;
}

#[rocket::async_test]
async fn a_schema_provisioning_failing_after_any_step_leaves_nothing() {
    fail_each_step("schema", SCHEMA_STEPS, None).await;
}

#[rocket::async_test]
async fn a_dedicated_provisioning_failing_after_any_step_leaves_nothing() {
    fail_each_step("dedicated", DEDICATED_STEPS, None).await;
}

/// The same database is offered each time: a leftover schema would make it
/// non-empty and the next attempt would be refused.
#[rocket::async_test]
async fn a_byo_provisioning_failing_after_any_step_leaves_nothing() {
    let db = ByoDb::new("", true);
    fail_each_step("dedicated", BYO_STEPS, Some(&db)).await;
}
