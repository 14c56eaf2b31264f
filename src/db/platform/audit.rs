//! The admin audit trail: who did what to which merchant.

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
