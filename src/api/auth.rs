//! `POST /auth/login`: staff credentials for a token.
//!
//! Attempts are rate-limited per merchant and email (guessing one staff
//! member's password) and per client address (spraying many accounts);
//! past the limit the answer is 429 with `Retry-After`, before any
//! password is checked.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use rocket::{Route, State, http::Status, post, routes, serde::json::Json, tokio};
use serde::{Deserialize, Serialize};

use utoipa::{OpenApi, ToSchema};

use super::{Body, docs};
use crate::{
    app::App,
    auth::{Role, password},
    db::{ids::MerchantId, platform::staff::StaffUser},
    error::{ApiError, ApiResult},
};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Login {
    /// The merchant's slug.
    merchant: String,
    email: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Token {
    /// A staff JWT: send it as `Authorization: Bearer <token>`.
    token: String,
    expires_at: DateTime<Utc>,
    merchant_id: MerchantId,
    role: Role,
}

fn bad_credentials() -> ApiError {
    ApiError::new(
        Status::Unauthorized,
        "invalid_credentials",
        "merchant, email or password is wrong",
    )
}

/// Attempts per merchant and email: a burst of 10, then one per 30 s.
const ACCOUNT_BURST: u32 = 10;
const ACCOUNT_PERIOD: Duration = Duration::from_secs(30);
/// Attempts per client address: a burst of 100, then 2 per second.
const ADDRESS_BURST: u32 = 100;
const ADDRESS_PERIOD: Duration = Duration::from_millis(500);
/// Keys kept before forgetting those whose limit has fully recovered.
const MAX_KEYS: usize = 100_000;

/// The login rate limits.
pub struct LoginLimiter {
    accounts: DefaultKeyedRateLimiter<(String, String)>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
}

fn quota(period: Duration, burst: u32) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter {
            accounts: DefaultKeyedRateLimiter::keyed(quota(ACCOUNT_PERIOD, ACCOUNT_BURST)),
            addresses: DefaultKeyedRateLimiter::keyed(quota(ADDRESS_PERIOD, ADDRESS_BURST)),
        }
    }
}

impl LoginLimiter {
    /// Takes one attempt for this account and address, or says how long to wait.
    fn check(&self, merchant: &str, email: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        if self.accounts.len() > MAX_KEYS {
            self.accounts.retain_recent();
        }
        if self.addresses.len() > MAX_KEYS {
            self.addresses.retain_recent();
        }
        let clock = governor::clock::DefaultClock::default();
        if let Some(ip) = address {
            self.addresses
                .check_key(&ip)
                .map_err(|n| n.wait_time_from(clock.now()))?;
        }
        self.accounts
            .check_key(&(merchant.to_lowercase(), email.to_lowercase()))
            .map_err(|n| n.wait_time_from(clock.now()))
    }
}

/// Staff credentials for a token. A wrong merchant, email or password all
/// answer the same 401.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Login,
    responses(
        (status = 200, body = Token),
        (status = 401, description = "`invalid_credentials`", body = docs::ErrorEnvelope),
        (status = 403, description = "`merchant_suspended`", body = docs::ErrorEnvelope),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/auth/login", data = "<body>")]
async fn login(
    app: &State<App>,
    limiter: &State<LoginLimiter>,
    address: Option<IpAddr>,
    body: Body<Login>,
) -> ApiResult<Json<Token>> {
    let Login {
        merchant,
        email,
        password: pw,
    } = body.0;
    if merchant.len() > 100 || email.len() > 320 || pw.len() > 1024 {
        return Err(bad_credentials());
    }
    if let Err(wait) = limiter.check(&merchant, &email, address) {
        let mut e = ApiError::new(
            Status::TooManyRequests,
            "too_many_attempts",
            "too many login attempts; wait before trying again",
        );
        e.retry_after = Some(wait.as_secs().max(1));
        return Err(e);
    }
    let user = app
        .platform(move |p| Ok(StaffUser::find_for_login(p, &merchant, &email)?))
        .await?;
    let hash = user.as_ref().map(|(u, _)| u.password_hash.clone());
    // Argon2 is deliberately slow: keep it off the async workers. An unknown
    // user is verified against a dummy hash so it takes as long.
    let ok = tokio::task::spawn_blocking(move || password::verify(&pw, hash.as_deref()))
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some((_, status)) if ok && status != "active" => {
            return Err(ApiError::forbidden(
                "merchant_suspended",
                "this merchant is suspended",
            ));
        }
        Some((u, _)) if ok => u,
        _ => return Err(bad_credentials()),
    };
    let role = Role::parse(&user.role).ok_or_else(|| ApiError::internal("unknown role"))?;
    let (token, exp) = app
        .jwt
        .issue_staff(user.id, user.merchant_id, role, app.settings.token_ttl)
        .map_err(ApiError::internal)?;
    Ok(Json(Token {
        token,
        expires_at: DateTime::from_timestamp(exp, 0).unwrap_or_default(),
        merchant_id: user.merchant_id,
        role,
    }))
}

#[derive(OpenApi)]
#[openapi(paths(login))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![login]
}
