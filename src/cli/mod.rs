//! The `posd` command's subcommands beyond `serve`, each in a module of its
//! own: `tenants` (list, migrate, move, cleanup-moves), `plans` (plans and
//! flags).

pub mod moves;
pub mod plans;
pub mod tenants;
