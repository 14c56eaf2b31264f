//! The `posd` command's subcommands beyond `serve`, each in a module of its
//! own: `tenants` (list, migrate, move, cleanup-moves).

pub mod moves;
pub mod tenants;
