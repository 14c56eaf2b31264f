//! Database access: the pools, the ID types, and the two planes' typed
//! queries (`platform` for the control plane, `tenant` for the data plane).

pub mod ids;
pub mod platform;
pub mod pool;
pub mod tenant;
