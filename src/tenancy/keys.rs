//! Key rotation: re-sealing every stored credential under the active key:
//! tenant database URLs and integrations' credentials.
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
        ids::MerchantId,
        platform::{
            Platform, integrations::IntegrationRow, servers::DatabaseServer,
            tenant_databases::TenantDatabase,
        },
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
    /// What was not re-sealed: `database <id>` or `integration <id>`.
    pub credential: String,
    /// `None` for a platform default integration.
    pub merchant_id: Option<MerchantId>,
    pub error: String,
}

/// Re-seals every tenant database URL, every integration's credentials and
/// every registered database server's URL under the active key of `settings.keyring` (blocking).
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
    let integrations =
        IntegrationRow::all_with_credentials(&mut p).context("cannot read the integrations")?;
    let servers = DatabaseServer::all(&mut p).context("cannot read the database servers")?;
    let mut report = RotationReport {
        active_key: keyring.active_key_id().to_string(),
        total: rows.len() + integrations.len() + servers.len(),
        ..RotationReport::default()
    };
    for row in rows {
        let outcome = reseal(&mut p, keyring, &row);
        report.record(
            outcome,
            format!("database {}", row.id),
            Some(row.merchant_id),
        );
    }
    for row in integrations {
        let outcome = reseal_integration(&mut p, keyring, &row);
        report.record(outcome, format!("integration {}", row.id), row.merchant_id);
    }
    for row in servers {
        let outcome = reseal_server(&mut p, keyring, &row);
        report.record(outcome, format!("server {}", row.name), None);
    }
    Ok(report)
}

/// Re-seals one registered server's URL; `Ok(false)` when it is already
/// under the active key.
fn reseal_server(
    p: &mut Platform<'_>,
    keyring: &Keyring,
    row: &DatabaseServer,
) -> anyhow::Result<bool> {
    if Keyring::sealed_key_id(&row.sealed_url)? == keyring.active_key_id() {
        return Ok(false);
    }
    let purpose = Purpose::ServerUrl { server: row.id.0 };
    let plain = keyring.open(uuid::Uuid::nil(), purpose, &row.sealed_url)?;
    let sealed = keyring.seal(uuid::Uuid::nil(), purpose, &plain)?;
    drop(plain);
    if !DatabaseServer::reseal(p, row.id, &row.sealed_url, &sealed, keyring.active_key_id())? {
        bail!("the row changed during the rotation; run it again");
    }
    Ok(true)
}

impl RotationReport {
    fn record(
        &mut self,
        outcome: anyhow::Result<bool>,
        credential: String,
        merchant_id: Option<MerchantId>,
    ) {
        match outcome {
            Ok(true) => self.resealed += 1,
            Ok(false) => self.already_current += 1,
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(%credential, merchant = ?merchant_id, %error, "could not re-seal");
                self.failed += 1;
                self.failures.push(RotationFailure {
                    credential,
                    merchant_id,
                    error,
                });
            }
        }
    }
}

/// Re-seals one integration's credentials; `Ok(false)` when they are
/// already under the active key. The fingerprint stays as it was.
fn reseal_integration(
    p: &mut Platform<'_>,
    keyring: &Keyring,
    row: &IntegrationRow,
) -> anyhow::Result<bool> {
    let Some(previous) = &row.credentials_sealed else {
        return Ok(false);
    };
    if Keyring::sealed_key_id(previous)? == keyring.active_key_id() {
        return Ok(false);
    }
    let plain = crate::tenancy::integrations::open(keyring, row)?
        .ok_or_else(|| anyhow!("the credentials were removed during the rotation; run it again"))?;
    let sealed = crate::tenancy::integrations::seal(keyring, row.merchant_id, row.id, &plain)?;
    drop(plain);
    if !IntegrationRow::reseal(p, row.id, previous, &sealed.sealed, &sealed.key_id)? {
        bail!("the row changed during the rotation; run it again");
    }
    Ok(true)
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
