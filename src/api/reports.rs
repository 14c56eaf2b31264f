//! `/reports`: manager or owner.

use rocket::{Route, get, routes, serde::json::Json};
use utoipa::OpenApi;

use super::{docs, fields::Day, params};

use crate::{
    api::guards::Manager,
    error::ApiResult,
    pos::report::{self, DailyReport},
    tenancy::{context::TenantContext, tenant_db::TenantDb},
};

/// The report of one business day in the merchant's time zone (today's by
/// default), starting at the merchant's `businessDayCutoffHour`.
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
async fn daily(
    m: Manager<'_>,
    ctx: &TenantContext,
    db: TenantDb,
    date: Option<&str>,
) -> ApiResult<Json<DailyReport>> {
    let tz = m.0.placement.timezone;
    let currency = m.0.placement.currency.clone();
    let cutoff = u32::try_from(ctx.settings.business_day_cutoff_hour).unwrap_or(0);
    let date = match date {
        None => report::business_day(tz, chrono::Utc::now(), cutoff),
        Some(d) => params::day("date", d)?,
    };
    db.run(move |tx| report::daily(tx, date, tz, cutoff, &currency))
        .await
        .map(Json)
}

#[derive(OpenApi)]
#[openapi(paths(daily))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![daily]
}
