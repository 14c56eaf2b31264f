//! Which merchant is behind the load: request ids, the per-merchant load
//! table (`GET /admin/tenants/top`, `posd tenants top`) and the bounded
//! per-merchant series of `/metrics`.

use std::{collections::BTreeSet, process::Command, time::Duration};

use rocket::http::{Method, Status};
use serde_json::json;
use uuid::Uuid;

use crate::{
    common::{API, JWT_SECRET, Server, TIERS, TestApp, api, assert_error},
    logs::{Serving, exchange},
};
use posd::{
    db::ids::MerchantId,
    tenancy::{
        Tier,
        load::{Sample, Spent},
    },
};

const TOP: &str = api!("/admin/tenants/top");

/// A request id the client gives is kept when it is a plain token, else
/// replaced by a new one; every answer carries one, a different one per
/// request.
#[rocket::async_test]
async fn every_answer_carries_a_request_id() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("req-id").await;
    let id_of = |res: &rocket::local::asynchronous::LocalResponse<'_>| {
        res.headers()
            .get_one("X-Request-Id")
            .expect("X-Request-Id on every answer")
            .to_string()
    };
    let given = [("X-Request-Id", "till-7:order.42_retry-1".to_string())];
    let res = t
        .send(Method::Get, api!("/context"), Some(&m.token), None, &given)
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(id_of(&res), "till-7:order.42_retry-1");
    for bad in ["has space", "é", &"x".repeat(129), ""] {
        let res = t
            .send(
                Method::Get,
                "/healthz",
                None,
                None,
                &[("X-Request-Id", bad.to_string())],
            )
            .await;
        let id = id_of(&res);
        assert!(Uuid::parse_str(&id).is_ok(), "{bad:?} gave {id}");
    }
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        let res = t.send(Method::Get, "/no/such/route", None, None, &[]).await;
        assert_eq!(res.status(), Status::NotFound);
        ids.insert(id_of(&res));
    }
    assert_eq!(ids.len(), 5, "{ids:?}");
}

/// One merchant per tier; the one that works hardest comes first by
/// requests and by database time, with its heaviest routes as evidence;
/// another's 429s are counted as such.
#[rocket::async_test]
async fn the_top_table_ranks_the_loaded_merchant_first() {
    let t = TestApp::new().await;
    let admin = t.admin_token();
    let mut merchants = Vec::new();
    for tier in TIERS {
        merchants.push(t.merchant(&format!("top-{}", tier.as_str()), tier).await);
    }
    for (m, n) in merchants.iter().zip([5, 10, 40]) {
        // A creation and a read each time: the dedicated one is busiest.
        for i in 0..n {
            let id = t.product(m, &format!("P{i}")).await;
            let (s, _) = t.get(&format!("{API}/products/{id}"), &m.token).await;
            assert_eq!(s, Status::Ok);
        }
    }
    let busiest = &merchants[2];
    for by in ["requests", "db_time"] {
        let (s, top) = t.get(&format!("{TOP}?by={by}&window=5m"), &admin).await;
        assert_eq!(s, Status::Ok, "{top}");
        let items = top["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "{top}");
        assert_eq!(items[0]["merchantId"], json!(busiest.id), "{by}: {top}");
        assert_eq!(items[0]["slug"], "top-dedicated");
        assert_eq!(items[0]["tier"], "dedicated");
        assert_eq!(items[0]["requests"], 80, "{top}");
        assert!(items[0]["dbTimeUs"].as_u64().unwrap() > 0, "{top}");
        assert!(items[0]["transactions"].as_u64().unwrap() >= 80, "{top}");
        // A dedicated merchant has its pool to itself.
        assert_eq!(items[0]["poolShare"], 1.0);
        let routes: Vec<&str> = items[0]["topRoutes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["route"].as_str().unwrap())
            .collect();
        assert!(
            routes.contains(&concat!("POST ", api!("/products")))
                && routes.contains(&concat!("GET ", api!("/products/<id>"))),
            "{routes:?}"
        );
        assert_eq!(top["merchants"], 3);
        assert_eq!(top["windowMinutes"], 5);
        // Shared and schema merchants share the global pool.
        let global: f64 = items
            .iter()
            .filter(|m| m["tier"] != "dedicated")
            .map(|m| m["poolShare"].as_f64().unwrap())
            .sum();
        assert!((global - 1.0).abs() < 1e-9, "{top}");
    }
    let (s, top) = t.get(&format!("{TOP}?by=requests&limit=1"), &admin).await;
    assert_eq!(s, Status::Ok);
    assert_eq!(top["items"].as_array().unwrap().len(), 1);
    assert_eq!(top["other"]["requests"], 30, "the two others: {top}");
    let (s, top) = t.get(&format!("{TOP}?by=errors"), &admin).await;
    assert_eq!(s, Status::Ok);
    assert_eq!(top["items"], json!([]), "no 5xx: {top}");

    // A throttled merchant: its 429s are its load too.
    let m = &merchants[0];
    t.set_plan(
        m.id,
        json!({ "limitOverrides": { "requestsPerMinute": 0 } }),
    )
    .await;
    let (s, _) = t.get(api!("/context"), &m.token).await;
    assert_eq!(s, Status::TooManyRequests);
    let (_, top) = t.get(&format!("{TOP}?by=requests"), &admin).await;
    let row = top["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["merchantId"] == json!(m.id))
        .unwrap();
    assert_eq!(row["throttled"], 1, "{row}");

    // Bad parameters, and no operator.
    for (query, field) in [
        ("by=latency", "by"),
        ("window=0m", "window"),
        ("window=16m", "window"),
        ("window=90s", "window"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        let answer = t.get(&format!("{TOP}?{query}"), &admin).await;
        let message = assert_error(&answer, Status::UnprocessableEntity, "validation_failed");
        assert!(message.starts_with(field), "{query}: {message}");
    }
    let (s, _) = t.get(TOP, &m.token).await;
    assert_eq!(s, Status::Unauthorized);
}

/// With 5,000 merchants active, `/metrics` names the top 20 by database
/// time and one `other`, whatever the number of merchants.
#[rocket::async_test]
async fn metrics_name_only_the_top_merchants() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("metrics-heavy").await;
    let load = &t.app().load;
    let light = Spent::default();
    light.add(Duration::ZERO, Duration::from_micros(10));
    for n in 0..5_000_u128 {
        load.record(&Sample {
            merchant: MerchantId(Uuid::from_u128(n + 1)),
            slug: "light",
            tier: Tier::Shared,
            route: "GET /api/v2/POS/context",
            status: 200,
            latency: Duration::from_millis(1),
            spent: &light,
        });
    }
    // The real merchant: enough requests to weigh more than any one of
    // them.
    for i in 0..5 {
        t.product(&m, &format!("H{i}")).await;
    }
    let text = t.metrics().await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("posd_merchant_requests{"))
        .collect();
    assert_eq!(
        series.len(),
        21,
        "20 merchants and other:\n{}",
        series.join("\n")
    );
    assert!(
        series[..].iter().any(|l| l.contains(&m.id.to_string())
            && l.contains(r#"slug="metrics-heavy""#)
            && l.contains(r#"tier="shared""#)),
        "the loaded merchant is named:\n{}",
        series.join("\n")
    );
    let other = series
        .iter()
        .find(|l| l.contains(r#"merchant="other""#))
        .unwrap();
    assert!(
        other.ends_with(" 4981"),
        "5,001 merchants, 20 named: {other}"
    );
    for family in [
        "posd_merchant_errors{",
        "posd_merchant_db_seconds{",
        "posd_merchant_pool_wait_seconds{",
    ] {
        assert_eq!(
            text.lines().filter(|l| l.starts_with(family)).count(),
            21,
            "{family}"
        );
    }
    // Merchants appear in no other series.
    for line in text.lines().filter(|l| !l.starts_with("posd_merchant_")) {
        assert!(!line.contains(&m.id.to_string()), "{line}");
    }
}

/// `posd tenants top` reads a serving instance's table; its access lines
/// carry the request id and the merchant.
#[rocket::async_test]
async fn the_command_line_reads_a_serving_instance() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("top-cli").await;
    let serving = Serving::start(&t.db.name, None);
    let port = serving.port;
    let token = m.token.clone();
    let answers = tokio::task::spawn_blocking(move || {
        (0..3)
            .map(|i| {
                exchange(
                    port,
                    &format!(
                        "GET {API}/context HTTP/1.1\r\nAuthorization: Bearer {token}\r\nX-Request-Id: cli-{i}"
                    ),
                    "",
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (i, (status, answer)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains(&format!("x-request-id: cli-{i}\r\n")),
            "{answer}"
        );
    }
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_posd"))
            .args([
                "tenants",
                "top",
                "--url",
                &format!("http://127.0.0.1:{port}"),
            ])
            .args(args)
            .env("POSD_DATABASE_URL", Server::get().owner_url(&t.db.name))
            .env("POSD_JWT_SECRET", JWT_SECRET)
            .output()
            .expect("run posd tenants top")
    };
    let out = run(&["--by", "requests"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.contains("top-cli"))
        .unwrap_or_else(|| panic!("no row for the merchant:\n{stdout}"));
    assert!(row.starts_with(&m.id.to_string()), "{row}");
    assert!(row.contains(" shared ") && row.contains(" 3 "), "{row}");
    assert!(row.contains(concat!("GET ", api!("/context"))), "{row}");
    assert!(stdout.contains("tier shared"), "{stdout}");
    // A refused query is the server's message, and a failure.
    let out = run(&["--window", "99m"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("window: must be whole minutes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let lines = serving.stop();
    let access: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("posd::access") && l.contains(api!("/context")))
        .collect();
    assert_eq!(access.len(), 3, "{lines:?}");
    for (i, line) in access.iter().enumerate() {
        assert!(line.contains(&format!("request_id=cli-{i}")), "{line}");
        assert!(line.contains(&format!("merchant={}", m.id)), "{line}");
        assert!(line.contains("tier=shared"), "{line}");
    }
}

/// A merchant flooding a small global pool is flagged with its evidence
/// and a recommendation, in the tenant view and `/metrics`; the merchant
/// beside it is not.
#[rocket::async_test]
async fn a_merchant_flooding_the_global_pool_is_flagged_noisy() {
    // A pool of one connection (so no cap of its own): the flood keeps it
    // busy.
    let t = TestApp::with_config(|s| s.pool_size = 1).await;
    let admin = t.admin_token();
    let flood = t.merchant("noisy-flood", Tier::Shared).await;
    let quiet = t.merchant("noisy-quiet", Tier::Schema).await;
    // Neither is rate limited.
    t.set_plan(flood.id, json!({ "plan": "enterprise" })).await;
    t.set_plan(quiet.id, json!({ "plan": "enterprise" })).await;
    for i in 0..20 {
        t.product(&flood, &format!("F{i}")).await;
    }
    let quiet_product = t.product(&quiet, "Q").await;
    let list = api!("/products?limit=100");
    let quiet_read = format!("{API}/products/{quiet_product}");
    let mut flagged = None;
    for _ in 0..300 {
        let floods = (0..16).map(|_| t.get(list, &flood.token));
        let (answers, (s, _)) = tokio::join!(
            futures_util::future::join_all(floods),
            t.get(&quiet_read, &quiet.token)
        );
        assert_eq!(s, Status::Ok);
        assert!(answers.iter().all(|(s, _)| *s == Status::Ok));
        let changes = posd::tenancy::noisy::check(&t.app().tenancy);
        assert!(
            changes.raised.iter().all(|(id, _)| *id == flood.id),
            "only the flooding merchant: {changes:?}"
        );
        if let Some(e) = t.app().noisy.get(flood.id) {
            flagged = Some(e);
            break;
        }
    }
    let e = flagged.expect("the flooding merchant was flagged");
    assert!(e.share >= 0.5 && e.share <= 1.0, "{e:?}");
    assert!(e.pool_busy >= posd::tenancy::noisy::BUSY_FLOOR, "{e:?}");
    assert_eq!(e.top_routes[0].route, concat!("GET ", api!("/products")));
    assert!(t.app().noisy.get(quiet.id).is_none());

    let (s, view) = t
        .get(&format!("{API}/admin/tenants/{}", flood.id), &admin)
        .await;
    assert_eq!(s, Status::Ok);
    assert_eq!(view["noisy"]["slug"], "noisy-flood", "{view}");
    assert!(
        view["noisy"]["recommendation"]["tier"].is_string(),
        "{view}"
    );
    let (_, view) = t
        .get(&format!("{API}/admin/tenants/{}", quiet.id), &admin)
        .await;
    assert!(view.get("noisy").is_none(), "{view}");
    let metrics = t.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("posd_merchant_noisy_share{")
                && l.contains(&flood.id.to_string())),
        "{metrics}"
    );
}
