//! Multi-tenancy: where each merchant's data lives and how a request gets a
//! connection bound to it.
//!
//! - [`classification`]: which tables are SHARED (control plane) and which
//!   are TENANT (data plane), and the boot check that enforces it;
//! - [`placement`]: the directory of merchant placements, cached, with
//!   LISTEN/NOTIFY invalidation and the kill switch;
//! - [`pools`]: the global pool and the per-merchant pools of dedicated
//!   tenants (LRU cap, idle sweeper, connection budget, circuit breaker);
//! - [`guards`]: the request guard that hands a handler a bound connection;
//! - [`migrations`], [`fleet`], [`provisioning`] (and deprovisioning),
//!   [`crypto`] and [`keys`] (rotation).

pub mod breaker;
pub mod classification;
pub mod crypto;
pub mod fleet;
pub mod guards;
pub mod keys;
pub mod migrations;
pub mod placement;
pub mod pools;
pub mod provisioning;

use serde::Serialize;

/// The shared tier's schema in the platform database.
pub const SHARED_SCHEMA: &str = "tenant_shared";

/// Where a merchant's data plane lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Shared,
    Schema,
    Dedicated,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Shared => "shared",
            Tier::Schema => "schema",
            Tier::Dedicated => "dedicated",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "shared" => Some(Tier::Shared),
            "schema" => Some(Tier::Schema),
            "dedicated" => Some(Tier::Dedicated),
            _ => None,
        }
    }
}

/// The schema that holds a schema-tier or dedicated merchant's tables:
/// generated from the merchant id, never from user input.
pub fn tenant_schema_name(merchant: crate::db::ids::MerchantId) -> String {
    format!("m_{}", merchant.0.simple())
}

/// The database posd creates for a dedicated merchant.
pub fn tenant_database_name(merchant: crate::db::ids::MerchantId) -> String {
    format!("posd_m_{}", merchant.0.simple())
}
