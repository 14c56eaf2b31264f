//! `/staff`: the merchant's staff users, managed by an owner.
//!
//! The merchant is always the owner's own (from the token); another
//! merchant's staff id is a 404. An owner cannot change their own role or
//! deactivate themselves, and no change may leave the merchant without an
//! active owner.

use chrono::{DateTime, Utc};
use rocket::{Route, State, get, http::Status, patch, post, routes, serde::json::Json, tokio};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{
    Body, docs,
    fields::{Email, Password},
};
use crate::{
    api::{
        audit::{Audit, Event, details, record_after},
        errors::plan_limit_reached,
        guards::Owner,
    },
    app::App,
    auth::{Role, password},
    db::{
        ids::{MerchantId, StaffId},
        kinds::AuditAction,
        platform::{
            Platform,
            plans::{LimitKind, MerchantPlan},
            staff::{NewStaffUser, StaffChanges, StaffUser},
        },
    },
    error::{ApiError, ApiResult, ErrorCode},
    tenancy::context::TenantContext,
};

/// A staff user as the API shows it (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaffView {
    id: StaffId,
    email: String,
    role: Role,
    active: bool,
    created_at: DateTime<Utc>,
}

impl StaffView {
    fn new(u: StaffUser) -> Self {
        StaffView {
            id: u.id,
            role: u.role,
            email: u.email,
            active: u.active,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateStaff {
    /// Stored lower-cased; unique per merchant.
    email: Email,
    password: Password,
    role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateStaff {
    role: Option<Role>,
    active: Option<bool>,
}

/// The merchant's `maxStaff` limit (active staff users), as a creation or
/// a reactivation checks it.
struct StaffLimit {
    max: Option<i64>,
    plan: String,
}

impl StaffLimit {
    fn of(ctx: &TenantContext) -> Self {
        StaffLimit {
            max: ctx.limit(LimitKind::MaxStaff),
            plan: ctx.plan.key.clone(),
        }
    }

    /// Refuses one more active staff user past the limit. The merchant's row
    /// is locked first, until the transaction ends: the next creation waits
    /// for this one's commit before it counts, so two at once cannot both
    /// take the last place.
    fn check(&self, p: &mut Platform<'_>, merchant: MerchantId) -> ApiResult<()> {
        let Some(max) = self.max else {
            return Ok(());
        };
        MerchantPlan::lock(p, merchant)?;
        if StaffUser::count_active(p, merchant)? >= max {
            return Err(plan_limit_reached(&self.plan, LimitKind::MaxStaff, max));
        }
        Ok(())
    }
}

/// The merchant's staff users, oldest first. Owner only.
#[utoipa::path(get, path = "/staff", tag = "staff", security(("staff" = [])),
    responses(
        (status = 200, body = Vec<StaffView>),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/staff")]
async fn list(owner: Owner<'_>, app: &State<App>) -> ApiResult<Json<Vec<StaffView>>> {
    let merchant = owner.0.claims.mid;
    let users = app
        .platform(move |p| Ok(StaffUser::list(p, merchant)?))
        .await?;
    Ok(Json(users.into_iter().map(StaffView::new).collect()))
}

/// Adds a staff user to the owner's merchant (409 `email_taken`). A
/// merchant at its `maxStaff` limit of active staff gets 409
/// `plan_limit_reached`.
#[utoipa::path(post, path = "/staff", tag = "staff", security(("staff" = [])),
    request_body = CreateStaff,
    responses(
        (status = 201, body = StaffView),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[post("/staff", data = "<body>")]
async fn create(
    owner: Owner<'_>,
    audit: Audit,
    ctx: &TenantContext,
    app: &State<App>,
    body: Body<CreateStaff>,
) -> ApiResult<(Status, Json<StaffView>)> {
    let Audit(actor) = audit;
    let b = body.0;
    let email = b.email.into_inner();
    // Argon2 is deliberately slow: keep it off the async workers.
    let pw = b.password.into_inner();
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let merchant: MerchantId = owner.0.claims.mid;
    let limit = StaffLimit::of(ctx);
    let user = app
        .platform(move |p| {
            p.transaction(|p| {
                limit.check(p, merchant)?;
                StaffUser::insert(
                    p,
                    &NewStaffUser {
                        id: StaffId(uuid::Uuid::now_v7()),
                        merchant_id: merchant,
                        email: &email,
                        password_hash: &hash,
                        role: b.role,
                    },
                )
                .map_err(ApiError::or_taken(
                    "staff user",
                    ErrorCode::EmailTaken,
                    "another staff user of this merchant has this email",
                ))
            })
        })
        .await?;
    tracing::info!(merchant = %merchant, staff = %user.id, by = %owner.0.claims.sub, "staff user created");
    let recorded = StaffDetails {
        email: user.email.clone(),
        role: Some(user.role),
        old_role: None,
    };
    let event = Event {
        action: AuditAction::StaffCreated,
        subject: Some(user.id.to_string()),
        details: details(&recorded),
    };
    record_after(
        app,
        merchant,
        Some(owner.0.placement.clone()),
        actor,
        vec![event],
    )
    .await;
    Ok((Status::Created, Json(StaffView::new(user))))
}

/// Changes a staff user's role or deactivates them; their tokens follow
/// at once. An owner cannot change themselves (409 `cannot_change_self`)
/// and the merchant keeps an active owner (409 `last_owner`); reactivating
/// a user at the merchant's `maxStaff` limit is 409 `plan_limit_reached`.
#[utoipa::path(patch, path = "/staff/{id}", tag = "staff", security(("staff" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateStaff,
    responses(
        (status = 200, body = StaffView),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[patch("/staff/<id>", data = "<body>")]
async fn update(
    owner: Owner<'_>,
    audit: Audit,
    ctx: &TenantContext,
    app: &State<App>,
    id: StaffId,
    body: Body<UpdateStaff>,
) -> ApiResult<Json<StaffView>> {
    let Audit(actor) = audit;
    let b = body.0;
    let me = owner.0.claims.sub;
    let merchant = owner.0.claims.mid;
    if id == me && (b.role.is_some_and(|r| r != Role::Owner) || b.active == Some(false)) {
        return Err(ApiError::conflict(
            ErrorCode::CannotChangeSelf,
            "an owner cannot change their own role or deactivate themselves; ask another owner",
        ));
    }
    let limit = StaffLimit::of(ctx);
    let (before, user) = app
        .platform(move |p| {
            p.transaction(|p| {
                if b.active == Some(true)
                    && !StaffUser::find(p, merchant, id)
                        .map_err(ApiError::or_not_found("staff user"))?
                        .active
                {
                    // Reactivating takes a place as a creation does.
                    limit.check(p, merchant)?;
                }
                StaffUser::lock_active_owners(p, merchant)?;
                // What the user is before the change (for the audit trail),
                // locked after the owners, in the order every change takes
                // its locks: two changes at once each see the other's.
                let before = StaffUser::find_for_update(p, merchant, id)
                    .map_err(ApiError::or_not_found("staff user"))?;
                let changes = StaffChanges {
                    role: b.role,
                    active: b.active,
                };
                let user = StaffUser::update(p, merchant, id, &changes)
                    .map_err(ApiError::or_not_found("staff user"))?;
                if StaffUser::lock_active_owners(p, merchant)?.is_empty() {
                    return Err(ApiError::conflict(
                        ErrorCode::LastOwner,
                        "the merchant must keep at least one active owner",
                    ));
                }
                Ok((before, user))
            })
        })
        .await?;
    app.staff_states.invalidate(id);
    tracing::info!(merchant = %merchant, staff = %id, by = %me, "staff user updated");
    let events = staff_changes(&before, &user)
        .into_iter()
        .map(|(action, recorded)| Event {
            action,
            subject: Some(id.to_string()),
            details: details(&recorded),
        })
        .collect();
    record_after(
        app,
        merchant,
        Some(owner.0.placement.clone()),
        actor,
        events,
    )
    .await;
    Ok(Json(StaffView::new(user)))
}

/// What the audit trail records of a staff change (never a password).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StaffDetails {
    email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_role: Option<Role>,
}

/// The audit events of a change from `before` to `after`: the role, then
/// the active flag.
fn staff_changes(before: &StaffUser, after: &StaffUser) -> Vec<(AuditAction, StaffDetails)> {
    let mut out = Vec::new();
    if before.role != after.role {
        out.push((
            AuditAction::StaffRoleChanged,
            StaffDetails {
                email: after.email.clone(),
                role: Some(after.role),
                old_role: Some(before.role),
            },
        ));
    }
    if before.active != after.active {
        let action = if after.active {
            AuditAction::StaffReactivated
        } else {
            AuditAction::StaffDeactivated
        };
        out.push((
            action,
            StaffDetails {
                email: after.email.clone(),
                role: None,
                old_role: None,
            },
        ));
    }
    out
}

#[derive(OpenApi)]
#[openapi(paths(list, create, update))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![list, create, update]
}
