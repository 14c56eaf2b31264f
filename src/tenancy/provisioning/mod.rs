//! Moving a new merchant off the shared tier: onto its own schema in the
//! platform database, onto a database posd creates, or onto a database the
//! merchant brings (`databaseUrl`).
//!
//! Atomicity comes from the step sequence, not from one transaction
//! (`CREATE DATABASE` cannot run in one): each step is idempotent, the
//! placement flips last in one control-plane transaction (which also marks
//! the run `ready`), and on any failure everything the run created is
//! dropped and the run records the failed step, a stable code and the
//! reason (passwords redacted). One provisioning per merchant runs at a
//! time (advisory lock); a second gets 409.
//!
//! Runs are durable and keyed by a run id the client may choose: calling
//! again with the id of a run that ended answers that run again; with the
//! id of a run that was cut short (posd stopped mid-way) it resumes the
//! run, re-running its idempotent steps.
//!
//! Test hook: in debug builds, `POSD_PROVISION_FAIL_AFTER_STEP=N` makes every
//! run fail once N of its steps have completed (N equal to the number of
//! steps fails inside the final placement transaction, before it commits).
//! Release builds refuse to start with it set.

mod byo;
pub mod deprovision;
mod steps;

use diesel::{
    PgConnection, RunQueryDsl,
    sql_types::{Bool, Text},
};
use rocket::http::Status;
use secrecy::{ExposeSecret, SecretString};

pub use self::byo::ByoUrl;
use super::{SHARED_SCHEMA, Tenancy, Tier};
use crate::{
    db::{
        ids::{MerchantId, RunId},
        platform::{Platform, merchants::Merchant, runs::ProvisioningRun},
        pool,
        tenant::TenantTx,
    },
    error::{ApiError, ApiResult, ErrorCode},
};

/// Second advisory-lock key space ("pose"): one lock per merchant, taken by
/// provisioning and deprovisioning.
pub const PROVISION_LOCK_CLASS: i32 = 0x706f_7365;

/// What to provision.
#[derive(Debug)]
pub struct Request {
    pub merchant: MerchantId,
    pub tier: Tier,
    /// The client's run id; a new one is made when absent.
    pub run_id: Option<RunId>,
    /// A database the merchant brings (tier `dedicated` only).
    pub database_url: Option<ByoUrl>,
}

/// The outcome of a provisioning call.
#[derive(Debug)]
pub enum Outcome {
    /// This call placed the merchant.
    Ready(ProvisioningRun),
    /// This call's run failed; the merchant stays on the shared tier.
    Failed(ProvisioningRun),
    /// The run id names a run that had already ended: that run, unchanged.
    Replayed(ProvisioningRun),
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Provisions `merchant` onto `target` with a new run (blocking).
pub fn provision(app: &Tenancy, merchant: MerchantId, target: Tier) -> ApiResult<Outcome> {
    run(
        app,
        &Request {
            merchant,
            tier: target,
            run_id: None,
            database_url: None,
        },
    )
}

/// Parses a `databaseUrl` (422 `invalid_database_url` when unusable).
pub fn parse_database_url(raw: &str) -> ApiResult<ByoUrl> {
    byo::parse(raw)
}

/// Takes the merchant's provisioning lock on `owner`; `false` when another
/// call holds it.
fn try_lock(owner: &mut PgConnection, merchant: MerchantId) -> ApiResult<bool> {
    let lock: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked")
        .bind::<diesel::sql_types::Integer, _>(PROVISION_LOCK_CLASS)
        .bind::<Text, _>(merchant.to_string())
        .get_result(owner)?;
    Ok(lock.locked)
}

fn unlock(owner: &mut PgConnection, merchant: MerchantId) {
    // The lock is session-level; closing the connection releases it too.
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(PROVISION_LOCK_CLASS)
        .bind::<Text, _>(merchant.to_string())
        .execute(owner);
}

fn in_progress() -> ApiError {
    ApiError::conflict(
        ErrorCode::ProvisioningInProgress,
        "this merchant is already being provisioned or deprovisioned",
    )
}

/// Runs `f` holding the merchant's provisioning lock on a fresh owner
/// connection to the platform database; 409 when the lock is held.
fn with_lock<T>(
    app: &Tenancy,
    merchant: MerchantId,
    f: impl FnOnce(&mut PgConnection) -> ApiResult<T>,
) -> ApiResult<T> {
    let mut owner = pool::connect(&app.settings.database_url).map_err(ApiError::internal)?;
    if !try_lock(&mut owner, merchant)? {
        return Err(in_progress());
    }
    let result = f(&mut owner);
    unlock(&mut owner, merchant);
    result
}

/// A repeated run id must describe the same provisioning.
fn check_same(run: &ProvisioningRun, req: &Request) -> ApiResult<()> {
    if run.merchant_id != req.merchant
        || run.target_tier != req.tier.as_str()
        || run.byo != req.database_url.is_some()
    {
        return Err(ApiError::new(
            Status::UnprocessableEntity,
            ErrorCode::RunIdMismatch,
            format!(
                "runId {} already names a run for merchant {} onto tier {}{}; use a new runId",
                run.id,
                run.merchant_id,
                run.target_tier,
                if run.byo { " (own database)" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// Provisions as `req` says (blocking).
pub fn run(app: &Tenancy, req: &Request) -> ApiResult<Outcome> {
    if req.tier == Tier::Shared {
        return Err(ApiError::invalid("tier", "must be `schema` or `dedicated`"));
    }
    if req.database_url.is_some() && req.tier != Tier::Dedicated {
        return Err(ApiError::invalid(
            "databaseUrl",
            "is only accepted with tier `dedicated`",
        ));
    }
    // A finished run is answered again without waiting for the lock.
    if let Some(id) = req.run_id {
        let existing = app.platform_blocking(|p| Ok(ProvisioningRun::find(p, id)?))?;
        if let Some(r) = existing {
            check_same(&r, req)?;
            if r.is_terminal() {
                return Ok(Outcome::Replayed(r));
            }
        }
    }
    with_lock(app, req.merchant, |owner| provision_locked(app, owner, req))
}

fn provision_locked(app: &Tenancy, owner: &mut PgConnection, req: &Request) -> ApiResult<Outcome> {
    let merchant = req.merchant;
    let mut platform = Platform::new(owner);
    let resumed = match req.run_id {
        Some(id) => match ProvisioningRun::find(&mut platform, id)? {
            Some(r) if r.is_terminal() => return Ok(Outcome::Replayed(r)),
            other => other,
        },
        None => None,
    };
    let m = Merchant::find(&mut platform, merchant).map_err(ApiError::or_not_found("merchant"))?;
    if m.tier != Tier::Shared {
        let e = ApiError::conflict(
            ErrorCode::AlreadyProvisioned,
            format!(
                "the merchant is on the {} tier; to move it use POST /api/v2/POS/admin/tenants/{merchant}/move",
                m.tier
            ),
        );
        if let Some(r) = &resumed {
            ProvisioningRun::fail(&mut platform, r.id, "check", e.code.as_str(), &e.message)?;
        }
        return Err(e);
    }
    let has_data = TenantTx::transaction(owner, merchant, SHARED_SCHEMA, |tx| {
        tx.has_data(super::classification::TENANT)
    })?;
    let mut platform = Platform::new(owner);
    if has_data {
        return Err(ApiError::conflict(
            ErrorCode::TenantHasData,
            format!(
                "the merchant already has data on the shared tier; provisioning is for new merchants, move existing ones with POST /api/v2/POS/admin/tenants/{merchant}/move"
            ),
        ));
    }
    let run = match resumed {
        Some(r) => {
            tracing::info!(%merchant, run = %r.id, step = ?r.step, "resuming a provisioning run that was cut short");
            r
        }
        None => ProvisioningRun::start(
            &mut platform,
            req.run_id.unwrap_or_else(|| RunId(uuid::Uuid::now_v7())),
            merchant,
            req.tier.as_str(),
            req.database_url.is_some(),
        )
        .map_err(|e| match ApiError::from(e) {
            e if e.code == ErrorCode::Conflict => in_progress(),
            e => e,
        })?,
    };
    let result = steps::run(app, owner, &run, req);
    let mut platform = Platform::new(owner);
    match result {
        Ok(()) => {
            let run = ProvisioningRun::find(&mut platform, run.id)?
                .ok_or_else(|| ApiError::internal("a finished run vanished"))?;
            app.directory.invalidate(merchant);
            app.pools.evict(merchant);
            tracing::info!(%merchant, tier = req.tier.as_str(), byo = run.byo, "merchant provisioned");
            Ok(Outcome::Ready(run))
        }
        Err(e) => {
            tracing::warn!(%merchant, step = e.step, code = e.code.as_str(), reason = %e.reason, "provisioning failed; cleaned up");
            let run =
                ProvisioningRun::fail(&mut platform, run.id, e.step, e.code.as_str(), &e.reason)?;
            Ok(Outcome::Failed(run))
        }
    }
}

/// `server`'s URL pointed at database `db`, with the credentials of
/// `credentials` when given (host, port and options stay the server's).
pub fn url_for_database(
    server: &SecretString,
    credentials: Option<&SecretString>,
    db: &str,
) -> Result<SecretString, String> {
    let mut url = url::Url::parse(server.expose_secret())
        .map_err(|e| format!("the server URL is not a URL: {e}"))?;
    if let Some(c) = credentials {
        let c = url::Url::parse(c.expose_secret())
            .map_err(|e| format!("the credentials URL is not a URL: {e}"))?;
        url.set_username(c.username())
            .map_err(|()| "cannot set the user name".to_string())?;
        url.set_password(c.password())
            .map_err(|()| "cannot set the password".to_string())?;
    }
    url.set_path(&format!("/{db}"));
    Ok(SecretString::from(url.to_string()))
}
