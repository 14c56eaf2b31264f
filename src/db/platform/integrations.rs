//! Integrations of merchants (`merchant_id` set) and the platform's
//! defaults (`merchant_id` NULL). Credentials are stored sealed only; no
//! query here sees a plaintext.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::{Platform, schema::merchant_integrations as mi};
use crate::db::ids::{IntegrationId, MerchantId};

/// One row. `Debug` shows the sealed bytes' length, never the bytes.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = mi, check_for_backend(diesel::pg::Pg))]
pub struct IntegrationRow {
    pub id: IntegrationId,
    pub merchant_id: Option<MerchantId>,
    pub kind: String,
    pub provider: String,
    pub settings: serde_json::Value,
    pub credentials_sealed: Option<Vec<u8>>,
    pub credentials_key_id: Option<String>,
    pub credentials_fingerprint: Option<String>,
    pub credentials_set_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for IntegrationRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationRow")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("kind", &self.kind)
            .field("provider", &self.provider)
            .field(
                "credentials_sealed",
                &self.credentials_sealed.as_ref().map(Vec::len),
            )
            .field("credentials_fingerprint", &self.credentials_fingerprint)
            .finish_non_exhaustive()
    }
}

/// Sealed credentials as stored, with their fingerprint.
#[derive(Clone)]
pub struct SealedCredentials {
    pub sealed: Vec<u8>,
    pub key_id: String,
    pub fingerprint: String,
}

/// A new row.
pub struct NewIntegration<'a> {
    pub id: IntegrationId,
    pub merchant_id: Option<MerchantId>,
    pub kind: &'a str,
    pub provider: &'a str,
    pub settings: serde_json::Value,
    pub credentials: Option<SealedCredentials>,
}

/// A change: `None` leaves a column as it is; `credentials: Some(None)`
/// removes them.
#[derive(Default)]
pub struct IntegrationChanges {
    pub provider: Option<String>,
    pub settings: Option<serde_json::Value>,
    pub credentials: Option<Option<SealedCredentials>>,
}

/// Rows of `merchant` (`None`: the platform's defaults).
fn owned_by(merchant: Option<MerchantId>) -> mi::BoxedQuery<'static, diesel::pg::Pg> {
    match merchant {
        Some(m) => mi::table.filter(mi::merchant_id.eq(m)).into_boxed(),
        None => mi::table.filter(mi::merchant_id.is_null()).into_boxed(),
    }
}

impl IntegrationRow {
    /// The integrations of `merchant` (`None`: the platform's defaults),
    /// by kind.
    pub fn list(
        p: &mut Platform<'_>,
        merchant: Option<MerchantId>,
    ) -> QueryResult<Vec<IntegrationRow>> {
        owned_by(merchant)
            .order(mi::kind.asc())
            .select(IntegrationRow::as_select())
            .load(p.conn)
    }

    /// One integration of `merchant` (`None`: a platform default);
    /// `NotFound` for another owner's.
    pub fn find(
        p: &mut Platform<'_>,
        merchant: Option<MerchantId>,
        id: IntegrationId,
    ) -> QueryResult<IntegrationRow> {
        owned_by(merchant)
            .filter(mi::id.eq(id))
            .select(IntegrationRow::as_select())
            .first(p.conn)
    }

    /// The integration of `kind` that applies to `merchant`: its own, else
    /// the platform's default.
    pub fn effective(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        kind: &str,
    ) -> QueryResult<Option<IntegrationRow>> {
        // At most two rows: the merchant's own and the platform's.
        let rows: Vec<IntegrationRow> = mi::table
            .filter(mi::kind.eq(kind))
            .filter(mi::merchant_id.eq(merchant).or(mi::merchant_id.is_null()))
            .select(IntegrationRow::as_select())
            .load(p.conn)?;
        let (own, platform): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|r| r.merchant_id.is_some());
        Ok(own.into_iter().chain(platform).next())
    }

    pub fn insert(p: &mut Platform<'_>, new: NewIntegration<'_>) -> QueryResult<IntegrationRow> {
        let c = new.credentials;
        diesel::insert_into(mi::table)
            .values((
                mi::id.eq(new.id),
                mi::merchant_id.eq(new.merchant_id),
                mi::kind.eq(new.kind),
                mi::provider.eq(new.provider),
                mi::settings.eq(new.settings),
                mi::credentials_sealed.eq(c.as_ref().map(|c| c.sealed.clone())),
                mi::credentials_key_id.eq(c.as_ref().map(|c| c.key_id.clone())),
                mi::credentials_fingerprint.eq(c.as_ref().map(|c| c.fingerprint.clone())),
                mi::credentials_set_at.eq(c.as_ref().map(|_| Utc::now())),
            ))
            .returning(IntegrationRow::as_returning())
            .get_result(p.conn)
    }

    /// Applies `changes` to an integration of `merchant` (`None`: a
    /// platform default); `NotFound` for another owner's.
    pub fn update(
        p: &mut Platform<'_>,
        merchant: Option<MerchantId>,
        id: IntegrationId,
        changes: IntegrationChanges,
    ) -> QueryResult<IntegrationRow> {
        let row = Self::find(p, merchant, id)?;
        let provider = changes.provider.unwrap_or(row.provider);
        let settings = changes.settings.unwrap_or(row.settings);
        let target = mi::table.filter(mi::id.eq(id));
        match changes.credentials {
            None => diesel::update(target)
                .set((
                    mi::provider.eq(provider),
                    mi::settings.eq(settings),
                    mi::updated_at.eq(diesel::dsl::now),
                ))
                .returning(IntegrationRow::as_returning())
                .get_result(p.conn),
            Some(c) => diesel::update(target)
                .set((
                    mi::provider.eq(provider),
                    mi::settings.eq(settings),
                    mi::credentials_sealed.eq(c.as_ref().map(|c| c.sealed.clone())),
                    mi::credentials_key_id.eq(c.as_ref().map(|c| c.key_id.clone())),
                    mi::credentials_fingerprint.eq(c.as_ref().map(|c| c.fingerprint.clone())),
                    mi::credentials_set_at.eq(c.as_ref().map(|_| Utc::now())),
                    mi::updated_at.eq(diesel::dsl::now),
                ))
                .returning(IntegrationRow::as_returning())
                .get_result(p.conn),
        }
    }

    /// Deletes an integration of `merchant` (`None`: a platform default);
    /// `NotFound` for another owner's.
    pub fn delete(
        p: &mut Platform<'_>,
        merchant: Option<MerchantId>,
        id: IntegrationId,
    ) -> QueryResult<IntegrationRow> {
        let row = Self::find(p, merchant, id)?;
        diesel::delete(mi::table.filter(mi::id.eq(id))).execute(p.conn)?;
        Ok(row)
    }

    /// Every row with credentials (for key rotation).
    pub fn all_with_credentials(p: &mut Platform<'_>) -> QueryResult<Vec<IntegrationRow>> {
        mi::table
            .filter(mi::credentials_sealed.is_not_null())
            .order(mi::created_at.asc())
            .select(IntegrationRow::as_select())
            .load(p.conn)
    }

    /// Replaces sealed credentials if they are still the ones read
    /// (`previous`), so that a concurrent change is not overwritten; the
    /// fingerprint and the time they were set stay. Returns whether it did.
    pub fn reseal(
        p: &mut Platform<'_>,
        id: IntegrationId,
        previous: &[u8],
        sealed: &[u8],
        key_id: &str,
    ) -> QueryResult<bool> {
        diesel::update(
            mi::table
                .filter(mi::id.eq(id))
                .filter(mi::credentials_sealed.eq(previous)),
        )
        .set((
            mi::credentials_sealed.eq(sealed),
            mi::credentials_key_id.eq(key_id),
        ))
        .execute(p.conn)
        .map(|n| n == 1)
    }
}
