//! The pricing settings the server applies: tax-inclusive prices
//! (`pricesIncludeTax`) and cash rounding (`cashRounding`), each recorded
//! on the order so that a later change of the setting leaves existing
//! orders as they were; the daily report's sums in both.

use rocket::http::Status;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{API, Merchant, TestApp, api, assert_error};
use posd::tenancy::Tier;

const SETTINGS: &str = api!("/settings");

async fn set(t: &TestApp, m: &Merchant, patch: Value) {
    let (status, body) = t.patch(SETTINGS, &m.token, patch).await;
    assert_eq!(status, Status::Ok, "{body}");
}

/// A sale by the owner; the answer's status and body.
async fn sale(t: &TestApp, m: &Merchant, lines: Value, payments: Value) -> (Status, Value) {
    let (status, body, _) = t
        .post_idem(
            api!("/orders"),
            &m.token,
            &Uuid::new_v4().to_string(),
            json!({ "lines": lines, "payments": payments }),
        )
        .await;
    (status, body)
}

async fn refund(t: &TestApp, m: &Merchant, order: &Value, body: Value) -> Value {
    let id = order["id"].as_str().unwrap();
    let (status, r, _) = t
        .post_idem(
            &format!("{API}/orders/{id}/refunds"),
            &m.token,
            &Uuid::new_v4().to_string(),
            body,
        )
        .await;
    assert_eq!(status, Status::Created, "{r}");
    r
}

fn int(v: &Value, k: &str) -> i64 {
    v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// The order's gross, discount, tax and total are its lines' sums, its
/// total follows its mode, and the payments settle total + rounding.
fn assert_consistent(o: &Value) {
    let lines = o["lines"].as_array().unwrap();
    for k in ["grossMinor", "discountMinor", "taxMinor", "totalMinor"] {
        let sum: i64 = lines.iter().map(|l| int(l, k)).sum();
        assert_eq!(int(o, k), sum, "{k}: {o}");
    }
    let inclusive = o["pricesIncludeTax"].as_bool().unwrap();
    for l in lines.iter().chain([o]) {
        let tax = if inclusive { 0 } else { int(l, "taxMinor") };
        assert_eq!(
            int(l, "totalMinor"),
            int(l, "grossMinor") - int(l, "discountMinor") + tax,
            "{l}"
        );
    }
    let applied: i64 = o["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| int(p, "amountMinor"))
        .sum();
    let due = int(o, "totalMinor") + int(o, "roundingMinor");
    assert_eq!(applied, due, "{o}");
    assert_eq!(int(o, "tenderedMinor") - int(o, "changeMinor"), due, "{o}");
}

/// (gross, discount, tax, total) of each line.
fn lines_of(o: &Value) -> Vec<(i64, i64, i64, i64)> {
    o["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                int(l, "grossMinor"),
                int(l, "discountMinor"),
                int(l, "taxMinor"),
                int(l, "totalMinor"),
            )
        })
        .collect()
}

async fn daily(t: &TestApp, m: &Merchant) -> Value {
    let (status, r) = t.get(api!("/reports/daily"), &m.token).await;
    assert_eq!(status, Status::Ok, "{r}");
    r
}

/// Tax-inclusive prices: each line's tax is extracted half up, the total
/// is the sum of what the lines cost; refunds share the line totals; the
/// same sale tax-exclusive adds the tax; a change of the setting leaves
/// the orders made before as they were.
#[rocket::async_test]
async fn tax_inclusive_prices_hold_their_tax_and_orders_keep_their_mode() {
    let t = TestApp::new().await;
    let m = t.merchant("incl-tax", Tier::Schema).await;
    let a = t.stocked_product(&m, "A20", 250, 2_000, None).await;
    let b = t.stocked_product(&m, "B10", 110, 1_000, None).await;
    let c = t.stocked_product(&m, "C825", 99, 825, None).await;
    let d = t.stocked_product(&m, "D0", 500, 0, None).await;
    let lines = json!([
        { "productId": a, "quantity": 3, "discountMinor": 50 },
        { "productId": b, "quantity": 2 },
        { "productId": c, "quantity": 3 },
        { "productId": d, "quantity": 1 },
    ]);

    set(&t, &m, json!({ "pricesIncludeTax": true })).await;
    let (status, incl) = sale(
        &t,
        &m,
        lines.clone(),
        json!([{ "method": "card", "amountMinor": 1717 }]),
    )
    .await;
    assert_eq!(status, Status::Created, "{incl}");
    assert_eq!(incl["pricesIncludeTax"], true, "{incl}");
    // 7.00 at 20 %: 1.1666… → 1.17; 2.20 at 10 %: 0.20; 2.97 at 8.25 %:
    // 0.2263… → 0.23; 5.00 at 0 %: nothing.
    assert_eq!(
        lines_of(&incl),
        vec![
            (750, 50, 117, 700),
            (220, 0, 20, 220),
            (297, 0, 23, 297),
            (500, 0, 0, 500)
        ]
    );
    assert_eq!(
        (
            int(&incl, "grossMinor"),
            int(&incl, "discountMinor"),
            int(&incl, "taxMinor"),
            int(&incl, "totalMinor"),
            int(&incl, "roundingMinor"),
        ),
        (1767, 50, 160, 1717, 0)
    );
    assert_consistent(&incl);
    // Paid short by a minor unit is short: no tax is added on top.
    let answer = sale(
        &t,
        &m,
        lines.clone(),
        json!([{ "method": "card", "amountMinor": 1716 }]),
    )
    .await;
    assert_error(answer, Status::UnprocessableEntity, "payment_short");

    // A refund of one of the three units of the first line: a third of
    // what the line cost, tax included; then the rest of the order.
    let r = refund(
        &t,
        &m,
        &incl,
        json!({ "lines": [{ "lineNo": 1, "quantity": 1 }] }),
    )
    .await;
    assert_eq!(r["refund"]["amountMinor"], 233, "{r}");
    let r = refund(
        &t,
        &m,
        &incl,
        json!({ "lines": [{ "lineNo": 1, "quantity": 2 }, { "lineNo": 2, "quantity": 2 },
                          { "lineNo": 3, "quantity": 3 }, { "lineNo": 4, "quantity": 1 }] }),
    )
    .await;
    assert_eq!(r["refund"]["amountMinor"], 1717 - 233, "{r}");
    assert_eq!(r["order"]["status"], "refunded", "{r}");
    assert_eq!(r["order"]["refundedMinor"], 1717, "{r}");
    assert_consistent(&r["order"]);

    // The same sale, tax-exclusive: the tax is added.
    set(&t, &m, json!({ "pricesIncludeTax": false })).await;
    let (status, excl) = sale(
        &t,
        &m,
        lines.clone(),
        json!([{ "method": "card", "amountMinor": 1904 }]),
    )
    .await;
    assert_eq!(status, Status::Created, "{excl}");
    assert_eq!(excl["pricesIncludeTax"], false, "{excl}");
    // 7.00 + 1.40; 2.20 + 0.22; 2.97 + 0.245025 → 0.25; 5.00.
    assert_eq!(
        lines_of(&excl),
        vec![
            (750, 50, 140, 840),
            (220, 0, 22, 242),
            (297, 0, 25, 322),
            (500, 0, 0, 500)
        ]
    );
    assert_eq!(int(&excl, "totalMinor"), 1904);
    assert_eq!(int(&excl, "taxMinor"), 187);
    assert_consistent(&excl);
    let r = refund(
        &t,
        &m,
        &excl,
        json!({ "lines": [{ "lineNo": 1, "quantity": 1 }] }),
    )
    .await;
    assert_eq!(r["refund"]["amountMinor"], 280, "{r}");

    // The first order still reads as it was priced.
    let id = incl["id"].as_str().unwrap();
    let (status, again) = t.get(&format!("{API}/orders/{id}"), &m.token).await;
    assert_eq!(status, Status::Ok, "{again}");
    assert_eq!(again["pricesIncludeTax"], true);
    assert_eq!(lines_of(&again), lines_of(&incl));
    assert_eq!(again["totalMinor"], 1717);
    assert_consistent(&again);

    // The day: both orders, their totals and tax as recorded.
    let r = daily(&t, &m).await;
    assert_eq!(r["orderCount"], 2, "{r}");
    assert_eq!(int(&r, "grossSalesMinor"), 1767 * 2, "{r}");
    assert_eq!(int(&r, "discountsMinor"), 100, "{r}");
    assert_eq!(int(&r, "taxMinor"), 160 + 187, "{r}");
    assert_eq!(int(&r, "salesMinor"), 1717 + 1904, "{r}");
    assert_eq!(int(&r, "roundingMinor"), 0, "{r}");
    assert_eq!(int(&r, "refundsMinor"), 1717 + 280, "{r}");
    assert_eq!(int(&r, "netMinor"), 1904 - 280, "{r}");
    assert_eq!(int(&r["paymentsByMethod"], "card"), 1717 + 1904, "{r}");
}

/// Cash pays the total rounded half up to the merchant's step; a card
/// never is; in a split the card pays exactly and the cash left is
/// rounded. The rounding is on the order and in the day's report, and
/// stays when the setting changes.
#[rocket::async_test]
async fn cash_is_rounded_to_the_step_and_the_report_shows_it() {
    let t = TestApp::new().await;
    let m = t.shared_merchant("cash-round").await;
    let p102 = t.stocked_product(&m, "P102", 102, 0, None).await;
    let p103 = t.stocked_product(&m, "P103", 103, 0, None).await;
    let p107 = t.stocked_product(&m, "P107", 107, 0, None).await;
    let one = |p: &str| json!([{ "productId": p, "quantity": 1 }]);
    let cash = |a: i64| json!({ "method": "cash", "amountMinor": a });
    let card = |a: i64| json!({ "method": "card", "amountMinor": a });
    let sell = |p: String, pays: Vec<Value>| {
        let t = &t;
        let m = &m;
        async move { sale(t, m, one(&p), Value::Array(pays)).await }
    };
    let created = |(status, o): (Status, Value)| {
        assert_eq!(status, Status::Created, "{o}");
        assert_consistent(&o);
        o
    };
    let summary = |o: &Value| {
        (
            int(o, "totalMinor"),
            int(o, "roundingMinor"),
            int(o, "tenderedMinor"),
            int(o, "changeMinor"),
        )
    };

    // Step 1 (the default): exactly as without rounding.
    let o = created(sell(p102.clone(), vec![cash(102)]).await);
    assert_eq!(summary(&o), (102, 0, 102, 0));
    let answer = sell(p102.clone(), vec![cash(100)]).await;
    assert_error(answer, Status::UnprocessableEntity, "payment_short");

    set(&t, &m, json!({ "cashRounding": 5 })).await;
    // 1.02 → 1.00: paid in full with 1.00; 2.00 gives 1.00 back.
    let o102 = created(sell(p102.clone(), vec![cash(100)]).await);
    assert_eq!(summary(&o102), (102, -2, 100, 0));
    assert_eq!(o102["status"], "completed");
    let o = created(sell(p102.clone(), vec![cash(200)]).await);
    assert_eq!(summary(&o), (102, -2, 200, 100));
    assert_eq!(o["payments"][0]["amountMinor"], 100);
    // 1.03 → 1.05: 1.03 in cash is short.
    let message = assert_error(
        sell(p103.clone(), vec![cash(103)]).await,
        Status::UnprocessableEntity,
        "payment_short",
    );
    assert!(message.contains("(105)"), "{message}");
    let o = created(sell(p103.clone(), vec![cash(105)]).await);
    assert_eq!(summary(&o), (103, 2, 105, 0));
    // 1.07 → 1.05.
    let o = created(sell(p107.clone(), vec![cash(200)]).await);
    assert_eq!(summary(&o), (107, -2, 200, 95));
    // A card is never rounded: 1.02 exactly, and 1.00 is short.
    let o = created(sell(p102.clone(), vec![card(102)]).await);
    assert_eq!(summary(&o), (102, 0, 102, 0));
    let answer = sell(p102.clone(), vec![card(100)]).await;
    assert_error(answer, Status::UnprocessableEntity, "payment_short");
    // Card 0.50 exactly, then the 0.57 left in cash → 0.55.
    let split = created(sell(p107.clone(), vec![card(50), cash(100)]).await);
    assert_eq!(summary(&split), (107, -2, 150, 45));
    assert_eq!(split["payments"][0]["amountMinor"], 50, "{split}");
    assert_eq!(split["payments"][1]["amountMinor"], 55, "{split}");
    // A card that covers it all leaves nothing to round.
    let o = created(sell(p107.clone(), vec![card(107), cash(10)]).await);
    assert_eq!(summary(&o), (107, 0, 117, 10));

    // Step 10: 1.07 → 1.10; step 100: 1.02 → 1.00, 1.50 → 2.00.
    set(&t, &m, json!({ "cashRounding": 10 })).await;
    let o = created(sell(p107.clone(), vec![cash(110)]).await);
    assert_eq!(summary(&o), (107, 3, 110, 0));
    set(&t, &m, json!({ "cashRounding": 100 })).await;
    let o = created(sell(p102.clone(), vec![cash(100)]).await);
    assert_eq!(summary(&o), (102, -2, 100, 0));
    let (status, o) = sale(
        &t,
        &m,
        json!([{ "productId": p102, "quantity": 1, "unitPriceMinor": 150 }]),
        json!([cash(200)]),
    )
    .await;
    assert_eq!(status, Status::Created, "{o}");
    assert_eq!(summary(&o), (150, 50, 200, 0));

    // Back to no rounding: the orders keep theirs.
    set(&t, &m, json!({ "cashRounding": null })).await;
    let o = created(sell(p103.clone(), vec![cash(103)]).await);
    assert_eq!(summary(&o), (103, 0, 103, 0));
    let id = o102["id"].as_str().unwrap();
    let (_, again) = t.get(&format!("{API}/orders/{id}"), &m.token).await;
    assert_eq!(summary(&again), (102, -2, 100, 0));

    // A refund is of what the goods cost.
    let r = refund(
        &t,
        &m,
        &o102,
        json!({ "amountMinor": 102, "method": "card" }),
    )
    .await;
    assert_eq!(r["order"]["status"], "refunded", "{r}");

    // The report: the rounding of every order, the payments add up to
    // sales + rounding.
    let rounding = -2 - 2 + 2 - 2 - 2 + 3 - 2 + 50;
    let sales = 102 + 102 + 102 + 103 + 107 + 102 + 107 + 107 + 107 + 102 + 150 + 103;
    let r = daily(&t, &m).await;
    assert_eq!(r["orderCount"], 12, "{r}");
    assert_eq!(int(&r, "salesMinor"), sales, "{r}");
    assert_eq!(int(&r, "roundingMinor"), rounding, "{r}");
    let by_method: i64 = r["paymentsByMethod"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(by_method, sales + rounding, "{r}");
    assert_eq!(int(&r["paymentsByMethod"], "card"), 102 + 50 + 107, "{r}");
    assert_eq!(int(&r, "refundsMinor"), 102, "{r}");
    assert_eq!(int(&r, "netMinor"), sales + rounding - 102, "{r}");
}

/// Both at once, on a dedicated database: a tax-inclusive total is
/// rounded in cash like any other, on a till order and an offline bill.
#[rocket::async_test]
async fn tax_inclusive_totals_are_rounded_in_cash() {
    let t = TestApp::new().await;
    let m = t.merchant("incl-round", Tier::Dedicated).await;
    let p = t.stocked_product(&m, "TEA", 349, 550, None).await;
    set(
        &t,
        &m,
        json!({ "pricesIncludeTax": true, "cashRounding": 5 }),
    )
    .await;
    let (status, o) = sale(
        &t,
        &m,
        json!([{ "productId": p, "quantity": 3 }]),
        json!([{ "method": "cash", "amountMinor": 2000 }]),
    )
    .await;
    assert_eq!(status, Status::Created, "{o}");
    assert_consistent(&o);
    // 10.47 holding 5.5 % tax: 0.5458… → 0.55; paid 10.45 in cash.
    assert_eq!(lines_of(&o), vec![(1047, 0, 55, 1047)]);
    assert_eq!(
        (
            int(&o, "totalMinor"),
            int(&o, "roundingMinor"),
            int(&o, "changeMinor")
        ),
        (1047, -2, 955)
    );
    // An offline bill is priced and settled the same way.
    let bill = json!({
        "clientId": Uuid::new_v4(),
        "createdAt": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
        "lines": [{ "productId": p, "quantity": 1 }],
        "payments": [{ "method": "cash", "amountMinor": 350 }]
    });
    let (status, b) = t
        .post(api!("/offline-bills"), &m.token, json!({ "bills": [bill] }))
        .await;
    assert_eq!(status, Status::Ok, "{b}");
    assert_eq!(b["results"][0]["status"], "created", "{b}");
    let id = b["results"][0]["orderId"].as_str().unwrap();
    let (_, off) = t.get(&format!("{API}/orders/{id}"), &m.token).await;
    assert_consistent(&off);
    // 3.49 holding 0.1819… → 0.18 of tax; 3.50 in cash, 0.01 rounded up.
    assert_eq!(off["pricesIncludeTax"], true, "{off}");
    assert_eq!(lines_of(&off), vec![(349, 0, 18, 349)]);
    assert_eq!(
        (int(&off, "roundingMinor"), int(&off, "changeMinor")),
        (1, 0)
    );

    let r = daily(&t, &m).await;
    assert_eq!(
        (
            int(&r, "salesMinor"),
            int(&r, "taxMinor"),
            int(&r, "roundingMinor"),
            int(&r, "netMinor"),
            int(&r["paymentsByMethod"], "cash"),
        ),
        (1047 + 349, 55 + 18, -2 + 1, 1045 + 350, 1045 + 350),
        "{r}"
    );
}
