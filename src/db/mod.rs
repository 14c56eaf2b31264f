//! Database access: the pools, the ID types, and the two planes' typed
//! queries (`platform` for the control plane, `tenant` for the data plane),
//! [`statement`] for hand-written SQL that stays prepared, and [`pooler`],
//! which notices a proxy or pooler between posd and PostgreSQL.

pub mod ids;
pub mod kinds;
pub mod platform;
pub mod pool;
pub mod pooler;
pub mod statement;
pub mod tenant;
