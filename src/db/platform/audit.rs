//! The admin audit trail: who did what to which merchant.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::{Platform, schema::admin_audit};
use crate::db::ids::MerchantId;

pub fn record(
    p: &mut Platform<'_>,
    actor: &str,
    action: &str,
    merchant: Option<MerchantId>,
    details: serde_json::Value,
) -> QueryResult<()> {
    diesel::insert_into(admin_audit::table)
        .values((
            admin_audit::actor.eq(actor),
            admin_audit::action.eq(action),
            admin_audit::merchant_id.eq(merchant),
            admin_audit::details.eq(details),
        ))
        .execute(p.conn)
        .map(drop)
}

/// One operator action on a merchant.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = admin_audit, check_for_backend(diesel::pg::Pg))]
pub struct OperatorAction {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// Where the previous page ended, newest first by `at` then `id`.
#[derive(Debug, Clone, Copy)]
pub enum Before {
    /// Actions before this one.
    Action(DateTime<Utc>, i64),
    /// Actions at this time or older.
    UpTo(DateTime<Utc>),
}

/// One page of the operator actions on `merchant`, newest first, between
/// `from` (inclusive) and `to` (exclusive).
pub fn for_merchant(
    p: &mut Platform<'_>,
    merchant: MerchantId,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    before: Option<Before>,
    limit: i64,
) -> QueryResult<Vec<OperatorAction>> {
    let mut q = admin_audit::table
        .filter(admin_audit::merchant_id.eq(merchant))
        .select(OperatorAction::as_select())
        .order((admin_audit::at.desc(), admin_audit::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(from) = from {
        q = q.filter(admin_audit::at.ge(from));
    }
    if let Some(to) = to {
        q = q.filter(admin_audit::at.lt(to));
    }
    match before {
        Some(Before::Action(at, id)) => {
            q = q.filter(
                admin_audit::at
                    .lt(at)
                    .or(admin_audit::at.eq(at).and(admin_audit::id.lt(id))),
            );
        }
        Some(Before::UpTo(at)) => q = q.filter(admin_audit::at.le(at)),
        None => {}
    }
    q.load(p.conn)
}
