//! Dropping the sources that moves retained, once their retention ends
//! (or at once, when asked).

use super::{MoveError, drop_database, exec, owner_conn, sides};
use crate::{
    db::{
        ids::{MerchantId, RunId},
        platform::{Platform, moves::Move, tenant_databases::TenantDatabase},
        tenant::quote_ident,
    },
    redact::redact_text,
    tenancy::Tenancy,
};

/// What a cleanup did with one retained source.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cleaned {
    pub run: RunId,
    pub merchant_id: MerchantId,
    pub dropped: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Drops the retained sources of finished moves: those past their
/// retention, or (`all`) every one. Each is recorded `cleaned`.
pub fn cleanup(app: &Tenancy, all: bool) -> Result<Vec<Cleaned>, MoveError> {
    let mut conn = owner_conn(&app.settings.database_url)?;
    let mut p = Platform::new(&mut conn);
    let mut out = Vec::new();
    for mv in Move::retained(&mut p, !all)? {
        let Some(retired) = mv.retired_as.clone() else {
            continue;
        };
        let (dropped, result) = drop_retired(app, &mut p, &mv, &retired);
        if result.is_ok() {
            Move::cleaned(&mut p, mv.id)?;
        }
        let error = result.err().map(|e| redact_text(&e.to_string()));
        match &error {
            None => {
                tracing::info!(merchant = %mv.merchant_id, run = %mv.id, %dropped, "moved merchant's old placement dropped");
            }
            Some(e) => {
                tracing::warn!(merchant = %mv.merchant_id, run = %mv.id, %dropped, error = %e, "could not drop a moved merchant's old placement");
            }
        }
        out.push(Cleaned {
            run: mv.id,
            merchant_id: mv.merchant_id,
            dropped,
            error,
        });
    }
    Ok(out)
}

/// Drops one retained source: what it is, and how that went.
fn drop_retired(
    app: &Tenancy,
    p: &mut Platform<'_>,
    mv: &Move,
    retired: &str,
) -> (String, Result<(), MoveError>) {
    let source = match sides(app, p, mv) {
        Ok((source, _)) => source,
        Err(e) => return (format!("schema {retired}"), Err(e)),
    };
    match &source.database {
        Some(db) if db.created_by_posd => (
            format!("database {}", db.database_name),
            // This instance's pool of the merchant goes first: a pool built
            // on the old database by a request that raced the flip would
            // hold a connection there (the next request builds one anew).
            {
                app.pools.evict(mv.merchant_id);
                source
                    .server()
                    .and_then(|server| drop_database(server, &db.database_name))
            }
            .and_then(|()| Ok(TenantDatabase::delete(p, db.id)?)),
        ),
        _ => (
            format!("schema {retired}"),
            source
                .owner_url(app, mv.merchant_id)
                .and_then(|url| owner_conn(&url))
                .and_then(|mut conn| {
                    Ok(exec(
                        &mut conn,
                        &format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(retired)),
                    )?)
                })
                .and_then(|()| match &source.database {
                    Some(db) => Ok(TenantDatabase::delete(p, db.id)?),
                    None => Ok(()),
                }),
        ),
    }
}
