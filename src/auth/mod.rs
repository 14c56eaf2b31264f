//! Authentication: JWTs for staff and platform operators, password hashing,
//! and what a staff token may still do (revocation). The request guards
//! that carry the caller are in `crate::api::guards`.

pub mod jwt;
pub mod password;
pub mod revocation;

pub use crate::db::kinds::Role;
