//! Tokens: every malformed, expired, misdirected or unsigned token is a 401
//! with a JSON body.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rocket::http::{Method, Status};
use serde_json::{Value, json};

use posd::{auth::Role, db::ids::StaffId};
use uuid::Uuid;

use crate::common::{JWT_SECRET, TestApp, api, assert_error, assert_error_about, read};

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn assert_401(t: &TestApp, path: &str, token: Option<&str>, why: &str) {
    let (status, body) = t.request(Method::Get, path, token, None).await;
    assert_error_about(why, (status, &body), Status::Unauthorized, "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[rocket::async_test]
async fn bad_tokens_are_refused() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("token-shop").await;
    let products = api!("/products");
    let admin = api!("/admin/tenants");
    let now = Utc::now().timestamp();
    let owner = t.staff_user(m.id, Role::Owner);
    let staff = |overrides: Value| {
        let mut c = json!({
            "sub": owner, "mid": m.id, "role": "owner",
            "iss": "posd", "aud": "posd", "exp": now + 600, "iat": now
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };

    // Sanity: the well-formed token works, so each failure below is the change.
    let (status, _) = t.get(products, &sign(&staff(json!({})), JWT_SECRET)).await;
    assert_eq!(status, Status::Ok);

    assert_401(&t, products, None, "no token").await;
    assert_401(&t, products, Some("not-a-jwt"), "garbage").await;
    assert_401(
        &t,
        products,
        Some(&sign(&staff(json!({ "exp": now - 3600 })), JWT_SECRET)),
        "expired",
    )
    .await;
    assert_401(
        &t,
        products,
        Some(&sign(&staff(json!({})), &"x".repeat(48))),
        "wrong signature",
    )
    .await;
    assert_401(
        &t,
        products,
        Some(&sign(&staff(json!({ "aud": "posd-admin" })), JWT_SECRET)),
        "admin audience",
    )
    .await;
    assert_401(
        &t,
        products,
        Some(&sign(&staff(json!({ "iss": "evil" })), JWT_SECRET)),
        "wrong issuer",
    )
    .await;
    for claim in ["exp", "iss", "aud", "sub", "mid", "role"] {
        let token = sign(&staff(json!({ claim: null })), JWT_SECRET);
        assert_401(&t, products, Some(&token), &format!("missing {claim}")).await;
    }
    assert_401(
        &t,
        products,
        Some(&sign(&staff(json!({ "exp": "tomorrow" })), JWT_SECRET)),
        "exp as string",
    )
    .await;
    // Not valid yet, or issued in the future.
    let year = 365 * 24 * 3600;
    for (claims, why) in [
        (json!({ "nbf": now + year }), "nbf a year ahead"),
        (json!({ "iat": now + year }), "issued a year ahead"),
        (json!({ "iat": null }), "missing iat"),
    ] {
        assert_401(&t, products, Some(&sign(&staff(claims), JWT_SECRET)), why).await;
    }
    let (status, _) = t
        .get(
            products,
            &sign(&staff(json!({ "nbf": now - 60 })), JWT_SECRET),
        )
        .await;
    assert_eq!(status, Status::Ok, "an nbf in the past is fine");

    // alg: none, with and without a signature part.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(staff(json!({})).to_string());
    assert_401(
        &t,
        products,
        Some(&format!("{header}.{payload}.")),
        "alg none",
    )
    .await;
    assert_401(
        &t,
        products,
        Some(&format!("{header}.{payload}")),
        "alg none, two parts",
    )
    .await;
    // Another HMAC algorithm than the pinned one.
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &staff(json!({})),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_401(&t, products, Some(&hs512), "HS512").await;

    // Audiences do not cross: admin tokens on POS routes, staff tokens on admin routes.
    assert_401(&t, products, Some(&t.admin_token()), "admin token on POS").await;
    assert_401(&t, admin, Some(&m.token), "staff token on admin").await;
    let (status, _) = t.get(admin, &t.admin_token()).await;
    assert_eq!(status, Status::Ok);
}

#[rocket::async_test]
async fn login_gives_one_answer_for_every_wrong_credential() {
    let t = TestApp::new().await;
    t.shared_merchant("login-shop").await;
    let login = |merchant: &str, email: &str, password: &str| json!({ "merchant": merchant, "email": email, "password": password });
    let mut answers = Vec::new();
    for body in [
        login("login-shop", "owner@login-shop.test", "wrong password!"),
        login(
            "login-shop",
            "nobody@login-shop.test",
            "correct horse battery",
        ),
        login(
            "no-such-shop",
            "owner@login-shop.test",
            "correct horse battery",
        ),
    ] {
        let (status, err) = t
            .request(Method::Post, api!("/auth/login"), None, Some(body))
            .await;
        assert_error((status, &err), Status::Unauthorized, "invalid_credentials");
        answers.push(err);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let (status, ok) = t
        .request(
            Method::Post,
            api!("/auth/login"),
            None,
            Some(login(
                "login-shop",
                "OWNER@login-shop.test",
                "correct horse battery",
            )),
        )
        .await;
    assert_eq!(status, Status::Ok, "emails are case-insensitive: {ok}");
    assert_eq!(ok["role"], "owner");
    assert!(ok["expiresAt"].as_str().unwrap().ends_with('Z'));
}

/// Guessing one account's password is cut off after a burst, before any
/// password is checked; other accounts are not affected.
#[rocket::async_test]
async fn login_attempts_are_rate_limited_per_account() {
    let t = TestApp::new().await;
    t.shared_merchant("brute-shop").await;
    t.shared_merchant("calm-shop").await;
    let login = |merchant: &str, password: &str| json!({ "merchant": merchant, "email": format!("owner@{merchant}.test"), "password": password });
    // The merchant's creation logged its owner in once: 9 more make 10.
    for i in 0..9 {
        let (status, _) = t
            .request(
                Method::Post,
                api!("/auth/login"),
                None,
                Some(login("brute-shop", &format!("guess {i} guess"))),
            )
            .await;
        assert_eq!(status, Status::Unauthorized);
    }
    let res = t
        .send(
            Method::Post,
            api!("/auth/login"),
            None,
            Some(login("BRUTE-SHOP", "correct horse battery")),
            &[],
        )
        .await;
    let retry: u64 = res
        .headers()
        .get_one("Retry-After")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_error(
        read(res).await,
        Status::TooManyRequests,
        "too_many_attempts",
    );
    let (status, _) = t
        .request(
            Method::Post,
            api!("/auth/login"),
            None,
            Some(login("calm-shop", "correct horse battery")),
        )
        .await;
    assert_eq!(status, Status::Ok);
}

/// A token names a staff user (`sub`) of a merchant (`mid`): the user must
/// exist, be active and belong to that merchant, now, not only at login.
#[rocket::async_test]
async fn tokens_are_bound_to_live_staff_of_their_merchant() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("bound-shop").await;
    let other = t.shared_merchant("bound-other").await;
    let staff = api!("/staff");
    let refused = |status: Status, body: &Value, why: &str| {
        assert_error_about(why, (status, body), Status::Unauthorized, "staff_unknown");
    };

    let nobody = t.token_for(StaffId(Uuid::new_v4()), m.id, Role::Owner);
    let (s, b) = t.get(staff, &nobody).await;
    refused(s, &b, "no such staff user");

    let theirs = t.staff_user(other.id, Role::Owner);
    let (s, b) = t.get(staff, &t.token_for(theirs, m.id, Role::Owner)).await;
    refused(s, &b, "another merchant's owner claiming this merchant");

    // An owner's token works, then its row is deleted: the very next
    // request is refused, on this instance and (through NOTIFY) any other.
    let owner = t.staff_user(m.id, Role::Owner);
    let token = t.token_for(owner, m.id, Role::Owner);
    let (s, _) = t.get(staff, &token).await;
    assert_eq!(s, Status::Ok);
    t.change_staff(
        owner,
        &format!("DELETE FROM staff_users WHERE id = '{owner}'"),
    )
    .await;
    let (s, b) = t
        .post(
            staff,
            &token,
            json!({ "email": "new-owner@bound-shop.test", "password": "correct horse battery", "role": "owner" }),
        )
        .await;
    refused(s, &b, "a deleted owner creating an owner");
    let (_, list) = t.get(staff, &m.token).await;
    assert!(
        !list.to_string().contains("new-owner@"),
        "nothing was created: {list}"
    );
}
