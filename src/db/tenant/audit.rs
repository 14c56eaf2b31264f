//! The merchant's audit trail (`audit_events`): staff actions that matter
//! to the merchant, each written in the transaction of the change it
//! records when that change is in the data plane, so that an event is
//! never recorded for a change that rolled back, nor a change committed
//! without its event.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::{TenantTx, schema::audit_events};
use crate::db::{
    ids::{MerchantId, ProductId},
    kinds::AuditAction,
    statement::statement,
};

/// Who acted, as the trail records it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The staff user who acted.
    pub staff: Option<Uuid>,
    /// What the actor was: a staff user's role at the time.
    pub label: String,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
}

/// One recorded event.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events, check_for_backend(diesel::pg::Pg))]
pub struct AuditEvent {
    pub merchant_id: Uuid,
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_staff_id: Option<Uuid>,
    pub actor_label: String,
    pub action: AuditAction,
    pub subject: Option<String>,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
}

/// Where the previous page ended, in the listing's order (newest first,
/// by `at` then `id`).
#[derive(Debug, Clone, Copy)]
pub enum Before {
    /// Events before this one.
    Event(DateTime<Utc>, Uuid),
    /// Events strictly older than this time.
    Time(DateTime<Utc>),
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub action: Option<AuditAction>,
    pub actor: Option<Uuid>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
    pub before: Option<Before>,
    pub limit: i64,
}

/// The insert every recording shares; its binds are, in order: merchant,
/// id, actor's staff id, actor's label, action, subject, details, request id.
const INSERT: &str = "INSERT INTO audit_events
     (merchant_id, id, actor_staff_id, actor_label, action, subject, details, request_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Records `action` by `actor` on `subject`, in the caller's transaction.
pub fn record(
    tx: &mut TenantTx<'_>,
    actor: &Actor,
    action: AuditAction,
    subject: Option<String>,
    details: serde_json::Value,
) -> QueryResult<()> {
    use diesel::sql_types::{Jsonb, Nullable, Text, Uuid as SqlUuid};
    statement(INSERT)
        .bind::<SqlUuid, _>(tx.merchant.0)
        .bind::<SqlUuid, _>(Uuid::now_v7())
        .bind::<Nullable<SqlUuid>, _>(actor.staff)
        .bind::<Text, _>(actor.label.clone())
        .bind::<Text, _>(action)
        .bind::<Nullable<Text>, _>(subject)
        .bind::<Jsonb, _>(details)
        .bind::<Nullable<Text>, _>(actor.request_id.clone())
        .execute(tx.conn)
        .map(drop)
}

/// Before a product's price is set to `new_price`: records the change
/// from the price it has now, in one statement that also locks the
/// product's row (the update that follows takes the same lock). Records
/// nothing when the price stays the same or there is no such product.
pub fn record_price_change(
    tx: &mut TenantTx<'_>,
    actor: &Actor,
    product: ProductId,
    new_price: i64,
) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Nullable, Text, Uuid as SqlUuid};
    statement(
        "INSERT INTO audit_events
              (merchant_id, id, actor_staff_id, actor_label, action, subject, details, request_id)
         SELECT p.merchant_id, $2, $3, $4, 'product_price_changed', p.id::text,
                jsonb_build_object('sku', p.sku, 'oldPriceMinor', p.price_minor,
                                   'newPriceMinor', $6::bigint),
                $7
           FROM (SELECT merchant_id, id, sku, price_minor FROM products
                  WHERE merchant_id = $1 AND id = $5 AND deleted_at IS NULL
                    FOR UPDATE) p
          WHERE p.price_minor <> $6",
    )
    .bind::<SqlUuid, _>(tx.merchant.0)
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Nullable<SqlUuid>, _>(actor.staff)
    .bind::<Text, _>(actor.label.clone())
    .bind::<SqlUuid, _>(product.0)
    .bind::<BigInt, _>(new_price)
    .bind::<Nullable<Text>, _>(actor.request_id.clone())
    .execute(tx.conn)
    .map(drop)
}

/// One page of the merchant's events, newest first.
pub fn list(tx: &mut TenantTx<'_>, f: &EventFilter) -> QueryResult<Vec<AuditEvent>> {
    let mut q = audit_events::table
        .filter(audit_events::merchant_id.eq(tx.merchant.0))
        .select(AuditEvent::as_select())
        .order((audit_events::at.desc(), audit_events::id.desc()))
        .limit(f.limit)
        .into_boxed();
    if let Some(a) = f.action {
        q = q.filter(audit_events::action.eq(a.as_str()));
    }
    if let Some(staff) = f.actor {
        q = q.filter(audit_events::actor_staff_id.eq(staff));
    }
    if let Some(from) = f.from {
        q = q.filter(audit_events::at.ge(from));
    }
    if let Some(to) = f.to {
        q = q.filter(audit_events::at.lt(to));
    }
    match f.before {
        Some(Before::Event(at, id)) => {
            q = q.filter(
                audit_events::at
                    .lt(at)
                    .or(audit_events::at.eq(at).and(audit_events::id.lt(id))),
            );
        }
        Some(Before::Time(at)) => q = q.filter(audit_events::at.lt(at)),
        None => {}
    }
    q.load(tx.conn)
}

/// Every event of the merchant here (for carrying them to a new
/// placement), oldest first.
pub fn all(tx: &mut TenantTx<'_>) -> QueryResult<Vec<AuditEvent>> {
    audit_events::table
        .filter(audit_events::merchant_id.eq(tx.merchant.0))
        .select(AuditEvent::as_select())
        .order((audit_events::at, audit_events::id))
        .load(tx.conn)
}

/// Writes `events` as they are (those already here are left alone).
pub fn insert_all(tx: &mut TenantTx<'_>, events: &[AuditEvent]) -> QueryResult<()> {
    for chunk in events.chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|e| {
                (
                    audit_events::merchant_id.eq(tx.merchant.0),
                    audit_events::id.eq(e.id),
                    audit_events::at.eq(e.at),
                    audit_events::actor_staff_id.eq(e.actor_staff_id),
                    audit_events::actor_label.eq(&e.actor_label),
                    audit_events::action.eq(e.action.as_str()),
                    audit_events::subject.eq(&e.subject),
                    audit_events::details.eq(&e.details),
                    audit_events::request_id.eq(&e.request_id),
                )
            })
            .collect();
        diesel::insert_into(audit_events::table)
            .values(rows)
            .on_conflict_do_nothing()
            .execute(tx.conn)?;
    }
    Ok(())
}

/// Deletes the merchant's events with these ids here.
pub fn delete(tx: &mut TenantTx<'_>, ids: &[Uuid]) -> QueryResult<usize> {
    diesel::delete(
        audit_events::table
            .filter(audit_events::merchant_id.eq(tx.merchant.0))
            .filter(audit_events::id.eq_any(ids)),
    )
    .execute(tx.conn)
}

/// In the caller's transaction on `conn` (provisioning's owner connection
/// to the platform database): deletes the merchant's events with these
/// ids from `schema` (the shared tier), once they were copied to the
/// merchant's new placement. Binds the merchant for the transaction, as
/// row-level security wants.
pub(crate) fn forget_carried(
    conn: &mut PgConnection,
    merchant: MerchantId,
    schema: &str,
    ids: &[Uuid],
) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::sql_query("SELECT set_config('posd.merchant_id', $1, true)")
        .bind::<diesel::sql_types::Text, _>(merchant.0.to_string())
        .execute(conn)?;
    diesel::sql_query(format!(
        "DELETE FROM {}.audit_events WHERE merchant_id = $1 AND id = ANY($2)",
        super::quote_ident(schema)
    ))
    .bind::<diesel::sql_types::Uuid, _>(merchant.0)
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids)
    .execute(conn)
}
