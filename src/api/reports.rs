//! `/reports`: manager or owner.

use rocket::{Route, get, routes, serde::json::Json};
use utoipa::OpenApi;

use super::{docs, fields::Day, params};

use crate::{
    api::guards::Manager,
    error::ApiResult,
    pos::report::{self, DailyReport},
    tenancy::tenant_db::TenantDb,
};

/// The report of one day in the merchant's time zone (today by default).
#[utoipa::path(get, path = "/reports/daily", tag = "reports", security(("staff" = [])),
    params(("date" = inline(Option<Day>), Query, description = "today in the merchant's time zone by default")),
    responses(
        (status = 200, body = DailyReport),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/reports/daily?<date>")]
async fn daily(m: Manager<'_>, db: TenantDb, date: Option<&str>) -> ApiResult<Json<DailyReport>> {
    let tz = m.0.placement.timezone;
    let currency = m.0.placement.currency.clone();
    let date = match date {
        None => chrono::Utc::now().with_timezone(&tz).date_naive(),
        Some(d) => params::day("date", d)?,
    };
    db.run(move |tx| report::daily(tx, date, tz, &currency))
        .await
        .map(Json)
}

#[derive(OpenApi)]
#[openapi(paths(daily))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![daily]
}
