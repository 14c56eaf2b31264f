//! Database access: the pools, the ID types, and the two planes' typed
//! queries (`platform` for the control plane, `tenant` for the data plane),
//! and [`statement`] for hand-written SQL that stays prepared.

pub mod ids;
pub mod platform;
pub mod pool;
pub mod statement;
pub mod tenant;
