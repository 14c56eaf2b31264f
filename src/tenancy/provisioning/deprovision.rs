//! Deprovisioning: the reverse of provisioning. The merchant goes back to
//! the shared tier, with no data there (it had none when it was provisioned),
//! and may be provisioned again.
//!
//! Policy: a schema or a database posd created is dropped only when an
//! export of it was taken since the merchant was placed there, or when the
//! operator forces it. A database the merchant brought is never dropped:
//! posd forgets its credentials and leaves it as it is. The placement flips
//! first (so nothing is routed to what is about to go), then the schema or
//! database is dropped; a failed drop is reported, not hidden. The admin
//! audit records the placement change in the same transaction, and a failed
//! drop as a second entry.

use anyhow::Context as _;
use diesel::{Connection, PgConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::json;

use super::{ProvisionError, find_merchant, with_lock};
use crate::tenancy::Tenancy;
use crate::{
    db::{
        ids::MerchantId,
        platform::{
            Platform, audit,
            exports::TenantExport,
            merchants::{Merchant, NewPlacement},
            migration_state::MigrationState,
            runs::ProvisioningRun,
            tenant_databases::TenantDatabase,
        },
        pool,
        tenant::quote_ident,
    },
    redact::redact_text,
    tenancy::{SHARED_SCHEMA, Tier},
};

/// What a deprovisioning did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deprovisioned {
    /// The merchant, back on the shared tier.
    pub merchant: Merchant,
    /// The tier it was on.
    pub from_tier: Tier,
    /// `schema m_…` or `database posd_m_…`, when dropped.
    pub dropped: Option<String>,
    /// A database the merchant brought: forgotten, left intact.
    pub forgotten: Option<String>,
    /// Something that should have been dropped but could not be (drop it by hand).
    pub left_behind: Option<String>,
    /// The export that allowed the drop (none when forced).
    pub export: Option<TenantExport>,
}

/// Deprovisions `merchant` (blocking).
pub fn deprovision(
    app: &Tenancy,
    merchant: MerchantId,
    force: bool,
    operator: &str,
) -> Result<Deprovisioned, ProvisionError> {
    with_lock(app, merchant, |owner| {
        deprovision_locked(app, owner, merchant, force, operator)
    })
}

#[expect(
    clippy::too_many_lines,
    reason = "the checks and the steps of one deprovisioning, in order"
)]
fn deprovision_locked(
    app: &Tenancy,
    owner: &mut PgConnection,
    merchant: MerchantId,
    force: bool,
    operator: &str,
) -> Result<Deprovisioned, ProvisionError> {
    let mut p = Platform::new(owner);
    let m = find_merchant(&mut p, merchant)?;
    if let Some(mv) = crate::db::platform::moves::Move::active(&mut p, merchant)? {
        return Err(ProvisionError::moving(&mv));
    }
    if m.tier == Tier::Shared {
        return Err(ProvisionError::NotProvisioned);
    }
    let database = match m.database_id {
        Some(id) => Some(TenantDatabase::find(&mut p, id)?),
        None => None,
    };
    let byo = database.as_ref().is_some_and(|d| !d.created_by_posd);
    let placed_at =
        ProvisioningRun::latest_ready(&mut p, merchant)?.map_or(m.created_at, |r| r.updated_at);
    let export = TenantExport::latest_since(&mut p, merchant, m.tier, placed_at)?;
    if !byo && !force && export.is_none() {
        return Err(ProvisionError::ExportRequired {
            merchant,
            tier: m.tier,
        });
    }

    let after = owner.transaction::<_, ProvisionError, _>(|c| {
        let mut p = Platform::new(c);
        let after = Merchant::set_placement(
            &mut p,
            merchant,
            m.tier,
            &NewPlacement {
                tier: Tier::Shared,
                schema_name: SHARED_SCHEMA,
                database_id: None,
            },
        )?;
        if let Some(d) = &database {
            TenantDatabase::delete(&mut p, d.id)?;
        }
        MigrationState::delete(&mut p, merchant)?;
        audit::record(
            &mut p,
            operator,
            "tenant.deprovision",
            Some(merchant),
            json!({
                "outcome": "deprovisioned",
                "fromTier": m.tier,
                "force": force,
                "byo": byo,
                "export": export.as_ref().map(|e| e.id),
            }),
        )?;
        Ok(after)
    })?;
    app.directory.invalidate(merchant);
    app.pools.evict(merchant);

    let mut out = Deprovisioned {
        merchant: after,
        from_tier: m.tier,
        dropped: None,
        forgotten: None,
        left_behind: None,
        export,
    };
    let (what, dropped) = match &database {
        Some(d) if byo => {
            out.forgotten = Some(format!("database {}", d.database_name));
            tracing::info!(%merchant, database = %d.database_name, "deprovisioned; the merchant's own database is left intact");
            return Ok(out);
        }
        Some(d) => (
            format!("database {}", d.database_name),
            drop_database(app, d.server_id, &d.database_name),
        ),
        None => (
            format!("schema {}", m.schema_name),
            diesel::sql_query(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&m.schema_name)
            ))
            .execute(owner)
            .map(drop)
            .context("cannot drop the schema"),
        ),
    };
    match dropped {
        Ok(()) => {
            tracing::info!(%merchant, %what, force, "deprovisioned; dropped");
            out.dropped = Some(what);
        }
        Err(e) => {
            let e = redact_text(&format!("{e:#}"));
            tracing::error!(%merchant, %what, error = %e, "deprovisioned, but the drop failed; drop it by hand");
            let recorded = audit::record(
                &mut Platform::new(owner),
                operator,
                "tenant.deprovision",
                Some(merchant),
                json!({ "outcome": "left_behind", "leftBehind": what, "error": e }),
            );
            if let Err(e) = recorded {
                tracing::error!(%merchant, error = %e, "could not record a failed drop in the admin audit");
            }
            out.left_behind = Some(what);
        }
    }
    Ok(out)
}

fn drop_database(
    app: &Tenancy,
    server: Option<crate::db::ids::ServerId>,
    name: &str,
) -> anyhow::Result<()> {
    let url = app
        .platform_blocking(|p| Ok(crate::tenancy::servers::owner_url(&app.settings, p, server)))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("cannot read the database's server")?;
    let mut conn = pool::connect(&url).context("cannot connect to the database's server")?;
    super::drop_database(&mut conn, name).context("cannot drop the database")
}
