//! Integrations: the owner's routes and the operators' platform defaults,
//! credentials that are written and never read back (no answer, log line,
//! audit entry or export holds one), sealing bound to the merchant and the
//! integration, key rotation, validation, roles, uniqueness, and the
//! effective integration that code calling a provider resolves.

use diesel::{RunQueryDsl, connection::SimpleConnection, sql_types::Text};
use rocket::http::{Method, Status};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    common::{API, Server, TestApp, api, assert_error, assert_error_about, count},
    keys::rotate_cli,
    logs::{Serving, exchange},
};
use posd::{
    auth::Role,
    crypto::Keyring,
    db::platform::Platform,
    tenancy::integrations::{Kind, ResolveError, Source, resolve},
};

const LIST: &str = api!("/integrations");
const ADMIN_LIST: &str = api!("/admin/integrations");

fn path(id: &str) -> String {
    format!("{API}/integrations/{id}")
}

/// Every answer's text, to check that no credential is in any.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, answer: (Status, Value)) -> (Status, Value) {
        self.0.push(answer.1.to_string());
        answer
    }

    #[track_caller]
    fn assert_free_of(&self, secrets: &[&str]) {
        for text in &self.0 {
            for s in secrets {
                assert!(!text.contains(s), "a credential was answered: {text}");
            }
        }
    }
}

fn item<'a>(list: &'a Value, kind: &str) -> Option<&'a Value> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == kind)
}

/// How many rows of `table` hold `needle` in `column` (bytea, or any
/// other type as its text).
fn rows_holding(t: &TestApp, table: &str, column: &str, needle: &str) -> i64 {
    let bytes = if column == "credentials_sealed" {
        column.to_string()
    } else {
        format!("convert_to({column}::text, 'UTF8')")
    };
    count(
        &mut t.db.owner(),
        &format!(
            "SELECT count(*) AS n FROM {table} \
             WHERE position(convert_to('{needle}', 'UTF8') IN {bytes}) > 0"
        ),
    )
    .unwrap()
}

#[rocket::async_test]
async fn owners_write_credentials_they_never_read_back() {
    const SECRET: &str = "sk_live_owner_5e1f9a";
    const HOOK: &str = "whsec_owner_77c2";
    const SECRET2: &str = "sk_live_second_0b3d";
    const PLATFORM: &str = "pm_platform_key_a41c";
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let m = t.shared_merchant("int-owner").await;
    let mut seen = Seen::default();

    // An operator's default for email applies to a merchant without one.
    let (s, default) = seen.keep(
        t.post(
            ADMIN_LIST,
            &admin,
            json!({ "kind": "email", "provider": "postmark",
                    "settings": { "from": "no-reply@platform.example" },
                    "credentials": { "serverToken": PLATFORM } }),
        )
        .await,
    );
    assert_eq!(s, Status::Created, "{default}");
    assert_eq!(default["source"], "platform");
    assert_eq!(default["credentialsStatus"], "set");
    let (s, list) = seen.keep(t.get(LIST, &m.token).await);
    assert_eq!(s, Status::Ok, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let email = item(&list, "email").unwrap();
    assert_eq!(email["source"], "platform");
    assert_eq!(email["id"], default["id"]);
    assert_eq!(email["settings"]["from"], "no-reply@platform.example");

    // The merchant's own payment integration.
    let (s, pay) = seen.keep(
        t.post(
            LIST,
            &m.token,
            json!({ "kind": "payment", "provider": "stripe",
                    "settings": { "currency": "EUR", "capture": "automatic" },
                    "credentials": { "apiKey": SECRET, "webhookSecret": HOOK } }),
        )
        .await,
    );
    assert_eq!(s, Status::Created, "{pay}");
    assert_eq!(pay["kind"], "payment");
    assert_eq!(pay["provider"], "stripe");
    assert_eq!(pay["source"], "merchant");
    assert_eq!(
        pay["settings"],
        json!({ "currency": "EUR", "capture": "automatic" })
    );
    assert_eq!(pay["credentialsStatus"], "set");
    let fingerprint = pay["credentialsFingerprint"].as_str().unwrap().to_string();
    assert_eq!(fingerprint.len(), 16);
    assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(pay["credentialsSetAt"].is_string());
    assert!(pay.get("credentials").is_none(), "{pay}");
    let pay_id = pay["id"].as_str().unwrap().to_string();

    // One per kind.
    let dup = seen.keep(
        t.post(
            LIST,
            &m.token,
            json!({ "kind": "payment", "provider": "adyen", "credentials": { "apiKey": SECRET } }),
        )
        .await,
    );
    assert_error(&dup, Status::Conflict, "integration_kind_taken");

    // The merchant's own email replaces the platform's in the list.
    let (s, own_email) = seen.keep(
        t.post(
            LIST,
            &m.token,
            json!({ "kind": "email", "provider": "smtp", "settings": { "host": "mail.example" } }),
        )
        .await,
    );
    assert_eq!(s, Status::Created, "{own_email}");
    assert_eq!(own_email["credentialsStatus"], "unset");
    assert_eq!(own_email["credentialsFingerprint"], Value::Null);
    let (_, list) = seen.keep(t.get(LIST, &m.token).await);
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(item(&list, "email").unwrap()["source"], "merchant");
    assert_eq!(item(&list, "payment").unwrap()["id"], pay_id.as_str());

    // Settings change alone: the credentials stay as they were.
    let (s, changed) = seen.keep(
        t.patch(
            &path(&pay_id),
            &m.token,
            json!({ "settings": { "currency": "EUR" } }),
        )
        .await,
    );
    assert_eq!(s, Status::Ok, "{changed}");
    assert_eq!(changed["settings"], json!({ "currency": "EUR" }));
    assert_eq!(changed["credentialsFingerprint"], fingerprint.as_str());
    assert_eq!(changed["credentialsSetAt"], pay["credentialsSetAt"]);
    // New credentials: a new fingerprint.
    let (s, changed) = seen.keep(
        t.patch(
            &path(&pay_id),
            &m.token,
            json!({ "provider": "stripe-connect", "credentials": { "apiKey": SECRET2 } }),
        )
        .await,
    );
    assert_eq!(s, Status::Ok, "{changed}");
    assert_eq!(changed["provider"], "stripe-connect");
    assert_eq!(changed["credentialsStatus"], "set");
    assert_ne!(changed["credentialsFingerprint"], fingerprint.as_str());

    // Stored sealed only; nothing else holds them.
    for needle in [SECRET2, PLATFORM] {
        assert_eq!(
            rows_holding(&t, "merchant_integrations", "credentials_sealed", needle),
            0
        );
        assert_eq!(
            rows_holding(&t, "merchant_integrations", "settings", needle),
            0
        );
    }
    let audited = count(
        &mut t.db.owner(),
        "SELECT count(*) AS n FROM admin_audit WHERE action LIKE 'integration.%'",
    )
    .unwrap();
    assert_eq!(audited, 1, "the operator's change is audited");
    for needle in [SECRET, HOOK, SECRET2, PLATFORM] {
        assert_eq!(rows_holding(&t, "admin_audit", "details", needle), 0);
    }

    // An export of the merchant holds none of them.
    let export_path = format!("{API}/admin/tenants/{}/export", m.id);
    let res = t
        .send(Method::Get, &export_path, Some(&admin), None, &[])
        .await;
    assert_eq!(res.status(), Status::Ok);
    let export = String::from_utf8_lossy(&res.into_bytes().await.unwrap()).into_owned();
    for s in [SECRET, HOOK, SECRET2, PLATFORM] {
        assert!(!export.contains(s), "a credential is in the export");
    }

    // null removes the credentials.
    let (s, cleared) = seen.keep(
        t.patch(&path(&pay_id), &m.token, json!({ "credentials": null }))
            .await,
    );
    assert_eq!(s, Status::Ok, "{cleared}");
    assert_eq!(cleared["credentialsStatus"], "unset");
    assert_eq!(cleared["credentialsFingerprint"], Value::Null);
    assert_eq!(cleared["credentialsSetAt"], Value::Null);

    // Deleting its own email brings the platform's back.
    let own_email_path = path(own_email["id"].as_str().unwrap());
    let (s, _) = t.delete(&own_email_path, &m.token).await;
    assert_eq!(s, Status::NoContent);
    let (_, list) = seen.keep(t.get(LIST, &m.token).await);
    assert_eq!(item(&list, "email").unwrap()["source"], "platform");
    assert_error(
        seen.keep(t.delete(&own_email_path, &m.token).await),
        Status::NotFound,
        "not_found",
    );

    // The platform's default is not the merchant's to change.
    let default_path = path(default["id"].as_str().unwrap());
    assert_error(
        seen.keep(
            t.patch(&default_path, &m.token, json!({ "provider": "mine" }))
                .await,
        ),
        Status::NotFound,
        "not_found",
    );
    assert_error(
        seen.keep(t.delete(&default_path, &m.token).await),
        Status::NotFound,
        "not_found",
    );

    // Operators list, change and delete the defaults.
    let (s, defaults) = seen.keep(t.get(ADMIN_LIST, &admin).await);
    assert_eq!(s, Status::Ok);
    assert_eq!(defaults["items"].as_array().unwrap().len(), 1, "{defaults}");
    let admin_path = format!("{ADMIN_LIST}/{}", default["id"].as_str().unwrap());
    let (s, patched) = seen.keep(
        t.patch(
            &admin_path,
            &admin,
            json!({ "settings": { "from": "hello@platform.example" } }),
        )
        .await,
    );
    assert_eq!(s, Status::Ok, "{patched}");
    assert_eq!(
        patched["credentialsFingerprint"],
        default["credentialsFingerprint"]
    );
    assert_error(
        seen.keep(
            t.patch(&format!("{ADMIN_LIST}/{pay_id}"), &admin, json!({}))
                .await,
        ),
        Status::NotFound,
        "not_found",
    );
    let (s, _) = t.delete(&admin_path, &admin).await;
    assert_eq!(s, Status::NoContent);
    let (_, list) = seen.keep(t.get(LIST, &m.token).await);
    assert!(item(&list, "email").is_none(), "{list}");
    let audited = count(
        &mut t.db.owner(),
        "SELECT count(*) AS n FROM admin_audit WHERE action LIKE 'integration.%'",
    )
    .unwrap();
    assert_eq!(audited, 3, "create, update and delete are audited");

    seen.assert_free_of(&[SECRET, HOOK, SECRET2, PLATFORM]);
}

#[rocket::async_test]
async fn only_owners_and_only_their_own() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("int-roles").await;
    let other = t.shared_merchant("int-roles-other").await;
    let (s, pay) = t
        .post(
            LIST,
            &m.token,
            json!({ "kind": "payment", "provider": "stripe", "credentials": { "apiKey": "k" } }),
        )
        .await;
    assert_eq!(s, Status::Created, "{pay}");
    let path = format!("{API}/integrations/{}", pay["id"].as_str().unwrap());

    for role in [Role::Manager, Role::Cashier] {
        let token = t.staff_token(m.id, role);
        let about = role.as_str();
        assert_error_about(
            about,
            t.get(LIST, &token).await,
            Status::Forbidden,
            "insufficient_role",
        );
        assert_error_about(
            about,
            t.post(LIST, &token, json!({ "kind": "sms", "provider": "twilio" }))
                .await,
            Status::Forbidden,
            "insufficient_role",
        );
        assert_error_about(
            about,
            t.patch(&path, &token, json!({ "provider": "x" })).await,
            Status::Forbidden,
            "insufficient_role",
        );
        assert_error_about(
            about,
            t.delete(&path, &token).await,
            Status::Forbidden,
            "insufficient_role",
        );
    }
    // Staff tokens are not operators'.
    let (s, _) = t.get(ADMIN_LIST, &m.token).await;
    assert_eq!(s, Status::Unauthorized);

    // Another merchant's integration is a 404, as is an unknown id.
    let (_, list) = t.get(LIST, &other.token).await;
    assert_eq!(list["items"], json!([]));
    assert_error(
        t.patch(&path, &other.token, json!({ "provider": "x" }))
            .await,
        Status::NotFound,
        "not_found",
    );
    assert_error(
        t.delete(&path, &other.token).await,
        Status::NotFound,
        "not_found",
    );
    for unknown in [Uuid::new_v4().to_string(), "not-a-uuid".to_string()] {
        let p = format!("{API}/integrations/{unknown}");
        assert_error(
            t.patch(&p, &m.token, json!({ "provider": "x" })).await,
            Status::NotFound,
            "not_found",
        );
        assert_error(t.delete(&p, &m.token).await, Status::NotFound, "not_found");
        let p = format!("{ADMIN_LIST}/{unknown}");
        assert_error(
            t.delete(&p, &t.admin_token()).await,
            Status::NotFound,
            "not_found",
        );
    }
    // The other merchant may have its own of the same kind.
    let (s, _) = t
        .post(
            LIST,
            &other.token,
            json!({ "kind": "payment", "provider": "stripe" }),
        )
        .await;
    assert_eq!(s, Status::Created);
}

#[rocket::async_test]
async fn invalid_bodies_are_422_naming_the_field_and_never_quote_a_credential() {
    const SECRET: &str = "sk_live_invalid_9d2e";
    let t = TestApp::new().await;
    let m = t.shared_merchant("int-invalid").await;
    let big = "x".repeat(16 * 1024);
    let cases = [
        (
            json!({ "kind": "fax", "provider": "p" }),
            "kind",
            "invalid_body",
        ),
        (json!({ "provider": "p" }), "kind", "invalid_body"),
        (
            json!({ "kind": "payment", "provider": "Stripe" }),
            "provider",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "" }),
            "provider",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "a b" }),
            "provider",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "settings": [1] }),
            "settings",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "settings": { "k": big } }),
            "settings",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "credentials": SECRET }),
            "credentials",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "credentials": [SECRET] }),
            "credentials",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "credentials": {} }),
            "credentials",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "credentials": { "apiKey": 123_456 } }),
            "credentials.apiKey",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "credentials": { "apiKey": "" } }),
            "credentials.apiKey",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "credentials": { "apiKey": { "v": SECRET } } }),
            "credentials.apiKey",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "credentials": { "k": "x".repeat(9000) } }),
            "credentials",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "credentials": { "apiKey": format!("{SECRET}\u{0}") } }),
            "credentials.apiKey",
            "validation_failed",
        ),
        (
            json!({ "kind": "payment", "provider": "p", "extra": SECRET }),
            "extra",
            "invalid_body",
        ),
    ];
    for (body, field, code) in cases {
        let answer = t.post(LIST, &m.token, body.clone()).await;
        let message = assert_error_about(&body, &answer, Status::UnprocessableEntity, code);
        assert!(
            message.starts_with(field) || message.contains(&format!("`{field}`")),
            "{body}: {message}"
        );
        assert!(
            !answer.1.to_string().contains(SECRET),
            "{body}: {}",
            answer.1
        );
    }
    let (_, list) = t.get(LIST, &m.token).await;
    assert_eq!(list["items"], json!([]), "nothing was stored");

    let (s, pay) = t
        .post(
            LIST,
            &m.token,
            json!({ "kind": "payment", "provider": "stripe" }),
        )
        .await;
    assert_eq!(s, Status::Created, "{pay}");
    let path = format!("{API}/integrations/{}", pay["id"].as_str().unwrap());
    for (body, field, code) in [
        (json!({ "kind": "email" }), "kind", "invalid_body"),
        (json!({ "provider": "UP" }), "provider", "validation_failed"),
        (json!({ "settings": null }), "settings", "validation_failed"),
        (json!({ "settings": "x" }), "settings", "validation_failed"),
        (
            json!({ "credentials": SECRET }),
            "credentials",
            "validation_failed",
        ),
        (
            json!({ "credentials": { "apiKey": false } }),
            "credentials.apiKey",
            "validation_failed",
        ),
    ] {
        let answer = t.patch(&path, &m.token, body.clone()).await;
        let message = assert_error_about(&body, &answer, Status::UnprocessableEntity, code);
        assert!(
            message.starts_with(field) || message.contains(&format!("`{field}`")),
            "{body}: {message}"
        );
        assert!(
            !answer.1.to_string().contains(SECRET),
            "{body}: {}",
            answer.1
        );
    }
    let admin = t.admin_token();
    let answer = t
        .post(
            ADMIN_LIST,
            &admin,
            json!({ "kind": "email", "provider": "Bad" }),
        )
        .await;
    assert_error(&answer, Status::UnprocessableEntity, "validation_failed");
    let (s, _) = t
        .post(
            ADMIN_LIST,
            &admin,
            json!({ "kind": "email", "provider": "ses" }),
        )
        .await;
    assert_eq!(s, Status::Created);
    assert_error(
        t.post(
            ADMIN_LIST,
            &admin,
            json!({ "kind": "email", "provider": "ses2" }),
        )
        .await,
        Status::Conflict,
        "integration_kind_taken",
    );
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Text)]
    id: String,
}

#[rocket::async_test]
async fn a_credential_copied_to_another_row_does_not_open() {
    let t = TestApp::new().await;
    let a = t.shared_merchant("int-copy-a").await;
    let b = t.shared_merchant("int-copy-b").await;
    for (m, key) in [(&a, "key-of-a"), (&b, "key-of-b")] {
        let (s, body) = t
            .post(
                LIST,
                &m.token,
                json!({ "kind": "payment", "provider": "stripe", "credentials": { "apiKey": key } }),
            )
            .await;
        assert_eq!(s, Status::Created, "{body}");
    }
    let (s, body) = t
        .post(
            LIST,
            &a.token,
            json!({ "kind": "accounting", "provider": "xero", "credentials": { "token": "acc" } }),
        )
        .await;
    assert_eq!(s, Status::Created, "{body}");

    // A's payment credentials copied onto B's row, and onto A's other
    // integration, in the control plane.
    t.db.owner()
        .batch_execute(&format!(
            "UPDATE merchant_integrations SET credentials_sealed = (
                 SELECT credentials_sealed FROM merchant_integrations
                  WHERE merchant_id = '{a}' AND kind = 'payment')
              WHERE (merchant_id = '{b}' AND kind = 'payment')
                 OR (merchant_id = '{a}' AND kind = 'accounting')",
            a = a.id,
            b = b.id
        ))
        .unwrap();

    // Reported, not answered as a failure.
    let (s, list) = t.get(LIST, &b.token).await;
    assert_eq!(s, Status::Ok, "{list}");
    assert_eq!(
        item(&list, "payment").unwrap()["credentialsStatus"],
        "unreadable"
    );
    let (s, list) = t.get(LIST, &a.token).await;
    assert_eq!(s, Status::Ok, "{list}");
    assert_eq!(item(&list, "payment").unwrap()["credentialsStatus"], "set");
    assert_eq!(
        item(&list, "accounting").unwrap()["credentialsStatus"],
        "unreadable"
    );
    assert!(!list.to_string().contains("key-of-a"));

    // Resolving it is an error that names the integration, never a fall
    // back nor a panic.
    let keyring = t.app().settings.keyring.clone();
    let mut conn = t.db.owner();
    let err = resolve(&mut Platform::new(&mut conn), &keyring, b.id, Kind::Payment).unwrap_err();
    assert!(matches!(err, ResolveError::Unreadable { .. }), "{err}");
    assert!(!err.to_string().contains("key-of-a"));
    let own = resolve(&mut Platform::new(&mut conn), &keyring, a.id, Kind::Payment)
        .unwrap()
        .unwrap();
    assert_eq!(
        own.credential("apiKey").unwrap().expose_secret(),
        "key-of-a"
    );

    // Setting them again mends it.
    let id = diesel::sql_query(format!(
        "SELECT id::text AS id FROM merchant_integrations WHERE merchant_id = '{}'",
        b.id
    ))
    .get_result::<IdRow>(&mut conn)
    .unwrap()
    .id;
    let (s, fixed) = t
        .patch(
            &format!("{API}/integrations/{id}"),
            &b.token,
            json!({ "credentials": { "apiKey": "key-of-b-again" } }),
        )
        .await;
    assert_eq!(s, Status::Ok, "{fixed}");
    assert_eq!(fixed["credentialsStatus"], "set");
}

#[rocket::async_test]
async fn the_effective_integration_is_the_merchants_else_the_platforms() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let own = t.shared_merchant("int-eff-own").await;
    let plain = t.shared_merchant("int-eff-plain").await;
    let (s, _) = t
        .post(
            ADMIN_LIST,
            &admin,
            json!({ "kind": "payment", "provider": "platformpay",
                    "settings": { "mode": "live" }, "credentials": { "apiKey": "platform-key" } }),
        )
        .await;
    assert_eq!(s, Status::Created);
    let (s, _) = t
        .post(
            LIST,
            &own.token,
            json!({ "kind": "payment", "provider": "stripe", "credentials": { "apiKey": "own-key" } }),
        )
        .await;
    assert_eq!(s, Status::Created);

    let keyring = t.app().settings.keyring.clone();
    let mut conn = t.db.owner();
    let mut p = Platform::new(&mut conn);
    let e = resolve(&mut p, &keyring, own.id, Kind::Payment)
        .unwrap()
        .unwrap();
    assert_eq!(e.source, Source::Merchant);
    assert_eq!(e.provider, "stripe");
    assert_eq!(e.credential("apiKey").unwrap().expose_secret(), "own-key");
    assert!(
        !format!("{e:?}").contains("own-key"),
        "Debug prints no credential"
    );

    let e = resolve(&mut p, &keyring, plain.id, Kind::Payment)
        .unwrap()
        .unwrap();
    assert_eq!(e.source, Source::Platform);
    assert_eq!(e.provider, "platformpay");
    assert_eq!(e.settings["mode"], "live");
    assert_eq!(
        e.credential("apiKey").unwrap().expose_secret(),
        "platform-key"
    );
    assert!(e.credential("nope").is_none());

    assert!(
        resolve(&mut p, &keyring, plain.id, Kind::Sms)
            .unwrap()
            .is_none()
    );
}

#[rocket::async_test]
async fn key_rotation_reseals_integration_credentials() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let m = t.shared_merchant("int-rot").await;
    let (s, pay) = t
        .post(
            LIST,
            &m.token,
            json!({ "kind": "payment", "provider": "stripe", "credentials": { "apiKey": "rot-own" } }),
        )
        .await;
    assert_eq!(s, Status::Created, "{pay}");
    let (s, _) = t
        .post(
            ADMIN_LIST,
            &admin,
            json!({ "kind": "email", "provider": "ses", "credentials": { "secret": "rot-platform" } }),
        )
        .await;
    assert_eq!(s, Status::Created);
    let (s, _) = t
        .post(
            LIST,
            &m.token,
            json!({ "kind": "sms", "provider": "twilio" }),
        )
        .await;
    assert_eq!(s, Status::Created);

    let old = Server::get().keys().to_string();
    let new = Keyring::generate_spec("k2");
    let only_new = Keyring::parse(&new).unwrap();

    // With only the new key, they do not open: reported, not a failure.
    let TestApp { client, db } = t;
    drop(client);
    let keyring = only_new.clone();
    let t = TestApp::on_with(db, move |s| s.keyring = keyring).await;
    let (s, list) = t.get(LIST, &m.token).await;
    assert_eq!(s, Status::Ok, "{list}");
    assert_eq!(
        item(&list, "payment").unwrap()["credentialsStatus"],
        "unreadable"
    );
    assert_eq!(
        item(&list, "email").unwrap()["credentialsStatus"],
        "unreadable"
    );
    assert_eq!(item(&list, "sms").unwrap()["credentialsStatus"], "unset");

    let (ok, out) = rotate_cli(&t, &format!("{new},{old}"));
    assert!(ok, "{out}");
    assert!(
        out.contains("under key k2: 2 total, 2 re-sealed, 0 already current, 0 failed"),
        "{out}"
    );
    assert!(
        !out.contains("rot-own") && !out.contains("rot-platform"),
        "{out}"
    );
    let (ok, out) = rotate_cli(&t, &new);
    assert!(
        ok && out.contains("2 total, 0 re-sealed, 2 already current"),
        "{out}"
    );
    assert_eq!(
        count(
            &mut t.db.owner(),
            "SELECT count(*) AS n FROM merchant_integrations WHERE credentials_key_id = 'k2'"
        )
        .unwrap(),
        2
    );

    let (s, list) = t.get(LIST, &m.token).await;
    assert_eq!(s, Status::Ok, "{list}");
    let after = item(&list, "payment").unwrap();
    assert_eq!(after["credentialsStatus"], "set");
    assert_eq!(
        after["credentialsFingerprint"], pay["credentialsFingerprint"],
        "a rotation keeps the fingerprint"
    );
    assert_eq!(after["credentialsSetAt"], pay["credentialsSetAt"]);
    assert_eq!(item(&list, "email").unwrap()["credentialsStatus"], "set");
    let mut conn = t.db.owner();
    let e = resolve(
        &mut Platform::new(&mut conn),
        &only_new,
        m.id,
        Kind::Payment,
    )
    .unwrap()
    .unwrap();
    assert_eq!(e.credential("apiKey").unwrap().expose_secret(), "rot-own");

    // A credential that no configured key opens is a failure, named.
    let (ok, out) = rotate_cli(&t, &Keyring::generate_spec("k3"));
    assert!(!ok, "{out}");
    assert!(
        out.contains("2 failed") && out.contains("integration "),
        "{out}"
    );
    assert!(out.contains("merchant platform"), "{out}");
}

#[rocket::async_test]
async fn credentials_never_reach_the_log() {
    const SECRET: &str = "sk_live_logged_4f0a";
    const SECRET2: &str = "sk_live_logged_again_81be";
    const WRONG: &str = "sk_live_wrong_shape_c7d9";
    const PLATFORM: &str = "pm_logged_platform_22aa";
    let t = TestApp::new().await;
    let m = t.shared_merchant("int-log").await;
    let other = t.shared_merchant("int-log-other").await;
    let admin = t.admin_token();
    // Everything posd may write, at the most verbose level.
    let serving = Serving::start(&t.db.name, Some("trace,hyper=info,h2=info"));
    let port = serving.port;
    let send = |method: &str, path: &str, token: &str, body: Value| {
        exchange(
            port,
            &format!(
                "{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json"
            ),
            &if body.is_null() {
                String::new()
            } else {
                body.to_string()
            },
        )
    };
    let mut answers = Vec::new();
    let (s, created) = send(
        "POST",
        LIST,
        &m.token,
        json!({ "kind": "payment", "provider": "stripe", "credentials": { "apiKey": SECRET } }),
    );
    assert_eq!(s, 201, "{created}");
    let id = created
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.get(..36))
        .unwrap()
        .to_string();
    answers.push(created);
    for (method, path, token, body, status) in [
        (
            "PATCH",
            format!("{API}/integrations/{id}"),
            &m.token,
            json!({ "credentials": { "apiKey": SECRET2 } }),
            200,
        ),
        (
            "PATCH",
            format!("{API}/integrations/{id}"),
            &m.token,
            json!({ "credentials": WRONG }),
            422,
        ),
        (
            "PATCH",
            format!("{API}/integrations/{id}"),
            &other.token,
            json!({ "credentials": { "apiKey": WRONG } }),
            404,
        ),
        (
            "POST",
            LIST.to_string(),
            &m.token,
            json!({ "kind": "payment", "provider": "x", "credentials": { "apiKey": WRONG } }),
            409,
        ),
        (
            "POST",
            LIST.to_string(),
            &m.token,
            json!({ "kind": "email", "provider": "x", "credentials": { "apiKey": [WRONG] } }),
            422,
        ),
        (
            "POST",
            ADMIN_LIST.to_string(),
            &admin,
            json!({ "kind": "email", "provider": "ses", "credentials": { "k": PLATFORM } }),
            201,
        ),
        ("GET", LIST.to_string(), &m.token, Value::Null, 200),
        ("GET", ADMIN_LIST.to_string(), &admin, Value::Null, 200),
    ] {
        let (s, answer) = send(method, &path, token, body);
        assert_eq!(s, status, "{method} {path}: {answer}");
        answers.push(answer);
    }
    // Credentials that do not open are logged as such, without them.
    t.db.owner()
        .batch_execute(&format!(
            "UPDATE merchant_integrations SET credentials_sealed = (
                 SELECT credentials_sealed FROM merchant_integrations WHERE merchant_id IS NULL)
              WHERE merchant_id = '{}'",
            m.id
        ))
        .unwrap();
    let (s, answer) = send("GET", LIST, &m.token, Value::Null);
    assert_eq!(s, 200, "{answer}");
    assert!(answer.contains("\"unreadable\""), "{answer}");
    answers.push(answer);

    let lines = serving.stop();
    let log = lines.join("\n");
    assert!(log.contains("integration created"), "{log}");
    assert!(log.contains("do not open"), "{log}");
    for s in [SECRET, SECRET2, WRONG, PLATFORM] {
        assert!(!log.contains(s), "a credential reached the log:\n{log}");
        for a in &answers {
            assert!(!a.contains(s), "a credential was answered: {a}");
        }
    }
}
