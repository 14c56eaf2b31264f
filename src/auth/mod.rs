//! Authentication: JWTs for staff and platform operators, password hashing,
//! and the request guards that carry the caller (`Staff` → role guards;
//! `PlatformAdmin`).

pub mod jwt;
pub mod password;
pub mod revocation;

use serde::{Deserialize, Serialize};

/// A staff member's role at a merchant, in increasing order of power.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Cashier,
    Manager,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cashier => "cashier",
            Role::Manager => "manager",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "cashier" => Some(Role::Cashier),
            "manager" => Some(Role::Manager),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}
