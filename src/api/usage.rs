//! `GET /admin/tenants/{id}/usage` reads a merchant's usage per day
//! (operator), as JSON or CSV for billing. Requests are counted to it by
//! [`super::accounting::Recorder`] (in memory, see
//! [`crate::tenancy::usage`]).

use chrono::NaiveDate;
use rocket::{
    Request, Responder, Route, State, get,
    http::ContentType,
    request::{FromRequest, Outcome},
    routes,
    serde::json::Json,
};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::{docs, fields::Day, guards::PlatformAdmin, params};
use crate::{
    app::App,
    db::{
        ids::MerchantId,
        platform::{merchants::Merchant, usage::UsageDay},
    },
    error::{ApiError, ApiResult},
    tenancy::usage,
};

/// One day of a merchant's usage (UTC).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UsageDayView {
    day: NaiveDate,
    /// Authenticated staff requests.
    api_calls: i64,
    /// Orders created (sales and offline bills).
    orders: i64,
    /// Time spent in the merchant's database transactions.
    db_time_ms: f64,
    /// Rows in the merchant's tables, as last measured that day; null if
    /// it was not measured that day.
    rows_stored: Option<i64>,
    /// Bytes the merchant's data takes, as last measured that day.
    bytes_stored: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UsageReport {
    merchant_id: MerchantId,
    /// Oldest first; a day without usage is absent.
    days: Vec<UsageDayView>,
}

/// Whether the client asks for CSV (`Accept: text/csv`).
struct AcceptsCsv(bool);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AcceptsCsv {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let csv = req
            .headers()
            .get("Accept")
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().to_ascii_lowercase().starts_with("text/csv"));
        Outcome::Success(AcceptsCsv(csv))
    }
}

/// How a usage report is answered (`format`).
#[derive(Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
enum UsageFormat {
    Json,
    Csv,
}

impl UsageFormat {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(UsageFormat::Json),
            "csv" => Some(UsageFormat::Csv),
            _ => None,
        }
    }
}

#[derive(Responder)]
enum UsageAnswer {
    Json(Json<UsageReport>),
    Csv((ContentType, String)),
}

/// A merchant's usage per UTC day: the last 30 days by default, at most
/// 366. The CSV (`format=csv` or `Accept: text/csv`) has a header row and
/// the same fields, `merchantId` first. This instance's pending counters
/// are flushed first; other instances' reach the control plane within
/// `POSD_USAGE_FLUSH_INTERVAL`.
#[utoipa::path(get, path = "/admin/tenants/{id}/usage", tag = "admin", security(("admin" = [])),
    params(
        ("id" = Uuid, Path),
        ("from" = inline(Option<Day>), Query, description = "first day, inclusive; 29 days before `to` by default"),
        ("to" = inline(Option<Day>), Query, description = "last day, inclusive; today (UTC) by default"),
        ("format" = inline(Option<UsageFormat>), Query, description = "`json` (default) or `csv`"),
    ),
    responses(
        (status = 200, description = "JSON, or CSV with `format=csv` or `Accept: text/csv`",
            content((UsageReport = "application/json"), (String = "text/csv"))),
        (status = 401, response = docs::Unauthorized),
        (status = 404, response = docs::NotFound),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/admin/tenants/<id>/usage?<from>&<to>&<format>")]
async fn usage_days(
    _admin: PlatformAdmin,
    app: &State<App>,
    id: MerchantId,
    from: Option<&str>,
    to: Option<&str>,
    format: Option<&str>,
    accept: AcceptsCsv,
) -> ApiResult<UsageAnswer> {
    let (from, to) = params::days(from, to)?;
    let csv = match format.map(UsageFormat::parse) {
        None => accept.0,
        Some(Some(UsageFormat::Json)) => false,
        Some(Some(UsageFormat::Csv)) => true,
        Some(None) => return Err(ApiError::invalid("format", "must be json or csv")),
    };
    if let Err(e) = app.usage.flush(app).await {
        tracing::warn!(error = %e, "could not flush usage counters before a read; they are kept");
    }
    let days = app
        .platform(move |p| {
            Merchant::find(p, id).map_err(ApiError::or_not_found("merchant"))?;
            Ok(UsageDay::list(p, id, from, to)?)
        })
        .await?;
    if csv {
        return Ok(UsageAnswer::Csv((ContentType::CSV, usage::csv(id, &days))));
    }
    Ok(UsageAnswer::Json(Json(UsageReport {
        merchant_id: id,
        days: days
            .into_iter()
            .map(|d| UsageDayView {
                day: d.day,
                api_calls: d.api_calls,
                orders: d.orders,
                db_time_ms: usage::db_time_ms(d.db_time_us),
                rows_stored: d.rows_stored,
                bytes_stored: d.bytes_stored,
            })
            .collect(),
    })))
}

#[derive(OpenApi)]
#[openapi(paths(usage_days))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![usage_days]
}
