//! `GET /metrics`: Prometheus text with per-route counts and latencies,
//! labelled by route template, never by id.

use rocket::http::Status;

use crate::common::{API, TestApp, api};
use posd::tenancy::Tier;

#[rocket::async_test]
async fn metrics_count_requests_by_route_template() {
    let t = TestApp::new().await;
    let m = t.merchant("metrics-shop", Tier::Dedicated).await;
    let id = t.product(&m, "M-1").await;
    for _ in 0..3 {
        let (s, _) = t.get(&format!("{API}/products/{id}"), &m.token).await;
        assert_eq!(s, Status::Ok);
    }
    let (s, _) = t
        .get(
            api!("/products/00000000-0000-0000-0000-000000000000"),
            &m.token,
        )
        .await;
    assert_eq!(s, Status::NotFound);

    let res = t.client.get("/metrics").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert!(
        res.content_type()
            .unwrap()
            .to_string()
            .starts_with("text/plain")
    );
    let text = res.into_string().await.unwrap();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in:\n{text}"))
            .to_string()
    };
    let ok = line(&format!(
        r#"posd_http_requests_total{{method="GET",route="{API}/products/<id>",status="200"}}"#
    ));
    assert!(ok.ends_with(" 3"), "{ok}");
    let missing = line(&format!(
        r#"posd_http_requests_total{{method="GET",route="{API}/products/<id>",status="404"}}"#
    ));
    assert!(missing.ends_with(" 1"), "{missing}");
    let count = line(&format!(
        r#"posd_http_request_duration_seconds_count{{method="GET",route="{API}/products/<id>"}}"#
    ));
    assert!(count.ends_with(" 4"), "{count}");
    assert!(!text.contains(&id), "ids never appear in labels");
    // The merchant only in the series of the top merchants.
    for line in text.lines().filter(|l| !l.starts_with("posd_merchant_")) {
        assert!(!line.contains(&m.id.to_string()), "{line}");
    }
    let pools = line("posd_tenant_pools_live ");
    assert_eq!(pools, "posd_tenant_pools_live 1");
}
