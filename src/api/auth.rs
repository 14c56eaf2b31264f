//! `POST /auth/login`: staff credentials for a token.
//!
//! The merchant is the body's `merchant` (its slug), or the merchant the
//! request's host names ([`super::host`]): from a merchant's host the field
//! may be left out, and one naming another merchant is 403
//! `tenant_mismatch`.
//!
//! Attempts are rate-limited per merchant and email (guessing one staff
//! member's password) and per client address (spraying many accounts);
//! past the limit the answer is 429 with `Retry-After`, before any
//! password is checked.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota};
use rocket::{Route, State, http::Status, post, routes, serde::json::Json, tokio};
use serde::{Deserialize, Serialize};

use utoipa::{OpenApi, ToSchema};

use super::{
    Body,
    audit::{Event, RequestId, details, record_after},
    client::ClientAddr,
    docs,
    fields::{EmailText, PasswordText, Token64},
    host::RequestHost,
    ratelimit::take,
};
use crate::{
    app::App,
    auth::{Role, password},
    config::{RateLimit, Settings},
    db::{
        ids::MerchantId,
        kinds::{AuditAction, MerchantStatus},
        platform::staff::StaffUser,
        tenant::audit::Actor,
    },
    error::{ApiError, ApiResult, ErrorCode},
};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Login {
    /// The merchant's slug. May be left out when the request is sent to
    /// the merchant's own host (`<slug>.<base domain>` or a verified
    /// custom domain).
    #[serde(default)]
    merchant: Option<Token64>,
    email: EmailText,
    password: PasswordText,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[expect(
    clippy::struct_field_names,
    reason = "the field names are the JSON keys"
)]
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
        ErrorCode::InvalidCredentials,
        "merchant, email or password is wrong",
    )
}

/// The slug of the merchant a login is for: the body's, the host's, which
/// must then be the same merchant, or 422 when there is neither.
fn login_merchant(given: Option<String>, host: &RequestHost) -> ApiResult<String> {
    match (given, &host.0) {
        (Some(given), Some(h)) if !given.eq_ignore_ascii_case(&h.slug) => Err(ApiError::forbidden(
            ErrorCode::TenantMismatch,
            "merchant names another merchant than this host",
        )),
        (_, Some(h)) => Ok(h.slug.to_string()),
        (Some(given), None) => Ok(given),
        (None, None) => Err(ApiError::new(
            Status::UnprocessableEntity,
            ErrorCode::InvalidBody,
            "missing field `merchant`",
        )),
    }
}

/// The login rate limits: per merchant and email (default a burst of 10,
/// then one per 30 s) and per client address (100, then 2 per second); see
/// `POSD_LOGIN_ACCOUNT_LIMIT` and `POSD_LOGIN_ADDRESS_LIMIT`.
pub struct LoginLimiter {
    accounts: DefaultKeyedRateLimiter<(String, String)>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
}

fn quota(limit: RateLimit) -> Quota {
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(limit.interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl LoginLimiter {
    pub fn new(settings: &Settings) -> Self {
        LoginLimiter {
            accounts: DefaultKeyedRateLimiter::keyed(quota(settings.login_account_limit)),
            addresses: DefaultKeyedRateLimiter::keyed(quota(settings.login_address_limit)),
        }
    }

    /// Takes one attempt for this account and address, or says how long to wait.
    fn check(&self, merchant: &str, email: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        if let Some(ip) = address {
            take(&self.addresses, &ip)?;
        }
        take(
            &self.accounts,
            &(merchant.to_lowercase(), email.to_lowercase()),
        )
    }
}

/// Staff credentials for a token. A wrong merchant, email or password all
/// answer the same 401. A login, and a wrong password for an existing
/// staff account, are recorded in the merchant's audit trail.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Login,
    responses(
        (status = 200, body = Token),
        (status = 401, description = "`invalid_credentials`", body = docs::ErrorEnvelope),
        (status = 403, description = "`merchant_suspended`, or `tenant_mismatch`: `merchant` names another merchant than the request's host", body = docs::ErrorEnvelope),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/auth/login", data = "<body>")]
async fn login(
    app: &State<App>,
    limiter: &State<LoginLimiter>,
    address: ClientAddr,
    host: &RequestHost,
    request: RequestId,
    body: Body<Login>,
) -> ApiResult<Json<Token>> {
    let RequestId(request_id) = request;
    let Login {
        merchant,
        email,
        password,
    } = body.0;
    let merchant = login_merchant(merchant.map(Token64::into_inner), host)?;
    let (email, pw) = (email.into_inner(), password.into_inner());
    if let Err(wait) = limiter.check(&merchant, &email, address.0) {
        let mut e = ApiError::new(
            Status::TooManyRequests,
            ErrorCode::TooManyAttempts,
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
        Some((_, status)) if ok && status != MerchantStatus::Active => {
            return Err(ApiError::forbidden(
                ErrorCode::MerchantSuspended,
                "this merchant is suspended",
            ));
        }
        Some((u, _)) if ok => u,
        Some((u, _)) => {
            // Recorded off the answer's path: a wrong password for an
            // existing account must take as long as one for no account.
            let tenancy = app.tenancy.clone();
            let (actor, event) = login_event(&u, AuditAction::LoginFailed, request_id);
            rocket::tokio::spawn(async move {
                record_after(&tenancy, u.merchant_id, None, actor, vec![event]).await;
            });
            return Err(bad_credentials());
        }
        None => return Err(bad_credentials()),
    };
    let (actor, event) = login_event(&user, AuditAction::LoginSucceeded, request_id);
    record_after(app, user.merchant_id, None, actor, vec![event]).await;
    let role = user.role;
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

/// What the audit trail records of a login or a failed one: who (the
/// staff account and its email), never the password.
#[derive(Serialize)]
struct LoginDetails<'a> {
    email: &'a str,
}

fn login_event(user: &StaffUser, action: AuditAction, request_id: String) -> (Actor, Event) {
    let actor = Actor {
        staff: Some(user.id.0),
        label: user.role.as_str().to_string(),
        request_id: Some(request_id),
    };
    let event = Event {
        action,
        subject: Some(user.id.to_string()),
        details: details(&LoginDetails { email: &user.email }),
    };
    (actor, event)
}

#[derive(OpenApi)]
#[openapi(paths(login))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![login]
}
