//! `GET /audit`: the merchant's audit trail, owner only; and how handlers
//! record to it.
//!
//! Staff actions are recorded in the merchant's data plane
//! (`audit_events`, [`crate::db::tenant::audit`]): in the transaction of
//! the change when the change is in the data plane (prices, stock,
//! refunds, voids), or, for a change in the control plane (settings,
//! staff, logins), in a data-plane transaction right after it commits
//! ([`record_after`]; a failure there is logged at ERROR, never answered:
//! the change is done). Operator actions on the merchant stay in the
//! control plane's `admin_audit`; the listing merges both, newest first,
//! with one cursor across them.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use rocket::{
    FromForm, Request, Route, State, get,
    request::{FromRequest, Outcome},
    routes,
    serde::json::Json,
};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::{
    accounting::RequestTrace,
    docs,
    fields::{AuditCursor, Instant, PageLimit},
    guards::{Owner, Staff},
    params::{self, Page},
};
use crate::{
    app::App,
    db::{
        ids::MerchantId,
        kinds::AuditAction,
        platform::{
            audit::{self as operator, OperatorAction},
            staff::StaffUser,
        },
        tenant::audit::{self, Actor, AuditEvent, Before, EventFilter},
    },
    error::{ApiError, ApiResult},
    tenancy::{Tenancy, placement::Placement, tenant_db::TenantDb},
};

/// The acting staff member of a request, as the audit trail records them:
/// their id, their role and the request's id.
pub struct Audit(pub Actor);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Audit {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        req.guard::<&Staff>()
            .await
            .map(|staff| Audit(actor(req, staff)))
    }
}

/// The request's id (`X-Request-Id`), for a request without a staff
/// member (a login).
pub struct RequestId(pub String);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for RequestId {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        Outcome::Success(RequestId(RequestTrace::of(req).id.clone()))
    }
}

/// `staff` acting in request `req`.
pub fn actor(req: &Request<'_>, staff: &Staff) -> Actor {
    Actor {
        staff: Some(staff.claims.sub.0),
        label: staff.role().as_str().to_string(),
        request_id: Some(RequestTrace::of(req).id.clone()),
    }
}

/// Serialises a recorded event's details.
pub fn details(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// An event to record after a control-plane change ([`record_after`]).
pub struct Event {
    pub action: AuditAction,
    /// What was acted on.
    pub subject: Option<String>,
    pub details: serde_json::Value,
}

/// Records `events` (of one change already committed in the control plane)
/// in one data-plane transaction of `merchant` (at `placement` when the
/// caller has it). A failure is logged at ERROR with the merchant: the
/// change stands.
pub async fn record_after(
    tenancy: &Tenancy,
    merchant: MerchantId,
    placement: Option<Arc<Placement>>,
    actor: Actor,
    events: Vec<Event>,
) {
    if events.is_empty() {
        return;
    }
    let actions: Vec<&'static str> = events.iter().map(|e| e.action.as_str()).collect();
    let recorded = async {
        let db = match placement {
            Some(p) => TenantDb::for_placement(tenancy, p).await?,
            None => TenantDb::for_job(tenancy, Some(merchant)).await?,
        };
        db.run(move |tx| {
            for e in events {
                audit::record(tx, &actor, e.action, e.subject, e.details)?;
            }
            Ok(())
        })
        .await
    }
    .await;
    if let Err(e) = recorded {
        tracing::error!(
            %merchant,
            actions = %actions.join(", "),
            error = %e.message,
            code = e.code.as_str(),
            "could not record a staff action in the merchant's audit trail; the action itself is done"
        );
    }
}

/// Who did it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditActor {
    /// A staff user of the merchant.
    #[serde(rename_all = "camelCase")]
    Staff {
        staff_id: Option<Uuid>,
        /// Their role when they acted (for a login, the account's role).
        role: String,
        /// Their email now; null when the staff user no longer exists.
        email: Option<String>,
    },
    /// A platform operator (from the operators' audit).
    Operator { name: String },
}

/// One entry of the trail.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// A staff entry's id (a UUID), or `operator-<n>` for an operator's.
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: AuditActor,
    /// A staff entry's action (see the `action` filter), or an operator's
    /// (such as `tenant.suspended`, `merchant.plan`).
    pub action: String,
    /// What was acted on: a product, an order or a staff user's id.
    pub subject: Option<String>,
    /// What changed (old and new values, amounts); never a password.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// The `X-Request-Id` of the request that did it (staff entries).
    pub request_id: Option<String>,
}

/// A position in the merged listing: newest first by time, then staff
/// entries before operator entries of the same time, then by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    Staff(DateTime<Utc>, Uuid),
    Operator(DateTime<Utc>, i64),
}

/// Hex digits of a cursor's time (microseconds since 1970, up to 2112).
const TIME_DIGITS: usize = 13;

impl Position {
    fn sort_key(&self) -> (DateTime<Utc>, u8, u128) {
        match *self {
            Position::Staff(at, id) => (at, 1, id.as_u128()),
            Position::Operator(at, id) => (at, 0, u128::try_from(id).unwrap_or(0)),
        }
    }

    /// The opaque cursor: `s` or `o`, the time, the id, in lower-case hex.
    fn cursor(&self) -> String {
        let micros = |at: DateTime<Utc>| u64::try_from(at.timestamp_micros()).unwrap_or(0);
        match *self {
            Position::Staff(at, id) => format!("s{:013x}{:032x}", micros(at), id.as_u128()),
            Position::Operator(at, id) => {
                format!(
                    "o{:013x}{:015x}",
                    micros(at),
                    u64::try_from(id).unwrap_or(0)
                )
            }
        }
    }

    fn parse(cursor: &str) -> Option<Position> {
        let bad = || None;
        if !cursor
            .bytes()
            .skip(1)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return bad();
        }
        let (kind, rest) = cursor.split_at_checked(1)?;
        let (time, id) = rest.split_at_checked(TIME_DIGITS)?;
        let micros = i64::try_from(u64::from_str_radix(time, 16).ok()?).ok()?;
        let at = DateTime::from_timestamp_micros(micros)?;
        match (kind, id.len()) {
            ("s", 32) => Some(Position::Staff(
                at,
                Uuid::from_u128(u128::from_str_radix(id, 16).ok()?),
            )),
            ("o", 15) => Some(Position::Operator(
                at,
                i64::try_from(u64::from_str_radix(id, 16).ok()?).ok()?,
            )),
            _ => bad(),
        }
    }
}

/// A listed entry before the staff emails are known.
enum Found {
    Staff(AuditEvent),
    Operator(OperatorAction),
}

impl Found {
    fn position(&self) -> Position {
        match self {
            Found::Staff(e) => Position::Staff(e.at, e.id),
            Found::Operator(o) => Position::Operator(o.at, o.id),
        }
    }

    fn entry(self, emails: &HashMap<Uuid, String>) -> AuditEntry {
        match self {
            Found::Staff(e) => AuditEntry {
                id: e.id.to_string(),
                at: e.at,
                actor: AuditActor::Staff {
                    email: e.actor_staff_id.and_then(|s| emails.get(&s).cloned()),
                    staff_id: e.actor_staff_id,
                    role: e.actor_label,
                },
                action: e.action.as_str().to_string(),
                subject: e.subject,
                details: e.details,
                request_id: e.request_id,
            },
            Found::Operator(o) => AuditEntry {
                id: format!("operator-{}", o.id),
                at: o.at,
                actor: AuditActor::Operator { name: o.actor },
                action: o.action,
                subject: None,
                details: o.details,
                request_id: None,
            },
        }
    }
}

#[derive(Debug, FromForm)]
struct ListQuery<'r> {
    action: Option<&'r str>,
    actor: Option<&'r str>,
    from: Option<&'r str>,
    to: Option<&'r str>,
    limit: Option<&'r str>,
    cursor: Option<&'r str>,
}

/// The merchant's audit trail, newest first: its staff's actions (price
/// changes, stock adjustments and counts, refunds, voids, settings and
/// branding changes, staff changes, logins and failed logins) merged with
/// the platform operators' actions on the merchant. `action` and `actor`
/// select staff entries only. Owner only.
#[utoipa::path(get, path = "/audit", tag = "audit", security(("staff" = [])),
    params(
        ("action" = inline(Option<AuditAction>), Query, description = "only this staff action"),
        ("actor" = Option<Uuid>, Query, description = "only this staff user's actions"),
        ("from" = inline(Option<Instant>), Query, description = "RFC 3339, inclusive"),
        ("to" = inline(Option<Instant>), Query, description = "RFC 3339, exclusive"),
        ("limit" = inline(Option<PageLimit>), Query, description = "default 50"),
        ("cursor" = inline(Option<AuditCursor>), Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, body = Page<AuditEntry>),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
        (status = 422, response = docs::Invalid),
        (status = 503, response = docs::Unavailable),
    ))]
#[get("/audit?<query..>")]
async fn list(
    owner: Owner<'_>,
    app: &State<App>,
    db: TenantDb,
    query: ListQuery<'_>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let action = query
        .action
        .map(|a| {
            AuditAction::parse(a).ok_or_else(|| {
                let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
                ApiError::invalid("action", format!("must be one of {}", known.join(", ")))
            })
        })
        .transpose()?;
    let actor = params::uuid("actor", query.actor)?;
    let from = params::instant("from", query.from)?;
    let to = params::instant("to", query.to)?;
    let limit = params::limit(query.limit)?;
    let after = query
        .cursor
        .map(|c| {
            Position::parse(c.trim()).ok_or_else(|| {
                ApiError::invalid("cursor", "is not a cursor this list answered (nextCursor)")
            })
        })
        .transpose()?;
    let filter = EventFilter {
        action,
        actor,
        from,
        to,
        before: after.map(|p| match p {
            Position::Staff(at, id) => Before::Event(at, id),
            Position::Operator(at, _) => Before::Time(at),
        }),
        limit,
    };
    let staff_events = db.run(move |tx| Ok(audit::list(tx, &filter)?)).await?;
    // Operator actions have no staff action nor staff actor.
    let with_operators = action.is_none() && actor.is_none();
    let merchant = owner.0.claims.mid;
    let before = after.map(|p| match p {
        Position::Staff(at, _) => operator::Before::UpTo(at),
        Position::Operator(at, id) => operator::Before::Action(at, id),
    });
    let (operator_actions, staff) = app
        .platform(move |p| {
            let actions = if with_operators {
                operator::for_merchant(p, merchant, from, to, before, limit)?
            } else {
                Vec::new()
            };
            Ok((actions, StaffUser::list(p, merchant)?))
        })
        .await?;
    let emails: HashMap<Uuid, String> = staff.into_iter().map(|u| (u.id.0, u.email)).collect();
    let mut found: Vec<Found> = staff_events
        .into_iter()
        .map(Found::Staff)
        .chain(operator_actions.into_iter().map(Found::Operator))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.position().sort_key()));
    found.truncate(usize::try_from(limit).unwrap_or(0));
    let last = found.last().map(Found::position);
    let items: Vec<AuditEntry> = found.into_iter().map(|f| f.entry(&emails)).collect();
    let mut page = Page::new(items, limit, |_| String::new());
    page.next_cursor = page.next_cursor.and(last.map(|p| p.cursor()));
    Ok(Json(page))
}

#[derive(OpenApi)]
#[openapi(paths(list))]
pub struct Doc;

pub fn routes() -> Vec<Route> {
    routes![list]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_names_its_position_and_nothing_else_parses() {
        let at = DateTime::from_timestamp_micros(1_764_547_200_123_456).unwrap_or_default();
        let staff = Position::Staff(
            at,
            Uuid::from_u128(0x0193_abcd_ef01_7def_8abc_def0_1234_5678),
        );
        let operator = Position::Operator(at, 42);
        for p in [staff, operator] {
            assert_eq!(Position::parse(&p.cursor()), Some(p), "{}", p.cursor());
        }
        // The contract's pattern: s + 45 or o + 28 lower-case hex digits.
        assert_eq!(staff.cursor().len(), 46);
        assert_eq!(operator.cursor().len(), 29);
        let upper = staff.cursor().to_uppercase().replacen('S', "s", 1);
        for bad in [
            String::new(),
            "s".to_string(),
            upper,
            format!("x{}", &staff.cursor()[1..]),
            format!("o{}", &staff.cursor()[1..]),
            format!("{}0", operator.cursor()),
            format!("+{}", &operator.cursor()[1..]),
        ] {
            assert_eq!(Position::parse(&bad), None, "{bad}");
        }
        // The merged order: newest first, a staff entry before an operator
        // entry of the same time.
        let earlier = Position::Staff(at - chrono::Duration::microseconds(1), Uuid::max());
        assert!(staff.sort_key() > operator.sort_key());
        assert!(operator.sort_key() > earlier.sort_key());
    }
}
