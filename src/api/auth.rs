//! `POST /auth/login`: staff credentials for a token.

use chrono::{DateTime, Utc};
use rocket::{Route, State, post, routes, serde::json::Json, tokio};
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
        rocket::http::Status::Unauthorized,
        "invalid_credentials",
        "merchant, email or password is wrong",
    )
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
async fn login(app: &State<App>, body: Body<Login>) -> ApiResult<Json<Token>> {
    let Login {
        merchant,
        email,
        password: pw,
    } = body.0;
    if merchant.len() > 100 || email.len() > 320 || pw.len() > 1024 {
        return Err(bad_credentials());
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
