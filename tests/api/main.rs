//! Integration tests: the real `rocket()` over a real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod boot;
mod byo;
mod errors;
mod faults;
mod isolation;
mod keys;
mod migrations;
mod pools;
mod products;
mod provisioning;
mod routing;
mod tokens;
