//! The `posd` command's subcommands beyond `serve`, each in a module of its
//! own: `tenants` (list, migrate, move, cleanup-moves), `domains`
//! (`tenants domains`: merchants' custom domains), `plans` (plans and
//! flags).

pub mod domains;
pub mod moves;
pub mod plans;
pub mod tenants;
pub mod top;
