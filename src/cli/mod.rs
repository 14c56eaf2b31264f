//! The `posd` command's subcommands beyond `serve`, each in a module of its
//! own: `tenants` (list, migrate).

pub mod tenants;
