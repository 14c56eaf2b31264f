//! Plans and their limits, per-merchant limit overrides, feature flags and
//! per-merchant flag overrides.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::{
    Platform,
    schema::{feature_flags, merchant_flag_overrides, merchants, plans},
};
use crate::db::ids::MerchantId;

/// A limit a plan sets. On the wire it is the field of [`Limits`]
/// (`maxStaff`); in `merchants.limit_overrides` its column (`max_staff`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum LimitKind {
    /// Active staff accounts.
    MaxStaff,
    /// Catalog products (deleted ones do not count).
    MaxProducts,
    /// API requests per minute (recorded, not enforced yet).
    RequestsPerMinute,
    /// Bytes of storage (recorded, not enforced yet).
    MaxStorageBytes,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] = [
        LimitKind::MaxStaff,
        LimitKind::MaxProducts,
        LimitKind::RequestsPerMinute,
        LimitKind::MaxStorageBytes,
    ];

    /// The name of the plan's column and of the override's key.
    pub fn column(self) -> &'static str {
        match self {
            LimitKind::MaxStaff => "max_staff",
            LimitKind::MaxProducts => "max_products",
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::MaxStorageBytes => "max_storage_bytes",
        }
    }

    /// The name clients read (a field of [`Limits`]).
    pub fn field(self) -> &'static str {
        match self {
            LimitKind::MaxStaff => "maxStaff",
            LimitKind::MaxProducts => "maxProducts",
            LimitKind::RequestsPerMinute => "requestsPerMinute",
            LimitKind::MaxStorageBytes => "maxStorageBytes",
        }
    }

    pub fn from_column(s: &str) -> Option<LimitKind> {
        LimitKind::ALL.into_iter().find(|k| k.column() == s)
    }
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.field())
    }
}

/// A set of limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_staff: Option<i64>,
    pub max_products: Option<i64>,
    pub requests_per_minute: Option<i64>,
    pub max_storage_bytes: Option<i64>,
}

impl Limits {
    pub fn get(&self, kind: LimitKind) -> Option<i64> {
        match kind {
            LimitKind::MaxStaff => self.max_staff,
            LimitKind::MaxProducts => self.max_products,
            LimitKind::RequestsPerMinute => self.requests_per_minute,
            LimitKind::MaxStorageBytes => self.max_storage_bytes,
        }
    }

    fn slot(&mut self, kind: LimitKind) -> &mut Option<i64> {
        match kind {
            LimitKind::MaxStaff => &mut self.max_staff,
            LimitKind::MaxProducts => &mut self.max_products,
            LimitKind::RequestsPerMinute => &mut self.requests_per_minute,
            LimitKind::MaxStorageBytes => &mut self.max_storage_bytes,
        }
    }

    /// These limits with `overrides` replacing the ones they name.
    #[must_use]
    pub fn overridden(mut self, overrides: &LimitOverrides) -> Limits {
        for (kind, value) in &overrides.0 {
            *self.slot(*kind) = *value;
        }
        self
    }
}

/// Per-merchant limits that replace the plan's: a limit present with
/// `None` is unlimited; an absent one follows the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitOverrides(pub BTreeMap<LimitKind, Option<i64>>);

impl LimitOverrides {
    /// As stored: `{"max_staff": 12, "max_products": null}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.column().to_string(), serde_json::json!(v)))
                .collect(),
        )
    }

    /// Reads the stored form. The database's CHECK keeps it valid; anything
    /// else is an error, never a silent default.
    pub fn from_json(v: &serde_json::Value) -> Result<LimitOverrides, String> {
        let map = v
            .as_object()
            .ok_or_else(|| format!("limit overrides are not an object: {v}"))?;
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let kind = LimitKind::from_column(k).ok_or_else(|| format!("unknown limit `{k}`"))?;
            let value = match v {
                serde_json::Value::Null => None,
                v => Some(
                    v.as_i64()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| format!("limit `{k}` is not a whole number >= 0: {v}"))?,
                ),
            };
            out.insert(kind, value);
        }
        Ok(LimitOverrides(out))
    }
}

/// A plan: its key, name, rank (for plan gates) and limits.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = plans, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub key: String,
    pub name: String,
    /// Plans are ordered by rank for feature flags' `minPlan`.
    pub rank: i32,
    /// Active staff accounts; null: unlimited.
    pub max_staff: Option<i64>,
    /// Catalog products; null: unlimited.
    pub max_products: Option<i64>,
    /// API requests per minute; null: unlimited (not enforced yet).
    pub requests_per_minute: Option<i64>,
    /// Storage in bytes; null: unlimited (not enforced yet).
    pub max_storage_bytes: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = plans)]
pub struct NewPlan<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub rank: i32,
    pub max_staff: Option<i64>,
    pub max_products: Option<i64>,
    pub requests_per_minute: Option<i64>,
    pub max_storage_bytes: Option<i64>,
}

/// A change to a plan: `None` leaves a field as it is; for a limit,
/// `Some(None)` makes it unlimited.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = plans)]
pub struct PlanChanges {
    pub name: Option<String>,
    pub rank: Option<i32>,
    pub max_staff: Option<Option<i64>>,
    pub max_products: Option<Option<i64>>,
    pub requests_per_minute: Option<Option<i64>>,
    pub max_storage_bytes: Option<Option<i64>>,
}

impl Plan {
    pub fn limits(&self) -> Limits {
        Limits {
            max_staff: self.max_staff,
            max_products: self.max_products,
            requests_per_minute: self.requests_per_minute,
            max_storage_bytes: self.max_storage_bytes,
        }
    }

    /// Every plan, by rank then key.
    pub fn list(p: &mut Platform<'_>) -> QueryResult<Vec<Plan>> {
        plans::table
            .order((plans::rank.asc(), plans::key.asc()))
            .select(Plan::as_select())
            .load(p.conn)
    }

    pub fn find(p: &mut Platform<'_>, key: &str) -> QueryResult<Plan> {
        plans::table
            .find(key)
            .select(Plan::as_select())
            .first(p.conn)
    }

    pub fn insert(p: &mut Platform<'_>, new: &NewPlan<'_>) -> QueryResult<Plan> {
        diesel::insert_into(plans::table)
            .values(new)
            .returning(Plan::as_returning())
            .get_result(p.conn)
    }

    /// Applies `changes`; `NotFound` for no such plan.
    pub fn update(p: &mut Platform<'_>, key: &str, changes: &PlanChanges) -> QueryResult<Plan> {
        let empty = changes.name.is_none()
            && changes.rank.is_none()
            && changes.max_staff.is_none()
            && changes.max_products.is_none()
            && changes.requests_per_minute.is_none()
            && changes.max_storage_bytes.is_none();
        if empty {
            return Self::find(p, key);
        }
        diesel::update(plans::table.find(key))
            .set((changes, plans::updated_at.eq(diesel::dsl::now)))
            .returning(Plan::as_returning())
            .get_result(p.conn)
    }
}

/// What the tenant context needs of a merchant's row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = merchants, check_for_backend(diesel::pg::Pg))]
pub struct MerchantPlan {
    pub id: MerchantId,
    pub slug: String,
    pub name: String,
    pub timezone: String,
    pub currency: String,
    pub plan: String,
    pub limit_overrides: serde_json::Value,
    pub settings: serde_json::Value,
    pub branding: serde_json::Value,
}

impl MerchantPlan {
    pub fn find(p: &mut Platform<'_>, id: MerchantId) -> QueryResult<MerchantPlan> {
        merchants::table
            .find(id)
            .select(MerchantPlan::as_select())
            .first(p.conn)
    }

    /// Puts the merchant on `plan`; `NotFound` for no such merchant (an
    /// unknown plan is a foreign key violation).
    pub fn set_plan(p: &mut Platform<'_>, id: MerchantId, plan: &str) -> QueryResult<MerchantPlan> {
        diesel::update(merchants::table.find(id))
            .set((
                merchants::plan.eq(plan),
                merchants::updated_at.eq(diesel::dsl::now),
            ))
            .returning(MerchantPlan::as_returning())
            .get_result(p.conn)
    }

    pub fn set_limit_overrides(
        p: &mut Platform<'_>,
        id: MerchantId,
        overrides: &LimitOverrides,
    ) -> QueryResult<MerchantPlan> {
        diesel::update(merchants::table.find(id))
            .set((
                merchants::limit_overrides.eq(overrides.to_json()),
                merchants::updated_at.eq(diesel::dsl::now),
            ))
            .returning(MerchantPlan::as_returning())
            .get_result(p.conn)
    }

    /// Replaces the merchant's stored settings.
    pub fn set_settings(
        p: &mut Platform<'_>,
        id: MerchantId,
        settings: serde_json::Value,
    ) -> QueryResult<MerchantPlan> {
        diesel::update(merchants::table.find(id))
            .set((
                merchants::settings.eq(settings),
                merchants::updated_at.eq(diesel::dsl::now),
            ))
            .returning(MerchantPlan::as_returning())
            .get_result(p.conn)
    }

    /// Replaces the merchant's stored branding.
    pub fn set_branding(
        p: &mut Platform<'_>,
        id: MerchantId,
        branding: serde_json::Value,
    ) -> QueryResult<MerchantPlan> {
        diesel::update(merchants::table.find(id))
            .set((
                merchants::branding.eq(branding),
                merchants::updated_at.eq(diesel::dsl::now),
            ))
            .returning(MerchantPlan::as_returning())
            .get_result(p.conn)
    }

    /// Locks the merchant's row until the end of the transaction: creations
    /// counted against a limit of the merchant's take it first, so that
    /// two at once cannot both pass the count.
    pub fn lock(p: &mut Platform<'_>, id: MerchantId) -> QueryResult<()> {
        merchants::table
            .find(id)
            .select(merchants::id)
            .for_no_key_update()
            .first::<MerchantId>(p.conn)
            .map(drop)
    }
}

/// A feature flag.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = feature_flags, check_for_backend(diesel::pg::Pg))]
#[serde(rename_all = "camelCase")]
pub struct FeatureFlag {
    pub key: String,
    pub description: String,
    /// On for merchants that no override, plan gate or rollout decides.
    pub default_on: bool,
    /// Off for merchants on a plan ranked below this one.
    pub min_plan: Option<String>,
    /// When set, on for this share of merchants (0 to 100) instead of
    /// `defaultOn`; the same merchants every time.
    pub rollout_percent: Option<i16>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = feature_flags)]
pub struct NewFeatureFlag<'a> {
    pub key: &'a str,
    pub description: &'a str,
    pub default_on: bool,
    pub min_plan: Option<&'a str>,
    pub rollout_percent: Option<i16>,
}

/// A change to a flag: `None` leaves a field as it is; `Some(None)`
/// clears `minPlan` or the rollout.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = feature_flags)]
pub struct FlagChanges {
    pub description: Option<String>,
    pub default_on: Option<bool>,
    pub min_plan: Option<Option<String>>,
    pub rollout_percent: Option<Option<i16>>,
}

impl FeatureFlag {
    pub fn list(p: &mut Platform<'_>) -> QueryResult<Vec<FeatureFlag>> {
        feature_flags::table
            .order(feature_flags::key.asc())
            .select(FeatureFlag::as_select())
            .load(p.conn)
    }

    pub fn find(p: &mut Platform<'_>, key: &str) -> QueryResult<FeatureFlag> {
        feature_flags::table
            .find(key)
            .select(FeatureFlag::as_select())
            .first(p.conn)
    }

    pub fn insert(p: &mut Platform<'_>, new: &NewFeatureFlag<'_>) -> QueryResult<FeatureFlag> {
        diesel::insert_into(feature_flags::table)
            .values(new)
            .returning(FeatureFlag::as_returning())
            .get_result(p.conn)
    }

    pub fn update(
        p: &mut Platform<'_>,
        key: &str,
        changes: &FlagChanges,
    ) -> QueryResult<FeatureFlag> {
        let empty = changes.description.is_none()
            && changes.default_on.is_none()
            && changes.min_plan.is_none()
            && changes.rollout_percent.is_none();
        if empty {
            return Self::find(p, key);
        }
        diesel::update(feature_flags::table.find(key))
            .set((changes, feature_flags::updated_at.eq(diesel::dsl::now)))
            .returning(FeatureFlag::as_returning())
            .get_result(p.conn)
    }

    /// The merchant's flag overrides: flag key → enabled.
    pub fn overrides(
        p: &mut Platform<'_>,
        merchant: MerchantId,
    ) -> QueryResult<Vec<(String, bool)>> {
        merchant_flag_overrides::table
            .filter(merchant_flag_overrides::merchant_id.eq(merchant))
            .select((
                merchant_flag_overrides::flag,
                merchant_flag_overrides::enabled,
            ))
            .load(p.conn)
    }

    /// Sets the merchant's override of flag `key` (an unknown merchant or
    /// flag is a foreign key violation).
    pub fn set_override(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        key: &str,
        enabled: bool,
    ) -> QueryResult<()> {
        diesel::insert_into(merchant_flag_overrides::table)
            .values((
                merchant_flag_overrides::merchant_id.eq(merchant),
                merchant_flag_overrides::flag.eq(key),
                merchant_flag_overrides::enabled.eq(enabled),
            ))
            .on_conflict((
                merchant_flag_overrides::merchant_id,
                merchant_flag_overrides::flag,
            ))
            .do_update()
            .set(merchant_flag_overrides::enabled.eq(enabled))
            .execute(p.conn)
            .map(drop)
    }

    /// Removes the merchant's override of flag `key`; whether there was one.
    pub fn clear_override(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        key: &str,
    ) -> QueryResult<bool> {
        diesel::delete(
            merchant_flag_overrides::table
                .filter(merchant_flag_overrides::merchant_id.eq(merchant))
                .filter(merchant_flag_overrides::flag.eq(key)),
        )
        .execute(p.conn)
        .map(|n| n > 0)
    }
}
