//! Key rotation: re-sealing every stored credential under the active key.
//!
//! Resumable: each row is re-sealed and committed on its own, rows already
//! sealed with the active key are skipped, and a row changed by someone
//! else meanwhile is left alone (counted as failed; run again). Nothing
//! here logs or returns a plaintext.

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;

use crate::crypto::{Keyring, Purpose};
use crate::{
    config::Settings,
    db::{
        ids::{DatabaseId, MerchantId},
        platform::{Platform, tenant_databases::TenantDatabase},
        pool,
    },
    redact::redact_text,
};

/// What a rotation did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationReport {
    pub active_key: String,
    pub total: usize,
    pub resealed: usize,
    pub already_current: usize,
    pub failed: usize,
    pub failures: Vec<RotationFailure>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationFailure {
    pub database_id: DatabaseId,
    pub merchant_id: MerchantId,
    pub error: String,
}

/// Re-seals every tenant database URL under the active key of
/// `settings.keyring` (blocking).
pub fn rotate(settings: &Settings) -> anyhow::Result<RotationReport> {
    let keyring = &settings.keyring;
    // The driver's message may hold the URL: only its redacted text goes on.
    let mut conn = pool::connect(&settings.database_url).map_err(|e| {
        anyhow!(
            "cannot connect to POSD_DATABASE_URL: {}",
            redact_text(&e.to_string())
        )
    })?;
    let mut p = Platform::new(&mut conn);
    let rows = TenantDatabase::all(&mut p).context("cannot read the tenant databases")?;
    let mut report = RotationReport {
        active_key: keyring.active_key_id().to_string(),
        total: rows.len(),
        ..RotationReport::default()
    };
    for row in rows {
        match reseal(&mut p, keyring, &row) {
            Ok(true) => report.resealed += 1,
            Ok(false) => report.already_current += 1,
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(database = %row.id, merchant = %row.merchant_id, %error, "could not re-seal");
                report.failed += 1;
                report.failures.push(RotationFailure {
                    database_id: row.id,
                    merchant_id: row.merchant_id,
                    error,
                });
            }
        }
    }
    Ok(report)
}

/// Re-seals one row; `Ok(false)` when it is already under the active key.
fn reseal(p: &mut Platform<'_>, keyring: &Keyring, row: &TenantDatabase) -> anyhow::Result<bool> {
    let current = Keyring::sealed_key_id(&row.sealed_url)?;
    if current == keyring.active_key_id() {
        return Ok(false);
    }
    let plain = keyring.open(
        row.merchant_id.0,
        Purpose::TenantDatabaseUrl,
        &row.sealed_url,
    )?;
    let sealed = keyring.seal(row.merchant_id.0, Purpose::TenantDatabaseUrl, &plain)?;
    drop(plain);
    let replaced =
        TenantDatabase::reseal(p, row.id, &row.sealed_url, &sealed, keyring.active_key_id())?;
    if !replaced {
        bail!("the row changed during the rotation; run it again");
    }
    Ok(true)
}
