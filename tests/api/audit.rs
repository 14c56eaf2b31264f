//! The merchant's audit trail (`GET /audit`): what is recorded on every
//! tier, who may read it, that no merchant reads another's, that a walk
//! through its pages sees every entry once while new ones arrive, that
//! operator actions on the merchant are in it, and that it moves with the
//! merchant.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use diesel::connection::SimpleConnection;
use posd::{auth::Role, tenancy::Tier};
use rocket::http::{Method, Status};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    common::{API, Merchant, TIERS, TestApp, api, assert_error},
    moves::{move_to, quick},
};

const PASSWORD: &str = "correct horse battery";

/// One page of the trail as `token` reads it, with `query` (without `?`).
async fn page(t: &TestApp, token: &str, query: &str) -> (Status, Value) {
    t.get(&format!("{API}/audit?{query}"), token).await
}

/// Every entry of the trail as `m`'s owner reads it, newest first,
/// walking pages of `limit`.
async fn all_entries(t: &TestApp, m: &Merchant, filter: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit={limit}{filter}&cursor={c}"),
            None => format!("limit={limit}{filter}"),
        };
        let (s, body) = page(t, &m.token, &q).await;
        assert_eq!(s, Status::Ok, "{body}");
        let items = body["items"].as_array().expect("items").clone();
        assert!(items.len() <= limit, "{body}");
        out.extend(items);
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// The staff entries of `action`.
fn of<'a>(entries: &'a [Value], action: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["action"] == action).collect()
}

/// Polls the trail until it holds an entry of `action` for `subject`
/// (recorded off the answer's path), for at most 10 s.
async fn wait_for(t: &TestApp, m: &Merchant, action: &str, subject: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, body) = page(t, &m.token, &format!("action={action}&limit=200")).await;
        assert_eq!(s, Status::Ok, "{body}");
        if let Some(e) = body["items"]
            .as_array()
            .and_then(|items| items.iter().find(|e| e["subject"] == subject))
        {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {action} entry for {subject}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Adds a staff user through the API; answers their id.
async fn add_staff(t: &TestApp, m: &Merchant, email: &str, role: &str) -> String {
    let (s, body) = t
        .post(
            api!("/staff"),
            &m.token,
            json!({ "email": email, "password": PASSWORD, "role": role }),
        )
        .await;
    assert_eq!(s, Status::Created, "{body}");
    body["id"].as_str().expect("staff id").to_string()
}

async fn patch_staff(t: &TestApp, m: &Merchant, id: &str, body: Value) {
    let (s, answer) = t.patch(&format!("{API}/staff/{id}"), &m.token, body).await;
    assert_eq!(s, Status::Ok, "{answer}");
}

/// The id of `m`'s owner, from the staff list.
async fn owner_id(t: &TestApp, m: &Merchant) -> String {
    let (s, staff) = t.get(api!("/staff"), &m.token).await;
    assert_eq!(s, Status::Ok, "{staff}");
    staff
        .as_array()
        .and_then(|all| all.iter().find(|u| u["role"] == "owner"))
        .and_then(|u| u["id"].as_str())
        .expect("owner")
        .to_string()
}

/// Changes a product's price as `token`.
async fn reprice(t: &TestApp, token: &str, product: &str, price: i64) {
    let (s, body) = t
        .patch(
            &format!("{API}/products/{product}"),
            token,
            json!({ "priceMinor": price }),
        )
        .await;
    assert_eq!(s, Status::Ok, "{body}");
}

/// The entry's staff actor id.
fn staff_of(e: &Value) -> &str {
    assert_eq!(e["actor"]["kind"], "staff", "{e}");
    e["actor"]["staffId"].as_str().expect("staff id")
}

#[rocket::async_test]
async fn every_listed_action_is_recorded_with_its_details_on_every_tier() {
    let t = TestApp::new().await;
    for tier in TIERS {
        let slug = format!("audit-{}", tier.as_str());
        let m = t.merchant(&slug, tier).await;
        let owner = owner_id(&t, &m).await;

        // Staff: created, logged in, a wrong password, role changed,
        // deactivated and reactivated.
        let email = format!("manager@{slug}.test");
        let manager = add_staff(&t, &m, &email, "manager").await;
        let (s, token) = t.login(&m, &email, PASSWORD).await;
        assert_eq!(s, Status::Ok, "{token}");
        let manager_token = token["token"].as_str().expect("token").to_string();
        let (s, wrong) = t.login(&m, &email, "not the password at all").await;
        assert_error((s, wrong), Status::Unauthorized, "invalid_credentials");
        let cashier = add_staff(&t, &m, &format!("till@{slug}.test"), "cashier").await;
        patch_staff(&t, &m, &cashier, json!({ "role": "manager" })).await;
        patch_staff(&t, &m, &cashier, json!({ "active": false })).await;
        patch_staff(&t, &m, &cashier, json!({ "active": true })).await;

        // Data plane: a price change by the manager, one that changes
        // nothing, a receipt, a count, a refund and a void.
        let product = t.stocked_product(&m, "AUD-1", 500, 0, Some(10)).await;
        let request_id = format!("price-change-{}", tier.as_str());
        let path = format!("{API}/products/{product}");
        let res = t
            .send(
                Method::Patch,
                &path,
                Some(&manager_token),
                Some(json!({ "priceMinor": 650 })),
                &[("X-Request-Id", request_id.clone())],
            )
            .await;
        assert_eq!(res.status(), Status::Ok);
        reprice(&t, &manager_token, &product, 650).await;
        let (s, counted) = t
            .post(
                api!("/inventory/adjustments"),
                &m.token,
                json!({ "productId": product, "reason": "count", "countedQuantity": 7 }),
            )
            .await;
        assert_eq!(s, Status::Created, "{counted}");
        let refunded = t.sell(&m, &product, 2, 1300).await;
        let refunded_id = refunded["id"].as_str().expect("order id").to_string();
        let (s, refund, _) = t
            .post_idem(
                &format!("{API}/orders/{refunded_id}/refunds"),
                &m.token,
                &Uuid::new_v4().to_string(),
                json!({ "amountMinor": 300, "reason": "scratched" }),
            )
            .await;
        assert_eq!(s, Status::Created, "{refund}");
        let voided = t.sell(&m, &product, 1, 650).await;
        let voided_id = voided["id"].as_str().expect("order id").to_string();
        let (s, void, _) = t
            .post_idem(
                &format!("{API}/orders/{voided_id}/void"),
                &m.token,
                &Uuid::new_v4().to_string(),
                json!({}),
            )
            .await;
        assert_eq!(s, Status::Ok, "{void}");

        // Control plane: settings and branding.
        let (s, body) = t
            .patch(
                api!("/settings"),
                &m.token,
                json!({ "cashierDiscountLimitBps": 500, "receiptFooter": "Thanks" }),
            )
            .await;
        assert_eq!(s, Status::Ok, "{body}");
        let (s, body) = t
            .patch(
                api!("/branding"),
                &m.token,
                json!({ "receiptName": "Audit shop" }),
            )
            .await;
        assert_eq!(s, Status::Ok, "{body}");

        let failed = wait_for(&t, &m, "login_failed", &manager).await;
        let all = all_entries(&t, &m, "", 200).await;
        let ctx = format!("{tier:?}: {all:#?}");

        // Newest first, each entry once.
        let times: Vec<&str> = all.iter().filter_map(|e| e["at"].as_str()).collect();
        assert_eq!(times.len(), all.len(), "{ctx}");
        let ids: BTreeSet<&str> = all.iter().filter_map(|e| e["id"].as_str()).collect();
        assert_eq!(ids.len(), all.len(), "{ctx}");
        let parsed: Vec<chrono::DateTime<chrono::Utc>> =
            times.iter().map(|s| s.parse().expect("time")).collect();
        assert!(parsed.windows(2).all(|w| w[0] >= w[1]), "{ctx}");

        // The owner's login before provisioning travelled with the merchant.
        let logins = of(&all, "login_succeeded");
        assert!(
            logins.iter().any(|e| e["subject"] == owner.as_str()),
            "{ctx}"
        );
        let manager_login = logins
            .iter()
            .find(|e| e["subject"] == manager.as_str())
            .expect("the manager's login");
        assert_eq!(staff_of(manager_login), manager);
        assert_eq!(manager_login["actor"]["role"], "manager");
        assert_eq!(manager_login["actor"]["email"], email.as_str());
        assert_eq!(manager_login["details"], json!({ "email": email }));
        assert_eq!(failed["details"], json!({ "email": email }), "{failed}");
        assert_eq!(staff_of(&failed), manager);
        assert_eq!(of(&all, "login_failed").len(), 1, "{ctx}");
        assert!(!ctx.contains("not the password"), "a password in the trail");
        assert!(!ctx.contains(PASSWORD), "a password in the trail");

        let created = of(&all, "staff_created");
        assert_eq!(created.len(), 2, "{ctx}");
        let made = created
            .iter()
            .find(|e| e["subject"] == manager.as_str())
            .expect("manager created");
        assert_eq!(
            made["details"],
            json!({ "email": email, "role": "manager" })
        );
        assert_eq!(staff_of(made), owner);
        assert_eq!(made["actor"]["role"], "owner");
        let role = of(&all, "staff_role_changed");
        assert_eq!(role.len(), 1, "{ctx}");
        assert_eq!(role[0]["subject"], cashier.as_str());
        assert_eq!(role[0]["details"]["oldRole"], "cashier");
        assert_eq!(role[0]["details"]["role"], "manager");
        assert_eq!(of(&all, "staff_deactivated").len(), 1, "{ctx}");
        assert_eq!(of(&all, "staff_reactivated").len(), 1, "{ctx}");
        assert_eq!(
            of(&all, "staff_deactivated")[0]["subject"],
            cashier.as_str()
        );

        let prices = of(&all, "product_price_changed");
        assert_eq!(prices.len(), 1, "an unchanged price is not recorded: {ctx}");
        assert_eq!(prices[0]["subject"], product.as_str());
        assert_eq!(
            prices[0]["details"],
            json!({ "sku": "AUD-1", "oldPriceMinor": 500, "newPriceMinor": 650 })
        );
        assert_eq!(staff_of(prices[0]), manager);
        assert_eq!(prices[0]["requestId"], request_id.as_str());

        let adjusted = of(&all, "stock_adjusted");
        assert_eq!(adjusted.len(), 1, "{ctx}");
        assert_eq!(adjusted[0]["details"]["reason"], "receive");
        assert_eq!(adjusted[0]["details"]["delta"], 10);
        assert_eq!(adjusted[0]["details"]["onHand"], 10);
        let count = of(&all, "stock_counted");
        assert_eq!(count.len(), 1, "{ctx}");
        assert_eq!(count[0]["details"]["delta"], -3);
        assert_eq!(count[0]["details"]["countedQuantity"], 7);
        assert_eq!(count[0]["details"]["onHand"], 7);

        let refunds = of(&all, "order_refunded");
        assert_eq!(refunds.len(), 1, "{ctx}");
        assert_eq!(refunds[0]["subject"], refunded_id.as_str());
        assert_eq!(refunds[0]["details"]["amountMinor"], 300);
        assert_eq!(refunds[0]["details"]["reason"], "scratched");
        assert_eq!(refunds[0]["details"]["refundId"], refund["refund"]["id"]);
        let voids = of(&all, "order_voided");
        assert_eq!(voids.len(), 1, "{ctx}");
        assert_eq!(voids[0]["subject"], voided_id.as_str());
        assert_eq!(voids[0]["details"]["totalMinor"], 650);

        let settings = of(&all, "settings_changed");
        assert_eq!(settings.len(), 1, "{ctx}");
        assert_eq!(
            settings[0]["details"],
            json!({
                "keys": ["cashierDiscountLimitBps", "receiptFooter"],
                "old": { "cashierDiscountLimitBps": null, "receiptFooter": null },
                "new": { "cashierDiscountLimitBps": 500, "receiptFooter": "Thanks" },
            })
        );
        let branding = of(&all, "branding_changed");
        assert_eq!(branding.len(), 1, "{ctx}");
        assert_eq!(branding[0]["details"]["keys"], json!(["receiptName"]));

        // Sales are not audited.
        assert!(all.iter().all(|e| e["action"] != "order_created"), "{ctx}");

        // The filters.
        let only = all_entries(&t, &m, "&action=order_voided", 50).await;
        assert_eq!(only.len(), 1, "{only:?}");
        let by_manager = all_entries(&t, &m, &format!("&actor={manager}"), 50).await;
        let actions: BTreeSet<&str> = by_manager
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        assert_eq!(
            actions,
            BTreeSet::from(["login_succeeded", "login_failed", "product_price_changed"]),
            "{by_manager:?}"
        );
        let newest = parsed[0];
        let after = (newest + chrono::Duration::microseconds(1)).to_rfc3339();
        let none = all_entries(&t, &m, &format!("&from={}", urlencode(&after)), 50).await;
        assert!(none.is_empty(), "{none:?}");
        let to = all_entries(&t, &m, &format!("&to={}", urlencode(&after)), 200).await;
        assert_eq!(to.len(), all.len());
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[rocket::async_test]
async fn only_the_owner_reads_the_trail() {
    let t = TestApp::new().await;
    let m = t.merchant("audit-roles", Tier::Shared).await;
    for role in [Role::Manager, Role::Cashier] {
        let token = t.staff_token(m.id, role);
        assert_error(
            page(&t, &token, "").await,
            Status::Forbidden,
            "insufficient_role",
        );
    }
    let (s, body) = page(&t, &m.token, "").await;
    assert_eq!(s, Status::Ok, "{body}");
    // Bad parameters name their field.
    for (query, field) in [
        ("cursor=nope", "cursor"),
        (
            "cursor=s00000000000000000000000000000000000000000000z",
            "cursor",
        ),
        ("action=order_created", "action"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("actor=me", "actor"),
        ("from=yesterday", "from"),
    ] {
        let message = assert_error(
            page(&t, &m.token, query).await,
            Status::UnprocessableEntity,
            "validation_failed",
        );
        assert!(message.starts_with(field), "{query}: {message}");
    }
}

#[rocket::async_test]
async fn an_owner_never_reads_another_merchants_entries() {
    let t = TestApp::new().await;
    for tier in [Tier::Shared, Tier::Schema] {
        let a = t
            .merchant(&format!("audit-a-{}", tier.as_str()), tier)
            .await;
        let b = t
            .merchant(&format!("audit-b-{}", tier.as_str()), tier)
            .await;
        let pa = t.stocked_product(&a, "A-1", 100, 0, Some(5)).await;
        let pb = t.stocked_product(&b, "B-1", 100, 0, Some(5)).await;
        for price in 101..=106 {
            reprice(&t, &a.token, &pa, price).await;
            reprice(&t, &b.token, &pb, price).await;
        }
        let b_staff = owner_id(&t, &b).await;
        let a_staff = owner_id(&t, &a).await;

        let theirs = all_entries(&t, &b, "", 3).await;
        let ours = all_entries(&t, &a, "", 3).await;
        let check = |entries: &[Value]| {
            for e in entries {
                if e["actor"]["kind"] == "staff" {
                    assert_eq!(e["actor"]["staffId"], a_staff.as_str(), "{e}");
                }
                assert_ne!(e["subject"], pb.as_str(), "{e}");
                assert_ne!(e["subject"], b_staff.as_str(), "{e}");
            }
        };
        check(&ours);
        assert_eq!(of(&ours, "product_price_changed").len(), 6);
        let their_ids: BTreeSet<&str> = theirs.iter().filter_map(|e| e["id"].as_str()).collect();
        assert!(
            ours.iter()
                .all(|e| !their_ids.contains(e["id"].as_str().unwrap_or_default()))
        );

        // B's cursors, B's staff as a filter, a window around B's events:
        // still only A's entries.
        let (s, first) = page(&t, &b.token, "limit=2").await;
        assert_eq!(s, Status::Ok, "{first}");
        let cursor = first["nextCursor"].as_str().expect("a cursor").to_string();
        let with_theirs = all_entries(&t, &a, &format!("&cursor={cursor}"), 50).await;
        check(&with_theirs);
        assert!(!with_theirs.is_empty());
        let (s, by_b) = page(&t, &a.token, &format!("actor={b_staff}")).await;
        assert_eq!(s, Status::Ok, "{by_b}");
        assert_eq!(by_b["items"], json!([]), "{by_b}");
        let (s, their_prices) = page(&t, &a.token, "action=product_price_changed&limit=200").await;
        assert_eq!(s, Status::Ok);
        check(their_prices["items"].as_array().expect("items"));
        // B's token cannot name A.
        let path = format!("{API}/audit");
        let res = t
            .send(
                Method::Get,
                &path,
                Some(&b.token),
                None,
                &[("X-Tenant-Id", a.id.to_string())],
            )
            .await;
        assert_eq!(res.status(), Status::Forbidden);
    }
}

#[rocket::async_test]
async fn a_walk_through_the_pages_sees_every_entry_once_while_events_arrive() {
    let t = TestApp::new().await;
    let m = t.merchant("audit-pages", Tier::Shared).await;
    let product = t.stocked_product(&m, "P-1", 100, 0, None).await;
    for price in 101..=112 {
        reprice(&t, &m.token, &product, price).await;
    }
    // An operator action among them.
    t.set_plan(m.id, json!({ "plan": "pro" })).await;
    reprice(&t, &m.token, &product, 113).await;
    let before = all_entries(&t, &m, "", 200).await;
    let known: BTreeSet<String> = before
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    assert!(known.len() >= 15, "{before:?}");

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    let mut price = 200;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=3&cursor={c}"),
            None => "limit=3".to_string(),
        };
        let (s, body) = page(&t, &m.token, &q).await;
        assert_eq!(s, Status::Ok, "{body}");
        for e in body["items"].as_array().expect("items") {
            *seen
                .entry(e["id"].as_str().expect("id").to_string())
                .or_default() += 1;
        }
        // New events between pages, by staff and by an operator.
        price += 1;
        reprice(&t, &m.token, &product, price).await;
        if price % 3 == 0 {
            t.set_plan(m.id, json!({ "limitOverrides": { "maxProducts": price } }))
                .await;
        }
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    for id in &known {
        assert_eq!(seen.get(id), Some(&1), "{id} seen {:?} times", seen.get(id));
    }
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}

#[rocket::async_test]
async fn operator_actions_on_the_merchant_show_up_for_its_owner() {
    let t = TestApp::new().await;
    let m = t.merchant("audit-ops", Tier::Schema).await;
    let other = t.merchant("audit-ops-other", Tier::Shared).await;
    t.set_plan(m.id, json!({ "plan": "pro" })).await;
    let admin = t.admin_token();
    for action in ["suspend", "resume"] {
        let (s, body) = t
            .post(
                &format!("{API}/admin/tenants/{}/{action}", m.id),
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(s, Status::Ok, "{body}");
    }
    let all = all_entries(&t, &m, "", 2).await;
    let operator: Vec<&Value> = all
        .iter()
        .filter(|e| e["actor"]["kind"] == "operator")
        .collect();
    let actions: Vec<&str> = operator
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"merchant.plan"), "{all:#?}");
    assert!(actions.contains(&"merchant.create"), "{all:#?}");
    assert!(actions.contains(&"tenant.provision"), "{all:#?}");
    // Newest first: resumed, then suspended, then the plan.
    let order: Vec<&str> = actions
        .iter()
        .copied()
        .filter(|a| ["tenant.active", "tenant.suspended", "merchant.plan"].contains(a))
        .collect();
    assert_eq!(
        order,
        ["tenant.active", "tenant.suspended", "merchant.plan"],
        "{all:#?}"
    );
    let plan = operator
        .iter()
        .find(|e| e["action"] == "merchant.plan")
        .expect("plan change");
    assert_eq!(plan["details"]["plan"], "pro");
    assert!(
        plan["actor"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );
    assert!(
        plan["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("operator-"))
    );

    // Nobody else's: the other merchant sees its creation only.
    let theirs = all_entries(&t, &other, "", 50).await;
    let theirs: Vec<&str> = theirs
        .iter()
        .filter(|e| e["actor"]["kind"] == "operator")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(theirs, ["merchant.create"]);
    // A staff filter leaves operator entries out.
    let staff_only = all_entries(&t, &m, "&action=login_succeeded", 50).await;
    assert!(staff_only.iter().all(|e| e["actor"]["kind"] == "staff"));
    assert!(!staff_only.is_empty());
}

#[rocket::async_test]
async fn the_trail_moves_with_the_merchant() {
    let t = TestApp::with_config(quick).await;
    let m = t.merchant("audit-moves", Tier::Shared).await;
    let product = t.stocked_product(&m, "MV-1", 100, 0, Some(4)).await;
    for price in [120, 140, 160] {
        reprice(&t, &m.token, &product, price).await;
    }
    let sold = t.sell(&m, &product, 1, 160).await;
    let (s, void, _) = t
        .post_idem(
            &format!("{API}/orders/{}/void", sold["id"].as_str().expect("id")),
            &m.token,
            &Uuid::new_v4().to_string(),
            json!({}),
        )
        .await;
    assert_eq!(s, Status::Ok, "{void}");
    let before = all_entries(&t, &m, "", 200).await;
    assert_eq!(of(&before, "product_price_changed").len(), 3);

    let mv = move_to(&t, &m, json!({ "tier": "schema" })).await;
    assert_eq!(mv["status"], "done", "{mv}");
    let (tier, _, _) = crate::moves::location(&t, m.id);
    assert_eq!(tier, "schema");
    // The same staff entries; the operator's move is one more entry.
    let after = all_entries(&t, &m, "", 200).await;
    assert_eq!(staff_entries(&after), staff_entries(&before));
    assert_eq!(after.len(), before.len() + 1, "{after:#?}");
    assert_eq!(after[0]["action"], "tenants.move", "{after:#?}");
    // And it is recorded where the merchant is now.
    reprice(&t, &m.token, &product, 180).await;
    let now = all_entries(&t, &m, "", 200).await;
    assert_eq!(now.len(), after.len() + 1);
    assert_eq!(now[0]["action"], "product_price_changed");
    assert_eq!(now[1..], after[..]);
    let mut moved = m.clone();
    moved.tier = Tier::Schema;
    let (mut conn, _) = t.data_conn(&moved);
    let rows = crate::common::count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM audit_events WHERE merchant_id = '{}'",
            m.id
        ),
    )
    .expect("count");
    assert_eq!(
        rows,
        i64::try_from(now.len() - operator_entries(&now)).unwrap()
    );
}

fn staff_entries(entries: &[Value]) -> Vec<&Value> {
    entries
        .iter()
        .filter(|e| e["actor"]["kind"] == "staff")
        .collect()
}

fn operator_entries(entries: &[Value]) -> usize {
    entries
        .iter()
        .filter(|e| e["actor"]["kind"] == "operator")
        .count()
}

#[rocket::async_test]
async fn a_failed_audit_write_undoes_a_data_plane_change_and_not_a_control_plane_one() {
    let t = TestApp::new().await;
    let m = t.merchant("audit-fails", Tier::Schema).await;
    let product = t.stocked_product(&m, "F-1", 100, 0, None).await;
    let (mut conn, schema) = t.data_conn(&m);
    let app_role = crate::common::Server::get().app_role().to_string();
    conn.batch_execute(&format!(
        "REVOKE INSERT ON \"{schema}\".audit_events FROM \"{app_role}\""
    ))
    .unwrap();

    // A price change and its event are one transaction: neither happens.
    let (s, body) = t
        .patch(
            &format!("{API}/products/{product}"),
            &m.token,
            json!({ "priceMinor": 900 }),
        )
        .await;
    assert_eq!(s, Status::InternalServerError, "{body}");
    let (s, now) = t.get(&format!("{API}/products/{product}"), &m.token).await;
    assert_eq!(s, Status::Ok);
    assert_eq!(now["priceMinor"], 100, "{now}");

    // A settings change is committed before its event is written: it
    // stands, unrecorded.
    let (s, body) = t
        .patch(
            api!("/settings"),
            &m.token,
            json!({ "receiptHeader": "Hello" }),
        )
        .await;
    assert_eq!(s, Status::Ok, "{body}");
    let (_, settings) = t.get(api!("/settings"), &m.token).await;
    assert_eq!(settings["receiptHeader"], "Hello", "{settings}");

    conn.batch_execute(&format!(
        "GRANT INSERT ON \"{schema}\".audit_events TO \"{app_role}\""
    ))
    .unwrap();
    let all = all_entries(&t, &m, "", 200).await;
    assert!(of(&all, "product_price_changed").is_empty(), "{all:#?}");
    assert!(of(&all, "settings_changed").is_empty(), "{all:#?}");
    // Recorded again once the trail can be written.
    reprice(&t, &m.token, &product, 900).await;
    let (s, _) = t
        .patch(
            api!("/settings"),
            &m.token,
            json!({ "receiptHeader": "Hi" }),
        )
        .await;
    assert_eq!(s, Status::Ok);
    let all = all_entries(&t, &m, "", 200).await;
    assert_eq!(of(&all, "product_price_changed").len(), 1, "{all:#?}");
    let settings = of(&all, "settings_changed");
    assert_eq!(settings.len(), 1, "{all:#?}");
    assert_eq!(settings[0]["details"]["old"]["receiptHeader"], "Hello");
    assert_eq!(settings[0]["details"]["new"]["receiptHeader"], "Hi");
}

/// The app role, with no merchant bound, reads and writes no audit event
/// on any tier; bound to a merchant, it reads that merchant's only.
#[rocket::async_test]
async fn the_trail_fails_closed_without_binding() {
    use diesel::Connection;
    let t = TestApp::new().await;
    let server = crate::common::Server::get();
    for tier in TIERS {
        let m = t
            .merchant(&format!("audit-rls-{}", tier.as_str()), tier)
            .await;
        let other = t
            .merchant(&format!("audit-rls-other-{}", tier.as_str()), Tier::Shared)
            .await;
        let schema = match tier {
            Tier::Shared => posd::tenancy::SHARED_SCHEMA.to_string(),
            _ => posd::tenancy::tenant_schema_name(m.id),
        };
        let mut conn = match tier {
            Tier::Dedicated => diesel::PgConnection::establish(
                &server.app_url(&posd::tenancy::tenant_database_name(m.id)),
            )
            .unwrap(),
            _ => t.db.app_role(),
        };
        let q = format!("SELECT count(*) AS n FROM \"{schema}\".audit_events");
        assert_eq!(crate::common::count(&mut conn, &q).unwrap(), 0, "{tier:?}");
        let insert = format!(
            "INSERT INTO \"{schema}\".audit_events (merchant_id, id, actor_label, action) \
             VALUES ('{}', gen_random_uuid(), 'owner', 'login_failed')",
            m.id
        );
        assert!(
            conn.batch_execute(&insert).is_err(),
            "{tier:?}: an unbound insert was accepted"
        );
        conn.batch_execute(&format!(
            "BEGIN; SELECT set_config('posd.merchant_id', '{}', true);",
            m.id
        ))
        .unwrap();
        let mine = crate::common::count(&mut conn, &q).unwrap();
        // The same insert, bound, is accepted (and rolled back).
        conn.batch_execute(&insert).unwrap();
        assert_eq!(crate::common::count(&mut conn, &q).unwrap(), mine + 1);
        conn.batch_execute("ROLLBACK").unwrap();
        let listed = all_entries(&t, &m, "", 200).await;
        assert_eq!(
            usize::try_from(mine).unwrap(),
            listed.len() - operator_entries(&listed),
            "{tier:?}"
        );
        assert!(mine >= 1, "{tier:?}: the owner's login");
        // Bound to the other merchant, none of this one's.
        if tier == Tier::Shared {
            conn.batch_execute(&format!(
                "BEGIN; SELECT set_config('posd.merchant_id', '{}', true);",
                other.id
            ))
            .unwrap();
            let theirs =
                crate::common::count(&mut conn, &format!("{q} WHERE merchant_id = '{}'", m.id))
                    .unwrap();
            conn.batch_execute("ROLLBACK").unwrap();
            assert_eq!(theirs, 0);
        }
    }
}
