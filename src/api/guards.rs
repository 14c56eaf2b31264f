//! Every Rocket request guard of posd.
//!
//! `StaffClaims` (a verified staff JWT) → `Staff` (plus the merchant's
//! placement: unknown merchant 401, suspended 403, a merchant other than
//! the one `X-Tenant-Id` or the request's host names 403
//! `tenant_mismatch`; a merchant past its `requestsPerMinute` 429
//! `rate_limited`, see [`super::ratelimit`]; a deactivated, deleted or
//! foreign staff user 401, a demoted one acts with the current role, see
//! [`crate::auth::revocation`]) → `Manager` / `Owner` (role checks, 403) and
//! `TenantDb` (the merchant's data plane) and `&TenantContext` (its plan,
//! limits and features, cached). `PlatformAdmin` verifies an
//! operator token. Every failure is an error outcome with a JSON body, never
//! a forward.

use std::sync::Arc;

use rocket::{
    Request,
    http::Status,
    request::{FromRequest, Outcome},
    tokio,
};

use super::{
    accounting::{Attribution, RequestTrace},
    errors::rate_limited,
    host::RequestHost,
    ratelimit::RequestLimiter,
};
use crate::{
    app::App,
    auth::{
        Role,
        jwt::{AdminClaims, StaffClaims},
        revocation::StaffState,
    },
    db::{
        ids::StaffId,
        platform::{plans::LimitKind, staff::StaffUser},
    },
    error::{ApiError, ErrorCode, fail},
    tenancy::{context::TenantContext, placement::Placement, tenant_db::TenantDb},
};

fn app<'r>(req: &'r Request<'_>) -> Result<&'r App, ApiError> {
    req.rocket()
        .state::<App>()
        .ok_or_else(|| ApiError::internal("application state is not managed"))
}

fn bearer<'r>(req: &'r Request<'_>) -> Result<&'r str, ApiError> {
    let header = req
        .headers()
        .get_one("Authorization")
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))
}

fn token_error(e: &jsonwebtoken::errors::Error) -> ApiError {
    use jsonwebtoken::errors::ErrorKind as K;
    let message = match e.kind() {
        K::ExpiredSignature => "the token has expired",
        K::ImmatureSignature => "the token is not valid yet",
        K::InvalidAudience => "the token is not valid for this API",
        K::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is invalid",
    };
    ApiError::unauthorized(message)
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for StaffClaims {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let result = app(req).and_then(|app| {
            let token = bearer(req)?;
            app.jwt.verify_staff(token).map_err(|e| token_error(&e))
        });
        match result {
            Ok(c) => Outcome::Success(c),
            Err(e) => fail(req, e),
        }
    }
}

/// An authenticated staff member of an active merchant.
#[derive(Debug, Clone)]
pub struct Staff {
    pub claims: StaffClaims,
    pub placement: Arc<Placement>,
    /// The merchant's plan, limits and features.
    pub context: Arc<TenantContext>,
}

impl Staff {
    pub fn role(&self) -> Role {
        self.claims.role
    }
}

async fn resolve_staff(req: &Request<'_>) -> Result<Staff, ApiError> {
    let app = app(req)?;
    let token = bearer(req)?;
    let mut claims = app.jwt.verify_staff(token).map_err(|e| token_error(&e))?;
    if let Some(t) = req.headers().get_one("X-Tenant-Id")
        && uuid::Uuid::parse_str(t.trim()).ok() != Some(claims.mid.0)
    {
        return Err(ApiError::forbidden(
            ErrorCode::TenantMismatch,
            "X-Tenant-Id does not match the token's merchant",
        ));
    }
    if let RequestHost(Some(host)) = req.local_cache(RequestHost::default)
        && host.id != claims.mid
    {
        return Err(ApiError::forbidden(
            ErrorCode::TenantMismatch,
            "this host belongs to another merchant than the token's",
        ));
    }
    let placement = match app.directory.cached(claims.mid) {
        Some(p) => Some(p),
        None => {
            let dir = app.directory.clone();
            let mid = claims.mid;
            tokio::task::spawn_blocking(move || dir.resolve(mid))
                .await
                .map_err(ApiError::internal)??
        }
    };
    let placement =
        placement.ok_or_else(|| ApiError::unauthorized("the token's merchant does not exist"))?;
    if placement.suspended {
        return Err(ApiError::forbidden(
            ErrorCode::MerchantSuspended,
            "this merchant is suspended",
        ));
    }
    let context = app
        .context(claims.mid)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's merchant does not exist"))?;
    // From here on the request is the merchant's, whatever its outcome:
    // its load counts it (`super::metrics`).
    req.local_cache(|| Attribution(Some((placement.clone(), context.clone()))));
    if let Some(limiter) = req.rocket().state::<RequestLimiter>() {
        let per_minute = context.limit(LimitKind::RequestsPerMinute);
        limiter
            .check(claims.mid, per_minute)
            .map_err(|wait| rate_limited(&context.plan.key, per_minute.unwrap_or(0), wait))?;
    }
    match staff_state(app, claims.sub).await? {
        StaffState::Active(role, merchant) if merchant == claims.mid => {
            claims.role = claims.role.min(role);
        }
        StaffState::Inactive => {
            return Err(ApiError::new(
                Status::Unauthorized,
                ErrorCode::StaffInactive,
                "this staff account is deactivated",
            ));
        }
        StaffState::Active(..) | StaffState::Unknown => {
            return Err(ApiError::new(
                Status::Unauthorized,
                ErrorCode::StaffUnknown,
                "the token's staff user does not exist at its merchant",
            ));
        }
    }
    Ok(Staff {
        claims,
        placement,
        context,
    })
}

/// The staff user's current state, from the per-process cache or the
/// platform database.
async fn staff_state(app: &App, id: StaffId) -> Result<StaffState, ApiError> {
    let states = &app.staff_states;
    if let Some(s) = states.get(id) {
        return Ok(s);
    }
    let state = match app.platform(move |p| Ok(StaffUser::status(p, id)?)).await? {
        None => StaffState::Unknown,
        Some((false, _, _)) => StaffState::Inactive,
        Some((true, role, merchant)) => StaffState::Active(role, merchant),
    };
    states.put(id, state);
    Ok(state)
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for &'r Staff {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let cached: &Result<Staff, ApiError> = req
            .local_cache_async(async { resolve_staff(req).await })
            .await;
        match cached {
            Ok(s) => Outcome::Success(s),
            Err(e) => fail(req, e.clone()),
        }
    }
}

async fn with_role<'r>(req: &'r Request<'_>, min: Role) -> Outcome<&'r Staff, ApiError> {
    let staff = match req.guard::<&Staff>().await {
        Outcome::Success(s) => s,
        Outcome::Error(e) => return Outcome::Error(e),
        Outcome::Forward(s) => return Outcome::Forward(s),
    };
    if staff.role() >= min {
        Outcome::Success(staff)
    } else {
        fail(
            req,
            ApiError::new(
                Status::Forbidden,
                ErrorCode::InsufficientRole,
                format!("this action needs the {} role or higher", min.as_str()),
            ),
        )
    }
}

/// A staff member with the manager or owner role.
pub struct Manager<'r>(pub &'r Staff);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Manager<'r> {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        with_role(req, Role::Manager).await.map(Manager)
    }
}

/// A staff member with the owner role.
pub struct Owner<'r>(pub &'r Staff);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Owner<'r> {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        with_role(req, Role::Owner).await.map(Owner)
    }
}

/// The verified staff member's tenant context (plan, limits, features),
/// resolved with the staff member: from the per-process cache, so a hit
/// costs no I/O.
#[rocket::async_trait]
impl<'r> FromRequest<'r> for &'r TenantContext {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        req.guard::<&Staff>().await.map(|s| &*s.context)
    }
}

/// A platform operator (admin token).
pub struct PlatformAdmin {
    pub operator: String,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for PlatformAdmin {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let result = app(req).and_then(|app| {
            let token = bearer(req)?;
            app.jwt
                .verify_admin(token)
                .map_err(|e| token_error(&e))
                .map(|c: AdminClaims| PlatformAdmin { operator: c.sub })
        });
        match result {
            Ok(a) => Outcome::Success(a),
            Err(e) => fail(req, e),
        }
    }
}

/// The verified staff member's data plane.
#[rocket::async_trait]
impl<'r> FromRequest<'r> for TenantDb {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let staff = match req.guard::<&Staff>().await {
            Outcome::Success(s) => s,
            Outcome::Error(e) => return Outcome::Error(e),
            Outcome::Forward(s) => return Outcome::Forward(s),
        };
        let result = match app(req) {
            Ok(app) => TenantDb::for_placement(app, staff.placement.clone())
                .await
                .map(|db| {
                    let trace = RequestTrace::of(req);
                    let span = tracing::info_span!(
                        "request",
                        id = %trace.id,
                        merchant = %staff.claims.mid,
                        tier = %staff.placement.tier,
                    );
                    db.for_request(trace.spent.clone(), span)
                }),
            Err(e) => Err(e),
        };
        match result {
            Ok(db) => Outcome::Success(db),
            Err(e) => fail(req, e),
        }
    }
}
