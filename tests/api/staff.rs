//! Staff management: owner only, scoped to the owner's merchant.

use rocket::http::{Method, Status};
use serde_json::{Value, json};

use crate::common::{Merchant, TestApp, api, assert_error, assert_error_about};
use posd::{auth::Role, db::ids::StaffId};
use uuid::Uuid;

const STAFF: &str = api!("/staff");
const PASSWORD: &str = "a long enough password";

async fn add(t: &TestApp, m: &Merchant, email: &str, role: &str) -> String {
    let (status, body) = t
        .post(
            STAFF,
            &m.token,
            json!({ "email": email, "password": PASSWORD, "role": role }),
        )
        .await;
    assert_eq!(status, Status::Created, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn owner_id(list: &Value) -> String {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "owner")
        .and_then(|s| s["id"].as_str())
        .unwrap()
        .to_string()
}

#[rocket::async_test]
async fn owner_creates_lists_and_updates_staff() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("staff-shop").await;

    let (status, created) = t
        .post(
            STAFF,
            &m.token,
            json!({ "email": "  Cara.Cashier@Staff-Shop.TEST ", "password": PASSWORD, "role": "cashier" }),
        )
        .await;
    assert_eq!(status, Status::Created, "{created}");
    assert_eq!(created["email"], "cara.cashier@staff-shop.test");
    assert_eq!(created["role"], "cashier");
    assert_eq!(created["active"], true);
    assert!(created["createdAt"].as_str().is_some());
    assert!(created.get("passwordHash").is_none());
    assert!(created.get("merchantId").is_none());
    let id = created["id"].as_str().unwrap().to_string();

    let (status, list) = t.get(STAFF, &m.token).await;
    assert_eq!(status, Status::Ok, "{list}");
    let emails: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["owner@staff-shop.test", "cara.cashier@staff-shop.test"]
    );
    assert!(!list.to_string().contains("argon2"), "no hash leaks");

    // The new user logs in with the role given.
    let (status, token) = t.login(&m, "CARA.cashier@staff-shop.test", PASSWORD).await;
    assert_eq!(status, Status::Ok, "{token}");
    assert_eq!(token["role"], "cashier");

    let (status, patched) = t
        .patch(
            &format!("{STAFF}/{id}"),
            &m.token,
            json!({ "role": "manager" }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{patched}");
    assert_eq!(patched["role"], "manager");
    assert_eq!(patched["active"], true);

    let (status, same) = t.patch(&format!("{STAFF}/{id}"), &m.token, json!({})).await;
    assert_eq!(status, Status::Ok, "{same}");
    assert_eq!(same, patched);

    // The same email again, in another case, is taken.
    let (status, dup) = t
        .post(
            STAFF,
            &m.token,
            json!({ "email": "CARA.CASHIER@staff-shop.test", "password": PASSWORD, "role": "owner" }),
        )
        .await;
    assert_error((status, &dup), Status::Conflict, "email_taken");
}

#[rocket::async_test]
async fn invalid_bodies_are_422_naming_the_field() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("staff-valid").await;
    let cases = [
        (
            json!({ "email": "not-an-email", "password": PASSWORD, "role": "cashier" }),
            "validation_failed",
            "email:",
        ),
        (
            json!({ "email": "a@b.test", "password": "short", "role": "cashier" }),
            "validation_failed",
            "password:",
        ),
        (
            json!({ "email": "a@b.test", "password": PASSWORD, "role": "boss" }),
            "invalid_body",
            "role:",
        ),
        (
            json!({ "email": "a@b.test", "password": PASSWORD }),
            "invalid_body",
            "role",
        ),
        (
            json!({ "email": "a@b.test", "password": PASSWORD, "role": "cashier", "merchantId": m.id.to_string() }),
            "invalid_body",
            "merchantId",
        ),
    ];
    for (body, code, field) in cases {
        let (status, err) = t.post(STAFF, &m.token, body.clone()).await;
        assert_error_about(&body, (status, &err), Status::UnprocessableEntity, code);
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body} -> {message}");
    }
    let (_, list) = t.get(STAFF, &m.token).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing was created");

    let id = add(&t, &m, "val@staff-valid.test", "cashier").await;
    let (status, err) = t
        .patch(
            &format!("{STAFF}/{id}"),
            &m.token,
            json!({ "role": "admin" }),
        )
        .await;
    assert_eq!(status, Status::UnprocessableEntity, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("role:")
    );
    let (status, err) = t
        .patch(
            &format!("{STAFF}/{id}"),
            &m.token,
            json!({ "active": "no" }),
        )
        .await;
    assert_eq!(status, Status::UnprocessableEntity, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("active:")
    );
}

#[rocket::async_test]
async fn only_owners_manage_staff() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("staff-roles").await;
    let id = add(&t, &m, "someone@staff-roles.test", "cashier").await;
    let body = json!({ "email": "x@staff-roles.test", "password": PASSWORD, "role": "cashier" });
    for role in [Role::Manager, Role::Cashier] {
        let token = t.staff_token(m.id, role);
        for (status, err) in [
            t.get(STAFF, &token).await,
            t.post(STAFF, &token, body.clone()).await,
            t.patch(&format!("{STAFF}/{id}"), &token, json!({ "active": false }))
                .await,
        ] {
            assert_error_about(
                format!("{role:?}"),
                (status, &err),
                Status::Forbidden,
                "insufficient_role",
            );
        }
    }
    let admin = t.admin_token();
    let (status, err) = t.get(STAFF, &admin).await;
    assert_error((status, &err), Status::Unauthorized, "unauthorized");
    let (status, _) = t.post(STAFF, &admin, body.clone()).await;
    assert_eq!(status, Status::Unauthorized);
    let (status, _) = t.request(Method::Get, STAFF, None, None).await;
    assert_eq!(status, Status::Unauthorized);

    let (_, list) = t.get(STAFF, &m.token).await;
    let made_here = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["email"].as_str().unwrap().ends_with("@staff.test"))
        .count();
    assert_eq!(made_here, 2, "nothing was created: {list}");
    assert!(list.as_array().unwrap().iter().all(|s| s["active"] == true));
}

#[rocket::async_test]
async fn another_merchants_staff_are_not_found() {
    let t = TestApp::new().await;
    let a = t.shared_merchant("staff-a").await;
    let b = t.shared_merchant("staff-b").await;
    let b_cashier = add(&t, &b, "cashier@staff-b.test", "cashier").await;

    let (status, list) = t.get(STAFF, &a.token).await;
    assert_eq!(status, Status::Ok);
    assert!(!list.to_string().contains("staff-b"), "{list}");

    let (_, b_list) = t.get(STAFF, &b.token).await;
    let b_owner = owner_id(&b_list);
    for target in [&b_cashier, &b_owner] {
        let (status, err) = t
            .patch(
                &format!("{STAFF}/{target}"),
                &a.token,
                json!({ "active": false }),
            )
            .await;
        assert_error((status, &err), Status::NotFound, "not_found");
    }
    for path in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let (status, _) = t
            .patch(
                &format!("{STAFF}/{path}"),
                &a.token,
                json!({ "role": "cashier" }),
            )
            .await;
        assert_eq!(status, Status::NotFound);
    }
    // B's staff are untouched, and an email used at B is free at A.
    let (_, after) = t.get(STAFF, &b.token).await;
    assert_eq!(after, b_list);
    add(&t, &a, "cashier@staff-b.test", "cashier").await;
}

#[rocket::async_test]
async fn an_owner_keeps_their_own_role_and_the_merchant_an_owner() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("staff-self").await;
    let (_, list) = t.get(STAFF, &m.token).await;
    let me = owner_id(&list);
    for body in [json!({ "role": "manager" }), json!({ "active": false })] {
        let (status, err) = t.patch(&format!("{STAFF}/{me}"), &m.token, body).await;
        assert_error((status, &err), Status::Conflict, "cannot_change_self");
    }
    let (status, _) = t
        .patch(
            &format!("{STAFF}/{me}"),
            &m.token,
            json!({ "role": "owner", "active": true }),
        )
        .await;
    assert_eq!(status, Status::Ok, "a no-op on oneself is allowed");

    // A token whose holder is not a staff row is refused outright.
    let outsider = t.token_for(StaffId(Uuid::new_v4()), m.id, Role::Owner);
    let (status, err) = t
        .patch(
            &format!("{STAFF}/{me}"),
            &outsider,
            json!({ "active": false }),
        )
        .await;
    assert_error((status, &err), Status::Unauthorized, "staff_unknown");
    let (_, after) = t.get(STAFF, &m.token).await;
    assert_eq!(after, list, "the refused change was rolled back");

    // With a second owner, the first can be demoted; their token, still
    // saying owner, now acts as a manager.
    let second = add(&t, &m, "second@staff-self.test", "owner").await;
    let (_, login2) = t.login(&m, "second@staff-self.test", PASSWORD).await;
    let token2 = login2["token"].as_str().unwrap().to_string();
    let (status, demoted) = t
        .patch(
            &format!("{STAFF}/{me}"),
            &token2,
            json!({ "role": "manager" }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{demoted}");
    let (status, err) = t.get(STAFF, &m.token).await;
    assert_error((status, &err), Status::Forbidden, "insufficient_role");
    let (status, _) = t.get(api!("/reports/daily"), &m.token).await;
    assert_eq!(status, Status::Ok, "still a manager");
    let (status, _) = t.get(STAFF, &token2).await;
    assert_eq!(status, Status::Ok);
    assert_ne!(second, me);
}

#[rocket::async_test]
async fn deactivated_staff_cannot_log_in_and_their_tokens_stop_working() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("staff-off").await;
    let id = add(&t, &m, "leaver@staff-off.test", "cashier").await;
    let (status, body) = t.login(&m, "leaver@staff-off.test", PASSWORD).await;
    assert_eq!(status, Status::Ok, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let (status, _) = t.get(api!("/products"), &token).await;
    assert_eq!(status, Status::Ok, "an active cashier's token works");

    let (status, off) = t
        .patch(
            &format!("{STAFF}/{id}"),
            &m.token,
            json!({ "active": false }),
        )
        .await;
    assert_eq!(status, Status::Ok, "{off}");
    assert_eq!(off["active"], false);

    let (status, err) = t.login(&m, "leaver@staff-off.test", PASSWORD).await;
    assert_error((status, &err), Status::Unauthorized, "invalid_credentials");
    let (status, err) = t.get(api!("/products"), &token).await;
    assert_error((status, &err), Status::Unauthorized, "staff_inactive");

    let (status, _) = t
        .patch(
            &format!("{STAFF}/{id}"),
            &m.token,
            json!({ "active": true }),
        )
        .await;
    assert_eq!(status, Status::Ok);
    let (status, _) = t.get(api!("/products"), &token).await;
    assert_eq!(status, Status::Ok, "reactivated");
    let (status, _) = t.login(&m, "leaver@staff-off.test", PASSWORD).await;
    assert_eq!(status, Status::Ok);
}

/// A change made elsewhere (another posd instance, an operator's SQL)
/// reaches this instance at once through NOTIFY, not after its cache's 30 s.
#[rocket::async_test]
async fn staff_changes_made_elsewhere_are_seen_at_once() {
    let t = TestApp::new().await;
    t.wait_listening().await;
    let m = t.shared_merchant("staff-far").await;
    let id = add(&t, &m, "far@staff-far.test", "manager").await;
    let staff = StaffId(id.parse().unwrap());
    let (status, body) = t.login(&m, "far@staff-far.test", PASSWORD).await;
    assert_eq!(status, Status::Ok, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let (status, _) = t.get(api!("/reports/daily"), &token).await;
    assert_eq!(
        status,
        Status::Ok,
        "a manager reads the report (state now cached)"
    );

    for (change, path, expect, code) in [
        (
            "role = 'cashier'",
            api!("/reports/daily"),
            Status::Forbidden,
            None,
        ),
        (
            "active = false",
            api!("/products"),
            Status::Unauthorized,
            Some("staff_inactive"),
        ),
    ] {
        t.change_staff(
            staff,
            &format!("UPDATE staff_users SET {change} WHERE id = '{id}'"),
        )
        .await;
        let (status, err) = t.get(path, &token).await;
        match code {
            Some(code) => {
                assert_error_about(format!("after {change}"), (status, &err), expect, code);
            }
            None => assert_eq!(status, expect, "after {change}: {err}"),
        }
    }
}
