//! `posd keys rotate`: every stored credential re-sealed under the new key,
//! so that the old key can be removed.

use rocket::http::Status;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::common::api;
use crate::{
    byo::ByoDb,
    common::{Server, TestApp},
    provisioning::provision,
};
use posd::{crypto::Keyring, tenancy::Tier};

pub(crate) fn rotate_cli(t: &TestApp, keys: &str) -> (bool, String) {
    let s = &t.app().settings;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_posd"))
        .args(["keys", "rotate"])
        .env("POSD_DATABASE_URL", s.database_url.expose_secret())
        .env("POSD_APP_DATABASE_URL", s.app_database_url.expose_secret())
        .env("POSD_JWT_SECRET", s.jwt_secret.expose_secret())
        .env("POSD_ENCRYPTION_KEYS", keys)
        .env("POSD_LOG", "error")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[rocket::async_test]
async fn after_rotation_every_dedicated_tenant_connects_with_only_the_new_key() {
    let t = TestApp::new().await;
    let byo = ByoDb::new("", true);
    let created = t.merchant("rot-created", Tier::Dedicated).await;
    let brought = t.shared_merchant("rot-brought").await;
    let (status, body) = provision(
        &t,
        json!({ "merchantId": brought.id.to_string(), "tier": "dedicated", "databaseUrl": byo.url() }),
    )
    .await;
    assert_eq!(status, Status::Created, "{body}");
    let old = Server::get().keys().to_string();
    let new = Keyring::generate_spec("k2");

    // Before rotation, a posd with only the new key cannot open them.
    let TestApp { client, db } = t;
    drop(client);
    let only_new = Keyring::parse(&new).unwrap();
    let keyring = only_new.clone();
    let t = TestApp::on_with(db, move |s| s.keyring = keyring).await;
    for m in [&created, &brought] {
        let (status, _) = t.get(api!("/products"), &m.token).await;
        assert_ne!(status, Status::Ok, "{}", m.slug);
    }

    let (ok, out) = rotate_cli(&t, &format!("{new},{old}"));
    assert!(ok, "{out}");
    assert!(
        out.contains("under key k2: 2 total, 2 re-sealed, 0 already current, 0 failed"),
        "{out}"
    );
    assert!(!out.contains(&byo.password), "{out}");
    // Resumable: a second run has nothing left to do.
    let (ok, out) = rotate_cli(&t, &format!("{new},{old}"));
    assert!(ok, "{out}");
    assert!(
        out.contains("2 total, 0 re-sealed, 2 already current"),
        "{out}"
    );
    // Without the old key, a credential not yet re-sealed would fail; none is.
    let (ok, out) = rotate_cli(&t, &new);
    assert!(ok && out.contains("2 already current"), "{out}");

    let TestApp { client, db } = t;
    drop(client);
    let t = TestApp::on_with(db, move |s| s.keyring = only_new).await;
    for m in [&created, &brought] {
        let (status, body) = t
            .post(
                api!("/products"),
                &m.token,
                json!({ "sku": "ROT", "name": "rotated", "priceMinor": 5 }),
            )
            .await;
        assert_eq!(status, Status::Created, "{}: {body}", m.slug);
    }
}

#[rocket::async_test]
async fn rotation_reports_what_it_cannot_open() {
    let t = TestApp::new().await;
    t.merchant("rot-lost", Tier::Dedicated).await;
    let (ok, out) = rotate_cli(&t, &Keyring::generate_spec("k3"));
    assert!(!ok, "{out}");
    assert!(
        out.contains("1 total, 0 re-sealed, 0 already current, 1 failed"),
        "{out}"
    );
    assert!(out.contains("test1"), "names the missing key: {out}");
}
