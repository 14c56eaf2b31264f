//! `/offline-bills`: sales a till recorded while it was offline.
//!
//! Each bill carries the till's own UUID (`clientId`) and the time of the
//! sale, and is applied at most once: a bill already applied answers
//! `duplicate`. A bill records a sale that already happened, so it is
//! accepted even when it takes stock below zero (the product is flagged for
//! a count); it is `rejected` only when it cannot be applied (malformed,
//! unknown product, payments short). Each bill is priced, then written in
//! a subtransaction of its own (`posd_bill_write`), so a rejected bill does
//! not block the others; the batch is one transaction.
//!
//! The capability is behind the feature flag [`FLAG`] (on by default): a
//! merchant for whom it is off gets 403 `feature_disabled` before its
//! batch is read.

use chrono::{DateTime, Duration, Utc};
use rocket::{
    Request, Route, State, post,
    request::{FromRequest, Outcome},
    routes,
    serde::json::Json,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::{
    Body, docs,
    fields::{Note, list_field},
    orders::{CreateOrder, Lines, Payments},
    parse,
};
use crate::{
    api::guards::Staff,
    app::App,
    db::{
        ids::{CustomerId, OrderId},
        tenant::sales,
    },
    error::{ApiError, ApiResult, ErrorBody, ErrorCode, fail},
    pos::checkout::{self, OfflineBill},
    tenancy::{context::TenantContext, settings::Settings, tenant_db::TenantDb},
};

/// The feature flag offline bills are behind.
pub const FLAG: &str = "offline_bills";

/// The merchant has the [`FLAG`] feature on (403 `feature_disabled`
/// otherwise).
struct OfflineBillsEnabled;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for OfflineBillsEnabled {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        match req.guard::<&TenantContext>().await {
            Outcome::Success(ctx) if ctx.enabled(FLAG) => Outcome::Success(OfflineBillsEnabled),
            Outcome::Success(_) => fail(req, super::errors::feature_disabled(FLAG)),
            Outcome::Error(e) => Outcome::Error(e),
            Outcome::Forward(s) => Outcome::Forward(s),
        }
    }
}

pub const MAX_BILLS: usize = 100;
/// How far in the future a till's clock may be.
const MAX_CLOCK_SKEW_MINUTES: i64 = 5;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Batch {
    /// 1 to 100 bills, each checked on its own.
    #[schema(value_type = Bills)]
    bills: RawBills,
}

/// What the contract says a batch holds; the bills are parsed one by one.
#[expect(dead_code, reason = "describes the batch in the OpenAPI document only")]
mod contract {
    use super::{Bill, MAX_BILLS, list_field};

    list_field!(
        /// 1 to 100 bills.
        pub Bills: Bill, 1, MAX_BILLS
    );
}
use contract::Bills;
list_field!(
    /// The bills as received: each is parsed on its own, so that one
    /// malformed bill does not reject the batch.
    RawBills: Value, 1, MAX_BILLS
);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Bill {
    /// The till's own id for the bill: a bill is applied at most once.
    client_id: Uuid,
    created_at: DateTime<Utc>,
    lines: Lines,
    #[serde(default)]
    payments: Payments,
    customer_id: Option<CustomerId>,
    note: Option<Note>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum BillStatus {
    Created,
    Duplicate,
    Rejected,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct BillResult {
    index: usize,
    client_id: Option<Uuid>,
    status: BillStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<OrderId>,
    /// Why the bill was rejected (`rejected` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct BatchResult {
    created: usize,
    duplicate: usize,
    rejected: usize,
    results: Vec<BillResult>,
}

fn rejected(index: usize, client_id: Option<Uuid>, e: &ApiError) -> BillResult {
    BillResult {
        index,
        client_id,
        status: BillStatus::Rejected,
        order_id: None,
        error: Some(ErrorBody {
            code: e.code,
            message: e.message.clone(),
            details: e.details.clone(),
        }),
    }
}

/// A bill, parsed and checked without the database. A bill older than
/// `max_age` is refused: it would change a report long since closed.
fn prepare(
    raw: &Value,
    staff: &Staff,
    now: DateTime<Utc>,
    max_age: std::time::Duration,
    settings: &Settings,
) -> ApiResult<checkout::Sale> {
    let bill: Bill = parse(&raw.to_string()).map_err(|e| {
        if e.code == ErrorCode::InvalidBody {
            ApiError::new(e.status, ErrorCode::InvalidBill, e.message)
        } else {
            e
        }
    })?;
    if bill.created_at > now + Duration::minutes(MAX_CLOCK_SKEW_MINUTES) {
        return Err(ApiError::invalid("createdAt", "is in the future"));
    }
    let oldest = Duration::from_std(max_age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    if bill.created_at < oldest {
        return Err(ApiError::new(
            rocket::http::Status::UnprocessableEntity,
            ErrorCode::BillTooOld,
            format!(
                "createdAt: is more than {} old; such a bill must be entered by hand",
                humantime::format_duration(max_age)
            ),
        ));
    }
    let offline = OfflineBill {
        client_id: bill.client_id,
        created_at: bill.created_at,
    };
    let order = CreateOrder {
        lines: bill.lines,
        payments: bill.payments,
        customer_id: bill.customer_id,
        note: bill.note,
    };
    let sale = order.into_sale(staff, settings, Some(offline));
    checkout::validate(&sale)?;
    Ok(sale)
}

/// Bills recorded while offline; one result per bill (`created`,
/// `duplicate` or `rejected` with the reason). Behind the feature flag
/// `offline_bills` (403 `feature_disabled` when it is off).
#[utoipa::path(post, path = "/offline-bills", tag = "offline", security(("staff" = [])),
    request_body = Batch,
    responses(
        (status = 200, body = BatchResult),
        (status = 401, response = docs::Unauthorized),
        (status = 403, description = "`insufficient_role`, `merchant_suspended` or `feature_disabled` (`offline_bills` is off)", body = docs::ErrorEnvelope),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/offline-bills", data = "<body>")]
async fn offline_bills(
    staff: &Staff,
    _enabled: OfflineBillsEnabled,
    ctx: &TenantContext,
    db: TenantDb,
    app: &State<App>,
    body: Body<Batch>,
) -> ApiResult<Json<BatchResult>> {
    // The merchant's window if it set one, else the server's.
    let max_age = ctx
        .settings
        .offline_bill_window_hours
        .and_then(|h| u64::try_from(h).ok())
        .map_or(app.settings.offline_bill_max_age, |h| {
            std::time::Duration::from_secs(h.saturating_mul(3600))
        });
    let bills = body.0.bills.into_inner();
    let now = Utc::now();
    let prepared: Vec<(Option<Uuid>, ApiResult<checkout::Sale>)> = bills
        .iter()
        .map(|raw| {
            let client_id = raw
                .get("clientId")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok());
            (client_id, prepare(raw, staff, now, max_age, &ctx.settings))
        })
        .collect();
    let results = db
        .run(move |tx| {
            let mut results = Vec::with_capacity(prepared.len());
            for (index, (client_id, sale)) in prepared.into_iter().enumerate() {
                let duplicate = |order_id| BillResult {
                    index,
                    client_id,
                    status: BillStatus::Duplicate,
                    order_id: Some(order_id),
                    error: None,
                };
                let sale = match sale {
                    Ok(s) => s,
                    Err(e) => {
                        // A bill already applied is a duplicate, even if it
                        // would not pass today's checks (it may have grown
                        // old).
                        let applied = match client_id {
                            Some(c) => sales::read(tx, None, &[], None, None, Some(c))?.bill_order,
                            None => None,
                        };
                        results.push(match applied {
                            Some(existing) => duplicate(existing),
                            None => rejected(index, client_id, &e),
                        });
                        continue;
                    }
                };
                match checkout::record(tx, &sale, None, None).map_err(ApiError::from) {
                    Ok(checkout::Recorded::Created { view, .. }) => results.push(BillResult {
                        index,
                        client_id,
                        status: BillStatus::Created,
                        order_id: Some(view.order.id),
                        error: None,
                    }),
                    Ok(checkout::Recorded::Duplicate(existing)) => {
                        results.push(duplicate(existing));
                    }
                    Ok(_) => {
                        return Err(ApiError::internal(
                            "an offline bill was answered as an idempotent request",
                        ));
                    }
                    Err(e) if e.status.code >= 500 => return Err(e),
                    Err(e) => results.push(rejected(index, client_id, &e)),
                }
            }
            Ok(results)
        })
        .await?;
    let count = |s: fn(&BillStatus) -> bool| results.iter().filter(|r| s(&r.status)).count();
    let created = count(|s| matches!(s, BillStatus::Created));
    app.usage.orders(staff.claims.mid, created);
    Ok(Json(BatchResult {
        created,
        duplicate: count(|s| matches!(s, BillStatus::Duplicate)),
        rejected: count(|s| matches!(s, BillStatus::Rejected)),
        results,
    }))
}

#[derive(OpenApi)]
#[openapi(paths(offline_bills))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![offline_bills]
}
