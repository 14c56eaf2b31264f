//! `GET /admin/tenants/top`: the merchants with the most load on this
//! instance over the last minutes (see [`crate::tenancy::load`]).

use rocket::{Route, State, get, routes, serde::json::Json};
use utoipa::{OpenApi, ToSchema};

use super::{docs, fields::WindowMinutes, guards::PlatformAdmin};
use crate::{
    app::App,
    error::{ApiError, ApiResult},
    tenancy::load::{MAX_WINDOW_MINUTES, RankBy, Ranking},
};

/// The most merchants one answer lists.
const MAX_LIMIT: usize = 1000;

/// How merchants are ranked (`by`).
#[derive(Clone, Copy, ToSchema)]
#[schema(rename_all = "snake_case")]
#[expect(dead_code, reason = "documentation only: parsed by `rank_by`")]
enum TopBy {
    DbTime,
    Requests,
    Errors,
}

fn rank_by(s: &str) -> Result<RankBy, ApiError> {
    match s {
        "db_time" => Ok(RankBy::DbTime),
        "requests" => Ok(RankBy::Requests),
        "errors" => Ok(RankBy::Errors),
        _ => Err(ApiError::invalid(
            "by",
            "must be db_time, requests or errors",
        )),
    }
}

/// `5m`, `1m`..`15m` (or `300s`, any whole number of minutes).
fn window_minutes(s: &str) -> Result<u32, ApiError> {
    let bad = || {
        ApiError::invalid(
            "window",
            format!("must be whole minutes from 1m to {MAX_WINDOW_MINUTES}m, e.g. 5m"),
        )
    };
    let d = humantime::parse_duration(s).map_err(|_| bad())?;
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs % 60 != 0 {
        return Err(bad());
    }
    u32::try_from(secs / 60)
        .ok()
        .filter(|m| (1..=MAX_WINDOW_MINUTES).contains(m))
        .ok_or_else(bad)
}

/// The merchants with the most load on this instance over the window:
/// requests, 5xx errors, 429s, latency, time inside their transactions
/// and waiting for a pool, each merchant's share of its pool's database
/// time and its heaviest routes; everything else as `other`, and totals
/// per tier. Each instance answers for its own traffic.
#[utoipa::path(get, path = "/admin/tenants/top", tag = "admin", security(("admin" = [])),
    params(
        ("by" = inline(Option<TopBy>), Query, description = "`db_time` (default), `requests` or `errors`"),
        ("window" = inline(Option<WindowMinutes>), Query, description = "whole minutes, `1m` to `15m`; `5m` by default"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "merchants listed, 20 by default"),
    ),
    responses(
        (status = 200, body = Ranking),
        (status = 401, response = docs::Unauthorized),
        (status = 422, response = docs::Invalid),
    ))]
#[get("/admin/tenants/top?<by>&<window>&<limit>")]
fn top(
    _admin: PlatformAdmin,
    app: &State<App>,
    by: Option<&str>,
    window: Option<&str>,
    limit: Option<&str>,
) -> ApiResult<Json<Ranking>> {
    let by = by.map_or(Ok(RankBy::DbTime), rank_by)?;
    let window = window.map_or(Ok(5), window_minutes)?;
    let limit = match limit {
        None => 20,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", format!("must be 1 to {MAX_LIMIT}")))?,
    };
    Ok(Json(app.load.top(window, by, limit)))
}

#[derive(OpenApi)]
#[openapi(paths(top), components(schemas(TopBy)))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![top]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_minutes_within_the_kept_ones() {
        assert_eq!(window_minutes("5m").ok(), Some(5));
        assert_eq!(window_minutes("300s").ok(), Some(5));
        assert_eq!(window_minutes("15m").ok(), Some(15));
        for bad in ["0m", "16m", "90s", "1h", "5", "", "m", "1.5m"] {
            assert!(window_minutes(bad).is_err(), "{bad}");
        }
    }
}
